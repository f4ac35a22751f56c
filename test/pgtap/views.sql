\ir preamble.psql

-- The views budget, applications and pods (SPEC 3.3, 3.4): readable by any
-- role, one budget row with the arithmetic of SPEC 3.3, and rows that
-- describe a governed connection and its pool_share() calls.
--
-- Test cluster: max_connections 120, superuser_reserved_connections 0,
-- connbudget.reserved_connections 40, so the budget is 80 as long as
-- "other" connections (this one) stay within the reserve of 40.
--
-- Pods are simulated with dblink connections that give connbudget.pod at
-- connect time, as a pool does.  They are separate sessions, so what they
-- do is in force at once, unlike changes to application_limits made in
-- this rolled-back transaction.

BEGIN;
SELECT plan(42);

CREATE ROLE cb_viewer;

-- pod_connect (a governed connection of application "app" in pod "pod"),
-- pod_share and wait_for (backends of earlier test files exit
-- asynchronously), shared with the regression tests
\ir ../sql/helpers.psql

-- ---- the budget row -------------------------------------------------------

SELECT is(
    wait_for('SELECT governed || ''/'' || pods FROM connbudget.budget', '0/0'),
    '0/0',
    'no governed connection or live pod is left over from other tests');

SELECT is((SELECT count(*)::int FROM connbudget.budget), 1,
    'view budget has exactly one row');
SELECT is((to_jsonb(b) ->> column_name)::int, expected, description)
  FROM connbudget.budget b, (VALUES
    ('max_connections', current_setting('max_connections')::int,
     'budget.max_connections is the server''s max_connections (120)'),
    ('superuser_reserved', current_setting('superuser_reserved_connections')::int,
     'budget.superuser_reserved is superuser_reserved_connections (0)'),
    ('reserved_connections',
     CASE WHEN current_setting('server_version_num')::int >= 160000
          THEN current_setting('reserved_connections')::int ELSE 0 END,
     'budget.reserved_connections is the server''s reserved_connections (0 before PostgreSQL 16)'),
    ('extension_reserved', current_setting('connbudget.reserved_connections')::int,
     'budget.extension_reserved is connbudget.reserved_connections (40)')
  ) AS e(column_name, expected, description);
SELECT cmp_ok(
    (SELECT other FROM connbudget.budget),
    '<=',
    (SELECT reserved_connections + extension_reserved FROM connbudget.budget),
    'the "other" connections fit in the reserve (precondition of the next test)');
SELECT is(
    (SELECT budget FROM connbudget.budget),
    (SELECT max_connections - superuser_reserved - reserved_connections - extension_reserved
       FROM connbudget.budget),
    'budget = max_connections - superuser_reserved - reserved_connections - extension_reserved');
SELECT is((SELECT budget FROM connbudget.budget), 80,
    'the budget of the test cluster is 80');
SELECT is((SELECT free FROM connbudget.budget),
    (SELECT budget - governed FROM connbudget.budget),
    'free = budget - governed');
SELECT cmp_ok((SELECT other FROM connbudget.budget), '>=', 1,
    'this ungoverned session is counted as "other"');
SELECT is((SELECT applications FROM connbudget.budget),
    (SELECT count(*)::int FROM connbudget.applications),
    'budget.applications counts the rows of view applications');
SELECT is((SELECT pods FROM connbudget.budget),
    (SELECT count(*)::int FROM connbudget.pods),
    'budget.pods counts the rows of view pods');
SELECT is_empty(
    $$SELECT * FROM connbudget.budget
       WHERE max_connections IS NULL OR superuser_reserved IS NULL
          OR reserved_connections IS NULL OR extension_reserved IS NULL
          OR budget IS NULL OR governed IS NULL OR other IS NULL OR free IS NULL
          OR applications IS NULL OR pods IS NULL
          OR budget < 0 OR governed < 0 OR other < 0 OR free < 0
          OR applications < 0 OR pods < 0$$,
    'no column of the budget row is NULL or negative');

-- a plain role sees the same budget
SET ROLE cb_viewer;
SELECT results_eq(
    $$SELECT max_connections, superuser_reserved, reserved_connections,
             extension_reserved, budget, governed, free
        FROM connbudget.budget$$,
    $$VALUES (120, 0, 0, 40, 80, 0, 80)$$,
    'a plain role reads the same budget row');
RESET ROLE;

-- ---- a governed connection shows in the views --------------------------------

SELECT is(pod_connect('cb_views_1', 'cb-views-app', 'p1'), 'OK',
    'a governed connection (pod p1) opens');

SELECT results_eq(
    $$SELECT application_name, pod, connections, share, demand, host(client_addr),
             lease_expires
        FROM connbudget.pods$$,
    $$VALUES ('cb-views-app'::text, 'p1'::text, 1, 1, 1, '127.0.0.1'::text,
              NULL::timestamptz)$$,
    'pods shows the connection''s pod: one connection; until it reports, it demands and gets that one; no lease yet');
SELECT ok(
    (SELECT first_seen <= last_seen AND last_seen <= clock_timestamp()
       FROM connbudget.pods WHERE pod = 'p1'),
    'pods.first_seen <= pods.last_seen <= now');
SELECT results_eq(
    $$SELECT application_name, min_connections, max_connections, weight, allocation,
             connections, pods, demand, refused
        FROM connbudget.applications$$,
    $$VALUES ('cb-views-app'::text, 0, NULL::int, 1, 1, 1, 1, 1::bigint, 0::bigint)$$,
    'applications shows the unconfigured application with default limits, its connection, pod and demand');
SELECT results_eq(
    $$SELECT budget, governed, free, applications, pods FROM connbudget.budget$$,
    $$VALUES (80, 1, 79, 1, 1)$$,
    'budget counts the governed connection, its application and pod');

-- pool_share() on the governed connection
SELECT results_eq(
    $$SELECT * FROM dblink('cb_views_1', 'SELECT * FROM connbudget.pool_share()')
        AS t(max_size int, min_size int, allocation int, pods int, budget int, refresh_ms int)$$,
    $$VALUES (80, 0, 80, 1, 80, 1000)$$,
    'pool_share() of the only pod: the whole budget, no minimum, refresh_ms = connbudget.refresh_interval');
SELECT is(pod_share('cb_views_1', 7), 80,
    'pool_share(7) returns the latest published share, computed before this report');
SELECT results_eq(
    $$SELECT demand, share, lease_expires - last_seen FROM connbudget.pods WHERE pod = 'p1'$$,
    $$VALUES (7, 7, interval '3 seconds')$$,
    'pods shows the reported demand, the share it now gets, and a lease of connbudget.pod_ttl after the call');
SELECT is(pod_share('cb_views_1', 7), 7,
    'once published, pool_share(7) returns the share bounded by the reported demand');
SELECT results_eq(
    $$SELECT allocation, demand FROM connbudget.applications
       WHERE application_name = 'cb-views-app'$$,
    $$VALUES (7, 7::bigint)$$,
    'applications shows the application''s demand and allocation');
SELECT throws_ok(
    $$SELECT * FROM dblink('cb_views_1', 'SELECT max_size FROM connbudget.pool_share(-1)')
        AS t(max_size int)$$,
    '22023',
    'demand must not be negative: -1',
    'pool_share() refuses a negative demand');

-- a second pod of the same application; "P0" sorts before "p1" byte-wise
SELECT is(pod_connect('cb_views_2', 'cb-views-app', 'P0'), 'OK',
    'a second governed connection (pod P0) opens');
SELECT results_eq(
    $$SELECT pod, connections, share, demand FROM connbudget.pods$$,
    $$VALUES ('P0'::text, 1, 1, 1), ('p1', 1, 7, 7)$$,
    'pods lists pods in byte order; the pod that never reported demands the connection it holds');
SELECT results_eq(
    $$SELECT allocation, connections, pods, demand FROM connbudget.applications
       WHERE application_name = 'cb-views-app'$$,
    $$VALUES (8, 2, 2, 8::bigint)$$,
    'the application''s demand is the sum of its pods''');
SELECT is(
    (SELECT max_size FROM dblink('cb_views_2', 'SELECT max_size FROM connbudget.pool_share()')
        AS t(max_size int)),
    73,
    'a first report waits for its publication: the pod reporting no bound takes what the other leaves');
SELECT results_eq(
    $$SELECT allocation, connections, pods, demand FROM connbudget.applications
       WHERE application_name = 'cb-views-app'$$,
    $$VALUES (80, 2, 2, NULL::bigint)$$,
    'a pod reporting no bound makes the application''s demand unbounded (NULL)');
SELECT cmp_ok(
    (SELECT sum(share)::int FROM connbudget.pods),
    '<=',
    (SELECT budget FROM connbudget.budget),
    'the shares of all pods add up to no more than the budget');
SELECT results_eq(
    $$SELECT governed, free, pods FROM connbudget.budget$$,
    $$VALUES (2, 78, 2)$$,
    'budget counts both governed connections and both pods');

-- ---- any role, well-formed rows ---------------------------------------------

SET ROLE cb_viewer;
SELECT results_eq(
    $$SELECT application_name, pod, connections, share FROM connbudget.pods$$,
    $$VALUES ('cb-views-app'::text, 'P0'::text, 1, 73), ('cb-views-app', 'p1', 1, 7)$$,
    'a plain role sees the same pods');
SELECT results_eq(
    $$SELECT application_name, allocation, connections, pods FROM connbudget.applications$$,
    $$VALUES ('cb-views-app'::text, 80, 2, 2)$$,
    'a plain role sees the same applications');
SELECT is_empty(
    $$SELECT * FROM connbudget.applications
       WHERE application_name IS NULL OR application_name = ''
          OR min_connections IS NULL OR min_connections < 0
          OR max_connections < 0 OR weight IS NULL OR weight < 1
          OR allocation IS NULL OR allocation < 0
          OR allocation > (SELECT budget FROM connbudget.budget)
          OR allocation > max_connections
          OR connections IS NULL OR connections < 0
          OR pods IS NULL OR pods < 0 OR demand < 0
          OR refused IS NULL OR refused < 0$$,
    'every row of applications is well-formed (as read by a plain role)');
SELECT is_empty(
    $$SELECT * FROM connbudget.pods
       WHERE application_name IS NULL OR pod IS NULL OR pod = ''
          OR octet_length(pod) > 63
          OR connections IS NULL OR connections < 0
          OR share IS NULL OR share < 0
          OR share > (SELECT budget FROM connbudget.budget)
          OR demand < 0
          OR first_seen IS NULL OR last_seen IS NULL OR first_seen > last_seen
          OR lease_expires < last_seen$$,
    'every row of pods is well-formed (as read by a plain role)');
SELECT is_empty(
    $$SELECT p.application_name FROM connbudget.pods p
       WHERE NOT EXISTS (SELECT 1 FROM connbudget.applications a
                          WHERE a.application_name = p.application_name)$$,
    'every pod belongs to an application listed in applications');
SELECT results_eq(
    $$SELECT kind FROM connbudget.slots$$,
    $$VALUES ('backends'), ('applications'), ('pods'), ('pool sessions'), ('roles'), ('role lists')$$,
    'slots lists the six kinds of shared-memory slot (as read by a plain role)');
SELECT is_empty(
    $$SELECT * FROM connbudget.slots
       WHERE NOT consistent OR used < 0 OR capacity <= 0 OR used > capacity$$,
    'every kind of slot is consistent with its free list and lookup table, within its capacity');
SELECT ok(
    (SELECT used >= 2 FROM connbudget.slots WHERE kind = 'pods') AND
    (SELECT used >= 2 FROM connbudget.slots WHERE kind = 'pool sessions') AND
    (SELECT used >= 3 FROM connbudget.slots WHERE kind = 'backends'),
    'slots counts the two pods, their sessions and the backends holding them');
RESET ROLE;

SELECT is(
    (SELECT count(dblink_disconnect(c))::int FROM unnest(dblink_get_connections()) c),
    2,
    'both governed connections close');

SELECT * FROM finish();
ROLLBACK;
