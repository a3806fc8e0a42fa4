#!/usr/bin/env python3
"""The CPU table of docs/BENCHMARKS.md from the JSON lines scripts/benchmarks.sh writes:
medians over the rounds of one sitting, and athena's ratios to the anchor of each precision.
usage: bench_table.py RAW.jsonl"""
import json, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    by.setdefault(r["label"], []).append(r["result"])


def med(label, key):
    vals = [x[key] for x in by.get(label, []) if x.get(key) is not None]
    return (statistics.median(vals), vals) if vals else (None, [])


def fmt(label, key):
    m, vals = med(label, key)
    if m is None:
        return "—"
    return f"**{m:g}** ({', '.join(f'{v:g}' for v in vals)})"


def ratio(a, b, key):
    x, y = med(a, key)[0], med(b, key)[0]
    return f"{x / y:.2f}×" if x and y else "—"


machine = by.get("machine", [{}])[0]
stream = by.get("stream", [{}])[0].get("bandwidth") or {}
print(f"Machine: {machine.get('cpu')} ({machine.get('cores')} cores, {machine.get('flags')}), "
      f"Linux {machine.get('kernel')}, {machine.get('rustc')}, athena {machine.get('athena_commit')}.")
print(f"Bandwidth (athena bench --stream, {by.get('stream', [{}])[0].get('threads')} threads): "
      f"copy {stream.get('copy_gb_s')} GB/s, read {stream.get('read_gb_s')} GB/s.")
for label in by:
    if label not in ("machine", "stream"):
        eng = by[label][0].get("engine", "")
        print(f"- {label}: {eng}")
print()
print("| precision | engine | prefill tok/s | decode tok/s | weights MB/token | decode % of read ceiling | peak RSS MiB |")
print("|---|---|---|---|---|---|---|")
plan = [
    ("f32", "athena f32 none", ["transformers float32"]),
    ("bf16", "athena bf16 none", ["llama.cpp bf16", "transformers bfloat16"]),
    ("8-bit", "athena f32 8bit", ["llama.cpp Q8_0"]),
    ("8-bit checkpoint", "athena checkpoint 8bit", ["llama.cpp Q8_0"]),
    ("4-bit", "athena f32 4bit", ["llama.cpp Q4_0"]),
    ("4-bit checkpoint", "athena checkpoint 4bit", ["llama.cpp Q4_0"]),
    ("8-bit, int8 activations", "athena f32 8bit int8", ["llama.cpp Q8_0"]),
    ("4-bit, int8 activations", "athena f32 4bit int8", ["llama.cpp Q4_0"]),
]
for prec, ours, anchors in plan:
    a = by.get(ours, [{}])[0]
    mb = a.get("weight_mb_per_token", "—")
    pct = med(ours, "pct_of_read_ceiling")[0]
    if pct is None and stream.get("read_gb_s") and med(ours, "decode_tok_s")[0] and a.get("weight_mb_per_token"):
        pct = round(100 * med(ours, "decode_tok_s")[0] * a["weight_mb_per_token"] / 1e3 / stream["read_gb_s"], 1)
    rss = med(ours, "peak_rss_mb")[0]
    print(f"| {prec} | athena | {fmt(ours, 'prefill_tok_s')} | {fmt(ours, 'decode_tok_s')} | {mb} | "
          f"{pct if pct is not None else '—'} | {rss if rss is not None else '—'} |")
    for an in anchors:
        if an in by:
            print(f"| {prec} | {an} | {fmt(an, 'prefill_tok_s')} | {fmt(an, 'decode_tok_s')} | | | |")
print()
print("Ratios (athena ÷ anchor, medians of this sitting):")
print()
print("| precision | anchor | prefill | decode |")
print("|---|---|---|---|")
for prec, ours, anchors in plan:
    for an in anchors:
        if an in by and ours in by:
            print(f"| {prec} | {an} | {ratio(ours, an, 'prefill_tok_s')} | {ratio(ours, an, 'decode_tok_s')} |")
f32, q8, q4 = (med(l, "peak_rss_mb")[0] for l in ("athena f32 none", "athena f32 8bit", "athena f32 4bit"))
if f32 and q8 and q4:
    print()
    print(f"Peak RSS against athena f32: 8-bit {q8 / f32:.3f}×, 4-bit {q4 / f32:.3f}×.")
