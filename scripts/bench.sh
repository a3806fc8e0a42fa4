#!/usr/bin/env bash
# athena beside HF transformers on one random checkpoint with OLMoE-1B-7B layer shapes
# (4 layers), in one sitting. Prints one JSON line per engine and dtype.
# usage: scripts/bench.sh [MODEL_DIR] [PROMPT] [DECODE]
#   PYTHON: a Python with torch + transformers + mlx (scripts/requirements-fixtures.txt)
#   ANCHORS: the anchors directory (default ../shared/anchors)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-$HOME/.cache/athena/olmoe-layers4}
P=${2:-128}
D=${3:-32}
PY=${PYTHON:-python3}
ANCHORS=${ANCHORS:-../shared/anchors}
if [ ! -f "$MODEL/config.json" ]; then
  "$PY" "$ANCHORS/make_olmoe.py" "$MODEL" --preset layers4
fi
cargo build --release --bin athena >&2
BIN=${CARGO_TARGET_DIR:-target}/release/athena
"$BIN" bench --model "$MODEL" --prompt-tokens "$P" --gen-tokens "$D" --dtype f32 --json
# candle's CPU matmul in bf16 runs a slow generic kernel: a short run shows its order of magnitude.
"$BIN" bench --model "$MODEL" --prompt-tokens 8 --gen-tokens 4 --dtype bf16 --json
for q in 8bit 4bit; do
  "$BIN" bench --model "$MODEL" --prompt-tokens "$P" --gen-tokens "$D" --quantization "$q" --json
done
for dt in float32 bfloat16; do
  "$PY" "$ANCHORS/anchor_hf.py" "$MODEL" "$P" "$D" "$dt"
done
