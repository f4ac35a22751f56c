#!/usr/bin/env bash
# bench/adapters/java.sh -- the Java adapter's benchmark (client/java, HikariCP):
#
#   (a) overhead: a HikariCP pool of 8 connections that follows a steady
#       share of 8 (its minimumIdle is 8) against the same pool without the
#       adapter, both open all along, a `SELECT 1` loop with 8 threads
#       that switch pools, all together, after every 25 queries each, in
#       the order ABBA... (the runs starting with one and the other in
#       turn); the median of the runs' ratios (goal: at least 0.97);
#   (b) convergence, in refresh intervals: a pod busy at the application's
#       cap of 8 (12 threads), a second pod joins (how long the first stays
#       above its share on the server, and until both hold 4), then leaves
#       (until the first holds 8 again).
#
# Run it from the tree, as root (it installs the Debian packages that are
# missing, builds and installs the extension if it is not installed, and
# runs itself as the postgres user) or as a user that is not root:
#
#   bash bench/adapters/java.sh
#
# It starts a throwaway cluster with the settings below and removes it;
# given one (PGHOST, PGPORT, PGUSER a superuser, and CB_CLUSTER_DIR, as
# test/lib/with-cluster.sh exports them) it uses that. It prints the results
# and a markdown table.
#
# cluster: max_connections=50 superuser_reserved_connections=3 connbudget.reserved_connections=7 connbudget.refresh_interval=200ms connbudget.pod_ttl=2000
#
# Environment: CB_BENCH_RUNS (pairs, default 11), CB_BENCH_SECONDS (seconds
# per run, default 2), CB_BENCH_ROUNDS (rounds of (b), default 5), PG_CONFIG.
# Debian packages: default-jdk-headless libhikaricp-java libpostgresql-jdbc-java.
set -euo pipefail

src=${CB_SRC_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
# shellcheck source=SCRIPTDIR/../../test/lib/setup.sh
source "$src/test/lib/setup.sh"
# shellcheck source=SCRIPTDIR/lib.sh
source "$src/bench/adapters/lib.sh"
adapter_bench_as_postgres "$src/bench/adapters/java.sh" default-jdk-headless libhikaricp-java libpostgresql-jdbc-java

jars=/usr/share/java
adapter_bench_setup "$src/bench/adapters/java.sh" java cbjava
psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
INSERT INTO connbudget.application_limits (application_name, max_connections) VALUES ('bench', NULL), ('converge', 8)
    ON CONFLICT (application_name) DO UPDATE SET max_connections = excluded.max_connections;
SQL

# the adapter, and the benchmark beside it
cp="$jars/HikariCP.jar:$jars/postgresql.jar:$jars/slf4j-api.jar"
mapfile -t sources < <(find "$src/client/java/src/main/java" -name '*.java')
mkdir -p "$work/bench"
cat >"$work/bench/Bench.java" <<'EOF'
import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.connbudget.hikari.ConnBudget;

public class Bench {
    static final long INTERVAL = 200; // connbudget.refresh_interval above
    static final String URL = "jdbc:postgresql://" + System.getenv("PGHOST") + ":" + System.getenv("PGPORT") + "/"
            + System.getenv("PGDATABASE");
    static Connection admin;

    static int env(String name, int otherwise) {
        try {
            return Integer.parseInt(System.getenv(name));
        } catch (RuntimeException e) {
            return otherwise;
        }
    }

    static double median(List<Double> v) {
        double[] s = v.stream().mapToDouble(Double::doubleValue).sorted().toArray();
        return s.length % 2 == 1 ? s[s.length / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
    }

    static double worst(List<Double> v) {
        return v.stream().anyMatch(x -> x < 0) ? -1 : v.stream().mapToDouble(Double::doubleValue).max().orElse(-1);
    }

    static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            throw new IllegalStateException(e);
        }
    }

    /** A pool of 8 connections (at least 8 idle), following its share or not. */
    static HikariDataSource pool(String app, String pod, boolean follow, boolean steady, ConnBudget[] budget) {
        HikariConfig config = new HikariConfig();
        config.setJdbcUrl(URL);
        config.setUsername("cbjava");
        config.setPoolName(pod + (follow ? "" : "-plain"));
        config.setMaximumPoolSize(8);
        if (steady) {
            config.setMinimumIdle(8);
        }
        if (!follow) {
            // the same connections, without the adapter
            config.addDataSourceProperty("ApplicationName", app);
            config.addDataSourceProperty("assumeMinServerVersion", "9.0");
            HikariDataSource ds = new HikariDataSource(config);
            while (ds.getHikariPoolMXBean().getIdleConnections() < 8) {
                sleep(10);
            }
            return ds;
        }
        ConnBudget.configure(config, ConnBudget.options().applicationName(app).pod(pod));
        HikariDataSource ds = new HikariDataSource(config);
        budget[0] = ConnBudget.follow(ds);
        while (steady && (budget[0].getLimit() != 8 || ds.getHikariPoolMXBean().getIdleConnections() < 8)) {
            sleep(10);
        }
        return ds;
    }

    static final com.sun.management.OperatingSystemMXBean OS =
            (com.sun.management.OperatingSystemMXBean) java.lang.management.ManagementFactory.getOperatingSystemMXBean();
    static double cpuPerQuery;  // of the last rate(): the JVM's CPU time per query, in microseconds

    static final int PER_SLICE = 25;  // queries each thread runs on one pool before they all switch
    static final double[] cpuPer = new double[2];  // of the last compare(): the JVM's CPU per query, in microseconds

    /**
     * The same 8 threads run SELECT 1 through one pool, then the other, in short slices (PER_SLICE queries
     * each, all threads together) in the order ABBA..., starting with pools[first], for ms on each, so that
     * whatever else the machine does falls on both alike: queries per second through each.
     */
    static double[] compare(HikariDataSource[] pools, long ms, int first) throws Exception {
        HikariDataSource[] current = new HikariDataSource[1];
        CyclicBarrier barrier = new CyclicBarrier(9);
        List<Thread> threads = new ArrayList<>();
        for (int i = 0; i < 8; i++) {
            Thread t = new Thread(() -> {
                try {
                    while (true) {
                        barrier.await();  // a slice starts
                        HikariDataSource ds = current[0];
                        if (ds == null) {
                            return;
                        }
                        for (int q = 0; q < PER_SLICE; q++) {
                            try (Connection c = ds.getConnection(); Statement st = c.createStatement();
                                    ResultSet rs = st.executeQuery("SELECT 1")) {
                                rs.next();
                            }
                        }
                        barrier.await();  // and ends when every thread has done its part
                    }
                } catch (Exception e) {
                    throw new IllegalStateException(e);
                }
            });
            t.start();
            threads.add(t);
        }
        long[] spent = new long[2];
        long[] cpu = new long[2];
        long[] done = new long[2];
        for (int s = 0; spent[0] + spent[1] < 2 * ms * 1_000_000L; s++) {
            int k = first ^ (s % 4 == 1 || s % 4 == 2 ? 1 : 0);
            current[0] = pools[k];
            long t0 = System.nanoTime();
            long c0 = OS.getProcessCpuTime();
            barrier.await();
            barrier.await();
            spent[k] += System.nanoTime() - t0;
            cpu[k] += OS.getProcessCpuTime() - c0;
            done[k] += 8 * PER_SLICE;
        }
        current[0] = null;
        barrier.await();
        for (Thread t : threads) {
            t.join();
        }
        for (int k = 0; k < 2; k++) {
            cpuPer[k] = cpu[k] / 1e3 / done[k];
        }
        return new double[] {done[0] / (spent[0] / 1e9), done[1] / (spent[1] / 1e9)};
    }

    /** SELECT 1 in 8 threads for a warm-up and then ms; queries per second. */
    static double rate(HikariDataSource ds, long ms) throws InterruptedException {
        AtomicLong n = new AtomicLong();
        AtomicBoolean counting = new AtomicBoolean();
        AtomicBoolean stop = new AtomicBoolean();
        List<Thread> threads = new ArrayList<>();
        for (int i = 0; i < 8; i++) {
            Thread t = new Thread(() -> {
                while (!stop.get()) {
                    try (Connection c = ds.getConnection(); Statement st = c.createStatement();
                            ResultSet rs = st.executeQuery("SELECT 1")) {
                        rs.next();
                        if (counting.get()) {
                            n.incrementAndGet();
                        }
                    } catch (SQLException e) {
                        throw new IllegalStateException(e);
                    }
                }
            });
            t.start();
            threads.add(t);
        }
        Thread.sleep(500);
        counting.set(true);
        long start = System.nanoTime();
        long cpu = OS.getProcessCpuTime();
        Thread.sleep(ms);
        counting.set(false);
        cpuPerQuery = (OS.getProcessCpuTime() - cpu) / 1e3 / Math.max(1, n.get());
        double q = n.get() / ((System.nanoTime() - start) / 1e9);
        stop.set(true);
        for (Thread t : threads) {
            t.join();
        }
        return q;
    }

    static int[] pod(String app, String pod) {
        try (PreparedStatement st = admin.prepareStatement(
                "SELECT connections, share FROM connbudget.pods WHERE application_name = ? AND pod = ?")) {
            st.setString(1, app);
            st.setString(2, pod);
            try (ResultSet rs = st.executeQuery()) {
                return rs.next() ? new int[] {rs.getInt(1), rs.getInt(2)} : new int[] {-1, -1};
            }
        } catch (SQLException e) {
            throw new IllegalStateException(e);
        }
    }

    static List<Thread> busy(HikariDataSource ds, AtomicBoolean stop) {
        List<Thread> threads = new ArrayList<>();
        for (int i = 0; i < 12; i++) {
            Thread t = new Thread(() -> {
                while (!stop.get()) {
                    try (Connection c = ds.getConnection(); Statement st = c.createStatement()) {
                        st.execute("SELECT pg_sleep(0.005)");
                    } catch (SQLException e) {
                        throw new IllegalStateException(e);
                    }
                }
            });
            t.start();
            threads.add(t);
        }
        return threads;
    }

    static double intervals(long ms) {
        return ms < 0 ? -1 : ms / (double) INTERVAL;
    }

    public static void main(String[] args) throws Exception {
        Locale.setDefault(Locale.ROOT);
        admin = DriverManager.getConnection(URL + "?user=" + System.getenv("PGUSER") + "&ApplicationName=bench-admin");
        int runs = env("CB_BENCH_RUNS", 11);
        int seconds = env("CB_BENCH_SECONDS", 2);
        int rounds = env("CB_BENCH_ROUNDS", 5);

        System.out.printf("== (a) overhead: 8 connections, 8 threads, SELECT 1, %d pairs of %d s in rotated order%n",
                runs, seconds);
        // both pools open side by side all along (16 connections): the one
        // that follows its share refreshes it meanwhile, as in production
        ConnBudget[] budget = new ConnBudget[1];
        HikariDataSource following = pool("bench", "bench-pod", true, true, budget);
        HikariDataSource plain = pool("bench", "bench-pod", false, true, null);
        rate(following, 1000);  // warm the JIT for both
        rate(plain, 1000);
        List<Double> with = new ArrayList<>();
        List<Double> without = new ArrayList<>();
        List<Double> ratios = new ArrayList<>();
        List<Double> cpuWith = new ArrayList<>();
        List<Double> cpuWithout = new ArrayList<>();
        for (int i = 0; i < runs; i++) {
            double[] q = compare(new HikariDataSource[] {following, plain}, seconds * 1000L, i % 2);
            double w = q[0];
            double wo = q[1];
            cpuWith.add(cpuPer[0]);
            cpuWithout.add(cpuPer[1]);
            System.out.printf("run %d: with the adapter %.0f q/s (%.1f us CPU per query in the JVM), without %.0f q/s "
                    + "(%.1f us), ratio %.3f%n", i + 1, w, cpuWith.get(i), wo, cpuWithout.get(i), w / wo);
            with.add(w);
            without.add(wo);
            ratios.add(w / wo);
        }
        if (budget[0].getShare() < 8 || budget[0].getLimit() != 8) {
            throw new IllegalStateException("the share was not steady at 8: " + budget[0]);
        }
        System.out.println("the adapter meanwhile: " + budget[0]);
        budget[0].close();
        plain.close();
        double ratio = median(ratios);
        System.out.printf("median ratio %.3f (goal: at least 0.97); the JVM's CPU per query, median: %.1f us with "
                + "the adapter, %.1f us without%n", ratio, median(cpuWith), median(cpuWithout));

        System.out.printf("%n== (b) convergence: cap 8, pod a busy, pod b joins and leaves, %d rounds (refresh interval "
                + "%d ms)%n", rounds, INTERVAL);
        List<Double> above = new ArrayList<>();
        List<Double> join = new ArrayList<>();
        List<Double> leave = new ArrayList<>();
        ConnBudget[] budgetA = new ConnBudget[1];
        HikariDataSource a = pool("converge", "conv-a", true, false, budgetA);
        AtomicBoolean stopA = new AtomicBoolean();
        List<Thread> threadsA = busy(a, stopA);
        while (pod("converge", "conv-a")[0] != 8) {
            sleep(10);
        }
        for (int r = 0; r < rounds; r++) {
            ConnBudget[] budgetB = new ConnBudget[1];
            HikariDataSource b = pool("converge", "conv-b", true, false, budgetB);
            AtomicBoolean stopB = new AtomicBoolean();
            List<Thread> threadsB = busy(b, stopB);
            long joined = System.nanoTime();
            long over = -1;
            long longest = 0;
            long both = -1;
            while (System.nanoTime() - joined < 10 * INTERVAL * 1000000) {
                int[] sa = pod("converge", "conv-a");
                int[] sb = pod("converge", "conv-b");
                long now = System.nanoTime();
                if (sa[0] > sa[1] && over < 0) {
                    over = now;
                } else if (sa[0] <= sa[1] && over >= 0) {
                    longest = Math.max(longest, (now - over) / 1000000);
                    over = -1;
                }
                if (both < 0 && sa[0] == 4 && sa[1] == 4 && sb[0] == 4 && sb[1] == 4) {
                    both = (now - joined) / 1000000;
                }
                sleep(5);
            }
            if (over >= 0) {
                longest = Math.max(longest, (System.nanoTime() - over) / 1000000);
            }
            stopB.set(true);
            for (Thread t : threadsB) {
                t.join();
            }
            long left = System.nanoTime();
            budgetB[0].close();
            long back = -1;
            while (System.nanoTime() - left < 10 * INTERVAL * 1000000) {
                if (pod("converge", "conv-a")[0] == 8) {
                    back = (System.nanoTime() - left) / 1000000;
                    break;
                }
                sleep(5);
            }
            System.out.printf("round %d: pod a above its share for at most %.2f intervals; both at 4 after %.2f; "
                    + "a back at 8 %.2f after b left%n", r + 1, intervals(longest), intervals(both), intervals(back));
            above.add(intervals(longest));
            join.add(intervals(both));
            leave.add(intervals(back));
            sleep(3 * INTERVAL);
        }
        stopA.set(true);
        for (Thread t : threadsA) {
            t.join();
        }
        budgetA[0].close();

        StringBuilder table = new StringBuilder();
        table.append("| pool | with the adapter (q/s, median) | without (q/s, median) | median ratio of the pairs "
                + "| JVM CPU per query, with / without (us, median) |\n");
        table.append("|---|---|---|---|---|\n");
        table.append(String.format("| HikariCP 2.7.9, pgjdbc 42.5, 8 connections | %.0f | %.0f | %.3f | %.1f / %.1f |%n",
                median(with), median(without), ratio, median(cpuWith), median(cpuWithout)));
        table.append("\n| convergence, in refresh intervals (median / worst of the rounds) | |\n|---|---|\n");
        table.append(String.format("| pod b joins: pod a above its share, at most | %.2f / %.2f |%n", median(above),
                worst(above)));
        table.append(String.format("| pod b joins: both hold their share of 4 | %.2f / %.2f |%n", median(join),
                worst(join)));
        table.append(String.format("| pod b leaves: pod a holds 8 again | %.2f / %.2f |%n", median(leave),
                worst(leave)));
        System.out.printf("%n%s", table);
        admin.close();
    }
}
EOF
javac --release 11 -encoding UTF-8 -d "$work/classes" -cp "$cp" "${sources[@]}" "$work/bench/Bench.java"
echo "== $(nproc) cores, $(uptime | sed 's/.*load average/load average/'), $(date -u +%Y-%m-%d), $(java -version 2>&1 | head -1)"
java -XX:+UseSerialGC -cp "$work/classes:$cp:$jars/slf4j-nop.jar" Bench
