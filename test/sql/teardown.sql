-- Put back what setup kept aside: connbudget.reserved_connections, the
-- limits, and the extensions as they were.
SELECT CASE WHEN auto_reserved IS NULL THEN 'ALTER SYSTEM RESET connbudget.reserved_connections'
            ELSE format('ALTER SYSTEM SET connbudget.reserved_connections = %s', auto_reserved)
       END AS cb_restore_reserved
FROM connbudget_regress_saved \gset
:cb_restore_reserved;
SELECT pg_reload_conf();
-- this session applies the reloaded setting between statements
SELECT pg_sleep(0.5);
SELECT current_setting('connbudget.reserved_connections') AS cb_reserved \gset
SELECT wait_for($$SELECT extension_reserved FROM connbudget.budget$$, :'cb_reserved')
       = :'cb_reserved' AS reserve_restored;
INSERT INTO connbudget.application_limits SELECT * FROM connbudget_regress_saved_limits;
DROP TABLE connbudget_regress_saved_limits;
DROP FUNCTION pod_connect, try_connect, pod_share, report, wait_for;
SELECT CASE WHEN had_dblink THEN 'RESET client_min_messages' ELSE 'DROP EXTENSION dblink' END
           AS cb_drop_dblink,
       CASE WHEN had_connbudget THEN 'RESET client_min_messages' ELSE 'DROP EXTENSION connbudget' END
           AS cb_drop_connbudget
FROM connbudget_regress_saved \gset
:cb_drop_dblink;
:cb_drop_connbudget;
DROP TABLE connbudget_regress_saved;
