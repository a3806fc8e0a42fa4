#!/usr/bin/env bash
# On a CUDA machine: the fixtures' parity on the GPU, then athena beside HF transformers on a
# random checkpoint with OLMoE-1B-7B's full shapes in bf16: prefill of 512 tokens, decode at
# batch 1, and batched decode at 16 and 64 sequences. One JSON line per measurement.
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
