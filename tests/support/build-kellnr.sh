#!/bin/sh
# Build Kellnr (an upstream cargo registry used by privreg's integration
# tests) once and cache the binary.
#
# Usage: tests/support/build-kellnr.sh
#   Prints the path of the kellnr binary on stdout (build output goes to
#   stderr). Idempotent: if the binary is already cached it only prints it.
#
# Cache: ${PRIVREG_TEST_CACHE:-$HOME/.cache/privreg-tests}/kellnr-6.13.0/bin/kellnr
#
# Needs: the Rust toolchain (cargo), network access to the crates registry,
# and these Debian packages for the C parts (OpenSSL is built vendored, so
# libssl-dev and pkg-config are NOT needed):
#   build-essential (gcc, make)   perl
# The script does not install them. Takes 12-18 minutes on 2 cores.
set -eu

KELLNR_VERSION=6.13.0
CACHE_DIR=${PRIVREG_TEST_CACHE:-$HOME/.cache/privreg-tests}
PREFIX=$CACHE_DIR/kellnr-$KELLNR_VERSION
BIN=$PREFIX/bin/kellnr

if [ -x "$BIN" ]; then
    echo "$BIN"
    exit 0
fi

command -v cargo >/dev/null 2>&1 || { echo "build-kellnr: cargo not found" >&2; exit 1; }

# Kellnr bakes these into the binary via option_env!; keep the build hermetic.
unset KELLNR_COMPTIME__DATA_DIR KELLNR_COMPTIME__CONFIG_FILE

WORK=$(mktemp -d "${TMPDIR:-/tmp}/privreg-kellnr-build.XXXXXX")
cleanup() { rm -rf "$WORK" "$PREFIX.partial"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. Get the published kellnr source through cargo itself: a throwaway
#    project depending on it, then `cargo fetch` unpacks the .crate into
#    $CARGO_HOME/registry/src/<registry>/kellnr-<version>.
mkdir -p "$WORK/fetch/src"
cat > "$WORK/fetch/Cargo.toml" <<TOML
[package]
name = "privreg-kellnr-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
kellnr = "=$KELLNR_VERSION"

[workspace]
TOML
: > "$WORK/fetch/src/lib.rs"
(cd "$WORK/fetch" && cargo fetch) >&2

CARGO_HOME_DIR=${CARGO_HOME:-$HOME/.cargo}
SRC=
for d in "$CARGO_HOME_DIR"/registry/src/*/kellnr-"$KELLNR_VERSION"; do
    if [ -f "$d/Cargo.toml" ] && [ -f "$d/Cargo.lock" ]; then
        SRC=$d
        break
    fi
done
if [ -z "$SRC" ]; then
    echo "build-kellnr: unpacked kellnr-$KELLNR_VERSION not found under $CARGO_HOME_DIR/registry/src" >&2
    exit 1
fi

cp -R "$SRC" "$WORK/kellnr"
chmod -R u+w "$WORK/kellnr"
rm -f "$WORK/kellnr/.cargo-ok"

# 2. Pin webpki-roots back to 1.0.10 (per the design doc), then build with
#    the shipped lock file into a scratch target dir.
cd "$WORK/kellnr"
cargo update -p webpki-roots@1.0.11 --precise 1.0.10 >&2

rm -rf "$PREFIX.partial"
mkdir -p "$CACHE_DIR"
CARGO_TARGET_DIR=$WORK/target cargo install --locked --path . --root "$PREFIX.partial" >&2

# 3. Move into place only once complete, so an interrupted build never
#    leaves a half-written binary at the cached path.
rm -rf "$PREFIX"
mv "$PREFIX.partial" "$PREFIX"
echo "$BIN"
