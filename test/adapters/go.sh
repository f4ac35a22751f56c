#!/usr/bin/env bash
# test/adapters/go.sh -- the Go adapter (client/go) against a throwaway
# PostgreSQL cluster of its own: gofmt and go vet, then go test: the unit
# tests of its own logic (the share parser against hostile text, what it
# makes of answers, the demand, the pace, the backoff, the identity in a
# DSN) and the tests against the real server (a pool follows its share
# down and up, closes idle surplus at once, never holds more than its share
# while busy, hands it back on close, waits out 53300 refusals, is refused
# at once with 42501, recovers from a server restart; hostile answers
# made by the server itself, a share refused when the rules change, a
# wrong password). The pools log in with a password
# (scram-sha-256), and a second cluster without connbudget, started here,
# is the server without the extension.
#
# cluster: max_connections=50 superuser_reserved_connections=3 connbudget.reserved_connections=7 connbudget.refresh_interval=200ms connbudget.pod_ttl=2000 auth=scram-sha-256
#
# test/run's adapter suite runs it through test/lib/with-cluster.sh, which
# starts the cluster with the settings above and exports PGHOST, PGPORT,
# PGUSER (a superuser), PGDATABASE, CB_CLUSTER_DIR and PG_BINDIR; CB_SRC_DIR
# is the tree. By hand, as a user that is not root, from the tree's root:
#
#   sed -n 's/^# cluster: *//p' test/adapters/go.sh >/tmp/go.sh.conf
#   cp test/adapters/go.sh /tmp/go.sh && CB_SRC_DIR=$PWD bash test/lib/with-cluster.sh /tmp/go.sh
#
# It needs Debian's golang-go, golang-github-lib-pq-dev and
# golang-github-jackc-pgx-v4-dev, and no network: it builds in GOPATH mode
# against the Go sources Debian installs in /usr/share/gocode, in a scratch
# directory it removes. CB_GO_RACE=1 runs the tests under the race
# detector (about 40 s more: the standard library is built with it);
# CB_GO_LINT=1 runs staticcheck too (Debian: go-staticcheck; about 20 s).
set -euo pipefail

src=${CB_SRC_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
for program in go gofmt psql; do
    command -v "$program" >/dev/null || {
        echo "Bail out! $program is missing (Debian: golang-go, golang-github-lib-pq-dev, golang-github-jackc-pgx-v4-dev)"
        exit 1
    }
done
for dir in github.com/lib/pq github.com/jackc/pgx/v4/stdlib; do
    [ -d "/usr/share/gocode/src/$dir" ] || {
        echo "Bail out! /usr/share/gocode/src/$dir is missing (Debian: golang-github-lib-pq-dev, golang-github-jackc-pgx-v4-dev)"
        exit 1
    }
done

work=$(mktemp -d "${CB_WORK:-${TMPDIR:-/tmp}}/go-adapter.XXXXXX")
cleanup() {
    cluster_destroy "$work/noext" 2>/dev/null
    chmod -R u+w "$work" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=test/lib/cluster.sh
source "$src/test/lib/cluster.sh"
# the server without connbudget
cluster_create "$work/noext" shared_preload_libraries= max_connections=20 >&2
cluster_start "$work/noext" >&2
noext_port=$(cat "$work/noext/port")
export CONNBUDGET_TEST_NOEXT_DSN="host=127.0.0.1 port=$noext_port user=postgres dbname=postgres sslmode=disable"
# the module's path, github.com/connbudget/connbudget/client/go, in a GOPATH
pkg="$work/gopath/src/github.com/connbudget/connbudget/client/go"
mkdir -p "$pkg"
cp -R "$src/client/go/." "$pkg/"
export GO111MODULE=off GOPATH="$work/gopath:/usr/share/gocode" GOCACHE="$work/cache" \
    XDG_CACHE_HOME="$work/cache" GOFLAGS='' GOPROXY=off HOME="${HOME:-/tmp}"

# the extension in the database the tests use, and a role that is not a
# superuser (superusers are never refused)
psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE EXTENSION IF NOT EXISTS connbudget;
SELECT 'CREATE ROLE cbgo LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cbgo') \gexec
ALTER ROLE cbgo PASSWORD 'cbgo-secret';
SQL

cd "$pkg"
echo "# gofmt -l"
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
    echo "not formatted with gofmt: $unformatted"
    exit 1
fi
echo "# go vet"
go vet .
if [ -n "${CB_GO_LINT:-}" ]; then
    echo "# staticcheck"
    go-staticcheck .
fi

race=()
[ -z "${CB_GO_RACE:-}" ] || race=(-race)
echo "# go test ${race[*]}"
CONNBUDGET_TEST_SERVER=1 CONNBUDGET_TEST_ROLE=cbgo CONNBUDGET_TEST_PASSWORD=cbgo-secret go test -count=1 -v -timeout 240s "${race[@]}" .
