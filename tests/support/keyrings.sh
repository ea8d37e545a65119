#!/bin/sh
# Runs a command with a real OS keyring that is private to the run.
#
#   keyrings.sh keyutils -- CMD [ARG...]
#       CMD runs under `keyctl session -`: a new anonymous kernel session keyring (keyutils).
#       Note: the keyring crate also links the keys it stores into the per-user persistent
#       keyring, which outlives the run; tests delete what they store.
#
#   keyrings.sh secret-service -- CMD [ARG...]
#       CMD runs inside `dbus-run-session` (a private session bus) with gnome-keyring-daemon
#       serving org.freedesktop.secrets from a temporary data directory, its login keyring
#       created and unlocked with a throwaway password. The daemon is stopped afterwards.
#
# The exit status is CMD's. For each mode, PRIVREG_TEST_KEYRING is exported with the mode's
# name so that privreg's tests know which store to configure.
#
# Debian packages: keyutils (keyutils mode); dbus-daemon, dbus-bin, gnome-keyring
# (secret-service mode); libsecret-tools for `secret-tool`, which the tests use to check entries.
set -eu

usage() {
    echo "usage: keyrings.sh keyutils|secret-service -- CMD [ARG...]" >&2
    exit 2
}

[ $# -ge 1 ] || usage
mode=$1
shift
if [ "${1:-}" = "--" ]; then
    shift
fi

case $mode in
keyutils)
    [ $# -ge 1 ] || usage
    command -v keyctl >/dev/null || { echo "keyrings.sh: keyctl not found (install keyutils)" >&2; exit 127; }
    PRIVREG_TEST_KEYRING=keyutils
    export PRIVREG_TEST_KEYRING
    exec keyctl session - "$@"
    ;;
secret-service)
    [ $# -ge 1 ] || usage
    for tool in dbus-run-session dbus-send gnome-keyring-daemon; do
        command -v "$tool" >/dev/null || {
            echo "keyrings.sh: $tool not found (install dbus-daemon, dbus-bin and gnome-keyring)" >&2
            exit 127
        }
    done
    # A private session bus; this script runs again inside it.
    exec dbus-run-session -- sh "$0" __inside-bus "$@"
    ;;
__inside-bus)
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/privreg-keyring.XXXXXX")
    mkdir -m 700 "$tmp/data" "$tmp/run"
    daemon_pid=
    cleanup() {
        if [ -n "$daemon_pid" ]; then
            kill "$daemon_pid" 2>/dev/null || true
            wait "$daemon_pid" 2>/dev/null || true
        fi
        rm -rf "$tmp"
    }
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    # `--unlock` reads the login keyring's password from stdin and creates the keyring when it
    # does not exist yet, unlocked for the whole run. (An empty password does not work: the
    # daemon then tries to prompt on a display.)
    printf 'privreg-test' | XDG_DATA_HOME="$tmp/data" XDG_RUNTIME_DIR="$tmp/run" \
        gnome-keyring-daemon --foreground --unlock --components=secrets \
        --control-directory="$tmp/run/keyring" >"$tmp/daemon.log" 2>&1 &
    daemon_pid=$!

    # Wait until the Secret Service name is owned on the bus.
    tries=0
    until dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
        org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null |
        grep -q 'boolean true'; do
        tries=$((tries + 1))
        if [ "$tries" -ge 200 ] || ! kill -0 "$daemon_pid" 2>/dev/null; then
            echo "keyrings.sh: gnome-keyring-daemon did not serve org.freedesktop.secrets:" >&2
            cat "$tmp/daemon.log" >&2
            exit 1
        fi
        sleep 0.05
    done

    PRIVREG_TEST_KEYRING=secret-service
    export PRIVREG_TEST_KEYRING
    status=0
    "$@" || status=$?
    exit "$status"
    ;;
*)
    usage
    ;;
esac
