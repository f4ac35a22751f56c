#!/usr/bin/env bash
# demo.sh -- connbudget's main job in one command: pods of two applications
# share a throwaway server's connection budget while they join, leave, die
# and change load; their pools resize live.
#
#   bash client/examples/demo.sh           run it (about a minute) and clean up
#   bash client/examples/demo.sh --keep    leave the server running afterwards
#   bash client/examples/demo.sh --metrics-port 9300
#                                          each pod serves its pool's metrics
#                                          on 9300, 9301, ... (Prometheus text)
#   bash client/examples/demo.sh --mixed   the mixed fleet instead: C pools,
#                                          PgBouncer and the Python, Go, Node
#                                          and Java adapters on one budget
#                                          (client/examples/mixed/demo.sh)
#
# It installs what is missing (Debian packages), builds and installs the
# extension, starts a cluster with connbudget preloaded (max_connections 120,
# superuser_reserved_connections 0, connbudget.reserved_connections 40: the
# textbook budget of 80), runs client/examples/demo.c, and draws each pod's
# share and pool size over time into demo-output/demo.png.  It exits 0 only if
# every check held (no budget violation, every pod served, no query error).
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [[ " $* " == *" --mixed "* ]]; then
    args=()
    for arg in "$@"; do
        [ "$arg" = --mixed ] || args+=("$arg")
    done
    exec bash "$src/client/examples/mixed/demo.sh" "${args[@]}"
fi
# shellcheck source=../../test/lib/setup.sh
source "$src/test/lib/setup.sh"
keep=""
for arg in "$@"; do
    case $arg in
        --keep) keep=1 ;;
    esac
done
# --metrics-port BASE: pod N serves its pool's metrics on BASE + N - 1
if [[ " $* " =~ " --metrics-port "([0-9]+)" " ]]; then
    export CB_DEMO_METRICS_PORT=${BASH_REMATCH[1]}
fi

if [ "${CB_STAGE:-}" != inner ]; then
    cb_install_packages $CB_PACKAGES_DEMO
    echo "== building and installing the extension"
    cb_build_install_release "$src"
    status=0
    [ -z "$keep" ] || export CB_KEEP=1
    cb_run_unprivileged "$src" demo client/examples/demo.sh "$@" || status=$?
    mkdir -p "$src/demo-output"
    cp "$CB_SCRATCH"/out/* "$src/demo-output/" 2>/dev/null || true
    [ "$(id -u)" != 0 ] || chmod -R a+rX "$src/demo-output"
    if [ -f "$src/demo-output/demo.png" ]; then
        echo "== chart: $src/demo-output/demo.png"
    fi
    if [ -n "$keep" ] && [ -f "$CB_SCRATCH/cluster/port" ]; then
        echo "== the server is still running; connect with:"
        echo "   psql -h 127.0.0.1 -p $(cat "$CB_SCRATCH/cluster/port") -U postgres postgres"
        echo "   and stop it with:"
        if [ "$(id -u)" = 0 ]; then
            echo "   runuser -u postgres -- $(pg_config --bindir)/pg_ctl -D $CB_SCRATCH/cluster/data stop"
        else
            echo "   $(pg_config --bindir)/pg_ctl -D $CB_SCRATCH/cluster/data stop"
        fi
        trap - EXIT
    fi
    exit $status
fi

# ---- from here on: the unprivileged user, in a scratch copy of the tree ----

cd "$CB_WORK/src"
# shellcheck source=../../test/lib/cluster.sh
source test/lib/cluster.sh
out="$CB_WORK/out"
bin="$CB_WORK/bin"
mkdir -p "$out" "$bin"

echo "== building the pod and the demo (client/examples)"
cc -std=c11 -O2 -Wall -Wextra client/examples/pod.c -Iclient -I"$(pg_config --includedir)" \
    -L"$(pg_config --libdir)" -lpq -pthread -o "$bin/pod"
cc -std=c11 -O2 -Wall -Wextra client/examples/demo.c -I"$(pg_config --includedir)" \
    -L"$(pg_config --libdir)" -lpq -o "$bin/demo"

echo "== starting a throwaway PostgreSQL with connbudget preloaded"
dir="$CB_WORK/cluster"
cluster_create "$dir" max_connections=120 superuser_reserved_connections=0 \
    connbudget.reserved_connections=40 connbudget.refresh_interval=500ms
cluster_start "$dir"
eval "$(cluster_env "$dir")"
psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE EXTENSION connbudget;
CREATE ROLE app LOGIN;
-- api: at most 30 connections, 6 of them guaranteed; worker: no limit
INSERT INTO connbudget.application_limits (application_name, min_connections, max_connections, weight)
VALUES ('api', 6, 30, 1), ('worker', 0, NULL, 1);
SQL
psql -X -c "SELECT * FROM connbudget.budget"
psql -X -c "SELECT application_name, min_connections, max_connections, weight FROM connbudget.application_limits"

echo "== running the pods (about a minute)"
status=0
CB_DEMO_ROLE=app "$bin/demo" "$bin/pod" "$out" "${CB_DEMO_SCALE:-1}" || status=$?

# ---- the chart ----
if command -v gnuplot >/dev/null; then
    pods=$(awk 'NR > 1 { print $2 }' "$out/demo.csv" | sort -u)
    plots=""
    color=1
    for pod in $pods; do
        awk -v p="$pod" 'NR > 1 && $2 == p { print $1, $3, $4 }' "$out/demo.csv" >"$out/$pod.dat"
        plots="$plots \"$out/$pod.dat\" using 1:2 with lines lw 1 dt 2 lc $color notitle,"
        plots="$plots \"$out/$pod.dat\" using 1:3 with lines lw 2 lc $color title \"$pod\","
        color=$((color + 1))
    done
    {
        echo 'set terminal pngcairo size 1100,620 font "sans,10"'
        echo "set output \"$out/demo.png\""
        echo 'set title "connbudget demo: each pod'"'"'s share (dashed) and pool size (solid); budget 80, api capped at 30"'
        echo 'set xlabel "seconds"'
        echo 'set ylabel "connections"'
        echo 'set key outside right'
        echo 'set grid'
        echo 'set yrange [0:*]'
        n=0
        while read -r t label; do
            n=$((n + 1))
            echo "set arrow $n from $t, graph 0 to $t, graph 1 nohead lc rgb \"#999999\" dt 3"
            echo "set label $n $label at $t, graph 0.98 rotate by -90 font \",8\" tc rgb \"#555555\""
        done <"$out/events.csv"
        echo "plot ${plots%,}"
    } >"$out/demo.gp"
    gnuplot "$out/demo.gp"
fi

if [ -z "${CB_KEEP:-}" ]; then
    cluster_destroy "$dir"
fi
exit $status
