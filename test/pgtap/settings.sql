\ir preamble.psql

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

-- The fields of pg_settings that "expected" names, for setting "name".
CREATE FUNCTION pg_temp.setting_fields(name text, expected jsonb) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT jsonb_object_agg(k, to_jsonb(s) -> k)
      FROM pg_settings s, jsonb_object_keys(expected) k
     WHERE s.name = setting_fields.name
$$;

-- vartype, boot_val (the built-in default), unit, context, min_val, enumvals
SELECT is(pg_temp.setting_fields(name, expected), expected, description)
  FROM (VALUES
    ('connbudget.reserved_connections',
     '{"vartype": "integer", "boot_val": "0", "unit": null, "context": "sighup"}'::jsonb,
     'connbudget.reserved_connections: integer, default 0, no unit, sighup'),
    ('connbudget.enforce',
     '{"vartype": "enum", "boot_val": "on", "unit": null, "context": "sighup"}',
     'connbudget.enforce: enum, default on, sighup'),
    ('connbudget.enforce',
     '{"enumvals": ["off", "warn", "on"]}',
     'connbudget.enforce accepts off, warn, on'),
    ('connbudget.database',
     '{"vartype": "string", "boot_val": "postgres", "unit": null, "context": "postmaster"}',
     'connbudget.database: string, default postgres, postmaster (restart)'),
    ('connbudget.pod_ttl',
     '{"vartype": "integer", "boot_val": "3000", "unit": "ms", "context": "sighup"}',
     'connbudget.pod_ttl: integer, default 3000 ms, sighup'),
    ('connbudget.refresh_interval',
     '{"vartype": "integer", "boot_val": "1000", "unit": "ms", "context": "sighup"}',
     'connbudget.refresh_interval: integer, default 1000 ms, sighup'),
    ('connbudget.pod',
     '{"vartype": "string", "boot_val": "", "unit": null, "context": "backend"}',
     'connbudget.pod: string, default empty, backend (connect time only)'),
    ('connbudget.max_pods',
     '{"vartype": "integer", "boot_val": "10000", "unit": null, "context": "postmaster", "min_val": "16"}',
     'connbudget.max_pods: integer, default 10000, at least 16, postmaster (restart)'),
    ('connbudget.pool_session',
     '{"vartype": "string", "boot_val": "", "unit": null, "context": "backend"}',
     'connbudget.pool_session: string, default empty, backend (connect time only)'),
    ('connbudget.max_pods_per_role',
     '{"vartype": "integer", "boot_val": "1000", "context": "sighup", "min_val": "1"}',
     'connbudget.max_pods_per_role: integer, default 1000, at least 1, sighup'),
    ('connbudget.unconfigured_applications',
     '{"vartype": "enum", "boot_val": "govern", "context": "sighup", "enumvals": ["govern", "refuse", "other"]}',
     'connbudget.unconfigured_applications: enum govern, refuse, other; default govern; sighup'),
    ('connbudget.unconfigured_max_connections',
     '{"vartype": "integer", "boot_val": "-1", "context": "sighup", "min_val": "-1"}',
     'connbudget.unconfigured_max_connections: integer, default -1 (no limit), sighup'),
    ('connbudget.demand',
     '{"vartype": "string", "boot_val": "", "context": "user"}',
     'connbudget.demand: string, default empty (nothing reported), any session may set it'),
    ('connbudget.share',
     '{"vartype": "string", "context": "internal"}',
     'connbudget.share: string, read-only'),
    ('connbudget.reserved_connections',
     '{"min_val": "0"}',
     'connbudget.reserved_connections cannot be negative')
  ) AS e(name, expected, description);

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

SELECT is_empty(
    $$SELECT name FROM pg_settings
       WHERE name LIKE 'connbudget.%' AND (short_desc IS NULL OR short_desc = '')$$,
    'every connbudget setting has a description');

-- ---- the values in force in the test cluster -------------------------------

SELECT is(pg_temp.setting_fields(name, expected), expected, description)
  FROM (VALUES
    ('connbudget.reserved_connections', '{"setting": "40"}'::jsonb,
     'connbudget.reserved_connections from postgresql.conf is in force (40)'),
    ('connbudget.reserved_connections', '{"source": "configuration file"}',
     'connbudget.reserved_connections comes from the configuration file'),
    ('connbudget.enforce', '{"setting": "on"}',
     'connbudget.enforce is on by default'),
    ('connbudget.database', '{"setting": "postgres"}',
     'connbudget.database is postgres by default'),
    ('connbudget.pod_ttl', '{"setting": "3000"}',
     'connbudget.pod_ttl is 3000 (ms) by default'),
    ('connbudget.refresh_interval', '{"setting": "1000"}',
     'connbudget.refresh_interval is 1000 (ms) by default'),
    ('connbudget.pod', '{"setting": ""}',
     'connbudget.pod is empty in a session that gave none')
  ) AS e(name, expected, description);

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

SELECT throws_ok(statement, '55P02', message, description)
  FROM (VALUES
    ($$SET connbudget.pod = 'x'$$,
     'parameter "connbudget.pod" cannot be set after connection start',
     'SET connbudget.pod after connection start fails'),
    ($$SELECT set_config('connbudget.pod', 'x', true)$$,
     'parameter "connbudget.pod" cannot be set after connection start',
     'set_config(connbudget.pod) after connection start fails'),
    ('RESET connbudget.pod',
     'parameter "connbudget.pod" cannot be set after connection start',
     'RESET connbudget.pod after connection start fails'),
    ('SET connbudget.enforce = off',
     'parameter "connbudget.enforce" cannot be changed now',
     'a session cannot turn enforcement off (sighup)'),
    ('SET connbudget.reserved_connections = 0',
     'parameter "connbudget.reserved_connections" cannot be changed now',
     'a session cannot change connbudget.reserved_connections (sighup)'),
    ('SET connbudget.pod_ttl = 100',
     'parameter "connbudget.pod_ttl" cannot be changed now',
     'a session cannot change connbudget.pod_ttl (sighup)'),
    ('SET connbudget.refresh_interval = 100',
     'parameter "connbudget.refresh_interval" cannot be changed now',
     'a session cannot change connbudget.refresh_interval (sighup)'),
    ($$SET connbudget.database = 'template1'$$,
     'parameter "connbudget.database" cannot be changed without restarting the server',
     'connbudget.database cannot be changed without a restart (postmaster)')
  ) AS t(statement, message, description);
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
