'use strict'

// Identity at connect time (docs/protocol.md, section 1), checked before
// anything connects.

const { test } = require('node:test')
const assert = require('node:assert/strict')
const os = require('os')
const pg = require('pg')

const { connectionOptions, follow, IdentityError } = require('..')

// The pod an options string names, unescaped.
const podOf = (options) => /connbudget\.pod=((?:\\.|\S)+)/.exec(options)[1].replace(/\\(.)/g, '$1')

test('the settings name the application and the pod', () => {
  const settings = connectionOptions({ applicationName: 'api', pod: 'web-7', max: 20, host: 'db' })
  assert.deepEqual(settings, { application_name: 'api', options: '-c connbudget.pod=web-7', max: 20, host: 'db' })
})

test('the pod defaults to the host name, or the environment variable named', () => {
  assert.equal(podOf(connectionOptions({ applicationName: 'api' }).options), os.hostname())
  process.env.CONNBUDGET_TEST_POD = 'pod-from-env'
  try {
    assert.equal(podOf(connectionOptions({ applicationName: 'api', podEnv: 'CONNBUDGET_TEST_POD' }).options),
      'pod-from-env')
  } finally {
    delete process.env.CONNBUDGET_TEST_POD
  }
  assert.throws(() => connectionOptions({ applicationName: 'api', podEnv: 'CONNBUDGET_TEST_NO_SUCH_VARIABLE' }),
    (error) => error instanceof IdentityError && /environment variable CONNBUDGET_TEST_NO_SUCH_VARIABLE\).*undefined/.test(error.message))
})

test('the user\'s own options come first; spaces and backslashes are escaped', () => {
  const settings = connectionOptions({ applicationName: 'api', pod: 'web 7\\x', options: '-c statement_timeout=5s' })
  assert.equal(settings.options, '-c statement_timeout=5s -c connbudget.pod=web\\ 7\\\\x')
  assert.equal(podOf(settings.options), 'web 7\\x')
})

test('ids the server would refuse are refused before connecting', () => {
  for (const bad of ['', 'x'.repeat(64), 'caf\u00e9', 'tab\there', 'new\nline', 42]) {
    assert.throws(() => connectionOptions({ applicationName: 'api', pod: bad }), IdentityError, JSON.stringify(bad))
    assert.throws(() => connectionOptions({ applicationName: bad, pod: 'p' }), IdentityError, JSON.stringify(bad))
  }
  assert.throws(() => connectionOptions({ applicationName: null, pod: 'p' }), IdentityError)
  assert.throws(() => connectionOptions({ pod: 'p' }), /applicationName must be 1 to 63 printable ASCII characters/)
  assert.throws(() => connectionOptions({ application_name: 'api', pod: 'p' }), /applicationName/)
  assert.equal(podOf(connectionOptions({ applicationName: 'api', pod: 'x'.repeat(63) }).options), 'x'.repeat(63))
  assert.equal(podOf(connectionOptions({ applicationName: ' ~!', pod: '~!' }).options), '~!')
})

test('follow() gives each pool a pool session of its own, last in its options', async () => {
  const settings = connectionOptions({ applicationName: 'api', pod: 'p', options: '-c connbudget.pool_session=mine' })
  const pools = [new pg.Pool(settings), new pg.Pool(settings)]
  const budgets = pools.map((pool) => follow(pool))
  try {
    const sessions = budgets.map((budget) => budget.poolSession)
    assert.notEqual(sessions[0], sessions[1])
    pools.forEach((pool, i) => {
      assert.match(sessions[i], /^[0-9a-f]{8}$/)
      assert.equal(pool.options.options, `${settings.options} -c connbudget.pool_session=${sessions[i]}`)
    })
    assert.throws(() => follow(pools[0]), /follow\(\) takes a new pg.Pool, once/)
    assert.throws(() => follow(new pg.Pool(), { refreshMs: 5 }), RangeError)
  } finally {
    await Promise.all(budgets.map((budget) => budget.close()))
  }
})

test('ECMAScript modules import it by name', async () => {
  const { follow, connectionOptions: fromModule, RefusedError } = await import('../index.js')
  assert.equal(typeof follow, 'function')
  assert.equal(fromModule, connectionOptions)
  assert.equal(typeof RefusedError, 'function')
})
