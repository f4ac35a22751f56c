-- connbudget 1.1 -> 1.2: the views say what their columns mean,
-- pool_share() returns its columns as OUT parameters instead of the row type
-- pool_share_result (the same columns, in the same order), and the view
-- slots shows how full the shared-memory tables are.  The library of
-- 1.2 adds the protocol's settings connbudget.demand and connbudget.share,
-- which need no object of the extension.

\echo Use "ALTER EXTENSION connbudget UPDATE TO '1.2'" to load this file. \quit

DROP FUNCTION connbudget.pool_share(integer);
DROP TYPE connbudget.pool_share_result;
-- The share of the calling session's pod; renews the pod's lease.  Its
-- result columns are OUT parameters, not a named row type: a row type is a
-- relation the parser opens when it plans a call, and a DROP EXTENSION that
-- commits meanwhile would make that an internal error rather than a clean
-- "function does not exist".
CREATE FUNCTION connbudget.pool_share(demand integer DEFAULT NULL,
    OUT max_size integer,
    OUT min_size integer,
    OUT allocation integer,
    OUT pods integer,
    OUT budget integer,
    OUT refresh_ms integer)
RETURNS record
AS 'MODULE_PATHNAME', 'connbudget_pool_share'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION connbudget.pool_share(integer) IS
    'Renew this session''s pod lease, report its demand (NULL: unbounded) and return its share';

COMMENT ON COLUMN connbudget.pods.share IS
    'Connections the pod''s pools may hold.  A pod whose pools never reported a demand (pool_share() or connbudget.demand) demands what it holds, so its share is what it holds: a sign of no report, not of a tight budget';
COMMENT ON COLUMN connbudget.pods.demand IS
    'The pod''s demand as last shared: the sum of its pools'' reports; a pool that never reported, or whose report is older than connbudget.pod_ttl, counts the connections it holds; NULL: unbounded';
COMMENT ON COLUMN connbudget.pods.lease_expires IS
    'When the pod stops being live if it holds no connection: connbudget.pod_ttl after its last report; NULL: it never reported';
COMMENT ON COLUMN connbudget.pods.client_addr IS
    'Where the pod''s own role connects from, shown as pg_stat_activity shows client_addr';
COMMENT ON COLUMN connbudget.applications.allocation IS
    'Connections allocated to the application: its guaranteed minimum and its part of the rest, bounded by its cap and its pods'' demand';
COMMENT ON COLUMN connbudget.applications.demand IS
    'The sum of its live pods'' demands (see connbudget.pods.demand); NULL: unbounded';
COMMENT ON COLUMN connbudget.budget.budget IS
    'max_connections minus every reserve, minus what "other" connections use beyond the reserves';

CREATE FUNCTION connbudget.read_slots(
    OUT kind text,
    OUT used integer,
    OUT capacity integer,
    OUT consistent boolean)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'connbudget_read_slots'
LANGUAGE C VOLATILE;

CREATE VIEW connbudget.slots AS
    SELECT * FROM connbudget.read_slots();

COMMENT ON VIEW connbudget.slots IS
    'How full connbudget''s shared-memory tables are: backends, applications, pods, pool sessions, roles, role lists';
COMMENT ON COLUMN connbudget.slots.consistent IS
    'The slots in use agree with the free list and the lookup table (backends: with the governed and other counts); false is a bug';

GRANT SELECT ON connbudget.slots TO PUBLIC;
