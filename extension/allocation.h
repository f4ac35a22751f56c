/*-------------------------------------------------------------------------
 *
 * allocation.h
 *	  The pure core of connbudget: how a server's connection budget is
 *	  shared among applications, their pods and the pods' pool sessions,
 *	  and whether a new connection may be admitted.
 *
 * This is the heart of the extension and deliberately knows nothing about
 * PostgreSQL: plain structs in, plain numbers out, no allocation, no I/O.
 * The connect hook, the views, pool_share() and the allocator worker only
 * gather its inputs from shared memory and publish its outputs.  The unit
 * tests in test/unit exercise it exhaustively.
 *
 * The rules (see docs/identity-and-arithmetic.md), one step each:
 *
 * 0. Order.  Applications by name; pods by application, then pod id;
 *	  sessions by pod, then token.  The order only breaks ties, so a caller
 *	  that shares the same inputs again and again (the allocator worker)
 *	  computes it once and keeps it while nobody joins or leaves.
 * 1. Minimums.  Every application gets its min_connections first, held for
 *	  it even while it has no live pod.  If the budget cannot cover all
 *	  minimums (only possible when "other" connections overflow the
 *	  reserve), the budget is shared among the minimums by weighted max-min
 *	  fairness.
 * 2. Applications.  The rest is shared among applications that have live
 *	  pods by weighted max-min fairness (water-filling); an application's
 *	  allocation is bounded by its cap and by its demand (the sum of its
 *	  pods' demands, or unbounded if any pod's demand is unbounded).  The
 *	  applications marked "unconfigured" (those without a row in
 *	  application_limits) are also bounded together, by unconfigured_cap: if they
 *	  would take more, they share unconfigured_cap among themselves and the
 *	  others share the rest.
 * 3. Pods.  An application's allocation is shared among its live pods the
 *	  same way, with equal weights and each pod bounded by its demand; each
 *	  pod first receives its part of the application's guaranteed minimum.
 * 4. Sessions.  A pod's share is split among its pool sessions (the pools
 *	  that report for it) the same way again, so that two pools that give
 *	  one pod id never hold more than the pod's share together.
 *
 * Exact integers throughout.  A level that does not divide evenly is
 * rounded down and the leftover units go one each to the items with the
 * largest fractional part, ties broken by the order of step 0.  The sum
 * never exceeds the budget.
 *
 * Admission (cb_admission_verdict) is the connect-time rule: counted
 * first, then checked, so that the verdict for the connection that takes
 * the last slot and for the one after it differ.
 *
 * Portions Copyright (c) connbudget authors.  Licensed under the
 * PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONNBUDGET_ALLOCATION_H
#define CONNBUDGET_ALLOCATION_H

#include <stddef.h>
#include <stdint.h>

/* "No bound": an application without a cap, a pod that reported no demand. */
#define CB_UNBOUNDED (-1)

typedef struct CbAllocApp
{
	/* inputs */
	const char *name;			/* tie-breaker; unique among apps */
	int32_t		min_connections;	/* >= 0 */
	int32_t		max_connections;	/* cap, or CB_UNBOUNDED */
	int32_t		weight;			/* >= 1 */
	int32_t		unconfigured;			/* 1: bounded with the others by unconfigured_cap */

	/* outputs */
	int32_t		allocation;		/* connections allocated to the app */
	int32_t		guaranteed;		/* part of allocation that is its minimum */
	int32_t		live_pods;		/* pods of this app in the input */
	int64_t		demand;			/* sum of pod demands, or CB_UNBOUNDED */
} CbAllocApp;

typedef struct CbAllocPod
{
	/* inputs */
	int32_t		app;			/* index into the apps array */
	const char *id;				/* tie-breaker; unique within its app */
	int32_t		demand;			/* >= 0, or CB_UNBOUNDED; with sessions,
								 * an output: the sum of theirs */

	/* outputs */
	int32_t		share;			/* the pod's pools may hold this many */
	int32_t		min_share;		/* its part of the app's guaranteed min */
} CbAllocPod;

typedef struct CbAllocSession
{
	/* inputs */
	int32_t		pod;			/* index into the pods array */
	uint64_t	token;			/* tie-breaker; unique within its pod */
	int32_t		demand;			/* >= 0, or CB_UNBOUNDED */

	/* outputs */
	int32_t		share;			/* this pool may hold this many */
	int32_t		min_share;		/* its part of the pod's min_share */
} CbAllocSession;

/*
 * Step 0's result: input positions in tie-breaking order.  pod_order lists
 * pods grouped by application, the groups in app_order's order;
 * session_order lists sessions grouped by pod, the groups in pod_order's
 * order.  It stays valid while the same items sit at the same positions.
 */
typedef struct CbAllocOrder
{
	int32_t    *app_order;		/* napps entries */
	int32_t    *pod_order;		/* npods entries */
	int32_t    *session_order;	/* nsessions entries */
} CbAllocOrder;

/*
 * Bytes of scratch memory the functions below need for the given input
 * size.  The caller provides it so that the arithmetic never allocates.
 */
extern size_t cb_allocation_work_size(int napps, int npods);
extern size_t cb_allocation_work_size_sessions(int napps, int npods,
											   int nsessions);

/* Step 0: fill in order (whose arrays the caller provides). */
extern void cb_allocation_order(const CbAllocApp *apps, int napps,
								const CbAllocPod *pods, int npods,
								const CbAllocSession *sessions, int nsessions,
								CbAllocOrder *order, void *work);

/*
 * Steps 1 to 4 over ordered input; fills in the output fields.  Every app
 * in the array takes part (configured apps with or without pods, and
 * unconfigured apps that have pods); every pod and session is live.  With
 * nsessions = 0 the pods' demands are inputs; otherwise each pod's demand
 * is the sum of its sessions' (a pod without sessions demands 0).  Returns
 * the number of connections allocated to applications (never more than
 * budget).
 */
extern int64_t cb_allocate_ordered(int32_t budget, int32_t unconfigured_cap,
								   CbAllocApp *apps, int napps,
								   CbAllocPod *pods, int npods,
								   CbAllocSession *sessions, int nsessions,
								   const CbAllocOrder *order, void *work);

/* Steps 0 to 3 for apps and pods in any order, without sessions or a
 * cap for the unconfigured ones. */
extern int64_t cb_allocate(int32_t budget,
						   CbAllocApp *apps, int napps,
						   CbAllocPod *pods, int npods,
						   void *work);

/* ---- admission ---- */

/*
 * What becomes of a connection that asks to be governed: the one
 * vocabulary of admission, at connect time and whenever open connections
 * are sorted again.  The first group is decided here, on the counts; the
 * second by the registry, before it counts: a connection refused there is
 * not counted where it asked to be, and is "other" until refused.
 */
typedef enum CbVerdict
{
	CB_ADMIT,
	/* counted, and over a limit (cb_admission_verdict) */
	CB_OVER_CAP,				/* the application holds its cap */
	CB_OVER_UNCONFIGURED_CAP,	/* applications without a row together hold
								 * their cap */
	CB_OVER_BUDGET,				/* governed connections fill the budget */
	CB_OVER_MINIMUMS,			/* would eat another app's unused minimum */
	/* not counted where it asked to be */
	CB_NO_ROOM,					/* every slot of the pod (or session) table
								 * is taken */
	CB_NOT_OWNER,				/* its pod belongs to another role */
	CB_ROLE_FULL,				/* its role holds max_pods_per_role pods, or
								 * as many pool sessions */
	CB_CLAIM_REFUSED,			/* its role may not claim its application */
	CB_UNCONFIGURED_REFUSED		/* unconfigured_applications = refuse */
} CbVerdict;

/*
 * The counts a verdict is made from, each already counting the connection
 * being admitted.
 */
typedef struct CbAdmissionCounts
{
	int32_t		connections;	/* the application's governed connections */
	int32_t		min_connections;	/* the application's minimum */
	int32_t		cap;			/* the application's cap, or CB_UNBOUNDED */
	int32_t		governed;		/* governed connections of all apps */
	int32_t		budget;			/* the effective budget */
	int32_t		committed;		/* sum over apps of max(connections, min) */
	int32_t		unconfigured;	/* 1: the app has no row in application_limits */
	int32_t		unconfigured_connections; /* governed connections of all of them */
	int32_t		unconfigured_cap;		/* their cap together, or CB_UNBOUNDED */
} CbAdmissionCounts;

extern CbVerdict cb_admission_verdict(const CbAdmissionCounts *counts);

#endif							/* CONNBUDGET_ALLOCATION_H */
