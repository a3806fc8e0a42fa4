#!/usr/bin/env bash
# A throwaway PostgreSQL 15 server for the memory bank's tests.
#
#   eval "$(scripts/pg-test-server.sh start)"   # prints `export ATHENA_TEST_PG_URL=...`
#   scripts/pg-test-server.sh stop
#
# The cluster lives in a temporary folder (initdb + pg_ctl), listens on 127.0.0.1 only, and
# trusts local connections. PostgreSQL refuses to run as root, so when run as root the
# server runs as the `postgres` user (runuser). PG_TEST_PORT picks the port (default 54329);
# the folder's path is kept in PG_TEST_STATE (default /tmp/athena-pg-test.state) for `stop`.
set -euo pipefail

PORT="${PG_TEST_PORT:-54329}"
STATE="${PG_TEST_STATE:-/tmp/athena-pg-test.state}"
BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"

as_server_user() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

install_if_missing() {
    if [ -x "$BIN/initdb" ]; then
        return
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "pg-test-server: installing postgresql-15" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >&2
    fi
    [ -x "$BIN/initdb" ] || { echo "pg-test-server: no initdb in $BIN" >&2; exit 1; }
}

case "${1:-}" in
start)
    install_if_missing
    if [ -f "$STATE" ]; then
        "$0" stop >&2 || true
    fi
    DIR="$(mktemp -d /tmp/athena-pg-test.XXXXXX)"
    chmod 755 "$DIR"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$DIR"
    fi
    echo "$DIR" >"$STATE"
    as_server_user "$BIN/initdb" -D "$DIR/data" -U postgres -A trust --no-sync -E UTF8 \
        >"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; exit 1; }
    as_server_user "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
        -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" \
        start >&2 || { cat "$DIR/server.log" >&2; exit 1; }
    echo "export ATHENA_TEST_PG_URL=postgres://postgres@127.0.0.1:$PORT/postgres"
    ;;
stop)
    [ -f "$STATE" ] || exit 0
    DIR="$(cat "$STATE")"
    if [ -d "$DIR/data" ]; then
        as_server_user "$BIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >&2 || true
    fi
    rm -rf "$DIR" "$STATE"
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
