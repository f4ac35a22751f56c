#!/usr/bin/env bash
# kubernetes.sh -- the Kubernetes recipes of deploy/kubernetes, checked
# without Kubernetes.  Prints TAP.
#
# Checked: every manifest parses, holds the kinds it should, and fits
# together (test/kubernetes/manifests.py check, itself clean under
# flake8); the monitoring ConfigMap is what make-monitoring-configmap.sh
# makes of monitoring/postgres_exporter.yml today, and its queries are that
# file byte for byte.  Then, on a throwaway
# cluster (TLS on, passwords for every role but postgres) started with the
# Cluster's shared_preload_libraries and parameters, bootstrapped as the
# operator does (the initdb database and owner, postInitApplicationSQL in
# that database): the extension and the limits are there, and every
# monitoring query runs there as cnpg_metrics_exporter does.  The
# application Deployment's environment, resolved as the kubelet does for
# three pod names (POD_NAME from the downward API, $(POD_NAME) expanded,
# the Secret db-app's values), makes psql a pod of "api" under exactly that
# name; a third pod shrinks the others' shares and the shares never add up
# to more than the allocation; a pod that leaves hands its share back at
# once, one killed after connbudget.pod_ttl.  PgBouncer as CloudNativePG's
# Pooler configures it ("* = host=...") hands the server connections that
# connbudget counts as other; with pgbouncer.yaml's configuration they are
# the application's, in the pod of PgBouncer's address, and the
# controller, run with the sidecar's environment, sizes that PgBouncer.
#
# Replaced to run here: host names (127.0.0.1), ports (free ones),
# directories (a scratch one); nothing else.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
# shellcheck source=../lib/cluster.sh
source test/lib/cluster.sh
export PATH="$PG_BINDIR:$PATH"
k8s=deploy/kubernetes
# Debian's python3 with python3-yaml (another python3 earlier in PATH may lack it)
python=python3
[ -x /usr/bin/python3 ] && python=/usr/bin/python3
m() { "$python" test/kubernetes/manifests.py "$@"; }

# shellcheck source=../lib/tap.sh
source test/lib/tap.sh
# TAP lines without numbers, from manifests.py
tap() {
    local line
    while IFS= read -r line; do
        case $line in
            "ok - "*) ok 0 "${line#ok - }" ;;
            "not ok - "*) ok 1 "${line#not ok - }" ;;
            *) echo "# $line" ;;
        esac
    done
}

work=$(mktemp -d "${CB_WORK:-/tmp}/kubernetes.XXXXXX")
dir="$work/cluster"
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    wait 2>/dev/null
    cluster_destroy "$dir"
    [ -n "${CB_KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

# ---- the manifests ----

tap < <(m check "$k8s" 2>&1)
"$python" -m flake8 test/kubernetes/*.py >"$work/flake8.out" 2>&1
ok $? "flake8 (the tree's .flake8) reports nothing in test/kubernetes/*.py"
sed 's/^/#   /' "$work/flake8.out"
bash "$k8s/make-monitoring-configmap.sh" >"$work/monitoring-configmap.yaml"
cmp -s "$work/monitoring-configmap.yaml" "$k8s/monitoring-configmap.yaml"
ok $? "monitoring-configmap.yaml is what make-monitoring-configmap.sh makes of monitoring/postgres_exporter.yml"

# ---- the Cluster, bootstrapped as the operator does ----

openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=db-rw \
    -keyout "$work/server.key" -out "$work/server.crt" >/dev/null 2>&1
chmod 600 "$work/server.key"
mapfile -t settings < <(m settings "$k8s/cluster.yaml")
read -r database owner < <(m initdb "$k8s/cluster.yaml")
cluster_create "$dir" auth=scram-sha-256 ssl=on ssl_cert_file="$work/server.crt" \
    ssl_key_file="$work/server.key" "${settings[@]}" >/dev/null
if ! cluster_start "$dir"; then
    echo "Bail out! the cluster did not start with the Cluster's settings"
    exit 1
fi
eval "$(cluster_env "$dir")"
password='k8s-secret'
psql -X -q -v ON_ERROR_STOP=1 -c "CREATE ROLE $owner LOGIN PASSWORD '$password'" \
    -c "CREATE DATABASE $database OWNER $owner" -c "CREATE ROLE cnpg_metrics_exporter LOGIN" \
    -c "GRANT pg_monitor TO cnpg_metrics_exporter" >/dev/null
status=0
while IFS= read -r -d '' sql; do
    psql -X -q -v ON_ERROR_STOP=1 -d "$database" -c "$sql" >/dev/null || status=1
done < <(m sql "$k8s/cluster.yaml")
ok $status "postInitApplicationSQL runs in $database"
[ "$(psql -X -Atq -d "$database" -c "SELECT current_setting('shared_preload_libraries') ~ 'connbudget',
        current_setting('connbudget.database'), (SELECT count(*) FROM connbudget.application_limits
        WHERE application_name = 'api')")" = "t|$database|1" ]
ok $? "the server preloads connbudget, connbudget.database is $database, api has its limits"
# the limits loader finds the database it could not load from at start
for _ in $(seq 150); do
    [ "$(psql -X -Atq -d "$database" -c "SELECT max_connections FROM connbudget.applications WHERE application_name = 'api'")" = 120 ] && break
    sleep 0.1
done

# ---- the application's pods: identity from the Deployment's environment ----

secrets=(db-app/host=127.0.0.1 "db-app/port=$PGPORT" "db-app/dbname=$database"
         "db-app/username=$owner" "db-app/password=$password")
pod_env() { m env "$k8s/app-deployment.yaml" api api "$1" "${secrets[@]}"; }
# one session of pod $1, as a pool's: says who it is, then holds its
# connection and reports an unbounded demand every half second
start_pod() {
    local name=$1
    (
        eval "$(pod_env "$name")"
        exec env -i PATH="$PATH" POD_NAME="$POD_NAME" PGAPPNAME="$PGAPPNAME" PGOPTIONS="$PGOPTIONS" \
            PGHOST="$PGHOST" PGPORT="$PGPORT" PGDATABASE="$PGDATABASE" PGUSER="$PGUSER" \
            PGPASSWORD="$PGPASSWORD" PGSSLMODE="$PGSSLMODE" \
            psql -X -Atq -c "SELECT current_setting('connbudget.pod') || '|' || current_setting('application_name') || '|' || (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())" \
            -c "DO \$\$BEGIN /* $name */ FOR i IN 1..240 LOOP PERFORM set_config('connbudget.demand', 'unbounded', false); PERFORM pg_sleep(0.5); END LOOP; END\$\$"
    ) >"$work/$name.out" 2>&1 &
    pids+=($!)
}
# end pod $1's session (its process killed: no leave)
kill_pod() {
    psql -X -q -d "$database" -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE query LIKE '%/* $1 */%' AND pid <> pg_backend_pid()" >/dev/null
}
# pod $1's lease
lease() {
    psql -X -Atq -d "$database" -c "SELECT lease_expires FROM connbudget.pods WHERE pod = '$1'"
}
# a superuser's view of the pods of api: pod=share,... in pod order
shares() {
    psql -X -Atq -d "$database" -c "SELECT string_agg(pod || '=' || share, ',' ORDER BY pod)
        FROM connbudget.pods WHERE application_name = 'api'"
}
wait_for() {
    local want=$1 _
    for _ in $(seq 100); do
        got=$("${@:2}")
        [ "$got" = "$want" ] && return 0
        sleep 0.1
    done
    return 1
}
p1=api-7c9d5b8f4-k2x7p p2=api-7c9d5b8f4-q9w3z p3=api-7c9d5b8f4-zt5mc
start_pod $p1
start_pod $p2
wait_for "$p1=60,$p2=60" shares
ok $? "two pods of api, named by POD_NAME through PGOPTIONS, share its cap of 120: $got"
tap < <(m queries "$k8s/monitoring-configmap.yaml" connbudget-monitoring connbudget.yml "$database" 2>&1)
[ "$(head -n 1 "$work/$p1.out")" = "$p1|api|true" ]
ok $? "the session sees connbudget.pod = its POD_NAME and application_name = PGAPPNAME, over TLS (PGSSLMODE)"
start_pod $p3
wait_for "$p1=40,$p2=40,$p3=40" shares
ok $? "a third pod (a scale-up) shrinks every share: $got"
[ "$(psql -X -Atq -d "$database" -c "SELECT sum(p.share) <= a.allocation AND a.allocation <= b.budget
        FROM connbudget.pods p, connbudget.applications a, connbudget.budget b
        WHERE p.application_name = 'api' AND a.application_name = 'api' GROUP BY a.allocation, b.budget")" = t ]
ok $? "the pods' shares add up to no more than the allocation, and it to no more than the budget"

# a pod that stops (a rolling deploy's old pod): its pool leaves
kill_pod $p3
(
    eval "$(pod_env "$p3")"
    exec env -i PATH="$PATH" PGAPPNAME="$PGAPPNAME" PGOPTIONS="$PGOPTIONS" PGHOST="$PGHOST" PGPORT="$PGPORT" \
        PGDATABASE="$PGDATABASE" PGUSER="$PGUSER" PGPASSWORD="$PGPASSWORD" PGSSLMODE="$PGSSLMODE" \
        psql -X -q -c "SET connbudget.demand = 'leave'"
) >/dev/null 2>&1
wait_for "$p1=60,$p2=60" shares
ok $? "a pod that leaves hands its share back to the others: $got"

# a pod killed without leaving (SIGKILL, a lost node): its lease runs out
start_pod $p3
wait_for "$p1=40,$p2=40,$p3=40" shares
ok $? "the third pod is back: $got"
# killed, and looked at a moment later (it reported less than a second ago)
read -r after lease3 < <(psql -X -Atq -d "$database" \
    -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%/* $p3 */%' AND pid <> pg_backend_pid()" \
    -c "SELECT pg_sleep(0.2)" \
    -c "SELECT (SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%/* $p3 */%' AND pid <> pg_backend_pid())
               || '|' || string_agg(pod || '=' || share, ',' ORDER BY pod) || ' ' ||
               (SELECT lease_expires FROM connbudget.pods WHERE pod = '$p3')
          FROM connbudget.pods WHERE application_name = 'api'" | tail -n 1)
[ "$after" = "0|$p1=40,$p2=40,$p3=40" ]
ok $? "a killed pod keeps its share while its lease (connbudget.pod_ttl) lasts: $after"
for _ in $(seq 100); do
    got=$(shares)
    [ "$got" = "$p1=60,$p2=60" ] && break
    sleep 0.1
done
[ "$got" = "$p1=60,$p2=60" ] && [ "$(psql -X -Atq -c "SELECT clock_timestamp() >= '$lease3'::timestamptz")" = t ]
ok $? "then, its lease ended, its share goes back to the others: $got"

# ---- PgBouncer: CloudNativePG's Pooler entry and pgbouncer.yaml's ----

m data "$k8s/pgbouncer.yaml" api-pgbouncer pgbouncer.ini >"$work/pgbouncer.ini.k8s"
m data "$k8s/pgbouncer.yaml" api-pgbouncer pg_hba.conf >"$work/pg_hba.conf"
printf '"%s" "%s"\n"pgbouncer" ""\n' "$owner" "$password" >"$work/userlist.txt"
mkdir -p "$work/run"
# pgbouncer_config STAR: pgbouncer.yaml's pgbouncer.ini, run here; STAR=1
# puts CloudNativePG's [databases] entry in place of its own
pgbouncer_config() {
    local bport=$1 star=$2
    sed -e "s|host=db-rw port=5432|host=127.0.0.1 port=$PGPORT|" \
        -e "s|^listen_addr = .*|listen_addr = 127.0.0.1|" \
        -e "s|^listen_port = .*|listen_port = $bport|" \
        -e "s|/etc/pgbouncer-auth/|$work/|; s|/etc/pgbouncer/|$work/|; s|/var/run/pgbouncer|$work/run|" \
        "$work/pgbouncer.ini.k8s" >"$work/pgbouncer.ini"
    if [ "$star" = 1 ]; then
        sed -i "s|^app = .*|* = host=127.0.0.1 port=$PGPORT|" "$work/pgbouncer.ini"
    fi
}
start_pgbouncer() {
    pgbouncer "$work/pgbouncer.ini" >"$work/pgbouncer.log" 2>&1 &
    bouncer=$!
    pids+=("$bouncer")
    for _ in $(seq 100); do
        [ -S "$work/run/.s.PGSQL.$1" ] && return 0
        sleep 0.05
    done
    return 1
}
stop_pgbouncer() {
    kill "$bouncer" 2>/dev/null
    wait "$bouncer" 2>/dev/null
}
# a client of PgBouncer with the application's environment, host and port
# those of the Service
client() {
    (
        eval "$(pod_env "$p1")"
        exec env -i PATH="$PATH" PGAPPNAME="$PGAPPNAME" PGOPTIONS="$PGOPTIONS" PGHOST=127.0.0.1 \
            PGPORT="$1" PGDATABASE="$PGDATABASE" PGUSER="$PGUSER" PGPASSWORD="$PGPASSWORD" \
            psql -X -Atq -c "SELECT pg_sleep(60) /* through PgBouncer */"
    ) >"$work/client.out" 2>&1 &
    client_pid=$!
    pids+=("$client_pid")
}
counts() {
    psql -X -Atq -d "$database" -c "SELECT b.other || ' ' || coalesce((SELECT string_agg(pod || '=' || connections, ',')
        FROM connbudget.pods WHERE application_name = 'api' AND pod NOT LIKE 'api-%'), '-')
        FROM connbudget.budget b"
}

before=$(counts)
bport=$(cluster_free_port)
pgbouncer_config "$bport" 1
start_pgbouncer "$bport"
ok $? "PgBouncer starts with CloudNativePG's '*' entry"
client "$bport"
other=${before%% *}
wait_for "$((other + 1)) -" counts
ok $? "through CloudNativePG's '*' entry PgBouncer's server connection is an other connection, in no pod of api (before: $before; now: $got)"
kill "$client_pid" 2>/dev/null
stop_pgbouncer
# (a backend in pg_sleep notices its client gone only when the sleep ends)
psql -X -q -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
    WHERE query LIKE '%/* through PgBouncer */%' AND pid <> pg_backend_pid()" >/dev/null
wait_for "$before" counts

bport=$(cluster_free_port)
pgbouncer_config "$bport" 0
start_pgbouncer "$bport"
ok $? "PgBouncer starts with pgbouncer.yaml's configuration"
client "$bport"
wait_for "$other 127.0.0.1=1" counts
ok $? "through pgbouncer.yaml's entry the server connection is api's, in the pod of PgBouncer's address (now: $got)"

gcc -std=c11 -O1 -I"$("${PG_CONFIG:-pg_config}" --includedir)" -o "$work/connbudget-pgbouncer" \
    client/pgbouncer/connbudget_pgbouncer.c -L"$("${PG_CONFIG:-pg_config}" --libdir)" \
    -Wl,-rpath,"$("${PG_CONFIG:-pg_config}" --libdir)" -lpq -pthread
(
    # the sidecar's environment, as pgbouncer.yaml gives it
    mport=$(cluster_free_port)
    eval "$(m env "$k8s/pgbouncer.yaml" api-pgbouncer connbudget x "db-app/password=$password")"
    exec env -i PATH="$PATH" \
        CONNBUDGET_SERVER="${CONNBUDGET_SERVER/host=db-rw port=5432/host=127.0.0.1 port=$PGPORT}" \
        CONNBUDGET_ADMIN="${CONNBUDGET_ADMIN/host=\/var\/run\/pgbouncer port=6432/host=$work/run port=$bport}" \
        CONNBUDGET_METRICS_LISTEN="127.0.0.1:$mport" PGPASSWORD="$PGPASSWORD" \
        "$work/connbudget-pgbouncer" --once
) >"$work/controller.log" 2>&1
ok $? "connbudget-pgbouncer with the sidecar's environment sizes that PgBouncer (--once)"
psql -X -Atq -h "$work/run" -p "$bport" -U pgbouncer pgbouncer -c "SHOW CONFIG" 2>/dev/null |
    grep -q "^default_pool_size|[0-9]*|" && grep -q "pool size 1 -> " "$work/controller.log"
ok $? "its pool size is the pod's share less the controller's connection: $(grep -o 'pool size 1 -> [0-9]* (share [0-9]*' "$work/controller.log" | tr -d '(')"
stop_pgbouncer

echo "1..$n"
if [ $failures -ne 0 ]; then
    echo "# $failures of $n failed; last lines of the server log:"
    tail -n 20 "$dir/server.log" | sed 's/^/#   /'
    exit 1
fi
