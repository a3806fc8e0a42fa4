#!/usr/bin/env bash
# The memory bank's speed figures of docs/BENCHMARKS.md, in one sitting:
#   1. search at 1k, 10k and 100k memories of width 2048 (synthetic embeddings), cached codes
#      against exact search: latency and recall@10 (examples/memory_search.rs);
#   2. `athena memory import --no-infer` of IMPORT (default 1000) facts on MODEL (4-bit at load
#      time): facts/s;
#   3. a head for MODEL, trained briefly on stream examples (its quality is not the point);
#   4. add() of ~20-token facts into a scope of 10k memories with the head deciding: p50 and the
#      share that is encoding (examples/memory_add.rs, which fills the scope first).
# Usage: scripts/bench_memory.sh MODEL WORKDIR   (MODEL needs a tokenizer; see BENCHMARKS)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:?give a model directory}
WORK=${2:?give a work directory}
mkdir -p "$WORK"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/athena/target}"
cargo build --release --locked -p athena-cli -p athena --examples --bins
BIN="$CARGO_TARGET_DIR/release"
echo "== search"
for n in 1000 10000 100000; do
    "$BIN/examples/memory_search" "$n" 200
done
echo "== import"
IMPORT=${IMPORT:-1000}
python3 - "$WORK/import.jsonl" "$IMPORT" <<'EOF'
import json, sys
names = "Alice Bob Chen Dana Emeka Farah Goran Hana Ivan Jia Kofi Lena Marta Nils Omar Priya".split()
verbs = ["likes", "visited", "owns", "studies", "cooks", "plays", "reads about", "collects",
         "paints", "repairs"]
things = ["green tea", "the old harbour", "a red bicycle", "organic chemistry", "fresh pasta",
          "the cello", "modern poetry", "rare stamps", "chess openings", "Lisbon trams",
          "a sea kayak", "medieval history", "spicy curry", "late jazz", "crime novels",
          "antique maps"]
when = ["every Sunday", "since last spring", "with her brother", "after work", "on rainy days",
        "in the morning", "twice a month", "during summer"]
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        text = (f"{names[i % 16]} {verbs[(i // 16) % 10]} {things[(i // 160) % 16]} "
                f"{when[(i // 2560) % 8]}, according to note number {i}.")
        f.write(json.dumps({"user_id": "bench", "role": "user", "content": text}) + "\n")
EOF
rm -f "$WORK/import.db"*
"$BIN/athena" memory import "$WORK/import.jsonl" --db "$WORK/import.db" --model "$MODEL" \
    --use-mlx false --quantization 4bit --no-infer
echo "== head"
"$BIN/athena" memory synth-stream --n 400 --seed 1 --out "$WORK/train_stream.jsonl"
"$BIN/athena" memory synth-stream --n 100 --seed 2 --out "$WORK/val_stream.jsonl"
for s in train val; do
    "$BIN/athena" memory stream-examples --model "$MODEL" --use-mlx false --quantization 4bit \
        --stream "$WORK/${s}_stream.jsonl" --out "$WORK/$s.jsonl"
done
rm -rf "$WORK/head"
"$BIN/athena" train-head --model "$MODEL" --use-mlx false --quantization 4bit --mode sft \
    --train "$WORK/train.jsonl" --eval "$WORK/val.jsonl" --out "$WORK/head" --steps 100 \
    --eval-every 0 > /dev/null
echo "== add"
rm -f "$WORK/add.db"*
"$BIN/examples/memory_add" "$MODEL" "$WORK/head" "$WORK/add.db" 30 4bit
