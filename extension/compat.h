/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  Every difference between PostgreSQL major versions that connbudget
 *	  depends on, in one place.  No other file tests PG_VERSION_NUM.
 *
 * Portions Copyright (c) connbudget authors.  Licensed under the
 * PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONNBUDGET_COMPAT_H
#define CONNBUDGET_COMPAT_H

#include "miscadmin.h"
#include "postmaster/postmaster.h"

#if PG_VERSION_NUM < 150000
#error "connbudget requires PostgreSQL 15 or later"
#endif

/*
 * This backend's index into per-backend arrays of MaxBackends entries.
 * PostgreSQL 17 replaced the 1-based BackendId with the 0-based
 * ProcNumber.  In a parallel worker, CB_LEADER_BACKEND_INDEX() is the
 * index of the backend it works for.
 */
#if PG_VERSION_NUM >= 170000
#include "storage/procnumber.h"
#define CB_MY_BACKEND_INDEX()	((int) MyProcNumber)
#define CB_LEADER_BACKEND_INDEX() \
	((int) (ParallelLeaderProcNumber != INVALID_PROC_NUMBER ? \
			ParallelLeaderProcNumber : MyProcNumber))
#else
#include "storage/backendid.h"
#define CB_MY_BACKEND_INDEX()	((int) MyBackendId - 1)
#define CB_LEADER_BACKEND_INDEX() \
	((int) (ParallelLeaderBackendId != InvalidBackendId ? \
			ParallelLeaderBackendId : MyBackendId) - 1)
#endif

/*
 * Connection slots held back by the server itself: PostgreSQL 16 renamed
 * ReservedBackends to SuperuserReservedConnections and added
 * reserved_connections (for roles with pg_use_reserved_connections).
 */
#if PG_VERSION_NUM >= 160000
#define CB_SUPERUSER_RESERVED()	(SuperuserReservedConnections)
#define CB_SERVER_RESERVED()	(ReservedConnections)
#else
#define CB_SUPERUSER_RESERVED()	(ReservedBackends)
#define CB_SERVER_RESERVED()	(0)
#endif

/*
 * How pg_stat_activity shows the bytes of application_name that are not
 * printable ASCII: PostgreSQL 16 made them \xNN escapes; before, each was
 * a '?'.
 */
#if PG_VERSION_NUM >= 160000
#define CB_APPNAME_ESCAPES_BYTES 1
#else
#define CB_APPNAME_ESCAPES_BYTES 0
#endif

/*
 * Does a role own a relation?  PostgreSQL 16 replaced the per-class owner
 * checks with object_ownercheck().
 */
#if PG_VERSION_NUM >= 160000
#include "catalog/pg_class.h"
#include "utils/acl.h"
#define CB_OWNS_RELATION(relid, roleid) object_ownercheck(RelationRelationId, (relid), (roleid))
#else
#include "utils/acl.h"
#define CB_OWNS_RELATION(relid, roleid) pg_class_ownercheck((relid), (roleid))
#endif

#endif							/* CONNBUDGET_COMPAT_H */
