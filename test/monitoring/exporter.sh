#!/usr/bin/env bash
# exporter.sh -- connbudget's numbers in Prometheus, for real: Debian's
# postgres_exporter with monitoring/postgres_exporter.yml against a
# throwaway cluster on loopback, scraped and compared with the views; the
# pod example's --metrics-port endpoint scraped with curl; Debian's
# PgBouncer in front of the cluster with connbudget-pgbouncer beside it
# and a little load through it; and the example alert rules under promtool.
# Prints TAP; test/run runs it through prove.
#
# Checked: the budget, each application's allocation, connections, demand,
# cap and refused count, and each pod's share and connections are exported
# with the views' values, each with its help text and type, and no client
# address is; the pod example serves its pool's metrics; the controller
# serves its own, with the share the server publishes for PgBouncer's pod
# and the pool size it set.  Debian's Prometheus scrapes all three with
# monitoring/recording.yml and alerts.yml loaded, and every panel of
# monitoring/grafana-dashboard.json returns plausible series, every
# recording rule returns series and every alert evaluates against the real
# metrics (test/monitoring/panels.py, itself clean under flake8).  A second
# Prometheus scrapes the exporter's series as CloudNativePG's exporter
# publishes them (cnpg_ prefixed, a target label pod naming the instance),
# served as a file, through the metricRelabelings of docs/kubernetes.md's
# PodMonitor: the same panels, rules and alerts must find them there too.
# promtool test rules passes test/monitoring/alerts_test.yml and
# recording_test.yml.
#
# Budget: 60 - 0 - 10 = 50.  "api" is capped at 3; "shop" reaches the
# server through PgBouncer.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
# shellcheck source=../lib/cluster.sh
source test/lib/cluster.sh

# shellcheck source=../lib/tap.sh
source test/lib/tap.sh

work=$(mktemp -d "${CB_WORK:-/tmp}/monitoring.XXXXXX")
dir="$work/cluster"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    wait 2>/dev/null
    cluster_destroy "$dir"
    rm -rf "$work"
}
trap cleanup EXIT

# the pod example and the PgBouncer controller build while the cluster starts
bin="$work/bin"
mkdir -p "$bin"
libdir=$("${PG_CONFIG:-pg_config}" --libdir)
pgflags=(-I"$("${PG_CONFIG:-pg_config}" --includedir)" -L"$libdir" "-Wl,-rpath,$libdir" -lpq -pthread)
cc -std=c11 -O2 -Wall -Wextra -Werror client/examples/pod.c -Iclient "${pgflags[@]}" \
    -o "$bin/pod" >"$work/pod-build.log" 2>&1 &
build_pod=$!
cc -std=c11 -O1 client/pgbouncer/connbudget_pgbouncer.c "${pgflags[@]}" \
    -o "$bin/connbudget-pgbouncer" >"$work/controller-build.log" 2>&1 &
build_controller=$!

cluster_create "$dir" max_connections=60 superuser_reserved_connections=0 \
    connbudget.reserved_connections=10 connbudget.refresh_interval=200ms \
    connbudget.pod_ttl=500 >/dev/null
cluster_start "$dir" || { echo "Bail out! the cluster did not start"; exit 1; }
eval "$(cluster_env "$dir")"
psql -X -q -v ON_ERROR_STOP=1 -c "CREATE EXTENSION connbudget" \
    -c "CREATE ROLE apiuser LOGIN" \
    -c "INSERT INTO connbudget.application_limits VALUES ('api', 2, 3, 2, NULL)" >/dev/null

# two pods of api hold three connections (never reporting a demand, so they
# demand what they hold); a fourth is refused (the cap)
for pod in api-1 api-1 api-2; do
    PGAPPNAME=api PGOPTIONS="-c connbudget.pod=$pod" PGUSER=apiuser \
        psql -X -q -c "SELECT pg_sleep(600)" >/dev/null 2>&1 &
    pids+=($!)
done
for _ in $(seq 100); do
    [ "$(psql -X -Atq -c "SELECT connections FROM connbudget.applications WHERE application_name = 'api'")" = 3 ] && break
    sleep 0.1
done
PGAPPNAME=api PGOPTIONS="-c connbudget.pod=api-3" PGUSER=apiuser psql -X -q -c "SELECT 1" \
    >/dev/null 2>&1
ok "$([ "$(psql -X -Atq -c "SELECT refused FROM connbudget.applications WHERE application_name = 'api'")" = 1 ]; echo $?)" \
    "a fourth connection of api was refused by its cap of 3"
# the refused pod's lease (pod_ttl) ends
for _ in $(seq 100); do
    [ "$(psql -X -Atq -c "SELECT pods FROM connbudget.budget")" = 2 ] && break
    sleep 0.1
done

# ---- postgres_exporter ----

eport=$(cluster_free_port)
DATA_SOURCE_NAME="postgresql://postgres@127.0.0.1:$PGPORT/postgres?sslmode=disable" \
    prometheus-postgres-exporter --web.listen-address="127.0.0.1:$eport" \
    --extend.query-path=monitoring/postgres_exporter.yml \
    --disable-default-metrics --disable-settings-metrics >"$work/exporter.log" 2>&1 &
pids+=($!)
metrics="$work/metrics.txt"
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$eport/metrics" -o "$metrics" && grep -q '^connbudget_pod_share' "$metrics" && break
    sleep 0.1
done
ok "$([ -s "$metrics" ] && grep -q '^connbudget_' "$metrics"; echo $?)" \
    "postgres_exporter with monitoring/postgres_exporter.yml serves connbudget's metrics on 127.0.0.1:$eport"
[ -s "$metrics" ] || sed 's/^/# /' "$work/exporter.log"

# the value of a series: value NAME [LABEL-REGEX]
value() {
    grep -E "^$1(\{[^}]*\})? " "$metrics" | grep -E "${2:-.}" | head -1 | awk '{ print $NF }'
}
same() {
    # numbers, however the exporter prints them (2, 2.0, 2e+00)
    awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && b != "" && a + 0 == b + 0) }'
    echo $?
}
sql() { psql -X -Atq -c "$1"; }

ok "$(same "$(value connbudget_budget_connections)" "$(sql 'SELECT budget FROM connbudget.budget')")" \
    "connbudget_budget_connections is the budget ($(value connbudget_budget_connections))"
ok "$(same "$(value connbudget_governed_connections)" 3)" \
    "connbudget_governed_connections counts the 3 connections of api ($(value connbudget_governed_connections))"
ok "$(same "$(value connbudget_free_connections)" "$(sql 'SELECT free FROM connbudget.budget')")" \
    "connbudget_free_connections is the view's free"
ok "$(same "$(value connbudget_max_connections)" 60)" "connbudget_max_connections is 60"
ok "$(same "$(value connbudget_pods)" 2)" "connbudget_pods counts the 2 live pods"
ok "$(same "$(value connbudget_application_refused_total 'application_name="api"')" 1)" \
    "connbudget_application_refused_total{application_name=\"api\"} is 1"
ok "$(same "$(value connbudget_application_allocation 'application_name="api"')" \
    "$(sql "SELECT allocation FROM connbudget.applications WHERE application_name = 'api'")")" \
    "connbudget_application_allocation is api's allocation ($(value connbudget_application_allocation 'application_name="api"'))"
ok "$(same "$(value connbudget_application_connections 'application_name="api"')" 3)" \
    "connbudget_application_connections is api's 3"
ok "$(same "$(value connbudget_application_demand 'application_name="api"')" 3)" \
    "connbudget_application_demand is api's demand: the 3 connections its pods hold"
ok "$(same "$(value connbudget_application_max_connections 'application_name="api"')" 3)" \
    "connbudget_application_max_connections is api's cap"
ok "$(same "$(value connbudget_pod_share 'pod="api-1"')" \
    "$(sql "SELECT share FROM connbudget.pods WHERE pod = 'api-1'")")" \
    "connbudget_pod_share{pod=\"api-1\"} is the pod's share ($(value connbudget_pod_share 'pod="api-1"'))"
ok "$(same "$(value connbudget_pod_connections 'pod="api-1"')" 2)" \
    "connbudget_pod_connections{pod=\"api-1\"} is its 2"
ok "$(check grep -q '^# TYPE connbudget_application_refused_total counter' "$metrics")" \
    "refused_total is typed a counter"
ok "$(check grep -q '^# TYPE connbudget_budget_connections gauge' "$metrics")" \
    "budget_connections is typed a gauge"
ok "$(check grep -q '^# HELP connbudget_budget_connections Connections shared among applications' "$metrics")" \
    "with its help text"
ok "$([ "$(grep -c '^connbudget_application_refused_total' "$metrics")" -ge 1 ] &&
      ! grep -q 'client_addr' "$metrics"; echo $?)" \
    "no pod's client address is exported"

# ---- the pod example's own metrics ----

mport=$(cluster_free_port)
wait "$build_pod" || sed 's/^/# /' "$work/pod-build.log"
echo 3 >"$work/load"
"$bin/pod" --metrics-port "$mport" web web-1 4 "$work/load" "$work/status" \
    "host=127.0.0.1 port=$PGPORT user=postgres dbname=postgres" >"$work/pod.log" 2>&1 &
pids+=($!)
podm="$work/pod-metrics.txt"
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$mport/metrics" -o "$podm" && grep -q '^cbpool_share{.*} [1-9]' "$podm" && break
    sleep 0.1
done
ok "$(check grep -q '^cbpool_' "$podm")" "pod --metrics-port $mport serves its pool's metrics, scraped with curl"
ok "$(check grep -q '^cbpool_share{application="web",pod="web-1"} ' "$podm")" \
    "labelled with its application and pod"
# the pool learns a new share at its next refresh: scrape until they agree
# (the two values of one look are compared: the server's may move on a
# moment later, as the pod's demand changes)
for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$mport/metrics" -o "$podm"
    podshare=$(awk '/^cbpool_share\{/ { print $NF }' "$podm")
    srvshare=$(sql "SELECT share FROM connbudget.pods WHERE pod = 'web-1'")
    [ "$(same "$podshare" "$srvshare")" = 0 ] && break
    sleep 0.2
done
ok "$(same "$podshare" "$srvshare")" \
    "cbpool_share is the share the server publishes for the pod ($podshare, server $srvshare)"
ok "$(check grep -q '^# TYPE cbpool_acquired_total counter' "$podm")" "its counters are typed counters"
ok "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$mport/other" | grep -q 404; echo $?)" \
    "any other path is 404"

# ---- PgBouncer, with connbudget-pgbouncer beside it ----

# application "shop" reaches the server only through PgBouncer, whose
# server connections (from 127.0.0.1, with no pod id) are its pod's; the
# controller reads that pod's share and sizes PgBouncer's pool
psql -X -q -v ON_ERROR_STOP=1 -c "CREATE ROLE shopuser LOGIN" \
    -c "INSERT INTO connbudget.application_limits (application_name) VALUES ('shop')" >/dev/null
bport=$(cluster_free_port)
mkdir -p "$work/run"
printf '"shopuser" ""\n"pgbouncer" ""\n' >"$work/userlist.txt"
cat >"$work/pgbouncer.ini" <<EOF
[databases]
shop = host=127.0.0.1 port=$PGPORT dbname=postgres user=shopuser application_name=shop

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bport
unix_socket_dir = $work/run
auth_type = trust
auth_file = $work/userlist.txt
admin_users = pgbouncer
pool_mode = transaction
default_pool_size = 1
server_login_retry = 1
ignore_startup_parameters = extra_float_digits,options
EOF
pgbouncer "$work/pgbouncer.ini" >"$work/pgbouncer.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    [ -S "$work/run/.s.PGSQL.$bport" ] && break
    sleep 0.05
done
ok "$([ -S "$work/run/.s.PGSQL.$bport" ]; echo $?)" "Debian's PgBouncer listens on 127.0.0.1:$bport in front of the cluster"
[ -S "$work/run/.s.PGSQL.$bport" ] || sed 's/^/# /' "$work/pgbouncer.log"
cport=$(cluster_free_port)
wait "$build_controller" || sed 's/^/# /' "$work/controller-build.log"
"$bin/connbudget-pgbouncer" \
    --server "host=127.0.0.1 port=$PGPORT dbname=postgres user=shopuser application_name=shop" \
    --admin "host=$work/run port=$bport dbname=pgbouncer user=pgbouncer" \
    --metrics-listen "127.0.0.1:$cport" >"$work/controller.log" 2>&1 &
pids+=($!)
# a little load: three clients, one short transaction after another
echo 'SELECT pg_sleep(0.02);' >"$work/shop.sql"
PGAPPNAME=shop pgbench -n -h 127.0.0.1 -p "$bport" -U shopuser -c 3 -T 600 -f "$work/shop.sql" shop \
    >"$work/pgbench.log" 2>&1 &
pids+=($!)
cm="$work/controller-metrics.txt"
# the controller's numbers and the server's agree once a refresh has passed
# since the last change: scrape until they do
pgshare="" srvshare="" poolsize="" setsize=""
for _ in $(seq 100); do
    if curl -sf "http://127.0.0.1:$cport/metrics" -o "$cm"; then
        pgshare=$(awk '$1 == "connbudget_pgbouncer_share" { print $2 }' "$cm")
        poolsize=$(awk '$1 == "connbudget_pgbouncer_pool_size" { print $2 }' "$cm")
        srvshare=$(sql "SELECT share FROM connbudget.pods WHERE application_name = 'shop'")
        setsize=$(psql -X -Atq -h "$work/run" -p "$bport" -U pgbouncer pgbouncer -c "SHOW CONFIG" 2>/dev/null |
            awk -F'|' '$1 == "default_pool_size" { print $2 }')
        [ "$(same "$pgshare" "$srvshare")" = 0 ] && [ "$(same "$poolsize" "$setsize")" = 0 ] &&
            [ "$(same "$poolsize" "$((${srvshare:-0} - 1))")" = 0 ] &&
            grep -q '^connbudget_pgbouncer_server_connections [1-9]' "$cm" && break
    fi
    sleep 0.2
done
ok "$(check grep -q '^connbudget_pgbouncer_up{connection="admin"} 1' "$cm")" \
    "connbudget-pgbouncer --metrics-listen 127.0.0.1:$cport serves its metrics, both its connections up"
ok "$(same "$pgshare" "$srvshare")" \
    "connbudget_pgbouncer_share is the share the server publishes for PgBouncer's pod ($pgshare, server $srvshare)"
ok "$([ "$(same "$poolsize" "$setsize")" = 0 ] && [ "$(same "$poolsize" "$((${srvshare:-0} - 1))")" = 0 ]; echo $?)" \
    "connbudget_pgbouncer_pool_size is PgBouncer's default_pool_size, the share less the controller's connection ($poolsize, PgBouncer $setsize)"
[ "$(same "$poolsize" "$setsize")" = 0 ] || tail -5 "$work/controller.log" | sed 's/^/# /'

# ---- the dashboard and the rules, against Prometheus ----

# api keeps being refused (its cap is full), so that refusals have a rate
( while :; do
      PGAPPNAME=api PGOPTIONS="-c connbudget.pod=api-3" PGUSER=apiuser psql -X -q -c "SELECT 1" \
          >/dev/null 2>&1
      sleep 0.3
  done ) &
pids+=($!)
# CloudNativePG's exporter runs the same queries and prefixes every metric
# with cnpg_; the PodMonitor's target carries a label pod (the instance),
# so Prometheus renames connbudget's own pod label exported_pod.  The
# exporter's series so prefixed, beside a metric of CloudNativePG's own,
# are served as a file, written again every second so that counters move.
mkdir -p "$work/cnpg"
( while :; do
      if curl -sf "http://127.0.0.1:$eport/metrics" -o "$work/cnpg/scrape"; then
          { sed -n 's/^\(# [A-Z]* \)\{0,1\}connbudget_/\1cnpg_connbudget_/p' "$work/cnpg/scrape"
            printf '# HELP cnpg_collector_up 1 if PostgreSQL is up, 0 otherwise.\n'
            printf '# TYPE cnpg_collector_up gauge\ncnpg_collector_up{cluster="db"} 1\n'
          } >"$work/cnpg/metrics.new" && mv "$work/cnpg/metrics.new" "$work/cnpg/metrics"
      fi
      sleep 1
  done ) &
pids+=($!)
fport=$(cluster_free_port)
python3 -m http.server --bind 127.0.0.1 --directory "$work/cnpg" "$fport" >"$work/http.log" 2>&1 &
pids+=($!)
# the PodMonitor's metricRelabelings, as docs/kubernetes.md gives them, in
# the scrape configuration the Prometheus Operator makes of them
relabel=$(awk '/^      metricRelabelings:$/ { on = 1; next } on && /^```/ { exit } on { print substr($0, 3) }' \
    docs/kubernetes.md | sed 's/sourceLabels:/source_labels:/; s/targetLabel:/target_label:/')
ok "$([ "$(grep -c '^      - ' <<<"$relabel")" = 4 ]; echo $?)" \
    "docs/kubernetes.md's PodMonitor has its 4 metricRelabelings, taken as metric_relabel_configs"
# prometheus_config JOBS: a configuration scraping the pod and the
# controller beside JOBS, with the example rules loaded
prometheus_config() {
    cat <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $PWD/monitoring/recording.yml
  - $PWD/monitoring/alerts.yml
scrape_configs:
$1
  - job_name: pods
    static_configs:
      - targets: ['127.0.0.1:$mport']
  - job_name: pgbouncer
    static_configs:
      - targets: ['127.0.0.1:$cport']
EOF
}
pport=$(cluster_free_port)
prometheus_config "  - job_name: postgres
    static_configs:
      - targets: ['127.0.0.1:$eport']" >"$work/prometheus.yml"
qport=$(cluster_free_port)
prometheus_config "  - job_name: cnpg
    static_configs:
      - targets: ['127.0.0.1:$fport']
        labels:
          namespace: default
          pod: db-1
          container: postgres
    metric_relabel_configs:
$relabel" >"$work/prometheus-cnpg.yml"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$pport" >"$work/prometheus.log" 2>&1 &
pids+=($!)
prometheus --config.file="$work/prometheus-cnpg.yml" --storage.tsdb.path="$work/tsdb-cnpg" \
    --web.listen-address="127.0.0.1:$qport" >"$work/prometheus-cnpg.log" 2>&1 &
pids+=($!)
# promql PORT QUERY: the number of series the query returns
promql() {
    curl -sf "http://127.0.0.1:$1/api/v1/query" --data-urlencode "query=$2" |
        python3 -c 'import json, sys; print(len(json.load(sys.stdin)["data"]["result"]))' 2>/dev/null
}
# ready PORT: the three targets up, enough samples for the rates, and the
# rules evaluated on them
ready() {
    [ "$(promql "$1" 'up == 1')" = 3 ] &&
        [ "$(promql "$1" 'rate(connbudget_application_refused_total{application_name="api"}[30s]) > 0')" = 1 ] &&
        [ "$(promql "$1" 'count_over_time(cbpool_share[1m]) >= 5')" = 1 ] &&
        [ "$(promql "$1" 'count_over_time(connbudget_pgbouncer_refreshes_total[1m]) >= 5')" = 1 ] &&
        [ "$(promql "$1" 'connbudget_application:refused:rate5m_per_minute > 0')" = 1 ] &&
        [ "$(promql "$1" 'ALERTS{alertname="ConnbudgetApplicationRefused",alertstate="firing"}')" = 1 ]
}
ready_p=1 ready_q=1
for _ in $(seq 150); do
    [ $ready_p = 0 ] || { ready "$pport" && ready_p=0; }
    [ $ready_q = 0 ] || { ready "$qport" && ready_q=0; }
    [ $ready_p = 0 ] && [ $ready_q = 0 ] && break
    sleep 0.2
done
ok $ready_p "Debian's Prometheus on 127.0.0.1:$pport scrapes postgres_exporter, the pod and the controller every second, with the rules loaded"
[ $ready_p = 0 ] || tail -5 "$work/prometheus.log" | sed 's/^/# /'
ok $ready_q "a second one on 127.0.0.1:$qport scrapes the CloudNativePG-style file through the PodMonitor's relabelings, the pod and the controller"
[ $ready_q = 0 ] || tail -5 "$work/prometheus-cnpg.log" | sed 's/^/# /'
ok "$([ "$(promql "$qport" 'connbudget_pod_share{job="cnpg",application_name="api",pod="api-1",cnpg_instance="db-1"}')" = 1 ]; echo $?)" \
    "relabelled: connbudget_pod_share without its prefix, pod the budget's pod (api-1), cnpg_instance the instance (db-1)"
ok "$([ "$(promql "$qport" '{__name__=~"cnpg_connbudget_.+"} or {exported_pod!=""}')" = 0 ]; echo $?)" \
    "no series keeps the cnpg_ prefix or a label exported_pod"
ok "$([ "$(promql "$qport" 'connbudget_budget_connections{job="cnpg",pod="db-1"}')" = 1 ] &&
      [ "$(promql "$qport" 'cnpg_collector_up{job="cnpg",pod="db-1"}')" = 1 ]; echo $?)" \
    "the server's own series keep the instance's pod label; CloudNativePG's own metrics keep their names"
# run_panels PORT [WHERE]: panels.py's TAP, numbered on from here
run_panels() {
    python3 test/monitoring/panels.py "http://127.0.0.1:$1" monitoring/grafana-dashboard.json \
        $((n + 1)) ${2:+"$2"} >"$work/panels.tap" 2>&1
    local panels_status=$?
    cat "$work/panels.tap"
    n=$((n + $(grep -Ec '^(not )?ok ' "$work/panels.tap")))
    failures=$((failures + $(grep -c '^not ok ' "$work/panels.tap")))
    if [ $panels_status != 0 ] && [ "$(grep -c '^not ok ' "$work/panels.tap")" = 0 ]; then
        ok 1 "test/monitoring/panels.py ran to its end"
    fi
}
run_panels "$pport"
run_panels "$qport" "relabelled from CloudNativePG's names"
/usr/bin/python3 -m flake8 test/monitoring/*.py >"$work/flake8.out" 2>&1
ok $? "flake8 (the tree's .flake8) reports nothing in test/monitoring/*.py"
sed 's/^/#   /' "$work/flake8.out"

# ---- the example alert and recording rules ----

ok "$(check promtool check rules monitoring/alerts.yml monitoring/recording.yml)" \
    "promtool accepts monitoring/alerts.yml and monitoring/recording.yml"
ok "$(cd test/monitoring && check promtool test rules alerts_test.yml)" \
    "the alerts fire when an application is refused, when less than 10% of the budget is free and when a pool's circuit stays open"
ok "$(cd test/monitoring && check promtool test rules recording_test.yml)" \
    "the recording rules compute the budget in use, refusals per minute, headroom and the slowest pool's p99"

echo "1..$n"
[ "$failures" = 0 ]
