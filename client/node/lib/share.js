'use strict'

// What the server answers, checked (docs/protocol.md of connbudget,
// sections 4, 6 and 9). Nothing here talks to a server: every function
// takes what a driver handed over and returns numbers, or throws an
// AnswerError. An answer that is not one is an error, never a size.

// The bounds of what a server may answer: sizes within the most backends
// PostgreSQL allows, intervals within the range of
// connbudget.refresh_interval.
const MAX_BACKENDS = 262143
const MIN_REFRESH_MS = 10
const MAX_REFRESH_MS = 3600000
const MAX_SHARE_BYTES = 4096
const MAX_PODS = 1000000

// The kinds of answer errors, as counted in stats().errors: each kind is
// logged once however often a server repeats it.
const BAD_SHAPE = 'answer-shape' // not one row of the expected columns; a word twice
const BAD_NULL = 'answer-null' // NULL where a value must be
const BAD_TEXT = 'answer-text' // not words key=value, not a number, an unknown status
const BAD_RANGE = 'answer-range' // a number out of its range
const BAD_ORDER = 'answer-order' // min_size > max_size or max_size > budget

const STATUSES = new Set(['ok', 'other', 'left', 'refused'])

/** An answer of the server that is not one: never a size. */
class AnswerError extends Error {
  constructor (kind, message) {
    super(message)
    this.name = 'AnswerError'
    this.kind = kind
  }
}

// A server's value in a message: quoted, at most 64 characters of it, with
// anything but printable ASCII escaped, so that an answer can neither
// forge log lines nor flood them.
function quote (value) {
  const text = String(value)
  const cut = text.length > 64
  const escaped = JSON.stringify(cut ? text.slice(0, 64) : text)
    .replace(/[^\x20-\x7e]/g, (ch) => '\\u' + ch.charCodeAt(0).toString(16).padStart(4, '0'))
  return cut ? escaped + '...' : escaped
}

// A number as every number from a server is read: the whole of text a
// base-10 integer (ASCII digits after an optional '-'; no '+', no space,
// nothing before or after) within [lo, hi]. Returns the number, or the
// kind of error (BAD_TEXT or BAD_RANGE) as a string.
function parseNumber (text, lo, hi) {
  if (typeof text !== 'string' || !/^-?[0-9]+$/.test(text)) {
    return BAD_TEXT
  }
  const negative = text[0] === '-'
  const digits = text.replace(/^-?0*/, '')
  if (digits.length > 15) {
    return BAD_RANGE // beyond any bound here, and beyond exact doubles
  }
  const value = digits === '' ? 0 : (negative ? -Number(digits) : Number(digits))
  return value < lo || value > hi ? BAD_RANGE : value
}

function checkOrder (share, what) {
  if (share.minSize > share.maxSize) {
    throw new AnswerError(BAD_ORDER, `${what} answered min_size ${share.minSize} above max_size ${share.maxSize}`)
  }
  if (share.maxSize > share.budget) {
    throw new AnswerError(BAD_ORDER, `${what} answered max_size ${share.maxSize} above budget ${share.budget}`)
  }
  return share
}

// The words of connbudget.share that are numbers: the name in the share
// object and the range.
const NUMBERS = {
  max_size: ['maxSize', 0, MAX_BACKENDS],
  min_size: ['minSize', 0, MAX_BACKENDS],
  budget: ['budget', 0, MAX_BACKENDS],
  refresh_ms: ['refreshMs', MIN_REFRESH_MS, MAX_REFRESH_MS],
  allocation: ['allocation', 0, MAX_BACKENDS],
  pods: ['pods', 0, MAX_PODS],
  connections: ['connections', 0, MAX_BACKENDS],
  protocol: ['protocol', 2, 1000]
}

/**
 * Checks connbudget.share (sections 4 and 9): words key=value one space
 * apart; words it does not know are skipped (later versions add words); a
 * known word twice, a word without '=', a number that is not a complete
 * integer in its range, an unknown status, or a status "ok" without
 * max_size, min_size, budget and refresh_ms in order, is an AnswerError.
 * Returns { status, maxSize, minSize, budget, refreshMs, allocation, pods,
 * connections, protocol, sqlstate, reason } (null where not said).
 */
function parseShare (text) {
  if (typeof text !== 'string') {
    throw new AnswerError(BAD_TEXT, `connbudget.share is ${quote(text)}, not text`)
  }
  if (Buffer.byteLength(text) > MAX_SHARE_BYTES || text.includes('\0')) {
    throw new AnswerError(BAD_TEXT, `connbudget.share is ${quote(text)}, not text`)
  }
  const share = {
    status: null,
    maxSize: null,
    minSize: null,
    budget: null,
    refreshMs: null,
    allocation: null,
    pods: null,
    connections: null,
    protocol: null,
    sqlstate: null,
    reason: null
  }
  const seen = new Set()
  for (const word of text.split(' ')) {
    const eq = word.indexOf('=')
    if (eq <= 0) {
      throw new AnswerError(BAD_TEXT, `connbudget.share is ${quote(text)}, not words key=value`)
    }
    const key = word.slice(0, eq)
    const value = word.slice(eq + 1)
    if (key === 'status') {
      if (!STATUSES.has(value)) {
        throw new AnswerError(BAD_TEXT, `connbudget.share is ${quote(text)}: no status this client knows`)
      }
      share.status = value
    } else if (key === 'sqlstate') {
      share.sqlstate = /^[0-9A-Z]{5}$/.test(value) ? value : null
    } else if (key === 'reason') {
      share.reason = /^[a-z_]{1,32}$/.test(value) ? value : null
    } else if (Object.prototype.hasOwnProperty.call(NUMBERS, key)) {
      const [name, lo, hi] = NUMBERS[key]
      const number = parseNumber(value, lo, hi)
      if (typeof number === 'string') {
        const why = number === BAD_TEXT ? 'is not an integer' : `is out of range [${lo}, ${hi}]`
        throw new AnswerError(number, `connbudget.share is ${quote(text)}: ${key} ${why}`)
      }
      share[name] = number
    } else {
      continue // a later version's word
    }
    if (seen.has(key)) {
      throw new AnswerError(BAD_SHAPE, `connbudget.share is ${quote(text)}: ${key} twice`)
    }
    seen.add(key)
  }
  if (share.status === null) {
    throw new AnswerError(BAD_TEXT, `connbudget.share is ${quote(text)}: no status`)
  }
  if (share.status !== 'ok') {
    return share
  }
  if (!seen.has('max_size') || !seen.has('min_size') || !seen.has('budget') || !seen.has('refresh_ms')) {
    throw new AnswerError(BAD_SHAPE,
      `connbudget.share is ${quote(text)}: a share without max_size, min_size, budget and refresh_ms`)
  }
  return checkOrder(share, 'connbudget.share')
}

// Is result (node-postgres's, of a query with rowMode 'array') one row of
// columns columns?
function checkShape (result, columns, what) {
  const rows = result && Array.isArray(result.rows) ? result.rows : null
  if (!rows) {
    throw new AnswerError(BAD_SHAPE, `${what} answered no rows`)
  }
  if (rows.length !== 1) {
    throw new AnswerError(BAD_SHAPE, `${what} answered ${rows.length} rows, not 1`)
  }
  const width = Array.isArray(result.fields) ? result.fields.length : -1
  if (width !== columns || !Array.isArray(rows[0]) || rows[0].length !== columns) {
    throw new AnswerError(BAD_SHAPE, `${what} answered ${width} columns, not ${columns}`)
  }
  return rows[0]
}

/**
 * The share from the answer of the protocol-2 query (section 3): one row
 * of two columns, the second connbudget.share, as text.
 */
function shareFromResult (result) {
  const row = checkShape(result, 2, 'connbudget.share')
  if (row[1] === null || row[1] === undefined) {
    throw new AnswerError(BAD_NULL, 'connbudget.share is NULL')
  }
  return parseShare(row[1])
}

/**
 * The share from an answer of connbudget.pool_share() (protocol 1): one
 * row of max_size, min_size, budget and refresh_ms, none NULL, each a
 * complete integer in its range, in order.
 */
function poolShareFromResult (result) {
  const row = checkShape(result, 4, 'connbudget.pool_share()')
  const names = ['max_size', 'min_size', 'budget', 'refresh_ms']
  const share = {
    status: 'ok',
    maxSize: 0,
    minSize: 0,
    budget: 0,
    refreshMs: 0,
    allocation: null,
    pods: null,
    connections: null,
    protocol: 1,
    sqlstate: null,
    reason: null
  }
  names.forEach((key, i) => {
    const [name, lo, hi] = NUMBERS[key]
    if (row[i] === null || row[i] === undefined) {
      throw new AnswerError(BAD_NULL, `connbudget.pool_share() answered NULL for ${key}`)
    }
    const number = parseNumber(row[i], lo, hi)
    if (typeof number === 'string') {
      throw new AnswerError(number,
        `connbudget.pool_share() answered ${key} ${quote(row[i])}, not an integer in [${lo}, ${hi}]`)
    }
    share[name] = number
  })
  return checkOrder(share, 'connbudget.pool_share()')
}

// The number after lead in text, ended by tail (or, without a tail, by the
// end of text or a space): a pace from 10 to 3600000 ms; 0 when text
// states none.
function statedMs (text, lead, tail) {
  if (typeof text !== 'string') {
    return 0
  }
  const at = text.indexOf(lead)
  if (at < 0) {
    return 0
  }
  const rest = text.slice(at + lead.length)
  const digits = /^[0-9]{1,10}/.exec(rest)
  if (!digits) {
    return 0
  }
  const after = rest.slice(digits[0].length)
  if (tail ? !after.startsWith(tail) : !(after === '' || after[0] === ' ' || after[0] === '\n')) {
    return 0
  }
  const ms = parseNumber(digits[0], MIN_REFRESH_MS, MAX_REFRESH_MS)
  return typeof ms === 'number' ? ms : 0
}

/**
 * The pace a 53300 refusal states (section 6): retry_ms and lease_ms from
 * its context field, "connbudget: retry_ms=200 lease_ms=3000 protocol=2"
 * (connbudget 1.2); else the refresh interval in its hint (connbudget
 * 1.1). { retryMs, leaseMs }, each 0 when not stated.
 */
function refusalPace (error) {
  const where = error && typeof error.where === 'string' ? error.where : ''
  let retryMs = statedMs(where, 'connbudget: retry_ms=', '')
  if (retryMs === 0) {
    retryMs = statedMs(error && error.hint, 're-read their share every ', ' ms (connbudget.refresh_interval)')
  }
  const leaseMs = statedMs(where, ' lease_ms=', '')
  return { retryMs, leaseMs }
}

/**
 * The longest wait before a connect refused attempt + 1 times is tried
 * again; the wait is drawn uniformly from [0, ceiling] (full jitter):
 * retryMs * 2^attempt, at most half the time the server keeps the pod's
 * claim on the budget (leaseMs), so that the retry comes before the other
 * pods grow back into the room made for it, and at most capMs.
 */
function backoffCeiling (retryMs, leaseMs, attempt, capMs) {
  let limit = Math.max(retryMs, leaseMs > 0 ? Math.floor(leaseMs / 2) : capMs)
  limit = Math.min(limit, Math.max(retryMs, capMs))
  let ceiling = retryMs
  for (let i = 0; i < attempt && ceiling < limit; i++) {
    ceiling *= 2
  }
  return Math.min(ceiling, limit)
}

module.exports = {
  AnswerError,
  BAD_SHAPE,
  BAD_NULL,
  BAD_TEXT,
  BAD_RANGE,
  BAD_ORDER,
  MIN_REFRESH_MS,
  MAX_REFRESH_MS,
  parseNumber,
  parseShare,
  shareFromResult,
  poolShareFromResult,
  refusalPace,
  backoffCeiling,
  quote
}
