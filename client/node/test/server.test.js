'use strict'

// Against a real server with connbudget preloaded, run by
// test/adapters/node.sh. Needs CONNBUDGET_TEST_SERVER=1, the libpq
// environment of a superuser (PGHOST, PGPORT, PGUSER, PGDATABASE),
// CONNBUDGET_TEST_ROLE (a LOGIN role that is not a superuser: superusers
// are never refused), for the restart test PG_BINDIR and CB_CLUSTER_DIR,
// CONNBUDGET_TEST_PASSWORD (its password, when the server asks for one),
// and for the test without the extension CONNBUDGET_TEST_PLAIN (the port
// of a server without connbudget). The server's refresh interval is
// 200 ms. Every number asserted is sampled on the server; answers no
// connbudget server gives come from a relay in front of it (relay.js).

const { test, after } = require('node:test')
const assert = require('node:assert/strict')
const { execFile } = require('child_process')
const path = require('path')
const { setTimeout: sleep } = require('timers/promises')
const pg = require('pg')

const { follow, connectionOptions, RefusedError } = require('..')
const { Relay } = require('./relay')

const INTERVAL = 200 // connbudget.refresh_interval of the test cluster, ms
const PUBLISH = 20 // its publish period
const SLACK = 150 // what measuring adds to a deadline: the sampler's own queries and a busy machine's scheduling, ms
const skip = process.env.CONNBUDGET_TEST_SERVER ? false : 'needs a server: run test/adapters/node.sh'
const role = process.env.CONNBUDGET_TEST_ROLE || 'cbnode'
const password = process.env.CONNBUDGET_TEST_PASSWORD || undefined

let admin = null
function server () {
  if (!admin) {
    admin = new pg.Pool({ max: 2, application_name: 'connbudget-node-test' })
    admin.on('error', () => {})
  }
  return admin
}
after(() => admin && admin.end())

// Application app gets a cap of max connections (null: none) and only the
// roles in roles (null: any).
async function setLimit (app, max, roles = null) {
  await server().query(`INSERT INTO connbudget.application_limits (application_name, max_connections, roles)
    VALUES ($1, $2, $3) ON CONFLICT (application_name)
    DO UPDATE SET max_connections = excluded.max_connections, roles = excluded.roles`, [app, max, roles])
}

// What connbudget.pods says of a pod: { connections, share }, or null
// when the pod is not live.
async function onServer (app, pod) {
  const { rows } = await server().query(
    'SELECT connections, share FROM connbudget.pods WHERE application_name = $1 AND pod = $2', [app, pod])
  return rows[0] || null
}

// Polls cond every 5 ms for up to ms; resolves to how long it took to
// hold, or -1.
async function within (ms, cond) {
  const start = Date.now()
  while (Date.now() - start < ms) {
    if (await cond()) {
      return Date.now() - start
    }
    await sleep(5)
  }
  return -1
}

// A pool of pod pod of application app that follows its share, with
// workers that keep it busy.
class TestPod {
  constructor (app, pod, poolOptions = {}, budgetOptions = {}) {
    this.app = app
    this.pod = pod
    this.pool = new pg.Pool({
      ...connectionOptions({ applicationName: app, pod }),
      user: role,
      password,
      max: 20,
      ...poolOptions
    })
    this.pool.on('error', () => {}) // idle connections lost in a restart
    this.logged = []
    this.budget = follow(this.pool, {
      log: (level, message) => this.logged.push(`${level}: ${message}`),
      ...budgetOptions
    })
    this.workers = []
    this.stopping = false
    this.done = 0
    this.failed = 0
    this.last = null
  }

  work (n, sql) {
    for (let i = 0; i < n; i++) {
      this.workers.push((async () => {
        while (!this.stopping) {
          try {
            await this.pool.query(sql)
            this.done++
          } catch (error) {
            this.failed++
            this.last = error
            await sleep(10)
          }
        }
      })())
    }
  }

  async stopWork () {
    this.stopping = true
    await Promise.all(this.workers)
  }

  async close () {
    await this.stopWork()
    await this.budget.close()
  }

  onServer () {
    return onServer(this.app, this.pod)
  }

  // How long it took until the pod held n connections on the server
  // (within ms), or -1.
  holds (n, ms) {
    return within(ms, async () => ((await this.onServer()) || {}).connections === n)
  }

  // Fails the test unless the pod comes to hold n connections within ms,
  // saying what it held instead.
  async mustHold (n, ms, what) {
    assert.ok(await this.holds(n, ms) >= 0,
      `${this.pod}: ${what}; on the server: ${JSON.stringify(await this.onServer())}`)
  }

  noFailures () {
    assert.equal(this.failed, 0, `${this.pod}: ${this.failed} of ${this.failed + this.done} requests failed, ` +
      `the last with: ${this.last && this.last.message}`)
  }
}

// The longest time pod a held more than its share on the server, sampled
// every 5 ms for ms.
async function overShare (a, ms) {
  let over = null
  let longest = 0
  for (const start = Date.now(); Date.now() - start < ms; await sleep(5)) {
    const row = await a.onServer()
    const now = Date.now()
    if (row && row.connections > row.share && over === null) {
      over = now
    } else if (row && row.connections <= row.share && over !== null) {
      longest = Math.max(longest, now - over)
      over = null
    }
  }
  return over === null ? longest : Math.max(longest, Date.now() - over)
}

test('the identity reaches the server: application, pod and pool session', { skip }, async () => {
  const pod = 'web 7\\x\'9'
  const p = new TestPod('ident', pod)
  try {
    const { rows } = await p.pool.query(
      "SELECT current_setting('connbudget.pool_session') AS session, current_setting('application_name') AS app")
    assert.deepEqual(rows[0], { session: p.budget.stats().poolSession, app: 'ident' })
    assert.ok(await within(2000, async () => ((await p.onServer()) || {}).connections >= 1) >= 0,
      `connbudget.pods shows no connection of pod ${pod}`)
  } finally {
    await p.close()
  }
})

test('1. it follows its share down when a second pod joins, and up when it leaves', { skip }, async (t) => {
  await setLimit('follow', 8)
  const a = new TestPod('follow', 'follow-a')
  let b = null
  try {
    a.work(12, 'SELECT pg_sleep(0.005)')
    await a.mustHold(8, 5000, "alone, it never held the application's cap of 8")

    // from pod b's first connect on: every time pod a holds more than its
    // share on the server, it is back within it in 2 refresh intervals
    b = new TestPod('follow', 'follow-b')
    b.work(12, 'SELECT pg_sleep(0.005)')
    const joined = Date.now()
    let over = null
    let longest = 0
    let converged = -1
    while (Date.now() - joined < 3000) {
      const [ra, rb] = [await a.onServer(), await b.onServer()]
      const now = Date.now()
      if (ra && ra.connections > ra.share && over === null) {
        over = now
      }
      if (ra && ra.connections <= ra.share && over !== null) {
        longest = Math.max(longest, now - over)
        over = null
      }
      if (converged < 0 && ra && rb && ra.connections === 4 && ra.share === 4 && rb.connections === 4 && rb.share === 4) {
        converged = now - joined
      }
      await sleep(5)
    }
    if (over !== null) {
      longest = Math.max(longest, Date.now() - over)
    }
    // on a busy machine pod b's connects may take longer: how soon both
    // hold 4 is a figure, that they do is the check
    while (converged < 0 && Date.now() - joined < 15000) {
      const [ra, rb] = [await a.onServer(), await b.onServer()]
      if (ra && rb && ra.connections === 4 && ra.share === 4 && rb.connections === 4 && rb.share === 4) {
        converged = Date.now() - joined
      }
      await sleep(5)
    }
    t.diagnostic(`pod b joined: pod a above its share for at most ${longest} ms (${(longest / INTERVAL).toFixed(1)} ` +
      `refresh intervals); both at their share of 4 after ${converged} ms (${(converged / INTERVAL).toFixed(1)} intervals)`)
    assert.ok(longest <= 2 * INTERVAL + SLACK, `pod a held more than its share for ${longest} ms`)
    assert.ok(converged >= 0, `15 s after pod b joined: a ${JSON.stringify(await a.onServer())}, b ${JSON.stringify(await b.onServer())}`)
    const stats = a.budget.stats()
    assert.equal(stats.share, 4)
    assert.equal(stats.limit, 4)
    assert.ok(stats.surplusClosed >= 4, JSON.stringify(stats))

    await b.close()
    const took = await a.holds(8, 5000)
    t.diagnostic(`pod b left: pod a holds 8 again after ${took} ms (${(took / INTERVAL).toFixed(1)} refresh intervals)`)
    assert.ok(took >= 0 && took <= 3 * INTERVAL + SLACK, `pod a: ${JSON.stringify(await a.onServer())} ${took} ms after pod b left`)
    a.noFailures()
    b.noFailures()
  } finally {
    await (b && b.close())
    await a.close()
  }
})

test('idle connections beyond a smaller share close at once, while others are in use', { skip }, async (t) => {
  await setLimit('idle', 8)
  const a = new TestPod('idle', 'idle-a')
  let b = null
  try {
    a.work(10, 'SELECT pg_sleep(0.01)')
    await a.mustHold(8, 5000, "alone, it never held the application's cap of 8")
    await a.stopWork()
    // 4 connections in use for 2 s, 4 idle
    const long = Array.from({ length: 4 }, () => a.pool.query('SELECT pg_sleep(2)'))
    b = new TestPod('idle', 'idle-b')
    b.work(12, 'SELECT pg_sleep(0.005)')
    const longest = await overShare(a, 1500)
    const row = await a.onServer()
    t.diagnostic(`pod b joined: pod a (4 in use, 4 idle) above its share for at most ${longest} ms; now ${JSON.stringify(row)}`)
    assert.ok(longest <= 2 * INTERVAL + SLACK, `above its share for ${longest} ms: its idle connections did not close at once`)
    assert.deepEqual(row, { connections: 4, share: 4 })
    await Promise.all(long)
    b.noFailures()
  } finally {
    await (b && b.close())
    await a.close()
  }
})

test('with requests queued five deep for each connection, the refresh goes first and the pool follows its share down', { skip }, async (t) => {
  await setLimit('queued', 8)
  const a = new TestPod('queued', 'queued-a')
  let b = null
  try {
    // each request holds its connection 50 ms: in pg-pool's queue a
    // refresh would wait about as long as an interval
    a.work(40, 'SELECT pg_sleep(0.05)')
    await a.mustHold(8, 5000, "alone, it never held the application's cap of 8")
    const skipped = a.budget.stats().refreshesSkipped
    b = new TestPod('queued', 'queued-b')
    b.work(12, 'SELECT pg_sleep(0.005)')
    const longest = await overShare(a, 2000)
    const row = await a.onServer()
    t.diagnostic(`pod b joined: pod a above its share for at most ${longest} ms (${(longest / INTERVAL).toFixed(1)} ` +
      `refresh intervals); now ${JSON.stringify(row)}`)
    assert.ok(longest <= 2 * INTERVAL + SLACK, `pod a held more than its share for ${longest} ms`)
    assert.deepEqual(row, { connections: 4, share: 4 })
    assert.equal(a.budget.stats().refreshesSkipped, skipped, 'no refresh was skipped for want of a connection')
    a.noFailures()
    b.noFailures()
  } finally {
    await (b && b.close())
    await a.close()
  }
})

test('2. it never holds more than its share while its workers keep the pool busy', { skip }, async (t) => {
  await setLimit('busy', 6)
  const a = new TestPod('busy', 'busy-a')
  const b = new TestPod('busy', 'busy-b')
  try {
    a.work(16, 'SELECT pg_sleep(0.002)')
    b.work(16, 'SELECT pg_sleep(0.002)')
    assert.ok(await within(5000, async () => {
      const [ra, rb] = [await a.onServer(), await b.onServer()]
      return ra && rb && ra.connections === 3 && rb.connections === 3 && ra.share === 3 && rb.share === 3
    }) >= 0, `never settled at 3 each: ${JSON.stringify([a.budget.stats(), b.budget.stats()])}`)
    let samples = 0
    const over = []
    const most = {}
    for (const start = Date.now(); Date.now() - start < 2000; await sleep(10)) {
      const { rows } = await server().query(
        "SELECT pod, connections, share FROM connbudget.pods WHERE application_name = 'busy'")
      for (const row of rows) {
        if (row.connections > row.share) {
          over.push(row)
        }
        most[row.pod] = Math.max(most[row.pod] || 0, row.connections)
      }
      samples++
    }
    // the demand each reports is what the server records: all its
    // workers (in use plus waiting) and 25%, within its max of 20
    for (const p of [a, b]) {
      let seen = null
      assert.ok(await within(2000, async () => {
        const { rows } = await server().query(
          "SELECT demand FROM connbudget.pods WHERE application_name = 'busy' AND pod = $1", [p.pod])
        seen = [rows[0] && rows[0].demand, p.budget.stats().demand]
        return seen[0] === seen[1] && seen[0] >= 16
      }) >= 0, `${p.pod}: demand on the server and reported: ${JSON.stringify(seen)}`)
    }
    t.diagnostic(`${samples} samples; most connections held: ${JSON.stringify(most)}`)
    assert.deepEqual(over, [], `${over.length} of ${samples} samples found a pod above its share`)
    assert.deepEqual(most, { 'busy-a': 3, 'busy-b': 3 }, 'each pod uses its share of 3, and no more')
    for (const p of [a, b]) {
      const stats = p.budget.stats()
      assert.equal(stats.share, 3)
      assert.equal(stats.limit, 3)
      assert.ok(stats.demand > 3 && stats.refreshes >= 5, JSON.stringify(stats))
      p.noFailures()
    }
  } finally {
    await a.close()
    await b.close()
  }
})

test('3. close frees its share: the other pod grows within a publish period and a refresh interval', { skip }, async (t) => {
  await setLimit('leave', 8)
  const a = new TestPod('leave', 'leave-a')
  const b = new TestPod('leave', 'leave-b')
  try {
    a.work(12, 'SELECT pg_sleep(0.005)')
    b.work(12, 'SELECT pg_sleep(0.005)')
    assert.ok(await within(5000, async () => {
      const [ra, rb] = [await a.onServer(), await b.onServer()]
      return ra && rb && ra.connections === 4 && rb.connections === 4 && a.budget.stats().share === 4
    }) >= 0, 'the pods never settled at 4 each')
    await b.stopWork()
    const start = Date.now()
    await b.budget.close()
    const closing = Date.now() - start
    const [grown, gone] = await Promise.all([
      within(3000, () => a.budget.stats().share === 8),
      within(3000, async () => (await b.onServer()) === null)
    ])
    t.diagnostic(`close took ${closing} ms; pod a's share was 8 ${grown} ms later; pod b gone from connbudget.pods after ${gone} ms`)
    const limit = PUBLISH + INTERVAL * 1.1 + 100 + SLACK
    assert.ok(grown >= 0 && grown <= limit, `pod a's share grew to 8 after ${grown} ms, want within ${limit} ms`)
    assert.ok(gone >= 0 && gone <= 500, `pod b still in connbudget.pods ${gone} ms after close (its lease is 2 s)`)
    await a.mustHold(8, 3000, 'it never held its new share of 8')
    a.noFailures()
    b.noFailures()
  } finally {
    await a.close()
    await b.close()
  }
})

test('4. a 53300 refusal does not fail requests that can wait; 42501 is permanent', { skip }, async (t) => {
  await setLimit('capped', 2)
  // another pod holds the application's cap for a second
  const holders = []
  for (let i = 0; i < 2; i++) {
    const holder = new pg.Client({ user: role, password, application_name: 'capped', options: '-c connbudget.pod=holder' })
    await holder.connect()
    holders.push(holder)
  }
  const p = new TestPod('capped', 'waiter', { connectionTimeoutMillis: 8000 })
  try {
    const start = Date.now()
    setTimeout(() => holders.forEach((holder) => holder.end()), 1000)
    const results = await Promise.allSettled(Array.from({ length: 3 }, () => p.pool.query('SELECT pg_sleep(0.05)')))
    const waited = Date.now() - start
    const stats = p.budget.stats()
    t.diagnostic(`3 requests done ${waited} ms after the application was full for 1 s; ${stats.connectsRefused} connects refused`)
    assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'fulfilled', 'fulfilled'],
      String(results.map((r) => r.reason)))
    assert.ok(stats.connectsRefused > 0 && waited >= 1000, JSON.stringify(stats))
  } finally {
    await p.close()
  }

  // 42501: at once, to every request, and asked again only after 10 refresh intervals
  await setLimit('locked', null, '{cbnode_nobody}')
  const refused = async () => Number((await server().query(
    "SELECT coalesce((SELECT refused FROM connbudget.applications WHERE application_name = 'locked'), 0) AS n")).rows[0].n)
  const before = await refused()
  // never answered, it would wait 10 times its default interval of 1 s
  const q = new TestPod('locked', 'locked-a', {}, { refreshMs: INTERVAL })
  try {
    await assert.rejects(q.pool.query('SELECT 1'), (error) => error instanceof RefusedError && error.code === '42501')
    // the first request's connect, and the first refresh's (queued behind it)
    assert.ok(await within(3000, () => (q.budget.stats().errors.refused || 0) >= 2) >= 0, JSON.stringify(q.budget.stats()))
    const first = await refused()
    const start = Date.now()
    for (let i = 0; i < 5; i++) {
      await assert.rejects(q.pool.query('SELECT 1'), (error) => {
        assert.ok(error instanceof RefusedError, String(error))
        assert.equal(error.code, '42501')
        assert.equal(error.permanent, true)
        assert.equal(error.cause.code, '42501') // node-postgres's own error
        return true
      })
    }
    const took = Date.now() - start
    await sleep(500)
    const later = await refused()
    t.diagnostic(`the server refused ${first - before} connects at first, then ${later - first} in 5 requests and 0.5 s`)
    assert.ok(first - before >= 1 && first - before <= 2, `${first - before} refused at first`)
    assert.ok(took < 300, `5 requests took ${took} ms, want at once`)
    assert.equal(later, first, 'asked again within 10 refresh intervals')
    // after 10 refresh intervals it asks again
    assert.ok(await within(3000, async () => (await refused()) > first) >= 0, 'never asked again')
  } finally {
    await q.close()
  }
})

test('5. the server restarts under it: the pool recovers and keeps refreshing', { skip }, async (t) => {
  const dir = process.env.CB_CLUSTER_DIR
  const bindir = process.env.PG_BINDIR
  if (!dir || !bindir) {
    t.skip('needs CB_CLUSTER_DIR and PG_BINDIR')
    return
  }
  await setLimit('restart', 6)
  const p = new TestPod('restart', 'restart-a')
  try {
    p.work(4, 'SELECT pg_sleep(0.005)')
    assert.ok(await within(5000, async () =>
      ((await p.onServer()) || {}).connections >= 1 && p.budget.stats().refreshes >= 2) >= 0)
    const before = p.budget.stats()
    await new Promise((resolve, reject) => execFile(path.join(bindir, 'pg_ctl'),
      ['-D', path.join(dir, 'data'), '-l', path.join(dir, 'server.log'), '-w', '-t', '60', '-m', 'fast', 'restart'],
      (error, stdout, stderr) => error ? reject(new Error(`pg_ctl restart: ${error.message}\n${stdout}${stderr}`)) : resolve()))
    await admin.end() // its connections are gone
    admin = null
    const back = await within(15000, async () => {
      const row = await p.onServer().catch(() => null)
      const stats = p.budget.stats()
      return row && row.connections >= 1 && row.share >= 1 && stats.share === row.share &&
        stats.refreshes >= before.refreshes + 2
    })
    assert.ok(back >= 0, `after the restart: ${JSON.stringify(await p.onServer())}, ${JSON.stringify(p.budget.stats())}`)
    const [failed, done, refreshes] = [p.failed, p.done, p.budget.stats().refreshes]
    assert.ok(await within(5000, () => p.budget.stats().refreshes >= refreshes + 5) >= 0, 'it keeps refreshing')
    const stats = p.budget.stats()
    t.diagnostic(`recovered ${back} ms after the restart; ${failed} requests failed in the restart; refreshes ` +
      `${before.refreshes} -> ${stats.refreshes}, errors ${JSON.stringify(stats.errors)}`)
    assert.equal(p.failed - failed, 0, `after recovering: ${p.last && p.last.message}`)
    assert.ok(p.done > done)
    assert.equal(stats.status, 'ok')
  } finally {
    await p.close()
  }
})

test('without the extension: a fixed size, the pool\'s own', {
  skip: skip || (process.env.CONNBUDGET_TEST_PLAIN ? false : 'needs CONNBUDGET_TEST_PLAIN')
}, async () => {
  const pool = new pg.Pool({
    ...connectionOptions({ applicationName: 'plain', pod: 'plain-a' }),
    port: Number(process.env.CONNBUDGET_TEST_PLAIN),
    user: 'postgres',
    max: 5
  })
  const logged = []
  const budget = follow(pool, { log: (level, message) => logged.push([level, message]) })
  try {
    assert.ok(await within(3000, () => budget.stats().status === 'no-extension') >= 0, JSON.stringify(budget.stats()))
    assert.equal(pool.options.max, 5)
    await Promise.all(Array.from({ length: 10 }, () => pool.query('SELECT pg_sleep(0.05)')))
    const { rows } = await pool.query(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'plain'")
    assert.equal(rows[0].n, 5, 'the pool used its own max of 5')
    assert.equal(logged.filter(([level]) => level === 'warn').length, 1)
    assert.match(logged[0][1], /no usable connbudget extension/)
  } finally {
    await budget.close()
  }
})

// A relay in front of the test server, and a pod of app that goes through it.
async function relayed (app, pod, poolOptions = {}, budgetOptions = {}) {
  const relay = new Relay('127.0.0.1', Number(process.env.PGPORT))
  await relay.listen()
  return [relay, new TestPod(app, pod, { host: '127.0.0.1', port: relay.port, ...poolOptions }, budgetOptions)]
}

test('a server without connbudget.share (older than 1.2): the pool\'s own size, and its share once there is one', { skip }, async () => {
  await setLimit('older', 2)
  const [relay, p] = await relayed('older', 'older-a', { max: 5 }, { refreshMs: INTERVAL })
  relay.hideShare = true // the server answers 42704, as connbudget 1.1 does
  try {
    p.work(8, 'SELECT pg_sleep(0.005)')
    assert.ok(await within(3000, () => p.budget.stats().status === 'no-extension') >= 0, JSON.stringify(p.budget.stats()))
    assert.equal(p.budget.stats().limit, 5, 'the pool\'s own max')
    assert.equal(p.budget.stats().share, null)
    // the server still caps the application at 2: its refusals are backpressure
    assert.ok(await within(3000, () => p.budget.stats().connectsRefused > 0) >= 0, JSON.stringify(p.budget.stats()))
    relay.hideShare = false
    assert.ok(await within(5000, () => p.budget.stats().status === 'ok') >= 0, JSON.stringify(p.budget.stats()))
    const stats = p.budget.stats()
    assert.equal(stats.share, 2)
    assert.equal(stats.limit, 2)
    await p.mustHold(2, 3000, 'it never held its share of 2')
    const warned = p.logged.filter((line) => line.startsWith('warn:'))
    assert.equal(warned.length, 1, warned.join('\n'))
    assert.match(warned[0], /no usable connbudget extension \(unrecognized configuration parameter "connbudget.shxre"\)/)
    p.noFailures()
  } finally {
    await p.close()
    await relay.close()
  }
})

test('answers no connbudget server gives are errors of their kind, said once, never a size', { skip }, async (t) => {
  await setLimit('hostile', 3)
  const [relay, p] = await relayed('hostile', 'hostile-a')
  let most = 0
  let sampling = true
  const sampler = (async () => {
    while (sampling) {
      most = Math.max(most, ((await p.onServer()) || {}).connections || 0)
      await sleep(10)
    }
  })()
  try {
    p.work(8, 'SELECT pg_sleep(0.005)')
    assert.ok(await within(5000, async () =>
      p.budget.stats().share === 3 && ((await p.onServer()) || {}).connections === 3) >= 0)
    // each would let the pool grow to its max of 20 if it were believed
    const tail = 'min_size=0 budget=50 refresh_ms=200'
    const hostile = [
      ['answer-null', null],
      ['answer-text', ''],
      ['answer-text', 'max_size=20'],
      ['answer-text', `protocol=2 status=ok max_size=2O ${tail}`],
      ['answer-text', `protocol=2 status=ok max_size=+20 ${tail}`],
      ['answer-text', `protocol=2 status=ok max_size=20 ${tail} `],
      ['answer-text', `protocol=2 status=ok  max_size=20 ${tail}`],
      ['answer-text', `protocol=2 status=grow max_size=20 ${tail}`],
      ['answer-text', `protocol=2 status=ok max_size=20\n ${tail}`],
      ['answer-text', `protocol=2 status=ok max_size=20 ${tail} x=${'y'.repeat(5000)}`],
      ['answer-range', `protocol=2 status=ok max_size=99999999999999999999 ${tail}`],
      ['answer-range', 'protocol=2 status=ok max_size=20 min_size=0 budget=50 refresh_ms=5'],
      ['answer-range', 'protocol=2 status=ok max_size=-1 min_size=0 budget=50 refresh_ms=200'],
      ['answer-order', 'protocol=2 status=ok max_size=20 min_size=0 budget=10 refresh_ms=200'],
      ['answer-order', 'protocol=2 status=ok max_size=20 min_size=21 budget=50 refresh_ms=200'],
      ['answer-shape', `protocol=2 status=ok max_size=20 max_size=20 ${tail}`],
      ['answer-shape', 'protocol=2 status=ok max_size=20 budget=50'],
      ['refused', `protocol=2 status=refused max_size=0 ${tail} sqlstate=42501 reason=role_may_not_claim`]
    ]
    for (const [kind, value] of hostile) {
      const before = p.budget.stats().errors[kind] || 0
      relay.share = { value }
      assert.ok(await within(3000, () => (p.budget.stats().errors[kind] || 0) > before) >= 0,
        `${JSON.stringify(value && value.slice(0, 80))}: no ${kind} error counted: ${JSON.stringify(p.budget.stats())}`)
      const stats = p.budget.stats()
      assert.equal(stats.share, 3, `${JSON.stringify(value && value.slice(0, 80))} was taken as a size`)
      assert.equal(stats.limit, 3)
    }
    assert.equal(p.budget.stats().status, 'refused')
    relay.share = null // good answers again: taken (after 10 intervals, for the refusal)
    assert.ok(await within(4000, () => p.budget.stats().status === 'ok') >= 0, JSON.stringify(p.budget.stats()))
    sampling = false
    await sampler
    const warned = p.logged.filter((line) => line.startsWith('warn:') || line.startsWith('error:'))
    t.diagnostic(`${relay.rewritten} answers rewritten; most connections on the server ${most}; said: ` +
      warned.map((line) => line.slice(0, 100)).join(' | '))
    assert.ok(most <= 3, `the server saw ${most} connections of a pod whose share is 3`)
    // each kind said once, however often the server repeats it
    assert.equal(warned.length, 6, warned.join('\n'))
    assert.ok(warned.some((line) => /max_size 20 <= budget 10/.test(line)), 'the warning says what was wrong')
    assert.ok(warned.every((line) => line.length < 600), 'a long answer is quoted short')
    p.noFailures()
  } finally {
    sampling = false
    await sampler
    await p.close()
    await relay.close()
  }
})

test('a pool the server does not govern (status other) keeps its own max', { skip }, async () => {
  const pool = new pg.Pool({ application_name: 'ungoverned-node', user: role, password, max: 3 })
  const logged = []
  const budget = follow(pool, { log: (level, message) => logged.push([level, message]) })
  try {
    assert.ok(await within(3000, () => budget.stats().status === 'other') >= 0, JSON.stringify(budget.stats()))
    await Promise.all(Array.from({ length: 8 }, () => pool.query('SELECT pg_sleep(0.05)')))
    assert.equal(pool.options.max, 3)
    assert.equal(pool.totalCount, 3)
    assert.equal(budget.stats().share, null)
    assert.deepEqual(logged.filter(([level]) => level === 'warn').map(([, m]) => /does not govern/.test(m)), [true])
  } finally {
    await budget.close()
  }
})
