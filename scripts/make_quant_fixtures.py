#!/usr/bin/env python3
"""Generate the MLX affine quantization fixtures under fixtures/quant/.

How to run (from the repository root), with the pinned versions of
scripts/requirements-fixtures.txt (mlx and mlx-cpu 0.32.4 are the ones that matter):

    python -m venv .venv && .venv/bin/pip install -r scripts/requirements-fixtures.txt
    .venv/bin/python scripts/make_quant_fixtures.py

It rewrites fixtures/quant/affine.safetensors and fixtures/quant/README.md. Every
random draw comes from one seeded numpy generator and MLX runs on the CPU, so a
rerun with the pinned versions gives byte-identical files.

For each matrix M in {m128: [24, 128], m256: [16, 256]} the file holds (all f32
unless noted):

* `M.w` [rows, cols]: the weights, random normal with a different scale per row,
  plus rows that exercise the edge cases of MLX's rounding: an all-zero group, a
  constant group, a group of small integers (exact ties), a single outlier, a
  group whose minimum has the larger magnitude and one whose maximum does.
* `M.x` [3, cols]: an input.
* for every bits in {2, 3, 4, 5, 6, 8} and group size in {32, 64, 128}, under
  `M.b{bits}_g{gs}.`:
  `weight` (u32), `scales`, `biases` from `mx.quantize(w, gs, bits)` (mode
  affine), `dequant` = `mx.dequantize(...)` and `y` = `mx.quantized_matmul(x,
  weight, scales, biases, transpose=True, group_size=gs, bits=bits)`.
* `M.bf16.b{bits}_g64.*` for bits 4 and 8: the same from the weights cast to
  bfloat16, as mlx-lm quantizes a bf16 checkpoint: `w` holds those weights
  (as f32, exactly), `scales` and `biases` are bf16, `dequant` is MLX's bf16
  result cast to f32.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import mlx.core as mx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "quant"
SEED = 20240611
BITS = (2, 3, 4, 5, 6, 8)
GROUP_SIZES = (32, 64, 128)
MATRICES = {"m128": (24, 128), "m256": (16, 256)}


def make_weights(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Random rows at several magnitudes, with edge-case groups written over the first rows."""
    row_scale = rng.choice([0.02, 0.1, 1.0, 5.0], size=(rows, 1))
    w = (rng.standard_normal((rows, cols)) * row_scale).astype(np.float32)
    w[0, :32] = 0.0  # all zero: q0 == 0, bias 0
    w[1, :32] = 0.375  # constant: the range falls back to eps
    w[2, :32] = rng.integers(-8, 8, size=32).astype(np.float32)  # ties in rint
    w[3, :] = 0.01 * rng.standard_normal(cols).astype(np.float32)
    w[3, 5] = 3.0  # one outlier: the maximum is the edge
    w[4, :32] = np.abs(w[4, :32])
    w[4, 7] = -4.0  # the minimum has the larger magnitude: it is the edge
    w[5, 32:64] = np.linspace(-1.0, 1.0, 32, dtype=np.float32)  # |min| == |max|
    return w


def quantize_entry(out: dict, prefix: str, w: mx.array, x: mx.array | None, bits: int, gs: int):
    wq, scales, biases = mx.quantize(w, group_size=gs, bits=bits, mode="affine")
    deq = mx.dequantize(wq, scales, biases, group_size=gs, bits=bits, mode="affine")
    out[f"{prefix}.weight"] = wq
    out[f"{prefix}.scales"] = scales
    out[f"{prefix}.biases"] = biases
    out[f"{prefix}.dequant"] = deq.astype(mx.float32)
    if x is not None:
        y = mx.quantized_matmul(
            x, wq, scales, biases, transpose=True, group_size=gs, bits=bits, mode="affine"
        )
        out[f"{prefix}.y"] = y


def main() -> None:
    mx.set_default_device(mx.cpu)
    rng = np.random.default_rng(SEED)
    out: dict[str, mx.array] = {}
    for name, (rows, cols) in MATRICES.items():
        w_np = make_weights(rng, rows, cols)
        x_np = rng.standard_normal((3, cols)).astype(np.float32)
        w, x = mx.array(w_np), mx.array(x_np)
        out[f"{name}.w"] = w
        out[f"{name}.x"] = x
        for bits in BITS:
            for gs in GROUP_SIZES:
                if cols % gs == 0:
                    quantize_entry(out, f"{name}.b{bits}_g{gs}", w, x, bits, gs)
        w_bf16 = w.astype(mx.bfloat16)
        out[f"{name}.bf16.w"] = w_bf16.astype(mx.float32)
        for bits in (4, 8):
            quantize_entry(out, f"{name}.bf16.b{bits}_g64", w_bf16, None, bits, 64)
    mx.eval(out)

    OUT.mkdir(parents=True, exist_ok=True)
    versions = {p: importlib.metadata.version(p) for p in ("mlx", "numpy")}
    metadata = {"generator": "scripts/make_quant_fixtures.py", "seed": str(SEED)}
    metadata.update({f"version.{p}": v for p, v in versions.items()})
    path = OUT / "affine.safetensors"
    mx.save_safetensors(str(path), out, metadata=metadata)
    size = path.stat().st_size
    assert size < 1_000_000, f"{path} is {size} bytes"

    # MLX's quantization must put the edge of every group exactly on the grid, and
    # zero too wherever the grid reaches it; the Rust tests rely on rows 0-5 covering
    # the branches of the algorithm.
    for name, (rows, cols) in MATRICES.items():
        deq = np.array(out[f"{name}.b4_g32.dequant"])
        assert np.all(deq[0, :32] == 0.0)
        assert np.all(deq[1, :32] == 0.375)

    (OUT / "README.md").write_text(
        "# MLX affine quantization fixtures\n\n"
        "`affine.safetensors` is generated by `scripts/make_quant_fixtures.py` with\n"
        f"mlx {versions['mlx']} on the CPU (seed {SEED}); do not edit by hand. The\n"
        "script's docstring lists every tensor. `crates/athena/tests/quant_mlx.rs`\n"
        "checks athena's `QMatrix` against it: unpacking, dequantization, the\n"
        "quantized matmul and the quantizer itself.\n"
    )
    print(f"wrote {path} ({size} bytes, {len(out)} tensors)")


if __name__ == "__main__":
    main()
