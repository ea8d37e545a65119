#!/bin/sh
# Runs privreg's whole test suite on a fresh Debian machine with the Rust toolchain:
#   1. installs the Debian packages the tests use (real keyrings, a session bus, nginx for the
#      benchmark, Chromium for the status page),
#      and moto's S3 server from the Python package index (the shared cache tier's tests),
#   2. builds Kellnr once (a real registry server used as an upstream; cached, ~12 min cold),
#   3. checks install.sh with shellcheck, runs the benchmark and its CI-fleet scenario in their
#      quick modes and the 60 s soak,
#   4. runs every test under a real kernel keyring session (keyutils), then the tests that use
#      the OS keyring again under a real Secret Service (gnome-keyring on a private D-Bus),
#   5. runs each cargo fuzz target for 15 s (tests/support/fuzz.sh; cargo-fuzz installed once).
# All network traffic of the tests stays on 127.0.0.1.
#
# Environment: PRIVREG_SKIP_APT=1 skips step 1 (when the packages are known to be there).
set -eu
cd "$(dirname "$0")/.."

PACKAGES="keyutils dbus-daemon dbus-bin gnome-keyring libsecret-tools shellcheck systemd nginx-light chromium fonts-dejavu-core"

if [ "${PRIVREG_SKIP_APT:-0}" != 1 ]; then
    missing=
    for p in $PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        if [ "$(id -u)" = 0 ]; then
            sudo=
        elif command -v sudo >/dev/null 2>&1; then
            sudo=sudo
        else
            echo "tests/run.sh: please install:$missing" >&2
            exit 1
        fi
        echo "tests/run.sh: installing$missing" >&2
        $sudo apt-get update -qq
        # shellcheck disable=SC2086 # word splitting of the package list is intended
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >&2
    fi
fi

# The shared cache tier's tests (tests/tests/shared_tier.rs) and the benchmark's `--fleet` run
# against moto's S3 server, a real S3-compatible server from the Python package index.
# PRIVREG_PYTHON picks the interpreter.
python=${PRIVREG_PYTHON:-python3}
if ! "$python" -c 'import moto.server' 2>/dev/null; then
    echo "tests/run.sh: installing moto[server] for $python" >&2
    "$python" -m pip install --quiet 'moto[server]>=5' >&2 ||
        "$python" -m pip install --quiet --user --break-system-packages 'moto[server]>=5' >&2 || true
    if ! "$python" -c 'import moto.server' 2>/dev/null; then
        echo "tests/run.sh: cannot install moto[server] for $python; install it (pip install 'moto[server]') or set PRIVREG_PYTHON" >&2
        exit 1
    fi
fi

PRIVREG_KELLNR_BIN=$(tests/support/build-kellnr.sh)
export PRIVREG_KELLNR_BIN

cargo build --locked --workspace --bins
shellcheck install.sh
# The benchmark, briefly (smallest settings, a synthetic registry, no assertions on time), so that
# it cannot rot; `cargo run --release -p privreg-bench` measures for real (BENCHMARKS.md).
# `--require-nginx`: the static-server comparison is part of the run, so a missing nginx fails it.
cargo run --locked -p privreg-bench -- --quick --require-nginx
# Growth (issue 16) at its smallest size: 1,000 distinct index files, RSS, latency, start time and
# privreg gc; no assertions on time (BENCHMARKS.md has the release figures up to 20,000).
cargo run --locked -p privreg-bench -- --growth 1000
# The CI-fleet scenario of the shared tier (issue 18), smallest: 2 daemons on moto's S3 server
# (installed above; a missing moto fails it) and without, synthetic registry (under a minute).
cargo run --locked -p privreg-bench -- --fleet 2 --quick
# Load (issue 8): 64 connections for 60 s of cached index files, missing crates and downloads;
# fails on any error, on open files that grow, or on RSS past 1.2x its level after warm-up.
cargo run --locked -p privreg-bench -- --soak 60

log=$(mktemp)
trap 'rm -f "$log" "$log.rc" "$log.summary"' EXIT
status=0
# Runs a command with its output shown and kept for the summary; remembers a failure.
run() {
    # `|| rc=$?`: under `set -e` a failing command would otherwise end the group before its
    # status is written, leaving the previous run's 0 in place.
    { rc=0; "$@" 2>&1 || rc=$?; echo "$rc" >"$log.rc"; } | tee -a "$log"
    [ "$(cat "$log.rc")" = 0 ] || status=1
}
run tests/support/keyrings.sh secret-service -- cargo test --locked -p privreg-tests --test credential --test auth --test cli
run tests/support/keyrings.sh keyutils -- cargo test --locked --workspace --no-fail-fast
# Every cargo fuzz target briefly (tests/support/fuzz.sh 600 is the long run).
run tests/support/fuzz.sh
# Cargo's `test result:` lines count ignored tests separately; they were not run, so they are
# reported as skipped, never as passed (tests that need something missing fail instead, saying
# what to install). CI expects 0 skipped.
awk '/^test result:/ {
         for (i = 1; i <= NF; i++) {
             if ($(i+1) ~ /^passed/) p += $i
             if ($(i+1) ~ /^failed/) f += $i
             if ($(i+1) ~ /^ignored/) s += $i
         }
     }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log" >"$log.summary"
cat "$log.summary"
skipped=$(sed -n 's/.* \([0-9][0-9]*\) skipped$/\1/p' "$log.summary")
if [ -n "${CI:-}" ] && [ "${skipped:-0}" != 0 ]; then
    echo "tests/run.sh: $skipped tests skipped; on CI every test runs" >&2
    status=1
fi
exit $status
