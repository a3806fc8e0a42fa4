#!/usr/bin/env bash
# Builds `athena` with CUDA (sm_90: H100/H200) on a machine without a CUDA toolkit:
# nvcc, its headers and libdevice come from NVIDIA's PyPI wheels (CUDA 13.0, which
# driver 580 runs), installed into a cache outside the repository. The binary names no CUDA
# library: cudarc opens the driver, cuBLAS, cuRAND and NVRTC when a CUDA device is first
# used (vendor/candle-core/PATCHED.md), so it starts and runs `--device cpu` on a machine
# without the driver. It is stripped (no line tables).
#
# usage: scripts/build-cuda.sh [OUT_BINARY]
#   CUDA_COMPUTE_CAP (default 90), ATHENA_CUDA_CACHE (default ~/.cache/athena/cuda),
#   CARGO_TARGET_DIR (default ~/.cache/athena/cuda-target), PYTHON (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${ATHENA_CUDA_CACHE:-$HOME/.cache/athena/cuda}
PY=${PYTHON:-python3}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/athena/cuda-target}
OUT=${1:-}

# The toolkit: nvcc + ptxas (nvidia-cuda-nvcc), cicc + libdevice (nvidia-nvvm), the
# runtime headers (nvidia-cuda-runtime), the CUDA C++ core libraries (nvidia-cuda-cccl) and
# crt headers (nvidia-cuda-crt), all of the 13.0 line. cuBLAS, cuRAND and NVRTC are opened at
# run time from the GPU machine's CUDA (or PyTorch's copies); the build needs none of them.
WHEELS=(
  "nvidia-cuda-nvcc==13.0.88"
  "nvidia-nvvm==13.0.88"
  "nvidia-cuda-runtime==13.0.96"
  "nvidia-cuda-cccl==13.0.85"
  "nvidia-cuda-crt==13.0.88"
)
if [ ! -x "$CACHE/venv/bin/python" ]; then
  "$PY" -m venv "$CACHE/venv"
fi
"$CACHE/venv/bin/python" -m pip install -q --no-deps "${WHEELS[@]}"
TOOLKIT=$("$CACHE/venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
if [ ! -x "$TOOLKIT/bin/nvcc" ] || [ ! -d "$TOOLKIT/nvvm" ]; then
  echo "error: no nvcc/nvvm under $TOOLKIT after installing ${WHEELS[*]}" >&2
  exit 1
fi
# candle-kernels links its precompiled MoE kernels against the CUDA runtime (`-lcudart`). A
# linker script under that name links NVIDIA's static runtime instead, which opens the driver
# itself when first used: the binary then names no CUDA library at all.
printf 'INPUT(%s)\n' "$TOOLKIT/lib/libcudart_static.a" > "$TOOLKIT/lib/libcudart.so"
export LIBRARY_PATH="$TOOLKIT/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"

export CUDA_HOME="$TOOLKIT" CUDA_PATH="$TOOLKIT" CUDA_ROOT="$TOOLKIT" NVCC="$TOOLKIT/bin/nvcc"
export PATH="$TOOLKIT/bin:$PATH"
"$NVCC" --version | tail -1 >&2

CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=true \
  cargo build --release --locked --features athena-cli/cuda --bin athena
BIN="$CARGO_TARGET_DIR/release/athena"
echo "built $BIN (sm_$CUDA_COMPUTE_CAP)" >&2
if [ -n "$OUT" ]; then
  mkdir -p "$(dirname "$OUT")"
  cp "$BIN" "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
  echo "copied to $OUT" >&2
fi
