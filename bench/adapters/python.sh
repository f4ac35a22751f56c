#!/usr/bin/env bash
# bench/adapters/python.sh -- the Python adapter (client/python) against the
# same psycopg_pool without it, on a throwaway cluster:
#
#   (a) overhead: a `SELECT 1` loop in as many threads as the pool has
#       connections (4), through a pool with the adapter at a steady share
#       of 4 and through the same pool without it; in each run the threads
#       switch pools, all together, after every 25 queries each, in rotated
#       order (ABBA..., the runs starting with one and the other in turn),
#       so that the machine's other work falls on both alike; the median of
#       the runs' ratios (goal: at least 0.97);
#   (b) convergence, in refresh intervals (goal: within 2): a second pod
#       joins a busy first one (application capped at 8, both with 8 busy
#       threads): from the second's report of its threads' demand until the
#       first holds no more than its new share (4), on the server; the
#       second leaves: until the first holds 8 again.
#
#   bash bench/adapters/python.sh [RESULTS.md]
#
# As root it installs the Debian packages that are missing, builds and
# installs the extension if it is not installed, and runs itself as the
# postgres OS user.  It starts its own cluster
# (test/lib/cluster.sh), or uses the one in PGHOST/PGPORT when run through
# test/lib/with-cluster.sh.  Prints everything and, given a file, writes the
# results there as markdown.  Environment: CB_BENCH_RUNS (runs of (a),
# default 9), CB_BENCH_SECONDS (seconds on each pool per run, default 5), CB_BENCH_ROUNDS
# (rounds of (b), default 5), CB_REFRESH_MS (the refresh interval of its own
# cluster, default 1000), PG_CONFIG.  Needs python3-psycopg and
# python3-psycopg-pool (Debian's, for Debian's /usr/bin/python3).
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ "$(id -u)" = 0 ]; then
    # shellcheck source=../../test/lib/setup.sh
    source "$src/test/lib/setup.sh"
    # shellcheck disable=SC2086 # a list of package names
    cb_install_packages $CB_PACKAGES_BUILD python3-psycopg python3-psycopg-pool
    if [ ! -f "$("$PG_CONFIG" --sharedir)/extension/connbudget.control" ]; then
        echo "== building and installing the extension (release build)"
        cb_build_install_release "$src"
    fi
    out=${1:+$(realpath -m "$1")}
    [ -z "$out" ] || { touch "$out" && chown postgres "$out"; }
    exec runuser -u postgres -- env PG_CONFIG="$PG_CONFIG" \
        CB_BENCH_RUNS="${CB_BENCH_RUNS:-}" CB_BENCH_SECONDS="${CB_BENCH_SECONDS:-}" \
        CB_BENCH_ROUNDS="${CB_BENCH_ROUNDS:-}" CB_REFRESH_MS="${CB_REFRESH_MS:-}" \
        bash "$src/bench/adapters/python.sh" ${out:+"$out"}
fi
export CB_BENCH_RUNS=${CB_BENCH_RUNS:-9} CB_BENCH_SECONDS=${CB_BENCH_SECONDS:-5}
export CB_BENCH_ROUNDS=${CB_BENCH_ROUNDS:-5}
results_file=${1:-}

if [ -z "${PGPORT:-}" ]; then
    # shellcheck source=SCRIPTDIR/../../test/lib/cluster.sh
    source "$src/test/lib/cluster.sh"
    dir=$(mktemp -d "${TMPDIR:-/tmp}/connbudget-pybench.XXXXXX")
    trap 'cluster_destroy "$dir"' EXIT
    cluster_create "$dir" "connbudget.refresh_interval=${CB_REFRESH_MS:-1000}ms" >&2
    cluster_start "$dir" >&2
    eval "$(cluster_env "$dir")"
fi
psql -qX -v ON_ERROR_STOP=1 -c "CREATE EXTENSION IF NOT EXISTS connbudget" \
    -c "DELETE FROM connbudget.application_limits WHERE application_name LIKE 'pybench%'" \
    -c "INSERT INTO connbudget.application_limits (application_name, max_connections)
        VALUES ('pybench', NULL), ('pybench-converge', 8)"

export PYTHONPATH="$src/client/python" PYTHONDONTWRITEBYTECODE=1 CB_RESULTS_FILE="$results_file"
cd "$src/client/python"     # the package, not the extension's connbudget.so at the root
/usr/bin/python3 - <<'PY'
import os
import platform
import statistics
import threading
import time

import psycopg
from psycopg_pool import ConnectionPool

import connbudget

RUNS, SECONDS = int(os.environ["CB_BENCH_RUNS"]), float(os.environ["CB_BENCH_SECONDS"])
ROUNDS = int(os.environ["CB_BENCH_ROUNDS"])
THREADS = 4
admin = psycopg.connect(autocommit=True)
refresh_s = int(admin.execute("SELECT setting FROM pg_settings "
                              "WHERE name = 'connbudget.refresh_interval'").fetchone()[0]) / 1000
lines = []


def say(text=""):
    print(text, flush=True)
    lines.append(text)


def wait_until(predicate, timeout, step=0.005):
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise SystemExit("the benchmark did not converge within %.1f s" % timeout)
        time.sleep(step)
    return time.monotonic() - start


def held(app, pod):
    row = admin.execute("SELECT connections, share FROM connbudget.pods "
                        "WHERE application_name = %s AND pod = %s", (app, pod)).fetchone()
    return tuple(row) if row else (0, None)


PER_SLICE = 25   # queries each thread runs on one pool before they all switch


def compare(run):
    """(with, without) queries per second: the same threads run SELECT 1
    through one pool, then the other, in short slices (PER_SLICE queries
    each, all threads together) in the order ABBA..., so that whatever else
    the machine does falls on both alike, and each pool's cost, which holds
    the GIL its threads share, falls on its own slices."""
    pools = []
    for with_adapter in (True, False):
        pod = "%s-%d" % ("with" if with_adapter else "without", run)
        pool = ConnectionPool("", kwargs=connbudget.connect_kwargs("pybench", pod=pod),
                              min_size=THREADS, max_size=THREADS, open=False)
        if with_adapter:
            budget = connbudget.follow(pool)
            wait_until(lambda: budget.stats()["share"] == THREADS
                       and pool.get_stats()["pool_size"] == THREADS, 10)
            pool.wait()
        else:
            pool.open(wait=True)
        pools.append(pool)
    current = [None]
    barrier = threading.Barrier(THREADS + 1)

    def work():
        while True:
            barrier.wait()          # a slice starts
            pool = current[0]
            if pool is None:
                return
            for _ in range(PER_SLICE):
                with pool.connection() as conn:
                    conn.execute("SELECT 1")
            barrier.wait()          # and ends when every thread has done its part

    workers = [threading.Thread(target=work) for _ in range(THREADS)]
    for w in workers:
        w.start()
    done, spent, cpu = [0, 0], [0.0, 0.0], [0.0, 0.0]
    first = run % 2                 # runs start with the adapter, then without, ...
    k = 0
    while spent[0] + spent[1] < 2 * SECONDS:
        which = first ^ (k % 4 in (1, 2))
        current[0] = pools[which]
        start, cpu_start = time.monotonic(), time.process_time()
        barrier.wait()
        barrier.wait()
        spent[which] += time.monotonic() - start
        cpu[which] += time.process_time() - cpu_start
        done[which] += THREADS * PER_SLICE
        k += 1
    current[0] = None
    barrier.wait()
    for w in workers:
        w.join()
    stats = budget.stats()
    assert stats["share"] == THREADS and stats["errors"] == {}, stats
    for pool in pools:
        pool.close()
    # queries per second, and the client's CPU microseconds per query
    return (done[0] / spent[0], done[1] / spent[1],
            cpu[0] / done[0] * 1e6, cpu[1] / done[1] * 1e6)


say("## Python adapter (psycopg_pool)")
say()
say("Produced by `bash bench/adapters/python.sh` on %s, %d cores, PostgreSQL %s, "
    "Python %s, psycopg %s, psycopg_pool %s, refresh interval %d ms."
    % (time.strftime("%Y-%m-%d"), os.cpu_count(),
       admin.execute("SHOW server_version").fetchone()[0].split()[0],
       platform.python_version(), psycopg.__version__,
       __import__("psycopg_pool").__version__, refresh_s * 1000))
say()
rows, ratios, cpu_with, cpu_without = [], [], [], []
for run in range(RUNS):
    time.sleep(0.5)
    with_rate, without_rate, with_cpu, without_cpu = compare(run)
    ratios.append(with_rate / without_rate)
    cpu_with.append(with_cpu)
    cpu_without.append(without_cpu)
    rows.append("| %d | %s | %.0f | %.0f | %.3f | %.1f | %.1f |" % (
        run + 1, "with first" if run % 2 == 0 else "without first",
        with_rate, without_rate, ratios[-1], with_cpu, without_cpu))
    print("run %d: with %.0f q/s, without %.0f q/s, ratio %.3f; client CPU per query "
          "%.1f us with, %.1f us without" % (run + 1, with_rate, without_rate, ratios[-1],
                                            with_cpu, without_cpu), flush=True)
say("**Overhead** (`SELECT 1` in %d threads through a pool of %d connections, the adapter at "
    "a steady share of %d; in each run the same threads switch between the pool with the "
    "adapter and the pool without it, all together, after every %d queries each, in the "
    "order ABBA..., %g s on each): median ratio **%.3f** (goal: at least 0.97)."
    % (THREADS, THREADS, THREADS, PER_SLICE, SECONDS, statistics.median(ratios)))
say()
say("The client's CPU time per query (the adapter's cost is all on the client: its wrappers "
    "of getconn and putconn, and one refresh per interval), medians: %.1f us with the "
    "adapter, %.1f us without (%.3f)." % (
        statistics.median(cpu_with), statistics.median(cpu_without),
        statistics.median(cpu_without) / statistics.median(cpu_with)))
say()
say("| run | order | with the adapter (queries/s) | without (queries/s) | ratio "
    "| CPU/query with (us) | without (us) |")
say("|---|---|---|---|---|---|---|")
for row in rows:
    say(row)
say()

# ---- convergence ----
app = "pybench-converge"


def busy_pool(pod):
    pool = ConnectionPool("", kwargs=connbudget.connect_kwargs(app, pod=pod),
                          min_size=1, max_size=20, open=False)
    budget = connbudget.follow(pool)
    stop = threading.Event()

    def work():
        while not stop.is_set():
            with pool.connection() as conn:
                conn.execute("SELECT pg_sleep(0.01)")
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()

    def close():
        stop.set()
        for t in threads:
            t.join()
        budget.close()
    return budget, close


first, close_first = busy_pool("a")
wait_until(lambda: held(app, "a") == (8, 8), 10 * refresh_s + 5)
joins, leaves, reports = [], [], []
for rnd in range(ROUNDS):
    time.sleep(2 * refresh_s)
    start = time.monotonic()
    second, close_second = busy_pool("b")
    # its first report comes at once, before its threads are busy; the one
    # that reports their demand comes 10% to 100% of an interval later
    wait_until(lambda: (second.stats()["demand"] or 0) >= 8, 10 * refresh_s + 5)
    reported = time.monotonic()
    wait_until(lambda: held(app, "a")[0] <= 4 and held(app, "a")[1] == 4, 10 * refresh_s + 5)
    reports.append((time.monotonic() - reported) / refresh_s)
    joins.append((time.monotonic() - start) / refresh_s)
    time.sleep(2 * refresh_s)
    start = time.monotonic()
    close_second()
    leaves.append((time.monotonic() - start
                   + wait_until(lambda: held(app, "a") == (8, 8), 10 * refresh_s + 5))
                  / refresh_s)
    print("round %d: join %.2f (%.2f from its demand's report), leave %.2f refresh intervals"
          % (rnd + 1, joins[-1], reports[-1], leaves[-1]), flush=True)
close_first()
say("**Convergence** (application capped at 8, two pods with 8 busy threads each, refresh "
    "interval %d ms, %d rounds; measured on the server, in refresh intervals):"
    % (refresh_s * 1000, ROUNDS))
say()
say("| event | median | max | goal |")
say("|---|---|---|---|")
say("| a pod joins: the first holds no more than its new share, 4, from the second's report "
    "of its threads' demand | %.2f | %.2f | 2 |" % (statistics.median(reports), max(reports)))
say("| ... from the second's start (its first report, at once, is of an idle pool; the next "
    "comes 10%% to 100%% of an interval later) | %.2f | %.2f | |"
    % (statistics.median(joins), max(joins)))
say("| the pod leaves: the first holds 8 again (from the start of close()) | %.2f | %.2f | 2 |"
    % (statistics.median(leaves), max(leaves)))
say()
print("median ratio %.3f; join %.2f, leave %.2f refresh intervals (medians)"
      % (statistics.median(ratios), statistics.median(joins), statistics.median(leaves)))
if os.environ.get("CB_RESULTS_FILE"):
    with open(os.environ["CB_RESULTS_FILE"], "w") as out:
        out.write("\n".join(lines) + "\n")
PY
