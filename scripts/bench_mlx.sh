#!/usr/bin/env bash
# athena on MLX beside mlx-lm on the same libmlx, and athena's candle CPU path beside both, in
# one sitting: f32, bf16 and 4-bit (an mlx-lm 4-bit checkpoint made once from MODEL by
# `mlx_lm.convert -q`), the engines alternating in every round. One JSON line per run, then the
# medians and the athena-on-MLX / mlx-lm ratios.
# usage: scripts/bench_mlx.sh MODEL_DIR [ROUNDS] [PROMPT] [DECODE]
#   BIN:    athena built with MLX (cargo build --release -p athena-cli --features athena/mlx)
#   PYTHON: a Python with mlx, mlx-cpu and mlx-lm as pinned in scripts/requirements-fixtures.txt
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:?usage: scripts/bench_mlx.sh MODEL_DIR [ROUNDS] [PROMPT] [DECODE]}
ROUNDS=${2:-3}
P=${3:-128}
D=${4:-32}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/athena}
PY=${PYTHON:-python3}
Q4="$MODEL-mlx-q4"
if [ ! -f "$Q4/config.json" ]; then
  "$PY" -m mlx_lm convert --hf-path "$MODEL" --mlx-path "$Q4" -q --q-bits 4 --q-group-size 64 >&2
fi
LOG=$(mktemp)
run() { # label, then the command; its JSON line gets the label
  local label=$1; shift
  "$@" 2>/dev/null | tail -n 1 | sed "s/^{/{\"run\":\"$label\",/" | tee -a "$LOG"
}
for r in $(seq "$ROUNDS"); do
  for dt in f32 bf16; do
    py_dt=$([ "$dt" = f32 ] && echo float32 || echo bfloat16)
    run "athena-mlx $dt" "$BIN" bench --backend mlx --dtype "$dt" --model "$MODEL" \
      --prompt-tokens "$P" --gen-tokens "$D" --json
    run "mlx-lm $dt" "$PY" scripts/anchor_mlx_dtype.py "$MODEL" "$P" "$D" "$py_dt"
    run "athena-candle $dt" "$BIN" bench --backend candle --dtype "$dt" --model "$MODEL" \
      --prompt-tokens "$P" --gen-tokens "$D" --json
  done
  run "athena-mlx 4bit" "$BIN" bench --backend mlx --model "$Q4" \
    --prompt-tokens "$P" --gen-tokens "$D" --json
  run "mlx-lm 4bit" "$PY" scripts/anchor_mlx_dtype.py "$Q4" "$P" "$D" float32
  run "athena-candle 4bit" "$BIN" bench --backend candle --model "$Q4" \
    --prompt-tokens "$P" --gen-tokens "$D" --json
done
"$PY" - "$LOG" <<'EOF'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows.setdefault(r["run"], []).append(r)
med = {k: {f: statistics.median(x[f] for x in v) for f in ("prefill_tok_s", "decode_tok_s")}
       for k, v in rows.items()}
print("| run | prefill tok/s (median) | decode tok/s (median) | runs |")
print("|---|---|---|---|")
for k, v in rows.items():
    print(f"| {k} | {med[k]['prefill_tok_s']:.2f} | {med[k]['decode_tok_s']:.2f} | {len(v)} |")
for q in ("f32", "bf16", "4bit"):
    a, m = med.get(f"athena-mlx {q}"), med.get(f"mlx-lm {q}")
    if a and m:
        print(f"athena-mlx / mlx-lm {q}: prefill {a['prefill_tok_s'] / m['prefill_tok_s']:.2f}x, "
              f"decode {a['decode_tok_s'] / m['decode_tok_s']:.2f}x")
EOF
rm -f "$LOG"
