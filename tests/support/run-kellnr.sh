#!/bin/sh
# Start the cached Kellnr binary in the foreground (exec), configured only
# through KELLNR_* environment variables, for privreg's integration tests.
#
# Usage: tests/support/run-kellnr.sh DATA_DIR PORT ADMIN_TOKEN [AUTH_REQUIRED]
#   DATA_DIR       all Kellnr state goes here (sqlite db, crate files);
#                  created if missing. Use a fresh temp dir per test run:
#                  ADMIN_TOKEN is only applied when the db is first created.
#   PORT           listens on 127.0.0.1:PORT (origin http://127.0.0.1:PORT)
#   ADMIN_TOKEN    cargo token of the built-in "admin" user (also used as
#                  the admin's web/basic-auth password)
#   AUTH_REQUIRED  true|false (default false): require a token for index,
#                  config.json and downloads too
#
# Sparse index: sparse+http://127.0.0.1:PORT/api/v1/crates/
# Build the binary first with tests/support/build-kellnr.sh. The binary can
# be overridden with KELLNR_BIN. Extra KELLNR_* variables in the caller's
# environment (e.g. KELLNR_LOG__LEVEL=debug) are passed through unless set
# below. See tests/support/KELLNR.md.
set -eu

if [ $# -lt 3 ] || [ $# -gt 4 ]; then
    echo "usage: $0 DATA_DIR PORT ADMIN_TOKEN [auth-required:true|false]" >&2
    exit 2
fi
DATA_DIR=$1
PORT=$2
ADMIN_TOKEN=$3
AUTH_REQUIRED=${4:-false}

case $AUTH_REQUIRED in
    true|false) ;;
    *) echo "run-kellnr: auth-required must be true or false, got '$AUTH_REQUIRED'" >&2; exit 2 ;;
esac
case $PORT in
    ''|*[!0-9]*) echo "run-kellnr: bad port '$PORT'" >&2; exit 2 ;;
esac
if [ -z "$ADMIN_TOKEN" ]; then
    echo "run-kellnr: ADMIN_TOKEN must not be empty" >&2
    exit 2
fi

BIN=${KELLNR_BIN:-${PRIVREG_TEST_CACHE:-$HOME/.cache/privreg-tests}/kellnr-6.13.0/bin/kellnr}
if [ ! -x "$BIN" ]; then
    echo "run-kellnr: $BIN not found; run tests/support/build-kellnr.sh first" >&2
    exit 1
fi

mkdir -p "$DATA_DIR"
DATA_DIR=$(cd "$DATA_DIR" && pwd)

# Never read a config file from the environment; everything is set here.
unset KELLNR_CONFIG_FILE

export KELLNR_REGISTRY__DATA_DIR="$DATA_DIR"
export KELLNR_LOCAL__IP=127.0.0.1
export KELLNR_LOCAL__PORT="$PORT"
# origin.* builds the "dl"/"api" URLs in config.json; origin.port does NOT
# follow local.port, so both must be set.
export KELLNR_ORIGIN__HOSTNAME=127.0.0.1
export KELLNR_ORIGIN__PORT="$PORT"
export KELLNR_ORIGIN__PROTOCOL=http
unset KELLNR_ORIGIN__PATH
export KELLNR_SETUP__ADMIN_TOKEN="$ADMIN_TOKEN"
export KELLNR_SETUP__ADMIN_PWD="$ADMIN_TOKEN"
export KELLNR_REGISTRY__AUTH_REQUIRED="$AUTH_REQUIRED"
# No proxying of the public registry, no rustdoc builds, no toolchain hosting, no SSO,
# sqlite + local files only.
export KELLNR_PROXY__ENABLED=false
export KELLNR_DOCS__ENABLED=false
export KELLNR_TOOLCHAIN__ENABLED=false
export KELLNR_OAUTH2__ENABLED=false
export KELLNR_POSTGRESQL__ENABLED=false
export KELLNR_S3__ENABLED=false
export KELLNR_GCS__ENABLED=false
export KELLNR_REGISTRY__SPONSOR_LINKS_ENABLED=false
export KELLNR_LOG__LEVEL="${KELLNR_LOG__LEVEL:-info}"
# tracing writes ANSI colour codes even to pipes unless NO_COLOR is set.
export NO_COLOR="${NO_COLOR:-1}"

exec "$BIN" start
