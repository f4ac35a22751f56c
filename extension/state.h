/*-------------------------------------------------------------------------
 *
 * state.h
 *	  The shared-memory state of connbudget, private to the files that keep
 *	  it: shmem.c (layout), registry.c (who is connected), share.c (the
 *	  published allocation) and publish.c (limits and settings).
 *
 * What is kept where
 * ------------------
 * backends[]	one slot per PGPROC that can be a client backend, indexed by
 *				CB_MY_BACKEND_INDEX().  The connect hook fills it in with the
 *				connection's identity and where it is counted; the exit
 *				callback empties it.  Every count below can be rebuilt from
 *				these slots (cb_recount_locked).
 * apps[]		one slot per application that is configured (a row in
 *				connbudget.application_limits), has pods, or was refused
 *				since server start (to keep its counter).
 * pods[]		one slot per pod: live while it holds a governed connection
 *				or one of its sessions holds a lease.  A pod keeps no lease
 *				of its own: its lease is the latest of its sessions' (so it
 *				ends when the last session that held one leaves, however
 *				many have left before).  connbudget.max_pods slots; a pod
 *				without sessions is reclaimed by the allocator.
 * sessions[]	one slot per pool session of a pod: the connections of one
 *				client pool (connbudget.pool_session, or the pod's anonymous
 *				session for connections that give none).  A pod's share is
 *				split among its sessions, so two pools that give one pod id
 *				never hold more than the pod's share together.  A session
 *				holds a lease for pod_ttl after its last report, unless it
 *				left since (cb_session_lease_end).  Twice
 *				connbudget.max_pods slots.
 * roles[]		one slot per role that holds pods: who a pod belongs to, and
 *				how many pods each role holds (connbudget.max_pods_per_role).
 * role_lists[] the roles each configured application is bound to
 *				(application_limits.roles), one slot per configured
 *				application that has them.
 * *_lookup	open-addressing tables (lookup.c) from a name's hash to its
 *				slot, so that connect and exit cost the same at 10 pods and
 *				at 10,000.  Free slots are kept on stacks.
 * pubs[2]		the published allocation: every application's allocation,
 *				every pod's share and every session's part, computed by one
 *				publisher (the allocator worker) from a copy of the inputs
 *				and published as an immutable snapshot.
 *
 * Locking
 * -------
 * One LWLock, "lock", protects the registry: slot membership, the lookup
 * tables, the free stacks, the counts, the limits in apps[] and backends[],
 * except for the fields declared atomic.
 *
 * - The connect hook and the exit callback take it exclusively, for a few
 *	 microseconds and O(1) work: find or add the app, pod and session,
 *	 adjust counts, compare them with the limits.  Counting and checking
 *	 under the same exclusive lock is what makes admission exact: no two
 *	 connections can take the same last slot.  A refused connection is
 *	 uncounted under that same lock, so no reader ever counts it.
 *	 ProcArrayLock is never taken, no catalog is read and no allocation is
 *	 computed under the lock.
 * - pool_share() takes no lock.  Its session is pinned by the caller's own
 *	 connection, so it stores the heartbeat and then the demand with atomic
 *	 writes, and reads its share from the latest publication under that
 *	 publication's sequence counter (a seqlock that the publisher never
 *	 holds on the current snapshot).  A leave stores the demand alone
 *	 (CB_LEFT), which ends the lease whatever the heartbeat says: a leave
 *	 and a report of one session that race end as one or the other came
 *	 last, never as a left session that holds a lease or a report without
 *	 its heartbeat.  No report or leave writes anything of the pod's but
 *	 last_seen, so sessions of one pod never overwrite each other.
 * - The publisher (share.c) holds "publish_lock" so that there is one at a
 *	 time.  It takes "lock" exclusively only to reclaim pods and sessions
 *	 whose lease ended, and in shared mode to copy the inputs out; it
 *	 computes the allocation with no lock held and writes it into the
 *	 snapshot that readers are not reading.
 * - The views take "lock" in shared mode to copy rows out, and build
 *	 tuples after releasing it.
 * - Nothing that can raise an error is done while holding "lock", so it
 *	 never needs releasing on an error path.
 *
 * limits_gen orders changes of limits against connects: a publisher of new
 * limits makes it odd before it judges the open connections (claim.c reads
 * the catalog, which cannot be done under "lock") and even once the new
 * limits are in force, under the exclusive lock.  A connect copies its
 * claim with the generation and counts itself only if the generation is
 * still the same under the exclusive lock; otherwise it checks again.
 *
 * input_gen counts changes of the allocation's inputs (connects, exits,
 * demands, limits, settings).  Whoever changes an input bumps it and sets
 * the allocator's latch; a publication records the input_gen it was
 * computed from, so a reader can tell whether it is current.
 *
 * Portions Copyright (c) connbudget authors.  Licensed under the
 * PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONNBUDGET_STATE_H
#define CONNBUDGET_STATE_H

#include "connbudget.h"
#include "lookup.h"

/* Reported demand of a session that never reported (or whose report is
 * older than pod_ttl): it demands the connections it holds. */
#define CB_NO_REPORT		(-2)
/* A session that left (connbudget.demand = 'leave'): it demands nothing
 * and its lease has ended, whatever its heartbeat; it goes when its
 * connections close. */
#define CB_LEFT				(-3)

/* Pool sessions: this many times connbudget.max_pods. */
#define CB_SESSIONS_PER_POD 2

typedef struct CbApp
{
	uint32		incarnation;	/* 0: free slot */
	bool		configured;		/* has a row in application_limits */
	bool		listed;			/* scratch for cb_publish_limits */
	int32		min_connections;
	int32		max_connections;	/* CB_UNBOUNDED = no cap */
	int32		weight;
	int32		connections;	/* governed backends of this app */
	int32		npods;			/* pod slots referring to this app */
	uint64		refused;		/* refusals (or warnings) since start */
	TimestampTz last_refused;	/* for reclaiming counter-only slots */
	int32		role_list;		/* role_lists[] slot, -1: any role */
	uint32		hash;
	char		name[CB_NAME_LEN];
} CbApp;

typedef struct CbRoleList
{
	int32		nroles;
	char		roles[CB_MAX_APP_ROLES][CB_NAME_LEN];
} CbRoleList;

typedef struct CbRole
{
	uint32		incarnation;	/* 0: free slot */
	uint32		hash;
	int32		npods;			/* pod slots it owns */
	int32		nsessions;		/* session slots of those pods */
	char		name[CB_NAME_LEN];
} CbRole;

typedef struct CbPod
{
	uint32		incarnation;	/* 0: free slot */
	int32		app;			/* apps[] slot */
	int32		role;			/* roles[] slot of the role it belongs to */
	bool		derived;		/* no connbudget.pod: its id is the client's
								 * address, and its key includes the role */
	int32		connections;	/* governed backends of this pod */
	int32		nsessions;		/* session slots referring to this pod */
	bool		revoked;		/* scratch for cb_revoke_leases_locked */
	uint32		hash;
	TimestampTz first_seen;
	pg_atomic_uint64 last_seen; /* last connect or pool_share() */
	char		id[CB_NAME_LEN];
	char		client_addr[CB_ADDR_LEN];
} CbPod;

typedef struct CbSession
{
	uint32		incarnation;	/* 0: free slot */
	int32		pod;			/* pods[] slot */
	uint64		token;			/* 0: the pod's anonymous session */
	uint32		hash;
	int32		connections;	/* governed backends of this session */
	pg_atomic_uint32 demand;	/* int32: >= 0, CB_UNBOUNDED, CB_NO_REPORT,
								 * CB_LEFT */
	pg_atomic_uint64 heartbeat; /* last report, 0 = never; stored before
								 * the demand */
} CbSession;

typedef struct CbBackend
{
	CbBackendKind kind;
	int32		app;			/* slots when governed, else -1 */
	int32		pod;
	int32		session;

	/*
	 * What pool_share() reads without the lock: (session slot + 1) << 32 |
	 * the session's incarnation, or 0 when not governed.  Written under the
	 * exclusive lock, only when it changes.
	 */
	pg_atomic_uint64 reporting;
	CbIdentity	identity;
	bool		claim_ok;		/* its role may claim its application, as last
								 * checked */
	CbVerdict	verdict;		/* why it is "other" although it asked to be
								 * governed, or CB_ADMIT */
} CbBackend;

/* One published snapshot; see share.c. */
typedef struct CbPubApp
{
	uint32		incarnation;
	uint32		pubno;			/* the publication that wrote it */
	int32		allocation;
	int32		live_pods;
	int64		demand;			/* CB_UNBOUNDED = unbounded */
} CbPubApp;

typedef struct CbPubPod
{
	uint32		incarnation;
	uint32		pubno;
	int32		share;
	int32		min_share;
	int32		demand;			/* CB_UNBOUNDED = unbounded */
} CbPubPod;

typedef struct CbPubSession
{
	uint32		incarnation;
	uint32		pubno;
	int32		share;
	int32		min_share;
	int32		demand;			/* what it was computed for; CB_UNBOUNDED */
} CbPubSession;

typedef struct CbPublication
{
	pg_atomic_uint64 seq;		/* odd while being written */
	uint32		pubno;			/* 0: never written */
	uint64		input_gen;		/* the inputs it was computed from */
	TimestampTz published_at;
	int32		budget;			/* the effective budget it shared */
	int32		refresh_ms;
	int32		live_pods;
	CbPubApp   *apps;			/* indexed by slot */
	CbPubPod   *pods;
	CbPubSession *sessions;
} CbPublication;

typedef struct CbShared
{
	LWLock	   *lock;			/* the registry; see above */
	LWLock	   *publish_lock;	/* one publisher at a time */
	ConditionVariable limits_cv;	/* signalled when limits_state changes */
	ConditionVariable published_cv; /* signalled after every publication */
	pg_atomic_uint32 limits_state;	/* CbLimitsState */
	pg_atomic_uint32 reload_requested;
	pg_atomic_uint64 input_gen;
	pg_atomic_uint64 membership_gen;	/* slots added or freed, limits */
	pg_atomic_uint64 limits_gen;	/* bumped to odd when limits start to
									 * change, to even once in force */
	pg_atomic_uint64 limits_input_gen;	/* input_gen once the latest limits
										 * were in force: no share is read
										 * from an older publication */
	pg_atomic_uint32 current_pub;	/* index into pubs[] */
	pg_atomic_uint32 allocator_pid; /* 0 when the allocator is not running */
	pg_atomic_uint64 allocator_latch;	/* its Latch *, 0 when not running */
	pg_atomic_uint64 loader_latch;	/* the limits loader's Latch * */

	/* sighup settings, as last published by the allocator */
	int32		extension_reserved;
	int32		pod_ttl_ms;
	int32		refresh_ms;
	int32		unconfigured;	/* CbUnconfigured */
	int32		unconfigured_max;	/* CB_UNBOUNDED: no cap */
	int32		max_pods_per_role;

	/* counts, derived from backends[] */
	int32		governed;
	int32		other;
	int32		committed;		/* sum over apps of max(connections, min) */
	int32		unconfigured_connections;	/* governed connections of apps without a row */

	uint32		next_incarnation;

	/* capacities and free stacks */
	int			app_capacity;
	int			pod_capacity;
	int			session_capacity;
	int			role_capacity;
	int			nbackends;
	int			apps_free;		/* entries on the free stacks */
	int			pods_free;
	int			sessions_free;
	int			roles_free;
	int			role_lists_free;
	int			configured_apps;

	CbPublication pubs[2];
} CbShared;

/* ---- shmem.c: the layout, attached in every process ---- */

extern CbShared *cb_shared;
extern CbApp *cb_apps;
extern CbPod *cb_pods;
extern CbSession *cb_sessions;
extern CbBackend *cb_backends;
extern CbLookup *cb_app_lookup;
extern CbLookup *cb_pod_lookup;
extern CbLookup *cb_session_lookup;
extern CbLookup *cb_role_lookup;
extern CbRole *cb_roles;
extern CbRoleList *cb_role_lists;
extern int32 *cb_app_free_stack;
extern int32 *cb_pod_free_stack;
extern int32 *cb_session_free_stack;
extern int32 *cb_role_free_stack;
extern int32 *cb_role_list_free_stack;

/* ---- budget.c ---- */

extern int32 cb_effective_budget_locked(void);

/* ---- registry.c ---- */

extern void cb_inputs_changed(void);

extern uint32 cb_name_hash(const char *name);
extern int	cb_find_app_locked(const char *name, uint32 hash);
extern int	cb_add_app_locked(const char *name, uint32 hash, bool may_evict);
extern void cb_recount_locked(TimestampTz now, const int8 *claims, int enforce);
extern int	cb_collect_claimants_locked(CbClaimant *backends, CbClaimant *pods,
										int *npods);
extern void cb_revoke_leases_locked(const CbClaimant *pods, int npods);
extern TimestampTz cb_lease_end(uint64 heartbeat, int32 ttl_ms);
extern TimestampTz cb_session_lease_end(CbSession *session, int32 ttl_ms);
extern void cb_pod_lease_ends_locked(TimestampTz *ends, int32 ttl_ms);
extern bool cb_pod_is_live(CbPod *pod, TimestampTz lease_end, TimestampTz now);
extern int	cb_reclaim_locked(TimestampTz now);
extern bool cb_reclaim_due(TimestampTz since, TimestampTz now,
						   TimestampTz *next_event);

/* ---- share.c ---- */

extern int32 cb_publish_period_ms(void);

/* ---- publish.c ---- */

extern void cb_store_settings(void);

#endif							/* CONNBUDGET_STATE_H */
