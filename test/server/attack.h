/*
 * attack.h -- what must hold after every attack of attacks.c and trust.c:
 * the server answers, the limits table is what it was when the test last
 * remembered it, and connbudget.budget.governed equals the governed
 * backends in pg_stat_activity.  When it is checked, every connection of
 * the test but the superuser's ("admin") is closed or governed.
 */
#ifndef CONNBUDGET_TEST_SERVER_ATTACK_H
#define CONNBUDGET_TEST_SERVER_ATTACK_H

#include "../lib/pgtest.h"

static PGconn *admin;
static char limits_digest[64];

static inline const char *
digest_of_limits(void)
{
	return pg_value(admin, "SELECT coalesce(md5(string_agg(t::text, ';' ORDER BY application_name)), '') "
					"FROM connbudget.application_limits t");
}

static inline void
remember_limits(void)
{
	snprintf(limits_digest, sizeof(limits_digest), "%s", digest_of_limits());
}

static inline void
after_attack(const char *attack)
{
	const char *governed_sql =
		"SELECT (SELECT governed FROM connbudget.budget) - "
		"(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
		" AND application_name <> 'admin')";

	ok(pg_long(admin, "SELECT 1") == 1, "after %s: the server answers", attack);
	is_str(digest_of_limits(), limits_digest, "after %s: the limits table is intact", attack);
	is_int(pg_wait_for(admin, governed_sql, 0, 10000), 0,
		   "after %s: budget.governed equals the governed backends in pg_stat_activity", attack);
}

#endif							/* CONNBUDGET_TEST_SERVER_ATTACK_H */
