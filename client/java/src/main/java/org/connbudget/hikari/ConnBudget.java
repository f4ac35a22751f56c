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
import java.lang.reflect.Method;
import java.net.InetAddress;
import java.security.SecureRandom;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.locks.LockSupport;
import java.util.logging.Level;
import java.util.logging.Logger;
import javax.management.ObjectName;
import org.postgresql.core.BaseConnection;
import org.postgresql.core.TransactionState;
import org.postgresql.ds.common.BaseDataSource;

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
    private static final Logger LOG = Logger.getLogger("org.connbudget.hikari");
    private static final SecureRandom RANDOM = new SecureRandom();

    /** The protocol's query (docs/protocol.md, section 3). */
    static final String SHARE_SQL =
            "SELECT set_config('connbudget.demand', ?, false), current_setting('connbudget.share')";
    /** The status of a pool whose server speaks no protocol 2: a fixed size, looked at again every PROBE_MS. */
    static final String NO_EXTENSION = "no-extension";
    static final long PROBE_MS = 30000;

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
        long refreshMs;

        private Options() {
        }

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

        /** Overrides the server's refresh interval (refresh_ms). */
        public Options refreshInterval(Duration interval) {
            this.refreshMs = interval.toMillis();
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
     *     options with connbudget settings of their own, or a DataSource
     *     that is not pgjdbc's
     */
    public static void configure(HikariConfig config, Options options) {
        if (config.getDataSource() instanceof BudgetDataSource) {
            throw new IllegalStateException("connbudget: this HikariConfig is configured already; "
                    + "each pool needs a HikariConfig and a pool session of its own");
        }
        ConnBudget budget = new ConnBudget(options, config);
        BudgetDataSource source = budget.source;
        try {
            connectAs(config, source);
        } catch (Exception e) {
            throw new IllegalArgumentException("connbudget: " + e.getMessage(), e);
        }
        String own = source.getOptions() == null ? "" : source.getOptions().trim();
        if (own.contains("connbudget.")) {
            throw new IllegalArgumentException("connbudget: the connection's options already set connbudget "
                    + "settings (" + Share.quote(own) + "); give the pod with ConnBudget.options().pod(...)");
        }
        // the server splits options at spaces, a backslash taking the next byte as it is
        source.setOptions((own.isEmpty() ? "" : own + " ") + "-c connbudget.pod="
                + budget.pod.replace("\\", "\\\\").replace(" ", "\\ ") + " -c connbudget.pool_session=" + budget.session);
        source.setApplicationName(budget.application);
        if (source.getAssumeMinServerVersion() == null) {
            source.setAssumeMinServerVersion("9.0");
        }
        config.setMaximumPoolSize(budget.userMax);
        config.setMinimumIdle(1);
        config.setDataSource(source);
    }

    /** Makes source connect as config says: its jdbcUrl and dataSourceProperties, or its pgjdbc
        DataSource, or its pgjdbc dataSourceClassName and dataSourceProperties. */
    private static void connectAs(HikariConfig config, BudgetDataSource source) throws Exception {
        Properties props = config.getDataSourceProperties();
        if (config.getDataSource() instanceof BaseDataSource) {
            source.initializeFrom((BaseDataSource) config.getDataSource());
        } else if (config.getDataSource() != null) {
            throw new IllegalArgumentException("the pool's DataSource is not pgjdbc's, so it cannot give the pool's "
                    + "identity; use a jdbcUrl or a PGSimpleDataSource");
        } else if (config.getDataSourceClassName() != null) {
            Class.forName(config.getDataSourceClassName()).asSubclass(BaseDataSource.class);  // pgjdbc's, or an error
            PropertyElf.setTargetFromProperties(source, props);
            config.setDataSourceClassName(null);
        } else if (config.getJdbcUrl() != null) {
            source.setUrl(config.getJdbcUrl());
            for (String name : props.stringPropertyNames()) {
                source.setProperty(name, props.getProperty(name));
            }
        } else {
            throw new IllegalArgumentException("set the pool's jdbcUrl (or its DataSource) before ConnBudget.configure()");
        }
    }

    /**
     * Makes the pool ds follow its share, from now until {@link #close()}.
     *
     * @throws IllegalArgumentException if ds was not made from a config given to {@link #configure}
     * @throws IllegalStateException if the pool has not started, or follows its share already
     */
    public static ConnBudget follow(HikariDataSource ds) {
        if (!(ds.getDataSource() instanceof BudgetDataSource)) {
            throw new IllegalArgumentException("connbudget: the pool's HikariConfig was not given to ConnBudget.configure()");
        }
        if (!(ds.getHikariPoolMXBean() instanceof HikariPool)) {
            throw new IllegalStateException("connbudget: the pool has not started; make it with new HikariDataSource(config)");
        }
        ConnBudget budget = ((BudgetDataSource) ds.getDataSource()).budget;
        budget.start(ds, (HikariPool) ds.getHikariPoolMXBean());
        return budget;
    }

    final String application;
    final String pod;
    final String session;
    final String who;  // for log lines
    final int userMax;
    final int userMin;
    final long connectTimeoutMs;
    private final long configuredRefreshMs;
    private final BudgetDataSource source;
    private final ScheduledThreadPoolExecutor executor;
    private final AtomicBoolean refreshing = new AtomicBoolean();
    private volatile HikariDataSource ds;
    private volatile HikariPool pool;
    private volatile boolean closed;
    private volatile long dueAt;  // when the next refresh is due, in System.nanoTime()
    private ObjectName mbean;

    // what the refreshes found, under this object's lock
    private String status = "starting";
    private Share share;
    private int lastDemand = -1;
    private final int[] peaks = new int[6];  // the busiest moments of this refresh interval and the five before
    private int peakAt;
    private long rotatedAt;
    private String lastBad;
    private final Map<String, Long> errors = new TreeMap<>();
    private long refreshes;
    private long skipped;
    private long evictions;

    private ConnBudget(Options options, HikariConfig config) {
        application = checkId("application name", options.applicationName);
        pod = checkId("pod id", options.pod != null ? options.pod : hostName());
        session = String.format("%016x", RANDOM.nextLong());
        who = "pod " + Share.quote(pod) + " of " + Share.quote(application);
        int min = config.getMinimumIdle();
        userMax = config.getMaximumPoolSize() > 0 ? config.getMaximumPoolSize() : min > 0 ? min : 10;  // HikariCP's
        userMin = Math.min(Math.max(min, 0), userMax);
        configuredRefreshMs = options.refreshMs;
        connectTimeoutMs = config.getConnectionTimeout();
        source = new BudgetDataSource(this);
        executor = new ScheduledThreadPoolExecutor(1, task -> {
            Thread t = new Thread(task, "connbudget " + pod);
            t.setDaemon(true);
            return t;
        });
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
        String host = System.getenv("HOSTNAME");
        try {
            host = host == null || host.isEmpty() ? InetAddress.getLocalHost().getHostName() : host;
        } catch (IOException e) {
            throw new IllegalArgumentException("connbudget: no pod id: none given and the host name is unknown", e);
        }
        return host.length() > 63 ? host.substring(0, 63) : host;
    }

    /** Starts following the share; with setRegisterMbeans(true), registers the MXBean
        org.connbudget:type=ConnBudget,pool="poolName" beside HikariCP's own. */
    private synchronized void start(HikariDataSource ds, HikariPool pool) {
        if (this.ds != null) {
            throw new IllegalStateException("connbudget: this pool follows its share already");
        }
        this.ds = ds;
        this.pool = pool;
        resize();
        dueAt = System.nanoTime();
        executor.execute(this::tick);
        if (ds.isRegisterMbeans()) {
            try {
                mbean = new ObjectName("org.connbudget:type=ConnBudget,pool=" + ObjectName.quote(ds.getPoolName()));
                ManagementFactory.getPlatformMBeanServer().registerMBean(this, mbean);
            } catch (Exception e) {
                LOG.log(Level.WARNING, "connbudget: the MXBean was not registered", e);
            }
        }
    }

    /** The refresh interval: the configured one, else the server's, else 1 s; 30 s without connbudget. */
    synchronized long intervalMs() {
        return configuredRefreshMs > 0 ? configuredRefreshMs
                : NO_EXTENSION.equals(status) ? PROBE_MS : share != null ? share.refreshMs : 1000;
    }

    /** The pool's maximum now: its share within its own maximum; one before the first share; its own
        maximum without a share. HikariCP cannot hold 0: with a share of 0 it holds one, and refusals of
        more are backpressure. */
    private synchronized int limit() {
        if (NO_EXTENSION.equals(status) || Share.OTHER.equals(status)) {
            return userMax;
        }
        return share == null ? 1 : Math.max(1, Math.min(share.maxSize, userMax));
    }

    /** The connections the pool keeps open while idle: its own minimum, or its part of the
        application's guaranteed minimum (min_size). */
    private synchronized int least() {
        return Math.max(userMin, share != null ? share.minSize : 0);
    }

    /** Does the pool still want the connection a refused connect was for? */
    boolean wantsConnection() {
        HikariDataSource d = ds;
        return d == null || !closed && pool.getTotalConnections() < d.getMaximumPoolSize()
                && (pool.getThreadsAwaitingConnection() > 0 || pool.getIdleConnections() < d.getMinimumIdle());
    }

    /**
     * Every 100 ms (or a quarter of a shorter interval), and when a refresh
     * is due: samples the pool's use (connections in use plus callers
     * waiting), keeps its size, and refreshes the share on one of the
     * pool's idle connections, or on a new one while the pool may open one
     * and no caller waits. In a busy pool the refresh runs instead on the
     * next connection a caller gives back (returned): in HikariCP a caller
     * that gives one back and asks again at once takes it again before a
     * borrower waiting in line wakes. When none comes free within an
     * interval, the refresh is skipped.
     */
    private void tick() {
        if (ds.isClosed()) {
            stop();  // closed without close(): nothing to follow any more
            return;
        }
        try {
            sample(pool.getActiveConnections() + pool.getThreadsAwaitingConnection());
            long late = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - dueAt);
            boolean idle = pool.getIdleConnections() > 0;
            if (late >= 0 && (idle || pool.getTotalConnections() < ds.getMaximumPoolSize()
                    && pool.getThreadsAwaitingConnection() == 0)) {
                try (Connection conn = pool.getConnection(idle ? 20 : 100)) {
                    refreshIfDue(conn);
                } catch (SQLException e) {
                    // none free after all, or its connects refused: a caller may give one back
                }
            } else if (late > intervalMs() && refreshing.compareAndSet(false, true)) {
                synchronized (this) {
                    skipped++;
                    dueAt = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(jitter(intervalMs(), 90, 110));
                }
                refreshing.set(false);
            }
            resize();  // with the connection borrowed given back: it is not the surplus
        } catch (RuntimeException e) {
            LOG.log(Level.WARNING, "connbudget: following the share failed", e);
        }
        long due = TimeUnit.NANOSECONDS.toMillis(dueAt - System.nanoTime());
        if (!closed) {
            executor.schedule(this::tick, Math.max(10, Math.min(due, Math.min(100, intervalMs() / 4))),
                    TimeUnit.MILLISECONDS);
        }
    }

    /** Keeps busy, the pool's use now, as the busiest moment of this refresh interval. */
    private synchronized void sample(int busy) {
        long now = System.nanoTime();
        if (now - rotatedAt >= TimeUnit.MILLISECONDS.toNanos(intervalMs())) {
            peakAt = (peakAt + 1) % peaks.length;
            peaks[peakAt] = 0;
            rotatedAt = now;
        }
        peaks[peakAt] = Math.max(peaks[peakAt], busy);
    }

    /** A caller gives raw, the driver's connection, back to the pool: a refresh that is due runs on it,
        one round trip, if it is outside any transaction. */
    void returned(Connection raw) {
        if (dueAt - System.nanoTime() <= 0 && ((BaseConnection) raw).getTransactionState() == TransactionState.IDLE) {
            refreshIfDue(raw);
        }
    }

    private void refreshIfDue(Connection conn) {
        if (pool != null && !closed && refreshing.compareAndSet(false, true)) {  // following, not closing
            try {
                if (dueAt - System.nanoTime() <= 0) {
                    refresh(conn);
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
     * closed already. HikariCP opens none while it holds its maximum.
     */
    private synchronized void resize() {
        int limit = limit();
        ds.getHikariConfigMXBean().setMinimumIdle(Math.min(least(), limit));
        ds.getHikariConfigMXBean().setMaximumPoolSize(limit);
        if (closed || pool.getTotalConnections() <= limit) {
            return;
        }
        try {
            ConcurrentBag<?> bag = (ConcurrentBag<?>) BAG.get(pool);
            List<Object> entries = new ArrayList<>(bag.values(ConcurrentBag.IConcurrentBagEntry.STATE_NOT_IN_USE));
            entries.addAll(bag.values(ConcurrentBag.IConcurrentBagEntry.STATE_IN_USE));
            int surplus = bag.size() - limit;
            for (Object entry : entries) {
                surplus -= (Boolean) MARKED.invoke(entry) ? 1 : 0;
            }
            for (Object entry : entries) {
                boolean marked = (Boolean) MARKED.invoke(entry);
                if (marked || surplus-- > 0) {
                    SOFT_EVICT.invoke(pool, entry, "(above the pool's share)", false);
                    evictions += marked ? 0 : 1;
                }
            }
        } catch (ReflectiveOperationException e) {
            LOG.log(Level.WARNING, "connbudget: closing the surplus failed", e);
        }
    }

    /** One publish period: a tenth of the refresh interval, 10 ms to 1 s. */
    static long publishPeriodMs(long intervalMs) {
        return Math.min(1000, Math.max(10, intervalMs / 10));
    }

    private static long jitter(long ms, int lo, int hi) {
        return ms * (lo + ThreadLocalRandom.current().nextInt(hi - lo + 1)) / 100;
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
            take(Share.parse(ask(conn, demand)), demand);
        } catch (Share.Invalid e) {
            fail(e.kind, e.getMessage() + "; ignored, the pool stays within " + limit() + " connections");
        } catch (SQLException e) {
            if (!"42704".equals(e.getSQLState()) && !"42602".equals(e.getSQLState())) {
                fail("query", "reading the share failed: " + e.getMessage());
                return;
            }
            synchronized (this) {
                status = NO_EXTENSION;  // connbudget.share unknown: no connbudget, or one older than 1.2
            }
            fail(NO_EXTENSION, "the server has no usable connbudget extension (1.2 or later: " + e.getMessage()
                    + "): a fixed size of " + userMax);
        }
    }

    /** The one row of the protocol's query; where conn is not in autocommit, in a transaction of its own,
        as a report in a transaction that rolls back is undone. */
    private String ask(Connection conn, int demand) throws SQLException, Share.Invalid {
        boolean autoCommit = conn.getAutoCommit();
        List<String> rows = new ArrayList<>();
        try (PreparedStatement st = conn.prepareStatement(SHARE_SQL)) {
            st.setQueryTimeout((int) Math.min(5, Math.max(1, (intervalMs() + 999) / 1000)));
            st.setString(1, Integer.toString(demand));
            ResultSet rs = st.executeQuery();
            while (rs.next()) {
                rows.add(rs.getString(2));
            }
        } catch (SQLException e) {
            if (!autoCommit) {
                conn.rollback();
            }
            throw e;
        }
        if (!autoCommit) {
            conn.commit();
        }
        if (rows.size() != 1) {
            throw new Share.Invalid(Share.BAD_SHAPE, "the share query answered " + rows.size() + " rows, not 1");
        }
        return rows.get(0);
    }

    /**
     * Takes in an answer and sets when the next refresh is due
     * (docs/protocol.md, sections 2 and 4): after a changed demand, once the
     * server has published an allocation that knows it (the answer is the
     * one from before it); the second refresh at a random moment, so that
     * pools started together do not refresh in step; while the share is 0,
     * no sooner than an interval; after a refusal, 10 intervals later.
     */
    private synchronized void take(Share sh, int demand) {
        refreshes++;
        lastBad = null;
        long next = 0;
        if (!sh.status.equals(status) && sh.status.matches("other|refused")) {
            LOG.warning(sh.status.equals(Share.OTHER) ? "connbudget: the server does not govern " + who + ": a fixed "
                    + "size of " + userMax : "connbudget: the server no longer gives " + who + " a share ("
                    + sh.sqlstate + " " + sh.reason + "); the pool stays within " + limit());
        }
        if (sh.status.equals(Share.REFUSED)) {
            errors.merge("refused", 1L, Long::sum);
            next = jitter(intervalMs(), 1000, 1100);
        }
        if (sh.status.equals(Share.OK)) {
            if (share == null || share.maxSize != sh.maxSize) {
                LOG.log(Level.FINE, "connbudget: {0}: share {1} (demand {2})", new Object[] {who, sh.maxSize, demand});
            }
            int before = lastDemand;
            share = sh;
            lastDemand = demand;
            next = before < 0 ? jitter(intervalMs(), 10, 100) : demand != before ? publishPeriodMs(intervalMs())
                    : sh.maxSize == 0 ? jitter(intervalMs(), 100, 120) : 0;
        }
        status = sh.status;  // left: handed back elsewhere in this session; the next report brings it back
        dueAt = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(next > 0 ? next : jitter(intervalMs(), 90, 110));
    }

    /** Counts an error of a kind and logs it, once until the kind changes or a good answer comes; the
        pool keeps its last good share (before one, a single connection). */
    private synchronized void fail(String kind, String message) {
        errors.merge(kind, 1L, Long::sum);
        if (!kind.equals(lastBad)) {
            LOG.warning("connbudget: " + who + ": " + message);
        }
        lastBad = kind;
        dueAt = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(jitter(intervalMs(), 90, 110));
    }

    /**
     * Hands the share back ({@code SET connbudget.demand = 'leave'}) on one
     * of the pool's connections, so that the other pods are given it within
     * a publish period instead of connbudget.pod_ttl later, then closes the
     * pool.
     */
    @Override
    public void close() {
        if (!stop()) {
            return;
        }
        while (!refreshing.compareAndSet(false, true)) {
            LockSupport.parkNanos(1000000);  // a refresh runs: its report must not come after the leave
        }
        String was = getStatus();
        if (!NO_EXTENSION.equals(was) && !Share.OTHER.equals(was)) {
            try (Connection conn = pool.getConnection(Math.min(1000, ds.getConnectionTimeout()));
                    Statement st = conn.createStatement()) {
                st.setQueryTimeout(1);
                st.execute("SET connbudget.demand = 'leave'");
                if (!conn.getAutoCommit()) {
                    conn.commit();
                }
            } catch (SQLException e) {
                LOG.log(Level.FINE, "connbudget: handing the share back failed", e);
            }
        }
        ds.close();
    }

    /** Stops following the share and unregisters the MXBean; false if stopped already. */
    private synchronized boolean stop() {
        if (closed) {
            return false;
        }
        closed = true;
        executor.shutdownNow();
        try {
            if (mbean != null) {
                ManagementFactory.getPlatformMBeanServer().unregisterMBean(mbean);
            }
        } catch (Exception e) {
            // gone already
        }
        return true;
    }

    @Override
    public synchronized String getStatus() { return status; }

    @Override
    public synchronized int getShare() { return share != null ? share.maxSize : -1; }

    @Override
    public long getRefreshMs() { return intervalMs(); }

    @Override
    public int getLimit() { return ds.getMaximumPoolSize(); }

    @Override
    public synchronized int getDemand() { return lastDemand; }

    @Override
    public synchronized long getRefreshes() { return refreshes; }

    @Override
    public synchronized long getSkippedRefreshes() { return skipped; }

    @Override
    public synchronized Map<String, Long> getErrors() { return new TreeMap<>(errors); }

    @Override
    public synchronized long getEvictions() { return evictions; }

    @Override
    public long getRefusedConnects() { return source.refusedConnects.get(); }

    @Override
    public long getPermanentRefusals() { return source.permanentRefusals.get(); }

    @Override
    public String getPod() { return pod; }

    @Override
    public String getPoolSession() { return session; }

    @Override
    public String toString() {
        return "ConnBudget{" + who + ", status=" + getStatus() + ", share=" + getShare() + ", limit=" + getLimit()
                + ", demand=" + getDemand() + ", refreshes=" + getRefreshes() + ", skipped=" + getSkippedRefreshes()
                + ", errors=" + getErrors() + ", evictions=" + getEvictions() + ", refusedConnects="
                + getRefusedConnects() + ", permanentRefusals=" + getPermanentRefusals() + "}";
    }
}
