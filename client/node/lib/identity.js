'use strict'

// Who connects (docs/protocol.md, section 1): the application in
// application_name, the pod and the pool session in the options startup
// parameter, all fixed for a connection's life when it connects.

const crypto = require('crypto')
const os = require('os')

/** An application name, pod or pool session id the server would refuse. */
class IdentityError extends TypeError {
  constructor (message) {
    super(message)
    this.name = 'IdentityError'
  }
}

/**
 * value if it is 1 to 63 bytes of printable ASCII (what the server takes
 * as a pod or pool session id, and keeps of an application name
 * unchanged), else throws an IdentityError saying why.
 */
function checkId (what, value) {
  if (typeof value !== 'string' || value === '') {
    throw new IdentityError(`connbudget: ${what} must be a non-empty string, not ${JSON.stringify(value)}`)
  }
  for (let i = 0; i < value.length; i++) {
    const code = value.charCodeAt(i)
    if (code < 0x20 || code > 0x7e) {
      throw new IdentityError(`connbudget: ${what} ${JSON.stringify(value)} is not printable ASCII ` +
        `(character ${i + 1} is U+${code.toString(16).padStart(4, '0')})`)
    }
  }
  if (value.length > 63) {
    throw new IdentityError(`connbudget: ${what} ${JSON.stringify(value)} is ${value.length} bytes; at most 63`)
  }
  return value
}

/** A new random pool session id: 8 hex digits. */
function newPoolSession () {
  return crypto.randomBytes(4).toString('hex')
}

// The server splits options at spaces; a backslash keeps the next
// character.
function escapeOption (value) {
  return value.replace(/\\/g, '\\\\').replace(/ /g, '\\ ')
}

// The value of -c connbudget.<name>=... in an options string, unescaped;
// null if it has none.
function optionValue (options, name) {
  const found = new RegExp(`connbudget\\.${name}=((?:\\\\.|\\S)+)`).exec(options || '')
  return found ? found[1].replace(/\\(.)/g, '$1') : null
}

// options with its pool session replaced by session (or added).
function withPoolSession (options, session) {
  const text = options || ''
  if (/connbudget\.pool_session=/.test(text)) {
    return text.replace(/(connbudget\.pool_session=)(?:\\.|\S)+/g, (_, lead) => lead + session)
  }
  return (text ? text + ' ' : '') + '-c connbudget.pool_session=' + session
}

/**
 * The connection settings of a pool that follows its share, for
 * new pg.Pool({ ...connectionOptions({ applicationName: 'api' }), max: 20 }):
 * application_name, and options with the pod (pod; else the environment
 * variable podEnv names; else the host name, which is the pod's name in
 * Kubernetes) and a pool session. Every other key given is kept, and
 * options (the user's own "-c ..." settings) come first. Throws an
 * IdentityError before anything connects if the server would refuse the
 * identity.
 */
function connectionOptions (settings = {}) {
  const { applicationName, pod: givenPod, podEnv, options, ...rest } = settings
  if ('application_name' in rest) {
    throw new IdentityError('connbudget: give the application as applicationName, not application_name')
  }
  let pod = givenPod
  if (pod === undefined || pod === null) {
    if (podEnv) {
      pod = process.env[podEnv]
      if (!pod) {
        throw new IdentityError(`connbudget: the environment variable ${podEnv} that names the pod is not set`)
      }
    } else {
      pod = os.hostname()
    }
  }
  checkId('applicationName', applicationName)
  checkId('pod', pod)
  const words = options ? [options] : []
  words.push('-c connbudget.pod=' + escapeOption(pod))
  words.push('-c connbudget.pool_session=' + newPoolSession())
  return { ...rest, application_name: applicationName, options: words.join(' ') }
}

module.exports = {
  IdentityError,
  checkId,
  connectionOptions,
  newPoolSession,
  optionValue,
  withPoolSession
}
