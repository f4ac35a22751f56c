/*-------------------------------------------------------------------------
 *
 * registry.c
 *	  Who is connected: applications, pods and pool sessions, their leases,
 *	  and the counts that admission is decided on.
 *
 * A governed connection is counted in one application, one pod of it and
 * one pool session of that pod.  Connect and exit do O(1) work under the
 * exclusive lock: a hashed lookup (lookup.c) of each, a slot from a free
 * stack when one is new, and a few counters.  Leases are the sessions':
 * a pod is live while one of its sessions is.  They end without anybody
 * noticing at once; the allocator reclaims pods and sessions that are no
 * longer live (cb_reclaim_locked), and so keeps the free stacks stocked.
 *
 * See state.h for the structures and the locking rules.
 *
 * Portions Copyright (c) connbudget authors.  Licensed under the
 * PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "miscadmin.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "state.h"

/* ---------------------------------------------------------------------
 * Slots: applications, pods, sessions
 * ---------------------------------------------------------------------
 */

uint32
cb_name_hash(const char *name)
{
	return hash_bytes((const unsigned char *) name, (int) strlen(name));
}

/* A pod's key: its application and id, and for a derived id its role. */
static uint32
cb_pod_hash(int32 app, const char *id, int32 role)
{
	uint32		hash = hash_combine(cb_name_hash(id), hash_bytes_uint32((uint32) app));

	return role >= 0 ? hash_combine(hash, hash_bytes_uint32((uint32) role)) : hash;
}

static uint32
cb_session_hash(int32 pod, uint64 token)
{
	return hash_combine(hash_bytes_uint32((uint32) pod),
						hash_bytes_uint32((uint32) token ^ (uint32) (token >> 32)));
}

static uint32
cb_new_incarnation(void)
{
	uint32		inc = cb_shared->next_incarnation++;

	if (cb_shared->next_incarnation == 0)
		cb_shared->next_incarnation = 1;	/* 0 marks a free slot */
	return inc;
}

static Latch *
cb_allocator_latch(void)
{
	return (Latch *) (uintptr_t) pg_atomic_read_u64(&cb_shared->allocator_latch);
}

/*
 * An input of the allocation changed: count it, and wake the allocator.
 * SetLatch() on a latch that is already set is a read, so a burst of
 * changes costs one wake-up.
 */
void
cb_inputs_changed(void)
{
	Latch	   *latch;

	pg_atomic_fetch_add_u64(&cb_shared->input_gen, 1);
	latch = cb_allocator_latch();
	if (latch != NULL)
		SetLatch(latch);
}

static void
cb_membership_changed(void)
{
	pg_atomic_fetch_add_u64(&cb_shared->membership_gen, 1);
}

static bool
cb_app_matches(int32 slot, const void *key)
{
	return strcmp(cb_apps[slot].name, (const char *) key) == 0;
}

typedef struct CbPodKey
{
	int32		app;
	const char *id;
	int32		role;			/* a derived id's role, -1 for an explicit id */
} CbPodKey;

static bool
cb_pod_matches(int32 slot, const void *key)
{
	const CbPodKey *k = key;
	const CbPod *pod = &cb_pods[slot];

	return pod->app == k->app && (pod->derived ? pod->role == k->role : k->role < 0) &&
		strcmp(pod->id, k->id) == 0;
}

static bool
cb_role_matches(int32 slot, const void *key)
{
	return strcmp(cb_roles[slot].name, (const char *) key) == 0;
}

typedef struct CbSessionKey
{
	int32		pod;
	uint64		token;
} CbSessionKey;

static bool
cb_session_matches(int32 slot, const void *key)
{
	const CbSessionKey *k = key;

	return cb_sessions[slot].pod == k->pod && cb_sessions[slot].token == k->token;
}

int
cb_find_app_locked(const char *name, uint32 hash)
{
	return cb_lookup_find(cb_app_lookup, hash, cb_app_matches, name);
}

static void
cb_free_app_locked(int slot)
{
	CbApp	   *app = &cb_apps[slot];

	Assert(app->incarnation != 0 && app->connections == 0 && app->npods == 0);
	cb_lookup_delete(cb_app_lookup, app->hash, slot);
	app->incarnation = 0;
	cb_app_free_stack[cb_shared->apps_free++] = slot;
	cb_membership_changed();
}

/*
 * The application slot that only keeps a refusal counter (not configured,
 * no pods, no connections) and was refused longest ago, or -1.  A scan:
 * only the allocator and limit changes evict, never a connect.
 */
static int
cb_counter_only_app_locked(void)
{
	int			victim = -1;

	for (int i = 0; i < cb_shared->app_capacity; i++)
	{
		CbApp	   *app = &cb_apps[i];

		if (app->incarnation == 0 || app->configured || app->npods > 0 ||
			app->connections > 0)
			continue;
		if (victim < 0 || app->last_refused < cb_apps[victim].last_refused)
			victim = i;
	}
	return victim;
}

/*
 * Add an application slot; -1 if there is no room.  With may_evict, the
 * oldest slot that only keeps a refusal counter makes room.
 */
int
cb_add_app_locked(const char *name, uint32 hash, bool may_evict)
{
	int			slot;
	CbApp	   *app;

	if (cb_shared->apps_free == 0)
	{
		int			victim = may_evict ? cb_counter_only_app_locked() : -1;

		if (victim < 0)
			return -1;
		cb_free_app_locked(victim);
	}
	slot = cb_app_free_stack[--cb_shared->apps_free];
	app = &cb_apps[slot];
	memset(app, 0, sizeof(CbApp));
	app->incarnation = cb_new_incarnation();
	app->max_connections = CB_UNBOUNDED;
	app->weight = 1;
	app->role_list = -1;
	app->hash = hash;
	strlcpy(app->name, name, CB_NAME_LEN);
	cb_lookup_insert(cb_app_lookup, hash, slot);
	cb_membership_changed();
	return slot;
}

/* ---- roles: who pods belong to ---- */

static int
cb_find_role_locked(const char *name)
{
	return cb_lookup_find(cb_role_lookup, cb_name_hash(name), cb_role_matches, name);
}

/* A role slot for a role about to own its first pod; -1 if none is free. */
static int
cb_add_role_locked(const char *name)
{
	int			slot;
	CbRole	   *role;

	if (cb_shared->roles_free == 0)
		return -1;
	slot = cb_role_free_stack[--cb_shared->roles_free];
	role = &cb_roles[slot];
	role->incarnation = cb_new_incarnation();
	role->hash = cb_name_hash(name);
	role->npods = 0;
	role->nsessions = 0;
	strlcpy(role->name, name, CB_NAME_LEN);
	cb_lookup_insert(cb_role_lookup, role->hash, slot);
	return slot;
}

/* A pod of this role is gone; the role's slot goes with its last pod. */
static void
cb_release_role_locked(int slot)
{
	CbRole	   *role = &cb_roles[slot];

	if (--role->npods > 0)
		return;
	cb_lookup_delete(cb_role_lookup, role->hash, slot);
	role->incarnation = 0;
	cb_role_free_stack[cb_shared->roles_free++] = slot;
}

/* ---- pods ---- */

static int
cb_find_pod_locked(int32 app, const char *id, int32 role, uint32 hash)
{
	CbPodKey	key = {app, id, role};

	return cb_lookup_find(cb_pod_lookup, hash, cb_pod_matches, &key);
}

static int
cb_add_pod_locked(int32 app, const char *id, int32 role, bool derived,
				  uint32 hash, TimestampTz now)
{
	int			slot;
	CbPod	   *pod;

	if (cb_shared->pods_free == 0)
		return -1;
	slot = cb_pod_free_stack[--cb_shared->pods_free];
	pod = &cb_pods[slot];
	pod->incarnation = cb_new_incarnation();
	pod->app = app;
	pod->role = role;
	pod->derived = derived;
	cb_roles[role].npods++;
	pod->connections = 0;
	pod->nsessions = 0;
	pod->hash = hash;
	pod->first_seen = now;
	pg_atomic_write_u64(&pod->last_seen, (uint64) now);
	strlcpy(pod->id, id, CB_NAME_LEN);
	pod->client_addr[0] = '\0';
	cb_lookup_insert(cb_pod_lookup, hash, slot);
	cb_apps[app].npods++;
	cb_membership_changed();
	return slot;
}

static void
cb_free_pod_locked(int slot)
{
	CbPod	   *pod = &cb_pods[slot];

	Assert(pod->incarnation != 0 && pod->connections == 0 && pod->nsessions == 0);
	cb_lookup_delete(cb_pod_lookup, pod->hash, slot);
	cb_apps[pod->app].npods--;
	cb_release_role_locked(pod->role);
	pod->incarnation = 0;
	cb_pod_free_stack[cb_shared->pods_free++] = slot;
	cb_membership_changed();
}

static int
cb_find_session_locked(int32 pod, uint64 token, uint32 hash)
{
	CbSessionKey key = {pod, token};

	return cb_lookup_find(cb_session_lookup, hash, cb_session_matches, &key);
}

static int
cb_add_session_locked(int32 pod, uint64 token, uint32 hash)
{
	int			slot;
	CbSession  *session;

	if (cb_shared->sessions_free == 0)
		return -1;
	slot = cb_session_free_stack[--cb_shared->sessions_free];
	session = &cb_sessions[slot];
	session->incarnation = cb_new_incarnation();
	session->pod = pod;
	session->token = token;
	session->hash = hash;
	session->connections = 0;
	pg_atomic_write_u32(&session->demand, (uint32) CB_NO_REPORT);
	pg_atomic_write_u64(&session->heartbeat, 0);
	cb_lookup_insert(cb_session_lookup, hash, slot);
	cb_pods[pod].nsessions++;
	cb_roles[cb_pods[pod].role].nsessions++;
	cb_membership_changed();
	return slot;
}

static void
cb_free_session_locked(int slot)
{
	CbSession  *session = &cb_sessions[slot];

	Assert(session->incarnation != 0 && session->connections == 0);
	cb_lookup_delete(cb_session_lookup, session->hash, slot);
	cb_pods[session->pod].nsessions--;
	cb_roles[cb_pods[session->pod].role].nsessions--;
	session->incarnation = 0;
	cb_session_free_stack[cb_shared->sessions_free++] = slot;
	cb_membership_changed();
}

/* ---------------------------------------------------------------------
 * Leases
 * ---------------------------------------------------------------------
 */

/* When a lease renewed at this heartbeat ends (0: never renewed). */
TimestampTz
cb_lease_end(uint64 heartbeat, int32 ttl_ms)
{
	if (heartbeat == 0)
		return 0;
	return (TimestampTz) heartbeat + (TimestampTz) ttl_ms * 1000;
}

/*
 * When a session's lease ends: pod_ttl after its last report, or 0 if it
 * never reported or left since.  A report stores the heartbeat before the
 * demand, so a demand that is not CB_LEFT any more comes with the
 * heartbeat of the report that brought the session back.
 */
TimestampTz
cb_session_lease_end(CbSession *session, int32 ttl_ms)
{
	int32		demand = (int32) pg_atomic_read_u32(&session->demand);

	if (demand == CB_LEFT)
		return 0;
	pg_read_barrier();
	return cb_lease_end(pg_atomic_read_u64(&session->heartbeat), ttl_ms);
}

/*
 * Each pod's lease end, the latest of its sessions' (0: none holds one),
 * into ends[], which has room for pod_capacity entries.  One pass over the
 * sessions, with the lock held in either mode.
 */
void
cb_pod_lease_ends_locked(TimestampTz *ends, int32 ttl_ms)
{
	memset(ends, 0, sizeof(TimestampTz) * cb_shared->pod_capacity);
	for (int i = 0; i < cb_shared->session_capacity; i++)
	{
		CbSession  *session = &cb_sessions[i];
		TimestampTz end;

		if (session->incarnation == 0)
			continue;
		end = cb_session_lease_end(session, ttl_ms);
		if (end > ends[session->pod])
			ends[session->pod] = end;
	}
}

/* A pod is live while it holds a connection or its lease has not ended. */
bool
cb_pod_is_live(CbPod *pod, TimestampTz lease_end, TimestampTz now)
{
	return pod->incarnation != 0 && (pod->connections > 0 || lease_end > now);
}

static bool
cb_session_is_live(CbSession *session, TimestampTz now, int32 ttl_ms)
{
	return session->incarnation != 0 &&
		(session->connections > 0 || cb_session_lease_end(session, ttl_ms) > now);
}

/*
 * Free every session that is no longer live, every pod left without
 * sessions (a pod's connections and lease are its sessions'), and
 * applications that are left with nothing to keep.  Keeps enough
 * application slots free for every free pod slot and every application
 * that may still be configured, so that a connect never has to evict (it
 * cannot afford the scan).  Returns how many slots were freed.
 */
int
cb_reclaim_locked(TimestampTz now)
{
	int32		ttl = cb_shared->pod_ttl_ms;
	int			freed = 0;

	for (int i = 0; i < cb_shared->session_capacity; i++)
	{
		CbSession  *session = &cb_sessions[i];

		if (session->incarnation != 0 && !cb_session_is_live(session, now, ttl))
		{
			cb_free_session_locked(i);
			freed++;
		}
	}
	for (int i = 0; i < cb_shared->pod_capacity; i++)
	{
		CbPod	   *pod = &cb_pods[i];

		if (pod->incarnation != 0 && pod->nsessions == 0 && pod->connections == 0)
		{
			cb_free_pod_locked(i);
			freed++;
		}
	}
	for (int i = 0; i < cb_shared->app_capacity; i++)
	{
		CbApp	   *app = &cb_apps[i];

		if (app->incarnation != 0 && !app->configured && app->npods == 0 &&
			app->connections == 0 && app->refused == 0)
		{
			cb_free_app_locked(i);
			freed++;
		}
	}
	while (cb_shared->apps_free < cb_shared->pods_free +
		   (CB_MAX_CONFIGURED_APPS - cb_shared->configured_apps))
	{
		int			victim = cb_counter_only_app_locked();

		if (victim < 0)
			break;
		cb_free_app_locked(victim);
		freed++;
	}
	return freed;
}

/*
 * Without the lock: is any session's lease (or report) ending in
 * (since, now], or any slot waiting to be reclaimed?  Sets *next_event to
 * the earliest lease end after now (DT_NOEND if none).  The reads race
 * with connects and reports, which is harmless: both bump input_gen, so
 * the allocator looks again anyway.
 */
bool
cb_reclaim_due(TimestampTz since, TimestampTz now, TimestampTz *next_event)
{
	int32		ttl = cb_shared->pod_ttl_ms;
	bool		due = false;
	TimestampTz next = DT_NOEND;

	for (int i = 0; i < cb_shared->session_capacity; i++)
	{
		CbSession  *session = &cb_sessions[i];
		TimestampTz end;

		if (session->incarnation == 0)
			continue;
		end = cb_session_lease_end(session, ttl);
		if (end > now)
		{
			if (end < next)
				next = end;
		}
		else if (end > since || session->connections == 0)
			due = true;
	}
	*next_event = next;
	return due;
}

/* ---------------------------------------------------------------------
 * Counting backends
 * ---------------------------------------------------------------------
 */

/*
 * Where a backend with this identity is counted: governed when its
 * application is configured or it named its pod, "other" otherwise (and
 * "other" for an unconfigured application under unconfigured = other).
 * Adds the application, pod and session slots a governed one needs.  Puts
 * in admission->verdict why a connection that asks to be governed has no
 * place:
 *
 * CB_NO_ROOM	a table is full
 * CB_CLAIM_REFUSED its role may not claim the application (claim_ok is
 *				the verdict of claim.c, which reads the catalog)
 * CB_UNCONFIGURED_REFUSED it named a pod of an application without a row,
 *				under unconfigured_applications = refuse
 * CB_NOT_OWNER its explicit pod id belongs to another role
 * CB_ROLE_FULL its role already holds connbudget.max_pods_per_role pods,
 *				or as many pool sessions (role_sessions)
 *
 * and the backend is then "other".  With exempt (a superuser, enforce =
 * off, or a connection let in under warn) only CB_NO_ROOM is possible.
 * Connect and re-sort apply the same checks through this one function.  A
 * derived pod id (the client's address) is the role's own: two roles
 * connecting from one address are two pods.
 */
static CbBackendKind
cb_place_locked(const CbIdentity *id, TimestampTz now, bool exempt, bool claim_ok,
				int32 *app_out, int32 *pod_out, int32 *session_out,
				CbAdmission *admission)
{
	uint32		app_hash = cb_name_hash(id->application_name);
	uint32		pod_hash;
	uint32		session_hash;
	int			app;
	int			pod = -1;
	int			role;
	int			session;
	bool		new_app = false;
	bool		new_pod = false;
	bool		new_role = false;
	bool		derived = !id->explicit_pod;
	bool		configured;

	*app_out = *pod_out = *session_out = -1;
	admission->verdict = CB_ADMIT;
	admission->role_sessions = false;

	app = cb_find_app_locked(id->application_name, app_hash);
	configured = app >= 0 && cb_apps[app].configured;
	if (!configured && (derived || cb_shared->unconfigured == CB_UNCONFIGURED_OTHER))
		return CB_BACKEND_OTHER;
	if (!exempt && configured && !claim_ok)
	{
		admission->verdict = CB_CLAIM_REFUSED;
		return CB_BACKEND_OTHER;
	}
	if (!exempt && !configured && cb_shared->unconfigured == CB_UNCONFIGURED_REFUSE)
	{
		admission->verdict = CB_UNCONFIGURED_REFUSED;
		return CB_BACKEND_OTHER;
	}
	if (app < 0)
	{
		app = cb_add_app_locked(id->application_name, app_hash, false);
		new_app = true;
		if (app < 0)
		{
			admission->verdict = CB_NO_ROOM;
			return CB_BACKEND_OTHER;
		}
	}

	role = cb_find_role_locked(id->user_name);
	if (role >= 0 || !derived)
	{
		pod_hash = cb_pod_hash(app, id->pod, derived ? role : -1);
		pod = cb_find_pod_locked(app, id->pod, derived ? role : -1, pod_hash);
	}
	if (pod >= 0 && !derived && !exempt &&
		strcmp(cb_roles[cb_pods[pod].role].name, id->user_name) != 0)
	{
		strlcpy(admission->pod_owner, cb_roles[cb_pods[pod].role].name, CB_NAME_LEN);
		admission->verdict = CB_NOT_OWNER;
		return CB_BACKEND_OTHER;
	}
	if (pod < 0)
	{
		if (role < 0)
		{
			role = cb_add_role_locked(id->user_name);
			new_role = role >= 0;
		}
		if (role >= 0 && !exempt && cb_roles[role].npods >= cb_shared->max_pods_per_role)
		{
			admission->role_pods = cb_roles[role].npods;
			admission->role_limit = cb_shared->max_pods_per_role;
			admission->verdict = CB_ROLE_FULL;
		}
		else if (role >= 0)
		{
			pod_hash = cb_pod_hash(app, id->pod, derived ? role : -1);
			pod = cb_add_pod_locked(app, id->pod, role, derived, pod_hash, now);
			new_pod = pod >= 0;
		}
	}
	session = -1;
	if (pod >= 0)
	{
		session_hash = cb_session_hash(pod, id->session_token);
		session = cb_find_session_locked(pod, id->session_token, session_hash);
		role = cb_pods[pod].role;
		if (session < 0 && !exempt &&
			cb_roles[role].nsessions >= cb_shared->max_pods_per_role)
		{
			/* pool sessions take slots too: one role cannot fill them */
			admission->role_pods = cb_roles[role].nsessions;
			admission->role_limit = cb_shared->max_pods_per_role;
			admission->role_sessions = true;
			admission->verdict = CB_ROLE_FULL;
		}
		else if (session < 0)
			session = cb_add_session_locked(pod, id->session_token, session_hash);
	}
	if (session < 0)
	{
		/* undo what this backend added, so that nothing is left half made */
		if (new_pod)
			cb_free_pod_locked(pod);	/* releases the role */
		else if (new_role && cb_roles[role].npods == 0)
		{
			cb_roles[role].npods = 1;
			cb_release_role_locked(role);
		}
		if (new_app && cb_apps[app].npods == 0 && cb_apps[app].refused == 0)
			cb_free_app_locked(app);
		if (admission->verdict == CB_ADMIT)
			admission->verdict = CB_NO_ROOM;
		return CB_BACKEND_OTHER;
	}
	*app_out = app;
	*pod_out = pod;
	*session_out = session;
	return CB_BACKEND_GOVERNED;
}

/* Add a placed backend to the counts. */
static void
cb_count_locked(CbBackend *backend)
{
	if (backend->kind == CB_BACKEND_OTHER)
		cb_shared->other++;
	else if (backend->kind == CB_BACKEND_GOVERNED)
	{
		CbApp	   *app = &cb_apps[backend->app];

		if (app->connections >= app->min_connections)
			cb_shared->committed++;
		app->connections++;
		if (!app->configured)
			cb_shared->unconfigured_connections++;
		cb_pods[backend->pod].connections++;
		cb_sessions[backend->session].connections++;
		cb_shared->governed++;
	}
}

static void
cb_uncount_locked(CbBackend *backend)
{
	if (backend->kind == CB_BACKEND_OTHER)
		cb_shared->other--;
	else if (backend->kind == CB_BACKEND_GOVERNED)
	{
		CbApp	   *app = &cb_apps[backend->app];

		app->connections--;
		if (app->connections >= app->min_connections)
			cb_shared->committed--;
		if (!app->configured)
			cb_shared->unconfigured_connections--;
		cb_pods[backend->pod].connections--;
		cb_sessions[backend->session].connections--;
		cb_shared->governed--;
	}
}

/* Point pool_share() at the backend's session, or at nothing. */
static void
cb_set_reporting_locked(CbBackend *backend)
{
	uint64		reporting = 0;

	if (backend->kind == CB_BACKEND_GOVERNED)
		reporting = ((uint64) (backend->session + 1) << 32) |
			cb_sessions[backend->session].incarnation;
	if (pg_atomic_read_u64(&backend->reporting) != reporting)
		pg_atomic_write_u64(&backend->reporting, reporting);
}

static void
cb_clear_backend_locked(CbBackend *backend)
{
	backend->kind = CB_BACKEND_FREE;
	backend->verdict = CB_ADMIT;
	backend->app = backend->pod = backend->session = -1;
	cb_set_reporting_locked(backend);
}

/*
 * Place a backend that is already connected, as the connect hook would
 * place it now: with every check, unless it is exempt (a superuser, or
 * enforce = off); under warn one that fails a check stays governed, as it
 * was let in at connect time.
 */
static void
cb_replace_locked(CbBackend *backend, TimestampTz now, int enforce)
{
	CbAdmission placed;
	bool		exempt = backend->identity.superuser || enforce == CB_ENFORCE_OFF;

	backend->kind = cb_place_locked(&backend->identity, now, exempt, backend->claim_ok,
									&backend->app, &backend->pod, &backend->session,
									&placed);
	if (placed.verdict != CB_ADMIT && placed.verdict != CB_NO_ROOM && enforce == CB_ENFORCE_WARN)
		backend->kind = cb_place_locked(&backend->identity, now, true, true,
										&backend->app, &backend->pod,
										&backend->session, &placed);
	backend->verdict = placed.verdict;
}

/*
 * Re-sort every backend by its identity against the limits and settings
 * now in force, applying every check that admission applies at connect
 * time, and rebuild every count from scratch.  Needed when limits or
 * connbudget.unconfigured_applications change: configuring an application
 * turns its existing connections into governed ones, removing it turns
 * them back into "other", and binding it to roles leaves the connections
 * of other roles "other" (pool_share() then tells them why).  claims, if
 * given, holds claim.c's verdict for each backend slot under the new
 * limits (-1: keep the backend's own); enforce is the caller's setting.
 *
 * A backend that stays where it was keeps its slots, so its pool_share()
 * calls, which read them without the lock, never see it in between.  Pods
 * are placed in slot order: when two roles' connections ask for one pod
 * that nobody owned, the first one's role owns it and the other's
 * connections are "other".
 */
void
cb_recount_locked(TimestampTz now, const int8 *claims, int enforce)
{
	cb_shared->governed = 0;
	cb_shared->other = 0;
	cb_shared->committed = 0;
	cb_shared->unconfigured_connections = 0;
	for (int i = 0; i < cb_shared->app_capacity; i++)
		cb_apps[i].connections = 0;
	for (int i = 0; i < cb_shared->pod_capacity; i++)
		cb_pods[i].connections = 0;
	for (int i = 0; i < cb_shared->session_capacity; i++)
		cb_sessions[i].connections = 0;

	for (int i = 0; i < cb_shared->nbackends; i++)
	{
		CbBackend  *backend = &cb_backends[i];

		if (backend->kind == CB_BACKEND_FREE)
			continue;
		if (claims != NULL && claims[i] >= 0)
			backend->claim_ok = claims[i] != 0;
		cb_replace_locked(backend, now, enforce);
		cb_count_locked(backend);
		cb_set_reporting_locked(backend);
	}

	/* minimums changed too: what is committed, from scratch */
	cb_shared->committed = 0;
	for (int i = 0; i < cb_shared->app_capacity; i++)
		if (cb_apps[i].incarnation != 0)
			cb_shared->committed += Max(cb_apps[i].connections,
										cb_apps[i].min_connections);
	/* the limits the publisher copies may have changed too */
	cb_membership_changed();
	cb_inputs_changed();
}

/*
 * Copy out who claims what, for claim.c to judge before limits change:
 * every counted backend (its slot, role and application), and every pod
 * (its slot, incarnation, owner and application).  backends has room for
 * nbackends entries, pods for pod_capacity.  Returns the number of
 * backends; *npods gets the number of pods.
 */
int
cb_collect_claimants_locked(CbClaimant *backends, CbClaimant *pods, int *npods)
{
	int			nb = 0;
	int			np = 0;

	for (int i = 0; i < cb_shared->nbackends; i++)
	{
		CbBackend  *backend = &cb_backends[i];
		CbClaimant *c;

		if (backend->kind == CB_BACKEND_FREE)
			continue;
		c = &backends[nb++];
		c->slot = i;
		c->incarnation = 0;
		memcpy(c->user_name, backend->identity.user_name, CB_NAME_LEN);
		memcpy(c->application_name, backend->identity.application_name, CB_NAME_LEN);
		c->ok = true;
	}
	for (int i = 0; i < cb_shared->pod_capacity; i++)
	{
		CbPod	   *pod = &cb_pods[i];
		CbClaimant *c;

		if (pod->incarnation == 0)
			continue;
		c = &pods[np++];
		c->slot = i;
		c->incarnation = pod->incarnation;
		memcpy(c->user_name, cb_roles[pod->role].name, CB_NAME_LEN);
		memcpy(c->application_name, cb_apps[pod->app].name, CB_NAME_LEN);
		c->ok = true;
	}
	*npods = np;
	return nb;
}

/*
 * End the leases of pods whose owner may no longer claim their application
 * (those of their sessions, which are the pods'), so that they stop drawing
 * a share as soon as their connections are gone, not pod_ttl later.
 */
void
cb_revoke_leases_locked(const CbClaimant *pods, int npods)
{
	bool		any = false;

	for (int i = 0; i < npods; i++)
	{
		CbPod	   *pod = &cb_pods[pods[i].slot];

		if (pods[i].ok || pod->incarnation != pods[i].incarnation)
			continue;
		pod->revoked = true;
		any = true;
	}
	if (!any)
		return;
	for (int i = 0; i < cb_shared->session_capacity; i++)
	{
		CbSession  *session = &cb_sessions[i];

		if (session->incarnation != 0 && cb_pods[session->pod].revoked)
			pg_atomic_write_u64(&session->heartbeat, 0);
	}
	for (int i = 0; i < npods; i++)
		cb_pods[pods[i].slot].revoked = false;
	cb_inputs_changed();
}

/* ---------------------------------------------------------------------
 * Connect and exit
 * ---------------------------------------------------------------------
 */

/*
 * What the connect hook checks before it counts a connection: whether the
 * application is configured and which roles may claim it, and the
 * generation of the limits they were copied from.  Copied under the
 * shared lock; no catalog is read.  While limits are changing (an odd
 * generation) it waits for the new ones, at most CB_LIMITS_WAIT_MS.
 */
void
cb_application_binding(const char *application_name, CbBinding *binding)
{
	uint32		hash = cb_name_hash(application_name);
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   CB_LIMITS_WAIT_MS);

	for (;;)
	{
		int			app;

		LWLockAcquire(cb_shared->lock, LW_SHARED);
		binding->limits_gen = pg_atomic_read_u64(&cb_shared->limits_gen);
		if ((binding->limits_gen & 1) == 0 || GetCurrentTimestamp() >= deadline)
		{
			app = cb_find_app_locked(application_name, hash);
			binding->configured = app >= 0 && cb_apps[app].configured;
			binding->nroles = -1;
			if (binding->configured && cb_apps[app].role_list >= 0)
			{
				CbRoleList *list = &cb_role_lists[cb_apps[app].role_list];

				binding->nroles = list->nroles;
				memcpy(binding->roles, list->roles, sizeof(list->roles[0]) * list->nroles);
			}
			LWLockRelease(cb_shared->lock);
			return;
		}
		LWLockRelease(cb_shared->lock);
		pg_usleep(1000L);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * A role that may not claim a configured application tried to: count it
 * in the application's refusals.  Nothing else is touched: no pod, no
 * lease, no slot of its budget.
 */
void
cb_claim_refused(const char *application_name)
{
	int			app;

	LWLockAcquire(cb_shared->lock, LW_EXCLUSIVE);
	app = cb_find_app_locked(application_name, cb_name_hash(application_name));
	if (app >= 0 && cb_apps[app].configured)
	{
		cb_apps[app].refused++;
		cb_apps[app].last_refused = GetCurrentTimestamp();
	}
	LWLockRelease(cb_shared->lock);
}

/*
 * Record a refusal against this backend's application.  Unless the
 * connection is kept (enforce = warn), it is also uncounted, under the lock
 * that counted it: no view, no pool_share() and no other connect ever
 * counts a connection that is refused, and its slot is free before the
 * FATAL error reaches the client.
 *
 * A refused connection still renews its session's lease (and so its
 * pod's), and counts as a report of wanting one connection more than it
 * holds (unless its pool reported lately, and has not left since).
 * Otherwise a pod could never join a budget that the pods already there
 * fill: it needs a connection to be counted, and it cannot connect until
 * the others shrink, which they only do once it is counted.  With the
 * lease, the pod is live for pod_ttl, the others' shares shrink at their
 * next refresh, and the pod's retry finds room.
 */
static void
cb_refused_locked(CbBackend *me, bool keep, TimestampTz now)
{
	CbSession  *session = &cb_sessions[me->session];
	int32		demand;
	bool		stale;

	Assert(me->kind == CB_BACKEND_GOVERNED);
	cb_apps[me->app].refused++;
	cb_apps[me->app].last_refused = now;
	if (keep)
		return;
	demand = (int32) pg_atomic_read_u32(&session->demand);
	stale = demand == CB_NO_REPORT ||
		cb_session_lease_end(session, cb_shared->pod_ttl_ms) <= now;
	cb_uncount_locked(me);
	/* the heartbeat first, then the demand, as a report stores them */
	pg_atomic_write_u64(&session->heartbeat, (uint64) now);
	if (stale)
	{
		pg_write_barrier();
		pg_atomic_write_u32(&session->demand, (uint32) (session->connections + 1));
	}
	cb_clear_backend_locked(me);
}

/*
 * Count this backend first, then check it against the limits and record a
 * refusal, all under the exclusive lock; see the locking rules in state.h.
 * Every check applies unless the connection is a superuser's or enforce is
 * off; with lenient (a connection let in under warn after all) those
 * placing it do not.  The caller reports a verdict other than CB_ADMIT:
 * under enforce = on a connection over a limit is no longer counted by
 * then.  If the limits changed since the binding was copied, nothing is
 * done and admission->stale says so: the caller checks the claim again
 * against the new limits.
 *
 * A pod shows the address of its owner's connections only: a superuser,
 * or anybody under warn or off, who joins another role's pod is counted
 * in it but does not make its address visible to the pod's owner.
 */
void
cb_backend_attach(const CbIdentity *identity, const CbBinding *binding, bool claim_ok,
				  CbEnforce enforce, bool lenient, CbAdmission *admission)
{
	CbBackend  *me = &cb_backends[CB_MY_BACKEND_INDEX()];
	TimestampTz now = GetCurrentTimestamp();
	/* superusers are counted and never refused; enforce = off checks nothing */
	bool		unchecked = identity->superuser || enforce == CB_ENFORCE_OFF;

	memset(admission, 0, sizeof(CbAdmission));
	admission->verdict = CB_ADMIT;
	admission->capacity = cb_shared->pod_capacity;

	LWLockAcquire(cb_shared->lock, LW_EXCLUSIVE);

	if (pg_atomic_read_u64(&cb_shared->limits_gen) != binding->limits_gen)
	{
		LWLockRelease(cb_shared->lock);
		admission->stale = true;
		return;
	}

	/* placed before (a second attach), or a slot not emptied at exit */
	if (me->kind != CB_BACKEND_FREE)
		cb_uncount_locked(me);

	me->identity = *identity;
	me->claim_ok = claim_ok;
	me->kind = cb_place_locked(identity, now, unchecked || lenient, claim_ok, &me->app,
							   &me->pod, &me->session, admission);
	me->verdict = admission->verdict;
	cb_count_locked(me);
	cb_set_reporting_locked(me);

	if (me->kind == CB_BACKEND_GOVERNED)
	{
		CbApp	   *app = &cb_apps[me->app];
		CbPod	   *pod = &cb_pods[me->pod];
		CbAdmissionCounts *c = &admission->counts;

		if (strcmp(cb_roles[pod->role].name, identity->user_name) == 0)
			strlcpy(pod->client_addr, identity->client_addr, CB_ADDR_LEN);
		pg_atomic_write_u64(&pod->last_seen, (uint64) now);

		c->connections = app->connections;
		c->min_connections = app->min_connections;
		c->cap = app->max_connections;
		c->governed = cb_shared->governed;
		c->budget = cb_effective_budget_locked();
		c->committed = cb_shared->committed;
		c->unconfigured = !app->configured;
		c->unconfigured_connections = cb_shared->unconfigured_connections;
		c->unconfigured_cap = cb_shared->unconfigured_max;
		if (!unchecked)
			admission->verdict = cb_admission_verdict(c);
		if (admission->verdict != CB_ADMIT)
			cb_refused_locked(me, enforce == CB_ENFORCE_WARN, now);
	}
	cb_inputs_changed();

	LWLockRelease(cb_shared->lock);
}

/* The generation of the limits in force (odd while they change). */
uint64
cb_current_limits_gen(void)
{
	return pg_atomic_read_u64(&cb_shared->limits_gen);
}

bool
cb_backend_governed(void)
{
	return cb_backends[CB_MY_BACKEND_INDEX()].kind == CB_BACKEND_GOVERNED;
}

/* This backend's identity as it was counted (or NULL if it was not). */
const CbIdentity *
cb_backend_identity(void)
{
	CbBackend  *me = &cb_backends[CB_MY_BACKEND_INDEX()];

	return me->kind == CB_BACKEND_FREE ? NULL : &me->identity;
}

/*
 * Why this backend is "other" although it asked to be governed (CB_ADMIT
 * if it is governed, or plainly "other").  Only re-sorts, under the
 * exclusive lock, change it after connect; reading our own slot's enum
 * without the lock sees the old or the new value.
 */
CbVerdict
cb_backend_verdict(void)
{
	return cb_backends[CB_MY_BACKEND_INDEX()].verdict;
}

/*
 * This backend failed a check that it passed at connect time (its role
 * lost the application): count it as "other" from now on, and say why.
 */
void
cb_backend_demote(CbVerdict verdict)
{
	CbBackend  *me = &cb_backends[CB_MY_BACKEND_INDEX()];

	LWLockAcquire(cb_shared->lock, LW_EXCLUSIVE);
	if (me->kind == CB_BACKEND_GOVERNED)
	{
		cb_uncount_locked(me);
		me->kind = CB_BACKEND_OTHER;
		me->app = me->pod = me->session = -1;
		me->claim_ok = verdict != CB_CLAIM_REFUSED;
		me->verdict = verdict;
		cb_count_locked(me);
		cb_set_reporting_locked(me);
		cb_inputs_changed();
	}
	LWLockRelease(cb_shared->lock);
}

/*
 * Exit callback: release this backend's slot.  Runs on every exit path of
 * a backend that was counted (normal exit, FATAL during startup,
 * pg_terminate_backend), among the last exit callbacks (connect.c); a
 * crash reinitialises shared memory instead.
 */
void
cb_backend_detach(void)
{
	CbBackend  *me;

	if (cb_shared == NULL)
		return;
	me = &cb_backends[CB_MY_BACKEND_INDEX()];
	LWLockAcquire(cb_shared->lock, LW_EXCLUSIVE);
	if (me->kind != CB_BACKEND_FREE)
	{
		cb_uncount_locked(me);
		cb_clear_backend_locked(me);
		cb_inputs_changed();
	}
	LWLockRelease(cb_shared->lock);
}
