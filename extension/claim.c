/*-------------------------------------------------------------------------
 *
 * claim.c
 *	  Which roles may claim which application.
 *
 * application_limits.roles binds an application to roles: only they, their
 * members and superusers may connect as it ("claim" it).  The binding is
 * checked
 *
 * 1. at connect time, before the connection is counted (connect.c), so
 *	  that a login that may not claim an application never takes even a
 *	  moment of its budget;
 * 2. for every open connection and every live pod whenever the limits
 *	  change (publish.c asks here before it re-sorts the registry), so that
 *	  binding an application, or changing its roles, leaves no connection
 *	  of another role governed as it and no pod of another role drawing a
 *	  share; and
 * 3. at every report (pool_share()), when the limits or any role's
 *	  memberships changed since this connection was last checked; and
 * 4. by the limits loader, for every open connection and pod, within
 *	  CB_WORKER_RELOAD_MS of a change of memberships (GRANT, REVOKE), and
 *	  at once when a report found a connection whose role lost its
 *	  application.
 *
 * A role listed by name costs a string compare; any other role is looked up
 * in the catalog, for membership.  That lookup cannot be made under the
 * registry's lock, which is why the verdicts are computed here, first, and
 * the registry only applies them.
 *
 * Portions Copyright (c) connbudget authors.  Licensed under the
 * PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/inval.h"
#include "utils/syscache.h"

#include "connbudget.h"

/* The limits generation this backend's claim was last checked against. */
static uint64 cb_checked_limits_gen = 0;

/* Some role's memberships changed since then (a syscache callback). */
static bool cb_memberships_changed = true;

/*
 * May this role claim an application bound to these roles?  Listed by
 * name: yes, without the catalog.  Otherwise a member of a listed role, or
 * a superuser (a listed role that does not exist yet matches nobody).
 */
bool
cb_role_may_claim(const char *user_name, int nroles, const char (*roles)[CB_NAME_LEN])
{
	Oid			user;

	if (nroles < 0)
		return true;
	for (int i = 0; i < nroles; i++)
		if (strcmp(roles[i], user_name) == 0)
			return true;
	user = get_role_oid(user_name, true);
	if (!OidIsValid(user))
		return false;
	if (superuser_arg(user))
		return true;
	for (int i = 0; i < nroles; i++)
	{
		Oid			role = get_role_oid(roles[i], true);

		if (OidIsValid(role) && is_member_of_role_nosuper(user, role))
			return true;
	}
	return false;
}

static int
cb_limit_name_cmp(const void *a, const void *b)
{
	return strcmp((*(const CbLimit *const *) a)->application_name,
				  (*(const CbLimit *const *) b)->application_name);
}

/*
 * Judge each claimant (an open connection, or a pod's owner) against these
 * limits: may its role claim its application?  An application without a
 * row, or without roles, may be claimed by anybody.
 */
void
cb_claim_verdicts(const CbLimit *limits, int nlimits, CbClaimant *claimants,
				  int nclaimants)
{
	const CbLimit **sorted;

	if (nclaimants == 0)
		return;
	sorted = palloc(sizeof(CbLimit *) * Max(nlimits, 1));
	for (int i = 0; i < nlimits; i++)
		sorted[i] = &limits[i];
	qsort(sorted, nlimits, sizeof(CbLimit *), cb_limit_name_cmp);

	for (int i = 0; i < nclaimants; i++)
	{
		CbClaimant *c = &claimants[i];
		CbLimit		key;
		const CbLimit *keyp = &key;
		const CbLimit **found;

		strlcpy(key.application_name, c->application_name, CB_NAME_LEN);
		found = nlimits > 0 ?
			bsearch(&keyp, sorted, nlimits, sizeof(CbLimit *), cb_limit_name_cmp) : NULL;
		c->ok = found == NULL ||
			cb_role_may_claim(c->user_name, (*found)->nroles,
							  (const char (*)[CB_NAME_LEN]) (*found)->roles);
		CHECK_FOR_INTERRUPTS();
	}
	pfree(sorted);
}

static void
cb_memberships_callback(Datum arg pg_attribute_unused(), int cacheid pg_attribute_unused(),
						uint32 hashvalue pg_attribute_unused())
{
	cb_memberships_changed = true;
}

/* Note changes of roles and memberships, for cb_check_own_claim(). */
void
cb_watch_memberships(void)
{
	static bool registered = false;

	if (registered)
		return;
	CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, cb_memberships_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHOID, cb_memberships_callback, (Datum) 0);
	registered = true;
}

/*
 * Did some role's memberships change since this was last asked?  The
 * limits loader asks after every transaction start, where invalidations
 * arrive, and then judges every open connection again.
 */
bool
cb_take_memberships_changed(void)
{
	bool		changed = cb_memberships_changed;

	cb_memberships_changed = false;
	return changed;
}

/* Why this connection, which asked to be governed, is not. */
static void
cb_report_own_verdict(CbVerdict verdict, const CbIdentity *id)
{
	switch (verdict)
	{
		case CB_CLAIM_REFUSED:
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("role \"%s\" may no longer report for application \"%s\"",
							id->user_name, id->application_name),
					 errdetail("connbudget.application_limits binds application \"%s\" to other roles; this connection is counted as an \"other\" connection and has no share.",
							   id->application_name),
					 errhint("Connect as one of the application's roles.")));
			break;
		case CB_NOT_OWNER:
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("pod \"%s\" of application \"%s\" belongs to another role",
							id->pod, id->application_name),
					 errdetail("A live pod belongs to the role that registered it; this connection of role \"%s\" is counted as an \"other\" connection and has no share.",
							   id->user_name),
					 errhint("Reconnect with a pod id of its own (connbudget.pod).")));
			break;
		case CB_ROLE_FULL:
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("role \"%s\" holds as many live pods as connbudget.max_pods_per_role allows",
							id->user_name),
					 errdetail("This connection of pod \"%s\" of application \"%s\" would be one more; it is counted as an \"other\" connection and has no share.",
							   id->pod, id->application_name),
					 errhint("End pods this role no longer needs, or raise connbudget.max_pods_per_role.")));
			break;
		case CB_UNCONFIGURED_REFUSED:
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("application \"%s\" has no row in connbudget.application_limits",
							id->application_name),
					 errdetail("connbudget.unconfigured_applications is \"refuse\": this connection is counted as an \"other\" connection and has no share."),
					 errhint("Add the application to connbudget.application_limits and reconnect.")));
			break;
		case CB_NO_ROOM:
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("connbudget had no room for pod \"%s\" of application \"%s\"",
							id->pod, id->application_name),
					 errdetail("Every slot of the pod table was taken when this connection was counted; it is counted as an \"other\" connection and has no share."),
					 errhint("Raise connbudget.max_pods (it takes a restart), or give fewer distinct pod ids.")));
			break;
		default:
			break;				/* admitted: counted where it asked to be */
	}
}

/*
 * Before a report: is this connection still what it was admitted as?  If
 * a re-sort left it "other", returns why.  If the limits or any role's
 * memberships changed since it was last checked, checks its claim again,
 * and under enforce = on a connection whose role lost its application
 * becomes "other" here and now; *demoted then says so, and the caller asks
 * the limits loader to judge the role's other connections and pods.
 * Cheap when nothing changed: one atomic read.  Raises no error (connbudget.share's show hook calls it);
 * outside a valid transaction, where the catalog cannot be read, only the
 * re-sorts' verdict counts.
 */
CbVerdict
cb_check_own_claim_quietly(bool *demoted)
{
	const CbIdentity *id = cb_backend_identity();
	CbBinding		binding;
	CbVerdict	verdict;

	*demoted = false;
	if (id == NULL)
		return CB_ADMIT;
	verdict = cb_backend_verdict();
	if (verdict != CB_ADMIT)
		return verdict;
	if (cb_current_limits_gen() == cb_checked_limits_gen && !cb_memberships_changed)
		return CB_ADMIT;
	if (!IsTransactionState() || IsAbortedTransactionBlockState())
		return CB_ADMIT;
	cb_memberships_changed = false;
	cb_application_binding(id->application_name, &binding);
	cb_checked_limits_gen = binding.limits_gen;
	if (cb_enforce == CB_ENFORCE_ON && !id->superuser && cb_backend_governed() &&
		binding.configured &&
		!cb_role_may_claim(id->user_name, binding.nroles,
						   (const char (*)[CB_NAME_LEN]) binding.roles))
	{
		cb_backend_demote(CB_CLAIM_REFUSED);
		*demoted = true;
		return CB_CLAIM_REFUSED;
	}
	return CB_ADMIT;
}

/*
 * The same for pool_share(): why not, as an error.  Returns whether this
 * connection was demoted now (the caller asks the loader to judge the
 * role's other connections) -- or raises the error.
 */
void
cb_report_own_claim(CbVerdict verdict)
{
	if (verdict != CB_ADMIT)
		cb_report_own_verdict(verdict, cb_backend_identity());
}

/* The SQLSTATE a connection left "other" for this reason gets. */
const char *
cb_verdict_sqlstate(CbVerdict verdict)
{
	return verdict == CB_ROLE_FULL || verdict == CB_NO_ROOM ? "53400" : "42501";
}

/* The same reason in one word, for connbudget.share. */
const char *
cb_verdict_word(CbVerdict verdict)
{
	switch (verdict)
	{
		case CB_CLAIM_REFUSED:
			return "role_may_not_claim";
		case CB_NOT_OWNER:
			return "pod_of_another_role";
		case CB_ROLE_FULL:
			return "max_pods_per_role";
		case CB_UNCONFIGURED_REFUSED:
			return "unconfigured_refused";
		case CB_NO_ROOM:
			return "max_pods";
		default:
			break;
	}
	return "none";
}
