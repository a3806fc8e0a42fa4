#!/usr/bin/env python3
"""Reference logits of mlx-lm itself on the fixture checkpoints, for athena's MLX backend.

usage: python scripts/make_mlx_parity_fixtures.py     (versions: scripts/requirements-fixtures.txt)

Only logits are stored (the checkpoints are those of fixtures/models/): for each variant,
fixtures/mlx_parity/<variant>.safetensors holds
  ids       int64 [n]         the prompt (ids_a of the variant's reference)
  logits    float32 [n, V]    mlx-lm's logits of every position, computed in float32
  greedy    int64 [8]         mlx-lm's greedy continuation through its KV cache (argmax)
and, where mlx-lm departs from transformers by ignoring a config field,
  logits_fixed float32 [n, V] mlx-lm's logits with that field passed to it by hand.

mlx-lm ignores `clip_qkv` (clip_bias) and reads neither the RoPE base nor the RoPE scaling
from `rope_parameters` (gqa_normtopk: θ = 500000; sharded_f16: linear factor 2). athena
follows transformers there; the tests show athena-MLX = transformers ≠ mlx-lm on those three.
"""
import json
import os
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx_lm.utils import load_model
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "fixtures" / "models"
OUT = ROOT / "fixtures" / "mlx_parity"
GREEDY = 8

# variant -> what to pass mlx-lm by hand so that it computes transformers' model (or None).
VARIANTS = {
    "base": None,
    "mlx_switch": None,
    "tied_bf16": None,
    "mlx_q4": None,
    "mlx_q8_g64": None,
    "mlx_mixed_3_6": None,
    "clip_bias": None,  # no mlx-lm option clamps q/k/v
    "gqa_normtopk": {"rope_theta": 500000.0},
    "sharded_f16": {"rope_scaling": {"type": "linear", "factor": 2.0}},
}


def run(path, ids, model_config=None):
    model, _ = load_model(path, model_config=model_config or {})
    model.set_dtype(mx.float32)  # MLX's CPU kernels need float32; athena computes in f32
    logits = model(mx.array([ids]))[0].astype(mx.float32)
    mx.eval(logits)
    # Greedy decoding through mlx-lm's own KV cache.
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    out = model(mx.array([ids]), cache=cache)
    tok = mx.argmax(out[:, -1, :], axis=-1)
    greedy = []
    for _ in range(GREEDY):
        greedy.append(int(tok.item()))
        out = model(tok[:, None], cache=cache)
        tok = mx.argmax(out[:, -1, :], axis=-1)
    return np.array(logits), np.array(greedy, dtype=np.int64)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    base_ids = json.load(open(MODELS / "base" / "reference.json"))["ids_a"]
    for name, fix in VARIANTS.items():
        path = MODELS / name
        ref = path / "reference.json"
        ids = json.load(open(ref))["ids_a"] if ref.exists() else base_ids
        logits, greedy = run(path, ids)
        tensors = {"ids": np.array(ids, dtype=np.int64), "logits": logits, "greedy": greedy}
        if fix is not None:
            tensors["logits_fixed"], _ = run(path, ids, fix)
        save_file(tensors, str(OUT / f"{name}.safetensors"),
                  metadata={"mlx": mx.__version__, "mlx_lm": __import__("mlx_lm").__version__})
        print(name, logits.shape, greedy.tolist())


if __name__ == "__main__":
    main()
