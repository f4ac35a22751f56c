#!/usr/bin/env bash
# run.sh -- the mixed fleet against the server of the libpq environment:
# builds its pods, sets the server up for them, runs mixed.py and draws
# the chart.
#
#   bash client/examples/mixed/run.sh OUTDIR [test|demo] [mixed.py options]
#
# PGHOST, PGPORT, PGUSER (a superuser) and PGDATABASE name the server, which
# has connbudget preloaded; run as a user that may run PostgreSQL's tools
# (not root: PgBouncer refuses root too). It builds into OUTDIR/bin: the C
# pod (client/examples/pod.c), connbudget-pgbouncer, the Go pod (GOPATH
# mode, offline, against Debian's /usr/share/gocode) and the Java pod
# (javac, against Debian's jars); it runs `npm ci` in client/node when
# node-postgres is not installed there. It creates the role CB_MIXED_ROLE
# (default "app") and the applications "api" (at most 16 connections) and
# "worker" (no cap), draws OUTDIR/mixed.png (a panel per pod: its share
# and its connections over time) when gnuplot is installed, and
# exits with mixed.py's status. CB_MIXED_KINDS (default
# c,pgbouncer,python,go,node,java) leaves kinds of pods out.
set -euo pipefail

out=$(mkdir -p "$1" && cd "$1" && pwd)
scenario=${2:-test}
shift $(($# < 2 ? $# : 2))
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../../.." && pwd)
kinds=${CB_MIXED_KINDS:-c,pgbouncer,python,go,node,java}
role=${CB_MIXED_ROLE:-app}
bin="$out/bin"
mkdir -p "$bin"
pg_config=${PG_CONFIG:-pg_config}

has() { [[ ",$kinds," == *",$1,"* ]]; }
need() {
    command -v "$1" >/dev/null || { echo "Bail out! $1 is missing ($2)"; exit 1; }
}

need psql "Debian: postgresql-client"
/usr/bin/python3 -c 'import psycopg' 2>/dev/null || { echo "Bail out! needs python3-psycopg"; exit 1; }

echo "# building the pods ($kinds)"
built=$SECONDS
builds=()         # the C builds run beside the Go and Java ones
if has c || has pgbouncer; then
    need cc "Debian: build-essential"
    inc=$("$pg_config" --includedir) lib=$("$pg_config" --libdir)
fi
if has c; then
    cc -std=c11 -O2 -Wall -Wextra "$src/client/examples/pod.c" -I"$src/client" -I"$inc" \
        -L"$lib" -Wl,-rpath,"$lib" -lpq -pthread -o "$bin/pod" &
    builds+=($!)
fi
if has pgbouncer; then
    need pgbouncer "Debian: pgbouncer"
    cc -std=c11 -O2 -Wall -Wextra -I"$inc" -o "$bin/connbudget-pgbouncer" \
        "$src/client/pgbouncer/connbudget_pgbouncer.c" -L"$lib" -Wl,-rpath,"$lib" -lpq -pthread &
    builds+=($!)
fi
if has python; then
    /usr/bin/python3 -c 'import psycopg_pool' 2>/dev/null ||
        { echo "Bail out! needs python3-psycopg-pool"; exit 1; }
fi
if has go; then
    need go "Debian: golang-go, golang-github-lib-pq-dev"
    gopath="$out/gopath"
    mkdir -p "$gopath/src/github.com/connbudget/connbudget/client/go" "$gopath/src/mixedpod"
    cp -R "$src/client/go/." "$gopath/src/github.com/connbudget/connbudget/client/go/"
    rm -f "$gopath/src/github.com/connbudget/connbudget/client/go/"*_test.go
    cp "$here/pod.go" "$gopath/src/mixedpod/main.go"
    (cd "$gopath/src/mixedpod" &&
        GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOCACHE="$out/gocache" GOFLAGS='' \
            GOPROXY=off HOME="${HOME:-/tmp}" go build -o "$bin/mixed-go" .)
fi
if has node; then
    need node "Debian: nodejs npm"
    if [ ! -d "$src/client/node/node_modules/pg" ]; then
        (cd "$src/client/node" &&
            npm_config_cache="$out/npm-cache" npm_config_update_notifier=false npm_config_fund=false \
                npm_config_audit=false npm ci --no-progress --loglevel=error >"$out/npm.log" 2>&1) ||
            { tail -n 20 "$out/npm.log"; echo "Bail out! npm ci could not install node-postgres"; exit 1; }
    fi
fi
if has java; then
    need javac "Debian: default-jdk-headless, libhikaricp-java, libpostgresql-jdbc-java"
    jars=/usr/share/java
    mkdir -p "$bin/java"
    mapfile -t sources < <(find "$src/client/java/src/main/java" -name '*.java')
    javac -J-XX:TieredStopAtLevel=1 -J-XX:+UseSerialGC --release 11 -nowarn -encoding UTF-8 \
        -d "$bin/java" -cp "$jars/HikariCP.jar:$jars/postgresql.jar:$jars/slf4j-api.jar" \
        "${sources[@]}" "$here/Pod.java"
    # the adapter's warnings (and HikariCP's, through slf4j) to the pod's log
    printf '%s\n' 'handlers = java.util.logging.ConsoleHandler' '.level = WARNING' \
        'org.connbudget.level = INFO' 'com.zaxxer.hikari.level = WARNING' \
        'java.util.logging.ConsoleHandler.level = ALL' >"$bin/java/logging.properties"
fi

for pid in "${builds[@]}"; do
    wait "$pid" || { echo "Bail out! a C build failed"; exit 1; }
done
echo "# built in $((SECONDS - built)) s"
echo "# setting the server up: role $role, applications api (at most 16) and worker"
psql -X -q -v ON_ERROR_STOP=1 -v role="$role" <<'SQL'
CREATE EXTENSION IF NOT EXISTS connbudget;
SELECT format('CREATE ROLE %I LOGIN', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
DELETE FROM connbudget.application_limits WHERE application_name IN ('api', 'worker');
INSERT INTO connbudget.application_limits (application_name, min_connections, max_connections, weight)
VALUES ('api', 0, 16, 1), ('worker', 0, NULL, 1);
SQL

status=0
/usr/bin/python3 "$here/mixed.py" --bin "$bin" --out "$out" --scenario "$scenario" \
    --kinds "$kinds" "$@" || status=$?

# ---- the chart: mixed.py wrote its gnuplot script ----
if command -v gnuplot >/dev/null && [ -s "$out/mixed.gp" ]; then
    gnuplot "$out/mixed.gp" && echo "# chart: $out/mixed.png"
fi
exit $status
