#!/usr/bin/env bash
# One sitting, two builds: `athena bench` of BEFORE and AFTER on the same model, alternating
# run by run so that the machine's drift falls on both alike; prints the medians and their
# ratio per configuration (f32, bf16, 4-bit at load time, a 4-bit checkpoint written by
# `athena quantize`). For changes that must not change speed (a re-lay), the ratios should sit
# within the run-to-run spread, which the min-max columns show.
# usage: scripts/bench_before_after.sh BEFORE_BIN AFTER_BIN [MODEL_DIR] [RUNS=5]
#   THREADS (default 2), PROMPT (128), DECODE (32)
set -euo pipefail
BEFORE=$1
AFTER=$2
MODEL=${3:-$HOME/.cache/olmoe-layers4}
RUNS=${4:-5}
T=${THREADS:-2}
P=${PROMPT:-128}
D=${DECODE:-32}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$AFTER" quantize --model "$MODEL" --bits 4 --out "$WORK/q4" >/dev/null 2>&1
RAW="$WORK/raw.jsonl"
for run in $(seq "$RUNS"); do
  for cfg in f32 bf16 q4-load q4-ckpt; do
    case $cfg in
      f32) args=(--model "$MODEL") ;;
      bf16) args=(--model "$MODEL" --dtype bf16) ;;
      q4-load) args=(--model "$MODEL" --quantization 4bit) ;;
      q4-ckpt) args=(--model "$WORK/q4") ;;
    esac
    for which in before after; do
      bin=$BEFORE; [ "$which" = after ] && bin=$AFTER
      out=$("$bin" bench "${args[@]}" --prompt-tokens "$P" --gen-tokens "$D" --threads "$T" --json 2>/dev/null)
      printf '{"cfg":"%s","build":"%s","run":%s,"result":%s}\n' "$cfg" "$which" "$run" "$out" >> "$RAW"
    done
  done
done
python3 - "$RAW" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| config | before prefill tok/s | after prefill tok/s | after ÷ before | before decode tok/s | after decode tok/s | after ÷ before |")
print("|---|---|---|---|---|---|---|")
for cfg in ["f32", "bf16", "q4-load", "q4-ckpt"]:
    cells = []
    med = {}
    for key in ["prefill_tok_s", "decode_tok_s"]:
        for build in ["before", "after"]:
            xs = [r["result"][key] for r in rows if r["cfg"] == cfg and r["build"] == build]
            med[build] = statistics.median(xs)
            cells.append(f"{med[build]:.1f} ({min(xs):.1f}–{max(xs):.1f})")
        cells.append(f"{med['after'] / med['before']:.3f}")
    print(f"| {cfg} | " + " | ".join(cells) + " |")
PY
