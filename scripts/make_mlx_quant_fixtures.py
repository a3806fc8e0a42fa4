#!/usr/bin/env python3
"""mlx-lm affine-quantized OLMoE fixtures, made by mlx-lm itself from fixtures/models/base,
with mlx-lm's own logits as the reference (athena must match them within 1e-3).

usage: python scripts/make_mlx_quant_fixtures.py [--load-time]
       (versions: scripts/requirements-fixtures.txt)

Writes fixtures/models/mlx_q4 (4-bit, group 32: quantized embeddings, router and lm_head),
fixtures/models/mlx_q8_g64 (8-bit, group 64) and fixtures/models/mlx_mixed_3_6 (mlx-lm's
mixed_3_6 recipe: 3- and 6-bit modules through per-module overrides), each with a
reference.safetensors holding `ids_a` and `logits_a` from mlx-lm.

With --load-time it writes only fixtures/mlx_parity/load_q4.safetensors and load_q8.safetensors,
the references of athena's load-time quantization on MLX (`--quantization 4bit|8bit`):
mlx-lm's `convert(base, quantize=True, q_bits=4|8, dtype="float32")` at its default group size
(64), run in float32 on the base fixture's ids_a. Each holds `ids` int64 [n], `logits` float32
[n, V] and `greedy` int64 [8] (argmax through mlx-lm's KV cache), as
scripts/make_mlx_parity_fixtures.py writes them, and `logits_lora_mlx_all` float32 [n, V]: the
same quantized model with the fixtures/lora/mlx_all adapter (mlx-lm's `load_adapters`, LoRA
over the quantized layers). The quantized checkpoints are not kept.
"""
import json, os, shutil, sys, tempfile

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


LOAD_TIME = {"load_q4": 4, "load_q8": 8}
GREEDY = 8


def load_time():
    from mlx_lm.models.cache import make_prompt_cache
    from mlx_lm.tuner.utils import load_adapters

    ids = json.load(open(os.path.join(BASE, "reference.json")))["ids_a"]
    out_dir = os.path.join(ROOT, "fixtures", "mlx_parity")
    for name, bits in LOAD_TIME.items():
        with tempfile.TemporaryDirectory() as tmp:
            dst = os.path.join(tmp, "q")
            convert(BASE, mlx_path=dst, quantize=True, q_bits=bits, dtype="float32")
            model, _ = load(dst)
            q = json.load(open(os.path.join(dst, "config.json")))["quantization"]
        model.set_dtype(mx.float32)
        logits = model(mx.array([ids]))[0].astype(mx.float32)
        mx.eval(logits)
        cache = make_prompt_cache(model)
        out = model(mx.array([ids]), cache=cache)
        tok = mx.argmax(out[:, -1, :], axis=-1)
        greedy = []
        for _ in range(GREEDY):
            greedy.append(int(tok.item()))
            out = model(tok[:, None], cache=cache)
            tok = mx.argmax(out[:, -1, :], axis=-1)
        load_adapters(model, os.path.join(ROOT, "fixtures", "lora", "mlx_all"))
        model.set_dtype(mx.float32)
        lora_logits = model(mx.array([ids]))[0].astype(mx.float32)
        mx.eval(lora_logits)
        tensors = {"ids": np.array(ids, dtype=np.int64), "logits": np.array(logits),
                   "greedy": np.array(greedy, dtype=np.int64),
                   "logits_lora_mlx_all": np.array(lora_logits)}
        save_file(tensors, os.path.join(out_dir, f"{name}.safetensors"),
                  metadata={"mlx": mx.__version__, "mlx_lm": __import__("mlx_lm").__version__})
        print(name, json.dumps(q), greedy)


if __name__ == "__main__":
    if sys.argv[1:] == ["--load-time"]:
        load_time()
    else:
        main()
