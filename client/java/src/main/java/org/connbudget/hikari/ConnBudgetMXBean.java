package org.connbudget.hikari;

import java.util.Map;

/**
 * What a {@link ConnBudget} shows of itself, as getters and, when the pool
 * registers its MBeans (HikariConfig.setRegisterMbeans), as the MXBean
 * {@code org.connbudget:type=ConnBudget,pool="<poolName>"}.
 */
public interface ConnBudgetMXBean {
    /** ok, other (not governed: a fixed size), left (handed back; the next
        report brings it back), refused (governed no more), no-extension (a
        fixed size), or starting before the first answer. */
    String getStatus();

    /** The share: the most connections the pool may hold (max_size); -1 before the first. */
    int getShare();

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
        answer-order (an answer that is not one), query (the query failed),
        refused (status refused), no-extension (no connbudget 1.2 or later). */
    Map<String, Long> getErrors();

    /** Connections closed because the pool held more than its limit, one for each connection above
        it: idle ones at once, the others when next borrowed after they come back. */
    long getEvictions();

    /** Connects the server refused with 53300 (each retried). */
    long getRefusedConnects();

    /** Connects the server refused for good (42501, 53400). */
    long getPermanentRefusals();

    /** The pod id the pool gives. */
    String getPod();

    /** The pool's own pool session id. */
    String getPoolSession();
}
