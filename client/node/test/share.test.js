'use strict'

// What the server answers, checked: a hostile or malformed answer is an
// error of its kind, never a size (docs/protocol.md, sections 4, 6 and 9).

const { test } = require('node:test')
const assert = require('node:assert/strict')

const { AnswerError, parseShare, shareFromResult, refusalPace, backoffCeiling, quote } = require('../lib/share')

const GOOD = 'protocol=2 status=ok max_size=5 min_size=1 allocation=10 pods=2 budget=80 refresh_ms=1000 connections=4'

test('a share is read word by word', () => {
  assert.deepEqual(parseShare(GOOD), {
    status: 'ok',
    maxSize: 5,
    minSize: 1,
    budget: 80,
    refreshMs: 1000,
    allocation: 10,
    pods: 2,
    connections: 4,
    protocol: 2,
    sqlstate: null,
    reason: null
  })
})

test('words of later versions are skipped, whatever they hold', () => {
  const share = parseShare(GOOD + ' colour=blue weight=-3 x=' + 'y'.repeat(2000) + ' future=a=b')
  assert.equal(share.maxSize, 5)
  assert.equal(parseShare('status=ok max_size=0 min_size=0 budget=0 refresh_ms=10 protocol=7').maxSize, 0)
})

test('the statuses without a share', () => {
  assert.equal(parseShare('protocol=2 status=other refresh_ms=200').status, 'other')
  assert.equal(parseShare('protocol=2 status=left max_size=0 refresh_ms=200').status, 'left')
  const refused = parseShare('protocol=2 status=refused sqlstate=42501 reason=pod_of_another_role refresh_ms=200')
  assert.equal(refused.status, 'refused')
  assert.equal(refused.sqlstate, '42501')
  assert.equal(refused.reason, 'pod_of_another_role')
  // a sqlstate or reason that is not one is not repeated
  const odd = parseShare('status=refused sqlstate=4250\u00e9 reason=Robert);DROP')
  assert.equal(odd.sqlstate, null)
  assert.equal(odd.reason, null)
})

// Every one of these is an error of its kind, never a size.
const HOSTILE = [
  ['', 'answer-text'],
  [' ', 'answer-text'],
  ['status=ok', 'answer-shape'],
  ['max_size=5 min_size=0 budget=10 refresh_ms=1000', 'answer-text'],
  ['status=ok max_size=5 min_size=0 budget=10', 'answer-shape'],
  ['status=OK max_size=5 min_size=0 budget=10 refresh_ms=1000', 'answer-text'],
  ['status=ok status=ok max_size=5 min_size=0 budget=10 refresh_ms=1000', 'answer-shape'],
  ['status=ok max_size=5 max_size=50 min_size=0 budget=100 refresh_ms=1000', 'answer-shape'],
  ['status=ok  max_size=5 min_size=0 budget=10 refresh_ms=1000', 'answer-text'],
  [' status=ok max_size=5 min_size=0 budget=10 refresh_ms=1000', 'answer-text'],
  ['status=ok max_size=5 min_size=0 budget=10 refresh_ms=1000 ', 'answer-text'],
  ['status=ok max_size=5 min_size=0 budget=10 refresh_ms=1000\n', 'answer-text'],
  ['status=ok\tmax_size=5 min_size=0 budget=10 refresh_ms=1000', 'answer-text'],
  ['status=ok max_size min_size=0 budget=10 refresh_ms=1000', 'answer-text'],
  ['status=ok =5 min_size=0 budget=10 refresh_ms=1000', 'answer-text'],
  ['status=ok max_size= min_size=0 budget=10 refresh_ms=1000', 'answer-text'],
  ['status=ok max_size=+5 min_size=0 budget=10 refresh_ms=1000', 'answer-text'],
  ['status=ok max_size=5.0 min_size=0 budget=10 refresh_ms=1000', 'answer-text'],
  ['status=ok max_size=0x10 min_size=0 budget=100 refresh_ms=1000', 'answer-text'],
  ['status=ok max_size=1e3 min_size=0 budget=10000 refresh_ms=1000', 'answer-text'],
  ['status=ok max_size=\uff15 min_size=0 budget=10 refresh_ms=1000', 'answer-text'],
  ['status=ok max_size=5\u0000 min_size=0 budget=10 refresh_ms=1000', 'answer-text'],
  ['status=ok max_size=-1 min_size=0 budget=10 refresh_ms=1000', 'answer-range'],
  ['status=ok max_size=262144 min_size=0 budget=262144 refresh_ms=1000', 'answer-range'],
  ['status=ok max_size=99999999999999999999999 min_size=0 budget=10 refresh_ms=1000', 'answer-range'],
  ['status=ok max_size=5 min_size=0 budget=10 refresh_ms=9', 'answer-range'],
  ['status=ok max_size=5 min_size=0 budget=10 refresh_ms=3600001', 'answer-range'],
  ['status=ok max_size=5 min_size=0 budget=10 refresh_ms=1000 pods=-2', 'answer-range'],
  ['status=ok max_size=5 min_size=0 budget=10 refresh_ms=1000 connections=x', 'answer-text'],
  ['protocol=1 status=ok max_size=5 min_size=0 budget=10 refresh_ms=1000', 'answer-range'],
  ['protocol=two status=ok max_size=5 min_size=0 budget=10 refresh_ms=1000', 'answer-text'],
  ['status=ok max_size=5 min_size=6 budget=10 refresh_ms=1000', 'answer-order'],
  ['status=ok max_size=11 min_size=0 budget=10 refresh_ms=1000', 'answer-order'],
  ['status=ok max_size=5 min_size=0 budget=10 refresh_ms=1000 ' + 'x=y '.repeat(1100), 'answer-text']
]

test('hostile shares are errors of their kind, never sizes', () => {
  for (const [text, kind] of HOSTILE) {
    assert.throws(() => parseShare(text), (error) => {
      assert.ok(error instanceof AnswerError, `${JSON.stringify(text)}: ${error}`)
      assert.equal(error.kind, kind, `${JSON.stringify(text).slice(0, 80)}: ${error.message}`)
      return true
    })
  }
  assert.throws(() => parseShare(null), AnswerError)
  assert.throws(() => parseShare(Buffer.from('status=ok')), AnswerError)
})

test('what a message shows of an answer is quoted, short and ASCII', () => {
  assert.equal(quote('a"b\n\u00e9'), '"a\\"b\\n\\u00e9"')
  assert.equal(quote('x'.repeat(100)), JSON.stringify('x'.repeat(64)) + '...')
  assert.throws(() => parseShare('status=ok\u001b[31m max_size=1'), (error) => !/[^\x20-\x7e]/.test(error.message))
})

const result = (rows, columns) => ({ rows, fields: Array.from({ length: columns }, (_, i) => ({ name: 'c' + i })) })

test('the answer of the protocol-2 query is one row of two columns', () => {
  assert.equal(shareFromResult(result([['12', GOOD]], 2)).maxSize, 5)
  const cases = [
    [result([], 2), 'answer-shape'],
    [result([['12', GOOD], ['12', GOOD]], 2), 'answer-shape'],
    [result([['12', GOOD, 'x']], 3), 'answer-shape'],
    [result([[GOOD]], 1), 'answer-shape'],
    [result([['12', null]], 2), 'answer-null'],
    [result([['12', 5]], 2), 'answer-text'],
    [{ rows: null, fields: [] }, 'answer-shape'],
    [undefined, 'answer-shape']
  ]
  for (const [answer, kind] of cases) {
    assert.throws(() => shareFromResult(answer), (error) => error instanceof AnswerError && error.kind === kind)
  }
})

test('the pace of a refusal: its context field, else none', () => {
  const where = (text) => ({ code: '53300', where: text })
  assert.deepEqual(refusalPace(where('connbudget: retry_ms=200 lease_ms=3000 protocol=2')), { retryMs: 200, leaseMs: 3000 })
  assert.deepEqual(refusalPace(where('connbudget: retry_ms=200')), { retryMs: 200, leaseMs: 0 })
  assert.deepEqual(refusalPace(where('connbudget: retry_ms=5 lease_ms=3000 protocol=2')), { retryMs: 0, leaseMs: 3000 })
  // the pace is read from the context field only, never from prose
  assert.deepEqual(refusalPace({
    code: '53300',
    hint: 'Wait. Pools re-read their share every 500 ms (connbudget.refresh_interval).'
  }), { retryMs: 0, leaseMs: 0 })
  for (const text of ['connbudget: retry_ms=5', 'connbudget: retry_ms=99999999999', 'connbudget: retry_ms=+200',
    'connbudget: retry_ms=200x', 'connbudget: retry_ms=', 'retry_ms=200', 'connbudget: retry_ms=3600001']) {
    assert.equal(refusalPace(where(text)).retryMs, 0, text)
  }
  assert.deepEqual(refusalPace({ code: '53300', message: 'too many connections' }), { retryMs: 0, leaseMs: 0 })
  assert.deepEqual(refusalPace(undefined), { retryMs: 0, leaseMs: 0 })
})

test('the backoff doubles from the pace, within half the lease', () => {
  assert.deepEqual([0, 1, 2, 3, 4, 10].map((n) => backoffCeiling(200, 3000, n)), [200, 400, 800, 1500, 1500, 1500])
  // without a lease, at most 30 s
  assert.deepEqual([0, 1, 5, 20, 1000].map((n) => backoffCeiling(1000, 0, n)), [1000, 2000, 30000, 30000, 30000])
  assert.equal(backoffCeiling(2000, 1000, 3), 2000) // never below the pace
})
