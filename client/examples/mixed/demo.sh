#!/usr/bin/env bash
# demo.sh -- the mixed fleet as a demo: `bash client/examples/demo.sh --mixed`
# runs this. C pools, a PgBouncer with connbudget-pgbouncer, and pools of
# the Python, Go, Node and Java adapters, each a pod of the application
# "api" (capped at 16) or "worker", share a budget of 40 while pods join,
# leave and die (about 80 s); the fleet is printed once a second and
# demo-output/mixed.png shows each pod's share and connections over time.
#
#   bash client/examples/demo.sh --mixed          run it and clean up
#   bash client/examples/demo.sh --mixed --keep   leave the server running
#
# It installs what is missing (Debian packages; node-postgres from the npm
# registry), builds and installs the extension, starts a cluster with
# connbudget preloaded (max_connections 50, superuser_reserved_connections
# 3, connbudget.reserved_connections 7: a budget of 40;
# connbudget.refresh_interval 500 ms, connbudget.pod_ttl 3 s) and runs
# client/examples/mixed/run.sh. It exits 0 only if every check held.
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
# shellcheck source=SCRIPTDIR/../../../test/lib/setup.sh
source "$src/test/lib/setup.sh"
keep=""
for arg in "$@"; do
    [ "$arg" != --keep ] || keep=1
done

if [ "${CB_STAGE:-}" != inner ]; then
    # shellcheck disable=SC2086 # lists of package names
    cb_install_packages $CB_PACKAGES_DEMO $CB_PACKAGES_ADAPTERS pgbouncer
    echo "== building and installing the extension"
    cb_build_install_release "$src"
    status=0
    [ -z "$keep" ] || export CB_KEEP=1
    cb_run_unprivileged "$src" demo client/examples/mixed/demo.sh "$@" || status=$?
    mkdir -p "$src/demo-output"
    for file in mixed.png mixed.csv budget.csv events.csv; do
        cp "$CB_SCRATCH/out/$file" "$src/demo-output/" 2>/dev/null || true
    done
    [ "$(id -u)" != 0 ] || chmod -R a+rX "$src/demo-output"
    if [ -f "$src/demo-output/mixed.png" ]; then
        echo "== chart: $src/demo-output/mixed.png"
    fi
    if [ -n "$keep" ] && [ -f "$CB_SCRATCH/cluster/port" ]; then
        echo "== the server is still running; connect with:"
        echo "   psql -h 127.0.0.1 -p $(cat "$CB_SCRATCH/cluster/port") -U postgres postgres"
        echo "   (the pods' logs are in $CB_SCRATCH/out/logs)"
        trap - EXIT
    fi
    exit $status
fi

# ---- from here on: the unprivileged user, in a scratch copy of the tree ----

cd "$CB_WORK/src"
# shellcheck source=SCRIPTDIR/../../../test/lib/cluster.sh
source test/lib/cluster.sh
dir="$CB_WORK/cluster"
echo "== starting a throwaway PostgreSQL with connbudget preloaded (a budget of 40)"
cluster_create "$dir" max_connections=50 superuser_reserved_connections=3 \
    connbudget.reserved_connections=7 connbudget.refresh_interval=500ms connbudget.pod_ttl=3000
cluster_start "$dir"
eval "$(cluster_env "$dir")"
status=0
bash client/examples/mixed/run.sh "$CB_WORK/out" demo --live || status=$?
if [ -z "${CB_KEEP:-}" ]; then
    cluster_destroy "$dir"
fi
exit $status
