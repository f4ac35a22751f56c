package org.connbudget.hikari;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.zaxxer.hikari.HikariConfig;
import org.junit.jupiter.api.Test;
import org.postgresql.ds.PGSimpleDataSource;

/** Ids are checked before anything connects; the identity goes where pgjdbc takes it. */
class IdentityTest {
    /** A HikariConfig for url, with a maximumPoolSize of 12, configured for pod of application api. */
    private static ConnBudget.Source configured(String url, String pod) {
        HikariConfig config = new HikariConfig();
        config.setJdbcUrl(url);
        config.setMaximumPoolSize(12);
        ConnBudget.configure(config, ConnBudget.options().applicationName("api").pod(pod));
        return (ConnBudget.Source) config.getDataSource();
    }

    @Test
    void checksIds() {
        assertEquals("web 7\\x'9", ConnBudget.checkId("pod id", "web 7\\x'9"));
        assertEquals("p".repeat(63), ConnBudget.checkId("pod id", "p".repeat(63)));
        for (String bad : new String[] {null, "", "p".repeat(64), "caf\u00e9", "a\nb", "tab\there", "\u007f"}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> ConnBudget.checkId("pod id", bad));
            assertTrue(e.getMessage().startsWith("connbudget: the pod id"), e.getMessage());
        }
    }

    @Test
    void escapesTheStartupOptions() {
        ConnBudget.Source source = configured("jdbc:postgresql://127.0.0.1:1/shop", "web 7\\x'9");
        String session = source.budget.session;
        assertTrue(session.matches("[0-9a-f]{16}"), session);
        assertEquals("-c connbudget.pod=web\\ 7\\\\x'9 -c connbudget.pool_session=" + session, source.getOptions());
    }

    @Test
    void everyPoolIsASessionOfItsOwn() {
        assertNotEquals(configured("jdbc:postgresql://127.0.0.1:1/shop", "p").budget.session,
                configured("jdbc:postgresql://127.0.0.1:1/shop", "p").budget.session);
    }

    /** The identity replaces the URL's ApplicationName and follows its options; the rest of the URL stays. */
    @Test
    void takesTheIdentityIntoTheUrlsSettings() {
        ConnBudget.Source source = configured("jdbc:postgresql://db:6432/shop?options=-c%20statement_timeout%3D5s"
                + "&ApplicationName=old&sslmode=disable", "web-1");
        assertEquals("api", source.getApplicationName());
        assertTrue(source.getOptions().startsWith("-c statement_timeout=5s -c connbudget.pod=web-1 "), source.getOptions());
        assertEquals("disable", source.getSslmode());
        assertEquals("db", source.getServerNames()[0]);
        assertEquals(6432, source.getPortNumbers()[0]);
        assertEquals("shop", source.getDatabaseName());
        assertEquals("9.0", source.getAssumeMinServerVersion(), "pgjdbc sends ApplicationName when it connects");
    }

    @Test
    void configuresAHikariConfig() {
        HikariConfig config = new HikariConfig();
        config.setJdbcUrl("jdbc:postgresql://127.0.0.1:1/shop");
        config.setMaximumPoolSize(12);
        config.addDataSourceProperty("options", "-c search_path=shop");
        ConnBudget.configure(config, ConnBudget.options().applicationName("api").pod("web-1"));
        assertTrue(config.getDataSource() instanceof ConnBudget.Source);
        ConnBudget.Source source = (ConnBudget.Source) config.getDataSource();
        assertEquals(12, source.budget.userMax);
        assertEquals(0, source.budget.userMin);
        assertEquals(12, config.getMaximumPoolSize());
        assertEquals(1, config.getMinimumIdle(), "one connection until the first share");
        assertTrue(source.getOptions().startsWith("-c search_path=shop -c connbudget.pod=web-1 "), source.getOptions());
        IllegalArgumentException twice = assertThrows(IllegalArgumentException.class,
                () -> ConnBudget.configure(config, ConnBudget.options().applicationName("api")));
        assertTrue(twice.getMessage().contains("configure a HikariConfig once"), twice.getMessage());

        HikariConfig defaults = new HikariConfig();
        defaults.setJdbcUrl("jdbc:postgresql://127.0.0.1:1/shop");
        defaults.setMinimumIdle(3);
        ConnBudget.configure(defaults, ConnBudget.options().applicationName("api").pod("web-1"));
        source = (ConnBudget.Source) defaults.getDataSource();
        assertEquals(3, source.budget.userMax, "HikariCP's maximum when only minimumIdle is set");
        assertEquals(3, source.budget.userMin);
    }

    @Test
    void givesAPgjdbcDataSourceItsIdentity() {
        PGSimpleDataSource pg = new PGSimpleDataSource();
        pg.setServerNames(new String[] {"db"});
        pg.setDatabaseName("shop");
        pg.setOptions("-c search_path=shop");
        HikariConfig config = new HikariConfig();
        config.setDataSource(pg);
        ConnBudget.configure(config, ConnBudget.options().applicationName("api").pod("web-1"));
        ConnBudget.Source source = (ConnBudget.Source) config.getDataSource();
        assertEquals("api", source.getApplicationName());
        assertEquals("shop", source.getDatabaseName());
        assertEquals("db", source.getServerNames()[0]);
        assertTrue(source.getOptions().startsWith("-c search_path=shop -c connbudget.pod=web-1 -c connbudget.pool_session="),
                source.getOptions());

        HikariConfig byName = new HikariConfig();
        byName.setDataSourceClassName(PGSimpleDataSource.class.getName());
        byName.addDataSourceProperty("serverName", "db");
        byName.addDataSourceProperty("databaseName", "shop");
        ConnBudget.configure(byName, ConnBudget.options().applicationName("api").pod("web-1"));
        source = (ConnBudget.Source) byName.getDataSource();
        assertEquals("shop", source.getDatabaseName());
        assertEquals("api", source.getApplicationName());
    }

    @Test
    void refusesBadIdsAndMissingSettings() {
        HikariConfig config = new HikariConfig();
        config.setJdbcUrl("jdbc:postgresql://127.0.0.1:1/shop");
        assertThrows(IllegalArgumentException.class, () -> ConnBudget.configure(config, ConnBudget.options()));
        assertThrows(IllegalArgumentException.class,
                () -> ConnBudget.configure(config, ConnBudget.options().applicationName("api").pod("p".repeat(64))));
        assertThrows(IllegalArgumentException.class,
                () -> ConnBudget.configure(new HikariConfig(), ConnBudget.options().applicationName("api").pod("p")));
        HikariConfig theirs = new HikariConfig();
        theirs.setJdbcUrl("jdbc:postgresql://127.0.0.1:1/shop?options=-c%20connbudget.pod%3Dx");
        assertThrows(IllegalArgumentException.class,
                () -> ConnBudget.configure(theirs, ConnBudget.options().applicationName("api").pod("p")));
        HikariConfig other = new HikariConfig();
        other.setDataSourceClassName("org.h2.jdbcx.JdbcDataSource");
        assertThrows(IllegalArgumentException.class,
                () -> ConnBudget.configure(other, ConnBudget.options().applicationName("api").pod("p")));
    }
}
