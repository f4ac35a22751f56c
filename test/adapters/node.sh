#!/usr/bin/env bash
# test/adapters/node.sh -- the node-postgres adapter (client/node) with
# Node's own test runner (node --test) against the throwaway cluster
# test/lib/with-cluster.sh started for it, and a second cluster without
# connbudget for the test of a server that has none; then eslint.
#
# cluster: auth=scram-sha-256 connbudget.refresh_interval=200ms connbudget.pod_ttl=2000
#
# The tests: the share parser against hostile text and the refusal's pace
# (test/share.test.js); identity (test/identity.test.js); and against the
# real server, every number sampled in connbudget.pods
# (test/server.test.js): a pod follows its share down and up, closes idle
# surplus at once, never holds more than its share while busy and reports
# its demand, hands its share back on close, waits out 53300 refusals, is
# refused at once with 42501, recovers from a server restart, keeps its
# own size where the server knows no connbudget.share (older than 1.2)
# and follows its share once it does, takes no size from answers a relay
# in front of the server rewrites into nonsense, keeps its own size where
# the server does not govern it and where there is no extension. The pools log in as a role with a password
# (scram-sha-256), as on a production server.
#
# test/run's adapters suite runs it as the unprivileged postgres user from
# the tree's root (a scratch copy), with PGHOST, PGPORT, PGUSER (a
# superuser), PGDATABASE, CB_CLUSTER_DIR and PG_BINDIR exported and
# CB_SRC_DIR the tree:  bash test/run adapters node
#
# It needs Node.js 18 or later with npm, and the npm registry: `npm ci`
# installs node-postgres and eslint from client/node/package-lock.json
# into client/node/node_modules of the tree it runs in (npm's cache goes
# to a scratch directory unless npm_config_cache names one).
set -uo pipefail
cd "${CB_SRC_DIR:-.}" || exit 1
for tool in node npm psql; do
    command -v "$tool" >/dev/null || { echo "Bail out! $tool is missing"; exit 1; }
done
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)'; then
    echo "Bail out! Node.js $(node --version) is too old: the adapter needs 18 or later"
    exit 1
fi
# shellcheck source=SCRIPTDIR/../lib/cluster.sh
source test/lib/cluster.sh

# the extension, and a login role the server may refuse (superusers never are)
password="cbnode-$RANDOM$RANDOM"
psql -qX -v ON_ERROR_STOP=1 -v password="$password" <<'SQL' || exit 1
CREATE EXTENSION IF NOT EXISTS connbudget;
SELECT 'CREATE ROLE cbnode LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cbnode') \gexec
ALTER ROLE cbnode PASSWORD :'password';
SQL

work=$(mktemp -d "${CB_WORK:-${TMPDIR:-/tmp}}/node-adapter.XXXXXX") || exit 1
trap 'cluster_destroy "$work/plain"; rm -rf "$work"' EXIT
if ! { cluster_create "$work/plain" shared_preload_libraries= && cluster_start "$work/plain"; } >&2; then
    echo "Bail out! the cluster without connbudget did not start"
    exit 1
fi

cd client/node || exit 1
export npm_config_cache="${npm_config_cache:-$work/npm-cache}"
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
if ! npm ci --no-progress --loglevel=error >"$work/npm.log" 2>&1; then
    sed 's/^/# npm: /' "$work/npm.log" | tail -n 20
    echo "Bail out! npm ci could not install node-postgres and eslint"
    exit 1
fi
echo "# node $(node --version), node-postgres $(node -p 'require("pg/package.json").version')"

status=0
CONNBUDGET_TEST_SERVER=1 CONNBUDGET_TEST_ROLE=cbnode CONNBUDGET_TEST_PASSWORD="$password" \
    CONNBUDGET_TEST_PLAIN="$(cat "$work/plain/port")" \
    node --test --test-reporter=tap test/*.test.js || status=1
if npx --no-install eslint .; then
    echo "ok - eslint client/node"
else
    echo "not ok - eslint client/node"
    status=1
fi
exit $status
