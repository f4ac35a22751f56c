#!/usr/bin/env bash
# with-cluster.sh TEST -- run one C test program against a throwaway cluster
# of its own (settings from TEST.conf), then remove the cluster.  prove(1)
# calls it for each server and client test (prove --exec).
set -uo pipefail
test_bin=$1
# shellcheck source=cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/cluster.sh"

dir=$(mktemp -d "${CB_WORK:-/tmp}/cluster.XXXXXX")
settings=()
if [ -s "$test_bin.conf" ]; then
    read -r -a settings <"$test_bin.conf"
fi
if ! { cluster_create "$dir" "${settings[@]}" && cluster_start "$dir"; } >&2; then
    echo "Bail out! the test cluster did not start"
    exit 1
fi
eval "$(cluster_env "$dir")"
"$test_bin"
status=$?
if [ $status -ne 0 ]; then
    echo "# last lines of the server log:"
    tail -n 40 "$dir/server.log" | sed 's/^/#   /'
fi
cluster_destroy "$dir"
exit $status
