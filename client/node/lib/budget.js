'use strict'

// Makes a node-postgres pg.Pool follow its pod's connbudget share, as
// docs/protocol.md of connbudget says (protocol 2); client/connbudget_pool.h
// is the reference implementation.

const crypto = require('crypto')
const { performance } = require('perf_hooks')
const { setTimeout: sleep } = require('timers/promises')

const { backoffCeiling, refusalPace, shareFromResult } = require('./share')

// The report and the read (section 3), schema-qualified so that no function
// of the same name earlier on a search_path answers instead; the leave
// (section 7).
const SHARE_SQL = "SELECT pg_catalog.set_config('connbudget.demand', $1, false), " +
  "pg_catalog.current_setting('connbudget.share')"
const LEAVE_SQL = "SET connbudget.demand = 'leave'"

const NO_SHARE = new Set(['42704', '42602']) // connbudget.share unknown: no connbudget 1.2 here
const PERMANENT = new Set(['42501', '53400'])
const PEAKS = 5 // refresh intervals before this one whose busiest moment counts in the demand
const LOOK_AGAIN_MS = 30000 // with the pool's own size
const QUERY_TIMEOUT_MS = 5000
const CONNECT_WAIT_MS = 30000 // without connectionTimeoutMillis

const clock = () => performance.now()
const firstLine = (error) => String(error && error.message).split('\n')[0]

/**
 * A connect the server refused: 53300 (backpressure) still at the request's
 * deadline, or at once 42501 or 53400, which do not change by themselves
 * (permanent). code is the SQLSTATE, cause node-postgres's error.
 */
class RefusedError extends Error {
  constructor (cause, permanent) {
    const why = permanent ? 'permanent until the limits change' : 'backpressure, until the deadline'
    super(`connbudget: the server refused a connection (SQLSTATE ${cause.code}, ${why}): ${cause.message}`, { cause })
    this.name = 'RefusedError'
    this.code = cause.code
    this.permanent = permanent
  }
}

function defaultLog (level, message) {
  if (level === 'warn' || level === 'error') console.warn(`connbudget: ${message}`)
}

/** Sizes a pg.Pool from its pod's connbudget share; made by follow(pool). */
class Budget {
  constructor (pool, { refreshMs, log = defaultLog } = {}) {
    if (!pool || !pool.options || !('waitingCount' in pool) || Object.hasOwn(pool, 'connect') || pool.totalCount > 0) {
      throw new TypeError('connbudget: follow() takes a new pg.Pool, once, before its first connection')
    }
    if (refreshMs !== undefined && !(Number.isInteger(refreshMs) && refreshMs >= 10 && refreshMs <= 3600000)) {
      throw new RangeError('connbudget: refreshMs must be an integer from 10 to 3600000')
    }
    this.pool = pool
    this.poolSession = crypto.randomBytes(4).toString('hex') // the last -c wins
    pool.options.options = [pool.options.options, `-c connbudget.pool_session=${this.poolSession}`].filter(Boolean).join(' ')
    this._log = log
    this._configuredMs = refreshMs
    this._refreshMs = refreshMs || 1000 // until the server says
    this._connectWaitMs = pool.options.connectionTimeoutMillis || CONNECT_WAIT_MS
    this._userMax = pool.options.max
    this._userMin = pool.options.min
    this._share = null // the last good share
    this._fixed = false // the pool's own max: no connbudget 1.2 here, or not governed
    this._status = 'starting'
    this._lastDemand = null
    this._peak = 0 // the busiest moment of this refresh interval
    this._peaks = [] // and of the ones before
    this._rotatedAt = clock()
    this._said = new Set() // what was logged since the last good share: said once
    this._refusal = null // a permanent refusal in force: { cause, until }
    this._internal = 0 // the adapter's own borrows, waiting or held
    this._handoff = null // a refresh waiting for the next connection given back
    this._cycling = 0 // of them, those taking a connection to close it or hand it over
    this._backoffs = new Set() // requests waiting out a 53300: what wakes them
    this._closing = false
    this._closed = null
    this._timer = null
    this._refreshing = null
    this._counts = {
      refreshes: 0, refreshesSkipped: 0, surplusClosed: 0, connectsRefused: 0, requestsRefused: 0
    }
    this._errors = {}

    this._connect = pool.connect.bind(pool)
    this._end = pool.end.bind(pool)
    pool.connect = (callback) => this._connectFor(callback)
    pool.end = (callback) => {
      const closed = this.close()
      if (typeof callback !== 'function') return closed
      closed.then(() => callback(), callback)
    }
    this._resize() // one connection until the server has answered
    this._schedule(0)
  }

  /** The share and the adapter's counters (the pool's own are totalCount, idleCount, waitingCount). */
  stats () {
    const share = this._share
    return {
      poolSession: this.poolSession,
      status: this._status,
      share: share && share.maxSize,
      minSize: share && share.minSize,
      budget: share && share.budget,
      refreshMs: this._refreshMs,
      limit: this.pool.options.max,
      demand: this._lastDemand,
      ...this._counts,
      errors: { ...this._errors }
    }
  }

  /** Hands the share back (section 7), then ends the pool; pool.end() too. */
  close () {
    this._closed = this._closed || this._close()
    return this._closed
  }

  async _close () {
    this._closing = true
    clearTimeout(this._timer)
    // a refresh or the leave waiting in a saturated pool is not waited for long
    await Promise.race([Promise.resolve(this._refreshing).then(() => this._leave()), sleep(1000, undefined, { ref: false })])
    await this._end()
  }

  // Counts an error of its kind in stats().errors, and logs it once until
  // the next good share (once per key).
  _error (kind, message, key = kind, level = 'warn') {
    this._errors[kind] = (this._errors[kind] || 0) + 1
    if (!this._said.has(key)) {
      this._said.add(key)
      this._log(level, message)
    }
  }

  // ---- the pool's callers ----

  // pool.connect(), with a callback or a promise. The client is handed over
  // in pg-pool's own callback, so that pool.query() has its error listener
  // on it before the connection can say anything else.
  _connectFor (callback) {
    this._sample(1)
    const deadline = clock() + this._connectWaitMs
    if (typeof callback === 'function') return this._acquire(callback, 0, deadline)
    return new this.pool.Promise((resolve, reject) => {
      this._acquire((error, client) => (error ? reject(error) : resolve(client)), 0, deadline)
    })
  }

  // A connect refused with 53300 is tried again until the request's
  // deadline; 42501 and 53400 fail at once, and while one is in force so do
  // requests that would need a new connection.
  _acquire (callback, attempt, deadline) {
    const fail = (error) => callback(error, undefined, () => {})
    if (this._refused()) {
      this._counts.requestsRefused++
      return fail(new RefusedError(this._refusal.cause, true))
    }
    this._connect((error, client, release) => {
      if (!error) {
        client.release = (reason) => this._giveBack(release, reason, client)
        return callback(undefined, client, client.release)
      }
      if (PERMANENT.has(error.code)) {
        this._counts.requestsRefused++
        return fail(this._notePermanent(error))
      }
      if (error.code !== '53300') return fail(error)
      this._counts.connectsRefused++
      const left = deadline - clock()
      if (left <= 0 || this._closing) {
        this._counts.requestsRefused++
        return fail(new RefusedError(error, false))
      }
      const { retryMs, leaseMs } = refusalPace(error)
      this._backoff(Math.min(left, Math.random() * backoffCeiling(retryMs || 1000, leaseMs, attempt)))
        .then(() => this._acquire(callback, attempt + 1, deadline))
    })
  }

  // Waits ms, or less if the share grows first (the room was made for the
  // requests waiting).
  _backoff (ms) {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer)
        this._backoffs.delete(wake)
        resolve()
      }
      const timer = setTimeout(wake, ms)
      this._backoffs.add(wake)
    })
  }

  // A connection comes back: closed instead while the pool is above its
  // share (pg-pool destroys a client released with a truthy argument).
  // A refresh waiting for a connection takes it first.
  _giveBack (release, error, client) {
    const pool = this.pool
    if (!error && !pool.ending && pool.totalCount > pool.options.max) {
      this._counts.surplusClosed++
      return release(true)
    }
    if (!error && client && this._handoff && !pool.ending) {
      const take = this._handoff
      this._handoff = null
      return take(client, release)
    }
    return release(error)
  }

  // The permanent refusal in force, if a request now would need a new
  // connection; else null.
  _refused () {
    const pool = this.pool
    if (this._refusal && clock() >= this._refusal.until) this._refusal = null
    return this._refusal && pool.idleCount === 0 && pool.totalCount < pool.options.max ? this._refusal : null
  }

  // ---- the demand (section 3) ----

  // The busiest moment: connections in use plus requests waiting (for a
  // connection, or out a refusal), without the adapter's own borrows.
  _sample (extra) {
    const pool = this.pool
    const busy = pool.totalCount - pool.idleCount + pool.waitingCount - this._internal + this._backoffs.size
    this._peak = Math.max(this._peak, busy + extra)
  }

  // The busiest moment of this refresh interval and the 5 before, plus 25%
  // (at least 1), at least the pool's min and the server's min_size, at
  // most the pool's max.
  _demand () {
    const busy = Math.max(this._peak, ...this._peaks)
    const demand = Math.max(busy + Math.max(1, Math.ceil(busy / 4)), this._userMin, this._share ? this._share.minSize : 0)
    return Math.min(demand, this._userMax)
  }

  _rotatePeaks () {
    if (clock() - this._rotatedAt >= this._refreshMs * 0.9) {
      this._peaks = [...this._peaks.slice(1 - PEAKS), this._peak]
      this._peak = 0
      this._sample(0)
      this._rotatedAt = clock()
    }
  }

  // ---- the size (section 4) ----

  // pool.options.max is the share within the pool's own max (pg-pool reads
  // it at every connect). A pool of 0 would leave requests waiting for
  // nothing and have no connection to ask again on: it holds 1.
  _resize () {
    const pool = this.pool
    let limit = this._fixed ? this._userMax : 1 // 1 until the server has answered
    if (this._share) limit = Math.max(1, Math.min(this._share.maxSize, this._userMax))
    const grew = limit > pool.options.max
    pool.options.max = limit
    pool.options.min = Math.min(Math.max(this._userMin, this._share ? this._share.minSize : 0), limit)
    if (grew) for (const wake of this._backoffs) wake()
    this._cycle()
  }

  // Takes connections as a request takes one and gives them back at once:
  // idle ones beyond the size, which close as they come back (a pool above
  // its size opens none for a request), and, when the size grew, new ones
  // for the requests waiting, which are handed over to them as they come
  // back (pg-pool opens one per release, not one per request waiting).
  _cycle () {
    const { totalCount: total, idleCount: idle, waitingCount: waiting, options: { max } } = this.pool
    const n = Math.max(Math.min(total - max, idle) - this._cycling, Math.min(max - total, waiting))
    for (let i = 0; i < n; i++) {
      this._cycling++
      this._borrow().then((lease) => {
        this._cycling--
        lease.release()
      }, (error) => {
        this._cycling--
        this._noteConnectError(error)
      })
    }
  }

  // ---- refreshing (sections 2, 3 and 5) ----

  _jitter (lo, hi) {
    return this._refreshMs * (lo + Math.random() * (hi - lo)) / 100
  }

  _publishPeriod () {
    return Math.min(1000, Math.max(10, this._refreshMs / 10))
  }

  _schedule (ms) {
    clearTimeout(this._timer)
    if (!this._closing) this._timer = setTimeout(() => this._due(), Math.max(0, ms)).unref()
  }

  // A refresh is due. One still waiting for a connection (every one in use,
  // and requests waiting) is not doubled: this one is skipped and counted,
  // and the one waiting reports when a connection reaches it.
  _due () {
    this._schedule(this._jitter(90, 110))
    if (this._refreshing) {
      this._counts.refreshesSkipped++
      return
    }
    this._refreshing = this._refresh()
      .catch((error) => {
        this._log('error', `refreshing the share failed: ${error && error.stack}`)
        return this._jitter(90, 110)
      })
      .then((next) => {
        this._refreshing = null
        this._schedule(next)
      })
  }

  // One refresh, on one of the pool's own connections; resolves to when
  // the next one is due, in ms.
  async _refresh () {
    if (this._refused()) {
      this._counts.refreshesSkipped++
      return this._refusal.until - clock()
    }
    let lease
    try {
      lease = await this._borrowFirst()
    } catch (error) {
      return this._borrowFailed(error)
    }
    if (this._closing) {
      lease.release() // no report after the leave
      return 0
    }
    this._sample(0)
    const demand = this._demand()
    let result
    try {
      result = await lease.client.query({
        text: SHARE_SQL, values: [String(demand)], rowMode: 'array', query_timeout: QUERY_TIMEOUT_MS
      })
    } catch (error) {
      if (NO_SHARE.has(error.code)) {
        lease.release()
        return this._fixedSize('no-extension',
          `the server has no usable connbudget extension (${firstLine(error)}); using the pool's own max of ${this._userMax}`)
      }
      lease.release(error) // broken, or timed out: given to no one
      this._error('query', `reading connbudget.share failed: ${firstLine(error)}`, 'query:' + firstLine(error))
      return this._publishPeriod() // a restart: soon, on a new connection
    }
    lease.release()
    let share
    try {
      share = shareFromResult(result)
    } catch (error) { // an AnswerError: nothing is taken from it
      this._error(error.kind, `${error.message}; ignored, the pool stays within ${this.pool.options.max} connections`)
      return this._jitter(90, 110)
    }
    return this._take(share, demand)
  }

  // One of the pool's connections, taken as a request takes one, for the
  // adapter's own use: { client, release }. While it is held, an error the
  // connection reports (a server shutting down) is the adapter's: its query
  // fails, or it is closed when it is given back.
  _borrow () {
    this._internal++
    return new Promise((resolve, reject) => this._connect((error, client, release) => {
      if (error) {
        this._internal--
        return reject(error)
      }
      resolve(this._lease(client, release))
    }))
  }

  // A client held for the adapter's own use (counted in _internal), and
  // how to give it back: pg-pool's release for it, through _giveBack().
  _lease (client, release) {
    const ignore = () => {}
    client.on('error', ignore)
    return {
      client,
      release: (reason) => {
        client.removeListener('error', ignore)
        this._internal--
        this._giveBack(release, reason)
      }
    }
  }

  // A connection for the refresh: when every one is in a caller's hands
  // and requests wait, the next one a caller gives back, before any of
  // them (in pg-pool's queue the refresh would wait for every request
  // ahead of it, and learn that its share fell that much later); when none
  // comes back within an interval, or otherwise, as _borrow().
  _borrowFirst () {
    const pool = this.pool
    if (pool.idleCount > 0 || pool.waitingCount === 0 || pool.totalCount === 0 || this._handoff) {
      return this._borrow()
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        if (this._handoff !== take) return
        this._handoff = null
        resolve(this._borrow())
      }, Math.min(this._refreshMs, 5000))
      timer.unref()
      const take = (client, release) => {
        clearTimeout(timer)
        this._internal++
        resolve(this._lease(client, release))
      }
      this._handoff = take
    })
  }

  // The refresh found no connection: a saturated pool (pg-pool's
  // connectionTimeoutMillis) skips it; after a 53300, which was itself a
  // report of one more, it asks again at the pace the server states.
  _borrowFailed (error) {
    if (!error.code && /timeout/i.test(error.message)) {
      this._counts.refreshesSkipped++
      return this._jitter(90, 110)
    }
    this._noteConnectError(error)
    if (error.code === '53300') {
      // at a size of its own (no share to go by), a pool the server holds
      // below it keeps to what it has, so the next refresh waits for one of
      // its connections instead of asking for a new one to be refused
      if (this._fixed) this.pool.options.max = Math.max(1, Math.min(this.pool.options.max, this.pool.totalCount))
      return (refusalPace(error).retryMs || this._refreshMs) * (0.9 + Math.random() * 0.2)
    }
    return this._refusal ? this._refusal.until - clock() : this._jitter(90, 110)
  }

  // The pool's own max, where there is no share: no connbudget 1.2, or a
  // pool the server does not govern. Looked at again every 30 s.
  _fixedSize (status, message) {
    this._error(status, message)
    this._status = status
    this._fixed = true
    this._share = null
    this._refreshMs = this._configuredMs || LOOK_AGAIN_MS
    this._resize()
    return this._jitter(90, 110)
  }

  // Takes what the server said; returns when to ask next, in ms.
  _take (share, demand) {
    if (share.status === 'other') {
      return this._fixedSize('other', `the server does not govern application ${JSON.stringify(this.pool.options.application_name)} ` +
        `(no row in connbudget.application_limits, no pod): using the pool's own max of ${this._userMax}`)
    }
    if (share.status === 'left') return this._jitter(90, 110) // handed back: the next report brings it back
    if (share.status === 'refused') {
      // governed when it connected, no more: the last share stands
      this._status = 'refused'
      const cause = new Error(`connbudget.share says status=refused reason=${share.reason}`)
      cause.code = share.sqlstate || '42501'
      this._notePermanent(cause)
      return this._jitter(1000, 1100)
    }
    const first = this._lastDemand === null
    const changed = !first && demand !== this._lastDemand
    this._said.clear() // what went wrong before is said again if it recurs
    this._share = share
    this._fixed = false
    this._status = 'ok'
    this._refreshMs = this._configuredMs || share.refreshMs
    this._lastDemand = demand
    this._counts.refreshes++
    this._rotatePeaks()
    this._resize()
    // the answer to a changed demand is the allocation from before it
    if (changed) return this._publishPeriod()
    if (first) return this._jitter(10, 100) // pools started together do not refresh in step
    return share.maxSize === 0 ? this._jitter(100, 120) : this._jitter(90, 110)
  }

  // ---- refusals (section 6) ----

  _noteConnectError (error) {
    if (error.code === '53300') {
      this._counts.connectsRefused++
    } else if (PERMANENT.has(error.code)) {
      this._notePermanent(error)
    } else {
      this._error('connect', `a connect of the pool's own failed: ${firstLine(error)}`, 'connect:' + firstLine(error))
    }
  }

  // For 10 refresh intervals, requests that would need a new connection
  // fail at once with it, and nothing asks the server again.
  _notePermanent (cause) {
    const refused = new RefusedError(cause, true)
    this._refusal = { cause, until: clock() + 10 * this._refreshMs }
    this._error('refused', `${refused.message}; asked again in ${10 * this._refreshMs} ms`, 'refused:' + cause.message, 'error')
    return refused
  }

  // ---- leaving (section 7) ----

  async _leave () {
    if (!this._share) return
    const lease = await this._borrow().catch(() => null)
    if (!lease) return
    try {
      await lease.client.query({ text: LEAVE_SQL, query_timeout: 1000 })
      lease.release()
      this._status = 'left'
    } catch (error) {
      lease.release(error)
      this._log('debug', `handing the share back failed: ${firstLine(error)}`)
    }
  }
}

/**
 * Makes pool (a pg.Pool) follow its share; returns its Budget. Call it
 * right after new pg.Pool(...), in the process that uses the pool (after
 * any fork).
 */
function follow (pool, options) {
  return new Budget(pool, options)
}

module.exports = { Budget, RefusedError, follow }
