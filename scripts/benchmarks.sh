#!/usr/bin/env bash
# Regenerates the CPU table of docs/BENCHMARKS.md in one sitting: athena at f32, bf16, 8-bit
# and 4-bit (quantized at load time, and as checkpoints written by `athena quantize`, the
# counterpart of llama.cpp's converted GGUF files) beside every anchor that is installed (HF transformers f32 and bf16 through
# anchor_hf.py; llama.cpp bf16, Q8_0 and Q4_0 through llamacpp.sh), RUNS rounds of each, then
# the machine's bandwidth; prints a Markdown table of medians and ratios.
# usage: scripts/benchmarks.sh [MODEL_DIR] [PROMPT=128] [DECODE=32] [RUNS=3]
#   PYTHON   a Python with torch + transformers (+ cmake, ninja, numpy, sentencepiece for llama.cpp)
#   ANCHORS  the anchors directory (default ../shared/anchors)
#   THREADS  threads for every engine (default 2)
#   RAW      where the raw JSON lines go (default target/benchmarks-<UTC time>.jsonl)
#   NO_LLAMACPP=1 / NO_HF=1 skip an anchor
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-$HOME/.cache/olmoe-layers4}
P=${2:-128}
D=${3:-32}
RUNS=${4:-3}
PY=${PYTHON:-python3}
ANCHORS=${ANCHORS:-../shared/anchors}
T=${THREADS:-2}
mkdir -p target
RAW=${RAW:-target/benchmarks-$(date -u +%Y%m%dT%H%M%SZ).jsonl}
if [ ! -f "$MODEL/config.json" ]; then
  "$PY" "$ANCHORS/make_olmoe.py" "$MODEL" --preset layers4
fi
cargo build --release --bin athena >&2
BIN=${CARGO_TARGET_DIR:-target}/release/athena
: > "$RAW"
emit() { # label run json
  printf '{"label":"%s","run":%s,"result":%s}\n' "$1" "$2" "$3" | tee -a "$RAW" >&2
}
machine=$(printf '{"cpu":"%s","cores":%s,"flags":"%s","kernel":"%s","rustc":"%s","athena_commit":"%s"}' \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$(nproc)" \
  "$(grep -m1 -o -w -E 'avx512f|avx2' /proc/cpuinfo | sort -u | xargs)" "$(uname -r)" \
  "$(rustc --version)" "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo +dirty)")
emit machine 0 "$machine"
# athena's own quantized checkpoints of MODEL (mlx-lm layout, groups of 64), written once per
# sitting and removed at the end.
CKPT=$(mktemp -d target/bench-checkpoints.XXXXXX)
trap 'rm -rf "$CKPT"' EXIT
for b in 8 4; do
  "$BIN" quantize --model "$MODEL" --out "$CKPT/q$b" --bits "$b" --json >&2
done
have_hf=0
[ -z "${NO_HF:-}" ] && "$PY" -c 'import torch, transformers' 2>/dev/null && have_hf=1
have_llama=0
[ -z "${NO_LLAMACPP:-}" ] && [ -f "$ANCHORS/llamacpp.sh" ] && have_llama=1
# Each precision's athena rows run next to their anchors, so that every ratio compares runs
# minutes apart at most (this kind of host drifts by more than the differences measured);
# f32, whose 7 GB process disturbs what follows it, runs last.
# athena warms up before it times (one untimed prefill and decode step), as llama-bench does;
# f32, whose anchor (anchor_hf.py) times transformers' first call, runs cold like it.
athena() { # dtype quantization [int8]
  local label="athena $1 $2${3:+ $3}" cold=""
  [ "$1" = f32 ] && [ "$2" = none ] && cold=--no-warmup
  emit "$label" "$r" "$("$BIN" bench --model "$MODEL" --prompt-tokens "$P" --gen-tokens "$D" \
    --dtype "$1" --quantization "$2" ${3:+--int8-activations} --threads "$T" $cold --json)"
}
checkpoint() { # bits [int8]
  local label="athena checkpoint $1bit${2:+ $2}"
  emit "$label" "$r" "$("$BIN" bench --model "$CKPT/q$1" --prompt-tokens "$P" --gen-tokens "$D" \
    ${2:+--int8-activations} --threads "$T" --json)"
}
hf() { # float32 | bfloat16
  [ "$have_hf" = 1 ] || return 0
  emit "transformers $1" "$r" "$(OMP_NUM_THREADS=$T "$PY" "$ANCHORS/anchor_hf.py" "$MODEL" "$P" "$D" "$1")"
}
llama() { # bf16 | Q8_0 | Q4_0
  [ "$have_llama" = 1 ] || return 0
  local out
  out=$(PYTHON="$PY" bash "$ANCHORS/llamacpp.sh" "$MODEL" "$P" "$D" "$1" 2>/dev/null | tail -1) || out=""
  [ -n "$out" ] && emit "llama.cpp $1" "$r" "$out"
  return 0
}
for r in $(seq 1 "$RUNS"); do
  athena bf16 none; llama bf16; hf bfloat16
  athena f32 8bit; llama Q8_0; checkpoint 8; athena f32 8bit int8
  athena f32 4bit; llama Q4_0; checkpoint 4; athena f32 4bit int8
  athena f32 none; hf float32
done
emit stream 0 "$("$BIN" bench --model "$MODEL" --stream --stream-only --threads "$T")"
"$PY" scripts/bench_table.py "$RAW"
