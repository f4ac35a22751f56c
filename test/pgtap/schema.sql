\ir preamble.psql

-- The objects of SPEC section 3.4: schema, limits table, views, pool_share(),
-- and the registration that makes pg_dump include the limits.

BEGIN;
SELECT plan(49);

-- ---- extension and schema -------------------------------------------------

SELECT has_extension('connbudget', 'extension connbudget is installed');
SELECT is(
    (SELECT n.nspname::text FROM pg_extension e
       JOIN pg_namespace n ON n.oid = e.extnamespace
      WHERE e.extname = 'connbudget'),
    'connbudget',
    'extension connbudget lives in schema connbudget');
SELECT has_schema('connbudget', 'schema connbudget exists');

-- ---- connbudget.application_limits ----------------------------------------

SELECT has_table('connbudget', 'application_limits',
    'table connbudget.application_limits exists');
SELECT col_type_is('connbudget', 'application_limits', name, type,
                   format('application_limits.%s is %s', name, type))
  FROM (VALUES ('application_name', 'text'), ('min_connections', 'integer'),
               ('max_connections', 'integer'), ('weight', 'integer'),
               ('roles', 'name[]')) AS c(name, type);

SELECT CASE WHEN nullable
            THEN col_is_null('connbudget', 'application_limits', name, description)
            ELSE col_not_null('connbudget', 'application_limits', name, description) END
  FROM (VALUES
    ('application_name', false, 'application_limits.application_name is NOT NULL'),
    ('min_connections', false, 'application_limits.min_connections is NOT NULL'),
    ('max_connections', true, 'application_limits.max_connections is nullable (NULL = no cap)'),
    ('weight', false, 'application_limits.weight is NOT NULL'),
    ('roles', true, 'application_limits.roles is nullable (NULL = any role)')
  ) AS c(name, nullable, description);

SELECT CASE WHEN "default" IS NULL
            THEN col_hasnt_default('connbudget', 'application_limits', name, description)
            ELSE col_default_is('connbudget', 'application_limits', name, "default", description) END
  FROM (VALUES
    ('application_name', NULL, 'application_limits.application_name has no default'),
    ('min_connections', '0', 'application_limits.min_connections defaults to 0'),
    ('max_connections', NULL, 'application_limits.max_connections has no default (NULL: uncapped)'),
    ('weight', '1', 'application_limits.weight defaults to 1'),
    ('roles', NULL, 'application_limits.roles has no default (NULL: any role)')
  ) AS c(name, "default", description);

SELECT has_pk('connbudget', 'application_limits',
    'application_limits has a primary key');
SELECT col_is_pk('connbudget', 'application_limits', 'application_name',
    'the primary key of application_limits is application_name');

SELECT set_eq(
    $$SELECT conname::text COLLATE "default" FROM pg_constraint
       WHERE conrelid = 'connbudget.application_limits'::regclass AND contype = 'c'$$,
    ARRAY['application_name_not_empty', 'application_name_at_most_63_bytes',
          'application_name_printable_ascii', 'min_connections_not_negative',
          'max_connections_not_negative', 'weight_at_least_1',
          'min_connections_not_above_max_connections', 'roles_not_empty_list',
          'roles_at_most_16', 'roles_one_dimension', 'roles_no_null',
          'roles_no_empty_name'],
    'application_limits has exactly the named check constraints');

SELECT has_trigger('connbudget', 'application_limits', 'application_limits_changed',
    'application_limits has the trigger that puts changes in force');
SELECT trigger_is('connbudget', 'application_limits', 'application_limits_changed',
    'connbudget', 'limits_changed',
    'the application_limits trigger calls connbudget.limits_changed()');
SELECT results_eq(
    $$SELECT tgtype::int FROM pg_trigger
       WHERE tgrelid = 'connbudget.application_limits'::regclass
         AND tgname = 'application_limits_changed'$$,
    -- AFTER (no BEFORE bit 2), FOR EACH STATEMENT (no ROW bit 1),
    -- INSERT 4 + DELETE 8 + UPDATE 16 + TRUNCATE 32
    ARRAY[4 | 8 | 16 | 32],
    'the trigger fires after each INSERT, UPDATE, DELETE and TRUNCATE statement');

-- pg_dump includes the rows (pg_extension_config_dump)
SELECT results_eq(
    $$SELECT extconfig::regclass[]::text COLLATE "default", extcondition::text COLLATE "default"
        FROM pg_extension WHERE extname = 'connbudget'$$,
    $$VALUES ('{connbudget.application_limits}', '{""}')$$,
    'application_limits is registered with pg_extension_config_dump, all rows dumped');

-- ---- views ----------------------------------------------------------------

SELECT has_view('connbudget', 'budget', 'view connbudget.budget exists');
SELECT has_view('connbudget', 'applications', 'view connbudget.applications exists');
SELECT has_view('connbudget', 'pods', 'view connbudget.pods exists');
SELECT has_view('connbudget', 'slots', 'view connbudget.slots exists');

-- ---- the columns of the table and the views ---------------------------------

-- each exactly these, in this order, with these types (SPEC 3.4)
SELECT is(
    (SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position)
       FROM information_schema.columns
      WHERE table_schema = 'connbudget' AND table_name = name),
    columns,
    format('%s has the columns %s', name, columns))
  FROM (VALUES
    ('application_limits', 'application_name text, min_connections integer, max_connections integer, weight integer, roles ARRAY'),
    ('budget', 'max_connections integer, superuser_reserved integer, reserved_connections integer, extension_reserved integer, budget integer, governed integer, other integer, free integer, applications integer, pods integer'),
    ('applications', 'application_name text, min_connections integer, max_connections integer, weight integer, allocation integer, connections integer, pods integer, demand bigint, refused bigint'),
    ('pods', 'application_name text, pod text, connections integer, share integer, demand integer, client_addr inet, first_seen timestamp with time zone, last_seen timestamp with time zone, lease_expires timestamp with time zone'),
    ('slots', 'kind text, used integer, capacity integer, consistent boolean')
  ) AS t(name, columns);

SELECT columns_are('connbudget', name, columns, format('view %s has no column beyond those of SPEC 3.4', name))
  FROM (VALUES
    ('budget', ARRAY['max_connections', 'superuser_reserved', 'reserved_connections',
                     'extension_reserved', 'budget', 'governed', 'other', 'free',
                     'applications', 'pods']::name[]),
    ('applications', ARRAY['application_name', 'min_connections', 'max_connections', 'weight',
                           'allocation', 'connections', 'pods', 'demand', 'refused']),
    ('pods', ARRAY['application_name', 'pod', 'connections', 'share', 'demand',
                   'client_addr', 'first_seen', 'last_seen', 'lease_expires'])
  ) AS v(name, columns);

-- ---- pool_share(integer) --------------------------------------------------

SELECT has_function('connbudget', 'pool_share', ARRAY['integer'],
    'function connbudget.pool_share(integer) exists');
SELECT is(
    (SELECT count(*)::int FROM pg_proc
      WHERE pronamespace = 'connbudget'::regnamespace AND proname = 'pool_share'),
    1,
    'pool_share is not overloaded');
SELECT function_returns('connbudget', 'pool_share', ARRAY['integer'], 'record',
    'pool_share(integer) returns a record of OUT parameters');
SELECT isnt(
    (SELECT proretset FROM pg_proc WHERE oid = 'connbudget.pool_share(integer)'::regprocedure),
    true,
    'pool_share(integer) returns one row, not a set');
SELECT volatility_is('connbudget', 'pool_share', ARRAY['integer'], 'volatile',
    'pool_share(integer) is VOLATILE (it renews the lease)');
SELECT results_eq(
    $$SELECT p.parameter_mode::text COLLATE "default",
             p.parameter_name::text COLLATE "default",
             p.data_type::text COLLATE "default",
             p.parameter_default::text COLLATE "default"
        FROM information_schema.parameters p
        JOIN information_schema.routines r USING (specific_catalog, specific_schema, specific_name)
       WHERE r.routine_schema = 'connbudget' AND r.routine_name = 'pool_share'
       ORDER BY p.ordinal_position$$,
    $$VALUES ('IN', 'demand', 'integer', 'NULL::integer'),
             ('OUT', 'max_size', 'integer', NULL), ('OUT', 'min_size', 'integer', NULL),
             ('OUT', 'allocation', 'integer', NULL), ('OUT', 'pods', 'integer', NULL),
             ('OUT', 'budget', 'integer', NULL), ('OUT', 'refresh_ms', 'integer', NULL)$$,
    'pool_share takes one argument, demand integer DEFAULT NULL, and returns max_size, min_size, allocation, pods, budget, refresh_ms (all integer), in that order');
SELECT hasnt_type('connbudget', 'pool_share_result',
    'no row type of its own: the parser opens none to plan a call');
SELECT ok(
    (SELECT pronargdefaults = 1 FROM pg_proc
      WHERE oid = 'connbudget.pool_share(integer)'::regprocedure),
    'pool_share() can be called without arguments (demand has a default)');

-- ---- the trigger function -------------------------------------------------

SELECT has_function('connbudget', 'limits_changed', '{}'::name[],
    'function connbudget.limits_changed() exists');
SELECT function_returns('connbudget', 'limits_changed', '{}'::name[], 'trigger',
    'connbudget.limits_changed() is a trigger function');

-- ---- ownership ------------------------------------------------------------

SELECT is_empty(
    $$SELECT c.oid::regclass::text
        FROM pg_class c
       WHERE c.relnamespace = 'connbudget'::regnamespace
         AND c.relkind IN ('r', 'v')
         AND NOT EXISTS (SELECT 1 FROM pg_depend d
                          WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                            AND d.refclassid = 'pg_extension'::regclass
                            AND d.deptype = 'e'
                            AND d.refobjid = (SELECT oid FROM pg_extension
                                               WHERE extname = 'connbudget'))$$,
    'every table and view in schema connbudget belongs to the extension');

SELECT * FROM finish();
ROLLBACK;
