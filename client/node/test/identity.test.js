'use strict'

// Identity at connect time (docs/protocol.md, section 1), checked before
// anything connects.

const { test } = require('node:test')
const assert = require('node:assert/strict')
const os = require('os')

const { connectionOptions, checkId, IdentityError, newPoolSession } = require('..')
const { optionValue, withPoolSession } = require('../lib/identity')

test('the settings name the application, the pod and a pool session', () => {
  const settings = connectionOptions({ applicationName: 'api', pod: 'web-7', max: 20, host: 'db' })
  assert.equal(settings.application_name, 'api')
  assert.equal(settings.max, 20)
  assert.equal(settings.host, 'db')
  assert.match(settings.options, /^-c connbudget\.pod=web-7 -c connbudget\.pool_session=[0-9a-f]{8}$/)
  assert.notEqual(optionValue(connectionOptions({ applicationName: 'api' }).options, 'pool_session'),
    optionValue(connectionOptions({ applicationName: 'api' }).options, 'pool_session'))
})

test('the pod defaults to the host name, or the environment variable named', () => {
  assert.equal(optionValue(connectionOptions({ applicationName: 'api' }).options, 'pod'), os.hostname())
  process.env.CONNBUDGET_TEST_POD = 'pod-from-env'
  try {
    assert.equal(optionValue(connectionOptions({ applicationName: 'api', podEnv: 'CONNBUDGET_TEST_POD' }).options, 'pod'),
      'pod-from-env')
  } finally {
    delete process.env.CONNBUDGET_TEST_POD
  }
  assert.throws(() => connectionOptions({ applicationName: 'api', podEnv: 'CONNBUDGET_TEST_NO_SUCH_VARIABLE' }),
    /CONNBUDGET_TEST_NO_SUCH_VARIABLE that names the pod is not set/)
})

test('the user\'s own options come first; spaces and backslashes are escaped', () => {
  const settings = connectionOptions({ applicationName: 'api', pod: 'web 7\\x', options: '-c statement_timeout=5s' })
  assert.match(settings.options, /^-c statement_timeout=5s -c connbudget\.pod=web\\ 7\\\\x -c connbudget\.pool_session=/)
  assert.equal(optionValue(settings.options, 'pod'), 'web 7\\x')
})

test('ids the server would refuse are refused before connecting', () => {
  for (const bad of ['', 'x'.repeat(64), 'caf\u00e9', 'tab\there', 'new\nline', 42]) {
    assert.throws(() => connectionOptions({ applicationName: 'api', pod: bad }), IdentityError, JSON.stringify(bad))
    assert.throws(() => connectionOptions({ applicationName: bad, pod: 'p' }), IdentityError, JSON.stringify(bad))
  }
  assert.throws(() => connectionOptions({ applicationName: null, pod: 'p' }), IdentityError)
  assert.throws(() => connectionOptions({ pod: 'p' }), IdentityError)
  assert.throws(() => connectionOptions({ application_name: 'api', pod: 'p' }), /applicationName/)
  assert.equal(checkId('pod', 'x'.repeat(63)), 'x'.repeat(63))
  assert.equal(checkId('pod', ' ~!'), ' ~!')
})

test('a pool session is replaced, or added', () => {
  const session = newPoolSession()
  assert.match(session, /^[0-9a-f]{8}$/)
  assert.equal(withPoolSession('-c connbudget.pod=a -c connbudget.pool_session=old', session),
    `-c connbudget.pod=a -c connbudget.pool_session=${session}`)
  assert.equal(withPoolSession('-c connbudget.pod=a', session), `-c connbudget.pod=a -c connbudget.pool_session=${session}`)
  assert.equal(withPoolSession(undefined, session), `-c connbudget.pool_session=${session}`)
})

test('ECMAScript modules import it by name', async () => {
  const { follow, connectionOptions: fromModule, RefusedError } = await import('../index.js')
  assert.equal(typeof follow, 'function')
  assert.equal(fromModule, connectionOptions)
  assert.equal(typeof RefusedError, 'function')
})
