\ir preamble.psql

-- connbudget.application_limits refuses every invalid row with the right
-- SQLSTATE and a message naming the rule, accepts every valid one, and
-- refuses minimums that do not fit in the budget (80 in the test cluster:
-- max_connections 120 - superuser_reserved 0 - connbudget.reserved 40).
--
-- Inside this rolled-back transaction changes are validated by the
-- statement trigger but never put in force, so only the table is checked.

BEGIN;
SELECT plan(40);

SELECT is(
    (SELECT count(*)::int FROM connbudget.application_limits),
    0,
    'application_limits starts empty');

SELECT lives_ok(
    $$INSERT INTO connbudget.application_limits VALUES ('api', 5, 20, 2)$$,
    'a valid row is accepted');

-- ---- check constraints: SQLSTATE 23514 and the constraint's name ----------

SELECT throws_ok(statement, '23514',
    format('new row for relation "application_limits" violates check constraint "%s"', constraint_name),
    description)
  FROM (VALUES
    ($$INSERT INTO connbudget.application_limits VALUES ('neg-min', -1, NULL, 1)$$,
     'min_connections_not_negative', 'a negative min_connections is refused'),
    ($$INSERT INTO connbudget.application_limits VALUES ('neg-max', 0, -5, 1)$$,
     'max_connections_not_negative', 'a negative max_connections is refused'),
    ($$INSERT INTO connbudget.application_limits VALUES ('min-above-max', 10, 5, 1)$$,
     'min_connections_not_above_max_connections', 'min_connections above max_connections is refused'),
    ($$INSERT INTO connbudget.application_limits VALUES ('zero-weight', 0, NULL, 0)$$,
     'weight_at_least_1', 'a weight of 0 is refused'),
    ($$INSERT INTO connbudget.application_limits VALUES ('neg-weight', 0, NULL, -3)$$,
     'weight_at_least_1', 'a negative weight is refused'),
    ($$INSERT INTO connbudget.application_limits VALUES ('', 0, NULL, 1)$$,
     'application_name_not_empty', 'an empty application_name is refused'),
    ($$INSERT INTO connbudget.application_limits VALUES (repeat('x', 64), 0, NULL, 1)$$,
     'application_name_at_most_63_bytes', 'a 64-byte application_name is refused'),
    ($$INSERT INTO connbudget.application_limits VALUES ('caf' || chr(233), 0, NULL, 1)$$,
     'application_name_printable_ascii', 'a non-ASCII application_name is refused'),
    ($$INSERT INTO connbudget.application_limits VALUES (E'tab\there', 0, NULL, 1)$$,
     'application_name_printable_ascii', 'a tab (control character) in application_name is refused'),
    ($$INSERT INTO connbudget.application_limits VALUES (E'line\n', 0, NULL, 1)$$,
     'application_name_printable_ascii', 'a trailing newline in application_name is refused'),
    ($$INSERT INTO connbudget.application_limits VALUES ('del' || chr(127), 0, NULL, 1)$$,
     'application_name_printable_ascii', 'a DEL character (0x7f) in application_name is refused'),
    ($$UPDATE connbudget.application_limits SET weight = 0 WHERE application_name = 'api'$$,
     'weight_at_least_1', 'an UPDATE to an invalid weight is refused'),
    ($$UPDATE connbudget.application_limits SET max_connections = 1 WHERE application_name = 'api'$$,
     'min_connections_not_above_max_connections',
     'an UPDATE lowering max_connections below min_connections is refused')
  ) AS t(statement, constraint_name, description);

-- ---- NOT NULL and primary key ---------------------------------------------

SELECT throws_ok(statement, '23502',
    format('null value in column "%s" of relation "application_limits" violates not-null constraint', column_name),
    description)
  FROM (VALUES
    ($$INSERT INTO connbudget.application_limits VALUES (NULL, 0, NULL, 1)$$,
     'application_name', 'a NULL application_name is refused'),
    ($$INSERT INTO connbudget.application_limits VALUES ('null-min', NULL, NULL, 1)$$,
     'min_connections', 'a NULL min_connections is refused (it is not "no minimum")'),
    ($$INSERT INTO connbudget.application_limits VALUES ('null-weight', 0, NULL, NULL)$$,
     'weight', 'a NULL weight is refused')
  ) AS t(statement, column_name, description);
SELECT throws_ok(
    $$INSERT INTO connbudget.application_limits VALUES ('api', 0, NULL, 1)$$,
    '23505',
    'duplicate key value violates unique constraint "application_limits_pkey"',
    'a duplicate application_name is refused');

-- names are compared byte for byte: case makes another application
SELECT lives_ok(
    $$INSERT INTO connbudget.application_limits VALUES ('API', 0, NULL, 1)$$,
    'application names are case-sensitive: "API" is not a duplicate of "api"');

-- nothing that was there was lost or changed by the refused statements
SELECT results_eq(
    $$SELECT application_name, min_connections, max_connections, weight
        FROM connbudget.application_limits ORDER BY application_name COLLATE "C"$$,
    $$VALUES ('API'::text, 0, NULL::int, 1), ('api', 5, 20, 2)$$,
    'refused statements leave the table as it was');

-- ---- valid rows -----------------------------------------------------------

SELECT lives_ok(statement, description)
  FROM (VALUES
    ($$INSERT INTO connbudget.application_limits VALUES (repeat('y', 63), 0, NULL, 1)$$,
     'a 63-byte application_name is accepted'),
    ($$INSERT INTO connbudget.application_limits VALUES ($q$o'brien "q" \x$q$, 0, 3, 1)$$,
     'an application_name with quotes and a backslash is accepted'),
    ($$INSERT INTO connbudget.application_limits
       VALUES ($q$x'); DROP TABLE connbudget.application_limits; --$q$, 0, 1, 1)$$,
     'an application_name that looks like SQL is just a name'),
    ($$INSERT INTO connbudget.application_limits VALUES (' ~!', 0, NULL, 1)$$,
     'the printable ASCII range includes the space and the tilde'),
    ($$INSERT INTO connbudget.application_limits (application_name) VALUES ('defaults')$$,
     'a row with only application_name is accepted'),
    ($$INSERT INTO connbudget.application_limits VALUES ('min-equals-max', 3, 3, 1)$$,
     'min_connections equal to max_connections is accepted'),
    ($$INSERT INTO connbudget.application_limits VALUES ('zero-cap', 0, 0, 1)$$,
     'max_connections 0 is accepted (non-negative)'),
    ($$INSERT INTO connbudget.application_limits VALUES ('heavy', 0, NULL, 1000000)$$,
     'a large weight is accepted')
  ) AS t(statement, description);

SELECT results_eq(
    $$SELECT min_connections, max_connections, weight
        FROM connbudget.application_limits WHERE application_name = 'defaults'$$,
    $$VALUES (0, NULL::int, 1)$$,
    'omitted limits default to min 0, no cap, weight 1');
SELECT results_eq(
    $$SELECT application_name FROM connbudget.application_limits
       WHERE application_name IN (repeat('y', 63), $q$o'brien "q" \x$q$,
                                  $q$x'); DROP TABLE connbudget.application_limits; --$q$)
       ORDER BY application_name COLLATE "C"$$,
    $$VALUES ($q$o'brien "q" \x$q$::text),
             ($q$x'); DROP TABLE connbudget.application_limits; --$q$),
             (repeat('y', 63))$$,
    'names with quotes, backslashes and SQL are stored byte for byte');
SELECT has_table('connbudget', 'application_limits',
    'application_limits is still there after the SQL-looking name');

-- ---- the minimums must fit in the budget of 80 ----------------------------

-- so far: api 5 + min-equals-max 3 = 8.  Each statement in turn is
-- accepted (total NULL) or refused for taking the minimums to total.
SELECT CASE WHEN total IS NULL THEN lives_ok(statement, description)
       ELSE throws_ok(statement, '23514',
           format('the applications'' min_connections add up to %s, more than the connection budget of 80', total),
           description) END
  FROM (VALUES
    ($$INSERT INTO connbudget.application_limits VALUES ('batch', 72, NULL, 1)$$, NULL,
     'minimums adding up to exactly the budget (80) are accepted'),
    ($$INSERT INTO connbudget.application_limits VALUES ('one-more', 1, NULL, 1)$$, 81,
     'an INSERT taking the minimums above the budget is refused'),
    ($$UPDATE connbudget.application_limits SET min_connections = 73
       WHERE application_name = 'batch'$$, 81,
     'an UPDATE taking the minimums above the budget is refused'),
    ($$UPDATE connbudget.application_limits SET min_connections = min_connections + 10
       WHERE max_connections IS NULL$$, 140,
     'a multi-row UPDATE is checked on the sum of all rows'),
    ($$DELETE FROM connbudget.application_limits WHERE application_name = 'batch'$$, NULL,
     'deleting an application frees its minimum'),
    ($$INSERT INTO connbudget.application_limits VALUES ('huge', 2147483647, NULL, 1)$$, 2147483655,
     'a minimum of INT_MAX is refused without the sum overflowing'),
    ($$INSERT INTO connbudget.application_limits VALUES ('a1', 40, NULL, 1), ('a2', 40, NULL, 1)$$, 88,
     'a multi-row INSERT is checked as a whole')
  ) AS t(statement, total, description);
SELECT is(
    (SELECT sum(min_connections)::int FROM connbudget.application_limits),
    8,
    'the refused statements added no minimum');

SELECT * FROM finish();
ROLLBACK;
