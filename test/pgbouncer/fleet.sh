#!/usr/bin/env bash
# fleet.sh -- PgBouncers and their connbudget-pgbouncer controllers, each
# pair in a network namespace of its own, so that each is a pod of its own
# to connbudget (its pod is its address).  Used by test/pgbouncer/run (as
# root: namespaces need it) and by bench/pgbouncer.sh.  Source it for the
# functions, or run it: bash fleet.sh COMMAND [ARGS...].
#
#   net-up N                 N namespaces; pair I has 10.S.I.2, PostgreSQL
#                            reaches it on 10.S.I.1 (S: a free, random
#                            second octet); writes $CB_FLEET_DIR/fleet.env
#   net-down                 stop every process of the fleet, remove the
#                            namespaces (their veth pairs go with them)
#   listen-addresses         the PostgreSQL listen_addresses for the fleet
#   bouncer-start I [k=v..]  start PgBouncer I as postgres (extra settings
#                            go to its [pgbouncer] section)
#   bouncer-stop I [SIG]     stop it (TERM, KILL, INT), waiting for it to go
#   controller-start I [ARG..]  start controller I in namespace I as postgres,
#                            with the fleet's --server/--admin/--metrics-listen
#                            and ARG... after them (later ones win); its log
#                            is $CB_FLEET_DIR/cI.log (an earlier run's is
#                            moved to cI.log.N), its exit status goes to
#                            cI.status when it exits
#   controller-stop I [SIG]  signal it (TERM), wait up to 10 s, print its
#                            exit status
#
# With CB_FLEET_FROM=host, controller-start and controller-stop run the
# controller of PgBouncer I from the wrong place on purpose: in the host's
# namespace, reaching PostgreSQL on NET.I.1 (so its pod is NET.I.1, not its
# PgBouncer's NET.I.2), serving metrics on NET.I.1:9127, its files hI.*.
#
# Environment: CB_FLEET_DIR (a directory the postgres user can enter),
# and for bouncer-start/controller-start the fleet.env written by net-up
# plus CB_FLEET_PGPORT (PostgreSQL's port) and CB_FLEET_CONTROLLER (the
# binary; CB_FLEET_CONTROLLER_BIN overrides it for one start).  The fleet
# serves application "api" of role "app" in database "appdb", through two
# [databases] entries of PgBouncer (appdb and appdb2: two pools, one role).

fleet_env() {
    # shellcheck disable=SC1091
    [ -f "$CB_FLEET_DIR/fleet.env" ] && source "$CB_FLEET_DIR/fleet.env"
    : "${CB_FLEET_NET:?run net-up first}"
}

fleet_ns() { echo "cbns${CB_FLEET_TAG}$1"; }

fleet_net_up() {
    local n=$1 tag octet i ns tries=0
    tag=$(printf '%04x' $((RANDOM % 65536)))
    while :; do
        octet=$((100 + RANDOM % 150))
        ip -o addr show | grep -q " 10\.$octet\." || ip route show | grep -q "^10\.$octet\." || break
        tries=$((tries + 1))
        [ $tries -lt 50 ] || { echo "fleet.sh: no free 10.x.0.0/16 subnet" >&2; return 1; }
    done
    printf 'CB_FLEET_TAG=%s\nCB_FLEET_NET=10.%s\nCB_FLEET_PODS=%s\n' "$tag" "$octet" "$n" \
        >"$CB_FLEET_DIR/fleet.env"
    fleet_env
    for i in $(seq "$n"); do
        ns=$(fleet_ns "$i")
        ip netns add "$ns" || return 1
        ip link add "cbv${tag}${i}h" type veth peer name "cbv${tag}${i}n" || return 1
        ip link set "cbv${tag}${i}n" netns "$ns"
        ip addr add "$CB_FLEET_NET.$i.1/24" dev "cbv${tag}${i}h"
        ip link set "cbv${tag}${i}h" up
        ip netns exec "$ns" ip addr add "$CB_FLEET_NET.$i.2/24" dev "cbv${tag}${i}n"
        ip netns exec "$ns" ip link set "cbv${tag}${i}n" up
        ip netns exec "$ns" ip link set lo up
        ip netns exec "$ns" ip route add default via "$CB_FLEET_NET.$i.1"
    done
    printf '"app" ""\n"pgbouncer" ""\n"stats" ""\n' >"$CB_FLEET_DIR/userlist.txt"
    chmod 644 "$CB_FLEET_DIR/userlist.txt"
}

fleet_net_down() {
    local i ns pids
    [ -f "$CB_FLEET_DIR/fleet.env" ] || return 0
    fleet_env
    for i in $(seq "$CB_FLEET_PODS"); do
        ns=$(fleet_ns "$i")
        ip netns list 2>/dev/null | grep -q "^$ns\b" || continue
        pids=$(ip netns pids "$ns" 2>/dev/null)
        # shellcheck disable=SC2086
        [ -z "$pids" ] || kill -KILL $pids 2>/dev/null
        ip netns del "$ns" 2>/dev/null
        ip link del "cbv${CB_FLEET_TAG}${i}h" 2>/dev/null
    done
    rm -f "$CB_FLEET_DIR/fleet.env"
    return 0
}

fleet_listen_addresses() {
    local i list=127.0.0.1
    fleet_env
    for i in $(seq "$CB_FLEET_PODS"); do list="$list,$CB_FLEET_NET.$i.1"; done
    echo "$list"
}

# Run a command as postgres inside namespace I (exec'd: the pid is its own).
fleet_in_ns() {
    local i=$1
    shift
    exec ip netns exec "$(fleet_ns "$i")" setpriv --reuid=postgres --regid=postgres \
        --init-groups -- env HOME=/tmp "$@"
}

fleet_bouncer_start() {
    local i=$1 dir setting
    shift
    fleet_env
    dir="$CB_FLEET_DIR/b$i"
    mkdir -p "$dir"
    chown postgres "$dir"
    {
        echo "[databases]"
        echo "appdb = host=$CB_FLEET_NET.$i.1 port=$CB_FLEET_PGPORT dbname=appdb user=app application_name=api"
        echo "appdb2 = host=$CB_FLEET_NET.$i.1 port=$CB_FLEET_PGPORT dbname=appdb user=app application_name=api"
        echo "[pgbouncer]"
        echo "listen_addr = $CB_FLEET_NET.$i.2"
        echo "listen_port = 6432"
        echo "unix_socket_dir = $dir"
        echo "auth_type = trust"
        echo "auth_file = $CB_FLEET_DIR/userlist.txt"
        echo "admin_users = pgbouncer"
        echo "stats_users = stats"
        echo "pool_mode = transaction"
        echo "max_client_conn = 200"
        echo "server_login_retry = 1"
        echo "logfile = $dir/pgbouncer.log"
        echo "pidfile = $dir/pgbouncer.pid"
        # later lines win: the defaults first, then the caller's
        echo "default_pool_size = 1"
        for setting in "$@"; do
            echo "${setting%%=*} = ${setting#*=}"
        done
    } >"$dir/pgbouncer.ini"
    chmod 644 "$dir/pgbouncer.ini"
    (fleet_in_ns "$i" pgbouncer -d "$dir/pgbouncer.ini") || return 1
    for _ in $(seq 100); do
        [ -S "$dir/.s.PGSQL.6432" ] && return 0
        sleep 0.05
    done
    echo "fleet.sh: PgBouncer $i did not start" >&2
    tail -5 "$dir/pgbouncer.log" >&2
    return 1
}

fleet_bouncer_stop() {
    local i=$1 sig=${2:-TERM} pid
    fleet_env
    pid=$(cat "$CB_FLEET_DIR/b$i/pgbouncer.pid" 2>/dev/null) || return 0
    if kill "-$sig" "$pid" 2>/dev/null; then
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
    fi
    rm -f "$CB_FLEET_DIR/b$i/pgbouncer.pid" "$CB_FLEET_DIR/b$i/.s.PGSQL.6432"
}

# The prefix of controller I's files: cI, or hI from the host (CB_FLEET_FROM).
fleet_controller_name() {
    if [ "${CB_FLEET_FROM:-}" = host ]; then echo "h$1"; else echo "c$1"; fi
}

# Run a command as postgres in the host's namespace (exec'd, like fleet_in_ns).
fleet_in_host() {
    exec setpriv --reuid=postgres --regid=postgres --init-groups -- env HOME=/tmp "$@"
}

fleet_controller_start() {
    local i=$1 bin n name run=fleet_in_ns where=$1 listen
    shift
    fleet_env
    bin=${CB_FLEET_CONTROLLER_BIN:-$CB_FLEET_CONTROLLER}
    name=$(fleet_controller_name "$i")
    listen="$CB_FLEET_NET.$i.2:9127"
    if [ "${CB_FLEET_FROM:-}" = host ]; then
        run=fleet_in_host
        where=
        listen="$CB_FLEET_NET.$i.1:9127"
    fi
    rm -f "$CB_FLEET_DIR/$name.status" "$CB_FLEET_DIR/$name.pid"
    # each run logs afresh; the runs before keep their logs as cI.log.N
    if [ -f "$CB_FLEET_DIR/$name.log" ]; then
        n=1
        while [ -f "$CB_FLEET_DIR/$name.log.$n" ]; do n=$((n + 1)); done
        mv "$CB_FLEET_DIR/$name.log" "$CB_FLEET_DIR/$name.log.$n"
    fi
    # a subshell waits for the controller and keeps its exit status
    (
        # shellcheck disable=SC2086 # $where is the namespace's number, or nothing
        $run $where "$bin" \
            --server "host=$CB_FLEET_NET.$i.1 port=$CB_FLEET_PGPORT dbname=appdb user=app application_name=api" \
            --admin "host=$CB_FLEET_DIR/b$i port=6432 dbname=pgbouncer user=pgbouncer" \
            --metrics-listen "$listen" "$@" >>"$CB_FLEET_DIR/$name.log" 2>&1 &
        echo $! >"$CB_FLEET_DIR/$name.pid"
        wait $!
        echo $? >"$CB_FLEET_DIR/$name.status"
    ) </dev/null >/dev/null 2>&1 &
    for _ in $(seq 100); do
        [ -s "$CB_FLEET_DIR/$name.pid" ] && return 0
        sleep 0.02
    done
    echo "fleet.sh: controller $name did not start" >&2
    return 1
}

fleet_controller_stop() {
    local i=$1 sig=${2:-TERM} pid name
    fleet_env
    name=$(fleet_controller_name "$i")
    pid=$(cat "$CB_FLEET_DIR/$name.pid" 2>/dev/null) || { echo none; return 0; }
    kill "-$sig" "$pid" 2>/dev/null
    for _ in $(seq 200); do
        [ -s "$CB_FLEET_DIR/$name.status" ] && break
        sleep 0.05
    done
    rm -f "$CB_FLEET_DIR/$name.pid"
    cat "$CB_FLEET_DIR/$name.status" 2>/dev/null || echo running
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -uo pipefail
    : "${CB_FLEET_DIR:?CB_FLEET_DIR is not set}"
    command=$1
    shift
    case $command in
        net-up) fleet_net_up "$@" ;;
        net-down) fleet_net_down ;;
        listen-addresses) fleet_listen_addresses ;;
        bouncer-start) fleet_bouncer_start "$@" ;;
        bouncer-stop) fleet_bouncer_stop "$@" ;;
        controller-start) fleet_controller_start "$@" ;;
        controller-stop) fleet_controller_stop "$@" ;;
        *) echo "fleet.sh: unknown command $command" >&2; exit 2 ;;
    esac
fi
