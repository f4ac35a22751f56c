-- Connect-time enforcement: an application at its cap is refused with
-- SQLSTATE 53300 and the numbers; superusers are never refused.
CREATE ROLE shop_user LOGIN;
INSERT INTO connbudget.application_limits (application_name, max_connections)
VALUES ('shop', 2);

SELECT pod_connect('s1', 'shop', 'pod-a', 'shop_user');
SELECT pod_connect('s2', 'shop', 'pod-b', 'shop_user');
SELECT try_connect('s3', 'shop', 'pod-c', 'shop_user');
SELECT application_name, connections, refused FROM connbudget.applications;

-- A superuser of the same application gets in.
SELECT pod_connect('s4', 'shop', 'pod-c', 'postgres');
SELECT application_name, connections, refused FROM connbudget.applications;

-- A closed connection frees its slot for the next one.
SELECT dblink_disconnect('s1');
SELECT dblink_disconnect('s4');
SELECT wait_for($$SELECT connections FROM connbudget.applications WHERE application_name = 'shop'$$, '1');
SELECT pod_connect('s1', 'shop', 'pod-a', 'shop_user');

-- Raising the cap applies to the next connection, without a restart.
UPDATE connbudget.application_limits SET max_connections = 3;
SELECT pod_connect('s3', 'shop', 'pod-c', 'shop_user');
SELECT connections, refused FROM connbudget.applications WHERE application_name = 'shop';

-- A guaranteed minimum cannot be taken by another application: with
-- "reports" holding 77 of the 80 for itself, "shop" (3 connections) is
-- refused although below its cap.
UPDATE connbudget.application_limits SET max_connections = 10;
INSERT INTO connbudget.application_limits (application_name, min_connections)
VALUES ('reports', 77);
SELECT try_connect('s5', 'shop', 'pod-e', 'shop_user');
SELECT pod_connect('r1', 'reports', 'pod-r', 'shop_user');

SELECT dblink_disconnect(c) FROM unnest(dblink_get_connections()) c;
DELETE FROM connbudget.application_limits;
SELECT wait_for($$SELECT governed FROM connbudget.budget$$, '0');
DROP ROLE shop_user;
