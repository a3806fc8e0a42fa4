#!/usr/bin/env bash
# On a CUDA machine: the fixtures' parity on the GPU, then athena beside HF transformers on a
# random checkpoint with OLMoE-1B-7B's full shapes in bf16: prefill of 512 tokens, decode at
# batch 1, and batched decode at 16 and 64 sequences; then `athena serve` on the GPU (its
# default --max-concurrency, from the memory left for KV caches) under scripts/loadtest.py at
# 1, 64 and 256 concurrent streams of 64 tokens (aggregate tok/s, time to first token p50/p99).
# One JSON line per measurement.
# usage: scripts/cuda_bench.sh ATHENA_BIN [ANCHOR_HF]   (ANCHOR_HF: ../shared/anchors/anchor_hf.py)
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${1:?usage: cuda_bench.sh ATHENA_BIN [ANCHOR_HF]}
ANCHOR=${2:-../shared/anchors/anchor_hf.py}
MODEL=${MODEL:-/tmp/olmoe-full}
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$PY" -c 'import torch, transformers, json; print(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__}))'
"$PY" scripts/device_parity.py "$BIN" --device cuda
if [ ! -f "$MODEL/config.json" ]; then
  "$PY" scripts/make_random_olmoe.py "$MODEL" --preset full --device cuda
fi
"$BIN" bench --model "$MODEL" --device cuda --dtype bf16 --prompt-tokens 512 --gen-tokens 64 --json
"$PY" "$ANCHOR" "$MODEL" 512 64 bfloat16 cuda
for b in 16 64; do
  "$BIN" bench --model "$MODEL" --device cuda --dtype bf16 --batch "$b" --prompt-tokens 128 --gen-tokens 64 --json
  "$PY" scripts/hf_batched.py "$MODEL" "$b" 128 64 bfloat16 cuda
done

# The server under load: streams of 64 tokens at 1, 64 and 256 at once.
LOG=$(mktemp)
"$BIN" serve --model "$MODEL" --device cuda --dtype bf16 --port 0 --queue 256 >"$LOG" 2>&1 &
SERVER=$!
for _ in $(seq 600); do
  URL=$(grep -o 'http://[0-9.:]*' "$LOG" | head -1)
  [ -n "$URL" ] && break
  kill -0 "$SERVER" 2>/dev/null || break
  sleep 0.5
done
if [ -n "${URL:-}" ]; then
  grep 'max concurrency' "$LOG"
  "$PY" scripts/loadtest.py --url "$URL" --concurrency 1,64,256 --max-tokens 64 --time-limit 300
else
  echo "athena serve did not start:" >&2
  cat "$LOG" >&2
fi
kill "$SERVER" 2>/dev/null
wait "$SERVER" 2>/dev/null
rm -f "$LOG"
