#!/usr/bin/env bash
# bench/pgbouncer.sh -- connbudget-pgbouncer's benchmark, against a
# throwaway cluster and real PgBouncers, each PgBouncer and its controller
# in a network namespace of its own (a pod of its own).  Run as root:
#
#   bash bench/pgbouncer.sh [RESULTS.md]
#
#   (a) overhead: `pgbench -S -n -M extended` through one PgBouncer with its
#       controller and through the same PgBouncer without it, at a steady
#       share larger than pgbench's clients (--min-size 8, 4 clients), in
#       rotated order (with/without, then without/with, ...), each run
#       after the same 1 s pause; the median of the runs' ratios (goal: at
#       least 0.98);
#   (b) convergence of three replicas on join, demand change and leave, in
#       refresh intervals (goal: within 2), with test/pgbouncer/converge.c.
#
# Prints everything and, given a file, writes the results there as markdown.
# Environment: CB_BENCH_RUNS (runs of (a), default 9), CB_BENCH_SECONDS
# (seconds per pgbench run, default 5), CB_BENCH_ROUNDS (rounds of (b),
# default 3), CB_NO_BUILD=1 (use the extension as installed), PG_CONFIG,
# CB_KEEP=1 (keep the scratch directory).
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../test/lib/setup.sh
source "$src/test/lib/setup.sh"
# shellcheck source=../test/pgbouncer/fleet.sh
source "$src/test/pgbouncer/fleet.sh"

if [ "$(id -u)" != 0 ]; then
    echo "bench/pgbouncer.sh needs root (network namespaces): run it with sudo" >&2
    exit 1
fi
results_file=${1:-}
runs=${CB_BENCH_RUNS:-9}
seconds=${CB_BENCH_SECONDS:-5}
rounds=${CB_BENCH_ROUNDS:-3}

cb_install_packages $CB_PACKAGES_BENCH iproute2
if [ -z "${CB_NO_BUILD:-}" ]; then
    echo "== building and installing the extension (release build)"
    cb_build_install_release "$src"
fi
PG_BINDIR=$("$PG_CONFIG" --bindir)
PG_INCLUDE=$("$PG_CONFIG" --includedir)
PG_LIBDIR=$("$PG_CONFIG" --libdir)
export PATH="$PG_BINDIR:$PATH"

work=$(cb_scratch_dir pgbouncer-bench)
export CB_FLEET_DIR="$work"
cleanup() {
    local status=$?
    set +e
    fleet_net_down
    [ -f "$work/pg/data/postmaster.pid" ] &&
        cb_as_run_user "$PG_BINDIR/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1
    if [ -n "${CB_KEEP:-}" ]; then echo "== kept $work (CB_KEEP)"; else rm -rf "$work"; fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== building connbudget-pgbouncer and the convergence program (-O2)"
mkdir -p "$work/bin"
ldflags=(-L"$PG_LIBDIR" -Wl,-rpath,"$PG_LIBDIR" -lpq -pthread)
gcc -std=c11 -O2 -Wall -Wextra -Werror -I"$PG_INCLUDE" -o "$work/bin/connbudget-pgbouncer" \
    "$src/client/pgbouncer/connbudget_pgbouncer.c" "${ldflags[@]}"
gcc -std=gnu11 -O2 -Wall -Wextra -Werror -I"$PG_INCLUDE" -I"$src/test/lib" -o "$work/bin/converge" \
    "$src/test/pgbouncer/converge.c" "${ldflags[@]}"
chmod 755 "$work/bin" "$work/bin"/*

echo "== three pods: network namespaces, a cluster"
fleet_net_up 3
fleet_env
cb_as_run_user bash -c "
    source '$src/test/lib/cluster.sh'
    cluster_create '$work/pg' listen_addresses='$(fleet_listen_addresses)' \
        connbudget.reserved_connections=10 &&
    echo 'host all all $CB_FLEET_NET.0.0/16 trust' >>'$work/pg/data/pg_hba.conf' &&
    cluster_start '$work/pg'"
export CB_FLEET_PGPORT PGHOST=127.0.0.1 PGUSER=postgres PGDATABASE=postgres
CB_FLEET_PGPORT=$(cat "$work/pg/port")
export PGPORT=$CB_FLEET_PGPORT
psql -X -q -v ON_ERROR_STOP=1 -c "CREATE ROLE app LOGIN" -c "CREATE DATABASE appdb OWNER app" \
    -c "CREATE EXTENSION connbudget" \
    -c "INSERT INTO connbudget.application_limits VALUES ('api', 0, 40, 1, '{app}')" >/dev/null
pgbench -i -q -s 10 -U app appdb >/dev/null 2>&1
export CB_FLEET_CONTROLLER="$work/bin/connbudget-pgbouncer" CB_FLEET_SH="$src/test/pgbouncer/fleet.sh"
export CB_FLEET_NET CB_FLEET_TAG CB_FLEET_PODS

admin() {
    psql -X -q -At -h "$work/b1" -p 6432 -U pgbouncer pgbouncer -c "$1"
}

# tps of one pgbench run through PgBouncer 1, or 0 if it failed
tps() {
    local out
    out=$(PGAPPNAME=api pgbench -S -n -M extended -c 4 -j 2 -T "$seconds" \
        -h "$CB_FLEET_NET.1.2" -p 6432 -U app appdb 2>&1) || { echo "$out" | tail -3 >&2; echo 0; return; }
    echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1
}

median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2];
                                         else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

with_controller() {
    fleet_controller_start 1 --min-size 8 >/dev/null
    for _ in $(seq 100); do
        [ "$(admin 'SHOW CONFIG' | awk -F'|' '$1 == "default_pool_size" { print $2 }')" = 8 ] && break
        sleep 0.1
    done
    sleep 1
    tps
    fleet_controller_stop 1 TERM >/dev/null
}

without_controller() {
    admin "SET default_pool_size = 8" >/dev/null
    admin "SET max_user_connections = 0" >/dev/null
    sleep 1
    tps
}

echo
echo "== (a) pgbench -S -n -M extended -c 4 -j 2 -T $seconds through one PgBouncer (pool 8), with and without its controller"
fleet_bouncer_start 1 default_pool_size=8 >/dev/null
PGAPPNAME=api pgbench -S -n -M extended -c 4 -j 2 -T 2 -h "$CB_FLEET_NET.1.2" -p 6432 -U app appdb >/dev/null 2>&1 || true
table_a="| run | order | with the controller (tps) | without (tps) | ratio |
|---|---|---|---|---|"
ratios=()
for run in $(seq "$runs"); do
    if [ $((run % 2)) = 1 ]; then
        with=$(with_controller)
        without=$(without_controller)
        order="with, without"
    else
        without=$(without_controller)
        with=$(with_controller)
        order="without, with"
    fi
    ratio=$(awk -v a="$with" -v b="$without" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print 0 }')
    ratios+=("$ratio")
    printf 'run %d (%s): with %.0f tps, without %.0f tps, ratio %s\n' "$run" "$order" "$with" "$without" "$ratio"
    table_a="$table_a
| $run | $order | $(printf '%.0f' "$with") | $(printf '%.0f' "$without") | $ratio |"
done
median_ratio=$(printf '%s\n' "${ratios[@]}" | median)
echo "median ratio (with / without): $median_ratio (goal: at least 0.98)"
fleet_bouncer_stop 1

echo
echo "== (b) three replicas, api capped at 12, refresh interval 1000 ms: join, demand change, leave ($rounds rounds)"
psql -X -q -c "UPDATE connbudget.application_limits SET max_connections = 12 WHERE application_name = 'api'"
converge_out="$work/converge.out"
status=0
CB_FLEET_REFRESH_MS=1000 "$work/bin/converge" "$rounds" | tee "$converge_out" || status=$?

if [ -n "$results_file" ]; then
    {
        echo "## pgbouncer"
        echo
        echo "Produced by \`bash bench/run pgbouncer\` (\`bench/pgbouncer.sh\`) on $(date -u '+%Y-%m-%d'), $(nproc) cores, PostgreSQL" \
            "$("$PG_CONFIG" --version | awk '{ print $2 }'), $(pgbouncer -V 2>/dev/null | head -1 | sed 's/^PgBouncer /PgBouncer /');" \
            "each PgBouncer and its controller in a network namespace of its own."
        echo
        echo "**Overhead** (pgbench -S -n -M extended, 4 clients, ${seconds} s per run, transaction pooling," \
            "pool size 8 either way, the controller sampling every 100 ms): median ratio" \
            "**$median_ratio** (goal: at least 0.98)."
        echo
        echo "$table_a"
        echo
        echo "**Convergence** (three replicas, api capped at 12, 6 pgbench clients each, refresh interval" \
            "1000 ms, $rounds rounds):"
        echo
        grep '^|' "$converge_out"
        echo
        grep '^pgbench runs' "$converge_out" | sed 's/^/- /'
    } >"$results_file"
    echo "== wrote $results_file"
fi
exit $status
