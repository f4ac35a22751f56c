# shellcheck shell=bash
# tap.sh -- TAP for the shell tests: source it, then
#
#   ok STATUS DESCRIPTION     "ok N - ..." if STATUS is 0, else "not ok N - ..."
#   check COMMAND [ARGS...]   the command's exit status, its output dropped
#
# $n counts the checks and $failures the failed ones; the test ends with
# [ "$failures" = 0 ] (and a plan line "1..$n" where it prints one).
n=0
failures=0

ok() {
    n=$((n + 1))
    if [ "$1" = 0 ]; then
        echo "ok $n - $2"
    else
        echo "not ok $n - $2"
        failures=$((failures + 1))
    fi
}

check() { "$@" >/dev/null 2>&1; echo $?; }
