/*-------------------------------------------------------------------------
 *
 * connbudget.h
 *	  Declarations shared by the files of the connbudget extension.
 *
 * Files, one per concern, in the order data flows through them:
 *	  connbudget.c	_PG_init: wires settings, hooks and the two workers;
 *					what both workers do when their latch wakes them
 *	  guc.c			the connbudget.* settings (those of the protocol are
 *					share.c's)
 *	  connect.c		the connect-time hook: identity, and reporting verdicts
 *	  claim.c		which roles may claim which application (catalog)
 *	  registry.c	who is connected: applications, pods, pool sessions,
 *					leases, counting and re-sorting (O(1) per connect and
 *					exit)
 *	  budget.c		the budget: max_connections minus every reserve, minus
 *					the overflow of "other" connections
 *	  limits_table.c finding the extension's limits table, reading and
 *					validating its rows
 *	  limits.c		putting limits in force: in commit order, with every
 *					open connection judged again
 *	  loader.c		the limits loader (a background worker), and asking it
 *					to read the table again
 *	  allocator.c	the allocator (a background worker): computing and
 *					publishing every pod's share, and the sighup settings
 *	  share.c		the readers: pool_share(), connbudget.demand and
 *					connbudget.share, the views' snapshots
 *	  functions.c	SQL-callable functions behind the views and pool_share()
 *	  guards.c		statements looked at before PostgreSQL runs them
 *	  shmem.c		the shared-memory layout, sized once, and its hooks
 *	  state.h		the shared structs and the locking rules (private)
 *	  allocation.c	the pure core: the budget arithmetic and the verdicts
 *					of admission (no PostgreSQL headers)
 *	  identity.c	the pure rules of identity and reports: startup options,
 *					names, ids, demands (no PostgreSQL headers)
 *	  lookup.c		hashed lookup of names to slots (no PostgreSQL headers)
 *
 * Portions Copyright (c) connbudget authors.  Licensed under the
 * PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONNBUDGET_H
#define CONNBUDGET_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/lwlock.h"

#include "allocation.h"
#include "identity.h"

/*
 * The version of the protocol pools speak (docs/protocol.md): 1 is
 * connbudget.pool_share() in connbudget.database, 2 adds connbudget.demand
 * and connbudget.share in every database.
 */
#define CB_PROTOCOL_VERSION 2

/* Names and pod ids are at most NAMEDATALEN - 1 (63) bytes. */
#define CB_NAME_LEN			NAMEDATALEN
/* Textual client address: IPv6 with scope, or empty for a Unix socket. */
#define CB_ADDR_LEN			64
/* Most rows application_limits may hold. */
#define CB_MAX_CONFIGURED_APPS 1000
/* Applications that hold nothing but keep a refusal counter, at least. */
#define CB_COUNTER_ONLY_APPS 64
/* How long a connection waits for the worker to load limits at startup. */
#define CB_LIMITS_WAIT_MS	10000
/* Roles an application may be bound to (application_limits.roles). */
#define CB_MAX_APP_ROLES	16
/* connbudget.max_pods: default and bounds. */
#define CB_DEFAULT_MAX_PODS 10000
#define CB_MAX_MAX_PODS		1000000
/* How often the worker re-reads limits even when nobody asked it to. */
#define CB_WORKER_RELOAD_MS	10000

/* ---- connbudget.c ---- */

extern bool cb_worker_interrupts(void);

/* ---- guc.c ---- */

typedef enum CbEnforce
{
	CB_ENFORCE_OFF,
	CB_ENFORCE_WARN,
	CB_ENFORCE_ON
} CbEnforce;

/* connbudget.unconfigured_applications: applications without a row. */
typedef enum CbUnconfigured
{
	CB_UNCONFIGURED_GOVERN,		/* governed with default limits (and together
								 * within unconfigured_max_connections) */
	CB_UNCONFIGURED_REFUSE,		/* a connection that gives a pod is refused */
	CB_UNCONFIGURED_OTHER		/* not governed: "other", pod or not */
} CbUnconfigured;

extern int	cb_reserved_connections;
extern int	cb_enforce;
extern char *cb_database;
extern int	cb_pod_ttl_ms;
extern int	cb_refresh_interval_ms;
extern int	cb_max_pods;
extern int	cb_max_pods_per_role;
extern int	cb_unconfigured_applications;
extern int	cb_unconfigured_max_connections;
extern char *cb_pod;
extern char *cb_pool_session;
extern char *cb_demand;

extern void cb_define_gucs(void);

/* What a client backend is, as far as the budget goes. */
typedef enum CbBackendKind
{
	CB_BACKEND_FREE = 0,		/* slot unused, or not a client backend */
	CB_BACKEND_OTHER,			/* psql, pg_dump, cron: may use the reserve */
	CB_BACKEND_GOVERNED			/* counted against its application */
} CbBackendKind;

/* Where limits come from; see worker.c. */
typedef enum CbLimitsState
{
	CB_LIMITS_LOADING = 0,		/* server starting, worker not done yet */
	CB_LIMITS_LOADED,			/* shared memory holds the table's rows */
	CB_LIMITS_FAILED			/* worker could not read them; admit all */
} CbLimitsState;

/* The connect-time identity of a client backend (docs/identity-and-arithmetic.md). */
typedef struct CbIdentity
{
	char		application_name[CB_NAME_LEN];
	char		pod[CB_NAME_LEN];	/* explicit connbudget.pod, or derived */
	bool		explicit_pod;	/* pod came from connbudget.pod */
	uint64		session_token;	/* hash of connbudget.pool_session, 0 none */
	char		client_addr[CB_ADDR_LEN];	/* "" for a Unix socket */
	char		user_name[CB_NAME_LEN]; /* the authenticated role */
	bool		superuser;		/* never refused; looked up at connect */
} CbIdentity;

/* One row of connbudget.application_limits. */
typedef struct CbLimit
{
	char		application_name[CB_NAME_LEN];
	int32		min_connections;
	int32		max_connections;	/* CB_UNBOUNDED = no cap */
	int32		weight;
	int			nroles;			/* -1: any role may claim it (NULL) */
	char		roles[CB_MAX_APP_ROLES][CB_NAME_LEN];
} CbLimit;

/*
 * An application's binding to roles, as the limits of one generation say:
 * a connection's role may claim the application (connect as it) if it is
 * not configured, is bound to no roles, or is bound to that role (claim.c).
 * A connection checked against limits that changed before it was counted
 * is checked again.
 */
typedef struct CbBinding
{
	bool		configured;		/* the application has a row */
	int			nroles;			/* -1: any role */
	char		roles[CB_MAX_APP_ROLES][CB_NAME_LEN];
	uint64		limits_gen;		/* the limits this was copied from */
} CbBinding;

/*
 * The connect hook's verdict on a new connection, and the numbers.  The
 * verdict (allocation.h) says where it was counted: CB_ADMIT, a limit it
 * is over (it was counted, then checked), or why it could not be counted
 * where it asked to be (it is "other").
 */
typedef struct CbAdmission
{
	CbVerdict	verdict;
	bool		stale;			/* the limits changed after the claim was
								 * checked: nothing was counted; check again */
	CbAdmissionCounts counts;	/* each counting this connection */
	int32		capacity;		/* connbudget.max_pods, for CB_NO_ROOM */
	char		pod_owner[CB_NAME_LEN]; /* for CB_NOT_OWNER */
	int32		role_pods;		/* for CB_ROLE_FULL: pods the role holds */
	int32		role_limit;		/* and connbudget.max_pods_per_role */
	bool		role_sessions;	/* role_pods counts its pool sessions */
} CbAdmission;

/* Result of pool_share(). */
typedef struct CbShare
{
	int32		max_size;
	int32		min_size;
	int32		allocation;
	int32		pods;
	int32		budget;
	int32		refresh_ms;
	int32		demand;			/* the session's demand the share was computed
								 * for: >= 0, CB_UNBOUNDED, or CB_NO_REPORT when
								 * no publication had the session in time */
} CbShare;

/* Snapshot rows for the views. */
typedef struct CbBudgetRow
{
	int32		max_connections;
	int32		superuser_reserved;
	int32		reserved_connections;
	int32		extension_reserved;
	int32		budget;
	int32		governed;
	int32		other;
	int32		free;
	int32		applications;
	int32		pods;
} CbBudgetRow;

typedef struct CbApplicationRow
{
	char		application_name[CB_NAME_LEN];
	bool		configured;
	int32		min_connections;
	int32		max_connections;	/* CB_UNBOUNDED = NULL */
	int32		weight;
	int32		allocation;
	int32		connections;
	int32		pods;
	int64		demand;			/* CB_UNBOUNDED = NULL */
	int64		refused;
} CbApplicationRow;

typedef struct CbPodRow
{
	char		application_name[CB_NAME_LEN];
	char		pod[CB_NAME_LEN];
	int32		connections;
	int32		share;
	int32		demand;			/* CB_UNBOUNDED = NULL */
	char		client_addr[CB_ADDR_LEN];
	char		owner[CB_NAME_LEN]; /* the role it belongs to */
	bool		derived;		/* its id is the client's address or "local" */
	TimestampTz first_seen;
	TimestampTz last_seen;
	TimestampTz lease_expires;	/* 0 = never called pool_share() */
} CbPodRow;

/* ---- shmem.c ---- */

extern bool cb_shmem_attached(void);
extern void cb_require_preload(void);
extern void cb_shmem_request(void);
extern Size cb_shmem_size(void);

/* ---- budget.c ---- */

extern int32 cb_extension_reserved(void);
extern int32 cb_configured_budget(void);

/* ---- registry.c ---- */

extern void cb_application_binding(const char *application_name, CbBinding *binding);
extern void cb_claim_refused(const char *application_name);
extern void cb_backend_attach(const CbIdentity *identity, const CbBinding *binding,
							  bool claim_ok, CbEnforce enforce, bool lenient,
							  CbAdmission *admission);
extern void cb_backend_detach(void);
extern const CbIdentity *cb_backend_identity(void);
extern bool cb_backend_governed(void);
extern uint64 cb_current_limits_gen(void);
extern CbVerdict cb_backend_verdict(void);
extern void cb_backend_demote(CbVerdict verdict);

/* ---- claim.c ---- */

/* An open connection or a live pod whose claim is checked when limits change. */
typedef struct CbClaimant
{
	int32		slot;			/* backends[] or pods[] slot */
	uint32		incarnation;	/* a pod's; 0 for a backend */
	char		user_name[CB_NAME_LEN];
	char		application_name[CB_NAME_LEN];
	bool		ok;				/* the verdict */
} CbClaimant;

extern bool cb_role_may_claim(const char *user_name, int nroles,
							  const char (*roles)[CB_NAME_LEN]);
extern void cb_claim_verdicts(const CbLimit *limits, int nlimits,
							  CbClaimant *claimants, int nclaimants);
extern void cb_watch_memberships(void);
extern bool cb_take_memberships_changed(void);
extern CbVerdict cb_check_own_claim_quietly(bool *demoted);
extern void cb_report_own_claim(CbVerdict verdict);
extern const char *cb_verdict_sqlstate(CbVerdict verdict);
extern const char *cb_verdict_word(CbVerdict verdict);

/* ---- share.c ---- */

extern void cb_pool_share(int32 demand, CbShare *share);
extern void cb_report_demand(int32 demand, bool leave);
extern const char *cb_share_text(void);
extern void cb_define_protocol_settings(void);
extern void cb_snapshot_budget(CbBudgetRow *row);
extern int	cb_snapshot_applications(CbApplicationRow **rows);
extern int	cb_snapshot_pods(CbPodRow **rows);

/* One kind of shared-memory slot: how many are in use, of how many. */
typedef struct CbSlotsRow
{
	const char *kind;
	int32		used;
	int32		capacity;
	bool		consistent;		/* slots, free stack and lookup table agree */
} CbSlotsRow;

#define CB_SLOT_KINDS 6
extern void cb_snapshot_slots(CbSlotsRow rows[CB_SLOT_KINDS]);

/* ---- allocator.c ---- */

extern void cb_allocator_attach(Latch *latch);
extern void cb_allocator_detach(void);
extern long cb_allocator_cycle(void);
extern void cb_publish_here(void);
extern void cb_publish_settings(void);

/* ---- limits.c ---- */

extern CbLimitsState cb_limits_state(void);
extern void cb_set_limits_state(CbLimitsState state);
extern bool cb_wait_for_limits(long timeout_ms);
extern void cb_publish_limits(const CbLimit *limits, int nlimits, bool resort);
extern void cb_lock_limits(void);
extern void cb_reload_limits(bool resort, const char **why);

/* ---- limits_table.c ---- */

/* cb_read_limits() without rows: no extension here, or a table not trusted */
#define CB_LIMITS_MISSING	(-1)
#define CB_LIMITS_UNTRUSTED (-2)

extern bool cb_owned_by_superuser(Oid owner);
extern bool cb_extension_row(Oid *extoid, Oid *nspid, Oid *owner);
extern Oid	cb_find_limits_table(const char **why);
extern int	cb_read_limits(CbLimit **limits, const char **why);
extern bool cb_check_limits(const CbLimit *limits, int nlimits, int elevel);

/* ---- loader.c ---- */

extern void cb_set_loader_latch(Latch *latch);
extern void cb_request_reload(void);
extern bool cb_take_reload_request(void);
extern uint64 cb_replay_position(void);


/* ---- guards.c ---- */

extern void cb_install_guards(void);

/* ---- connect.c ---- */

extern void cb_install_connect_hook(void);

#endif							/* CONNBUDGET_H */
