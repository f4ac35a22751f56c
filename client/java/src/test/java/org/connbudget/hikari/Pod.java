package org.connbudget.hikari;

import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import java.sql.Connection;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Consumer;

/** A test pod: a HikariCP pool of its own pod that follows its share,
    with workers that keep it busy. */
final class Pod implements AutoCloseable {
    final String app;
    final String pod;
    final HikariDataSource ds;
    final ConnBudget budget;
    final AtomicLong done = new AtomicLong();
    final AtomicLong failed = new AtomicLong();
    final AtomicReference<String> lastFailure = new AtomicReference<>();
    private final List<Thread> workers = new ArrayList<>();
    private volatile boolean stop;
    private boolean closed;

    Pod(String app, String pod, Consumer<HikariConfig> tweak) {
        this.app = app;
        this.pod = pod;
        HikariConfig config = new HikariConfig();
        config.setJdbcUrl(Server.url());
        config.setUsername(Server.role());
        config.setPoolName(pod);
        config.setMaximumPoolSize(10);
        config.setConnectionTimeout(10000);
        tweak.accept(config);
        ConnBudget.configure(config, ConnBudget.options().applicationName(app).pod(pod));
        ds = new HikariDataSource(config);
        budget = ConnBudget.follow(ds);
    }

    Pod(String app, String pod) {
        this(app, pod, c -> { });
    }

    /** n workers running sql in a loop; a failed request is counted. */
    Pod work(int n, String sql) {
        for (int i = 0; i < n; i++) {
            Thread t = new Thread(() -> {
                while (!stop) {
                    try (Connection conn = ds.getConnection(); Statement st = conn.createStatement()) {
                        st.execute(sql);
                        done.incrementAndGet();
                    } catch (SQLException e) {
                        failed.incrementAndGet();
                        lastFailure.set(e.toString());
                        Server.sleep(10);
                    }
                }
            }, pod + " worker " + i);
            t.setDaemon(true);
            t.start();
            workers.add(t);
        }
        return this;
    }

    void stopWork() {
        stop = true;
        for (Thread t : workers) {
            try {
                t.join(15000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        workers.clear();
        stop = false;
    }

    /** Its connections and its share on the server, from connbudget.pods: {-1, -1} when not live. */
    int[] onServer() {
        return Server.pod(app, pod);
    }

    int connections() {
        return onServer()[0];
    }

    /** One of the adapter's counters, 0 until it has counted. */
    long count(String name) {
        return budget.getCounters().getOrDefault(name, 0L);
    }

    String failures() {
        return pod + ": " + failed.get() + " of " + (failed.get() + done.get()) + " requests failed, the last with "
                + lastFailure.get();
    }

    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        stopWork();
        budget.close();
    }
}
