package org.connbudget.hikari;

import java.sql.SQLException;

/**
 * A connect the server refused: with SQLSTATE 53300, backpressure (the
 * application or the budget is full right now), retried until the pool's
 * connectionTimeout; with 42501 or 53400, a permanent refusal (the role may
 * not claim the application or the pod, or holds too many pods), which
 * does not change by itself and is not asked again for 10 refresh
 * intervals. The driver's exception is its cause, and its SQLSTATE is this
 * exception's. HikariCP gives it to callers as the cause of the
 * SQLTransientConnectionException of a getConnection() that timed out, with
 * the same SQLSTATE, or as the cause of its PoolInitializationException.
 */
public class RefusedException extends SQLException {
    private static final long serialVersionUID = 1L;

    RefusedException(String message, SQLException cause) {
        super(message, cause.getSQLState(), cause.getErrorCode(), cause);
    }

    /** True for 42501 and 53400: waiting will not help. */
    public boolean isPermanent() {
        return !"53300".equals(getSQLState());
    }
}
