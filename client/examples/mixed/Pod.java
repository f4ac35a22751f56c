// A pod of the mixed fleet in Java: a HikariCP pool that follows its share
// through the connbudget adapter (client/java).
//
//   java Pod APP POD WORKERS LOADFILE STATUSFILE
//
// WORKERS threads each take a connection, run a 20 ms query, give it back
// and pause a little; how many of them are busy is read from LOADFILE ten
// times a second. Four times a second the pod writes "share pool_size
// served errors" to STATUSFILE. The server is the libpq environment's
// (PGHOST, PGPORT, PGUSER, PGDATABASE). SIGTERM closes the pool, which
// hands the share back.

import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.sql.Connection;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.connbudget.hikari.ConnBudget;

public final class Pod {
    private Pod() { }

    static int readLoad(Path file, int last) {
        try {
            return Integer.parseInt(new String(Files.readAllBytes(file), StandardCharsets.US_ASCII).trim());
        } catch (Exception e) {
            return last;
        }
    }

    public static void main(String[] args) throws Exception {
        String app = args[0], pod = args[1];
        int workers = Integer.parseInt(args[2]);
        Path loadfile = Paths.get(args[3]), statusfile = Paths.get(args[4]);
        Path tmp = Paths.get(args[4] + ".tmp");
        String env = System.getenv("PGHOST");
        String url = "jdbc:postgresql://" + (env == null ? "127.0.0.1" : env) + ":"
                + System.getenv().getOrDefault("PGPORT", "5432") + "/"
                + System.getenv().getOrDefault("PGDATABASE", "postgres");

        HikariConfig config = new HikariConfig();
        config.setJdbcUrl(url);
        config.setUsername(System.getenv().getOrDefault("PGUSER", "app"));
        config.setMaximumPoolSize(workers);
        config.setMinimumIdle(1);
        config.setConnectionTimeout(30000);
        config.setPoolName(pod);
        ConnBudget.configure(config, ConnBudget.options().applicationName(app).pod(pod));
        HikariDataSource ds = new HikariDataSource(config);
        ConnBudget budget = ConnBudget.follow(ds);

        AtomicInteger load = new AtomicInteger(readLoad(loadfile, 0));
        AtomicLong served = new AtomicLong(), errors = new AtomicLong();
        AtomicBoolean stopping = new AtomicBoolean();
        List<Thread> threads = new ArrayList<>();
        for (int i = 0; i < workers; i++) {
            final int index = i;
            Thread t = new Thread(() -> {
                while (!stopping.get()) {
                    try {
                        if (index >= load.get()) {
                            Thread.sleep(50);
                            continue;
                        }
                        try (Connection c = ds.getConnection(); Statement s = c.createStatement()) {
                            s.execute("SELECT pg_sleep(0.02)");
                            served.incrementAndGet();
                        } catch (Exception e) {
                            if (errors.incrementAndGet() == 1) {
                                System.err.println(pod + ": query failed: " + e);
                            }
                        }
                        Thread.sleep(ThreadLocalRandom.current().nextInt(10));
                    } catch (InterruptedException e) {
                        return;
                    }
                }
            });
            t.start();
            threads.add(t);
        }
        Thread main = Thread.currentThread();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            stopping.set(true);
            try {
                main.join(10000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }));
        for (int tick = 1; !stopping.get(); tick++) {
            Thread.sleep(100);
            load.set(readLoad(loadfile, load.get()));
            if (tick % 2 == 0) {
                String line = budget.getShare() + " " + budget.getLimit() + " " + served.get() + " "
                        + errors.get() + "\n";
                Files.write(tmp, line.getBytes(StandardCharsets.US_ASCII));
                Files.move(tmp, statusfile, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
            }
        }
        for (Thread t : threads) {
            t.join();
        }
        budget.close();
    }
}
