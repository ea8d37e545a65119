#!/bin/sh
# Installs privreg for the current user, or takes it away again.
#
#   ./install.sh               builds and installs privreg-daemon, privreg and
#                              cargo-credential-privreg (cargo install), creates privreg's config,
#                              pin file and local token (privreg init), runs the daemon as a user
#                              service (systemd on Linux, launchd on macOS; where neither runs, in
#                              the background), checks that it answers, then points cargo at it
#                              (privreg cargo-config --install)
#   ./install.sh --uninstall   stops and removes the service, restores cargo's config (your other
#                              edits kept), and removes the binaries (cargo uninstall)
#   ./install.sh --purge       --uninstall, and also removes privreg's config, cache and tokens
#
# Options:
#   --debug                    build without optimisations (quicker to build)
#   --offline                  build from cargo's local cache only (cargo install --offline)
#   --background               run the daemon in the background even where a user service
#                              manager runs
#   --listen ADDR              `listen` for a new config.toml (default 127.0.0.1:7878)
#   --keyring STORE            the keyring for a new config.toml: auto, secret-service, keyutils
#   --build-cargo-home DIR     build with CARGO_HOME=DIR (its crate cache and config) while still
#                              installing into $CARGO_HOME/bin (tests use it to build offline)
#
# Environment: CARGO_HOME (default ~/.cargo), CARGO_INSTALL_ROOT, CARGO_TARGET_DIR,
# PRIVREG_CONFIG_DIR, PRIVREG_CACHE_DIR. The daemon logs to stderr (the journal under systemd);
# its level is PRIVREG_LOG, in tracing's env-filter syntax (e.g. privreg_daemon=debug).
#
# Safe to run again: files that exist are kept, and a running daemon is restarted only when its
# binary or service file changed.
set -eu

repo=$(cd "$(dirname "$0")" && pwd)

say() { printf 'install.sh: %s\n' "$*"; }
warn() { printf 'install.sh: warning: %s\n' "$*" >&2; }
die() {
    printf 'install.sh: error: %s\n' "$*" >&2
    exit 1
}
summary=
did() {
    summary="$summary
  - $*"
}
nap() { sleep 0.1 2>/dev/null || sleep 1; }

mode=install
debug=
offline=
background=
listen=
keyring=
build_home=
while [ $# -gt 0 ]; do
    case $1 in
    --uninstall) [ "$mode" = purge ] || mode=uninstall ;;
    --purge) mode=purge ;;
    --debug) debug=--debug ;;
    --offline) offline=--offline ;;
    --background) background=1 ;;
    --listen | --keyring | --build-cargo-home)
        [ $# -ge 2 ] || die "$1 needs a value"
        case $1 in
        --listen) listen=$2 ;;
        --keyring) keyring=$2 ;;
        *) build_home=$2 ;;
        esac
        shift
        ;;
    -h | --help)
        sed -n '2,/^set -eu$/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown option $1 (see ./install.sh --help)" ;;
    esac
    shift
done

cargo_home=${CARGO_HOME:-$HOME/.cargo}
root=${CARGO_INSTALL_ROOT:-$cargo_home}
bindir=$root/bin
privreg=$bindir/privreg
daemon=$bindir/privreg-daemon
os=$(uname -s)
unit_file=${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user/privreg.service
socket_file=${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user/privreg.socket
plist_file=$HOME/Library/LaunchAgents/privreg.plist
uid=$(id -u)

# privreg's directories: asked from the installed CLI (it knows the platform's defaults).
find_dirs() {
    if [ -x "$privreg" ]; then
        config_dir=$("$privreg" service dir config)
        cache_dir=$("$privreg" service dir cache)
    elif [ "$os" = Darwin ]; then
        config_dir=${PRIVREG_CONFIG_DIR:-$HOME/Library/Application Support/privreg}
        cache_dir=${PRIVREG_CACHE_DIR:-$HOME/Library/Caches/privreg}
    else
        config_dir=${PRIVREG_CONFIG_DIR:-${XDG_CONFIG_HOME:-$HOME/.config}/privreg}
        cache_dir=${PRIVREG_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/privreg}
    fi
}

checksum() {
    if [ -f "$1" ]; then cksum <"$1"; else echo none; fi
}

# The daemon started in the background (no service manager): pid file and log in the cache dir.
# Sets $pid when it runs.
bg_running() {
    [ -f "$cache_dir/daemon.pid" ] || return 1
    pid=$(cat "$cache_dir/daemon.pid")
    case $pid in '' | *[!0-9]*) return 1 ;; esac
    kill -0 "$pid" 2>/dev/null || return 1
    case $(ps -o stat= -p "$pid" 2>/dev/null) in Z*) return 1 ;; esac
    case $(ps -o comm= -p "$pid" 2>/dev/null) in *privreg-daemon* | *privreg-d*) return 0 ;; esac
    return 1
}

bg_stop() {
    if bg_running; then
        kill "$pid"
        i=0
        while bg_running; do
            i=$((i + 1))
            if [ "$i" -ge 150 ]; then
                kill -9 "$pid" 2>/dev/null || true
                break
            fi
            nap
        done
        did "stopped the background daemon (pid $pid)"
    fi
    rm -f "$cache_dir/daemon.pid"
}

bg_start() {
    (umask 077 && mkdir -p "$cache_dir")
    nohup "$daemon" --config-dir "$config_dir" --cache-dir "$cache_dir" \
        >>"$cache_dir/daemon.log" 2>&1 </dev/null &
    echo "$!" >"$cache_dir/daemon.pid"
    pid=$!
}

service_kind() {
    if [ -n "$background" ]; then
        echo background
    elif [ "$os" = Darwin ] && command -v launchctl >/dev/null 2>&1; then
        echo launchd
    elif [ "$os" = Linux ] && command -v systemctl >/dev/null 2>&1 &&
        systemctl --user show-environment >/dev/null 2>&1; then
        echo systemd
    else
        echo background
    fi
}

# Writes the output of `privreg service KIND` to FILE; returns 0 when the file changed.
write_service_file() {
    mkdir -p "$(dirname "$2")"
    tmp=$(mktemp "$2.XXXXXX")
    case $1 in
    socket) "$privreg" service socket >"$tmp" || { rm -f "$tmp"; die "cannot write $2"; } ;;
    *) "$privreg" service "$1" --daemon "$daemon" >"$tmp" ;;
    esac
    chmod 644 "$tmp"
    if [ -f "$2" ] && cmp -s "$tmp" "$2"; then
        rm -f "$tmp"
        return 1
    fi
    mv "$tmp" "$2"
    did "wrote $2"
    return 0
}

install_systemd() {
    bg_stop
    changed=$bin_changed
    if write_service_file unit "$unit_file"; then changed=1; fi
    if write_service_file socket "$socket_file"; then changed=1; fi
    systemctl --user daemon-reload
    # Units of an earlier install.sh were enabled at login; now the socket starts the daemon.
    systemctl --user disable --quiet privreg.service 2>/dev/null || true
    if [ -n "$changed" ]; then
        systemctl --user stop privreg.service privreg.socket 2>/dev/null || true
    fi
    systemctl --user enable --quiet --now privreg.socket
    systemctl --user start privreg.service
    did "the daemon runs as the systemd user service privreg, started on demand by privreg.socket (log: journalctl --user -u privreg)"
    log_hint="journalctl --user -u privreg"
}

install_launchd() {
    bg_stop
    changed=$bin_changed
    if write_service_file plist "$plist_file"; then changed=1; fi
    if [ -n "$changed" ] || ! launchctl print "gui/$uid/privreg" >/dev/null 2>&1; then
        launchctl bootout "gui/$uid/privreg" 2>/dev/null || true
        launchctl bootstrap "gui/$uid" "$plist_file"
    fi
    did "the daemon runs as the launchd agent privreg, started on demand by launchd on its socket (log: $cache_dir/daemon.log)"
    log_hint="$cache_dir/daemon.log"
}

install_background() {
    log_hint="$cache_dir/daemon.log"
    if bg_running && [ -z "$bin_changed" ]; then
        did "kept the daemon running in the background (pid $pid)"
    else
        bg_stop
        bg_start
        did "started the daemon in the background (pid $pid, log $cache_dir/daemon.log)"
    fi
    say "no user service manager answers here (systemctl --user / launchctl), as in containers and CI:"
    say "  the daemon runs in the background until it is stopped or the machine restarts."
    say "  To make it permanent, run ./install.sh where a user service manager runs, or start it"
    say "  at login, e.g. with this line in ~/.profile:"
    say "  [ -s '$cache_dir/daemon.pid' ] && kill -0 \"\$(cat '$cache_dir/daemon.pid')\" 2>/dev/null || (nohup '$daemon' >>'$cache_dir/daemon.log' 2>&1 </dev/null & echo \$! >'$cache_dir/daemon.pid')"
}

# Whether the user's cargo config sends crates-io through privreg (what `privreg cargo-config
# --install` writes).
cargo_through_privreg() {
    grep -qs '^[[:space:]]*replace-with[[:space:]]*=[[:space:]]*"privreg"' \
        "$cargo_home/config.toml" "$cargo_home/config"
}

# Whether a privreg daemon answers now; bounded, and false when privreg is not installed or its
# config is broken.
daemon_answers() {
    [ -x "$privreg" ] && "$privreg" service wait --timeout 3 >/dev/null 2>&1
}

# Repair never depends on the thing being repaired: when cargo would fetch privreg's own
# dependencies through a daemon that does not answer (stopped, crashed, misconfigured), cargo
# would retry that dead address for minutes. Then build with a private CARGO_HOME that has the
# user's crate caches (symlinked) but not privreg's source replacement, so cargo goes to
# crates-io directly (or, with --offline, uses its cache).
bypass_home=
build_around_a_dead_daemon() {
    [ -z "$build_home" ] || return 0
    cargo_through_privreg || return 0
    ! daemon_answers || return 0
    bypass_home=$(mktemp -d "${TMPDIR:-/tmp}/privreg-install-cargo-home.XXXXXX")
    for d in registry git; do
        mkdir -p "$cargo_home/$d"
        ln -s "$cargo_home/$d" "$bypass_home/$d"
    done
    build_home=$bypass_home
    warn "cargo sends crates-io through privreg, but no daemon answers; building privreg around it (straight from crates-io, with your crate caches)"
    did "built around the daemon that did not answer (cargo's config was kept)"
}

do_install() {
    command -v cargo >/dev/null 2>&1 || die "cargo is not on PATH; install Rust first"
    build_around_a_dead_daemon
    trap 'if [ -n "$bypass_home" ]; then rm -rf "$bypass_home"; fi' EXIT
    before=$(checksum "$daemon")
    for pkg in privreg-daemon privreg-cli cargo-credential-privreg; do
        say "building and installing $pkg (cargo install${debug:+ $debug})"
        if [ -n "$build_home" ]; then
            CARGO_HOME=$build_home cargo install --locked --force --quiet ${debug:+"$debug"} \
                ${offline:+"$offline"} --root "$root" --path "$repo/$pkg"
        else
            cargo install --locked --force --quiet ${debug:+"$debug"} ${offline:+"$offline"} \
                --root "$root" --path "$repo/$pkg"
        fi
    done
    bin_changed=
    [ "$before" = "$(checksum "$daemon")" ] || bin_changed=1
    did "installed privreg, privreg-daemon and cargo-credential-privreg in $bindir"

    find_dirs
    "$privreg" init ${listen:+--listen "$listen"} ${keyring:+--keyring "$keyring"}
    did "privreg init: config in $config_dir (existing files and tokens kept)"

    case $(service_kind) in
    systemd) install_systemd ;;
    launchd) install_launchd ;;
    *) install_background ;;
    esac

    if ! "$privreg" service wait --timeout 30; then
        die "the daemon does not answer (log: $log_hint); cargo's configuration was left alone"
    fi
    "$privreg" cargo-config --install
    did "cargo's config ($cargo_home) sends crates-io through privreg (undo: ./install.sh --uninstall)"

    case ":$PATH:" in
    *":$bindir:"*) ;;
    *) warn "$bindir is not on PATH; cargo runs cargo-credential-privreg from PATH, so add it: export PATH=\"$bindir:\$PATH\"" ;;
    esac
    say "done:$summary"
    say "check the setup any time with: privreg doctor"
}

# Removes a directory privreg owns, refusing paths that cannot be privreg's.
remove_dir() {
    case $1 in
    '' | / | "$HOME" | "$HOME/") warn "not removing $1" ;;
    *)
        if [ -e "$1" ]; then
            rm -rf "$1"
            did "removed $1"
        fi
        ;;
    esac
}

do_uninstall() {
    find_dirs
    if [ -f "$unit_file" ] || [ -f "$socket_file" ]; then
        systemctl --user disable --now privreg.socket privreg.service 2>/dev/null || true
        rm -f "$unit_file" "$socket_file"
        systemctl --user daemon-reload 2>/dev/null || true
        did "stopped and removed the systemd user service ($unit_file)"
    fi
    if [ -f "$plist_file" ]; then
        launchctl bootout "gui/$uid/privreg" 2>/dev/null || true
        rm -f "$plist_file"
        did "stopped and removed the launchd agent ($plist_file)"
    fi
    bg_stop

    if [ -x "$privreg" ]; then
        "$privreg" cargo-config --uninstall
        did "restored cargo's config in $cargo_home"
        if [ "$mode" = purge ]; then
            "$privreg" purge-tokens || warn "some tokens may remain in the keyring"
        fi
    else
        warn "$privreg is not installed, so cargo's config and the keyring were left as they are"
    fi
    if [ "$mode" = purge ]; then
        remove_dir "$config_dir"
        remove_dir "$cache_dir"
    fi

    for pkg in privreg-daemon privreg-cli cargo-credential-privreg; do
        case $pkg in
        privreg-daemon) bin=$daemon ;;
        privreg-cli) bin=$privreg ;;
        *) bin=$bindir/$pkg ;;
        esac
        if [ -e "$bin" ]; then
            cargo uninstall --quiet --root "$root" "$pkg"
            did "cargo uninstall $pkg"
        fi
    done
    say "done:${summary:- nothing was installed}"
}

case $mode in
install) do_install ;;
*) do_uninstall ;;
esac
