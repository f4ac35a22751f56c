#!/usr/bin/env bash
# The Python adapter (client/python) with pytest against the throwaway
# cluster test/lib/with-cluster.sh started for it, and a second cluster
# without connbudget for the tests of a server that has none; then flake8.
# test/run's suite_adapter runs it as the unprivileged postgres user from
# the tree's root, with PGHOST, PGPORT, PGUSER (a superuser) and PGDATABASE
# exported; by hand, as a user other than root (PostgreSQL refuses root),
# from the tree's root:
#
#   echo auth=scram-sha-256 connbudget.refresh_interval=200ms >/tmp/python.sh.conf
#   cp test/adapters/python.sh /tmp/ && bash test/lib/with-cluster.sh /tmp/python.sh
#
# Debian packages: python3-psycopg python3-psycopg-pool python3-pytest
# python3-flake8.  Debian's psycopg is for Debian's python, /usr/bin/python3.
#
# Every role but the superuser postgres logs in with a password
# (scram-sha-256), as on a production server.
#
# cluster: auth=scram-sha-256 connbudget.refresh_interval=200ms
set -uo pipefail
cd "${CB_SRC_DIR:-.}" || exit 1
python=/usr/bin/python3
if ! $python -c 'import psycopg, psycopg_pool, pytest, flake8' 2>/dev/null; then
    echo "Bail out! needs python3-psycopg python3-psycopg-pool python3-pytest python3-flake8"
    exit 1
fi
# shellcheck source=SCRIPTDIR/../lib/cluster.sh
source test/lib/cluster.sh

# a login role the server may refuse (superusers never are), with a
# password of this run's own, and the extension
CONNBUDGET_TEST_PASSWORD=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
psql -qX -v ON_ERROR_STOP=1 -v password="$CONNBUDGET_TEST_PASSWORD" <<'SQL' || exit 1
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS connbudget;
DROP ROLE IF EXISTS connbudget_py;
CREATE ROLE connbudget_py LOGIN PASSWORD :'password';
SQL

plain=$(mktemp -d "${CB_WORK:-/tmp}/plain.XXXXXX")
trap 'cluster_destroy "$plain"' EXIT
if ! { cluster_create "$plain" shared_preload_libraries= && cluster_start "$plain"; } >&2; then
    echo "Bail out! the cluster without connbudget did not start"
    exit 1
fi
CONNBUDGET_TEST_PLAIN="host=127.0.0.1 port=$(cat "$plain/port") user=postgres dbname=postgres"
export CONNBUDGET_TEST_PLAIN
export CONNBUDGET_TEST_ROLE=connbudget_py CONNBUDGET_TEST_PASSWORD PYTHONDONTWRITEBYTECODE=1

# from the package's folder: the tree's root may hold the extension's
# connbudget.so, which Python would import as "connbudget"
cd client/python || exit 1
status=0
$python -m pytest -p no:cacheprovider -q -o log_level=WARNING ${CB_PYTEST_ARGS:-tests} || status=1
$python -m flake8 . && echo "ok: flake8 client/python" || status=1
exit $status
