# cluster.sh -- throwaway PostgreSQL clusters for tests, the demo and the
# benchmarks.  Source it; every function works as the current OS user, which
# must not be root (PostgreSQL refuses to run as root).
#
#   cluster_create DIR [setting=value ...]   initdb + postgresql.conf; the
#                                             pseudo-setting auth=scram-sha-256
#                                             makes every role but postgres log
#                                             in with a password
#   cluster_start DIR                         start on a free port (retries)
#   cluster_env DIR                           print PGHOST/PGPORT/... exports
#   cluster_restart DIR                       pg_ctl restart -m fast
#   cluster_stop DIR / cluster_destroy DIR    stop / stop and remove
#   cluster_standby PRIMARY DIR [setting=value ...]
#                                             a streaming hot standby of PRIMARY
#                                             (pg_basebackup -R), started
#   cluster_promote DIR                       pg_ctl promote, waiting for it
#
# The cluster listens on 127.0.0.1 and on a Unix socket inside DIR.  Its
# port is kept in DIR/port.  connbudget is preloaded unless a setting says
# shared_preload_libraries=''.

PG_BINDIR=${PG_BINDIR:-$("${PG_CONFIG:-pg_config}" --bindir)}

# A TCP port nobody listens on right now (the start retries if it loses a race).
cluster_free_port() {
    local port tries=0
    while [ $tries -lt 200 ]; do
        port=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
        tries=$((tries + 1))
    done
    echo "cluster.sh: no free port found" >&2
    return 1
}

# initdb into DIR/data.  Within a test run (CB_WORK set), the first cluster
# runs initdb into a template of the run's, and every cluster copies it:
# initdb costs a second of CPU, a copy a tenth of that.
cluster_initdb() {
    local dir=$1 template
    if [ -z "${CB_WORK:-}" ] || [ ! -w "$CB_WORK" ]; then
        cluster_run_initdb "$dir"
        return
    fi
    template="$CB_WORK/initdb.$(echo "$PG_BINDIR" | cksum | cut -d' ' -f1)"
    (
        flock 9
        if [ ! -f "$template/done" ]; then
            rm -rf "$template"
            mkdir -p "$template"
            cluster_run_initdb "$template" && touch "$template/done"
        fi
    ) 9>>"$CB_WORK/initdb.lock" || return 1
    cp -a "$template/data" "$dir/data"
}

# initdb itself, into DIR/data (its output in DIR/initdb.log).
cluster_run_initdb() {
    "$PG_BINDIR/initdb" -D "$1/data" -U postgres -A trust -E UTF8 \
        --locale=C.UTF-8 --no-sync >"$1/initdb.log" 2>&1 ||
        { cat "$1/initdb.log" >&2; return 1; }
}

cluster_create() {
    local dir=$1 auth=trust setting
    shift
    rm -rf "$dir"
    mkdir -p "$dir"
    cluster_initdb "$dir" || return 1
    {
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$dir'"
        echo "shared_preload_libraries = 'connbudget'"
        echo "fsync = off"
        echo "synchronous_commit = off"
        echo "full_page_writes = off"
        echo "logging_collector = off"
        echo "log_min_messages = warning"
        echo "log_line_prefix = '%m [%p] %q%a '"
        echo "max_connections = 120"
        echo "superuser_reserved_connections = 3"
        for setting in "$@"; do
            case $setting in
                auth=*) auth=${setting#auth=} ;;
                *) echo "${setting%%=*} = '${setting#*=}'" ;;
            esac
        done
    } >>"$dir/data/postgresql.conf"
    if [ "$auth" != trust ]; then
        # the superuser that sets up the test stays trusted; every other
        # role proves who it is, as on a production server
        echo "password_encryption = '$auth'" >>"$dir/data/postgresql.conf"
        printf '%s\n' \
            "local all postgres trust" \
            "host all postgres 127.0.0.1/32 trust" \
            "local replication postgres trust" \
            "host replication postgres 127.0.0.1/32 trust" \
            "local all all $auth" \
            "host all all 127.0.0.1/32 $auth" \
            "host all all ::1/128 $auth" >"$dir/data/pg_hba.conf"
    fi
}

cluster_start() {
    local dir=$1 port attempt
    for attempt in 1 2 3 4 5; do
        port=$(cluster_free_port) || return 1
        echo "$port" >"$dir/port"
        if "$PG_BINDIR/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
            -o "-p $port" start >"$dir/pg_ctl.log" 2>&1; then
            return 0
        fi
        if ! grep -q "could not bind\|Address already in use" "$dir/server.log" 2>/dev/null; then
            break
        fi
    done
    echo "cluster.sh: could not start the cluster in $dir" >&2
    cat "$dir/pg_ctl.log" "$dir/server.log" >&2 2>/dev/null
    return 1
}

# pg_ctl restart keeps the port given at start (-o is remembered).
cluster_restart() {
    local dir=$1
    "$PG_BINDIR/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -m fast \
        restart >"$dir/pg_ctl.log" 2>&1 ||
        { cat "$dir/pg_ctl.log" "$dir/server.log" >&2; return 1; }
}

cluster_reload() {
    "$PG_BINDIR/pg_ctl" -D "$1/data" reload >/dev/null
}

cluster_stop() {
    local dir=$1
    [ -f "$dir/data/postmaster.pid" ] || return 0
    "$PG_BINDIR/pg_ctl" -D "$dir/data" -w -t 60 -m fast stop >/dev/null 2>&1 ||
        "$PG_BINDIR/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
}

cluster_destroy() {
    cluster_stop "$1"
    rm -rf "$1"
}

cluster_standby() {
    local primary=$1 dir=$2
    shift 2
    rm -rf "$dir"
    mkdir -p "$dir"
    "$PG_BINDIR/pg_basebackup" -h 127.0.0.1 -p "$(cat "$primary/port")" -U postgres \
        -D "$dir/data" -R -X stream -c fast >"$dir/basebackup.log" 2>&1 ||
        { cat "$dir/basebackup.log" >&2; return 1; }
    {
        echo "unix_socket_directories = '$dir'"
        for setting in "$@"; do
            echo "${setting%%=*} = '${setting#*=}'"
        done
    } >>"$dir/data/postgresql.conf"
    cluster_start "$dir"
}

cluster_promote() {
    "$PG_BINDIR/pg_ctl" -D "$1/data" -w -t 60 promote >/dev/null
}

# Connection settings for libpq clients: TCP on 127.0.0.1, so that pods
# without a connbudget.pod setting are identified by IP as in production.
cluster_env() {
    local dir=$1
    echo "export PGHOST=127.0.0.1 PGPORT=$(cat "$dir/port") PGUSER=postgres PGDATABASE=postgres"
    echo "export CB_SOCKET_DIR='$dir' CB_CLUSTER_DIR='$dir' PG_BINDIR='$PG_BINDIR'"
}
