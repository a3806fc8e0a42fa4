#!/usr/bin/env python3
"""mlx-lm on an OLMoE checkpoint at a chosen compute dtype: prefill of P tokens, then D greedy
decode steps with mlx-lm's KV cache; one JSON line (the fields of ../shared/anchors/anchor_mlx.py
plus "dtype").

usage: anchor_mlx_dtype.py MODEL_DIR [P] [D] [float32|bfloat16|float16]
       (versions: scripts/requirements-fixtures.txt)

The model is cast with mlx-lm's own `model.set_dtype`. On MLX's CPU device `mx.gather_mm` runs
in float32 only, so there, for a dtype other than float32, it is computed in float32 on inputs
cast up and its result cast back to the dtype — what athena's MLX backend does on the CPU, and
what a GPU's gather_mm does up to the order of accumulation. Quantized checkpoints use
`gather_qmm`, which runs in every dtype and is not touched.
"""
import json
import sys
import time
from pathlib import Path

import mlx.core as mx
import mlx_lm
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.utils import load_model

path = sys.argv[1]
P = int(sys.argv[2]) if len(sys.argv) > 2 else 128
D = int(sys.argv[3]) if len(sys.argv) > 3 else 32
dtype_name = sys.argv[4] if len(sys.argv) > 4 else "float32"
dtype = getattr(mx, dtype_name)

if mx.default_device() == mx.cpu and dtype != mx.float32:
    _gather_mm = mx.gather_mm

    def gather_mm_f32(a, b, *args, **kw):
        return _gather_mm(a.astype(mx.float32), b.astype(mx.float32), *args, **kw).astype(a.dtype)

    mx.gather_mm = gather_mm_f32

t0 = time.perf_counter()
model, cfg = load_model(Path(path))
model.set_dtype(dtype)
mx.eval(model.parameters())
tl = time.perf_counter() - t0
ids = mx.array([[(i * 7919) % cfg["vocab_size"] for i in range(P)]])
cache = make_prompt_cache(model)
t0 = time.perf_counter()
logits = model(ids, cache=cache)
mx.eval(logits)
tp = time.perf_counter() - t0
tok = mx.argmax(logits[:, -1, :], axis=-1)
t0 = time.perf_counter()
for _ in range(D):
    logits = model(tok[:, None], cache=cache)
    tok = mx.argmax(logits[:, -1, :], axis=-1)
    mx.eval(tok)
td = time.perf_counter() - t0
print(json.dumps({
    "engine": "mlx-lm " + mlx_lm.__version__,
    "device": str(mx.default_device()),
    "dtype": dtype_name,
    "load_s": round(tl, 2),
    "prefill_tok_s": round(P / tp, 1),
    "decode_tok_s": round(D / td, 2),
}))
