#!/usr/bin/env bash
# exporter.sh -- connbudget's numbers in Prometheus, for real: Debian's
# postgres_exporter with monitoring/postgres_exporter.yml against a
# throwaway cluster on loopback, scraped and compared with the views; the
# pod example's --metrics-port endpoint scraped with curl; and the example
# alert rules under promtool.  Prints TAP; test/run runs it through prove.
#
# Checked: the budget, each application's allocation, connections, demand,
# cap and refused count, and each pod's share and connections are exported
# with the views' values, each with its help text and type, and no client
# address is; the pod example serves its pool's metrics; Debian's
# Prometheus scrapes both and every panel of monitoring/grafana-dashboard.json
# returns plausible series (test/monitoring/panels.py, itself clean under
# flake8); promtool test rules passes test/monitoring/alerts_test.yml and
# recording_test.yml.
#
# Budget: 60 - 0 - 10 = 50.  "api" is capped at 3.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
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
bin="$work/bin"
mkdir -p "$bin"
cc -std=c11 -O2 -Wall -Wextra -Werror client/examples/pod.c -Iclient \
    -I"$("${PG_CONFIG:-pg_config}" --includedir)" -L"$("${PG_CONFIG:-pg_config}" --libdir)" \
    -Wl,-rpath,"$("${PG_CONFIG:-pg_config}" --libdir)" -lpq -pthread -o "$bin/pod"
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

# ---- the dashboard, every panel against Prometheus ----

# api keeps being refused (its cap is full), so that refusals have a rate
( while :; do
      PGAPPNAME=api PGOPTIONS="-c connbudget.pod=api-3" PGUSER=apiuser psql -X -q -c "SELECT 1" \
          >/dev/null 2>&1
      sleep 0.3
  done ) &
pids+=($!)
pport=$(cluster_free_port)
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: postgres
    static_configs:
      - targets: ['127.0.0.1:$eport']
  - job_name: pods
    static_configs:
      - targets: ['127.0.0.1:$mport']
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$pport" >"$work/prometheus.log" 2>&1 &
pids+=($!)
# the number of series a query returns
promql() {
    curl -sf "http://127.0.0.1:$pport/api/v1/query" --data-urlencode "query=$1" |
        python3 -c 'import json, sys; print(len(json.load(sys.stdin)["data"]["result"]))' 2>/dev/null
}
# both targets up, and enough samples for a rate of api's refusals
ready=1
for _ in $(seq 150); do
    if [ "$(promql 'up == 1')" = 2 ] &&
       [ "$(promql 'rate(connbudget_application_refused_total{application_name="api"}[30s]) > 0')" = 1 ] &&
       [ "$(promql 'count_over_time(cbpool_share[1m]) >= 5')" = 1 ]; then
        ready=0
        break
    fi
    sleep 0.2
done
ok $ready "Debian's Prometheus on 127.0.0.1:$pport scrapes postgres_exporter and the pod every second"
[ $ready = 0 ] || tail -5 "$work/prometheus.log" | sed 's/^/# /'
python3 test/monitoring/panels.py "http://127.0.0.1:$pport" monitoring/grafana-dashboard.json \
    $((n + 1)) >"$work/panels.tap" 2>&1
panels_status=$?
cat "$work/panels.tap"
n=$((n + $(grep -Ec '^(not )?ok ' "$work/panels.tap")))
failures=$((failures + $(grep -c '^not ok ' "$work/panels.tap")))
if [ $panels_status != 0 ] && [ "$(grep -c '^not ok ' "$work/panels.tap")" = 0 ]; then
    ok 1 "test/monitoring/panels.py ran to its end"
fi
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
