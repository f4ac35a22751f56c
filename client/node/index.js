'use strict'

// connbudget for node-postgres: a pg.Pool sized by its pod's share of the
// PostgreSQL server's connection budget. See README.md.

const { Budget, RefusedError, follow } = require('./lib/budget')
const { IdentityError, connectionOptions } = require('./lib/identity')
const { AnswerError } = require('./lib/share')

module.exports = { follow, connectionOptions, Budget, RefusedError, IdentityError, AnswerError }
