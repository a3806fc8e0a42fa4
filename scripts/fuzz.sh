#!/usr/bin/env bash
# Builds every fuzz target (fuzz/, cargo fuzz with nightly) and runs each for SECONDS
# (default 30), then prints the executions per target. New inputs go to a working corpus
# beside the build; the committed seeds (fuzz/corpus/TARGET/seed-*) are only read. A crash
# stops the script with the target's name; its input is in fuzz/artifacts/TARGET/.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# The build goes to $ATHENA_FUZZ_TARGET_DIR (default ~/.cache/athena/fuzz-target), outside the
# clone. Rust's memory safety leaves panics, aborts, timeouts and unbounded memory to find,
# so the targets build without a sanitizer, with debug assertions (overflow checks) on.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_EACH="${1:-30}"
shift || true
export CARGO_TARGET_DIR="${ATHENA_FUZZ_TARGET_DIR:-$HOME/.cache/athena/fuzz-target}"
mkdir -p "$CARGO_TARGET_DIR"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
FLAGS=(--sanitizer none --release --debug-assertions)
if [ "$#" -gt 0 ]; then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build "${FLAGS[@]}"
WORK="$CARGO_TARGET_DIR/athena-fuzz-corpus"
SUMMARY=()
for t in "${TARGETS[@]}"; do
    mkdir -p "$WORK/$t" "artifacts/$t"
    log="$WORK/$t.log"
    # -rss_limit_mb: a parser that asks for gigabytes is a finding; -timeout: so is one input
    # that takes seconds.
    if ! cargo +nightly fuzz run "${FLAGS[@]}" "$t" "$WORK/$t" "corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
        -print_final_stats=1 >"$log" 2>&1; then
        # What stopped it (a panic's message, libFuzzer's verdict), then the last lines, without
        # the debug dump of the input (it is in the artifact).
        grep -E -A4 "panicked at|==[0-9]+== ERROR|out-of-memory|timeout after|deadly signal|terminate called" \
            "$log" | cut -c1-400 | head -n 40 || true
        grep -vE '^\s*\[[0-9]' "$log" | cut -c1-400 | tail -n 30
        echo "fuzz target $t failed; its input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
    SUMMARY+=("$(printf '%-22s %12s executions in %ss' "$t" "$runs" "$SECONDS_EACH")")
done
printf '%s\n' "${SUMMARY[@]}"
