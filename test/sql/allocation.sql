-- The budget arithmetic, end to end: the examples of docs/identity-and-arithmetic.md.
-- Budget: max_connections 120 - superuser_reserved 0 - reserved 40 = 80.
-- The pods are pools: each reports its demand with pool_share() (NULL: no
-- bound), and a report counts for pod_ttl (3 s here).

-- One application with 4 live pods.  Until they report, each demands the
-- one connection it holds; once they report no bound, 20 each.
SELECT pod_connect('p' || i, 'shop', 'pod-' || i) FROM generate_series(1, 4) i;
SELECT pod, share, demand FROM connbudget.pods;
SELECT report(NULL, 'p1', 'p2', 'p3', 'p4');
SELECT pod, share, demand FROM connbudget.pods;
SELECT pod_share('p1') AS p1, pod_share('p2') AS p2, pod_share('p3') AS p3,
       pod_share('p4') AS p4;
SELECT application_name, allocation, connections, pods, demand
FROM connbudget.applications;

-- With 3 pods: 27, 27, 26 (the remainder goes in ascending pod-id order).
-- pod-4 called pool_share(), so it stays live for pod_ttl after leaving;
-- meanwhile the others' reports age too, so they report again.
SELECT dblink_disconnect('p4');
SELECT wait_for($$SELECT count(*) FROM connbudget.pods$$, '3');
SELECT report(NULL, 'p1', 'p2', 'p3');
SELECT pod, share FROM connbudget.pods;
SELECT * FROM dblink('p1', 'SELECT * FROM connbudget.pool_share()')
    AS t(max_size int, min_size int, allocation int, pods int, budget int, refresh_ms int);

-- A report older than pod_ttl no longer counts: the pods fall back to the
-- connection each holds.
SELECT pg_sleep(3.2);
SELECT pod, share, demand FROM connbudget.pods;
SELECT dblink_disconnect('p' || i) FROM generate_series(1, 3) i;
SELECT wait_for($$SELECT count(*) FROM connbudget.pods$$, '0');

-- Applications A and B of weight 1 with 2 pods each: 20 per pod.
SELECT pod_connect('a1', 'A', 'a-1'), pod_connect('a2', 'A', 'a-2'),
       pod_connect('b1', 'B', 'b-1'), pod_connect('b2', 'B', 'b-2');
SELECT report(NULL, 'a1', 'a2', 'b1', 'b2');
SELECT application_name, pod, share FROM connbudget.pods;

-- A capped at 30: A's pods 15, B's pods 25.
INSERT INTO connbudget.application_limits (application_name, max_connections)
VALUES ('A', 30);
SELECT application_name, pod, share FROM connbudget.pods;
SELECT application_name, max_connections, allocation FROM connbudget.applications;

-- A's two pods report demand 5 each, B is uncapped: A's pods 5, B's pods 35.
DELETE FROM connbudget.application_limits;
SELECT report(5, 'a1', 'a2'), report(NULL, 'b1', 'b2');
SELECT application_name, pod, share, demand FROM connbudget.pods;
SELECT application_name, allocation, demand FROM connbudget.applications;

-- Weights: B weighs 3, both unbounded: 20 and 60.
SELECT report(NULL, 'a1', 'a2', 'b1', 'b2');
INSERT INTO connbudget.application_limits (application_name, weight) VALUES ('B', 3);
SELECT application_name, weight, allocation FROM connbudget.applications;

-- A guaranteed minimum is held for its application even without pods.
INSERT INTO connbudget.application_limits (application_name, min_connections)
VALUES ('reports', 30);
SELECT application_name, min_connections, allocation, pods FROM connbudget.applications;
SELECT * FROM dblink('b1', 'SELECT * FROM connbudget.pool_share()')
    AS t(max_size int, min_size int, allocation int, pods int, budget int, refresh_ms int);

-- A pod of "reports" joins: it gets the minimum as min_size.
SELECT pod_connect('r1', 'reports', 'r-1');
SELECT * FROM dblink('r1', 'SELECT * FROM connbudget.pool_share()')
    AS t(max_size int, min_size int, allocation int, pods int, budget int, refresh_ms int);

-- The sum of shares never exceeds the budget.
SELECT sum(share) <= (SELECT budget FROM connbudget.budget) AS within_budget
FROM connbudget.pods;

SELECT dblink_disconnect(c) FROM unnest(dblink_get_connections()) c;
DELETE FROM connbudget.application_limits;
SELECT wait_for($$SELECT count(*) FROM connbudget.pods$$, '0');
