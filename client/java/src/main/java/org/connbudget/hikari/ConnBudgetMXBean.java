package org.connbudget.hikari;

import java.util.Map;

/**
 * What a {@link ConnBudget} shows of itself, as getters and, when the pool
 * registers its MBeans (HikariConfig.setRegisterMbeans), as the MXBean
 * {@code org.connbudget:type=ConnBudget,pool="<poolName>"}.
 */
public interface ConnBudgetMXBean {
    /** ok, other (not governed: a fixed size), left, refused (governed no
        more), no-extension (a fixed size), or starting before the first answer. */
    String getStatus();

    /** The share: the most connections the pool may hold (max_size); -1 before the first. */
    int getShare();

    /** Its part of the application's guaranteed minimum (min_size); -1 before the first share. */
    int getMinSize();

    /** The server's budget that was shared; -1 before the first share. */
    int getBudget();

    /** The application's allocation, all its pods together; -1 if not said. */
    int getAllocation();

    /** The application's live pods; -1 if not said. */
    int getPods();

    /** The refresh interval in force, in ms. */
    long getRefreshMs();

    /** The pool's maximumPoolSize now: the share within the pool's own maximum. */
    int getLimit();

    /** The demand reported at the last refresh; -1 before the first. */
    int getDemand();

    /** Answers taken (shares, and the statuses other, left and refused). */
    long getRefreshes();

    /** Refreshes skipped because no connection of the pool came free within an interval. */
    long getSkippedRefreshes();

    /** Errors by kind: answer-shape, answer-null, answer-text, answer-range,
        answer-order (an answer that is not one), query, connect, refused,
        no-extension. */
    Map<String, Long> getErrors();

    /** Connections closed because the pool held more than its limit, one for each connection above
        it: idle ones at once, the others marked as they come back (closed when next borrowed). Where
        HikariCP's mark of one connection is not found, the times softEvictConnections() was called. */
    long getEvictions();

    /** Connects the server refused with 53300 (each retried). */
    long getRefusedConnects();

    /** Connects the server refused for good (42501, 53400). */
    long getPermanentRefusals();

    /** The protocol the server speaks: 2, 1, or 0 when not known. */
    int getProtocol();

    /** The application name the pool gives. */
    String getApplicationName();

    /** The pod id the pool gives. */
    String getPod();

    /** The pool's own pool session id. */
    String getPoolSession();
}
