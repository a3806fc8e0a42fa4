#!/usr/bin/env python3
"""mlx-lm affine-quantized OLMoE fixtures, made by mlx-lm itself from fixtures/models/base,
with mlx-lm's own logits as the reference (athena must match them within 1e-3).

usage: python scripts/make_mlx_quant_fixtures.py      (versions: scripts/requirements-fixtures.txt)

Writes fixtures/models/mlx_q4 (4-bit, group 32: quantized embeddings, router and lm_head),
fixtures/models/mlx_q8_g64 (8-bit, group 64) and fixtures/models/mlx_mixed_3_6 (mlx-lm's
mixed_3_6 recipe: 3- and 6-bit modules through per-module overrides), each with a
reference.safetensors holding `ids_a` and `logits_a` from mlx-lm.
"""
import json, os, shutil, tempfile

import mlx.core as mx
import numpy as np
from mlx_lm import convert, load
from safetensors.numpy import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BASE = os.path.join(ROOT, "fixtures", "models", "base")
VARIANTS = {
    "mlx_q4": dict(q_bits=4, q_group_size=32),
    "mlx_q8_g64": dict(q_bits=8, q_group_size=64),
    "mlx_mixed_3_6": dict(q_bits=4, q_group_size=32, quant_predicate="mixed_3_6"),
}


def main():
    ids = json.load(open(os.path.join(BASE, "reference.json")))["ids_a"]
    for name, kw in VARIANTS.items():
        out = os.path.join(ROOT, "fixtures", "models", name)
        shutil.rmtree(out, ignore_errors=True)
        with tempfile.TemporaryDirectory() as tmp:
            dst = os.path.join(tmp, "q")
            # float32: MLX's CPU gather-matmul needs it, and scales/biases keep full precision.
            convert(BASE, mlx_path=dst, quantize=True, dtype="float32", **kw)
            shutil.copytree(dst, out)
        readme = os.path.join(out, "README.md")
        if os.path.exists(readme):
            os.remove(readme)
        model, _ = load(out)
        logits = model(mx.array([ids]))[0].astype(mx.float32)
        mx.eval(logits)
        save_file({"ids_a": np.array(ids, dtype=np.int64), "logits_a": np.array(logits)},
                  os.path.join(out, "reference.safetensors"))
        cfg = json.load(open(os.path.join(out, "config.json")))
        print(name, json.dumps(cfg.get("quantization")))


if __name__ == "__main__":
    main()
