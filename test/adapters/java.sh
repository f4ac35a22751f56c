#!/usr/bin/env bash
# test/adapters/java.sh -- the Java adapter (client/java, HikariCP) against
# a throwaway PostgreSQL cluster of its own, and a second one without
# connbudget: javac -Xlint:all -Werror, then JUnit 5: the unit tests (the
# share parser against hostile answers, ids, the configuration) and the
# tests against the real server (a pool follows its share down and up,
# closes idle surplus at once, closes only its surplus when its share
# falls (never fewer than the new share on the way), never holds more than
# its share while busy, hands it back on close, waits out 53300 refusals,
# fails at once and without hammering on 42501, recovers from a server
# restart, takes no hostile answer as a size, falls back to a fixed size
# where the server speaks no protocol 2 or has no connbudget, logs in with
# a scram password, and shows its numbers as an MXBean beside HikariCP's
# own).
#
# cluster: max_connections=50 superuser_reserved_connections=3 connbudget.reserved_connections=7 connbudget.refresh_interval=200ms connbudget.pod_ttl=2000
#
# test/run's adapter suite runs it through test/lib/with-cluster.sh, which
# starts the cluster with the settings above and exports PGHOST, PGPORT,
# PGUSER (a superuser), PGDATABASE, CB_CLUSTER_DIR and PG_BINDIR; CB_SRC_DIR
# is the tree. By hand, as a user that is not root, from the tree's root:
#
#   sed -n 's/^# cluster: *//p' test/adapters/java.sh >/tmp/java.sh.conf
#   cp test/adapters/java.sh /tmp/java.sh && bash test/lib/with-cluster.sh /tmp/java.sh
#
# It needs Debian's default-jdk-headless, libhikaricp-java,
# libpostgresql-jdbc-java and junit5 (which brings the JUnit console
# launcher), and no network: it compiles with javac against the jars in
# /usr/share/java and runs JUnit's console launcher, in a scratch directory
# it removes. (client/java/pom.xml is for publishing; Maven is not needed.)
set -euo pipefail

src=${CB_SRC_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
jars=/usr/share/java
for tool in javac java psql; do
    command -v "$tool" >/dev/null || {
        echo "Bail out! $tool is missing (Debian: default-jdk-headless, postgresql-client)"
        exit 1
    }
done
for jar in HikariCP postgresql slf4j-api slf4j-jdk14 junit-jupiter-api junit-jupiter-params \
    junit-platform-console-standalone apiguardian-api opentest4j; do
    [ -f "$jars/$jar.jar" ] || {
        echo "Bail out! $jars/$jar.jar is missing (Debian: libhikaricp-java, libpostgresql-jdbc-java, junit5)"
        exit 1
    }
done

work=$(mktemp -d "${CB_WORK:-${TMPDIR:-/tmp}}/java-adapter.XXXXXX")
# shellcheck source=SCRIPTDIR/../lib/cluster.sh
source "$src/test/lib/cluster.sh"
plain="$work/plain"
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    cluster_destroy "$plain" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# the extension in the database the tests use, a role that is not a
# superuser (superusers are never refused), and one that logs in with a
# password (scram-sha-256), for the test of passwords only: every connect
# costs more with it
password=cbjava-$RANDOM$RANDOM
psql -X -q -v ON_ERROR_STOP=1 -v password="$password" <<'SQL'
CREATE EXTENSION IF NOT EXISTS connbudget;
SELECT 'CREATE ROLE cbjava LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cbjava') \gexec
SELECT 'CREATE ROLE cbjava_pw LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cbjava_pw') \gexec
SET password_encryption = 'scram-sha-256';
ALTER ROLE cbjava_pw PASSWORD :'password';
SQL
if [ -n "${CB_CLUSTER_DIR:-}" ]; then
    hba="$CB_CLUSTER_DIR/data/pg_hba.conf"
    { echo "host all cbjava_pw 127.0.0.1/32 scram-sha-256"; cat "$hba"; } >"$hba.new" && mv "$hba.new" "$hba"
    psql -X -q -At -c "SELECT pg_reload_conf()" >/dev/null
fi

# a server without connbudget, for the fixed size
if ! { cluster_create "$plain" shared_preload_libraries= && cluster_start "$plain"; } >&2; then
    echo "Bail out! the cluster without connbudget did not start"
    exit 1
fi

cp="$jars/HikariCP.jar:$jars/postgresql.jar:$jars/slf4j-api.jar"
test_cp="$jars/junit-jupiter-api.jar:$jars/junit-jupiter-params.jar:$jars/apiguardian-api.jar:$jars/opentest4j.jar"
test_cp="$test_cp:$jars/junit-platform-commons.jar"
mapfile -t main_sources < <(find "$src/client/java/src/main/java" -name '*.java')
mapfile -t test_sources < <(find "$src/client/java/src/test/java" -name '*.java')
echo "# javac -Xlint:all -Werror (main, then tests)"
# the client compiler alone and a small collector start faster on a busy machine
javac_fast=(-J-XX:TieredStopAtLevel=1 -J-XX:+UseSerialGC --release 11 -Xlint:all -Werror -encoding UTF-8)
javac "${javac_fast[@]}" -d "$work/main" -cp "$cp" "${main_sources[@]}"
javac "${javac_fast[@]}" -d "$work/test" -cp "$work/main:$cp:$test_cp" "${test_sources[@]}"

# HikariCP logs through slf4j, here into java.util.logging, with the adapter
cat >"$work/logging.properties" <<EOF
handlers = java.util.logging.ConsoleHandler
.level = WARNING
org.connbudget.level = ${CB_JAVA_LOG:-INFO}
com.zaxxer.hikari.level = ${CB_HIKARI_LOG:-OFF}
java.util.logging.ConsoleHandler.level = ALL
java.util.logging.SimpleFormatter.format = # %1\$tT.%1\$tL %4\$s %3\$s: %5\$s%6\$s%n
EOF

# CB_JAVA_TESTS=ServerTest#closeHandsTheShareBack runs one test (or class);
# CB_JAVA_LOG=FINE shows every share read
select=(--select-package org.connbudget.hikari)
case ${CB_JAVA_TESTS:-} in
    "") ;;
    *"#"*) select=(--select-method "org.connbudget.hikari.$CB_JAVA_TESTS") ;;
    *) select=(--select-class "org.connbudget.hikari.$CB_JAVA_TESTS") ;;
esac
echo "# JUnit 5"
status=0
CONNBUDGET_TEST_SERVER=1 CONNBUDGET_TEST_ROLE=cbjava CONNBUDGET_TEST_PASSWORD_ROLE=cbjava_pw CONNBUDGET_TEST_PASSWORD="$password" \
CONNBUDGET_TEST_PLAIN="jdbc:postgresql://127.0.0.1:$(cat "$plain/port")/postgres" \
    java -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.util.logging.config.file="$work/logging.properties" \
    -jar "$jars/junit-platform-console-standalone.jar" --disable-banner --disable-ansi-colors \
    --details=tree --exclude-engine=junit-vintage --fail-if-no-tests \
    --class-path "$work/main:$work/test:$cp:$jars/slf4j-jdk14.jar" \
    "${select[@]}" 2>&1 | tee "$work/junit.log" || status=$?
passed=$(sed -n 's/^\[ *\([0-9]*\) tests successful *\]$/\1/p' "$work/junit.log")
failed=$(sed -n 's/^\[ *\([0-9]*\) tests failed *\]$/\1/p' "$work/junit.log")
skipped=$(sed -n 's/^\[ *\([0-9]*\) tests skipped *\]$/\1/p' "$work/junit.log")
echo "java: ${passed:-0} passed, ${failed:-0} failed, ${skipped:-0} skipped"
exit $status
