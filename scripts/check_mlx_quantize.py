#!/usr/bin/env python3
"""Proves that `athena quantize` writes checkpoints mlx-lm itself loads, with the same logits:
quantizes a checkpoint with athena at each bit width, loads the output with mlx_lm.load, and
compares mlx-lm's logits with `athena logits` on the same output (max |Δlogit| ≤ 1e-3).

usage: python scripts/check_mlx_quantize.py [--model fixtures/models/base] [--athena PATH]
needs: scripts/requirements-fixtures.txt; a built athena binary (cargo build --release).
"""
import argparse, json, os, subprocess, sys, tempfile

import mlx.core as mx
import numpy as np
from mlx_lm import load


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="fixtures/models/base")
    ap.add_argument("--athena", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "athena"))
    a = ap.parse_args()
    ids = list(range(3, 300, 23))
    worst = 0.0
    for bits, group in [(2, 32), (3, 32), (4, 32), (4, 64), (5, 32), (6, 64), (8, 32)]:
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "q")
            subprocess.run([a.athena, "quantize", "--model", a.model, "--out", out, "--bits", str(bits),
                            "--group-size", str(group)], check=True, capture_output=True)
            model, _ = load(out)
            want = np.array(model(mx.array([ids]))[0].astype(mx.float32))
            npy = os.path.join(d, "logits.npy")
            subprocess.run([a.athena, "logits", "--model", out, "--ids", ",".join(map(str, ids)), "--output", npy],
                           check=True, capture_output=True)
            diff = float(np.abs(np.load(npy) - want).max())
        worst = max(worst, diff)
        print(json.dumps({"bits": bits, "group_size": group, "max_abs_diff_vs_mlx_lm": diff}))
    print(json.dumps({"worst": worst, "tolerance": 1e-3}))
    sys.exit(0 if worst <= 1e-3 else 1)


if __name__ == "__main__":
    main()
