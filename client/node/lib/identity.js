'use strict'

// Who connects (docs/protocol.md, section 1): the application in
// application_name, the pod in the options startup parameter, both fixed
// for a connection's life when it connects. follow() adds the pool session.

const os = require('os')

/** An application name or pod id the server would refuse. */
class IdentityError extends TypeError {
  constructor (message) {
    super(message)
    this.name = 'IdentityError'
  }
}

// value if it is 1 to 63 printable ASCII characters (what the server takes
// as a pod id, and keeps of an application name unchanged).
function checkId (what, value) {
  if (typeof value !== 'string' || !/^[\x20-\x7e]{1,63}$/.test(value)) {
    throw new IdentityError(`connbudget: ${what} must be 1 to 63 printable ASCII characters, not ${JSON.stringify(value)}`)
  }
  return value
}

/**
 * The connection settings of a pool that follows its share, for
 * new pg.Pool({ ...connectionOptions({ applicationName: 'api' }), max: 20 }):
 * application_name, and options naming the pod (pod; else the environment
 * variable podEnv names; else the host name, which is the pod's name in
 * Kubernetes) after the user's own options. Every other key is kept.
 * Throws an IdentityError before anything connects if the server would
 * refuse the identity.
 */
function connectionOptions ({ applicationName, pod, podEnv, options, ...rest } = {}) {
  let what = 'pod'
  if (pod === undefined || pod === null) {
    what = podEnv ? `the pod (the environment variable ${podEnv})` : 'the pod (the host name)'
    pod = podEnv ? process.env[podEnv] : os.hostname()
  }
  checkId('applicationName', applicationName)
  checkId(what, pod)
  // the server splits options at spaces; a backslash keeps the next character
  const podOption = '-c connbudget.pod=' + pod.replace(/[\\ ]/g, '\\$&')
  return { ...rest, application_name: applicationName, options: options ? `${options} ${podOption}` : podOption }
}

module.exports = { IdentityError, connectionOptions }
