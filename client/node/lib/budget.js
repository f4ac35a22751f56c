'use strict'

// Makes a node-postgres pg.Pool follow its connbudget share, as
// docs/protocol.md of connbudget says; client/connbudget_pool.h is the
// reference implementation.

const { performance } = require('perf_hooks')
const { setTimeout: sleep } = require('timers/promises')

const { checkId, newPoolSession, optionValue, withPoolSession } = require('./identity')
const {
  AnswerError, MIN_REFRESH_MS, MAX_REFRESH_MS, backoffCeiling, poolShareFromResult,
  refusalPace, shareFromResult
} = require('./share')

// The protocol's queries (sections 3, 5 and 7), schema-qualified so that
// no function of the same name earlier on a search_path answers instead.
const SHARE_SQL = "SELECT pg_catalog.set_config('connbudget.demand', $1, false), " +
  "pg_catalog.current_setting('connbudget.share')"
const POOL_SHARE_SQL = 'SELECT max_size, min_size, budget, refresh_ms FROM connbudget.pool_share($1::int)'
const LEAVE_SQL = { 2: "SET connbudget.demand = 'leave'", 1: 'SELECT connbudget.pool_share(0)' }

const UNKNOWN_SETTING = new Set(['42704', '42602']) // no connbudget.share: protocol 1
const NO_EXTENSION = new Set(['42883', '3F000', '55000']) // no usable pool_share() either
const PERMANENT = new Set(['42501', '53400'])
const PEAK_WINDOW = 5 // refresh intervals of busy moments behind the demand
const DEFAULT_REFRESH_MS = 1000 // until the server says
const LOOK_AGAIN_MS = 30000 // without a share, and from protocol 1 to 2
const QUERY_TIMEOUT_MS = 5000
const BACKOFF_CAP_MS = 30000
const DEFAULT_CONNECT_WAIT_MS = 30000
const FOLLOWED = Symbol('connbudget.Budget')

// Every value as the text the server sent: numbers are read only by the
// protocol's rules (lib/share.js).
const RAW_TYPES = { getTypeParser: () => (value) => value }
const NOOP = () => {}
const clock = () => performance.now()
const firstLine = (text) => String(text).split('\n')[0]

/**
 * A connect the server refused: 53300 (backpressure) still at the
 * request's deadline, or at once 42501 or 53400, which do not change by
 * themselves (permanent). code is the SQLSTATE, cause the driver's error.
 */
class RefusedError extends Error {
  constructor (cause, permanent, code = cause && cause.code) {
    const why = permanent
      ? `the server refuses this pool's connections (SQLSTATE ${code}, permanent until the limits change)`
      : `the server refused connections until the deadline (SQLSTATE ${code}, backpressure)`
    super(`connbudget: ${why}: ${cause && cause.message}`, { cause })
    this.name = 'RefusedError'
    this.code = code
    this.permanent = permanent
  }
}

class BorrowTimeout extends Error {}

function defaultLog (level, message) {
  if (level === 'warn' || level === 'error') {
    console.warn(`connbudget: ${message}`)
  }
}

/** Sizes a pg.Pool from its pod's connbudget share; made by follow(pool). */
class Budget {
  constructor (pool, options = {}) {
    if (!pool || !pool.options || typeof pool.connect !== 'function' || !('waitingCount' in pool)) {
      throw new TypeError('connbudget: follow() takes a pg.Pool')
    }
    if (pool[FOLLOWED]) {
      throw new Error('connbudget: this pool already follows its share')
    }
    if (pool.totalCount > 0 || pool.ending) {
      throw new Error('connbudget: call follow() on a new pool, before its first connection')
    }
    const { refreshMs, connectWaitMs, log } = options
    if (refreshMs !== undefined && !(Number.isInteger(refreshMs) && refreshMs >= MIN_REFRESH_MS && refreshMs <= MAX_REFRESH_MS)) {
      throw new RangeError(`connbudget: refreshMs must be an integer from ${MIN_REFRESH_MS} to ${MAX_REFRESH_MS}`)
    }
    if (connectWaitMs !== undefined && !(Number.isInteger(connectWaitMs) && connectWaitMs >= 0)) {
      throw new RangeError('connbudget: connectWaitMs must be an integer of 0 or more')
    }
    this.pool = pool
    this._log = typeof log === 'function' ? log : defaultLog
    this._configuredMs = refreshMs || 0
    this._refreshMs = refreshMs || DEFAULT_REFRESH_MS
    this._connectWaitMs = connectWaitMs ?? (pool.options.connectionTimeoutMillis || DEFAULT_CONNECT_WAIT_MS)
    this._userMax = pool.options.max
    this._userMin = pool.options.min || 0

    // the identity, checked before anything connects, with a pool session
    // of this Budget's own
    this.applicationName = pool.options.application_name || null
    this.pod = optionValue(pool.options.options, 'pod')
    if (this.applicationName !== null) checkId('application_name', this.applicationName)
    if (this.pod !== null) checkId('pod', this.pod)
    this.poolSession = newPoolSession()
    pool.options.options = withPoolSession(pool.options.options, this.poolSession)

    this._share = null // the last good share
    this._status = 'starting'
    this._fixed = false // the pool's own max: no extension, or not governed
    this._protocol = 2
    this._probeAt = 0 // speaking protocol 1: when to try 2 again
    this._lastDemand = null
    this._intervalPeak = 0
    this._peaks = []
    this._rotatedAt = clock()
    this._said = new Set() // what was logged and still holds: said once
    this._refusal = null // a permanent refusal in force: { cause, code, until }
    this._internal = 0 // the adapter's own borrows, waiting or held
    this._backoffs = new Set() // requests waiting out a 53300
    this._trimming = 0
    this._closing = false
    this._closed = null
    this._timer = null
    this._refreshing = null
    this._counts = {
      refreshes: 0, refreshesSkipped: 0, surplusClosed: 0, connectsRefused: 0, permanentRefusals: 0, requestsRefused: 0
    }
    this._errors = {}

    this._connect = pool.connect.bind(pool)
    this._end = pool.end.bind(pool)
    pool[FOLLOWED] = this
    pool.connect = (callback) => this._connectFor(callback)
    pool.end = (callback) => {
      const closed = this.close()
      if (typeof callback !== 'function') return closed
      closed.then(() => callback(), callback)
    }
    this._resize() // one connection until the server has answered
    this._schedule(0)
  }

  /** The share, the pool's counters and the adapter's own. */
  stats () {
    const pool = this.pool
    const said = (name) => (this._share && !this._fixed ? this._share[name] : null)
    return {
      applicationName: this.applicationName,
      pod: this.pod,
      poolSession: this.poolSession,
      status: this._status,
      protocol: this._share || this._fixed ? this._protocol : null,
      share: said('maxSize'),
      minSize: said('minSize'),
      budget: said('budget'),
      allocation: said('allocation'),
      pods: said('pods'),
      connections: said('connections'),
      refreshMs: this._refreshMs,
      limit: pool.options.max,
      demand: this._lastDemand,
      total: pool.totalCount,
      idle: pool.idleCount,
      waiting: pool.waitingCount,
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
    if (this._refreshing) {
      // a refresh waiting in a saturated pool is not waited for long
      await Promise.race([this._refreshing, sleep(Math.min(1000, this._refreshMs), undefined, { ref: false })])
    }
    await this._leave()
    await this._end()
  }

  _say (level, key, message) {
    if (!this._said.has(key)) {
      this._said.add(key)
      this._log(level, message)
    }
  }

  _countError (kind) {
    this._errors[kind] = (this._errors[kind] || 0) + 1
  }

  // ---- the pool's callers ----

  _connectFor (callback) {
    this._sample(1)
    const deadline = clock() + this._connectWaitMs
    if (typeof callback === 'function') {
      this._acquire(callback, 0, deadline)
      return undefined
    }
    return new this.pool.Promise((resolve, reject) => {
      this._acquire((error, client) => error ? reject(error) : resolve(client), 0, deadline)
    })
  }

  // The pool's connect(), with connects refused with 53300 retried until
  // the deadline after a wait drawn from [0, retry_ms * 2^n] (full
  // jitter); 42501 and 53400 fail at once, and while one holds, so do
  // requests that would need a new connection.
  _acquire (callback, attempt, deadline) {
    if (this._refusalInForce() && this._wouldConnect()) {
      this._counts.requestsRefused++
      callback(new RefusedError(this._refusal.cause, true, this._refusal.code), undefined, NOOP)
      return
    }
    this._connect((error, client, release) => {
      if (!error) {
        client.release = (reason) => this._giveBack(release, reason)
        callback(undefined, client, client.release)
        return
      }
      if (PERMANENT.has(error.code)) {
        this._counts.requestsRefused++
        callback(this._notePermanent(error), undefined, NOOP)
        return
      }
      if (error.code !== '53300') {
        callback(error, undefined, NOOP)
        return
      }
      this._counts.connectsRefused++
      const { retryMs, leaseMs } = refusalPace(error)
      const left = deadline - clock()
      if (left <= 0 || this._closing) {
        this._counts.requestsRefused++
        callback(new RefusedError(error, false), undefined, NOOP)
        return
      }
      const retry = (next) => {
        if (this._backoffs.delete(retry)) {
          clearTimeout(timer)
          this._acquire(callback, next, deadline)
        }
      }
      retry.attempt = attempt
      const ceiling = backoffCeiling(retryMs || 1000, leaseMs, attempt, BACKOFF_CAP_MS)
      const timer = setTimeout(retry, Math.min(left, Math.random() * ceiling), attempt + 1)
      this._backoffs.add(retry)
    })
  }

  // A client comes back: closed instead while the pool is above its share
  // (pg-pool destroys a client released with a truthy argument).
  _giveBack (release, error) {
    const pool = this.pool
    if (!error && !pool.ending && pool.totalCount > pool.options.max) {
      this._counts.surplusClosed++
      return release(true)
    }
    return release(error)
  }

  // Would a connect() now open a new connection?
  _wouldConnect () {
    const pool = this.pool
    return pool.idleCount === 0 && pool.totalCount < pool.options.max
  }

  // ---- the demand (section 3) ----

  // The busiest moment: connections in use plus requests waiting (for a
  // connection, or out a refusal), without the adapter's own borrows.
  _sample (extra) {
    const pool = this.pool
    const busy = pool.totalCount - pool.idleCount + pool.waitingCount - this._internal + this._backoffs.size
    this._intervalPeak = Math.max(this._intervalPeak, busy + extra)
  }

  // The busiest moment of this refresh interval and the 5 before, plus 25%
  // (at least 1), at least the pool's min and the server's min_size, at
  // most the pool's max.
  _demand () {
    const busy = Math.max(this._intervalPeak, ...this._peaks)
    const demand = Math.max(busy + Math.max(1, Math.ceil(busy / 4)), this._userMin, this._minSize())
    return Math.min(demand, this._userMax)
  }

  _rotatePeaks (now) {
    if (now - this._rotatedAt >= this._refreshMs * 0.9) {
      this._peaks.push(this._intervalPeak)
      if (this._peaks.length > PEAK_WINDOW) this._peaks.shift()
      this._intervalPeak = 0
      this._sample(0)
      this._rotatedAt = now
    }
  }

  _minSize () {
    return this._share && !this._fixed ? this._share.minSize : 0
  }

  // ---- the size (section 4) ----

  // pool.options.max is the share within the pool's own max (pg-pool reads
  // it at every connect). A pg.Pool of 0 would leave requests waiting for
  // nothing and have no connection to ask again on: it holds 1.
  _resize () {
    const pool = this.pool
    let limit = 1 // until the server has answered
    if (this._fixed) {
      limit = this._userMax
    } else if (this._share) {
      limit = Math.max(1, Math.min(this._share.maxSize, this._userMax))
    }
    const grew = limit > pool.options.max
    pool.options.max = limit
    pool.options.min = Math.min(Math.max(this._userMin, this._minSize()), limit)
    if (grew) {
      this._grow()
      for (const retry of this._backoffs) setImmediate(retry, retry.attempt) // the room was made for them
    }
    this._trim()
  }

  // Idle connections beyond the share close at once: taken as a request
  // takes one (a pool above its size opens none for it), given back closed.
  _trim () {
    const pool = this.pool
    const n = Math.min(pool.totalCount - pool.options.max, pool.idleCount) - this._trimming
    for (let i = 0; i < n; i++) {
      this._trimming++
      this._internal++
      this._connect((error, client, release) => {
        this._trimming--
        this._internal--
        if (!error) this._giveBack(release)
      })
    }
  }

  // pg-pool serves its queue one request per release; when the share
  // grows, open a connection for each request waiting (within the new
  // size) and give it back, which hands it over.
  _grow () {
    const pool = this.pool
    const n = Math.min(pool.options.max - pool.totalCount, pool.waitingCount)
    for (let i = 0; i < n; i++) {
      this._internal++
      this._connect((error, client, release) => {
        this._internal--
        if (error) {
          this._noteConnectError(error)
        } else {
          this._giveBack(release)
        }
      })
    }
  }

  // ---- refreshing (sections 2 to 5) ----

  _jitter (lo, hi) {
    return this._refreshMs * (lo + Math.random() * (hi - lo)) / 100
  }

  _schedule (ms) {
    clearTimeout(this._timer)
    if (this._closing) return
    this._timer = setTimeout(() => this._due(), Math.max(0, ms))
    this._timer.unref()
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
    if (this._refusalInForce() && this._wouldConnect()) {
      this._counts.refreshesSkipped++
      return this._refusal.until - clock()
    }
    let lease
    try {
      lease = await this._borrow(null)
    } catch (error) {
      return this._borrowFailed(error)
    }
    if (this._closing) {
      lease.release() // no report after the leave
      return 0
    }
    this._sample(0)
    const demand = this._demand()
    const protocol = this._protocol === 1 && clock() < this._probeAt ? 1 : 2
    let answer
    try {
      answer = await this._ask(lease.client, demand, protocol)
      lease.release()
    } catch (error) {
      lease.release(error) // broken, or timed out: not given to anyone
      this._countError('query')
      this._say('warn', 'query:' + firstLine(error && error.message),
        `reading connbudget.share failed: ${firstLine(error && error.message)}`)
      return Math.min(1000, Math.max(10, this._refreshMs / 10)) // a restart: soon, on a new connection
    }
    return this._take(answer, demand)
  }

  // One of the pool's connections, taken as a request takes one:
  // { client, release }; a BorrowTimeout after timeoutMs unless it is null.
  _borrow (timeoutMs) {
    return new Promise((resolve, reject) => {
      let settled = false
      this._internal++
      const timer = timeoutMs !== null && setTimeout(() => {
        settled = true
        reject(new BorrowTimeout())
      }, timeoutMs)
      this._connect((error, client, release) => {
        clearTimeout(timer)
        if (error) {
          this._internal--
          if (!settled) reject(error)
          return
        }
        const giveBack = (reason) => {
          this._internal--
          this._giveBack(release, reason)
        }
        if (settled) {
          giveBack()
        } else {
          settled = true
          resolve({ client, release: giveBack })
        }
      })
    })
  }

  _borrowFailed (error) {
    if (error instanceof BorrowTimeout || (!error.code && /timeout/i.test(error.message))) {
      this._counts.refreshesSkipped++ // saturated
      return this._jitter(90, 110)
    }
    this._noteConnectError(error)
    if (error.code === '53300') {
      // the refused connect was itself a report of one more: ask again at
      // the pace the server states
      return (refusalPace(error).retryMs || this._refreshMs) * (0.9 + Math.random() * 0.2)
    }
    return this._refusalInForce() ? this._refusal.until - clock() : this._jitter(90, 110)
  }

  // The server's answer: { protocol, share } or { protocol, bad } (an
  // AnswerError) or { protocol, none } (why there is no extension).
  async _ask (client, demand, protocol) {
    const query = (text) => client.query({
      text, values: [String(demand)], rowMode: 'array', types: RAW_TYPES, query_timeout: QUERY_TIMEOUT_MS
    })
    if (protocol === 2) {
      try {
        return checked(2, shareFromResult, await query(SHARE_SQL))
      } catch (error) {
        if (!UNKNOWN_SETTING.has(error.code)) throw error
      }
    }
    try {
      return checked(1, poolShareFromResult, await query(POOL_SHARE_SQL))
    } catch (error) {
      if (NO_EXTENSION.has(error.code) || UNKNOWN_SETTING.has(error.code)) {
        return { protocol: 1, none: firstLine(error.message) }
      }
      throw error
    }
  }

  // Takes what the server said; returns when to ask next, in ms.
  _take (answer, demand) {
    const now = clock()
    this._protocol = answer.protocol
    if (answer.protocol === 1) this._probeAt = now + LOOK_AGAIN_MS
    for (const key of this._said) {
      if (key.startsWith('query:') || key.startsWith('connect:')) this._said.delete(key)
    }
    if (answer.bad) {
      // not an answer: nothing is taken from it
      this._countError(answer.bad.kind)
      this._say('warn', answer.bad.kind,
        `${answer.bad.message}; ignored, the pool stays within ${this.pool.options.max} connections`)
      return this._jitter(90, 110)
    }
    const share = answer.none === undefined ? answer.share : { status: 'no-extension' }
    if (share.status !== 'ok') this._said.delete('ok')
    if (share.status === 'no-extension' || share.status === 'other') {
      if (share.status === 'no-extension') this._countError('no-extension')
      this._say('warn', share.status, share.status === 'other'
        ? `the server does not govern pod ${this.pod} of ${this.applicationName} (no row in ` +
          `connbudget.application_limits): using the pool's own max of ${this._userMax}`
        : `the server has no usable connbudget extension (${answer.none}); using the pool's own max of ${this._userMax}`)
      this._status = share.status
      this._fixed = true
      this._refreshMs = this._configuredMs || LOOK_AGAIN_MS
      this._resize()
      return this._jitter(90, 110)
    }
    if (share.status === 'left') {
      this._status = 'left' // handed back; the next report brings it back
      return this._jitter(90, 110)
    }
    if (share.status === 'refused') {
      // governed when it connected, no more: the last share stands
      this._countError('refused')
      const code = share.sqlstate || '42501'
      const cause = Object.assign(new Error(
        `connbudget.share says status=refused sqlstate=${code} reason=${share.reason || '?'}`), { code })
      this._say('error', 'refused', `${cause.message}; the pool stays within ${this.pool.options.max} connections`)
      this._status = 'refused'
      this._refusal = { cause, code, until: now + 10 * this._refreshMs }
      return this._jitter(1000, 1100)
    }
    const first = this._lastDemand === null
    const changed = !first && demand !== this._lastDemand
    for (const key of this._said) {
      if (key !== 'ok') this._said.delete(key) // what went wrong before is said again if it recurs
    }
    this._say('info', 'ok', `share of pod ${this.pod} of ${this.applicationName}: ${share.maxSize}`)
    if (this._share && this._share.maxSize !== share.maxSize) {
      this._log('debug', `share changed from ${this._share.maxSize} to ${share.maxSize}`)
    }
    this._share = share
    this._fixed = false
    this._status = 'ok'
    this._refreshMs = this._configuredMs || share.refreshMs
    this._lastDemand = demand
    this._rotatePeaks(now)
    this._counts.refreshes++
    this._resize()
    if (changed) {
      // the answer to a changed demand is the allocation from before it:
      // ask again one publish period later
      return Math.min(1000, Math.max(10, this._refreshMs / 10))
    }
    if (first) return this._jitter(10, 100) // pools started together do not call in step
    return share.maxSize === 0 ? this._jitter(100, 120) : this._jitter(90, 110)
  }

  // ---- refusals (section 6) ----

  _noteConnectError (error) {
    if (error && error.code === '53300') {
      this._counts.connectsRefused++
    } else if (error && PERMANENT.has(error.code)) {
      this._notePermanent(error)
    } else {
      this._countError('connect')
      this._say('warn', 'connect:' + firstLine(error && error.message),
        `a connect of the pool's own failed: ${firstLine(error && error.message)}`)
    }
  }

  _notePermanent (error) {
    const refused = new RefusedError(error, true)
    this._counts.permanentRefusals++
    this._refusal = { cause: error, code: refused.code, until: clock() + 10 * this._refreshMs }
    this._log('error', `${refused.message}; connects are tried again in ${10 * this._refreshMs} ms`)
    return refused
  }

  _refusalInForce () {
    if (this._refusal && clock() >= this._refusal.until) this._refusal = null
    return this._refusal
  }

  // ---- leaving (section 7) ----

  async _leave () {
    if (this._share === null || this._fixed || this._status === 'left') return
    let lease
    try {
      lease = await this._borrow(Math.min(1000, this._refreshMs))
    } catch (error) {
      this._log('debug', `handing the share back failed: no connection (${firstLine(error.message)})`)
      return
    }
    try {
      await lease.client.query({ text: LEAVE_SQL[this._protocol], query_timeout: 1000 })
      lease.release()
      this._status = 'left'
    } catch (error) {
      lease.release(error)
      this._log('debug', `handing the share back failed: ${firstLine(error.message)}`)
    }
  }
}

function checked (protocol, parse, result) {
  try {
    return { protocol, share: parse(result) }
  } catch (error) {
    if (error instanceof AnswerError) return { protocol, bad: error }
    throw error
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
