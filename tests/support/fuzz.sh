#!/bin/sh
# Runs every cargo-fuzz target in fuzz/ (the pin-file parser, the config.toml loader, index lines
# and the layering merge, request paths) for SECONDS_PER_TARGET seconds each, one after the other.
#
#   tests/support/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 15: a short run, as CI does, that replays the seeds and the kept
# corpus and tries a little more. The long mode is the same script with more time, e.g.
#
#   nice -n 19 tests/support/fuzz.sh 600              # 10 minutes per target, all targets
#   nice -n 19 tests/support/fuzz.sh 600 index_merge  # one target
#
# Each target reads fuzz/seeds/TARGET (committed, small, hand-written) and fuzz/corpus/TARGET (the
# working corpus: what libFuzzer found interesting, not committed); new inputs go to the latter.
# On a crash, a panic, a timeout or running out of memory the script goes on with the other
# targets, then names every failed target with the input that failed it (under fuzz/artifacts/)
# and exits 1. Reproduce one with `RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET ARTIFACT`.
#
# Installs cargo-fuzz (from the registry, `cargo install --locked`) if it is missing. Only the
# stable toolchain is needed: RUSTC_BOOTSTRAP=1 lets it take the nightly flags cargo-fuzz passes.
# Targets are built with AddressSanitizer (cargo-fuzz's default); PRIVREG_FUZZ_SANITIZER=none
# builds without it (faster, only panics and aborts are found then).
set -eu
cd "$(dirname "$0")/../.."

seconds=${1:-15}
case $seconds in
    '' | *[!0-9]*)
        echo "tests/support/fuzz.sh: SECONDS_PER_TARGET must be a whole number, not \"$seconds\"" >&2
        exit 2
        ;;
esac
[ "$#" -gt 0 ] && shift
sanitizer=${PRIVREG_FUZZ_SANITIZER:-address}

RUSTC_BOOTSTRAP=1
export RUSTC_BOOTSTRAP

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "tests/support/fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=$*
else
    targets=$(cargo fuzz list)
fi

cargo fuzz build --sanitizer "$sanitizer"

log=$(mktemp)
trap 'rm -f "$log" "$log.rc"' EXIT
failed=
for t in $targets; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    echo "tests/support/fuzz.sh: fuzzing $t for ${seconds}s" >&2
    # -timeout: one input that takes this long is a failure (a hang), not slowness.
    # The status goes through a file (a pipeline's is tee's); `|| rc=$?` keeps `set -e` from
    # ending the group before it is written.
    { rc=0
      cargo fuzz run --sanitizer "$sanitizer" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
          -max_total_time="$seconds" -timeout=30 -print_final_stats=1 2>&1 || rc=$?
      echo "$rc" >"$log.rc"; } | tee "$log"
    rc=$(cat "$log.rc")
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    last=$(grep -E '^#[0-9]+[[:space:]].*cov: ' "$log" | tail -n 1 |
        sed 's/^#[0-9]*[[:space:]]*[A-Z]*[[:space:]]*//')
    if [ "$rc" = 0 ]; then
        echo "tests/support/fuzz.sh: $t: no crash in ${seconds}s, ${runs:-?} runs, $last" >&2
    else
        artifact=$(sed -n 's/.*Test unit written to \([^ ]*\).*/\1/p' "$log" | tail -n 1)
        echo "tests/support/fuzz.sh: $t FAILED (exit $rc); input: ${artifact:-see the output above}" >&2
        failed="$failed $t:${artifact:-?}"
    fi
done

if [ -n "$failed" ]; then
    echo "tests/support/fuzz.sh: failed targets (target:input):$failed" >&2
    echo "tests/support/fuzz.sh: reproduce with RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET INPUT" >&2
    exit 1
fi
echo "tests/support/fuzz.sh: every target ran ${seconds}s without a crash" >&2
