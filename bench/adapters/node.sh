#!/usr/bin/env bash
# bench/adapters/node.sh -- the node-postgres adapter's benchmark (client/node):
#
#   (a) overhead: a pg.Pool of 8 connections that follows a steady share
#       of 8 against the same pool without the adapter (both open side by
#       side, warmed up), a `SELECT 1` loop with 8 workers (pool.query)
#       that switch between the two pools after every 25 queries each (a few
#       milliseconds), in the order ABBA... (each run starting with the
#       other pool), so that the machine's other work falls on both alike;
#       the median of the runs' ratios (goal: at least 0.97);
#   (b) convergence, in refresh intervals: a pod busy at the application's
#       cap of 8, a second pod joins (how long the first stays above its
#       share, and until both hold 4), then leaves (until the first holds
#       8 again).
#
# Run it from the tree, as root (it installs the Debian packages that are
# missing, builds and installs the extension if it is not installed, and
# runs as the postgres user) or as a user that is not root:
#
#   bash bench/adapters/node.sh
#
# It starts a throwaway cluster with the settings below and removes it;
# given one (PGHOST, PGPORT, PGUSER a superuser, and CB_CLUSTER_DIR, as
# test/lib/with-cluster.sh exports them) it uses that. It needs Node.js 18
# or later with npm on the PATH, and the npm registry: `npm ci` installs
# node-postgres from client/node/package-lock.json into a scratch copy of
# the package.
# It prints the results and a markdown table.
#
# cluster: max_connections=50 superuser_reserved_connections=3 connbudget.reserved_connections=7 connbudget.refresh_interval=200ms connbudget.pod_ttl=2000
#
# Environment: CB_BENCH_RUNS (pairs, default 10), CB_BENCH_SECONDS (seconds
# per run, default 2), CB_BENCH_ROUNDS (rounds of (b), default 5),
# PG_CONFIG.
set -euo pipefail

src=${CB_SRC_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
# shellcheck source=SCRIPTDIR/../../test/lib/setup.sh
source "$src/test/lib/setup.sh"
# shellcheck source=SCRIPTDIR/lib.sh
source "$src/bench/adapters/lib.sh"
for tool in node npm; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: install Node.js 18 or later with npm" >&2; exit 1; }
done
adapter_bench_as_postgres "$src/bench/adapters/node.sh"

adapter_bench_setup "$src/bench/adapters/node.sh" node cbnode

# the adapter with its dependencies, and the benchmark beside it
mkdir "$work/pkg"
tar -C "$src/client/node" --exclude=node_modules -cf - . | tar -C "$work/pkg" -xf -
cd "$work/pkg"
export npm_config_cache="${npm_config_cache:-$work/npm-cache}" # none left behind
export npm_config_update_notifier=false
npm ci --no-audit --no-fund --no-progress --loglevel=error >/dev/null
cat >bench.js <<'EOF'
'use strict'
const pg = require('pg')
const { follow, connectionOptions } = require('.')
const { setTimeout: sleep } = require('timers/promises')

const INTERVAL = 200 // connbudget.refresh_interval above, ms
const env = (name, def) => Number(process.env[name]) > 0 ? Number(process.env[name]) : def
const median = (v) => {
  const s = [...v].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}
const admin = new pg.Pool({ max: 2, application_name: 'bench-admin' })

// A pool of 8 connections of pod pod; with follow, it follows its share,
// steady at 8 (its own min) when steady is set.
async function open (pod, withAdapter, steady, max = 8) {
  const pool = new pg.Pool({
    ...connectionOptions({ applicationName: 'bench', pod }),
    user: 'cbnode',
    max,
    ...(steady ? { min: max } : {})
  })
  pool.on('error', () => {})
  if (!withAdapter) {
    return { pool, budget: null }
  }
  const budget = follow(pool, { log: () => {} })
  while (steady && budget.stats().limit !== max) {
    await sleep(10)
  }
  return { pool, budget }
}

// SELECT 1 with 8 workers for a warm-up and then ms: queries per second.
async function rate (pool, ms) {
  let n = 0
  let counting = false
  let stop = false
  const workers = Array.from({ length: 8 }, async () => {
    while (!stop) {
      await pool.query('SELECT 1')
      if (counting) {
        n++
      }
    }
  })
  await sleep(500)
  counting = true
  const start = process.hrtime.bigint()
  await sleep(ms)
  counting = false
  const q = n / (Number(process.hrtime.bigint() - start) / 1e9)
  stop = true
  await Promise.all(workers)
  return q
}

// The same 8 workers run SELECT 1 through one pool, then the other, in
// short slices of PER_SLICE queries each (a few milliseconds), in the
// order ABBA... (first = 0: the adapter's pool first), each slice ending
// when all 8 have done theirs, so that whatever else the machine does falls
// on both alike and each pool's cost falls on its own slices (the workers
// share one event loop): queries per second through each.
const PER_SLICE = 25
async function compare (pools, ms, first) {
  const counts = [0, 0]
  const spent = [0, 0]
  const slice = async (pool) => {
    for (let q = 0; q < PER_SLICE; q++) {
      await pool.query('SELECT 1')
    }
  }
  for (let s = 0; spent[0] + spent[1] < (2 * ms) / 1000; s++) {
    const k = first ^ (s % 4 === 1 || s % 4 === 2 ? 1 : 0)
    const start = process.hrtime.bigint()
    await Promise.all(Array.from({ length: 8 }, () => slice(pools[k].pool)))
    spent[k] += Number(process.hrtime.bigint() - start) / 1e9
    counts[k] += 8 * PER_SLICE
  }
  return [counts[0] / spent[0], counts[1] / spent[1]]
}
// Both pools open side by side and warmed up; then the runs, each starting
// with the other pool.
async function overhead (runs, ms) {
  const ws = []
  const wos = []
  const ratios = []
  const followed = await open('bench-node-a', true, true)
  const plain = await open('bench-node-b', false, true)
  await rate(followed.pool, 500)
  await rate(plain.pool, 500)
  for (let i = 0; i < runs; i++) {
    const [w, wo] = await compare([followed, plain], ms, i % 2)
    const s = followed.budget.stats()
    if (s.share < 8 || s.limit !== 8) {
      throw new Error(`the share was not steady at 8: ${JSON.stringify(s)}`)
    }
    console.log(`run ${i + 1}: with the adapter ${w.toFixed(0)} q/s, without ${wo.toFixed(0)} q/s, ratio ${(w / wo).toFixed(3)}`)
    ws.push(w)
    wos.push(wo)
    ratios.push(w / wo)
  }
  const stats = followed.budget.stats()
  console.log(`the adapter meanwhile: share ${stats.share}, ${stats.refreshes} refreshes, ` +
    `${stats.refreshesSkipped} skipped, errors ${JSON.stringify(stats.errors)}`)
  await followed.budget.close()
  await plain.pool.end()
  return [median(ws), median(wos), median(ratios)]
}

async function podOnServer (pod) {
  const { rows } = await admin.query(
    "SELECT connections, share FROM connbudget.pods WHERE application_name = 'bench' AND pod = $1", [pod])
  return rows[0] || { connections: -1, share: -1 }
}

function busy (pool) {
  const state = { stop: false, workers: [] }
  for (let i = 0; i < 12; i++) {
    state.workers.push((async () => {
      while (!state.stop) {
        await pool.query('SELECT pg_sleep(0.005)')
      }
    })())
  }
  return state
}

const intervals = (ms) => ms < 0 ? -1 : ms / INTERVAL

async function convergence (rounds) {
  await admin.query(`INSERT INTO connbudget.application_limits (application_name, max_connections)
    VALUES ('bench', 8) ON CONFLICT (application_name) DO UPDATE SET max_connections = 8`)
  const a = await open('conv-a', true, false, 20)
  const workA = busy(a.pool)
  while ((await podOnServer('conv-a')).connections !== 8) {
    await sleep(10)
  }
  const above = []
  const join = []
  const leave = []
  for (let r = 0; r < rounds; r++) {
    const b = await open('conv-b', true, false, 20)
    const workB = busy(b.pool)
    const joined = Date.now()
    let over = null
    let longest = 0
    let both = -1
    while (Date.now() - joined < 10 * INTERVAL) {
      const ra = await podOnServer('conv-a')
      const rb = await podOnServer('conv-b')
      const now = Date.now()
      if (ra.connections > ra.share && over === null) {
        over = now
      } else if (ra.connections <= ra.share && over !== null) {
        longest = Math.max(longest, now - over)
        over = null
      }
      if (both < 0 && ra.connections === 4 && ra.share === 4 && rb.connections === 4 && rb.share === 4) {
        both = now - joined
      }
      await sleep(5)
    }
    if (over !== null) {
      longest = Math.max(longest, Date.now() - over)
    }
    workB.stop = true
    await Promise.all(workB.workers)
    const left = Date.now()
    await b.budget.close()
    let back = -1
    while (Date.now() - left < 10 * INTERVAL) {
      if ((await podOnServer('conv-a')).connections === 8) {
        back = Date.now() - left
        break
      }
      await sleep(5)
    }
    console.log(`round ${r + 1}: pod a above its share for at most ${intervals(longest).toFixed(2)} intervals; ` +
      `both at 4 after ${intervals(both).toFixed(2)}; a back at 8 after ${intervals(back).toFixed(2)} after b left`)
    above.push(intervals(longest))
    join.push(intervals(both))
    leave.push(intervals(back))
    await sleep(3 * INTERVAL)
  }
  workA.stop = true
  await Promise.all(workA.workers)
  await a.budget.close()
  return [above, join, leave]
}

const worst = (v) => v.some((x) => x < 0) ? -1 : Math.max(...v)

async function main () {
  const runs = env('CB_BENCH_RUNS', 10)
  const seconds = env('CB_BENCH_SECONDS', 2)
  const rounds = env('CB_BENCH_ROUNDS', 5)
  await admin.query(`INSERT INTO connbudget.application_limits (application_name, max_connections)
    VALUES ('bench', NULL) ON CONFLICT (application_name) DO UPDATE SET max_connections = NULL`)

  console.log(`== (a) overhead: 8 connections, 8 workers, SELECT 1, ${runs} pairs of ${seconds} s in rotated order, after a warm-up`)
  const [w, wo, r] = await overhead(runs, seconds * 1000)
  console.log(`median ratio ${r.toFixed(3)} (goal: at least 0.97)`)
  let table = '| pool | with the adapter (q/s, median) | without (q/s, median) | median ratio of the pairs |\n|---|---|---|---|\n'
  table += `| pg.Pool (node-postgres ${require('pg/package.json').version}) | ${w.toFixed(0)} | ${wo.toFixed(0)} | ${r.toFixed(3)} |\n`

  console.log(`\n== (b) convergence: cap 8, pod a busy, pod b joins and leaves, ${rounds} rounds (refresh interval ${INTERVAL} ms)`)
  const [above, join, leave] = await convergence(rounds)
  const cell = (v) => `${median(v).toFixed(2)} / ${worst(v).toFixed(2)}`
  table += '\n| convergence, in refresh intervals (median / worst of the rounds) | |\n|---|---|\n'
  table += `| pod b joins: pod a above its share, at most | ${cell(above)} |\n`
  table += `| pod b joins: both hold their share of 4 | ${cell(join)} |\n`
  table += `| pod b leaves: pod a holds 8 again | ${cell(leave)} |\n`
  console.log(`\n${table}`)
  await admin.end()
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
EOF
echo "== $(nproc) cores, $(uptime | sed 's/.*load average/load average/'), $(date -u +%Y-%m-%d), node $(node --version)"
node bench.js
