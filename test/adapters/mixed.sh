#!/usr/bin/env bash
# test/adapters/mixed.sh -- a mixed fleet on one budget: C pools
# (client/connbudget_pool.h), a PgBouncer with connbudget-pgbouncer, and
# the Python (psycopg_pool), Go (database/sql), Node (node-postgres) and
# Java (HikariCP) adapters, each a pod of the application "api" (capped at
# 16) or "worker", share a budget of 40 while pods join, leave and die
# (client/examples/mixed/mixed.py, scenario "test", about 45 s). Sampled on
# the server ten times a second (connbudget.budget, connbudget.pods,
# pg_stat_activity), it checks that the server never sees more than the
# budget, that a pod above its share is back within it no later than 2
# refresh intervals after its share fell, that a killed pod's share comes
# back to the others after pod_ttl and a leaving pod's at once, and that
# every pod served and no query failed. TAP. Then flake8, with the tree's
# .flake8, on the fleet's Python (client/examples/mixed/*.py): anything it
# reports fails the test.
#
# cluster: max_connections=50 superuser_reserved_connections=3 connbudget.reserved_connections=7 connbudget.refresh_interval=500ms connbudget.pod_ttl=3000
#
# test/run's adapters suite runs it through test/lib/with-cluster.sh, which
# starts the cluster with the settings above and exports PGHOST, PGPORT,
# PGUSER (a superuser), PGDATABASE, CB_CLUSTER_DIR and PG_BINDIR; CB_SRC_DIR
# is the tree:  bash test/run adapters mixed
# By hand, as a user that is not root, from the tree's root:
#
#   sed -n 's/^# cluster: *//p' test/adapters/mixed.sh >/tmp/mixed.sh.conf
#   cp test/adapters/mixed.sh /tmp/mixed.sh && bash test/lib/with-cluster.sh /tmp/mixed.sh
#
# It needs what the adapters' tests need (python3-psycopg-pool, golang-go
# with golang-github-lib-pq-dev, Node.js with npm and the npm registry for
# `npm ci` in client/node, default-jdk-headless with libhikaricp-java and
# libpostgresql-jdbc-java), pgbouncer, a C compiler, libpq-dev and
# python3-flake8.
# CB_MIXED_KINDS=c,pgbouncer,python,go,node leaves Java out. CB_KEEP=1
# keeps the scratch directory (the pods' logs, mixed.csv, mixed.png).
set -uo pipefail
src=${CB_SRC_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
work=$(mktemp -d "${CB_WORK:-${TMPDIR:-/tmp}}/mixed.XXXXXX") || exit 1
[ -n "${CB_KEEP:-}" ] || trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
status=0
bash "$src/client/examples/mixed/run.sh" "$work" test || status=1
# the fleet's Python, linted with the tree's .flake8
if (cd "$src" && /usr/bin/python3 -m flake8 client/examples/mixed/*.py) >"$work/flake8.out" 2>&1; then
    echo "# flake8: nothing to report in client/examples/mixed/*.py"
else
    sed 's/^/#   /' "$work/flake8.out"
    echo "# flake8 reports the lines above in client/examples/mixed/*.py"
    status=1
fi
exit $status
