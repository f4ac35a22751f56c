package org.connbudget.hikari;

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.Properties;
import java.util.function.BooleanSupplier;

/**
 * The test server: the libpq environment of a superuser (PGHOST, PGPORT,
 * PGUSER, PGDATABASE), and CONNBUDGET_TEST_ROLE, a LOGIN role that is not a
 * superuser (superusers are never refused); CONNBUDGET_TEST_PASSWORD_ROLE
 * one that logs in with the password CONNBUDGET_TEST_PASSWORD (scram-sha-256).
 * Its refresh interval is 200 ms.
 */
final class Server {
    static final long INTERVAL = 200;
    /** What measuring adds to a deadline, in ms: the sampler's own queries and a busy machine's scheduling. */
    static final long SLACK = 150;
    private static Connection admin;

    private Server() {
    }

    static boolean configured() {
        return System.getenv("CONNBUDGET_TEST_SERVER") != null;
    }

    static String url() {
        return "jdbc:postgresql://" + env("PGHOST", "127.0.0.1") + ":" + env("PGPORT", "5432") + "/"
                + env("PGDATABASE", "postgres");
    }

    static String role() {
        return env("CONNBUDGET_TEST_ROLE", "cbjava");
    }

    /** A LOGIN role that is not a superuser and logs in with the password password(), or null. */
    static String passwordRole() {
        return System.getenv("CONNBUDGET_TEST_PASSWORD_ROLE");
    }

    static String password() {
        return System.getenv("CONNBUDGET_TEST_PASSWORD");
    }

    static String env(String name, String otherwise) {
        String v = System.getenv(name);
        return v == null || v.isEmpty() ? otherwise : v;
    }

    /** The superuser's connection. */
    static synchronized Connection admin() throws SQLException {
        if (admin == null || admin.isClosed() || !admin.isValid(2)) {
            Properties p = new Properties();
            p.setProperty("user", env("PGUSER", "postgres"));
            p.setProperty("ApplicationName", "connbudget-java-test");
            admin = DriverManager.getConnection(url(), p);
        }
        return admin;
    }

    static synchronized void exec(String sql, Object... args) throws SQLException {
        try (PreparedStatement st = admin().prepareStatement(sql)) {
            for (int i = 0; i < args.length; i++) {
                st.setObject(i + 1, args[i]);
            }
            st.execute();
        }
    }

    /** The first column of the first row of sql, as a long; -1 if no row or NULL. */
    static synchronized long scalar(String sql, Object... args) throws SQLException {
        try (PreparedStatement st = admin().prepareStatement(sql)) {
            for (int i = 0; i < args.length; i++) {
                st.setObject(i + 1, args[i]);
            }
            try (ResultSet rs = st.executeQuery()) {
                if (!rs.next()) {
                    return -1;
                }
                long v = rs.getLong(1);
                return rs.wasNull() ? -1 : v;
            }
        }
    }

    /** Gives application app a cap of max connections (null: none), open to
        the roles in roles (null: any). */
    static void setLimit(String app, Integer max, String roles) throws SQLException {
        exec("INSERT INTO connbudget.application_limits (application_name, max_connections, roles) "
                + "VALUES (?, ?, ?::name[]) ON CONFLICT (application_name) "
                + "DO UPDATE SET max_connections = excluded.max_connections, roles = excluded.roles",
                app, max, roles);
    }

    /** A pod's connections and share, from connbudget.pods: {-1, -1} when it is not live. */
    static synchronized int[] pod(String app, String pod) {
        try (PreparedStatement st = admin().prepareStatement(
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

    /** Polls cond every 5 ms for up to ms; how long it took to hold, or -1. */
    static long within(long ms, BooleanSupplier cond) {
        long start = System.nanoTime();
        while (System.nanoTime() - start < ms * 1000000) {
            if (cond.getAsBoolean()) {
                return (System.nanoTime() - start) / 1000000;
            }
            sleep(5);
        }
        return -1;
    }

    static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    static double intervals(long ms) {
        return ms / (double) INTERVAL;
    }
}
