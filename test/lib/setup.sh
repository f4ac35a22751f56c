# setup.sh -- install what connbudget needs on Debian, build and install the
# extension.  Sourced by test/run, the demo and the benchmarks.
#
# PG_CONFIG names the PostgreSQL installation to build against and test
# with (default: the pg_config on PATH, Debian's PostgreSQL 15).  Its
# binaries, headers, libpq and install directories follow it.
PG_CONFIG=${PG_CONFIG:-pg_config}
export PG_CONFIG

# The adapters' languages, pools and drivers (Node's pg comes from the npm
# registry, see client/node; Debian's nodejs and npm only where no node is).
CB_PACKAGES_ADAPTERS="python3-psycopg python3-psycopg-pool python3-pytest python3-flake8 golang-go golang-github-lib-pq-dev golang-github-jackc-pgx-v4-dev default-jdk-headless libhikaricp-java libpostgresql-jdbc-java junit5"
command -v npm >/dev/null || CB_PACKAGES_ADAPTERS="$CB_PACKAGES_ADAPTERS nodejs npm"

# Debian packages each job needs (PostgreSQL 15 from Debian 12).
CB_PACKAGES_BUILD="build-essential postgresql-15 postgresql-client-15 postgresql-server-dev-15 libpq-dev libkrb5-dev"
CB_PACKAGES_TEST="$CB_PACKAGES_BUILD postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl perl prometheus-postgres-exporter prometheus curl python3 python3-yaml git pgbouncer iproute2 clang libclang-rt-14-dev libfuzzer-14-dev debhelper postgresql-server-dev-all lintian help2man $CB_PACKAGES_ADAPTERS"
CB_PACKAGES_DEMO="$CB_PACKAGES_BUILD gnuplot-nox"
CB_PACKAGES_BENCH="$CB_PACKAGES_BUILD gnuplot-nox pgbouncer time clang libclang-rt-14-dev libfuzzer-14-dev $CB_PACKAGES_ADAPTERS"

# Install the packages that are missing (as root; with sudo otherwise).
cb_install_packages() {
    local missing="" pkg sudo=""
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing="$missing $pkg"
        fi
    done
    [ -n "$missing" ] || return 0
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || { echo "missing packages:$missing (run as root)" >&2; return 1; }
        sudo=sudo
    fi
    echo "== installing:$missing"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
    # a pgbouncer package starts its own service; we run our own instances
    if [[ " $missing " == *" pgbouncer "* ]] && command -v systemctl >/dev/null; then
        $sudo systemctl disable --now pgbouncer >/dev/null 2>&1 || true
    fi
}

# The tests need pgTAP and dblink in the installation under test.  Debian's
# postgresql-15-pgtap provides pgTAP for Debian's server; pgTAP is plain SQL,
# so for another installation (PG_CONFIG=...) its files are copied there.
cb_provide_test_extensions() {
    local share sudo="" f
    share=$("$PG_CONFIG" --sharedir)/extension
    [ "$(id -u)" = 0 ] || sudo=sudo
    if [ ! -f "$share/pgtap.control" ]; then
        echo "== copying pgTAP into $share"
        for f in /usr/share/postgresql/15/extension/pgtap*; do
            $sudo cp "$f" "$share/"
        done
    fi
    if [ ! -f "$share/dblink.control" ]; then
        echo "dblink is not installed in $share; build PostgreSQL's contrib (make -C contrib install)" >&2
        return 1
    fi
}

# Build (warnings are errors, assertions on) and install the extension.
cb_build_install() {
    local src=$1 sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    make -C "$src" -s PG_CONFIG="$PG_CONFIG" clean >/dev/null
    make -C "$src" -s PG_CONFIG="$PG_CONFIG" WERROR=1
    $sudo make -C "$src" -s PG_CONFIG="$PG_CONFIG" install >/dev/null
}

# The unprivileged user that runs PostgreSQL when we are root.
cb_run_user() {
    if [ "$(id -u)" = 0 ]; then echo postgres; else id -un; fi
}

# A scratch directory the run user owns, removed by the caller's trap.
cb_scratch_dir() {
    local dir
    dir=$(mktemp -d "${TMPDIR:-/tmp}/connbudget-$1.XXXXXX")
    chmod 755 "$dir"
    [ "$(id -u)" != 0 ] || chown "$(cb_run_user)" "$dir"
    echo "$dir"
}

# Run a command as the run user, keeping the environment we set up.
cb_as_run_user() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- env HOME=/tmp PATH="$PATH" PG_CONFIG="$PG_CONFIG" "$@"
    else
        "$@"
    fi
}

# Re-run a script of the tree as the run user, on a scratch copy of the tree
# it can write to, with CB_STAGE=inner and CB_WORK=<scratch dir>; remove the
# copy (and stop any cluster left running in it) afterwards.  Set CB_KEEP to
# keep it.  Usage: cb_run_unprivileged SRC_DIR NAME SCRIPT [ARGS...]
cb_run_unprivileged() {
    local src=$1 name=$2 script=$3 status=0
    shift 3
    CB_SCRATCH=$(cb_scratch_dir "$name")
    trap cb_remove_scratch EXIT
    mkdir "$CB_SCRATCH/src"
    (cd "$src" && tar --exclude=.git -cf - .) | tar -C "$CB_SCRATCH/src" -xf -
    [ "$(id -u)" != 0 ] || chown -R "$(cb_run_user)" "$CB_SCRATCH"
    cb_as_run_user env CB_STAGE=inner CB_WORK="$CB_SCRATCH" CB_SRC="$src" \
        bash "$CB_SCRATCH/src/$script" "$@" || status=$?
    return $status
}

cb_remove_scratch() {
    local pid_file
    [ -n "${CB_SCRATCH:-}" ] && [ -d "$CB_SCRATCH" ] || return 0
    for pid_file in "$CB_SCRATCH"/*/data/postmaster.pid "$CB_SCRATCH"/*/*/data/postmaster.pid; do
        [ -f "$pid_file" ] || continue
        cb_as_run_user "$("$PG_CONFIG" --bindir)/pg_ctl" -D "$(dirname "$pid_file")" \
            -m immediate stop >/dev/null 2>&1 || true
    done
    if [ -n "${CB_KEEP:-}" ]; then
        echo "== kept $CB_SCRATCH (CB_KEEP)"
    else
        rm -rf "$CB_SCRATCH"
    fi
}

# Build and install the extension as users get it (no assertions).
cb_build_install_release() {
    local src=$1 sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    make -C "$src" -s PG_CONFIG="$PG_CONFIG" clean >/dev/null
    make -C "$src" -s PG_CONFIG="$PG_CONFIG"
    $sudo make -C "$src" -s PG_CONFIG="$PG_CONFIG" install >/dev/null
}
