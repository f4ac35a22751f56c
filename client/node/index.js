'use strict'

// connbudget for node-postgres: a pg.Pool sized by its pod's share of the
// PostgreSQL server's connection budget. See README.md.

const { Budget, RefusedError, follow } = require('./lib/budget')
const { IdentityError, checkId, connectionOptions, newPoolSession } = require('./lib/identity')
const { AnswerError, parseShare, refusalPace } = require('./lib/share')

module.exports = {
  follow,
  connectionOptions,
  Budget,
  RefusedError,
  IdentityError,
  AnswerError,
  checkId,
  newPoolSession,
  parseShare,
  refusalPace
}
