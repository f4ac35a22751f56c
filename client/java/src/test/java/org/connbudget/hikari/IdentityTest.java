package org.connbudget.hikari;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.zaxxer.hikari.HikariConfig;
import org.junit.jupiter.api.Test;
import org.postgresql.ds.PGSimpleDataSource;

/** Ids are checked before anything connects; the identity goes where pgjdbc takes it. */
class IdentityTest {
    @Test
    void checksIds() {
        assertEquals("web 7\\x'9", Identity.check("pod id", "web 7\\x'9"));
        assertEquals("p".repeat(63), Identity.check("pod id", "p".repeat(63)));
        for (String bad : new String[] {null, "", "p".repeat(64), "caf\u00e9", "a\nb", "tab\there", "\u007f"}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> Identity.check("pod id", bad));
            assertTrue(e.getMessage().startsWith("connbudget: the pod id"), e.getMessage());
        }
    }

    @Test
    void escapesTheStartupOptions() {
        Identity id = new Identity("api", "web 7\\x'9");
        assertTrue(id.session.matches("[0-9a-f]{16}"), id.session);
        assertEquals("-c connbudget.pod=web\\ 7\\\\x'9 -c connbudget.pool_session=" + id.session, id.startupOptions());
        assertEquals("-c statement_timeout=5s " + id.startupOptions(), id.mergeOptions(" -c statement_timeout=5s "));
        assertThrows(IllegalArgumentException.class, () -> id.mergeOptions("-c connbudget.pod=other"));
    }

    @Test
    void everyPoolIsASessionOfItsOwn() {
        assertNotEquals(new Identity("api", "p").session, new Identity("api", "p").session);
    }

    @Test
    void takesTheIdentityOutOfTheUrl() {
        assertArrayEquals(new String[] {"jdbc:postgresql://db/shop?sslmode=disable", "-c statement_timeout=5s"},
                Identity.withoutIdentity("jdbc:postgresql://db/shop?options=-c%20statement_timeout%3D5s"
                        + "&ApplicationName=old&sslmode=disable"));
        assertArrayEquals(new String[] {"jdbc:postgresql://db/shop", null},
                Identity.withoutIdentity("jdbc:postgresql://db/shop?applicationname=old"));
        assertArrayEquals(new String[] {"jdbc:postgresql://db/shop", null},
                Identity.withoutIdentity("jdbc:postgresql://db/shop"));
    }

    @Test
    void configuresAHikariConfig() {
        HikariConfig config = new HikariConfig();
        config.setJdbcUrl("jdbc:postgresql://127.0.0.1:1/shop");
        config.setMaximumPoolSize(12);
        ConnBudget.configure(config, ConnBudget.options().applicationName("api").pod("web-1"));
        assertTrue(config.getDataSource() instanceof BudgetDataSource);
        BudgetDataSource source = (BudgetDataSource) config.getDataSource();
        assertEquals(12, source.userMax);
        assertEquals(0, source.userMin);
        assertEquals(12, source.fixedSize);
        assertEquals(12, config.getMaximumPoolSize());
        assertEquals(1, config.getMinimumIdle(), "one connection until the first share");
        assertThrows(IllegalStateException.class,
                () -> ConnBudget.configure(config, ConnBudget.options().applicationName("api")));

        HikariConfig defaults = new HikariConfig();
        defaults.setJdbcUrl("jdbc:postgresql://127.0.0.1:1/shop");
        defaults.setMinimumIdle(3);
        ConnBudget.configure(defaults, ConnBudget.options().applicationName("api").pod("web-1").fixedSize(4));
        source = (BudgetDataSource) defaults.getDataSource();
        assertEquals(3, source.userMax, "HikariCP's maximum when only minimumIdle is set");
        assertEquals(3, source.userMin);
        assertEquals(4, source.fixedSize);
    }

    @Test
    void givesAPgjdbcDataSourceItsIdentity() {
        PGSimpleDataSource pg = new PGSimpleDataSource();
        pg.setOptions("-c search_path=shop");
        HikariConfig config = new HikariConfig();
        config.setDataSource(pg);
        ConnBudget.configure(config, ConnBudget.options().applicationName("api").pod("web-1"));
        assertEquals("api", pg.getApplicationName());
        assertTrue(pg.getOptions().startsWith("-c search_path=shop -c connbudget.pod=web-1 -c connbudget.pool_session="),
                pg.getOptions());
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
    }
}
