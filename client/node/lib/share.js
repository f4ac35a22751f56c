'use strict'

// What the server answers, checked (docs/protocol.md, sections 4, 6 and 9).
// Nothing here talks to a server. An answer that is not one is an
// AnswerError, never a size.

// The words of connbudget.share that are numbers: their names here and
// their ranges (sizes within the most backends PostgreSQL allows).
const NUMBERS = {
  max_size: ['maxSize', 0, 262143],
  min_size: ['minSize', 0, 262143],
  budget: ['budget', 0, 262143],
  refresh_ms: ['refreshMs', 10, 3600000],
  allocation: ['allocation', 0, 262143],
  pods: ['pods', 0, 1000000],
  connections: ['connections', 0, 262143],
  protocol: ['protocol', 2, 1000]
}
const STATUSES = new Set(['ok', 'other', 'left', 'refused'])
const BACKOFF_CAP_MS = 30000

/** An answer of the server that is not one; kind says how (answer-text, ...). */
class AnswerError extends Error {
  constructor (kind, message) {
    super(message)
    this.name = 'AnswerError'
    this.kind = kind
  }
}

// A server's text in a message: quoted, at most 64 characters of it, all
// printable ASCII, so that an answer can neither forge log lines nor flood
// them.
function quote (value) {
  const text = String(value)
  const shown = JSON.stringify(text.slice(0, 64))
    .replace(/[^\x20-\x7e]/g, (ch) => '\\u' + ch.charCodeAt(0).toString(16).padStart(4, '0'))
  return text.length > 64 ? shown + '...' : shown
}

/**
 * Reads connbudget.share: words key=value one space apart, of which words
 * it does not know are skipped (later versions add words). A known word
 * twice, a word without '=', a number that is not a complete base-10
 * integer in its range, an unknown status, a status "ok" without max_size,
 * min_size, budget and refresh_ms or with them out of order: an
 * AnswerError. Returns { status, sqlstate, reason, maxSize, minSize,
 * budget, refreshMs, allocation, pods, connections, protocol }, null where
 * not said.
 */
function parseShare (text) {
  const fail = (kind, why) => {
    throw new AnswerError(kind, `connbudget.share is ${quote(text)}: ${why}`)
  }
  if (typeof text !== 'string' || Buffer.byteLength(text) > 4096 || text.includes('\0')) {
    fail('answer-text', 'not text')
  }
  const share = { status: null, sqlstate: null, reason: null }
  for (const [name] of Object.values(NUMBERS)) share[name] = null
  const seen = new Set()
  for (const word of text.split(' ')) {
    const eq = word.indexOf('=')
    if (eq <= 0) fail('answer-text', 'not words key=value')
    const key = word.slice(0, eq)
    const value = word.slice(eq + 1)
    if (key === 'status') {
      if (!STATUSES.has(value)) fail('answer-text', 'no status this client knows')
      share.status = value
    } else if (key === 'sqlstate') {
      share.sqlstate = /^[0-9A-Z]{5}$/.test(value) ? value : null
    } else if (key === 'reason') {
      share.reason = /^[a-z_]{1,32}$/.test(value) ? value : null
    } else if (Object.hasOwn(NUMBERS, key)) {
      const [name, lo, hi] = NUMBERS[key]
      if (!/^-?[0-9]+$/.test(value)) fail('answer-text', `${key} is not an integer`)
      share[name] = Number(value)
      if (share[name] < lo || share[name] > hi) fail('answer-range', `${key} is out of range [${lo}, ${hi}]`)
    } else {
      continue // a later version's word
    }
    if (seen.has(key)) fail('answer-shape', `${key} twice`)
    seen.add(key)
  }
  if (share.status === null) fail('answer-text', 'no status')
  if (share.status !== 'ok') return share
  const { maxSize, minSize, budget, refreshMs } = share
  if ([maxSize, minSize, budget, refreshMs].includes(null)) {
    fail('answer-shape', 'a share without max_size, min_size, budget and refresh_ms')
  }
  if (minSize > maxSize || maxSize > budget) {
    fail('answer-order', `not min_size ${minSize} <= max_size ${maxSize} <= budget ${budget}`)
  }
  return share
}

/**
 * The share from node-postgres's result (rowMode 'array') of the
 * protocol's query: one row of two columns, the second connbudget.share.
 */
function shareFromResult (result) {
  if (!result || !Array.isArray(result.rows) || result.rows.length !== 1 || result.fields.length !== 2) {
    throw new AnswerError('answer-shape', 'the query of connbudget.share did not answer one row of two columns')
  }
  if (result.rows[0][1] === null) throw new AnswerError('answer-null', 'connbudget.share is NULL')
  return parseShare(result.rows[0][1])
}

// A refusal's context field: "connbudget: retry_ms=200 lease_ms=3000 protocol=2".
const PACE = /connbudget: retry_ms=([0-9]{1,7})(?=\s|$)(?: lease_ms=([0-9]{1,7})(?=\s|$))?/

/**
 * The pace a 53300 refusal states in its context field (section 6):
 * { retryMs, leaseMs }, each from 10 to 3600000, or 0 when not stated.
 */
function refusalPace (error) {
  const found = PACE.exec(typeof error?.where === 'string' ? error.where : '') || []
  const ms = (text) => (Number(text) >= 10 && Number(text) <= 3600000 ? Number(text) : 0)
  return { retryMs: ms(found[1]), leaseMs: ms(found[2]) }
}

/**
 * The longest wait before a connect refused attempt + 1 times is tried
 * again (the wait is drawn from [0, ceiling], full jitter): retryMs doubled
 * per attempt, at most half the time the server keeps the pod's claim
 * (leaseMs), so that the retry comes before the other pods grow back into
 * the room made for it, and at most 30 s, but never below retryMs.
 */
function backoffCeiling (retryMs, leaseMs, attempt) {
  const limit = Math.max(retryMs, Math.min(leaseMs ? Math.floor(leaseMs / 2) : BACKOFF_CAP_MS, BACKOFF_CAP_MS))
  return Math.min(retryMs * 2 ** Math.min(attempt, 30), limit)
}

module.exports = { AnswerError, parseShare, shareFromResult, refusalPace, backoffCeiling, quote }
