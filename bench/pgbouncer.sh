#!/usr/bin/env bash
# bench/pgbouncer.sh -- connbudget-pgbouncer's benchmark, against a
# throwaway cluster and real PgBouncers, each PgBouncer and its controller
# in a network namespace of its own (a pod of its own).  Run as root:
#
#   bash bench/pgbouncer.sh [RESULTS.md]
#
#   (a) overhead: bench/pgbouncer_overhead.c, 4 clients running
#       pgbench -S's query through one PgBouncer sized by its controller
#       (--min-size 8, a steady pool of 8), while the run is cut into
#       blocks of 250 ms in which the controller runs (SIGCONT) or is
#       stopped (SIGSTOP), ABBA; the median of the quads' ratios over
#       every run (goal: at least 0.98), and the controller's CPU time;
#   (b) convergence of three replicas on join, demand change and leave, in
#       refresh intervals (goal: within 2), with test/pgbouncer/converge.c.
#
# Prints everything and, given a file, writes the results there as markdown.
# Environment: CB_BENCH_RUNS (runs of (a), default 5), CB_BENCH_SECONDS
# (seconds per run of (a), default 60), CB_BENCH_BLOCK_MS (default 250),
# CB_BENCH_ROUNDS (rounds of (b), default 5), CB_NO_BUILD=1 (use the extension as installed), PG_CONFIG,
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
runs=${CB_BENCH_RUNS:-5}
seconds=${CB_BENCH_SECONDS:-60}
block_ms=${CB_BENCH_BLOCK_MS:-250}
rounds=${CB_BENCH_ROUNDS:-5}

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

echo "== building connbudget-pgbouncer and the benchmark programs (-O2)"
mkdir -p "$work/bin"
ldflags=(-L"$PG_LIBDIR" -Wl,-rpath,"$PG_LIBDIR" -lpq -pthread)
gcc -std=c11 -O2 -Wall -Wextra -Werror -I"$PG_INCLUDE" -o "$work/bin/connbudget-pgbouncer" \
    "$src/client/pgbouncer/connbudget_pgbouncer.c" "${ldflags[@]}"
gcc -std=gnu11 -O2 -Wall -Wextra -Werror -I"$PG_INCLUDE" -I"$src/test/lib" -o "$work/bin/converge" \
    "$src/test/pgbouncer/converge.c" "${ldflags[@]}"
gcc -std=gnu11 -O2 -Wall -Wextra -Werror -I"$PG_INCLUDE" -o "$work/bin/pgbouncer_overhead" \
    "$src/bench/pgbouncer_overhead.c" "${ldflags[@]}"
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

median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2];
                                         else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo
echo "== (a) 4 clients through one PgBouncer (pool 8): its controller running or stopped, blocks of $block_ms ms, ABBA"
fleet_bouncer_start 1 default_pool_size=8 >/dev/null
fleet_controller_start 1 --min-size 8 >/dev/null
for _ in $(seq 100); do
    [ "$(admin 'SHOW CONFIG' | awk -F'|' '$1 == "default_pool_size" { print $2 }')" = 8 ] && break
    sleep 0.1
done
controller_pid=$(cat "$work/$(fleet_controller_name 1).pid")
rows=$(psql -X -At -U app -d appdb -c "SELECT count(*) FROM pgbench_accounts")
table_a="| run | quads | with the controller (q/s) | stopped (q/s) | median quad ratio (quartiles) | ratio of the totals | controller's CPU while it runs |
|---|---:|---:|---:|---|---:|---:|"
: >"$work/quads"
# r KEY: the value of the "result KEY VALUE" line of this run's output
r() { awk -v k="$1" '$1 == "result" && $2 == k { print $3 }' "$out"; }
for run in $(seq "$runs"); do
    out="$work/overhead.$run"
    "$work/bin/pgbouncer_overhead" "host=$CB_FLEET_NET.1.2 port=6432 dbname=appdb user=app application_name=api" \
        "$controller_pid" "$seconds" "$block_ms" 4 "$rows" >"$out"
    grep '^quad ' "$out" | sed -n 's/.*ratio \([0-9.]*\)$/\1/p' >>"$work/quads"
    printf 'run %d: %s quads, with %s q/s, stopped %s q/s, median quad ratio %s (%s to %s), totals %s, controller CPU %.2f%%\n' \
        "$run" "$(r quads)" "$(r with_qps)" "$(r without_qps)" "$(r median)" "$(r q1)" "$(r q3)" "$(r totals)" \
        "$(awk -v c="$(r controller_cpu)" 'BEGIN { print 100 * c }')"
    table_a="$table_a
| $run | $(r quads) | $(r with_qps) | $(r without_qps) | $(r median) ($(r q1) to $(r q3)) | $(r totals) | $(awk -v c="$(r controller_cpu)" 'BEGIN { printf "%.2f%%", 100 * c }') |"
done
[ "$(fleet_controller_stop 1 TERM)" = 0 ] || echo "the controller did not stop cleanly: $(tail -3 "$work/$(fleet_controller_name 1).log")"
quads=$(wc -l <"$work/quads")
median_ratio=$(median <"$work/quads")
# a 95% confidence interval of the median, distribution-free: the order
# statistics at n/2 -+ 1.96 sqrt(n)/2 (the binomial's normal approximation)
read -r ci_lo ci_hi < <(sort -g "$work/quads" | awk '{ v[NR] = $1 } END {
    d = 1.96 * sqrt(NR) / 2; lo = int(NR / 2 - d); hi = int(NR / 2 + d + 1)
    if (lo < 1) lo = 1; if (hi > NR) hi = NR; print v[lo], v[hi] }')
echo "median ratio over $quads quads (running / stopped): $median_ratio, 95% confidence interval $ci_lo to $ci_hi (goal: at least 0.98)"
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
        echo "**Overhead** (\`bench/pgbouncer_overhead.c\`: pgbench -S's query, extended protocol, 4 clients" \
            "through one PgBouncer in transaction pooling with a pool of 8 that its controller keeps" \
            "(--min-size 8); $runs runs of $seconds s cut into blocks of $block_ms ms in which the controller" \
            "runs or is stopped with SIGSTOP, in the order ABBA; each quad's ratio is its running blocks'" \
            "queries per second over its stopped blocks'): median ratio over $quads quads" \
            "**$median_ratio** (95% confidence interval of the median: $ci_lo to $ci_hi; goal: at least 0.98)."
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
