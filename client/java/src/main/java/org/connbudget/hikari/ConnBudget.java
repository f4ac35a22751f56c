package org.connbudget.hikari;

import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import com.zaxxer.hikari.pool.HikariPool;
import com.zaxxer.hikari.util.ConcurrentBag;
import com.zaxxer.hikari.util.PropertyElf;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.lang.reflect.AccessibleObject;
import java.lang.reflect.Field;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Proxy;
import java.net.InetAddress;
import java.sql.Connection;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Map;
import java.util.TreeMap;
import java.util.UUID;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.locks.LockSupport;
import java.util.logging.Logger;
import javax.management.JMException;
import javax.management.ObjectName;
import org.postgresql.ds.PGSimpleDataSource;
import org.postgresql.ds.common.BaseDataSource;
import org.postgresql.util.PSQLException;

/**
 * Sizes a HikariCP pool from its pod's share of the PostgreSQL server's
 * connection budget, as the connbudget extension computes it
 * (docs/protocol.md, protocol 2):
 *
 * <pre>{@code
 * HikariConfig config = new HikariConfig();
 * config.setJdbcUrl("jdbc:postgresql://db/shop");
 * config.setMaximumPoolSize(40);                     // your own maximum, as ever
 * ConnBudget.configure(config, ConnBudget.options().applicationName("api"));
 * HikariDataSource ds = new HikariDataSource(config);
 * ConnBudget budget = ConnBudget.follow(ds);          // from now on ds is sized by its share
 * ...
 * budget.close();                                     // hands the share back, then closes ds
 * }</pre>
 *
 * Create the pool and its ConnBudget in the process that uses them: each
 * configure() is a pool session of its own.
 */
public final class ConnBudget implements AutoCloseable, ConnBudgetMXBean {
    static final Logger LOG = Logger.getLogger("org.connbudget.hikari");

    /** The protocol's query (docs/protocol.md, section 3). */
    static final String SHARE_SQL = "SELECT set_config('connbudget.demand', ?, false), current_setting('connbudget.share')";
    /** The status of a pool whose server speaks no protocol 2: a fixed size, looked at again every 30 s. */
    static final String NO_EXTENSION = "no-extension";

    /** HikariCP's connections, and its way of closing one at once if it is idle, else when it is next
        borrowed, as softEvictConnections() does all of them: not public, reached by reflection. */
    private static final Field BAG;
    private static final Method MARKED;
    private static final Method SOFT_EVICT;

    static {
        try {
            Class<?> entry = Class.forName("com.zaxxer.hikari.pool.PoolEntry", false, HikariPool.class.getClassLoader());
            BAG = HikariPool.class.getDeclaredField("connectionBag");
            MARKED = entry.getDeclaredMethod("isMarkedEvicted");
            SOFT_EVICT = HikariPool.class.getDeclaredMethod("softEvictConnection", entry, String.class, boolean.class);
            AccessibleObject.setAccessible(new AccessibleObject[] {BAG, MARKED, SOFT_EVICT}, true);
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException("connbudget: this HikariCP has no HikariPool.softEvictConnection()", e);
        }
    }

    /** How a pool joins the budget: its application and its pod. */
    public static final class Options {
        String applicationName;
        String pod;

        /** The application: its row in connbudget.application_limits. Required. */
        public Options applicationName(String name) {
            this.applicationName = name;
            return this;
        }

        /** The pod's id; by default (or null) HOSTNAME, else the host name, the pod's name in Kubernetes;
            with the downward API, pod(System.getenv("POD_NAME")). */
        public Options pod(String id) {
            this.pod = id;
            return this;
        }
    }

    /** New options; set at least the application name. */
    public static Options options() {
        return new Options();
    }

    /**
     * Gives the pool that config will make its identity and its handling of
     * refusals; call it last, once the jdbcUrl (or pgjdbc's DataSource, or
     * dataSourceClassName) and its properties are set. The pool connects
     * through pgjdbc's DataSource with ApplicationName (and
     * assumeMinServerVersion=9.0 unless set, so that pgjdbc sends the name
     * when it connects) and, after any options of yours,
     * {@code -c connbudget.pod=<pod> -c connbudget.pool_session=<random>}.
     * The ids are checked before anything connects; the pool starts with
     * one connection. Your maximumPoolSize is the pool's own maximum and
     * your minimumIdle, if you set one, its own minimum.
     *
     * @throws IllegalArgumentException for a missing or bad id, connection
     *     options with connbudget settings of their own (as a config
     *     configured already has), or a DataSource that is not pgjdbc's
     */
    public static void configure(HikariConfig config, Options options) {
        ConnBudget budget = new ConnBudget(options, config);
        Source source = budget.new Source();
        try {  // connect as config says: its pgjdbc DataSource, dataSourceClassName or jdbcUrl, and their properties
            var props = config.getDataSourceProperties();
            if (config.getDataSource() instanceof BaseDataSource) {
                source.initializeFrom((BaseDataSource) config.getDataSource());
            } else if (config.getDataSource() == null && config.getDataSourceClassName() != null) {
                Class.forName(config.getDataSourceClassName()).asSubclass(BaseDataSource.class);  // pgjdbc's, or an error
                PropertyElf.setTargetFromProperties(source, props);
                config.setDataSourceClassName(null);
            } else if (config.getDataSource() == null && config.getJdbcUrl() != null) {
                source.setUrl(config.getJdbcUrl());
                for (String name : props.stringPropertyNames()) {
                    source.setProperty(name, props.getProperty(name));
                }
            } else {
                throw new IllegalArgumentException("give the pool a jdbcUrl or a pgjdbc DataSource first");
            }
        } catch (Exception e) {
            throw new IllegalArgumentException("connbudget: " + e.getMessage(), e);
        }
        String own = source.getOptions() == null ? "" : source.getOptions().trim();
        if (own.contains("connbudget.")) {
            throw new IllegalArgumentException("connbudget: the connection's options set connbudget settings already ("
                    + Share.quote(own) + "): configure a HikariConfig once, and give the pod with options().pod(...)");
        }
        // the server splits options at spaces, a backslash taking the next byte as it is
        source.setOptions((own.isEmpty() ? "" : own + " ") + "-c connbudget.pod="
                + budget.pod.replace("\\", "\\\\").replace(" ", "\\ ") + " -c connbudget.pool_session=" + budget.session);
        source.setApplicationName(options.applicationName);
        if (source.getAssumeMinServerVersion() == null) {
            source.setAssumeMinServerVersion("9.0");
        }
        config.setMaximumPoolSize(budget.userMax);
        config.setMinimumIdle(1);
        config.setDataSource(source);
    }

    /**
     * Makes the pool ds follow its share, from now until {@link #close()};
     * with setRegisterMbeans(true), registers the MXBean
     * org.connbudget:type=ConnBudget,pool="poolName" beside HikariCP's own.
     *
     * @throws IllegalArgumentException unless ds was made with new HikariDataSource(config) from a config
     *     given to {@link #configure}
     */
    public static ConnBudget follow(HikariDataSource ds) {
        if (!(ds.getDataSource() instanceof Source) || !(ds.getHikariPoolMXBean() instanceof HikariPool)) {
            throw new IllegalArgumentException("connbudget: follow() takes new HikariDataSource(a configure()d config)");
        }
        return ((Source) ds.getDataSource()).budget.start(ds);
    }

    final String pod;
    final String session;
    final String who;  // for log lines
    final int userMax;
    final int userMin;
    private final long connectTimeoutMs;
    private final AtomicBoolean refreshing = new AtomicBoolean();
    private volatile HikariDataSource ds;
    private volatile HikariPool pool;
    private final AtomicBoolean closed = new AtomicBoolean();
    private volatile long dueAt = System.nanoTime();  // when the next refresh is due: from follow() on
    private volatile ObjectName mbean;
    private volatile Thread follower;

    // what the refreshes found, under this object's lock
    private String status = "starting";
    private Share share;
    private int lastDemand = -1;
    private final int[] peaks = new int[6];  // the busiest moments of this refresh interval, then the five before
    private long rotatedAt;
    private String lastBad;
    private final Map<String, Long> counters = new TreeMap<>();

    private ConnBudget(Options options, HikariConfig config) {
        pod = checkId("pod id", options.pod != null ? options.pod : hostName());
        session = UUID.randomUUID().toString().replace("-", "").substring(0, 16);
        who = "pod " + Share.quote(pod) + " of " + Share.quote(checkId("application name", options.applicationName));
        int min = config.getMinimumIdle();
        userMax = config.getMaximumPoolSize() > 0 ? config.getMaximumPoolSize() : min > 0 ? min : 10;  // HikariCP's
        userMin = Math.min(Math.max(min, 0), userMax);
        connectTimeoutMs = config.getConnectionTimeout();
    }

    /**
     * id, if it can name an application, a pod or a pool session: 1 to 63
     * bytes of printable ASCII. The server refuses any other pod or pool
     * session id at connect time (22023), and would store an application
     * name with other bytes replaced, so that it would not match its row
     * in connbudget.application_limits.
     */
    static String checkId(String what, String id) {
        if (id == null || !id.matches("[\\x20-\\x7e]{1,63}")) {
            throw new IllegalArgumentException("connbudget: the " + what + " " + (id == null ? "is missing"
                    : Share.quote(id) + " is not 1 to 63 bytes of printable ASCII"));
        }
        return id;
    }

    private static String hostName() {
        try {
            String host = System.getenv("HOSTNAME");
            host = host == null || host.isEmpty() ? InetAddress.getLocalHost().getHostName() : host;
            return host.length() > 63 ? host.substring(0, 63) : host;
        } catch (IOException e) {
            throw new IllegalArgumentException("connbudget: no pod id: none given and the host name is unknown", e);
        }
    }

    private ConnBudget start(HikariDataSource ds) {
        pool = (HikariPool) ds.getHikariPoolMXBean();
        this.ds = ds;  // after pool: where ds is set, so is pool
        resize();
        follower = new Thread(this::followShare, "connbudget " + pod);
        follower.setDaemon(true);
        follower.start();
        if (ds.isRegisterMbeans()) {
            try {
                mbean = new ObjectName("org.connbudget:type=ConnBudget,pool=" + ObjectName.quote(ds.getPoolName()));
                ManagementFactory.getPlatformMBeanServer().registerMBean(this, mbean);
            } catch (JMException e) {
                LOG.warning("connbudget: the MXBean was not registered: " + e);
            }
        }
        return this;
    }

    /** The refresh interval: the server's (1 s before it said), or 30 s where it has no connbudget. */
    synchronized long intervalMs() {
        return NO_EXTENSION.equals(status) ? 30000 : share != null ? share.refreshMs : 1000;
    }

    /** The pool's maximum now: its share within its own maximum; one before the first share; its own
        maximum without a share. HikariCP cannot hold 0: with a share of 0 it holds one, and refusals of
        more are backpressure. */
    private synchronized int limit() {
        return NO_EXTENSION.equals(status) || "other".equals(status) ? userMax
                : share == null ? 1 : Math.max(1, Math.min(share.maxSize, userMax));
    }

    /** The connections the pool keeps open while idle: its own minimum, or its part of the
        application's guaranteed minimum (min_size). */
    private synchronized int least() {
        return Math.max(userMin, share != null ? share.minSize : 0);
    }

    /** Does the pool still want the connection a refused connect was for? */
    boolean wantsConnection() {
        return ds == null || !closed.get() && pool.getTotalConnections() < Math.min(limit(), ds.getMaximumPoolSize())
                && (pool.getThreadsAwaitingConnection() > 0 || pool.getIdleConnections() < ds.getMinimumIdle());
    }

    /** Counts one more of what name names (see {@link #getCounters()}); the count now. */
    synchronized long count(String name) {
        return counters.merge(name, 1L, Long::sum);
    }

    /**
     * Every 100 ms (or a quarter of a shorter refresh interval), when a
     * refresh is due, and when a refresh lowers the pool's maximum below
     * what it holds, until close() or the pool's own close(): samples the pool's
     * use (connections in use plus callers waiting), keeps its size, and
     * borrows one of the pool's idle connections, or a new one while the
     * pool may open one and no caller waits, for the refresh that runs as
     * it is given back. In a busy pool the refresh runs on the next
     * connection a caller gives back instead: in HikariCP a caller that
     * gives one back and asks again at once takes it again before a
     * borrower waiting in line wakes.
     */
    private void followShare() {
        while (!closed.get() && !ds.isClosed()) {
            sample(pool.getActiveConnections() + pool.getThreadsAwaitingConnection());
            try {
                if (dueAt - System.nanoTime() <= 0 && pool.getThreadsAwaitingConnection() == 0
                        && (pool.getIdleConnections() > 0 || pool.getTotalConnections() < ds.getMaximumPoolSize())) {
                    pool.getConnection(100).close();
                }
            } catch (SQLException e) {
                // none free after all, or its connects refused: a caller may give one back
            }
            resize();  // with the connection borrowed given back: it is not the surplus
            // the next sample, or the next refresh if it falls due sooner (one due already waits for
            // a connection: the next sample)
            long period = TimeUnit.MILLISECONDS.toNanos(Math.max(10, Math.min(100, intervalMs() / 4)));
            long due = dueAt - System.nanoTime();
            LockSupport.parkNanos(due > 0 ? Math.min(period, due) : period);
        }
        close();  // after the pool's own close(), only the MXBean is left to go
    }

    /** Keeps busy, the pool's use now, as the busiest moment of this refresh interval. */
    private synchronized void sample(int busy) {
        long now = System.nanoTime();
        if (now - rotatedAt >= TimeUnit.MILLISECONDS.toNanos(intervalMs())) {
            System.arraycopy(peaks, 0, peaks, 1, peaks.length - 1);
            peaks[0] = 0;
            rotatedAt = now;
        }
        peaks[0] = Math.max(peaks[0], busy);
    }

    /** A connection comes back to the pool, raw the driver's, reset by HikariCP (which has rolled back what
        its caller left open): a refresh that is due runs on it, one round trip, unless another runs. */
    void returned(Connection raw) {
        if (dueAt - System.nanoTime() <= 0 && pool != null && !closed.get() && refreshing.compareAndSet(false, true)) {
            try {
                if (dueAt - System.nanoTime() <= 0) {
                    refresh(raw);
                }
            } finally {
                refreshing.set(false);
            }
        }
    }

    /**
     * Sets maximumPoolSize to the limit and minimumIdle to what the pool may
     * keep (HikariCP reads both at run time). HikariCP only stops opening
     * connections beyond its maximum, so while it holds more, this closes
     * the surplus and only the surplus, idle connections first: each is
     * marked, and closed at once if it is idle, else when it is next
     * borrowed after its caller gives it back. Marked connections count as
     * closed already (and are closed again in case they came back since).
     */
    private synchronized void resize() {
        int limit = limit();
        ds.getHikariConfigMXBean().setMinimumIdle(Math.min(least(), limit));
        ds.getHikariConfigMXBean().setMaximumPoolSize(limit);
        if (closed.get() || pool.getTotalConnections() <= limit) {
            return;
        }
        try {
            ConcurrentBag<?> bag = (ConcurrentBag<?>) BAG.get(pool);
            var entries = new ArrayList<Object>(bag.values(ConcurrentBag.IConcurrentBagEntry.STATE_IN_USE));
            entries.addAll(bag.values(ConcurrentBag.IConcurrentBagEntry.STATE_NOT_IN_USE));
            int keep = limit - (bag.size() - entries.size());  // the others are being closed or opened
            for (Object entry : entries) {
                boolean marked = (Boolean) MARKED.invoke(entry);
                if (marked || keep-- <= 0) {
                    SOFT_EVICT.invoke(pool, entry, "(above the pool's share)", false);
                    counters.merge("evictions", marked ? 0L : 1L, Long::sum);  // a marked one came back: closed now
                }
            }
        } catch (ReflectiveOperationException e) {
            LOG.warning("connbudget: closing the surplus failed: " + e);
        }
    }

    /** The next refresh, after an interval drawn from lo% to hi% of the refresh interval. */
    private void dueIn(int lo, int hi) {
        dueAt = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(
                intervalMs() * (lo + ThreadLocalRandom.current().nextInt(hi - lo + 1)) / 100);
    }

    /** The busiest moment of this refresh interval and the 5 before, plus 25% headroom (at least 1), at
        least the pool's minimum and min_size, at most its maximum. */
    private synchronized int demand() {
        int busy = Arrays.stream(peaks).max().getAsInt();
        return Math.min(Math.max(busy + Math.max(1, (busy * 25 + 99) / 100), least()), userMax);
    }

    /** Reports the demand and reads the share on conn (docs/protocol.md, sections 3 to 5). */
    private void refresh(Connection conn) {
        int demand = demand();
        try {
            take(Share.parse(ask(conn, Integer.toString(demand))), demand);
        } catch (IllegalArgumentException e) {
            fail("bad-answer", e.getMessage() + "; ignored, the pool stays within " + limit() + " connections");
        } catch (SQLException e) {
            // connbudget.share unknown (42704, 42602): no connbudget, or one older than 1.2
            boolean none = "42704".equals(e.getSQLState()) || "42602".equals(e.getSQLState());
            fail(none ? NO_EXTENSION : "query-failed", "no share (" + e.getMessage() + ")"
                    + (none ? ": the server has no connbudget 1.2 or later, a fixed size of " + userMax : ""));
        }
    }

    /** The one row of the protocol's query, in autocommit: a report in a transaction that rolls back is undone. */
    private String ask(Connection conn, String demand) throws SQLException {
        boolean autoCommit = conn.getAutoCommit();
        conn.setAutoCommit(true);
        try (var st = conn.prepareStatement(SHARE_SQL)) {
            st.setQueryTimeout((int) Math.min(5, Math.max(1, (intervalMs() + 999) / 1000)));
            st.setString(1, demand);
            var rs = st.executeQuery();
            String text = rs.next() ? rs.getString(2) : null;
            if (rs.getRow() != 1 || rs.next()) {
                throw new IllegalArgumentException("the share query did not answer one row");
            }
            return text;
        } finally {
            conn.setAutoCommit(autoCommit);
        }
    }

    /**
     * Takes in an answer and sets when the next refresh is due
     * (docs/protocol.md, sections 2 and 4): after a changed demand, once the
     * server has published an allocation that knows it (the answer is the
     * one from before it); the second refresh at a random moment, so that
     * pools started together do not refresh in step; while the share is 0,
     * no sooner than an interval; after a refusal, 10 intervals later.
     * Status left: handed back elsewhere in this session; the next report
     * brings it back.
     */
    private synchronized void take(Share sh, int demand) {
        count("refreshes");
        lastBad = null;
        if (!sh.status.equals(status) && sh.status.matches("other|refused")) {
            LOG.warning("connbudget: " + who + ": no share (" + Share.quote(sh.text) + ")");
        }
        int before = lastDemand;
        status = sh.status;
        boolean ok = sh.status.equals("ok");
        if (ok) {
            LOG.fine(() -> "connbudget: " + who + ": share " + sh.maxSize + " (demand " + demand + ")");
            share = sh;
            lastDemand = demand;
            if (pool != null && pool.getTotalConnections() > limit() && follower != null) {
                LockSupport.unpark(follower);  // the surplus goes now, not at the next sample
            }
        }
        if (sh.status.equals("refused")) {
            dueIn(1000, 1100);
        } else if (ok && before < 0) {
            dueIn(10, 100);
        } else if (ok && demand != before) {
            // one publish period: a tenth of the refresh interval, 10 ms to 1 s
            dueAt = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(Math.min(1000, Math.max(10, intervalMs() / 10)));
        } else if (ok && sh.maxSize == 0) {
            dueIn(100, 120);
        } else {
            dueIn(90, 110);
        }
    }

    /** Counts an error of a kind and logs it, once until the kind changes or a good answer comes; the
        pool keeps its last good share (before one, a single connection). */
    private synchronized void fail(String kind, String message) {
        count(kind);
        status = kind.equals(NO_EXTENSION) ? NO_EXTENSION : status;
        if (!kind.equals(lastBad)) {
            LOG.warning("connbudget: " + who + ": " + message);
        }
        lastBad = kind;
        dueIn(90, 110);
    }

    /**
     * Hands the share back (a report of the demand 'leave') on one
     * of the pool's connections, so that the other pods are given it within
     * a publish period instead of connbudget.pod_ttl later, then closes the
     * pool and unregisters the MXBean.
     */
    @Override
    public void close() {
        if (closed.getAndSet(true)) {
            return;
        }
        while (!refreshing.compareAndSet(false, true)) {
            LockSupport.parkNanos(1000000);  // a refresh runs: its report must not come after the leave
        }
        try (Connection conn = pool.getConnection(Math.min(1000, ds.getConnectionTimeout()))) {
            ask(conn, "leave");
        } catch (SQLException | IllegalArgumentException e) {
            LOG.fine(() -> "connbudget: handing the share back failed: " + e);
        }
        ds.close();
        try {
            if (mbean != null) {
                ManagementFactory.getPlatformMBeanServer().unregisterMBean(mbean);
            }
        } catch (JMException e) {
            // gone already
        }
    }

    /**
     * The DataSource HikariCP connects through once configure() has set it:
     * pgjdbc's own, with the pool's identity, and refusals handled as the
     * protocol says (docs/protocol.md, section 6). HikariCP connects in its
     * own threads (and once in its constructor) while callers wait in
     * getConnection() for up to connectionTimeout; a connect refused with
     * 53300 is retried here within that time, after a wait drawn from [0,
     * retry_ms * 2^n] (full jitter), as long as the pool still wants the
     * connection (asked again after each wait: a share that fell meanwhile
     * ends the retries, rather than a connection above it). 42501 and 53400
     * are permanent: thrown at once, and the same exception answers connects
     * for 10 refresh intervals without asking the server.
     */
    final class Source extends PGSimpleDataSource {
        private static final long serialVersionUID = 1L;
        private transient volatile RefusedException permanent;  // answers connects until permanentUntil
        private volatile long permanentUntil;

        final transient ConnBudget budget = ConnBudget.this;

        @Override
        public Connection getConnection(String user, String password) throws SQLException {
            long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(connectTimeoutMs);
            SQLException backpressure = null;  // the last 53300 refusal
            for (int attempt = 0;; attempt++) {
                RefusedException refused = permanent;
                if (refused != null && System.nanoTime() - permanentUntil < 0) {
                    throw refused;
                }
                // after a wait: the share may have fallen meanwhile, and a connection the pool has no
                // room for any more would stand above it until the next resize closes it
                if (backpressure != null && !wantsConnection()) {
                    throw new RefusedException("connbudget: " + who + ": refused (53300) until the pool no longer "
                            + "wanted the connection", backpressure);
                }
                try {
                    return returnable(super.getConnection(user, password));
                } catch (SQLException e) {
                    if ("42501".equals(e.getSQLState()) || "53400".equals(e.getSQLState())) {
                        refused = new RefusedException("connbudget: " + who + " is refused (" + e.getSQLState()
                                + ", permanent: " + e.getMessage() + "); asked again in 10 refresh intervals", e);
                        if (count("permanent-refusals") == 1) {
                            LOG.warning(refused.getMessage());
                        }
                        permanentUntil = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(10 * intervalMs());
                        permanent = refused;
                        throw refused;
                    }
                    if (!"53300".equals(e.getSQLState())) {
                        throw e;
                    }
                    backpressure = e;
                    if (count("refused-connects") == 1) {
                        LOG.info("connbudget: " + who + ": connects refused with 53300 (backpressure), retried");
                    }
                    long left = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
                    if (left <= 0 || !wantsConnection() || Thread.currentThread().isInterrupted()) {
                        throw new RefusedException("connbudget: " + who + ": refused (53300) until the pool gave up", e);
                    }
                    LockSupport.parkNanos(TimeUnit.MILLISECONDS.toNanos(Math.min(backoffMs(e, attempt), left)));
                }
            }
        }

        /**
         * The driver's connection behind a proxy that passes every call on.
         * HikariCP calls clearWarnings() on it whenever a caller gives it back,
         * in the caller's thread, before anyone else may take it: there
         * returned() runs a refresh that is due.
         */
        private Connection returnable(Connection conn) {
            return (Connection) Proxy.newProxyInstance(getClass().getClassLoader(), new Class<?>[] {Connection.class},
                    (proxy, method, args) -> {
                        if (method.getName().equals("equals")) {
                            return proxy == args[0];
                        }
                        if (method.getName().equals("clearWarnings")) {
                            returned(conn);
                        }
                        try {
                            return method.invoke(conn, args);
                        } catch (InvocationTargetException e) {
                            throw e.getCause();
                        }
                    });
        }
    }

    /** The wait before the next attempt at a refused connect: full jitter over [0, retry_ms * 2^attempt], from
        the pace the refusal states (else 1 s), at most twice that, and at most half the lease that keeps the
        pod's claim: the other pods shrink at their next refresh. */
    static long backoffMs(SQLException e, int attempt) {
        String where = ((PSQLException) e).getServerErrorMessage().getWhere();  // 53300 comes from the server
        int pace = Share.contextMs(where, "retry_ms", 1000);
        long cap = Math.max(pace, Math.min(2L * pace, Share.contextMs(where, "lease_ms", 4 * pace) / 2));
        return ThreadLocalRandom.current().nextLong(Math.min(cap, (long) pace << Math.min(attempt, 20)) + 1);
    }

    /** ok, other (not governed: a fixed size), left (handed back; the next report brings it back), refused
        (governed no more), no-extension (a fixed size), or starting before the first answer. */
    public synchronized String getStatus() { return status; }

    @Override
    public synchronized int getShare() { return share != null ? share.maxSize : -1; }

    /** The pool's maximumPoolSize now: the share within the pool's own maximum. */
    public int getLimit() { return ds.getMaximumPoolSize(); }

    @Override
    public synchronized int getDemand() { return lastDemand; }

    @Override
    public synchronized Map<String, Long> getCounters() { return new TreeMap<>(counters); }

    @Override
    public String toString() {
        return "ConnBudget{" + who + ", status=" + getStatus() + ", share=" + getShare() + ", limit=" + getLimit()
                + ", demand=" + getDemand() + ", " + getCounters() + "}";
    }
}
