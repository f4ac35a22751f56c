package org.connbudget.hikari;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import java.sql.Connection;
import java.sql.SQLException;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.logging.Logger;
import org.postgresql.ds.PGSimpleDataSource;
import org.postgresql.util.PSQLException;

/**
 * The DataSource HikariCP connects through once ConnBudget.configure() has
 * set it: pgjdbc's own, with the pool's identity, and refusals handled as
 * the protocol says (docs/protocol.md, section 6). HikariCP connects in its
 * own threads (and once in its constructor) while callers wait in
 * getConnection() for up to connectionTimeout; a connect refused with 53300
 * is retried here within that time, after a wait drawn from [0, retry_ms *
 * 2^n] (full jitter), starting from the retry_ms the refusal states, at most
 * twice that and half its lease_ms, as long as the pool still wants the
 * connection. 42501 and 53400 are permanent: thrown at once, and the same
 * exception answers connects for 10 refresh intervals without asking the
 * server.
 */
final class BudgetDataSource extends PGSimpleDataSource {
    private static final long serialVersionUID = 1L;
    private static final Logger LOG = Logger.getLogger("org.connbudget.hikari");

    final transient ConnBudget budget;
    final AtomicLong refusedConnects = new AtomicLong();
    final AtomicLong permanentRefusals = new AtomicLong();
    private transient RefusedException permanent;  // answers connects until permanentUntil
    private long permanentUntil;

    BudgetDataSource(ConnBudget budget) {
        this.budget = budget;
    }

    @Override
    public Connection getConnection(String user, String password) throws SQLException {
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(budget.connectTimeoutMs);
        for (int attempt = 0;; attempt++) {
            synchronized (this) {
                if (permanent != null && System.nanoTime() - permanentUntil < 0) {
                    throw permanent;
                }
            }
            try {
                return returnable(super.getConnection(user, password));
            } catch (SQLException e) {
                if ("42501".equals(e.getSQLState()) || "53400".equals(e.getSQLState())) {
                    throw refusedForGood(e);
                }
                if (!"53300".equals(e.getSQLState())) {
                    throw e;
                }
                if (refusedConnects.getAndIncrement() == 0) {
                    LOG.info("connbudget: " + budget.who + ": connects refused with 53300 (backpressure: the budget "
                            + "or the application is full); retried within the pool's connectionTimeout");
                }
                long left = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
                if (left <= 0 || !budget.wantsConnection()) {
                    throw new RefusedException("connbudget: " + budget.who + " was refused a connection (53300: the "
                            + "budget or the application is full) until the pool gave up waiting", e, false);
                }
                try {
                    Thread.sleep(Math.min(backoffMs(e, attempt), left));
                } catch (InterruptedException interrupted) {
                    Thread.currentThread().interrupt();
                    throw new RefusedException("connbudget: interrupted while waiting to retry a refused connect", e, false);
                }
            }
        }
    }

    /**
     * The driver's connection behind a proxy that passes every call on.
     * HikariCP calls clearWarnings() on it whenever a caller gives it back,
     * in the caller's thread, before anyone else may take it: there
     * ConnBudget.returned() runs a refresh that waits for a connection, and
     * marks a connection above the pool's share to close.
     */
    private Connection returnable(Connection conn) {
        return (Connection) Proxy.newProxyInstance(getClass().getClassLoader(), new Class<?>[] {Connection.class},
                (proxy, method, args) -> {
                    if (method.getName().equals("equals")) {
                        return proxy == args[0];
                    }
                    if (method.getName().equals("clearWarnings")) {
                        budget.returned(conn);
                    }
                    try {
                        return method.invoke(conn, args);
                    } catch (InvocationTargetException e) {
                        throw e.getCause();
                    }
                });
    }

    /** The wait before the next attempt: full jitter over [0, retry_ms * 2^attempt], from the pace the refusal
        states (else 1 s), at most twice that, and at most half the lease that keeps the pod's claim: the other
        pods shrink at their next refresh. */
    static long backoffMs(SQLException e, int attempt) {
        String where = e instanceof PSQLException && ((PSQLException) e).getServerErrorMessage() != null
                ? ((PSQLException) e).getServerErrorMessage().getWhere() : null;
        int pace = Share.contextMs(where, "retry_ms");
        pace = pace > 0 ? pace : 1000;
        int lease = Share.contextMs(where, "lease_ms");
        long cap = Math.max(pace, Math.min(2L * pace, lease > 0 ? lease / 2 : 2L * pace));
        return ThreadLocalRandom.current().nextLong(Math.min(cap, (long) pace << Math.min(attempt, 20)) + 1);
    }

    private RefusedException refusedForGood(SQLException e) {
        permanentRefusals.incrementAndGet();
        RefusedException r = new RefusedException("connbudget: " + budget.who + " is refused by the server ("
                + e.getSQLState() + ", permanent: " + e.getMessage() + "); asked again in 10 refresh intervals", e, true);
        long until = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(10 * budget.intervalMs());
        synchronized (this) {
            if (permanent == null || !permanent.getSQLState().equals(r.getSQLState())) {
                LOG.warning(r.getMessage());
            }
            permanent = r;
            permanentUntil = until;
        }
        return r;
    }
}
