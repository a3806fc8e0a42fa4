//! Fused kernels for a decoder layer on a CUDA device, in every compute dtype: the attention
//! prologue (q/k norms, clip, RoPE, the KV cache write) and the residual add with the RMSNorm
//! after it, each one launch where the unfused ops take several.
//!
//! Both round to the compute dtype where the reference's tensors hold values, from f32 math:
//! the norms as candle's fused RMSNorm does (`round(x · rsqrt(mean(x²) + eps) · w)`), RoPE as
//! the reference's rotate-half in the compute dtype (each product rounded, then their sum).
//! Set `ATHENA_CUDA_FUSED=0` to run the unfused ops instead.

use std::sync::{Mutex, OnceLock};

use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, CudaStorage, WrapErr};
use candle_core::{CpuStorage, DType, Layout, Tensor};
use half::{bf16, f16};

use super::cuda::{slice, wrap, Program};
use crate::error::{Error, Result};

/// Whether the fused kernels run (unless `ATHENA_CUDA_FUSED=0`; read once).
pub(crate) fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("ATHENA_CUDA_FUSED").map_or(true, |v| v != "0"))
}

/// Whether the fused kernels take tensors like `x`: on a CUDA device, in bf16, f16 or f32,
/// and not switched off.
pub(crate) fn runs(x: &Tensor) -> bool {
    enabled() && x.device().is_cuda() && suffix(x.dtype()).is_ok()
}

/// CUDA C of the fused kernels, after [`super::cuda::PRELUDE`]; one instance per dtype.
///
/// `qkv_prologue`: one block per (token row, part), part 0 q, 1 k, 2 v. For q and k: RMSNorm
/// over the part's full width (`round(x · r · w)`, r = rsqrt(mean(x²) + eps)), for all three
/// the optional clamp to ±clip, for q and k NeoX RoPE (`round(round(x1·cos) − round(x2·sin))`,
/// `round(round(x1·sin) + round(x2·cos))` with x2 the element half a head further on). q goes to
/// `q_out` [B, heads, T, D] times `q_scale`, rounded; k and v to column `past + t` of the
/// cache `kv` [2, B, kv_heads, cap, D].
///
/// `add_rms_norm`: one block per row: `sum = round(x + y)`, `out = round(sum · r · w)`.
const FUSED_SRC: &str = r#"
template <class S> __device__ __forceinline__ float clamp_abs(float v, float c) {
    return v < -c ? -c : (v > c ? c : v);
}
template <class S>
__device__ void qkv_prologue(
    const typename S::T* __restrict__ q_in, const typename S::T* __restrict__ k_in,
    const typename S::T* __restrict__ v_in, int q_stride, int k_stride, int v_stride,
    const typename S::T* __restrict__ q_w, const typename S::T* __restrict__ k_w,
    const typename S::T* __restrict__ cos, const typename S::T* __restrict__ sin,
    typename S::T* __restrict__ q_out, typename S::T* __restrict__ kv,
    int batch, int tokens, int heads, int kv_heads, int head_dim, int cap, int past,
    float eps, int has_clip, float clip, float q_scale) {
    const int row = blockIdx.x, part = blockIdx.y;
    const int b = row / tokens, t = row % tokens, half = head_dim / 2;
    const int width = (part == 0 ? heads : kv_heads) * head_dim;
    const typename S::T* x = part == 0 ? q_in + (size_t)row * q_stride
                           : part == 1 ? k_in + (size_t)row * k_stride
                                       : v_in + (size_t)row * v_stride;
    const typename S::T* w = part == 0 ? q_w : k_w;
    float r = 1.f;
    if (part < 2) {
        float ss = 0.f;
        for (int i = threadIdx.x; i < width; i += blockDim.x) {
            const float v = S::load(x[i]);
            ss += v * v;
        }
        r = rsqrtf(block_sum(ss) / width + eps);
    }
    const float c = round_to<S>(clip);
    for (int j = threadIdx.x; j < width / 2; j += blockDim.x) {
        const int h = j / half, d = j % half;
        const int i1 = h * head_dim + d, i2 = i1 + half;
        float x1 = S::load(x[i1]), x2 = S::load(x[i2]);
        if (part < 2) {
            x1 = round_to<S>(r * x1 * S::load(w[i1]));
            x2 = round_to<S>(r * x2 * S::load(w[i2]));
        }
        if (has_clip) {
            x1 = clamp_abs<S>(x1, c);
            x2 = clamp_abs<S>(x2, c);
        }
        if (part < 2) {
            const float co = S::load(cos[(size_t)row * half + d]);
            const float si = S::load(sin[(size_t)row * half + d]);
            const float y1 = round_to<S>(round_to<S>(x1 * co) - round_to<S>(x2 * si));
            const float y2 = round_to<S>(round_to<S>(x1 * si) + round_to<S>(x2 * co));
            x1 = y1;
            x2 = y2;
        }
        if (part == 0) {
            typename S::T* o = q_out + (((size_t)b * heads + h) * tokens + t) * head_dim;
            o[d] = S::store(x1 * q_scale);
            o[d + half] = S::store(x2 * q_scale);
        } else {
            typename S::T* o =
                kv + ((((size_t)(part - 1) * batch + b) * kv_heads + h) * cap + past + t) * head_dim;
            o[d] = S::store(x1);
            o[d + half] = S::store(x2);
        }
    }
}
template <class S>
__device__ void add_rms_norm(
    const typename S::T* __restrict__ x, const typename S::T* __restrict__ y,
    const typename S::T* __restrict__ w, typename S::T* __restrict__ sum,
    typename S::T* __restrict__ out, int width, float eps) {
    const size_t row = (size_t)blockIdx.x * width;
    float ss = 0.f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        const float s = round_to<S>(S::load(x[row + i]) + S::load(y[row + i]));
        sum[row + i] = S::store(s);
        ss += s * s;
    }
    const float r = rsqrtf(block_sum(ss) / width + eps);
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        out[row + i] = S::store(r * S::load(sum[row + i]) * S::load(w[i]));
    }
}
#define ATHENA_FUSED(S, NAME)                                                                  \
extern "C" __global__ void athena_qkv_prologue_##NAME(                                         \
    const S::T* q_in, const S::T* k_in, const S::T* v_in, int q_stride, int k_stride,          \
    int v_stride, const S::T* q_w, const S::T* k_w, const S::T* cos, const S::T* sin,          \
    S::T* q_out, S::T* kv, int batch, int tokens, int heads, int kv_heads, int head_dim,       \
    int cap, int past, float eps, int has_clip, float clip, float q_scale) {                   \
    qkv_prologue<S>(q_in, k_in, v_in, q_stride, k_stride, v_stride, q_w, k_w, cos, sin, q_out, \
                    kv, batch, tokens, heads, kv_heads, head_dim, cap, past, eps, has_clip,    \
                    clip, q_scale);                                                            \
}                                                                                              \
extern "C" __global__ void athena_add_rms_norm_##NAME(                                         \
    const S::T* x, const S::T* y, const S::T* w, S::T* sum, S::T* out, int width, float eps) { \
    add_rms_norm<S>(x, y, w, sum, out, width, eps);                                            \
}
ATHENA_FUSED(Bf16, bf16)
ATHENA_FUSED(F16, f16)
ATHENA_FUSED(F32, f32)
"#;

/// The fused kernels (NVRTC, compiled once per process).
static FUSED: Program = Program::new("athena_fused", FUSED_SRC);

/// Compiles the fused kernels and loads every instance on `dev`, so that no forward pass pays
/// for it.
pub(crate) fn prepare(dev: &candle_core::cuda_backend::CudaDevice) -> Result<()> {
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        for kernel in ["athena_qkv_prologue", "athena_add_rms_norm"] {
            FUSED.function(dev, &format!("{kernel}_{}", suffix(dtype)?))?;
        }
    }
    Ok(())
}

/// Threads per block of both kernels (a multiple of 32, at most 1024).
const THREADS: u32 = 512;

/// The kernel name's suffix for `dtype`.
fn suffix(dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::BF16 => Ok("bf16"),
        DType::F16 => Ok("f16"),
        DType::F32 => Ok("f32"),
        other => Err(unsupported(other)),
    }
}

fn unsupported(dtype: DType) -> Error {
    Error::invalid(
        "dtype",
        format!("the fused CUDA kernels take bf16, f16 or f32, not {dtype:?}"),
    )
}

/// An error unless `t` is on a CUDA device in `dtype`, laid out as rows of `width` unit-stride
/// elements (any row stride); returns the row stride.
fn rows_of(name: &'static str, t: &Tensor, width: usize, dtype: DType) -> Result<usize> {
    let stride = t.stride();
    let ok = t.device().is_cuda()
        && t.dtype() == dtype
        && t.rank() == 2
        && t.dim(1)? == width
        && (stride[1] == 1 || width == 1);
    match ok {
        true => Ok(stride[0]),
        false => Err(Error::invalid(
            name,
            format!(
                "expected CUDA rows of {width} contiguous {dtype:?} elements, got {:?} {:?} strides {stride:?}",
                t.dtype(),
                t.dims()
            ),
        )),
    }
}

/// `(x + y, rms_norm(x + y))` for `x`, `y` [.., H] and the norm's `weight` [H], in one launch.
pub(crate) fn add_rms_norm(
    x: &Tensor,
    y: &Tensor,
    weight: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor)> {
    let dims = x.dims().to_vec();
    let width = weight.dim(0)?;
    if y.dims() != dims.as_slice() || dims.last() != Some(&width) || x.elem_count() == 0 {
        return Err(Error::invalid(
            "add_rms_norm",
            format!("shapes {dims:?} + {:?}, norm of {width}", y.dims()),
        ));
    }
    let rows = x.elem_count() / width;
    let (x, y) = (x.contiguous()?, y.contiguous()?);
    let weight = weight.contiguous()?;
    match x.dtype() {
        DType::BF16 => launch_add_norm::<bf16>(&x, &y, &weight, rows, width, eps, dims),
        DType::F16 => launch_add_norm::<f16>(&x, &y, &weight, rows, width, eps, dims),
        DType::F32 => launch_add_norm::<f32>(&x, &y, &weight, rows, width, eps, dims),
        other => Err(unsupported(other)),
    }
}

/// [`add_rms_norm`] on contiguous tensors of element type `T`.
fn launch_add_norm<T: CudaDType + DeviceRepr>(
    x: &Tensor,
    y: &Tensor,
    weight: &Tensor,
    rows: usize,
    width: usize,
    eps: f64,
    dims: Vec<usize>,
) -> Result<(Tensor, Tensor)> {
    let dtype = x.dtype();
    for (name, t) in [("x", x), ("y", y), ("weight", weight)] {
        if t.dtype() != dtype || !t.device().is_cuda() {
            return Err(Error::invalid(
                name,
                "expected a CUDA tensor in the residual's dtype",
            ));
        }
    }
    let dev = x.device().as_cuda_device()?.clone();
    let func = FUSED.function(&dev, &format!("athena_add_rms_norm_{}", suffix(dtype)?))?;
    let (xs, xl) = x.storage_and_layout();
    let (ys, yl) = y.storage_and_layout();
    let (ws, wl) = weight.storage_and_layout();
    let xv = slice::<T>(&xs)?.slice(xl.start_offset()..);
    let yv = slice::<T>(&ys)?.slice(yl.start_offset()..);
    let wv = slice::<T>(&ws)?.slice(wl.start_offset()..);
    let sum = unsafe { dev.alloc::<T>(rows * width) }?;
    let out = unsafe { dev.alloc::<T>(rows * width) }?;
    let (width_arg, eps_arg) = (width as i32, eps as f32);
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&func);
    b.arg(&xv).arg(&yv).arg(&wv).arg(&sum).arg(&out);
    b.arg(&width_arg).arg(&eps_arg);
    let cfg = LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    unsafe { b.launch(cfg) }.w()?;
    Ok((wrap(sum, &dev, dims.clone()), wrap(out, &dev, dims)))
}

/// The q, k and v projections of a step's token rows, as the prologue reads them.
pub(crate) enum Projections {
    /// Side by side in one tensor [R, q + 2·kv] (one matmul), q first, then k, then v.
    Joint(Tensor),
    /// Three tensors [R, q], [R, kv], [R, kv].
    Apart(Tensor, Tensor, Tensor),
}

impl Projections {
    /// Rows `start..start + len` (views).
    pub(crate) fn rows(&self, start: usize, len: usize) -> Result<Projections> {
        let part = |t: &Tensor| t.narrow(0, start, len);
        Ok(match self {
            Projections::Joint(t) => Projections::Joint(part(t)?),
            Projections::Apart(q, k, v) => Projections::Apart(part(q)?, part(k)?, part(v)?),
        })
    }
}

/// Shapes of one attention step: `batch` sequences of `tokens` new rows each.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepDims {
    pub batch: usize,
    pub tokens: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// One launch of the attention prologue: reads the projections of `batch · tokens` rows
/// (sequence-major), writes k and v into the cache buffer at columns `past..past + tokens`
/// and returns q [B, heads, T, D] (times `q_scale`).
pub(crate) struct Prologue<'a> {
    pub proj: &'a Projections,
    /// [q] and [kv], the q_norm and k_norm weights.
    pub q_norm: &'a Tensor,
    pub k_norm: &'a Tensor,
    pub eps: f64,
    pub clip: Option<f64>,
    /// cos and sin [R, D/2] at the rows' positions.
    pub cos: &'a Tensor,
    pub sin: &'a Tensor,
    pub dims: StepDims,
    pub q_scale: f64,
    /// Columns of the cache filled before this step.
    pub past: usize,
}

impl Prologue<'_> {
    /// Runs the prologue, writing into `kv` [2, B, kv_heads, capacity, D] (contiguous);
    /// returns q.
    pub(crate) fn run(&self, kv: &Tensor) -> Result<Tensor> {
        let d = self.dims;
        let (two, b, heads, cap, hd) = kv.dims5()?;
        let fits = two == 2
            && d.batch * d.tokens > 0
            && b == d.batch
            && heads == d.kv_heads
            && hd == d.head_dim
            && self.past + d.tokens <= cap
            && kv.is_contiguous()
            && d.head_dim.is_multiple_of(2)
            && d.heads.is_multiple_of(d.kv_heads.max(1));
        if !fits {
            return Err(Error::invalid(
                "kv cache",
                format!(
                    "buffer {:?} does not take {d:?} after {} columns",
                    kv.dims(),
                    self.past
                ),
            ));
        }
        let op = PrologueOp {
            prologue: self,
            cap,
            q: Mutex::new(None),
        };
        kv.inplace_op1(&op)?;
        op.q.into_inner()
            .ok()
            .flatten()
            .ok_or_else(|| Error::internal("cuda", "the attention prologue wrote no q"))
    }

    /// The launch, on the cache's storage `kv` with element type `T`; returns q.
    fn launch<T: CudaDType + DeviceRepr>(
        &self,
        kv: &mut CudaStorage,
        kv_at: usize,
        cap: usize,
    ) -> Result<Tensor> {
        let d = self.dims;
        let dtype = self.q_norm.dtype();
        let rows = d.batch * d.tokens;
        let (q_width, kv_width) = (d.heads * d.head_dim, d.kv_heads * d.head_dim);
        let half = d.head_dim / 2;
        // The tensors read, and where q, k, v start in them: (tensor, offset, row stride).
        let (tensors, parts) = match self.proj {
            Projections::Joint(t) => {
                let stride = rows_of("qkv", t, q_width + 2 * kv_width, dtype)?;
                (
                    vec![t],
                    [
                        (0, 0, stride),
                        (0, q_width, stride),
                        (0, q_width + kv_width, stride),
                    ],
                )
            }
            Projections::Apart(q, k, v) => {
                let strides = [
                    rows_of("q", q, q_width, dtype)?,
                    rows_of("k", k, kv_width, dtype)?,
                    rows_of("v", v, kv_width, dtype)?,
                ];
                (
                    vec![q, k, v],
                    [(0, 0, strides[0]), (1, 0, strides[1]), (2, 0, strides[2])],
                )
            }
        };
        if tensors[0].dim(0)? != rows {
            return Err(Error::invalid(
                "qkv",
                format!(
                    "{} rows for {} sequences of {} tokens",
                    tensors[0].dim(0)?,
                    d.batch,
                    d.tokens
                ),
            ));
        }
        rows_of("cos", self.cos, half, dtype)?;
        rows_of("sin", self.sin, half, dtype)?;
        rows_of(
            "q_norm",
            &self.q_norm.reshape((1, q_width))?,
            q_width,
            dtype,
        )?;
        rows_of(
            "k_norm",
            &self.k_norm.reshape((1, kv_width))?,
            kv_width,
            dtype,
        )?;
        let (cos, sin) = (self.cos.contiguous()?, self.sin.contiguous()?);
        let (q_norm, k_norm) = (self.q_norm.contiguous()?, self.k_norm.contiguous()?);

        let dev = kv.device.clone();
        let func = FUSED.function(&dev, &format!("athena_qkv_prologue_{}", suffix(dtype)?))?;
        let held: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
        let view = |(i, offset, _): (usize, usize, usize)| -> Result<_> {
            let (s, l) = &held[i];
            Ok(slice::<T>(s)?.slice(l.start_offset() + offset..))
        };
        let (qv, kv_in, vv) = (view(parts[0])?, view(parts[1])?, view(parts[2])?);
        let (cs, cl) = cos.storage_and_layout();
        let (ss, sl) = sin.storage_and_layout();
        let (qns, qnl) = q_norm.storage_and_layout();
        let (kns, knl) = k_norm.storage_and_layout();
        let cos_v = slice::<T>(&cs)?.slice(cl.start_offset()..);
        let sin_v = slice::<T>(&ss)?.slice(sl.start_offset()..);
        let qn_v = slice::<T>(&qns)?.slice(qnl.start_offset()..);
        let kn_v = slice::<T>(&kns)?.slice(knl.start_offset()..);

        let q_out = unsafe { dev.alloc::<T>(rows * q_width) }?;
        let mut cache = kv.as_cuda_slice_mut::<T>()?.slice_mut(kv_at..);
        let ints = [
            parts[0].2, parts[1].2, parts[2].2, d.batch, d.tokens, d.heads, d.kv_heads, d.head_dim,
        ]
        .map(|v| v as i32);
        let (cap, past) = (cap as i32, self.past as i32);
        let (eps, has_clip) = (self.eps as f32, self.clip.is_some() as i32);
        let (clip, q_scale) = (self.clip.unwrap_or(0.0) as f32, self.q_scale as f32);

        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&func);
        b.arg(&qv).arg(&kv_in).arg(&vv);
        b.arg(&ints[0]).arg(&ints[1]).arg(&ints[2]);
        b.arg(&qn_v).arg(&kn_v).arg(&cos_v).arg(&sin_v);
        b.arg(&q_out).arg(&mut cache);
        for v in &ints[3..] {
            b.arg(v);
        }
        b.arg(&cap)
            .arg(&past)
            .arg(&eps)
            .arg(&has_clip)
            .arg(&clip)
            .arg(&q_scale);
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 3, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        unsafe { b.launch(cfg) }.w()?;
        Ok(wrap(q_out, &dev, (d.batch, d.heads, d.tokens, d.head_dim)))
    }
}

/// [`Prologue`] as candle's in-place op on the cache buffer (the one tensor it writes);
/// q, which it allocates, comes back through `q`.
struct PrologueOp<'a> {
    prologue: &'a Prologue<'a>,
    cap: usize,
    q: Mutex<Option<Tensor>>,
}

impl candle_core::InplaceOp1 for PrologueOp<'_> {
    fn name(&self) -> &'static str {
        "athena-qkv-prologue"
    }

    fn cpu_fwd(&self, _: &mut CpuStorage, _: &Layout) -> candle_core::Result<()> {
        candle_core::bail!("the attention prologue runs on CUDA only")
    }

    fn cuda_fwd(&self, kv: &mut CudaStorage, layout: &Layout) -> candle_core::Result<()> {
        let (p, at, cap) = (self.prologue, layout.start_offset(), self.cap);
        let q = match p.q_norm.dtype() {
            DType::BF16 => p.launch::<bf16>(kv, at, cap),
            DType::F16 => p.launch::<f16>(kv, at, cap),
            DType::F32 => p.launch::<f32>(kv, at, cap),
            other => Err(unsupported(other)),
        }
        .map_err(candle_core::Error::wrap)?;
        let mut slot = self
            .q
            .lock()
            .map_err(|_| candle_core::Error::Msg("the prologue's output lock".into()))?;
        *slot = Some(q);
        Ok(())
    }
}
