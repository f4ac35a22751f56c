# shellcheck shell=bash
# lib.sh -- what the adapters' benchmarks share: sourced by
# bench/adapters/LANGUAGE.sh after test/lib/setup.sh, with src the tree.
# shellcheck disable=SC2154 # src is the caller's

# As root: install the Debian packages named (after the build's), build and
# install the extension if it is not installed, and run the calling script
# again as the postgres user with the benchmark's environment.  Otherwise
# nothing.  Usage: adapter_bench_as_postgres SCRIPT [PACKAGE...]
adapter_bench_as_postgres() {
    local script=$1
    shift
    [ "$(id -u)" = 0 ] || return 0
    # shellcheck disable=SC2086 # a list of package names
    cb_install_packages $CB_PACKAGES_BUILD "$@"
    if [ ! -f "$("$PG_CONFIG" --sharedir)/extension/connbudget.control" ]; then
        echo "== building and installing the extension (release build)"
        cb_build_install_release "$src"
    fi
    exec runuser -u postgres -- env HOME=/tmp PATH="$PATH" PG_CONFIG="$PG_CONFIG" CB_SRC_DIR="$src" \
        CB_BENCH_RUNS="${CB_BENCH_RUNS:-}" CB_BENCH_SECONDS="${CB_BENCH_SECONDS:-}" \
        CB_BENCH_ROUNDS="${CB_BENCH_ROUNDS:-}" bash "$script"
}

# Unless given a cluster (CB_CLUSTER_DIR with PGHOST, PGPORT, PGUSER as
# test/lib/with-cluster.sh exports them), start one in DIR with the
# settings of SCRIPT's "# cluster:" line, its environment exported; own_cluster
# is then DIR, for the caller's cleanup.  Usage: adapter_bench_cluster SCRIPT DIR
adapter_bench_cluster() {
    local settings
    # shellcheck source=SCRIPTDIR/../../test/lib/cluster.sh
    source "$src/test/lib/cluster.sh"
    if [ -z "${CB_CLUSTER_DIR:-}" ]; then
        own_cluster=$2
        read -r -a settings < <(sed -n 's/^# cluster: *//p' "$1")
        cluster_create "$own_cluster" "${settings[@]}"
        cluster_start "$own_cluster"
        eval "$(cluster_env "$own_cluster")"
    fi
    export PATH="$PG_BINDIR:$PATH"
}

# A scratch directory, work, removed on exit with the cluster the benchmark
# started (if it started one); the cluster (adapter_bench_cluster); the
# extension and the benchmark's login role.
# Usage: adapter_bench_setup SCRIPT NAME ROLE
adapter_bench_setup() {
    work=$(mktemp -d "${CB_WORK:-${TMPDIR:-/tmp}}/$2-bench.XXXXXX")
    trap adapter_bench_cleanup EXIT
    adapter_bench_cluster "$1" "$work/cluster"
    psql -X -q -v ON_ERROR_STOP=1 -v role="$3" <<'SQL'
CREATE EXTENSION IF NOT EXISTS connbudget;
SELECT format('CREATE ROLE %I LOGIN', :'role')
    WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SQL
}

# shellcheck disable=SC2317 # called by the trap
adapter_bench_cleanup() {
    [ -z "${own_cluster:-}" ] || cluster_destroy "$own_cluster"
    # a Go module cache is read-only
    chmod -R u+w "$work" 2>/dev/null
    rm -rf "$work"
}
