package org.connbudget.hikari;

import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariConfigMXBean;
import com.zaxxer.hikari.HikariDataSource;
import com.zaxxer.hikari.HikariPoolMXBean;
import com.zaxxer.hikari.pool.HikariPool;
import com.zaxxer.hikari.util.ConcurrentBag;
import com.zaxxer.hikari.util.DriverDataSource;
import com.zaxxer.hikari.util.PropertyElf;
import java.lang.management.ManagementFactory;
import java.lang.reflect.Field;
import java.lang.reflect.Method;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.SQLTransientConnectionException;
import java.sql.Statement;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.logging.Level;
import java.util.logging.Logger;
import javax.management.ObjectName;
import javax.sql.DataSource;
import org.postgresql.core.BaseConnection;
import org.postgresql.core.TransactionState;
import org.postgresql.ds.common.BaseDataSource;

/**
 * Sizes a HikariCP pool from its pod's share of the PostgreSQL server's
 * connection budget, as the connbudget extension computes it
 * (docs/protocol.md):
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

    /** The protocol's queries (docs/protocol.md, sections 3 and 5). */
    static final String SHARE_SQL =
            "SELECT set_config('connbudget.demand', ?, false), current_setting('connbudget.share')";
    static final String POOL_SHARE_SQL =
            "SELECT max_size, min_size, budget, refresh_ms FROM connbudget.pool_share(?::int)";
    /** How often a pool that speaks protocol 1 tries 2 again, and looks again for an extension it did not find. */
    static final long PROBE_MS = 30000;
    static final String NO_EXTENSION = "no-extension";
    /** pgjdbc sends ApplicationName at connect time, where the server reads
        it, only for a server it may assume is 9.0 or later. */
    static final String STARTUP_APPLICATION_NAME = "9.0";
    static final int PEAK_WINDOW = 5;

    /** How a pool joins the budget: its application, its pod, and what it does without a share. */
    public static final class Options {
        String applicationName;
        String pod;
        String podEnv;
        long refreshMs;
        int fixedSize;

        private Options() {
        }

        /** The application: its row in connbudget.application_limits. Required. */
        public Options applicationName(String name) {
            this.applicationName = name;
            return this;
        }

        /** The pod's id; by default the variable podEnv names, else HOSTNAME, else the host name. */
        public Options pod(String id) {
            this.pod = id;
            return this;
        }

        /** An environment variable holding the pod's id (POD_NAME from the Kubernetes downward API, say). */
        public Options podEnv(String variable) {
            this.podEnv = variable;
            return this;
        }

        /** Overrides the server's refresh interval (refresh_ms). */
        public Options refreshInterval(Duration interval) {
            this.refreshMs = interval.toMillis();
            return this;
        }

        /** The size where the server has no connbudget or does not govern the pool; by default maximumPoolSize. */
        public Options fixedSize(int size) {
            this.fixedSize = size;
            return this;
        }
    }

    /** HikariCP's connections and its mark of one to close when next borrowed; null where this HikariCP
        has them otherwise. */
    private static final Field BAG;
    private static final Field CONNECTION;
    private static final Method MARK;
    private static final Method MARKED;

    static {
        Field bag = null;
        Field connection = null;
        Method mark = null;
        Method marked = null;
        try {
            Class<?> entry = Class.forName("com.zaxxer.hikari.pool.PoolEntry", false,
                    HikariPool.class.getClassLoader());
            bag = HikariPool.class.getDeclaredField("connectionBag");
            connection = entry.getDeclaredField("connection");
            mark = entry.getDeclaredMethod("markEvicted");
            marked = entry.getDeclaredMethod("isMarkedEvicted");
            bag.setAccessible(true);
            connection.setAccessible(true);
            mark.setAccessible(true);
            marked.setAccessible(true);
        } catch (ReflectiveOperationException | RuntimeException e) {
            LOG.log(Level.FINE, "connbudget: this HikariCP evicts all connections above the pool's share", e);
            mark = null;
        }
        BAG = bag;
        CONNECTION = connection;
        MARK = mark;
        MARKED = marked;
    }

    /** New options; set at least the application name. */
    public static Options options() {
        return new Options();
    }

    /**
     * Gives the pool that config will make its identity and its handling of
     * refusals; call it last, once the jdbcUrl (or the DataSource, or
     * dataSourceClassName) and its properties are set. It adds
     * ApplicationName (and assumeMinServerVersion=9.0 unless set, so that
     * pgjdbc sends the name when it connects) and, after any options of
     * yours, {@code -c connbudget.pod=<pod> -c connbudget.pool_session=<random>};
     * checks the ids before anything connects; and makes the pool start
     * with one connection. Your maximumPoolSize is the pool's own maximum
     * and your minimumIdle, if you set one, its own minimum.
     *
     * @throws IllegalArgumentException for a missing or bad id, connection
     *     options with connbudget settings of their own, or a DataSource
     *     that is not pgjdbc's
     */
    public static void configure(HikariConfig config, Options options) {
        Objects.requireNonNull(config, "config");
        Objects.requireNonNull(options, "options");
        if (config.getDataSource() instanceof BudgetDataSource) {
            throw new IllegalStateException("connbudget: this HikariConfig is configured already; "
                    + "each pool needs a HikariConfig and a pool session of its own");
        }
        Identity id = new Identity(options.applicationName,
                options.pod != null ? options.pod : Identity.defaultPod(options.podEnv));
        int max = config.getMaximumPoolSize();
        int min = config.getMinimumIdle();
        if (max < 1) {
            max = min > 0 ? min : 10;  // HikariCP's own default
        }
        min = Math.min(Math.max(min, 0), max);
        if (options.fixedSize < 0) {
            throw new IllegalArgumentException("connbudget: a fixed size of " + options.fixedSize);
        }

        DataSource driver;
        Properties props = PropertyElf.copyProperties(config.getDataSourceProperties());
        if (config.getDataSource() != null) {
            if (!(config.getDataSource() instanceof BaseDataSource)) {
                throw new IllegalArgumentException("connbudget: the pool's DataSource is not pgjdbc's, so it cannot "
                        + "give the pool's identity; use a jdbcUrl or a PGSimpleDataSource");
            }
            BaseDataSource pg = (BaseDataSource) config.getDataSource();
            pg.setApplicationName(id.application);
            if (pg.getAssumeMinServerVersion() == null) {
                pg.setAssumeMinServerVersion(STARTUP_APPLICATION_NAME);
            }
            pg.setOptions(id.mergeOptions(pg.getOptions()));
            driver = config.getDataSource();
        } else if (config.getDataSourceClassName() != null) {
            props.setProperty("applicationName", id.application);
            props.setProperty("options", id.mergeOptions(props.getProperty("options")));
            props.putIfAbsent("assumeMinServerVersion", STARTUP_APPLICATION_NAME);
            try {
                driver = Class.forName(config.getDataSourceClassName()).asSubclass(DataSource.class)
                        .getDeclaredConstructor().newInstance();
            } catch (ReflectiveOperationException | ClassCastException e) {
                throw new IllegalArgumentException("connbudget: cannot make a " + config.getDataSourceClassName(), e);
            }
            PropertyElf.setTargetFromProperties(driver, props);
            config.setDataSourceClassName(null);
        } else if (config.getJdbcUrl() != null) {
            // pgjdbc takes a URL's parameters over its properties: the
            // identity goes into the properties, after any options of the URL
            String[] url = Identity.withoutIdentity(config.getJdbcUrl());
            String own = props.getProperty("options");
            String user = url[1] == null ? own : own == null ? url[1] : url[1] + " " + own;
            props.remove("applicationName");
            props.setProperty("ApplicationName", id.application);
            props.setProperty("options", id.mergeOptions(user));
            if (!url[0].contains("assumeMinServerVersion=")) {
                props.putIfAbsent("assumeMinServerVersion", STARTUP_APPLICATION_NAME);
            }
            driver = new DriverDataSource(url[0], config.getDriverClassName(), props, config.getUsername(),
                    config.getPassword());
        } else {
            throw new IllegalArgumentException("connbudget: set the pool's jdbcUrl (or its DataSource) before "
                    + "ConnBudget.configure()");
        }
        config.setMaximumPoolSize(max);
        config.setMinimumIdle(1);
        config.setDataSource(new BudgetDataSource(driver, id, max, min,
                options.fixedSize > 0 ? options.fixedSize : max, options.refreshMs, config.getConnectionTimeout()));
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
        BudgetDataSource source = (BudgetDataSource) ds.getDataSource();
        HikariPoolMXBean pool = ds.getHikariPoolMXBean();
        if (!(pool instanceof HikariPool)) {
            throw new IllegalStateException("connbudget: the pool has not started; make it with new HikariDataSource(config)");
        }
        ConnBudget budget;
        synchronized (source) {
            if (source.budget != null) {
                throw new IllegalStateException("connbudget: this pool follows its share already");
            }
            budget = new ConnBudget(ds, (HikariPool) pool, source);
            source.connectWaitMs = ds.getConnectionTimeout();
            source.budget = budget;
        }
        budget.start();
        return budget;
    }

    private final HikariDataSource ds;
    private final HikariPool pool;
    private final BudgetDataSource source;
    private final ScheduledThreadPoolExecutor executor;
    private final AtomicInteger ours = new AtomicInteger();  // connections the adapter borrows
    private final AtomicReference<Handoff> handoff = new AtomicReference<>();  // a refresh waiting for one
    private volatile boolean closed;
    private ObjectName mbean;

    // what the refreshes found, under this object's lock
    private String status = "starting";
    private Share share;
    private int protocol;
    private long probedAt;
    private int lastDemand = -1;
    private int intervalPeak;
    private final int[] peaks = new int[PEAK_WINDOW];
    private int peakNext;
    private long rotatedAt;
    private String lastBad;
    private final Map<String, Long> errors = new TreeMap<>();
    private long refreshes;
    private long skipped;
    private long evictions;
    private boolean evictingIdle;
    private volatile int appliedMax;
    private volatile int appliedMin;

    private ConnBudget(HikariDataSource ds, HikariPool pool, BudgetDataSource source) {
        this.ds = ds;
        this.pool = pool;
        this.source = source;
        this.appliedMax = ds.getMaximumPoolSize();
        this.appliedMin = ds.getMinimumIdle();
        this.executor = new ScheduledThreadPoolExecutor(2, task -> {
            Thread t = new Thread(task, "connbudget " + ds.getPoolName());
            t.setDaemon(true);
            return t;
        });
        this.executor.setRemoveOnCancelPolicy(true);
    }

    /** Starts sampling and refreshing; with setRegisterMbeans(true), registers the MXBean
        org.connbudget:type=ConnBudget,pool="poolName" beside HikariCP's own. */
    private void start() {
        resize();
        schedule(this::sample, 0);
        schedule(this::refresh, 0);
        if (ds.isRegisterMbeans()) {
            try {
                mbean = new ObjectName("org.connbudget:type=ConnBudget,pool=" + ObjectName.quote(ds.getPoolName()));
                ManagementFactory.getPlatformMBeanServer().registerMBean(this, mbean);
            } catch (Exception e) {
                LOG.log(Level.WARNING, "connbudget: the MXBean was not registered", e);
                mbean = null;
            }
        }
    }

    private void schedule(Runnable task, long delayMs) {
        try {
            executor.schedule(task, delayMs, TimeUnit.MILLISECONDS);
        } catch (RejectedExecutionException e) {
            // closing
        }
    }

    /** The refresh interval: the configured one, else the server's, else 1 s; 30 s without connbudget. */
    synchronized long intervalMs() {
        if (source.configuredRefreshMs > 0) {
            return source.configuredRefreshMs;
        }
        if (NO_EXTENSION.equals(status)) {
            return PROBE_MS;
        }
        return share != null ? share.refreshMs : 1000;
    }

    /** The pool's maximum now: its share within its own maximum; one before the first share; a fixed
        size without a share. HikariCP cannot hold 0: with a share of 0 it holds one, and refusals of
        more are backpressure. */
    private synchronized int limitLocked() {
        if (NO_EXTENSION.equals(status) || Share.OTHER.equals(status)) {
            return Math.max(1, source.fixedSize);
        }
        return share == null ? 1 : Math.max(1, Math.min(share.maxSize, source.userMax));
    }

    /** The busiest moment (in use plus waiting) of this refresh interval and the 5 before, plus 25%
        headroom (at least 1), at least the pool's minimum and min_size, at most its maximum. */
    private synchronized int demandLocked() {
        int busy = intervalPeak;
        for (int p : peaks) {
            busy = Math.max(busy, p);
        }
        int demand = Math.max(busy + Math.max(1, (busy * 25 + 99) / 100), source.userMin);
        if (share != null) {
            demand = Math.max(demand, share.minSize);
        }
        return Math.min(demand, source.userMax);
    }

    /** Connections in use plus callers waiting for one, not counting the adapter's own borrows. */
    private int busyNow() {
        return Math.max(0, pool.getActiveConnections() + pool.getThreadsAwaitingConnection() - ours.get());
    }

    /** Samples the pool's use and keeps its size, every 100 ms (or a quarter of a shorter interval). */
    private void sample() {
        if (ds.isClosed()) {
            stop();  // closed without close(): nothing to follow any more
            return;
        }
        try {
            int busy = busyNow();
            synchronized (this) {
                intervalPeak = Math.max(intervalPeak, busy);
            }
            resize();
        } catch (RuntimeException e) {
            LOG.log(Level.WARNING, "connbudget: sampling the pool failed", e);
        } finally {
            if (!closed) {
                schedule(this::sample, Math.max(10, Math.min(100, intervalMs() / 4)));
            }
        }
    }

    /**
     * Sets maximumPoolSize to the limit and minimumIdle to what the pool may
     * keep (HikariCP reads both at run time). HikariCP itself only stops
     * opening connections beyond the maximum, so while it holds more,
     * shrinkLocked() closes the surplus. HikariCP opens no new connection
     * while it holds its maximum, so the pool falls to its limit and stays
     * there.
     */
    private synchronized void resize() {
        int limit = limitLocked();
        int min = Math.min(Math.max(source.userMin, share != null ? share.minSize : 0), limit);
        HikariConfigMXBean config = ds.getHikariConfigMXBean();
        if (limit < appliedMax) {
            config.setMinimumIdle(min);
            config.setMaximumPoolSize(limit);
        } else if (limit != appliedMax || min != appliedMin) {
            config.setMaximumPoolSize(limit);
            config.setMinimumIdle(min);
        }
        appliedMax = limit;
        appliedMin = min;
        if (!closed && pool.getTotalConnections() > limit) {
            shrinkLocked();
        }
    }

    /**
     * Closes the surplus and only the surplus: idle connections at once
     * (evictIdle), those in use as their callers give them back (retire).
     * Without HikariCP's own mark of one connection (another HikariCP) it
     * evicts them all, as softEvictConnections() does.
     */
    private void shrinkLocked() {
        if (MARK == null) {
            pool.softEvictConnections();
            evictions++;
        } else if (!evictingIdle && idleToClose()) {
            evictingIdle = true;
            schedule(this::evictIdle, 0);
        }
    }

    /**
     * A caller gives conn back (in HikariCP's close(), before HikariCP takes
     * it back): while the pool holds more than its limit, and its idle
     * connections do not make up for that, marks conn as
     * softEvictConnections() marks them all, so that HikariCP closes it
     * when it is next borrowed, before anyone uses it again; it opens none
     * in its place while the pool holds its maximum. HikariCP's connections
     * and that mark are not public.
     */
    void retire(Connection conn) {
        if (MARK == null || closed || pool.getTotalConnections() <= appliedMax) {
            return;
        }
        synchronized (this) {
            try {
                if (pool.getTotalConnections() - marked(bag().values()) - pool.getIdleConnections() <= appliedMax) {
                    return;
                }
                for (Object entry : bag().values(ConcurrentBag.IConcurrentBagEntry.STATE_IN_USE)) {
                    if (CONNECTION.get(entry) == conn) {
                        MARK.invoke(entry);
                        evictions++;
                        return;
                    }
                }
            } catch (ReflectiveOperationException | RuntimeException e) {
                LOG.log(Level.FINE, "connbudget: marking a connection to close failed", e);
            }
        }
    }

    private ConcurrentBag<?> bag() throws ReflectiveOperationException {
        return (ConcurrentBag<?>) BAG.get(pool);
    }

    /** How many of entries are marked to be closed when next borrowed. */
    private static int marked(List<?> entries) throws ReflectiveOperationException {
        int n = 0;
        for (Object entry : entries) {
            n += (Boolean) MARKED.invoke(entry) ? 1 : 0;
        }
        return n;
    }

    /** Are there idle connections above the limit and not marked yet, or idle ones marked? */
    private synchronized boolean idleToClose() {
        try {
            return pool.getIdleConnections() > 0 && (pool.getTotalConnections() - marked(bag().values()) > appliedMax
                    || marked(bag().values(ConcurrentBag.IConcurrentBagEntry.STATE_NOT_IN_USE)) > 0);
        } catch (ReflectiveOperationException | RuntimeException e) {
            return false;
        }
    }

    /** Borrows idle connections while some are to close (idleToClose): closes each one above the limit
        and not marked yet (evictConnection), and gives the others back once done; HikariCP closes a
        marked one it draws, and draws another. */
    private void evictIdle() {
        List<Connection> kept = new ArrayList<>();
        ours.incrementAndGet();
        try {
            while (!closed && idleToClose()) {
                Connection conn = pool.getConnection(20);
                synchronized (this) {
                    if (pool.getTotalConnections() - marked(bag().values()) > appliedMax) {
                        ds.evictConnection(conn);  // closed by HikariCP: its proxy is not given back
                        evictions++;
                        continue;
                    }
                }
                kept.add(conn);
            }
        } catch (SQLException | ReflectiveOperationException | RuntimeException e) {
            // none idle after all, or closing: the next sample looks again
        } finally {
            for (Connection conn : kept) {
                try {
                    conn.close();
                } catch (SQLException e) {
                    // HikariCP gives it back all the same
                }
            }
            ours.decrementAndGet();
            synchronized (this) {
                evictingIdle = false;
            }
        }
    }

    /** One publish period: a tenth of the refresh interval, 10 ms to 1 s. */
    static long publishPeriodMs(long intervalMs) {
        return Math.min(1000, Math.max(10, intervalMs / 10));
    }

    private static long jitter(long ms, int lo, int hi) {
        return ms * (lo + ThreadLocalRandom.current().nextInt(hi - lo + 1)) / 100;
    }

    /**
     * Reports the demand and reads the share (docs/protocol.md, sections 2
     * to 5) on one of the pool's own connections, and schedules the next
     * refresh. While all are in use it runs on the next one a caller gives
     * back, in that caller's close() (see onReturn): in HikariCP a caller
     * that gives one back and asks again at once takes it again before a
     * refresh waiting in line wakes. When none comes within an interval the
     * refresh is skipped and counted.
     */
    private void refresh() {
        long next;
        try {
            Handoff h;
            synchronized (this) {
                h = new Handoff(protocol == 1 && System.nanoTime() - probedAt < TimeUnit.MILLISECONDS.toNanos(PROBE_MS)
                        ? 1 : 2, demandLocked(), intervalMs());
            }
            Answer answer = askOnPoolConnection(h, Math.max(h.interval, 100));
            synchronized (this) {
                if (answer == null) {
                    skipped += h.failed ? 0 : 1;
                    next = jitter(h.interval, 90, 110);
                } else {
                    next = take(answer, h.protocol == 2, h.demand);
                }
            }
            resize();
        } catch (RuntimeException e) {
            LOG.log(Level.WARNING, "connbudget: refreshing the share failed", e);
            next = jitter(intervalMs(), 90, 110);
        }
        if (!closed) {
            schedule(this::refresh, next);
        }
    }

    /** A refresh to be run: what to report, and, once run, the answer. */
    private static final class Handoff {
        final int protocol;
        final int demand;
        final long interval;
        final CountDownLatch done = new CountDownLatch(1);
        volatile Answer answer;
        boolean failed;  // no connection, for another reason than a busy pool

        Handoff(int protocol, int demand, long interval) {
            this.protocol = protocol;
            this.demand = demand;
            this.interval = interval;
        }
    }

    /**
     * Runs the refresh on the first pool connection that comes within wait
     * ms: one a caller gives back (onReturn); or one borrowed while one is
     * idle, or, while no caller waits, a new one. Null when none came (or
     * the borrow failed: then h.failed, counted as an error).
     */
    private Answer askOnPoolConnection(Handoff h, long wait) {
        handoff.set(h);
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(wait);
        try {
            for (long left = wait; left > 0 && !closed && h.done.getCount() > 0;
                    left = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime())) {
                boolean idle = pool.getIdleConnections() > 0;
                if (!idle && (pool.getTotalConnections() >= appliedMax || pool.getThreadsAwaitingConnection() > 0)) {
                    h.done.await(Math.min(20, left), TimeUnit.MILLISECONDS);  // busy: wait for one given back
                } else if (borrowAndAsk(h, idle ? Math.min(20, left) : left)) {
                    break;
                }
            }
            if (h.done.getCount() == 0 || handoff.compareAndSet(h, null)) {
                return h.answer;  // run, or no connection came
            }
            h.done.await();  // a caller runs it right now
        } catch (InterruptedException e) {
            handoff.compareAndSet(h, null);
            Thread.currentThread().interrupt();
        }
        return h.answer;
    }

    /** Borrows a connection for up to wait ms and runs h on it unless a caller took h first;
        true when done with h: it ran, or the borrow failed for another reason than a busy pool. */
    private boolean borrowAndAsk(Handoff h, long wait) {
        ours.incrementAndGet();
        try (Connection conn = pool.getConnection(wait)) {
            if (handoff.compareAndSet(h, null)) {
                h.answer = ask(conn, h.protocol, h.demand, h.interval);
                h.done.countDown();
                return true;
            }
            return false;
        } catch (SQLException e) {
            Throwable cause = e.getCause();
            if (closed || e instanceof SQLTransientConnectionException && (cause == null
                    || cause instanceof RefusedException && !((RefusedException) cause).isPermanent())) {
                return false;  // a busy pool, or its connects refused with 53300: skipped
            }
            h.failed = true;
            synchronized (this) {
                if (cause instanceof RefusedException) {
                    errors.merge("refused", 1L, Long::sum);  // logged where the connect was refused
                } else {
                    fail("connect", "no connection to refresh the share with: "
                            + (cause != null ? cause.getMessage() : e.getMessage()));
                }
            }
            return true;
        } finally {
            ours.decrementAndGet();
        }
    }

    /** A caller gives conn back to the pool: a refresh that waits for a connection runs on it, one
        round trip, if it is outside any transaction (else that refresh is skipped). */
    void onReturn(Connection conn) {
        Handoff h = handoff.get();
        if (h == null || !handoff.compareAndSet(h, null)) {
            return;
        }
        try {
            if (!(conn instanceof BaseConnection)
                    || ((BaseConnection) conn).getTransactionState() == TransactionState.IDLE) {
                h.answer = ask(conn, h.protocol, h.demand, h.interval);
            }
        } catch (RuntimeException e) {
            LOG.log(Level.WARNING, "connbudget: refreshing the share failed", e);
        } finally {
            h.done.countDown();
        }
    }

    /** What a refresh found: a share, an answer that is not one, or an error. */
    private static final class Answer {
        int protocol;
        Share share;
        Share.Invalid invalid;
        SQLException error;
    }

    /** Runs the protocol's query on conn: protocol 2, or 1 when told so or when the server does not know 2. */
    private static Answer ask(Connection conn, int protocol, int demand, long interval) {
        Answer a = new Answer();
        a.protocol = protocol;
        int timeout = (int) Math.min(5, Math.max(1, (interval + 999) / 1000));  // seconds
        boolean autoCommit = true;
        try {
            autoCommit = conn.getAutoCommit();
            if (protocol == 2) {
                try {
                    a.share = Share.parse(queryOneRow(conn, SHARE_SQL, 2, Integer.toString(demand), timeout)[1]);
                } catch (SQLException e) {
                    if (!"42704".equals(e.getSQLState()) && !"42602".equals(e.getSQLState())) {
                        throw e;
                    }
                    if (!autoCommit) {
                        conn.rollback();
                    }
                    a.protocol = 1;  // connbudget 1.1 or older, or none
                }
            }
            if (a.protocol == 1) {
                a.share = Share.parsePoolShare(queryOneRow(conn, POOL_SHARE_SQL, 4, demand, timeout));
            }
        } catch (Share.Invalid e) {
            a.invalid = e;
        } catch (SQLException e) {
            a.error = e;
        }
        if (!autoCommit) {
            // a report in a transaction that rolls back is undone
            try {
                if (a.error == null) {
                    conn.commit();
                } else {
                    conn.rollback();
                }
            } catch (SQLException e) {
                a.error = a.error != null ? a.error : e;
            }
        }
        return a;
    }

    /** The one row of columns columns that query answers, as text. */
    private static String[] queryOneRow(Connection conn, String query, int columns, Object demand, int timeout)
            throws SQLException, Share.Invalid {
        try (PreparedStatement st = conn.prepareStatement(query)) {
            st.setQueryTimeout(timeout);
            st.setObject(1, demand);
            try (ResultSet rs = st.executeQuery()) {
                int n = rs.getMetaData().getColumnCount();
                if (n != columns) {
                    throw new Share.Invalid(Share.BAD_SHAPE, "the share query answered " + n + " columns, not " + columns);
                }
                String[] row = new String[columns];
                int rows = 0;
                while (rs.next()) {
                    if (rows++ == 0) {
                        for (int i = 0; i < columns; i++) {
                            row[i] = rs.getString(i + 1);
                        }
                    }
                }
                if (rows != 1) {
                    throw new Share.Invalid(Share.BAD_SHAPE, "the share query answered " + rows + " rows, not 1");
                }
                return row;
            }
        }
    }

    /**
     * Takes in what a refresh found and returns the time until the next one.
     * An answer that is not one is an error, never a size: the pool keeps
     * its last good share (before one, a single connection).
     */
    private long take(Answer a, boolean tried2, int demand) {
        long now = System.nanoTime();
        if (tried2) {
            if (a.error == null || a.protocol == 1) {  // a failed query says nothing of the protocol
                protocol = a.protocol;
            }
            probedAt = now;
        }
        long interval = intervalMs();
        String who = "pod " + Share.quote(source.identity.pod) + " of " + Share.quote(source.identity.application);
        if (a.invalid != null) {
            fail(a.invalid.kind, a.invalid.getMessage() + "; ignored, the pool stays within " + limitLocked()
                    + " connections");
            return jitter(interval, 90, 110);
        }
        if (a.error != null) {
            if (String.valueOf(a.error.getSQLState()).matches("42883|3F000|55000|42704|42602")) {
                errors.merge(NO_EXTENSION, 1L, Long::sum);
                if (!NO_EXTENSION.equals(status)) {
                    status = NO_EXTENSION;
                    LOG.log(Level.WARNING, "connbudget: the server has no usable connbudget extension ({0}); {1} uses "
                            + "a fixed size of {2}", new Object[] {a.error.getMessage(), who, limitLocked()});
                }
                protocol = 0;
                return jitter(intervalMs(), 90, 110);
            }
            fail("query", "reading the share failed: " + a.error.getMessage());
            return jitter(interval, 90, 110);
        }
        refreshes++;
        lastBad = null;
        Share sh = a.share;
        if (!Share.OK.equals(sh.status)) {
            if (Share.REFUSED.equals(sh.status)) {
                errors.merge("refused", 1L, Long::sum);
            }
            if (!sh.status.equals(status) && !Share.LEFT.equals(sh.status)) {
                LOG.log(Level.WARNING, Share.OTHER.equals(sh.status)
                        ? "connbudget: the server does not govern {0} (no row in connbudget.application_limits): "
                                + "a fixed size of {3}"
                        : "connbudget: the server no longer gives {0} a share ({1} {2}); the pool stays within {3}",
                        new Object[] {who, sh.sqlstate, sh.reason, Share.OTHER.equals(sh.status)
                                ? source.fixedSize : limitLocked()});
            }
            status = sh.status;  // left: handed back elsewhere in this session; the next report brings it back
            return Share.REFUSED.equals(sh.status) ? jitter(interval, 1000, 1100) : jitter(interval, 90, 110);
        }
        boolean first = lastDemand < 0;
        boolean changed = !first && demand != lastDemand;
        if (share == null || share.maxSize != sh.maxSize) {
            LOG.log(Level.FINE, "connbudget: {0}: share {1} (demand {2})", new Object[] {who, sh.maxSize, demand});
        }
        status = Share.OK;
        share = sh;
        lastDemand = demand;
        interval = intervalMs();
        if (now - rotatedAt >= TimeUnit.MILLISECONDS.toNanos(interval) / 10 * 9) {
            peaks[peakNext] = intervalPeak;
            peakNext = (peakNext + 1) % PEAK_WINDOW;
            intervalPeak = busyNow();
            rotatedAt = now;
        }
        if (changed) {
            // the answer is the allocation from before the new demand: ask
            // again once the server has published one that knows it
            return publishPeriodMs(interval);
        }
        if (first) {
            return jitter(interval, 10, 100);  // pools started together do not refresh in step
        }
        return sh.maxSize == 0 ? jitter(interval, 100, 120) : jitter(interval, 90, 110);
    }

    /** Counts an error of a kind and logs it, once until the kind changes or a good answer comes. */
    private void fail(String kind, String message) {
        errors.merge(kind, 1L, Long::sum);
        if (!kind.equals(lastBad)) {
            LOG.log(Level.WARNING, "connbudget: pod {0} of {1}: {2}", new Object[] {
                    Share.quote(source.identity.pod), Share.quote(source.identity.application), message});
        }
        lastBad = kind;
    }

    /** Does the pool still want the connection a refused connect was for? */
    boolean wantsConnection() {
        return !closed && !ds.isClosed() && pool.getTotalConnections() < appliedMax
                && (pool.getThreadsAwaitingConnection() > 0 || pool.getIdleConnections() < appliedMin);
    }

    /**
     * Hands the share back ({@code SET connbudget.demand = 'leave'}; protocol
     * 1: {@code connbudget.pool_share(0)}) on one of the pool's connections,
     * so that the other pods are given it within a publish period instead of
     * connbudget.pod_ttl later, then closes the pool.
     */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        stop();
        try {
            executor.awaitTermination(intervalMs() + 1000, TimeUnit.MILLISECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        int speaks;
        synchronized (this) {
            speaks = NO_EXTENSION.equals(status) || Share.OTHER.equals(status) ? 0 : protocol == 1 ? 1 : 2;
        }
        if (speaks != 0 && !ds.isClosed()) {
            try (Connection conn = connectionToLeaveWith(); Statement st = conn.createStatement()) {
                st.setQueryTimeout(1);
                st.execute(speaks == 2 ? "SET connbudget.demand = 'leave'" : "SELECT connbudget.pool_share(0)");
                if (!conn.getAutoCommit()) {
                    conn.commit();
                }
            } catch (SQLException e) {
                LOG.log(Level.FINE, "connbudget: handing the share back failed", e);
            }
        }
        ds.close();
    }

    /** One of the pool's connections, or, when none comes free in a second, one opened for leaving. */
    private Connection connectionToLeaveWith() throws SQLException {
        try {
            return pool.getConnection(Math.min(1000, ds.getConnectionTimeout()));
        } catch (SQLException e) {
            return source.connectOnce(ds.getUsername(), ds.getPassword());
        }
    }

    /** Stops following the share and unregisters the MXBean. */
    private synchronized void stop() {
        if (executor.isShutdown()) {
            return;
        }
        closed = true;
        source.closed = true;
        executor.shutdownNow();
        if (mbean != null) {
            try {
                ManagementFactory.getPlatformMBeanServer().unregisterMBean(mbean);
            } catch (Exception e) {
                // gone already
            }
        }
    }

    @Override
    public synchronized String getStatus() { return status; }

    @Override
    public synchronized int getShare() { return share != null ? share.maxSize : -1; }

    @Override
    public synchronized int getMinSize() { return share != null ? share.minSize : -1; }

    @Override
    public synchronized int getBudget() { return share != null ? share.budget : -1; }

    @Override
    public synchronized int getAllocation() { return share != null ? share.allocation : -1; }

    @Override
    public synchronized int getPods() { return share != null ? share.pods : -1; }

    @Override
    public long getRefreshMs() { return intervalMs(); }

    @Override
    public int getLimit() { return appliedMax; }

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
    public synchronized int getProtocol() { return protocol; }

    @Override
    public String getApplicationName() { return source.identity.application; }

    @Override
    public String getPod() { return source.identity.pod; }

    @Override
    public String getPoolSession() { return source.identity.session; }

    @Override
    public String toString() {
        return "ConnBudget{pod=" + Share.quote(getPod()) + ", status=" + getStatus() + ", share=" + getShare()
                + ", minSize=" + getMinSize() + ", limit=" + getLimit() + ", demand=" + getDemand() + ", refreshes="
                + getRefreshes() + ", skipped=" + getSkippedRefreshes() + ", errors=" + getErrors() + ", evictions="
                + getEvictions() + ", refusedConnects=" + getRefusedConnects() + ", permanentRefusals="
                + getPermanentRefusals() + "}";
    }
}
