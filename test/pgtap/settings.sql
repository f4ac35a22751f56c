\unset ECHO
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off

-- SPEC 3.2: the connbudget.* settings, their types, defaults, units and
-- contexts; the reserved prefix; what a session may not change.
--
-- The test cluster runs with connbudget.reserved_connections = 40 and
-- every other connbudget setting at its default.

BEGIN;
SELECT plan(46);

-- ---- the settings and their definitions ------------------------------------

SELECT set_eq(
    $$SELECT name::text COLLATE "default" FROM pg_settings WHERE name LIKE 'connbudget.%'$$,
    ARRAY['connbudget.reserved_connections', 'connbudget.enforce',
          'connbudget.database', 'connbudget.pod_ttl',
          'connbudget.refresh_interval', 'connbudget.pod',
          'connbudget.max_pods', 'connbudget.pool_session',
          'connbudget.max_pods_per_role', 'connbudget.unconfigured_applications',
          'connbudget.unconfigured_max_connections',
          'connbudget.demand', 'connbudget.share'],
    'the connbudget.* settings are exactly those of SPEC 3.2, plus those of fleets, trust and the protocol');

-- vartype, boot_val (the built-in default), unit, context
SELECT results_eq(
    $$SELECT vartype, boot_val, unit, context FROM pg_settings
       WHERE name = 'connbudget.reserved_connections'$$,
    $$VALUES ('integer'::text, '0'::text, NULL::text, 'sighup'::text)$$,
    'connbudget.reserved_connections: integer, default 0, no unit, sighup');
SELECT results_eq(
    $$SELECT vartype, boot_val, unit, context FROM pg_settings
       WHERE name = 'connbudget.enforce'$$,
    $$VALUES ('enum'::text, 'on'::text, NULL::text, 'sighup'::text)$$,
    'connbudget.enforce: enum, default on, sighup');
SELECT results_eq(
    $$SELECT enumvals::text FROM pg_settings WHERE name = 'connbudget.enforce'$$,
    $$VALUES ('{off,warn,on}'::text)$$,
    'connbudget.enforce accepts off, warn, on');
SELECT results_eq(
    $$SELECT vartype, boot_val, unit, context FROM pg_settings
       WHERE name = 'connbudget.database'$$,
    $$VALUES ('string'::text, 'postgres'::text, NULL::text, 'postmaster'::text)$$,
    'connbudget.database: string, default postgres, postmaster (restart)');
SELECT results_eq(
    $$SELECT vartype, boot_val, unit, context FROM pg_settings
       WHERE name = 'connbudget.pod_ttl'$$,
    $$VALUES ('integer'::text, '3000'::text, 'ms'::text, 'sighup'::text)$$,
    'connbudget.pod_ttl: integer, default 3000 ms, sighup');
SELECT results_eq(
    $$SELECT vartype, boot_val, unit, context FROM pg_settings
       WHERE name = 'connbudget.refresh_interval'$$,
    $$VALUES ('integer'::text, '1000'::text, 'ms'::text, 'sighup'::text)$$,
    'connbudget.refresh_interval: integer, default 1000 ms, sighup');
SELECT results_eq(
    $$SELECT vartype, boot_val, unit, context FROM pg_settings
       WHERE name = 'connbudget.pod'$$,
    $$VALUES ('string'::text, ''::text, NULL::text, 'backend'::text)$$,
    'connbudget.pod: string, default empty, backend (connect time only)');
SELECT results_eq(
    $$SELECT vartype, boot_val, unit, context, min_val FROM pg_settings
       WHERE name = 'connbudget.max_pods'$$,
    $$VALUES ('integer'::text, '10000'::text, NULL::text, 'postmaster'::text, '16'::text)$$,
    'connbudget.max_pods: integer, default 10000, at least 16, postmaster (restart)');
SELECT results_eq(
    $$SELECT vartype, boot_val, unit, context FROM pg_settings
       WHERE name = 'connbudget.pool_session'$$,
    $$VALUES ('string'::text, ''::text, NULL::text, 'backend'::text)$$,
    'connbudget.pool_session: string, default empty, backend (connect time only)');
SELECT results_eq(
    $$SELECT vartype, boot_val, context, min_val FROM pg_settings
       WHERE name = 'connbudget.max_pods_per_role'$$,
    $$VALUES ('integer'::text, '1000'::text, 'sighup'::text, '1'::text)$$,
    'connbudget.max_pods_per_role: integer, default 1000, at least 1, sighup');
SELECT results_eq(
    $$SELECT vartype, boot_val, context, enumvals::text FROM pg_settings
       WHERE name = 'connbudget.unconfigured_applications'$$,
    $$VALUES ('enum'::text, 'govern'::text, 'sighup'::text, '{govern,refuse,other}'::text)$$,
    'connbudget.unconfigured_applications: enum govern, refuse, other; default govern; sighup');
SELECT results_eq(
    $$SELECT vartype, boot_val, context, min_val FROM pg_settings
       WHERE name = 'connbudget.unconfigured_max_connections'$$,
    $$VALUES ('integer'::text, '-1'::text, 'sighup'::text, '-1'::text)$$,
    'connbudget.unconfigured_max_connections: integer, default -1 (no limit), sighup');

SELECT results_eq(
    $$SELECT vartype, boot_val, context FROM pg_settings WHERE name = 'connbudget.demand'$$,
    $$VALUES ('string'::text, ''::text, 'user'::text)$$,
    'connbudget.demand: string, default empty (nothing reported), any session may set it');
SELECT results_eq(
    $$SELECT vartype, context FROM pg_settings WHERE name = 'connbudget.share'$$,
    $$VALUES ('string'::text, 'internal'::text)$$,
    'connbudget.share: string, read-only');
SELECT matches(current_setting('connbudget.share'), '^protocol=2 status=other refresh_ms=[0-9]+$',
    'connbudget.share of this ungoverned session: protocol 2, status other, the refresh interval');
SELECT throws_ok(
    $$SET connbudget.demand = 'lots'$$,
    '22023', NULL,
    'connbudget.demand refuses a value that is not a demand');
SELECT throws_ok(
    $$SET connbudget.share = 'max_size=1'$$,
    '55P02', NULL,
    'connbudget.share cannot be set');

SELECT is(
    (SELECT min_val FROM pg_settings WHERE name = 'connbudget.reserved_connections'),
    '0',
    'connbudget.reserved_connections cannot be negative');
SELECT is_empty(
    $$SELECT name FROM pg_settings
       WHERE name LIKE 'connbudget.%' AND (short_desc IS NULL OR short_desc = '')$$,
    'every connbudget setting has a description');

-- ---- the values in force in the test cluster -------------------------------

SELECT is(current_setting('connbudget.reserved_connections'), '40',
    'connbudget.reserved_connections from postgresql.conf is in force (40)');
SELECT is(
    (SELECT source FROM pg_settings WHERE name = 'connbudget.reserved_connections'),
    'configuration file',
    'connbudget.reserved_connections comes from the configuration file');
SELECT is(current_setting('connbudget.enforce'), 'on',
    'connbudget.enforce is on by default');
SELECT is(current_setting('connbudget.database'), 'postgres',
    'connbudget.database is postgres by default');
SELECT is(
    (SELECT setting FROM pg_settings WHERE name = 'connbudget.pod_ttl'),
    '3000',
    'connbudget.pod_ttl is 3000 (ms) by default');
SELECT is(
    (SELECT setting FROM pg_settings WHERE name = 'connbudget.refresh_interval'),
    '1000',
    'connbudget.refresh_interval is 1000 (ms) by default');
SELECT is(current_setting('connbudget.pod'), '',
    'connbudget.pod is empty in a session that gave none');

-- ---- the prefix is reserved -----------------------------------------------

SELECT throws_ok(
    'SET connbudget.no_such_setting = 1',
    '42602',
    'invalid configuration parameter name "connbudget.no_such_setting"',
    'SET of a misspelt connbudget.* setting fails (the prefix is reserved)');
SELECT throws_ok(
    $$SELECT set_config('connbudget.enforcement', 'off', false)$$,
    '42602',
    'invalid configuration parameter name "connbudget.enforcement"',
    'set_config() of a misspelt connbudget.* setting fails');
SELECT is(current_setting('connbudget.no_such_setting', true), NULL,
    'no placeholder connbudget.no_such_setting was created');

-- ---- what a session cannot change -----------------------------------------

SELECT throws_ok(
    $$SET connbudget.pod = 'x'$$,
    '55P02',
    'parameter "connbudget.pod" cannot be set after connection start',
    'SET connbudget.pod after connection start fails');
SELECT throws_ok(
    $$SELECT set_config('connbudget.pod', 'x', true)$$,
    '55P02',
    'parameter "connbudget.pod" cannot be set after connection start',
    'set_config(connbudget.pod) after connection start fails');
SELECT throws_ok(
    $$RESET connbudget.pod$$,
    '55P02',
    'parameter "connbudget.pod" cannot be set after connection start',
    'RESET connbudget.pod after connection start fails');
SELECT throws_ok(
    'SET connbudget.enforce = off',
    '55P02',
    'parameter "connbudget.enforce" cannot be changed now',
    'a session cannot turn enforcement off (sighup)');
SELECT throws_ok(
    'SET connbudget.reserved_connections = 0',
    '55P02',
    'parameter "connbudget.reserved_connections" cannot be changed now',
    'a session cannot change connbudget.reserved_connections (sighup)');
SELECT throws_ok(
    'SET connbudget.pod_ttl = 100',
    '55P02',
    'parameter "connbudget.pod_ttl" cannot be changed now',
    'a session cannot change connbudget.pod_ttl (sighup)');
SELECT throws_ok(
    'SET connbudget.refresh_interval = 100',
    '55P02',
    'parameter "connbudget.refresh_interval" cannot be changed now',
    'a session cannot change connbudget.refresh_interval (sighup)');
SELECT throws_ok(
    $$SET connbudget.database = 'template1'$$,
    '55P02',
    'parameter "connbudget.database" cannot be changed without restarting the server',
    'connbudget.database cannot be changed without a restart (postmaster)');
SELECT is(current_setting('connbudget.enforce'), 'on',
    'the refused SETs left connbudget.enforce on');

-- ---- connbudget.pod given at connect time ---------------------------------

CREATE FUNCTION pg_temp.cb_connect(name text, pod text) RETURNS text
LANGUAGE sql AS $$
    SELECT dblink_connect(name,
        format('host=127.0.0.1 port=%s dbname=postgres user=postgres application_name=cb-settings-test options=''-c connbudget.pod=%s''',
               current_setting('port'), pod))
$$;

-- the server's reason for refusing a connection (libpq's prefix removed)
CREATE FUNCTION pg_temp.cb_connect_error(name text, pod text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    detail text;
BEGIN
    PERFORM pg_temp.cb_connect(name, pod);
    PERFORM dblink_disconnect(name);
    RETURN NULL;
EXCEPTION WHEN sqlclient_unable_to_establish_sqlconnection THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    RETURN rtrim(regexp_replace(detail, '^.*failed: ', ''), E'\n');
END
$$;

SELECT is(pg_temp.cb_connect('cb_settings', 'settings-pod'), 'OK',
    'a connection giving connbudget.pod at connect time is accepted');
SELECT is(
    (SELECT pod FROM dblink('cb_settings', $$SELECT current_setting('connbudget.pod')$$)
        AS t(pod text)),
    'settings-pod',
    'connbudget.pod given at connect time is the session''s value');
SELECT throws_ok(
    $$SELECT dblink_exec('cb_settings', 'SET connbudget.pod = ''elsewhere''')$$,
    '55P02',
    'parameter "connbudget.pod" cannot be set after connection start',
    'a governed session cannot move to another pod with SET');
SELECT lives_ok(
    $$SELECT dblink_disconnect('cb_settings')$$,
    'the governed connection closes');

SELECT is(pg_temp.cb_connect_error('cb_settings_long', repeat('p', 64)),
    E'FATAL:  invalid value for parameter "connbudget.pod"\nDETAIL:  A pod id is at most 63 bytes; this one is 64 bytes.',
    'a 64-byte connbudget.pod is refused at connect time with the reason');
SELECT is(pg_temp.cb_connect_error('cb_settings_ascii', 'caf' || chr(233)),
    E'FATAL:  invalid value for parameter "connbudget.pod"\nDETAIL:  A pod id may only contain printable ASCII characters; byte 4 is 0xc3.',
    'a non-ASCII connbudget.pod is refused at connect time with the reason');
SELECT is(pg_temp.cb_connect_error('cb_settings_63', repeat('p', 63)),
    NULL,
    'a 63-byte connbudget.pod is accepted at connect time');

SELECT * FROM finish();
ROLLBACK;
