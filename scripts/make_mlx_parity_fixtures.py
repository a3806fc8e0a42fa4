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

Compute dtypes: for the variants of DTYPE_VARIANTS, fixtures/mlx_parity/<variant>_bf16 and
<variant>_f16.safetensors hold mlx-lm's outputs after `model.set_dtype(bfloat16 | float16)`
(every floating parameter cast, packed codes unchanged), so activations flow in that dtype:
  ids       int64 [n]         the prompt
  logits    float32 [n, V]    mlx-lm's logits in that dtype, widened to float32
  greedy    int64 [8]         mlx-lm's greedy continuation in that dtype
  gap_f32   float32 [1]       max |logits - the float32 logits|: mlx-lm's own dtype error
For gqa_normtopk and sharded_f16 mlx-lm is given the field it ignores (as `logits_fixed`).
MLX's CPU `gather_mm` computes float32 only ("[GatherMM::eval] Currently only supports
float32"), so unpatched mlx-lm cannot run float experts in bf16 or f16 on the CPU. Here
`mx.gather_mm` is patched to widen both operands to float32 and round the product back to the
input's dtype, which is what Metal's bf16 gather_mm computes up to accumulation order (float32
accumulation, rounded output); athena's shim does the same on the CPU. gather_qmm (quantized
experts) runs in bf16 and f16 unpatched.
"""
import json
import os
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx_lm.utils import load_model
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

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

# Variants whose bf16 and f16 logits are written too (clip_bias is left out: mlx-lm cannot
# be given its clamp).
DTYPE_VARIANTS = [
    "base",
    "mlx_switch",
    "tied_bf16",
    "mlx_q4",
    "mlx_q8_g64",
    "mlx_mixed_3_6",
    "gqa_normtopk",
    "sharded_f16",
]
DTYPES = {"bf16": mx.bfloat16, "f16": mx.float16}

_gather_mm = mx.gather_mm


def _gather_mm_widened(a, b, *args, **kwargs):
    """mx.gather_mm computed in float32 and rounded back to a's dtype (see the docstring)."""
    if a.dtype == mx.float32:
        return _gather_mm(a, b, *args, **kwargs)
    return _gather_mm(a.astype(mx.float32), b.astype(mx.float32), *args, **kwargs).astype(a.dtype)


def save(tensors, path, metadata):
    """Writes `path` unless it already holds these tensors and metadata. safetensors orders the
    metadata keys as a hash map iterates, so rewriting equal contents could change the bytes."""
    if path.exists():
        with safe_open(str(path), "np") as f:
            same_meta = f.metadata() == metadata
        old = load_file(str(path))
        if same_meta and old.keys() == tensors.keys() and all(
            old[k].dtype == v.dtype and np.array_equal(old[k], v) for k, v in tensors.items()
        ):
            return
    save_file(tensors, str(path), metadata=metadata)


def run(path, ids, model_config=None, dtype=mx.float32):
    model, _ = load_model(path, model_config=model_config or {})
    model.set_dtype(dtype)  # as mlx-lm computes in dtype: every floating parameter cast
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
        save(tensors, OUT / f"{name}.safetensors",
             {"mlx": mx.__version__, "mlx_lm": __import__("mlx_lm").__version__})
        print(name, logits.shape, greedy.tolist())
    mx.gather_mm = _gather_mm_widened
    for name in DTYPE_VARIANTS:
        path = MODELS / name
        ref = path / "reference.json"
        ids = json.load(open(ref))["ids_a"] if ref.exists() else base_ids
        fix = VARIANTS[name]
        want, _ = run(path, ids, fix)
        for suffix, dtype in DTYPES.items():
            logits, greedy = run(path, ids, fix, dtype)
            gap = float(np.abs(logits - want).max())
            tensors = {
                "ids": np.array(ids, dtype=np.int64),
                "logits": logits,
                "greedy": greedy,
                "gap_f32": np.array([gap], dtype=np.float32),
            }
            save(tensors, OUT / f"{name}_{suffix}.safetensors",
                 {"mlx": mx.__version__,
                  "mlx_lm": __import__("mlx_lm").__version__,
                  "dtype": suffix,
                  "gather_mm": "float32, rounded to the input dtype"})
            print(name, suffix, "max |logits - f32|", gap, greedy.tolist())


if __name__ == "__main__":
    main()
