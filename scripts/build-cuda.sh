#!/usr/bin/env bash
# Builds `athena` with CUDA (sm_90: H100/H200) on a machine without a CUDA toolkit:
# nvcc, its headers and libdevice come from NVIDIA's PyPI wheels (CUDA 13.0, which
# driver 580 runs), installed into a cache outside the repository. cudarc loads the CUDA
# libraries at run time, so the binary needs only the driver (and, on the GPU machine,
# the cuBLAS/cuRAND libraries that ship with PyTorch there).
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
# crt headers (nvidia-cuda-crt), all of the 13.0 line; and the libraries candle links
# against (cuBLAS, cuRAND, NVRTC), whose run-time copies on the GPU machine come with PyTorch.
WHEELS=(
  "nvidia-cuda-nvcc==13.0.88"
  "nvidia-nvvm==13.0.88"
  "nvidia-cuda-runtime==13.0.96"
  "nvidia-cuda-cccl==13.0.85"
  "nvidia-cuda-crt==13.0.88"
  "nvidia-cublas==13.0.2.14"
  "nvidia-curand==10.4.0.35"
  "nvidia-cuda-nvrtc==13.0.88"
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
# Link names for the versioned libraries, and a link stub for the driver library (libcuda
# comes with the GPU driver, not with a wheel): every driver entry point cudarc declares,
# as the toolkit's own stubs do. The real libcuda.so.1 is loaded at run time.
LIB="$TOOLKIT/lib"
for l in cublas.so.13 cublasLt.so.13 curand.so.10 nvrtc.so.13 cudart.so.13; do
  ln -sf "lib$l" "$LIB/lib${l%%.so*}.so"
done
cargo fetch --locked >/dev/null
CUDARC_VERSION=$(grep -A1 '^name = "cudarc"' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
CUDARC_SRC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"cudarc-$CUDARC_VERSION" | head -1)
grep -rhoE 'fn cu[A-Z][A-Za-z0-9_]*\(' "$CUDARC_SRC/src/driver/sys" | sed 's/^fn //; s/($//' |
  sort -u | sed 's/.*/void &(void) {}/' > "$CACHE/libcuda_stub.c"
cc -shared -fPIC -o "$LIB/libcuda.so" -Wl,-soname,libcuda.so.1 "$CACHE/libcuda_stub.c"

export CUDA_HOME="$TOOLKIT" CUDA_PATH="$TOOLKIT" CUDA_ROOT="$TOOLKIT" NVCC="$TOOLKIT/bin/nvcc"
export PATH="$TOOLKIT/bin:$PATH"
"$NVCC" --version | tail -1 >&2

cargo build --release --locked --features athena-cli/cuda --bin athena
BIN="$CARGO_TARGET_DIR/release/athena"
echo "built $BIN (sm_$CUDA_COMPUTE_CAP)" >&2
if [ -n "$OUT" ]; then
  mkdir -p "$(dirname "$OUT")"
  cp "$BIN" "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
  echo "copied to $OUT" >&2
fi
