// Type declarations of connbudget for node-postgres (CommonJS, and
// importable from ECMAScript modules).

/** The identity of a pool's connections, for connectionOptions(). */
export interface IdentitySettings {
  /** The application: the server's limits are per application_name. */
  applicationName: string
  /** The pod; default: the environment variable podEnv names, else the host name. */
  pod?: string
  /** An environment variable that names the pod (POD_NAME from the Kubernetes downward API, say). */
  podEnv?: string
  /** Your own startup options ("-c statement_timeout=5s"); they come first. */
  options?: string
}

/**
 * The connection settings of a pool that follows its share: every other
 * key of settings, plus application_name and options naming the pod (after
 * your own options). Throws an IdentityError if the server would refuse them.
 */
export function connectionOptions<T extends object = {}>(
  settings: IdentitySettings & T
): Omit<T, keyof IdentitySettings> & { application_name: string; options: string }

/** What follow() takes: a pg.Pool (pg-pool). */
export interface FollowedPool {
  options: { max?: number; min?: number; options?: string; application_name?: string; [key: string]: any }
  readonly totalCount: number
  readonly idleCount: number
  readonly waitingCount: number
  connect(...args: any[]): any
  query(...args: any[]): any
  end(...args: any[]): any
  on(event: string, listener: (...args: any[]) => void): any
}

export interface FollowOptions {
  /** The refresh interval in ms (10 to 3600000); default: what the server says (connbudget.refresh_interval). */
  refreshMs?: number
  /** Where the adapter's messages go; default: warnings and errors to console.warn. */
  log?: (level: 'debug' | 'info' | 'warn' | 'error', message: string) => void
}

/** The adapter's own numbers, from Budget.stats(). */
export interface BudgetStats {
  /** The pool session follow() gave the pool (connbudget.pool_session). */
  poolSession: string
  /** 'starting', 'ok', 'left', 'refused', 'other' (not governed) or 'no-extension' (no connbudget 1.2) */
  status: 'starting' | 'ok' | 'left' | 'refused' | 'other' | 'no-extension'
  /** The share: the most connections the pool may hold (null before the first, or with a fixed size). */
  share: number | null
  minSize: number | null
  budget: number | null
  refreshMs: number
  /** The pool's size now (pool.options.max): the share within your own max, at least 1. */
  limit: number
  /** The demand last reported. */
  demand: number | null
  refreshes: number
  refreshesSkipped: number
  surplusClosed: number
  /** Connects refused with 53300 (backpressure). */
  connectsRefused: number
  /** Requests failed with a RefusedError. */
  requestsRefused: number
  /** Errors by kind: answer-shape, answer-null, answer-text, answer-range, answer-order, refused (42501, 53400 or status=refused), other, no-extension, query, connect. */
  errors: Record<string, number>
}

export class Budget {
  constructor(pool: FollowedPool, options?: FollowOptions)
  readonly pool: FollowedPool
  readonly poolSession: string
  stats(): BudgetStats
  /** Hands the share back, then ends the pool (pool.end() does the same). */
  close(): Promise<void>
}

/**
 * Makes pool follow its share. Call it right after new pg.Pool(...), in the
 * process that uses the pool (after any fork).
 */
export function follow(pool: FollowedPool, options?: FollowOptions): Budget

/** A connect the server refused: 53300 until the deadline, or 42501/53400 (permanent). */
export class RefusedError extends Error {
  readonly code: string
  readonly permanent: boolean
  readonly cause: Error
}

/** An application name or pod id the server would refuse. */
export class IdentityError extends TypeError {}

/** An answer of the server that is not one. */
export class AnswerError extends Error {
  readonly kind: 'answer-shape' | 'answer-null' | 'answer-text' | 'answer-range' | 'answer-order'
}
