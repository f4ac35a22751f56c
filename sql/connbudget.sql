-- connbudget: connection budgets, fair per-pod pool sizes and per-application
-- connection limits.  This is the full install script of the current version;
-- the Makefile copies it to connbudget--<version>.sql.  Released scripts are
-- never edited: changes go into connbudget--<from>--<to>.sql.

\echo Use "CREATE EXTENSION connbudget" to load this file. \quit

-- Limits per application.  Plain DML is the management interface.
CREATE TABLE connbudget.application_limits (
    application_name text NOT NULL PRIMARY KEY
        CONSTRAINT application_name_not_empty
            CHECK (application_name OPERATOR(pg_catalog.<>) '')
        CONSTRAINT application_name_at_most_63_bytes
            CHECK (pg_catalog.octet_length(application_name) OPERATOR(pg_catalog.<=) 63)
        CONSTRAINT application_name_printable_ascii
            CHECK (application_name OPERATOR(pg_catalog.~) '^[\x20-\x7e]*$'),
    min_connections integer NOT NULL DEFAULT 0
        CONSTRAINT min_connections_not_negative
            CHECK (min_connections OPERATOR(pg_catalog.>=) 0),
    max_connections integer
        CONSTRAINT max_connections_not_negative
            CHECK (max_connections OPERATOR(pg_catalog.>=) 0),
    weight integer NOT NULL DEFAULT 1
        CONSTRAINT weight_at_least_1
            CHECK (weight OPERATOR(pg_catalog.>=) 1),
    CONSTRAINT min_connections_not_above_max_connections
        CHECK (max_connections IS NULL
               OR min_connections OPERATOR(pg_catalog.<=) max_connections),
    roles name[]
        CONSTRAINT roles_not_empty_list
            CHECK (pg_catalog.cardinality(roles) OPERATOR(pg_catalog.>=) 1)
        CONSTRAINT roles_at_most_16
            CHECK (pg_catalog.cardinality(roles) OPERATOR(pg_catalog.<=) 16)
        CONSTRAINT roles_one_dimension
            CHECK (pg_catalog.array_ndims(roles) OPERATOR(pg_catalog.=) 1)
        CONSTRAINT roles_no_null
            CHECK (pg_catalog.array_ndims(roles) OPERATOR(pg_catalog.<>) 1
                   OR pg_catalog.array_position(roles, NULL) IS NULL)
        CONSTRAINT roles_no_empty_name
            CHECK (pg_catalog.array_ndims(roles) OPERATOR(pg_catalog.<>) 1
                   OR pg_catalog.array_position(roles, ''::pg_catalog.name) IS NULL)
);

COMMENT ON TABLE connbudget.application_limits IS
    'Connection limits per application_name; changes apply to the next connection and the next pool_share() call';
COMMENT ON COLUMN connbudget.application_limits.min_connections IS
    'Connections guaranteed to the application, held for it even while it has no pod';
COMMENT ON COLUMN connbudget.application_limits.max_connections IS
    'Most connections the application may hold; NULL for no cap';
COMMENT ON COLUMN connbudget.application_limits.weight IS
    'Relative share of the budget beyond the minimums';
COMMENT ON COLUMN connbudget.application_limits.roles IS
    'Roles (or members of them) that may connect as this application; NULL for any role';

SELECT pg_catalog.pg_extension_config_dump('connbudget.application_limits', '');

CREATE FUNCTION connbudget.limits_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'connbudget_limits_changed'
LANGUAGE C;

CREATE TRIGGER application_limits_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON connbudget.application_limits
    FOR EACH STATEMENT EXECUTE FUNCTION connbudget.limits_changed();

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

CREATE FUNCTION connbudget.read_budget(
    OUT max_connections integer,
    OUT superuser_reserved integer,
    OUT reserved_connections integer,
    OUT extension_reserved integer,
    OUT budget integer,
    OUT governed integer,
    OUT other integer,
    OUT free integer,
    OUT applications integer,
    OUT pods integer)
RETURNS record
AS 'MODULE_PATHNAME', 'connbudget_read_budget'
LANGUAGE C VOLATILE;

CREATE FUNCTION connbudget.read_applications(
    OUT application_name text,
    OUT min_connections integer,
    OUT max_connections integer,
    OUT weight integer,
    OUT allocation integer,
    OUT connections integer,
    OUT pods integer,
    OUT demand bigint,
    OUT refused bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'connbudget_read_applications'
LANGUAGE C VOLATILE;

CREATE FUNCTION connbudget.read_pods(
    OUT application_name text,
    OUT pod text,
    OUT connections integer,
    OUT share integer,
    OUT demand integer,
    OUT client_addr inet,
    OUT first_seen timestamptz,
    OUT last_seen timestamptz,
    OUT lease_expires timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'connbudget_read_pods'
LANGUAGE C VOLATILE;

CREATE VIEW connbudget.budget AS
    SELECT * FROM connbudget.read_budget();

CREATE VIEW connbudget.applications AS
    SELECT * FROM connbudget.read_applications()
    ORDER BY application_name COLLATE "C";

CREATE VIEW connbudget.pods AS
    SELECT * FROM connbudget.read_pods()
    ORDER BY application_name COLLATE "C", pod COLLATE "C";

COMMENT ON VIEW connbudget.budget IS
    'The server''s connection budget and how it is used';
COMMENT ON VIEW connbudget.applications IS
    'One row per configured or active application: limits, allocation, use';
COMMENT ON VIEW connbudget.pods IS
    'One row per live pod: connections, share, demand, lease';
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

-- Reading is for everybody (names are no more secret than in
-- pg_stat_activity); changing limits is for the owner and whom it grants.
GRANT USAGE ON SCHEMA connbudget TO PUBLIC;
REVOKE ALL ON connbudget.application_limits FROM PUBLIC;
GRANT SELECT ON connbudget.application_limits TO PUBLIC;
GRANT SELECT ON connbudget.budget, connbudget.applications, connbudget.pods TO PUBLIC;
REVOKE ALL ON FUNCTION connbudget.limits_changed() FROM PUBLIC;

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
