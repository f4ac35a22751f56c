\ir preamble.psql

-- SPEC 3.6: reading the views and calling pool_share() is for everybody;
-- changing application_limits is for the owner and whom it grants; no
-- SECURITY DEFINER function without a safe search_path.

BEGIN;
SELECT plan(35);

CREATE ROLE cb_reader;
CREATE ROLE cb_admin;
CREATE ROLE cb_inserter;

-- ---- what a plain role holds (through PUBLIC) -----------------------------

SELECT schema_privs_are('connbudget', 'cb_reader', ARRAY['USAGE'],
    'a plain role may use schema connbudget but not create in it');
SELECT table_privs_are('connbudget', name, 'cb_reader', ARRAY['SELECT'], description)
  FROM (VALUES
    ('application_limits', 'a plain role may only SELECT from application_limits'),
    ('budget', 'a plain role may only SELECT from view budget'),
    ('applications', 'a plain role may only SELECT from view applications'),
    ('pods', 'a plain role may only SELECT from view pods')
  ) AS t(name, description);
SELECT function_privs_are('connbudget', 'pool_share', ARRAY['integer'], 'cb_reader',
    ARRAY['EXECUTE'],
    'a plain role may EXECUTE pool_share(integer)');
SELECT function_privs_are('connbudget', 'limits_changed', '{}'::name[], 'cb_reader',
    '{}'::text[],
    'a plain role may not EXECUTE limits_changed()');
SELECT is(
    EXISTS (SELECT 1
              FROM pg_proc p,
                   aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
             WHERE p.oid = signature::regprocedure
               AND a.grantee = 0 AND a.privilege_type = 'EXECUTE'),
    public_executes,
    description)
  FROM (VALUES
    ('connbudget.limits_changed()', false,
     'PUBLIC holds no EXECUTE privilege on connbudget.limits_changed()'),
    ('connbudget.pool_share(integer)', true,
     'PUBLIC holds EXECUTE on connbudget.pool_share(integer)')
  ) AS f(signature, public_executes, description);
SELECT is_empty(
    $$SELECT c.oid::regclass::text, a.privilege_type
        FROM pg_class c, aclexplode(c.relacl) a
       WHERE c.oid = 'connbudget.application_limits'::regclass
         AND a.grantee = 0 AND a.privilege_type <> 'SELECT'$$,
    'PUBLIC holds no privilege on application_limits beyond SELECT');

-- ---- a plain role reads everything ... -------------------------------------

SET ROLE cb_reader;

SELECT results_eq(
    'SELECT count(*)::int FROM connbudget.budget',
    ARRAY[1],
    'a plain role reads view budget (one row)');
SELECT lives_ok(
    'SELECT * FROM connbudget.applications',
    'a plain role reads view applications');
SELECT lives_ok(
    'SELECT * FROM connbudget.pods',
    'a plain role reads view pods');
SELECT lives_ok(
    'SELECT * FROM connbudget.application_limits',
    'a plain role reads table application_limits');

-- ... may call pool_share(), which refuses only because this session is not
-- governed (not for lack of privilege)
SELECT throws_ok(
    'SELECT * FROM connbudget.pool_share()',
    '55000',
    'this connection is not governed by connbudget',
    'a plain role calling pool_share() from an ungoverned session gets "not governed" (55000), not a permission error');
SELECT throws_ok(
    'SELECT * FROM connbudget.pool_share(5)',
    '55000',
    'this connection is not governed by connbudget',
    'a plain role calling pool_share(5) from an ungoverned session gets "not governed" (55000)');

-- ... but changes nothing
SELECT throws_ok(statement, '42501', 'permission denied for table application_limits', description)
  FROM (VALUES
    ($$INSERT INTO connbudget.application_limits VALUES ('cb-reader-app', 0, NULL, 1)$$,
     'a plain role cannot INSERT into application_limits'),
    ('UPDATE connbudget.application_limits SET weight = 2',
     'a plain role cannot UPDATE application_limits'),
    ('DELETE FROM connbudget.application_limits',
     'a plain role cannot DELETE from application_limits'),
    ('TRUNCATE connbudget.application_limits',
     'a plain role cannot TRUNCATE application_limits')
  ) AS t(statement, description);

RESET ROLE;

-- ---- a role granted DML manages limits -------------------------------------

GRANT INSERT, UPDATE, DELETE ON connbudget.application_limits TO cb_admin;
SET ROLE cb_admin;

SELECT lives_ok(
    $$INSERT INTO connbudget.application_limits VALUES ('cb-admin-app', 1, 5, 2)$$,
    'a role granted INSERT can add an application');
SELECT results_eq(
    $$SELECT application_name, min_connections, max_connections, weight
        FROM connbudget.application_limits WHERE application_name = 'cb-admin-app'$$,
    $$VALUES ('cb-admin-app'::text, 1, 5, 2)$$,
    'the row inserted by the granted role is in the table as given');
SELECT lives_ok(
    $$UPDATE connbudget.application_limits SET max_connections = 10
       WHERE application_name = 'cb-admin-app'$$,
    'a role granted UPDATE can change an application''s limits');
SELECT results_eq(
    $$SELECT max_connections FROM connbudget.application_limits
       WHERE application_name = 'cb-admin-app'$$,
    ARRAY[10],
    'the update of the granted role took effect in the table');
SELECT throws_ok(
    $$INSERT INTO connbudget.application_limits VALUES ('cb-admin-big', 80, NULL, 1)$$,
    '23514',
    'the applications'' min_connections add up to 81, more than the connection budget of 80',
    'limits changed by a granted (non-owner) role are validated against the budget too');
SELECT throws_ok(
    $$UPDATE connbudget.application_limits SET weight = 0
       WHERE application_name = 'cb-admin-app'$$,
    '23514',
    'new row for relation "application_limits" violates check constraint "weight_at_least_1"',
    'the check constraints hold for a granted role');
SELECT lives_ok(
    $$DELETE FROM connbudget.application_limits WHERE application_name = 'cb-admin-app'$$,
    'a role granted DELETE can remove an application');
SELECT is_empty(
    $$SELECT 1 FROM connbudget.application_limits WHERE application_name = 'cb-admin-app'$$,
    'the row deleted by the granted role is gone');
SELECT throws_ok(
    'TRUNCATE connbudget.application_limits',
    '42501',
    'permission denied for table application_limits',
    'a role granted INSERT, UPDATE, DELETE still cannot TRUNCATE (not granted)');
SELECT throws_ok(
    'SELECT * FROM connbudget.pool_share()',
    '55000',
    'this connection is not governed by connbudget',
    'the granted role also gets "not governed" from pool_share() here');

RESET ROLE;

-- ---- INSERT alone is enough: validation does not need SELECT ----------------

REVOKE SELECT ON connbudget.application_limits FROM PUBLIC;
GRANT INSERT ON connbudget.application_limits TO cb_inserter;
SET ROLE cb_inserter;
SELECT lives_ok(
    $$INSERT INTO connbudget.application_limits VALUES ('cb-insert-only', 2, NULL, 1)$$,
    'a role granted only INSERT (no SELECT at all) can add an application');
SELECT throws_ok(
    $$INSERT INTO connbudget.application_limits VALUES ('cb-insert-only-big', 79, NULL, 1)$$,
    '23514',
    'the applications'' min_connections add up to 81, more than the connection budget of 80',
    'limits added by an INSERT-only role are still checked against the budget');
RESET ROLE;

-- ---- SECURITY DEFINER -----------------------------------------------------

SELECT cmp_ok(
    (SELECT count(*)::int
       FROM pg_proc p
       JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                       AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
       JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'connbudget'),
    '>=', 2,
    'the extension''s functions are found through pg_depend (the next test is not vacuous)');
SELECT is_empty(
    $$SELECT p.oid::regprocedure::text
        FROM pg_proc p
        JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                        AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
        JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'connbudget'
       WHERE p.prosecdef
         AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)$$,
    'no function of the extension is SECURITY DEFINER without SET search_path = pg_catalog, pg_temp');

-- ---- ownership ------------------------------------------------------------

SELECT table_owner_is('connbudget', 'application_limits',
    (SELECT r.rolname FROM pg_extension e JOIN pg_roles r ON r.oid = e.extowner
      WHERE e.extname = 'connbudget'),
    'application_limits is owned by the extension owner');

SELECT * FROM finish();
ROLLBACK;
