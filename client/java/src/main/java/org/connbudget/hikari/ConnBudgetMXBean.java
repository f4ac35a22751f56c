package org.connbudget.hikari;

import java.util.Map;

/**
 * What a {@link ConnBudget} shows of itself, as getters and, when the pool
 * registers its MBeans (HikariConfig.setRegisterMbeans), as the MXBean
 * {@code org.connbudget:type=ConnBudget,pool="<poolName>"}.
 */
public interface ConnBudgetMXBean {
    /** The share: the most connections the pool may hold (max_size); -1 before the first. */
    int getShare();

    /** The demand reported at the last refresh; -1 before the first. */
    int getDemand();

    /**
     * What happened since the pool started, by name: refreshes (answers
     * taken), evictions (connections closed above the pool's limit),
     * refused-connects (53300, each retried), permanent-refusals (42501,
     * 53400), and the errors: bad-answer (an answer that is not one),
     * query-failed, no-extension (no connbudget 1.2 or later). A name
     * appears once it has happened.
     */
    Map<String, Long> getCounters();
}
