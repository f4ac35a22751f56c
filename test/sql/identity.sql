-- Which application and pod a connection belongs to.

-- An explicit pod.  Until it reports a demand, it demands the connection
-- it holds.
SELECT pod_connect('c1', 'shop', 'web-7f9c');
SELECT application_name, pod, connections, host(client_addr), demand,
       lease_expires IS NULL AS never_called
FROM connbudget.pods;

-- Without a pod setting, a connection of an unconfigured application is
-- "other", and one of a configured application is governed, its pod being
-- its IP address, or "local" over a Unix socket.
SELECT pod_connect('c2', 'cron', NULL);
SELECT wait_for($$SELECT other FROM connbudget.budget$$, '2');
INSERT INTO connbudget.application_limits (application_name) VALUES ('billing');
SELECT pod_connect('c3', 'billing', NULL);
SELECT pod_connect('c4', 'billing', NULL, 'postgres', current_setting('unix_socket_directories'));
SELECT application_name, pod, connections, host(client_addr)
FROM connbudget.pods ORDER BY 1, 2;
SELECT governed, other, pods FROM connbudget.budget;

-- Configuring an application governs its existing connections at once,
-- and removing it makes them "other" again.
INSERT INTO connbudget.application_limits (application_name) VALUES ('cron');
SELECT application_name, pod, connections FROM connbudget.pods
WHERE application_name = 'cron';
SELECT governed, other FROM connbudget.budget;
DELETE FROM connbudget.application_limits WHERE application_name = 'cron';
SELECT count(*) FROM connbudget.pods WHERE application_name = 'cron';
SELECT governed, other FROM connbudget.budget;

-- The identity is fixed at connect time: a later SET does not move it.
SELECT * FROM dblink_exec('c1', 'SET application_name = ''billing''');
SELECT application_name, pod, connections FROM connbudget.pods
WHERE pod = 'web-7f9c';

-- pool_share() speaks for the caller's own pod and records its demand.
SELECT pod_share('c1', 7);
SELECT pod, demand, lease_expires > last_seen AS leased
FROM connbudget.pods WHERE pod = 'web-7f9c';

-- This session is not governed: pool_share() says why.
SELECT * FROM connbudget.pool_share();
-- Negative demand is refused.
SELECT * FROM dblink('c1', 'SELECT max_size FROM connbudget.pool_share(-1)') AS t(x int);

SELECT dblink_disconnect(c) FROM unnest(ARRAY['c1', 'c2', 'c3', 'c4']) c;
DELETE FROM connbudget.application_limits;
-- c1 called pool_share(), so its pod outlives its connection by pod_ttl.
SELECT wait_for($$SELECT count(*) FROM connbudget.pods$$, '0');
SELECT wait_for($$SELECT governed || '/' || other FROM connbudget.budget$$, '0/1');
