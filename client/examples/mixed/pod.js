'use strict'
// A pod of the mixed fleet in Node.js: a node-postgres pg.Pool that follows
// its share through the connbudget adapter (client/node).
//
//   node pod.js APP POD WORKERS LOADFILE STATUSFILE
//
// WORKERS loops each take a connection, run a 20 ms query, give it back and
// pause a little; how many of them are busy is read from LOADFILE ten times
// a second. Four times a second the pod writes "share pool_size served
// errors" to STATUSFILE. The server is the libpq environment's (PGHOST,
// PGPORT, PGUSER, PGDATABASE, which node-postgres reads). SIGTERM closes
// the pool, which hands the share back.
//
// CB_NODE_ADAPTER names the adapter's folder (client/node, with pg in its
// node_modules), else it is the installed package 'connbudget'.
const fs = require('fs')
const adapter = process.env.CB_NODE_ADAPTER || 'connbudget'
const { Pool } = require(require.resolve('pg', { paths: [adapter] }))
const { follow, connectionOptions } = require(adapter)

const [app, pod, workersArg, loadfile, statusfile] = process.argv.slice(2)
const workers = Number(workersArg)

function readLoad (last) {
  try {
    const n = parseInt(fs.readFileSync(loadfile, 'utf8'), 10)
    return Number.isNaN(n) ? last : n
  } catch {
    return last
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const pool = new Pool({
  ...connectionOptions({ applicationName: app, pod }),
  max: workers,
  connectionTimeoutMillis: 30000
})
pool.on('error', () => {}) // idle connections a server closes: the pool replaces them
const budget = follow(pool)
let load = readLoad(0)
let served = 0
let errors = 0
let stopping = false

async function work (index) {
  while (!stopping) {
    if (index >= load) {
      await sleep(50)
      continue
    }
    try {
      await pool.query('SELECT pg_sleep(0.02)')
      served++
    } catch (error) {
      if (++errors === 1) console.error(`${pod}: query failed: ${error.message}`)
    }
    await sleep(Math.random() * 10)
  }
}

const loops = []
for (let i = 0; i < workers; i++) loops.push(work(i))
let tick = 0
const timer = setInterval(() => {
  load = readLoad(load)
  if (++tick % 2 === 0) {
    const s = budget.stats()
    fs.writeFileSync(statusfile + '.tmp', `${s.share} ${s.limit} ${served} ${errors}\n`)
    fs.renameSync(statusfile + '.tmp', statusfile)
  }
}, 100)

process.on('SIGTERM', async () => {
  stopping = true
  clearInterval(timer)
  await Promise.all(loops)
  await budget.close()
  process.exit(0)
})
