package org.connbudget.hikari;

import java.io.PrintWriter;
import java.lang.reflect.InvocationHandler;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Modifier;
import java.lang.reflect.Proxy;
import java.sql.Connection;
import java.sql.SQLException;
import java.sql.SQLFeatureNotSupportedException;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.logging.Level;
import java.util.logging.Logger;
import javax.sql.DataSource;
import org.postgresql.util.PSQLException;
import org.postgresql.util.ServerErrorMessage;

/**
 * The DataSource HikariCP connects through once ConnBudget.configure() has
 * set it: the driver's own, with the pool's identity, and refusals handled
 * as the protocol says (docs/protocol.md, section 6). HikariCP connects in
 * its own threads (and once in its constructor) while callers wait in
 * getConnection() for up to connectionTimeout; a connect refused with 53300
 * is retried here within that time, after a wait drawn from [0, retry_ms *
 * 2^n] (full jitter), starting from the retry_ms the refusal states, at most
 * twice that and half its lease_ms, as long as the pool still wants the connection. 42501
 * and 53400 are permanent: thrown at once, and the same exception answers
 * connects for 10 refresh intervals without asking the server.
 */
final class BudgetDataSource implements DataSource {
    private static final Logger LOG = Logger.getLogger("org.connbudget.hikari");

    final DataSource driver;
    final Identity identity;
    final int userMax;
    final int userMin;
    final int fixedSize;
    final long configuredRefreshMs;
    volatile long connectWaitMs;
    volatile ConnBudget budget;
    volatile boolean closed;

    final AtomicLong refusedConnects = new AtomicLong();
    final AtomicLong permanentRefusals = new AtomicLong();
    private RefusedException permanent;
    private long permanentUntil;
    private boolean refusalSaid;

    BudgetDataSource(DataSource driver, Identity identity, int userMax, int userMin, int fixedSize,
            long configuredRefreshMs, long connectWaitMs) {
        this.driver = driver;
        this.identity = identity;
        this.userMax = userMax;
        this.userMin = userMin;
        this.fixedSize = fixedSize;
        this.configuredRefreshMs = configuredRefreshMs;
        this.connectWaitMs = connectWaitMs;
    }

    @Override
    public Connection getConnection() throws SQLException {
        return connect(null, null, false, true);
    }

    @Override
    public Connection getConnection(String username, String password) throws SQLException {
        return connect(username, password, true, true);
    }

    /** A connection outside the pool, as HikariCP would open one (with the
        pool's user when it has one), not retried when refused. */
    Connection connectOnce(String username, String password) throws SQLException {
        return connect(username, password, username != null, false);
    }

    private Connection connect(String username, String password, boolean withUser, boolean retry)
            throws SQLException {
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(connectWaitMs);
        for (int attempt = 0;; attempt++) {
            RefusedException known = knownRefusal();
            if (known != null) {
                throw known;
            }
            try {
                Connection conn = withUser ? driver.getConnection(username, password) : driver.getConnection();
                return retry ? returnable(conn) : conn;
            } catch (SQLException e) {
                String state = e.getSQLState();
                if ("42501".equals(state) || "53400".equals(state)) {
                    throw refusedForGood(e);
                }
                if (!"53300".equals(state)) {
                    throw e;
                }
                long wait = backoffMs(e, attempt);
                long left = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
                if (!retry || closed || left <= 0 || (budget != null && !budget.wantsConnection())) {
                    throw refused(e, false, "connbudget: pod " + Share.quote(identity.pod) + " of "
                            + Share.quote(identity.application) + " was refused a connection (53300: the budget or the "
                            + "application is full) until the pool gave up waiting");
                }
                LOG.log(Level.FINE, "connbudget: pod {0}: connect refused with 53300, retried in {1} ms",
                        new Object[] {Share.quote(identity.pod), Math.min(wait, left)});
                try {
                    Thread.sleep(Math.min(wait, left));
                } catch (InterruptedException interrupted) {
                    Thread.currentThread().interrupt();
                    throw refused(e, false, "connbudget: interrupted while waiting to retry a refused connect");
                }
            }
        }
    }

    /**
     * The driver's connection behind a proxy that passes every call on.
     * HikariCP calls clearWarnings() on it whenever a caller gives it back,
     * in the caller's thread, before anyone else may take it: there a
     * refresh that waits for a connection runs (ConnBudget.onReturn), and
     * a connection above the pool's share is marked to close (ConnBudget.retire).
     */
    private Connection returnable(Connection conn) {
        Set<Class<?>> interfaces = new LinkedHashSet<>(List.of(Connection.class));
        for (Class<?> c = conn.getClass(); c != null; c = c.getSuperclass()) {
            for (Class<?> i : c.getInterfaces()) {
                if (Modifier.isPublic(i.getModifiers())) {
                    interfaces.add(i);
                }
            }
        }
        InvocationHandler handler = (proxy, method, args) -> {
            if (method.getName().equals("equals") && args != null && args.length == 1) {
                return proxy == args[0];
            }
            if (method.getName().equals("hashCode") && args == null) {
                return System.identityHashCode(proxy);
            }
            ConnBudget b = budget;
            if (b != null && args == null && method.getName().equals("clearWarnings")) {
                b.onReturn(conn);
                b.retire((Connection) proxy);
            }
            try {
                return method.invoke(conn, args);
            } catch (InvocationTargetException e) {
                throw e.getCause();
            }
        };
        return (Connection) Proxy.newProxyInstance(conn.getClass().getClassLoader(), interfaces.toArray(new Class<?>[0]),
                handler);
    }

    /** Counts a 53300 refusal, says so once (and each one at FINE), and
        draws the wait before the next attempt: full jitter over
        [0, retry_ms * 2^attempt], at most twice retry_ms and half the lease the server keeps. */
    private long backoffMs(SQLException e, int attempt) {
        refusedConnects.incrementAndGet();
        synchronized (this) {
            if (!refusalSaid) {
                refusalSaid = true;
                LOG.log(Level.INFO, "connbudget: pod {0} of {1}: connects refused with 53300 (backpressure: the budget "
                        + "or the application is full); retried within the pool''s connectionTimeout",
                        new Object[] {Share.quote(identity.pod), Share.quote(identity.application)});
            }
        }
        int pace = retryMs(e);
        if (pace == 0) {
            pace = 1000;
        }
        int lease = leaseMs(e);
        // the other pods shrink at their next refresh: no slower than twice
        // the pace, and well within the lease that keeps the pod's claim
        long cap = Math.max(pace, Math.min(2L * pace, lease > 0 ? lease / 2 : 2L * pace));
        long ceiling = Math.min(cap, (long) pace << Math.min(attempt, 20));
        return ThreadLocalRandom.current().nextLong(ceiling + 1);
    }

    private RefusedException refusedForGood(SQLException e) {
        permanentRefusals.incrementAndGet();
        RefusedException r = refused(e, true, "connbudget: pod " + Share.quote(identity.pod) + " of "
                + Share.quote(identity.application) + " is refused by the server (" + e.getSQLState() + ", permanent: "
                + e.getMessage() + "); asked again in 10 refresh intervals");
        ConnBudget b = budget;
        long interval = b != null ? b.intervalMs() : configuredRefreshMs > 0 ? configuredRefreshMs : 1000;
        synchronized (this) {
            if (permanent == null || !permanent.getSQLState().equals(r.getSQLState())) {
                LOG.log(Level.WARNING, r.getMessage());
            }
            permanent = r;
            permanentUntil = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(10 * interval);
        }
        return r;
    }

    /** The permanent refusal that still answers connects, or null. */
    synchronized RefusedException knownRefusal() {
        return permanent != null && System.nanoTime() - permanentUntil < 0 ? permanent : null;
    }

    private static RefusedException refused(SQLException e, boolean permanent, String message) {
        return new RefusedException(message, e, permanent, retryMs(e), leaseMs(e));
    }

    /** The pace a refusal states: retry_ms in its context field
        ("connbudget: retry_ms=N lease_ms=M protocol=2"), else connbudget
        1.1's hint; 0 if neither. */
    static int retryMs(SQLException e) {
        int ms = Share.statedMs(where(e), "connbudget: retry_ms=", " ");
        return ms > 0 ? ms : Share.statedMs(hint(e), "Pools re-read their share every ", " ms");
    }

    static int leaseMs(SQLException e) {
        String where = where(e);
        return where != null && where.startsWith("connbudget: ") ? Share.statedMs(where, " lease_ms=", "") : 0;
    }

    private static String where(SQLException e) {
        ServerErrorMessage m = e instanceof PSQLException ? ((PSQLException) e).getServerErrorMessage() : null;
        return m != null ? m.getWhere() : null;
    }

    private static String hint(SQLException e) {
        ServerErrorMessage m = e instanceof PSQLException ? ((PSQLException) e).getServerErrorMessage() : null;
        return m != null ? m.getHint() : null;
    }

    @Override
    public PrintWriter getLogWriter() throws SQLException {
        return driver.getLogWriter();
    }

    @Override
    public void setLogWriter(PrintWriter out) throws SQLException {
        driver.setLogWriter(out);
    }

    @Override
    public void setLoginTimeout(int seconds) throws SQLException {
        driver.setLoginTimeout(seconds);
    }

    @Override
    public int getLoginTimeout() throws SQLException {
        return driver.getLoginTimeout();
    }

    @Override
    public Logger getParentLogger() throws SQLFeatureNotSupportedException {
        return driver.getParentLogger();
    }

    @Override
    public <T> T unwrap(Class<T> iface) throws SQLException {
        return iface.isInstance(this) ? iface.cast(this) : driver.unwrap(iface);
    }

    @Override
    public boolean isWrapperFor(Class<?> iface) throws SQLException {
        return iface.isInstance(this) || driver.isWrapperFor(iface);
    }
}
