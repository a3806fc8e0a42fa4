#!/usr/bin/env python3
"""Parity of an athena binary on a device (e.g. CUDA) against the committed fixture
references that scripts/make_fixtures.py made with transformers: for every fixture model,
`athena logits` on ids_a, compared with logits_a (f32) and, where the fixture has it,
logits_a_bf16 (transformers run in bf16). Prints one JSON line per check; exits 1 when an f32
check is over the tolerance.

usage: device_parity.py ATHENA_BIN [--device cuda] [--tol 1e-3] [--fixtures fixtures/models]
Needs numpy and safetensors.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file


def run_logits(binary, model, ids, dtype, device, out):
    cmd = [binary, "logits", "--model", model, "--ids", ",".join(str(int(i)) for i in ids),
           "--dtype", dtype, "--device", device, "--output", out]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return np.load(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--fixtures", default="fixtures/models")
    a = ap.parse_args()
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "logits.npy")
        for name in sorted(os.listdir(a.fixtures)):
            model = os.path.join(a.fixtures, name)
            ref_path = os.path.join(model, "reference.safetensors")
            if not os.path.exists(ref_path):
                continue
            ref = load_file(ref_path)
            with open(os.path.join(model, "config.json")) as f:
                if "quantization" in json.load(f) and a.device != "cpu":
                    print(json.dumps({"fixture": name, "device": a.device, "skipped":
                                      "affine-quantized weights run on the CPU only"}))
                    continue
            checks = [("f32", "logits_a")]
            if "logits_a_bf16" in ref:
                checks.append(("bf16", "logits_a_bf16"))
            for dtype, key in checks:
                row = {"fixture": name, "dtype": dtype, "device": a.device}
                try:
                    got = run_logits(a.binary, model, ref["ids_a"], dtype, a.device, out)
                    diff = float(np.abs(got.astype(np.float32) - ref[key].astype(np.float32)).max())
                    row["max_abs_diff"] = diff
                    if dtype == "f32":
                        row["ok"] = diff <= a.tol
                        failed |= not row["ok"]
                except subprocess.CalledProcessError as e:
                    row["error"] = f"athena exited {e.returncode}"
                    failed = True
                print(json.dumps(row), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
