-- Extensions and helpers for the regression tests.  Pods are simulated with
-- dblink connections that give connbudget.pod at connect time, exactly as a
-- pool does.  The tests run on test/run's throwaway cluster or, with make
-- installcheck, on a server of yours (test/README.md, "make installcheck"): what they
-- change there -- the limits, connbudget.reserved_connections, the
-- extensions -- is kept aside here and put back by teardown.
CREATE TABLE connbudget_regress_saved AS
SELECT (SELECT count(*) FROM pg_extension WHERE extname = 'connbudget') > 0 AS had_connbudget,
       (SELECT count(*) FROM pg_extension WHERE extname = 'dblink') > 0 AS had_dblink,
       (SELECT setting FROM pg_file_settings
         WHERE name = 'connbudget.reserved_connections'
           AND sourcefile LIKE '%postgresql.auto.conf'
         ORDER BY seqno DESC LIMIT 1) AS auto_reserved;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS connbudget;
CREATE EXTENSION IF NOT EXISTS dblink;
RESET client_min_messages;
CREATE TABLE connbudget_regress_saved_limits AS
SELECT * FROM connbudget.application_limits;
DELETE FROM connbudget.application_limits;

SELECT extname, extversion, nspname
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE extname = 'connbudget';

-- pod_connect, pod_share and wait_for, which the pgTAP tests share (the
-- path is from the Makefile's directory, where make installcheck runs)
\i test/sql/helpers.psql

-- Like pod_connect, but report a refusal as the server's message and detail
-- (without the host and port libpq puts in front of them).
CREATE FUNCTION try_connect(name text, app text, pod text, role text DEFAULT current_user)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    detail text;
BEGIN
    RETURN pod_connect(name, app, pod, role);
EXCEPTION WHEN sqlclient_unable_to_establish_sqlconnection THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    RETURN regexp_replace(detail, '^.*failed: ', '');
END
$$;

-- Report demand on each of these connections, as a pool does every refresh
-- interval (NULL: no bound); returns how many reported.
CREATE FUNCTION report(demand int, VARIADIC names text[]) RETURNS int
LANGUAGE sql AS $$
    SELECT count(pod_share(n, demand))::int FROM unnest(names) n
$$;

-- The tests share a budget of 80 on any server: connbudget.reserved_connections
-- holds back what is beyond it (test/run's cluster: max_connections 120,
-- superuser_reserved_connections 0, so 40).  This session is the one "other".
SELECT current_setting('max_connections')::int
       - current_setting('superuser_reserved_connections')::int
       - coalesce(current_setting('reserved_connections', true)::int, 0) - 80 AS cb_reserved \gset
ALTER SYSTEM SET connbudget.reserved_connections = :cb_reserved;
SELECT pg_reload_conf();
SELECT wait_for($$SELECT budget FROM connbudget.budget$$, '80');
SELECT budget, governed, other, free, applications, pods FROM connbudget.budget;
