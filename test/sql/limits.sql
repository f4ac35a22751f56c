-- connbudget.application_limits: every invalid value is refused with a clear
-- error, and nothing that was there is lost.
INSERT INTO connbudget.application_limits VALUES ('api', 5, 20, 2);

INSERT INTO connbudget.application_limits VALUES ('neg-min', -1, NULL, 1);
INSERT INTO connbudget.application_limits VALUES ('neg-max', 0, -5, 1);
INSERT INTO connbudget.application_limits VALUES ('min-above-max', 10, 5, 1);
INSERT INTO connbudget.application_limits VALUES ('zero-weight', 0, NULL, 0);
INSERT INTO connbudget.application_limits VALUES ('', 0, NULL, 1);
INSERT INTO connbudget.application_limits VALUES (NULL, 0, NULL, 1);
INSERT INTO connbudget.application_limits VALUES (repeat('x', 64), 0, NULL, 1);
INSERT INTO connbudget.application_limits VALUES ('caf' || chr(233), 0, NULL, 1);
INSERT INTO connbudget.application_limits VALUES (E'tab\there', 0, NULL, 1);
INSERT INTO connbudget.application_limits VALUES ('api', 0, NULL, 1);
UPDATE connbudget.application_limits SET weight = 0;
-- The minimums must fit in the budget of 80.  (The DETAIL names the server's
-- own settings, so it is left out here; test/server/limits.c checks it.)
\set VERBOSITY terse
INSERT INTO connbudget.application_limits VALUES ('batch', 76, NULL, 1);
UPDATE connbudget.application_limits SET min_connections = 81, max_connections = NULL
WHERE application_name = 'api';
\set VERBOSITY default

-- 63 bytes, quotes, backslashes and SQL are just names.
INSERT INTO connbudget.application_limits VALUES (repeat('y', 63), 0, NULL, 1);
INSERT INTO connbudget.application_limits VALUES ($$o'brien "q" \x$$, 0, 3, 1);
INSERT INTO connbudget.application_limits VALUES ($$x'); DROP TABLE connbudget.application_limits; --$$, 0, 1, 1);

SELECT application_name, min_connections, max_connections, weight
FROM connbudget.application_limits ORDER BY application_name COLLATE "C";
-- What is in force is what the table holds.
SELECT application_name, min_connections, max_connections, weight
FROM connbudget.applications;

-- Rolled back changes are not in force.
BEGIN;
UPDATE connbudget.application_limits SET max_connections = 1 WHERE application_name = 'api';
ROLLBACK;
SELECT max_connections FROM connbudget.applications WHERE application_name = 'api';

-- Each statement of a transaction is checked; the failing one says why and
-- nothing of the transaction takes effect.
BEGIN;
INSERT INTO connbudget.application_limits VALUES ('etl', 40, NULL, 1);
\set VERBOSITY terse
INSERT INTO connbudget.application_limits VALUES ('olap', 40, NULL, 1);
\set VERBOSITY default
COMMIT;
SELECT count(*) FROM connbudget.applications WHERE application_name IN ('etl', 'olap');

-- PREPARE TRANSACTION cannot carry a change of limits.
BEGIN;
DELETE FROM connbudget.application_limits WHERE application_name = 'api';
PREPARE TRANSACTION 'limits';
SELECT count(*) FROM connbudget.application_limits WHERE application_name = 'api';

-- TRUNCATE empties what is in force.
TRUNCATE connbudget.application_limits;
SELECT count(*) FROM connbudget.applications;

-- pg_dump includes the rows (pg_extension_config_dump).
SELECT extconfig::regclass[] FROM pg_extension WHERE extname = 'connbudget';

-- Roles (version 1.1): NULL lets any role claim the application; a list of
-- up to 16 role names binds it to them.  Names that are not roles yet are
-- kept as they are (a role created later matches); names are PostgreSQL
-- names, so a longer one is cut to 63 bytes as CREATE ROLE cuts it.
INSERT INTO connbudget.application_limits (application_name, roles)
VALUES ('bound', ARRAY['apiuser', 'Odd "role"; DROP TABLE x', 'not_yet_created']);
SELECT application_name, roles FROM connbudget.application_limits;
INSERT INTO connbudget.application_limits (application_name, roles) VALUES ('empty-list', '{}');
INSERT INTO connbudget.application_limits (application_name, roles) VALUES ('empty-name', ARRAY['']);
INSERT INTO connbudget.application_limits (application_name, roles) VALUES ('null-name', ARRAY[NULL]::name[]);
INSERT INTO connbudget.application_limits (application_name, roles)
VALUES ('too-many', (SELECT array_agg('r' || i) FROM generate_series(1, 17) i));
INSERT INTO connbudget.application_limits (application_name, roles) VALUES ('two-dims', '{{a,b},{c,d}}');
INSERT INTO connbudget.application_limits (application_name, roles) VALUES ('long', ARRAY[repeat('r', 70)]);
SELECT octet_length(roles[1]) FROM connbudget.application_limits WHERE application_name = 'long';
DELETE FROM connbudget.application_limits;
