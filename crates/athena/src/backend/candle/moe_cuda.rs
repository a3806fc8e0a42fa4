//! The sparse MoE block on a CUDA device, in bf16 or f16: routing stays on the device
//! (softmax, top-k, sort of the (token, expert) pairs by expert) and each projection is one
//! grouped GEMM over every routed pair (candle's WMMA `moe_gemm`), so a layer costs a handful
//! of kernel launches and no host round trip, instead of a loop over the routed experts.
//!
//! Same mathematics as [`super::moe::SparseMoeBlock`]: f32 softmax over all experts, top-k,
//! optional renormalisation, routing weights rounded to the hidden dtype (as the reference
//! casts them) before they scale each expert's output, and the k outputs summed per token.

use candle_core::{DType, Tensor, D};

use crate::error::Result;

/// The largest number of routed (token, expert) pairs the device sort takes in one block
/// (its shared memory holds the next power of two of u32 indices).
const MAX_PAIRS: usize = 8192;

/// One layer's experts stacked in the canonical layout, on the device.
#[derive(Debug, Clone)]
pub(crate) struct StackedExperts {
    /// [E, I, H].
    pub gate: Tensor,
    /// [E, I, H].
    pub up: Tensor,
    /// [E, H, I].
    pub down: Tensor,
}

impl StackedExperts {
    /// Whether the grouped path runs `x` [N, H] routed to `top_k` experts each.
    pub(crate) fn runs(&self, x: &Tensor, top_k: usize) -> bool {
        x.device().is_cuda()
            && matches!(x.dtype(), DType::BF16 | DType::F16)
            && self.gate.dtype() == x.dtype()
            && x.dim(0).is_ok_and(|n| n * top_k <= MAX_PAIRS)
    }

    /// `x` [N, H] and its router logits [N, E] → the block's output [N, H].
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        router_logits: &Tensor,
        top_k: usize,
        norm_topk_prob: bool,
    ) -> Result<Tensor> {
        let (n, h) = x.dims2()?;
        let probs = candle_nn::ops::softmax_last_dim(&router_logits.to_dtype(DType::F32)?)?;
        let order = probs.arg_sort_last_dim(false)?;
        if self.gemv_runs(x, top_k) {
            let y = self.gemv(x, &order, &probs, top_k, norm_topk_prob)?;
            return Ok(y.reshape((n, top_k, h))?.sum(1)?);
        }
        let top_ids = order.narrow(D::Minus1, 0, top_k)?.contiguous()?;
        let mut top_w = probs.gather(&top_ids, D::Minus1)?;
        if norm_topk_prob {
            top_w = top_w.broadcast_div(&top_w.sum_keepdim(D::Minus1)?)?;
        }
        let top_w = top_w
            .to_dtype(x.dtype())?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .contiguous()?;
        let (expert_ids, sorted_pairs) = top_ids.flatten_all()?.sort_last_dim(true)?;
        let x = owned(x)?;
        let prefill = n > 1;
        let gemm = |input: &Tensor, w: &Tensor, scale: Option<Tensor>| {
            candle_nn::moe::moe_gemm(input, w, &scale, &sorted_pairs, &expert_ids, top_k, prefill)
        };
        let gate = gemm(&x, &self.gate, None)?;
        let up = gemm(&x, &self.up, None)?;
        let hidden = (candle_nn::ops::silu(&gate)? * up)?;
        let y = gemm(&hidden, &self.down, Some(top_w))?;
        Ok(y.reshape((n, top_k, h))?.sum(1)?)
    }
}

/// `t` as a tensor that owns its storage from offset 0 (the grouped GEMM reads raw storage).
fn owned(t: &Tensor) -> Result<Tensor> {
    if t.is_contiguous() && t.layout().start_offset() == 0 {
        Ok(t.clone())
    } else {
        Ok(t.copy()?)
    }
}

/// Routed pairs up to which decoding takes the GEMV kernels below: each pair reads its
/// expert's rows once, which is what a token or a few need; beyond that the grouped GEMM,
/// which reads each routed expert once for all its pairs, wins.
const GEMV_MAX_PAIRS: usize = 64;

/// CUDA C for decoding in bf16 (no headers: bf16 is handled as its bits). One warp per
/// output row: 16-byte loads along the row, f32 accumulation, a shuffle reduction.
/// `gate_up` writes `silu(x·Wg) · (x·Wu)` rounded as the reference rounds each step (the
/// projections, the SiLU, the product); `down` writes `round(x·Wd) · w` rounded.
const GEMV_SRC: &str = r#"
__device__ __forceinline__ float bf2f(unsigned int h) { return __uint_as_float(h << 16); }
__device__ __forceinline__ unsigned short f2bf(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}
__device__ __forceinline__ float rnd(float f) { return bf2f(f2bf(f)); }
__device__ __forceinline__ float dot8(uint4 a, uint4 b) {
    return bf2f(a.x & 0xffffu) * bf2f(b.x & 0xffffu) + bf2f(a.x >> 16) * bf2f(b.x >> 16)
         + bf2f(a.y & 0xffffu) * bf2f(b.y & 0xffffu) + bf2f(a.y >> 16) * bf2f(b.y >> 16)
         + bf2f(a.z & 0xffffu) * bf2f(b.z & 0xffffu) + bf2f(a.z >> 16) * bf2f(b.z >> 16)
         + bf2f(a.w & 0xffffu) * bf2f(b.w & 0xffffu) + bf2f(a.w >> 16) * bf2f(b.w >> 16);
}
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
// ids: each token's experts by descending probability, [tokens, n_experts]; pair p is the
// (p % top_k)-th choice of token p / top_k.
__device__ __forceinline__ unsigned int pair_expert(const unsigned int* ids, int p, int top_k,
                                                    int n_experts) {
    return ids[(size_t)(p / top_k) * n_experts + p % top_k];
}
extern "C" __global__ void athena_moe_gate_up_bf16(
    const uint4* __restrict__ x, const uint4* __restrict__ wg, const uint4* __restrict__ wu,
    const unsigned int* __restrict__ ids, unsigned short* __restrict__ h,
    int top_k, int n_experts, int n_out, int k8) {
    const int p = blockIdx.y, lane = threadIdx.x & 31;
    const int n = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (n >= n_out) return;
    const uint4* xr = x + (size_t)(p / top_k) * k8;
    const size_t row = ((size_t)pair_expert(ids, p, top_k, n_experts) * n_out + n) * k8;
    float g = 0.f, u = 0.f;
    for (int i = lane; i < k8; i += 32) {
        const uint4 xv = xr[i];
        g += dot8(wg[row + i], xv);
        u += dot8(wu[row + i], xv);
    }
    g = warp_sum(g); u = warp_sum(u);
    if (lane == 0) {
        const float gb = rnd(g);
        h[(size_t)p * n_out + n] = f2bf(rnd(gb / (1.f + __expf(-gb))) * rnd(u));
    }
}
// probs: the router's f32 softmax [tokens, n_experts]; the pair's routing weight is its
// probability, renormalised over the token's top_k when norm != 0, rounded to bf16.
extern "C" __global__ void athena_moe_down_bf16(
    const uint4* __restrict__ h, const uint4* __restrict__ wd,
    const unsigned int* __restrict__ ids, const float* __restrict__ probs,
    unsigned short* __restrict__ y, int top_k, int n_experts, int norm, int n_out, int k8) {
    const int p = blockIdx.y, lane = threadIdx.x & 31;
    const int n = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (n >= n_out) return;
    const uint4* hr = h + (size_t)p * k8;
    const unsigned int e = pair_expert(ids, p, top_k, n_experts);
    const size_t row = ((size_t)e * n_out + n) * k8;
    float d = 0.f;
    for (int i = lane; i < k8; i += 32) d += dot8(wd[row + i], hr[i]);
    d = warp_sum(d);
    if (lane == 0) {
        const float* pr = probs + (size_t)(p / top_k) * n_experts;
        float w = pr[e];
        if (norm) {
            float sum = 0.f;
            for (int j = 0; j < top_k; ++j) sum += pr[ids[(size_t)(p / top_k) * n_experts + j]];
            w /= sum;
        }
        y[(size_t)p * n_out + n] = f2bf(rnd(d) * rnd(w));
    }
}
"#;

/// Warps (output rows) per block of the GEMV kernels.
const ROWS_PER_BLOCK: u32 = 8;

/// The compiled GEMV kernels (NVRTC, once per process).
fn gemv_ptx() -> Result<&'static str> {
    use candle_core::cuda_backend::cudarc::nvrtc;
    static PTX: std::sync::OnceLock<std::result::Result<String, String>> =
        std::sync::OnceLock::new();
    let ptx = PTX.get_or_init(|| {
        nvrtc::compile_ptx(GEMV_SRC)
            .map(|p| p.to_src())
            .map_err(|e| format!("compiling the MoE decode kernels: {e}"))
    });
    ptx.as_deref()
        .map_err(|e| crate::error::Error::invalid("cuda", e.clone()))
}

impl StackedExperts {
    /// Whether the GEMV kernels take `x` [N, H] routed to `top_k` experts each.
    fn gemv_runs(&self, x: &Tensor, top_k: usize) -> bool {
        let (k_in, k_mid) = (self.gate.dim(2).unwrap_or(1), self.down.dim(2).unwrap_or(1));
        x.dtype() == DType::BF16
            && x.dim(0).is_ok_and(|n| n * top_k <= GEMV_MAX_PAIRS)
            && k_in % 8 == 0
            && k_mid % 8 == 0
    }

    /// Decoding's expert pass: `x` [N, H], `order` [N, E] (u32, each token's experts by
    /// descending probability), `probs` [N, E] (f32) → [N·k, H], each routed pair's output
    /// scaled by its routing weight.
    fn gemv(
        &self,
        x: &Tensor,
        order: &Tensor,
        probs: &Tensor,
        top_k: usize,
        norm_topk_prob: bool,
    ) -> Result<Tensor> {
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;
        use candle_core::{op::BackpropOp, CudaStorage, Storage};
        use half::bf16;

        let (n, hidden) = x.dims2()?;
        let (_, inter, _) = self.gate.dims3()?;
        let pairs = n * top_k;
        let dev = x.device().as_cuda_device()?.clone();
        let ptx = gemv_ptx()?;
        let x = owned(x)?;
        let n_experts = self.gate.dim(0)? as i32;
        let ids = owned(order)?;
        let weights = owned(probs)?;
        let (xs, _) = x.storage_and_layout();
        let (wg, _) = self.gate.storage_and_layout();
        let (wu, _) = self.up.storage_and_layout();
        let (wd, _) = self.down.storage_and_layout();
        let (is, _) = ids.storage_and_layout();
        let (ws, _) = weights.storage_and_layout();
        fn cuda(s: &Storage) -> candle_core::Result<&CudaStorage> {
            match s {
                Storage::Cuda(c) => Ok(c),
                _ => Err(candle_core::Error::Msg("expected a CUDA tensor".into())),
            }
        }
        let (xs, wg, wu, wd, is, ws) = (
            cuda(&xs)?.as_cuda_slice::<bf16>()?,
            cuda(&wg)?.as_cuda_slice::<bf16>()?,
            cuda(&wu)?.as_cuda_slice::<bf16>()?,
            cuda(&wd)?.as_cuda_slice::<bf16>()?,
            cuda(&is)?.as_cuda_slice::<u32>()?,
            cuda(&ws)?.as_cuda_slice::<f32>()?,
        );
        let block = |rows: usize| LaunchConfig {
            grid_dim: (
                rows.div_ceil(ROWS_PER_BLOCK as usize) as u32,
                pairs as u32,
                1,
            ),
            block_dim: (32 * ROWS_PER_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };

        let h = unsafe { dev.alloc::<bf16>(pairs * inter) }?;
        let func = dev.get_or_load_custom_func("athena_moe_gate_up_bf16", "athena_moe", ptx)?;
        let (top_k_arg, inter_arg, hk8) = (top_k as i32, inter as i32, (hidden / 8) as i32);
        let mut b = func.builder();
        b.arg(xs).arg(wg).arg(wu).arg(is).arg(&h);
        b.arg(&top_k_arg).arg(&n_experts).arg(&inter_arg).arg(&hk8);
        unsafe { b.launch(block(inter)) }.w()?;

        let y = unsafe { dev.alloc::<bf16>(pairs * hidden) }?;
        let func = dev.get_or_load_custom_func("athena_moe_down_bf16", "athena_moe", ptx)?;
        let (hidden_arg, ik8, norm) = (hidden as i32, (inter / 8) as i32, norm_topk_prob as i32);
        let mut b = func.builder();
        b.arg(&h).arg(wd).arg(is).arg(ws).arg(&y);
        b.arg(&top_k_arg)
            .arg(&n_experts)
            .arg(&norm)
            .arg(&hidden_arg)
            .arg(&ik8);
        unsafe { b.launch(block(hidden)) }.w()?;

        let y = CudaStorage::wrap_cuda_slice(y, dev);
        Ok(Tensor::from_storage(
            Storage::Cuda(y),
            (pairs, hidden),
            BackpropOp::none(),
            false,
        ))
    }
}
