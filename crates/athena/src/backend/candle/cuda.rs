//! What the CUDA kernels of this backend share: CUDA C compiled at run time by NVRTC (once per
//! process and program), the element types as the kernels see them, and access to the device
//! buffers behind candle tensors.

use std::sync::OnceLock;

use candle_core::cuda_backend::cudarc::driver::{CudaFunction, CudaSlice};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage};
use candle_core::{Storage, Tensor};

use crate::error::{Error, Result};

/// CUDA C put before every program (no headers: NVRTC finds none on the device machine).
///
/// - `bf2f` / `f2bf`: bf16 as its bits, widened exactly / rounded to nearest even.
/// - `Bf16`, `F16`, `F32`: an element type `T` with `load` (to f32) and `store` (from f32,
///   rounded to nearest even), for kernels written once for every compute dtype.
/// - `round_to<S>(f)`: `f` rounded to `S`'s precision and back, where the reference holds a
///   value in the compute dtype.
/// - `warp_sum`, `block_sum`: f32 sums over a warp and over a block (every thread gets it).
pub(crate) const PRELUDE: &str = r#"
__device__ __forceinline__ float bf2f(unsigned int h) { return __uint_as_float(h << 16); }
__device__ __forceinline__ unsigned short f2bf(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}
struct Bf16 {
    typedef unsigned short T;
    static __device__ __forceinline__ float load(T h) { return bf2f(h); }
    static __device__ __forceinline__ T store(float f) { return f2bf(f); }
};
struct F16 {
    typedef unsigned short T;
    static __device__ __forceinline__ float load(T h) {
        float f;
        asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
        return f;
    }
    static __device__ __forceinline__ T store(float f) {
        unsigned short h;
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
        return h;
    }
};
struct F32 {
    typedef float T;
    static __device__ __forceinline__ float load(T f) { return f; }
    static __device__ __forceinline__ T store(float f) { return f; }
};
template <class S> __device__ __forceinline__ float round_to(float f) {
    return S::load(S::store(f));
}
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
// Needs blockDim.x a multiple of 32; every thread of the block must call it.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x >> 5) ? partial[lane] : 0.f;
    return warp_sum(v);
}
"#;

/// A CUDA C program: [`PRELUDE`] and `src`, compiled by NVRTC the first time a kernel of it
/// runs, then loaded once per device as the module `module`.
pub(crate) struct Program {
    module: &'static str,
    src: &'static str,
    ptx: OnceLock<std::result::Result<String, String>>,
}

impl Program {
    pub(crate) const fn new(module: &'static str, src: &'static str) -> Self {
        Program {
            module,
            src,
            ptx: OnceLock::new(),
        }
    }

    /// The compiled program, or the compiler's message.
    fn ptx(&self) -> Result<&str> {
        use candle_core::cuda_backend::cudarc::nvrtc;
        let ptx = self.ptx.get_or_init(|| {
            nvrtc::compile_ptx(format!("{PRELUDE}{}", self.src))
                .map(|p| p.to_src())
                .map_err(|e| format!("compiling the CUDA kernels `{}`: {e}", self.module))
        });
        ptx.as_deref()
            .map_err(|e| Error::invalid("cuda", e.clone()))
    }

    /// The kernel `name` of this program on `dev`.
    pub(crate) fn function(&self, dev: &CudaDevice, name: &str) -> Result<CudaFunction> {
        Ok(dev
            .get_or_load_custom_func(name, self.module, self.ptx()?)?
            .into_cuda_function())
    }
}

/// The CUDA storage of `s`, or an error for any other device.
pub(crate) fn cuda_storage(s: &Storage) -> Result<&CudaStorage> {
    match s {
        Storage::Cuda(c) => Ok(c),
        _ => Err(Error::internal("device", "expected a CUDA tensor")),
    }
}

/// The device buffer of `storage` as elements of `T`.
pub(crate) fn slice<T: CudaDType>(storage: &Storage) -> Result<&CudaSlice<T>> {
    Ok(cuda_storage(storage)?.as_cuda_slice::<T>()?)
}

/// `t` as a tensor that owns its storage from offset 0, laid out contiguously (kernels read
/// raw storage).
pub(crate) fn owned(t: &Tensor) -> Result<Tensor> {
    if t.is_contiguous() && t.layout().start_offset() == 0 {
        Ok(t.clone())
    } else {
        Ok(t.force_contiguous()?)
    }
}

/// A tensor of `shape` on `dev` holding `buf`.
pub(crate) fn wrap<T: CudaDType, S: Into<candle_core::Shape>>(
    buf: CudaSlice<T>,
    dev: &CudaDevice,
    shape: S,
) -> Tensor {
    let storage = CudaStorage::wrap_cuda_slice(buf, dev.clone());
    Tensor::from_storage(
        Storage::Cuda(storage),
        shape,
        candle_core::op::BackpropOp::none(),
        false,
    )
}
