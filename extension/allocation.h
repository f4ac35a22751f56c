/*-------------------------------------------------------------------------
 *
 * allocation.h
 *	  The budget arithmetic of connbudget: how a server's connection budget
 *	  is shared among applications and their pods.
 *
 * This is the heart of the extension and deliberately knows nothing about
 * PostgreSQL: plain structs in, plain numbers out, no allocation, no I/O.
 * The connect hook, the views and pool_share() only gather its inputs from
 * shared memory and publish its outputs.  The unit tests in test/unit
 * exercise it exhaustively.
 *
 * The rules (see README "Budget arithmetic"):
 *
 * 1. Every application gets its min_connections first, held for it even
 *	  while it has no live pod.  If the budget cannot cover all minimums
 *	  (only possible when "other" connections overflow the reserve), the
 *	  budget is shared among the minimums by weighted max-min fairness.
 * 2. The rest is shared among applications that have live pods by weighted
 *	  max-min fairness (water-filling); an application's allocation is
 *	  bounded by its cap and by its demand (the sum of its pods' demands, or
 *	  unbounded if any pod reported none).
 * 3. An application's allocation is shared among its live pods the same
 *	  way, with equal weights and each pod bounded by its demand; each pod
 *	  first receives its part of the application's guaranteed minimum.
 * 4. Exact integers throughout.  A level that does not divide evenly is
 *	  rounded down and the leftover units go one each to the items with the
 *	  largest fractional part, ties broken by ascending name (for pods:
 *	  ascending pod id).  The sum never exceeds the budget.
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
	int32_t		demand;			/* >= 0, or CB_UNBOUNDED */

	/* outputs */
	int32_t		share;			/* the pod's pool may hold this many */
	int32_t		min_share;		/* its part of the app's guaranteed min */
} CbAllocPod;

/*
 * Bytes of scratch memory cb_allocate() needs for the given input size.
 * The caller provides it so that the arithmetic never allocates.
 */
extern size_t cb_allocation_work_size(int napps, int npods);

/*
 * Share "budget" among apps and pods; fills in the output fields.  Every
 * app in the array takes part (configured apps with or without pods, and
 * unconfigured apps that have pods); every pod in the array is live.
 * Returns the number of connections that were allocated to applications
 * (never more than budget).
 */
extern int64_t cb_allocate(int32_t budget,
						   CbAllocApp *apps, int napps,
						   CbAllocPod *pods, int npods,
						   void *work);

#endif							/* CONNBUDGET_ALLOCATION_H */
