#!/usr/bin/env bash
# Property-based tests of `athena serve` against its own OpenAPI description, with schemathesis:
# no 5xx, and every answer's status, content type and body as /openapi.json describes them.
#
#   scripts/schemathesis.sh [--short] [--seed N]
#
# --short: a few examples per operation (CI); without it, many. Both run the examples, the
# coverage phase's boundary and negative cases, and fuzzing. Builds `athena` (in the test
# profile, as `cargo test` does, unless ATHENA_BIN names a binary), serves fixtures/models/base with an API key on a
# free loopback port (with a memory bank in a temporary SQLite file), and runs schemathesis from
# a pinned venv of its own.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_PIN="4.32.5"
VENV="$HOME/.cache/athena/venv-schemathesis"
EXAMPLES=100
PHASES="examples,coverage,fuzzing"
SEED=""
while [ $# -gt 0 ]; do
    case "$1" in
        --short) EXAMPLES=8 ;;
        --seed) SEED="$2"; shift ;;
        *) echo "usage: $0 [--short] [--seed N]" >&2; exit 2 ;;
    esac
    shift
done

if ! "$VENV/bin/python" -c "import schemathesis, sys; sys.exit(schemathesis.__version__ != '$SCHEMATHESIS_PIN')" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_PIN"
fi

if [ -z "${ATHENA_BIN:-}" ]; then
    cargo build --profile test --locked -p athena-cli --bin athena
    ATHENA_BIN="${CARGO_TARGET_DIR:-target}/debug/athena"
fi

KEY="sk-schemathesis-$$"
WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# The server logs to a file (shown on failure); its first stdout line gives the address.
RUST_LOG="${RUST_LOG:-error}" ATHENA_API_KEY="$KEY" "$ATHENA_BIN" serve --model fixtures/models/base --use-mlx false \
    --port 0 --memory-db "$WORK/memory.db" >"$WORK/stdout" 2>"$WORK/server.log" &
SERVER_PID=$!
for _ in $(seq 1 600); do
    grep -q "listening on" "$WORK/stdout" 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
    sleep 0.1
done
URL="$(grep -o 'http://[^ /]*' "$WORK/stdout" | head -n1)"
[ -n "$URL" ] || { echo "the server printed no address" >&2; cat "$WORK/server.log" >&2; exit 1; }

ARGS=(
    run "$URL/openapi.json" --url "$URL"
    --header "Authorization: Bearer $KEY"
    --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance
    --max-examples "$EXAMPLES"
    --phases "$PHASES"
    # One worker: CPython 3.11's ast module keeps its recursion depth per interpreter, not per
    # thread, so two threads of hypothesis describing strategies at once can fail with "AST
    # constructor recursion depth mismatch" (python/cpython#106905), an error of the tool.
    --workers 1
    --request-timeout 60
    --suppress-health-check too_slow,filter_too_much,data_too_large
    --no-color
)
[ -n "$SEED" ] && ARGS+=(--seed "$SEED")
status=0
"$VENV/bin/schemathesis" "${ARGS[@]}" 2>&1 | tee "$WORK/run.log" || status=$?
if [ "$status" -ne 0 ]; then
    echo "---- server log (last 50 lines) ----" >&2
    tail -n 50 "$WORK/server.log" >&2
fi
exit "$status"
