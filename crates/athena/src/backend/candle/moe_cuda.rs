//! The sparse MoE block on a CUDA device, in bf16 or f16: routing stays on the device
//! (softmax, top-k, sort of the (token, expert) pairs by expert) and each projection is one
//! grouped GEMM over every routed pair (candle's WMMA `moe_gemm`), so a layer costs a handful
//! of kernel launches and no host round trip, instead of a loop over the routed experts.
//!
//! Same mathematics as [`super::moe::SparseMoeBlock`]: f32 softmax over all experts, top-k,
//! optional renormalisation, routing weights rounded to the hidden dtype (as the reference
//! casts them) before they scale each expert's output, and the k outputs summed per token.

use candle_core::{DType, Tensor, D};

use super::cuda::{owned, slice, wrap, Program};
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
        if self.gemv_runs(x, top_k) && top_k <= MAX_ROUTED && super::fused_cuda::enabled() {
            return self.gemv_routed(x, router_logits, top_k, norm_topk_prob);
        }
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

/// Routed pairs up to which decoding takes the GEMV kernels below: each pair reads its
/// expert's rows once, which is what a token or a few need; beyond that the grouped GEMM,
/// which reads each routed expert once for all its pairs, wins.
const GEMV_MAX_PAIRS: usize = 64;

/// CUDA C for decoding in bf16 (after [`super::cuda::PRELUDE`]: bf16 as its bits). One warp per
/// output row: 16-byte loads along the row, f32 accumulation, a shuffle reduction.
/// `gate_up` writes `silu(x·Wg) · (x·Wu)` rounded as the reference rounds each step (the
/// projections, the SiLU, the product); `down` writes `round(x·Wd) · w` rounded.
const GEMV_SRC: &str = r#"
#define MAX_ROUTED 16
#define NEG_INF __int_as_float(0xff800000)
__device__ __forceinline__ float rnd(float f) { return bf2f(f2bf(f)); }
__device__ __forceinline__ float dot8(uint4 a, uint4 b) {
    return bf2f(a.x & 0xffffu) * bf2f(b.x & 0xffffu) + bf2f(a.x >> 16) * bf2f(b.x >> 16)
         + bf2f(a.y & 0xffffu) * bf2f(b.y & 0xffffu) + bf2f(a.y >> 16) * bf2f(b.y >> 16)
         + bf2f(a.z & 0xffffu) * bf2f(b.z & 0xffffu) + bf2f(a.z >> 16) * bf2f(b.z >> 16)
         + bf2f(a.w & 0xffffu) * bf2f(b.w & 0xffffu) + bf2f(a.w >> 16) * bf2f(b.w >> 16);
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
// Routing of one token per block (one warp): the f32 softmax of its router logits
// [tokens, n_experts], the top_k experts by descending probability (equal probabilities: the
// lower expert first), their weights (renormalised over the top_k, summed in that order, when
// norm != 0). Writes ids [tokens, top_k] in ascending expert order and their weights w.
// Shared memory: n_experts floats.
template <class S>
__device__ void moe_route(const typename S::T* __restrict__ logits, unsigned int* __restrict__ ids,
                          float* __restrict__ w, int n_experts, int top_k, int norm) {
    extern __shared__ float pr[];
    const int t = blockIdx.x, lane = threadIdx.x;
    const typename S::T* l = logits + (size_t)t * n_experts;
    float m = NEG_INF;
    for (int e = lane; e < n_experts; e += 32) {
        const float v = S::load(l[e]);
        pr[e] = v;
        m = fmaxf(m, v);
    }
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    float s = 0.f;
    for (int e = lane; e < n_experts; e += 32) {
        const float v = expf(pr[e] - m);
        pr[e] = v;
        s += v;
    }
    s = warp_sum(s);
    for (int e = lane; e < n_experts; e += 32) pr[e] = pr[e] / s;
    __syncwarp();
    unsigned int sel[MAX_ROUTED];
    float sw[MAX_ROUTED];
    float total = 0.f;
    for (int j = 0; j < top_k; ++j) {
        float bv = NEG_INF;
        int bi = 0x7fffffff;
        for (int e = lane; e < n_experts; e += 32) {
            const float v = pr[e];
            if (v > bv) { bv = v; bi = e; }
        }
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
        }
        sel[j] = (unsigned int)bi;
        sw[j] = bv;
        total += bv;
        __syncwarp();
        if (lane == 0) pr[bi] = NEG_INF;
        __syncwarp();
    }
    if (lane != 0) return;
    for (int j = 0; j < top_k; ++j) if (norm) sw[j] = sw[j] / total;
    for (int j = 1; j < top_k; ++j) {
        const unsigned int e = sel[j];
        const float v = sw[j];
        int i = j - 1;
        for (; i >= 0 && sel[i] > e; --i) { sel[i + 1] = sel[i]; sw[i + 1] = sw[i]; }
        sel[i + 1] = e;
        sw[i + 1] = v;
    }
    for (int j = 0; j < top_k; ++j) {
        ids[(size_t)t * top_k + j] = sel[j];
        w[(size_t)t * top_k + j] = sw[j];
    }
}
#define ATHENA_ROUTE(S, NAME)                                                                  \
extern "C" __global__ void athena_moe_route_##NAME(                                            \
    const S::T* __restrict__ logits, unsigned int* __restrict__ ids, float* __restrict__ w,    \
    int n_experts, int top_k, int norm) {                                                      \
    moe_route<S>(logits, ids, w, n_experts, top_k, norm);                                      \
}
ATHENA_ROUTE(Bf16, bf16)
ATHENA_ROUTE(F16, f16)
ATHENA_ROUTE(F32, f32)
// The block's output for one token: h [tokens·top_k, I] (pair j of token t at row t·top_k + j,
// its expert ids[t·top_k + j], ascending) through each pair's down rows, each scaled by its
// weight rounded to bf16, summed over the pairs in ascending expert order with every partial
// sum rounded (as the reference's index_add in bf16 does). One warp per output row; the
// pairs' dot products are accumulated side by side.
extern "C" __global__ void athena_moe_down_sum_bf16(
    const uint4* __restrict__ h, const uint4* __restrict__ wd,
    const unsigned int* __restrict__ ids, const float* __restrict__ w,
    unsigned short* __restrict__ y, int top_k, int n_out, int k8) {
    const int t = blockIdx.y, lane = threadIdx.x & 31;
    const int n = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (n >= n_out) return;
    const unsigned int* ti = ids + (size_t)t * top_k;
    const uint4* hr = h + (size_t)t * top_k * k8;
    size_t row[MAX_ROUTED];
    float d[MAX_ROUTED];
#pragma unroll
    for (int j = 0; j < MAX_ROUTED; ++j) {
        row[j] = j < top_k ? ((size_t)ti[j] * n_out + n) * k8 : 0;
        d[j] = 0.f;
    }
    for (int i = lane; i < k8; i += 32) {
#pragma unroll
        for (int j = 0; j < MAX_ROUTED; ++j)
            if (j < top_k) d[j] += dot8(wd[row[j] + i], hr[(size_t)j * k8 + i]);
    }
    float acc = 0.f;
#pragma unroll
    for (int j = 0; j < MAX_ROUTED; ++j) {
        if (j < top_k) {
            const float dj = warp_sum(d[j]);
            acc = rnd(acc + rnd(rnd(dj) * rnd(w[(size_t)t * top_k + j])));
        }
    }
    if (lane == 0) y[(size_t)t * n_out + n] = f2bf(acc);
}
"#;

/// Warps (output rows) per block of the GEMV kernels.
const ROWS_PER_BLOCK: u32 = 8;

/// The GEMV and routing kernels (NVRTC, compiled once per process).
static GEMV: Program = Program::new("athena_moe", GEMV_SRC);

/// The most experts per token the routing kernel selects (`MAX_ROUTED` of [`GEMV_SRC`]).
const MAX_ROUTED: usize = 16;

/// Compiles the kernels of this module and loads them on `dev`, so that no forward pass
/// pays for it.
pub(crate) fn prepare(dev: &candle_core::cuda_backend::CudaDevice) -> Result<()> {
    for name in [
        "athena_moe_gate_up_bf16",
        "athena_moe_down_bf16",
        "athena_moe_down_sum_bf16",
        "athena_moe_route_bf16",
        "athena_moe_route_f16",
        "athena_moe_route_f32",
    ] {
        GEMV.function(dev, name)?;
    }
    Ok(())
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
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
        use candle_core::cuda_backend::WrapErr;
        use half::bf16;

        let (n, hidden) = x.dims2()?;
        let (_, inter, _) = self.gate.dims3()?;
        let pairs = n * top_k;
        let dev = x.device().as_cuda_device()?.clone();
        let stream = dev.cuda_stream();
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
        let (xs, wg, wu, wd, is, ws) = (
            slice::<bf16>(&xs)?,
            slice::<bf16>(&wg)?,
            slice::<bf16>(&wu)?,
            slice::<bf16>(&wd)?,
            slice::<u32>(&is)?,
            slice::<f32>(&ws)?,
        );
        let block = |rows: usize| gemv_grid(rows, pairs);

        let h = unsafe { dev.alloc::<bf16>(pairs * inter) }?;
        let func = GEMV.function(&dev, "athena_moe_gate_up_bf16")?;
        let (top_k_arg, inter_arg, hk8) = (top_k as i32, inter as i32, (hidden / 8) as i32);
        let mut b = stream.launch_builder(&func);
        b.arg(xs).arg(wg).arg(wu).arg(is).arg(&h);
        b.arg(&top_k_arg).arg(&n_experts).arg(&inter_arg).arg(&hk8);
        unsafe { b.launch(block(inter)) }.w()?;

        let y = unsafe { dev.alloc::<bf16>(pairs * hidden) }?;
        let func = GEMV.function(&dev, "athena_moe_down_bf16")?;
        let (hidden_arg, ik8, norm) = (hidden as i32, (inter / 8) as i32, norm_topk_prob as i32);
        let mut b = stream.launch_builder(&func);
        b.arg(&h).arg(wd).arg(is).arg(ws).arg(&y);
        b.arg(&top_k_arg)
            .arg(&n_experts)
            .arg(&norm)
            .arg(&hidden_arg)
            .arg(&ik8);
        unsafe { b.launch(block(hidden)) }.w()?;

        Ok(wrap(y, &dev, (pairs, hidden)))
    }

    /// Decoding's block with routing on the device in one launch: `x` [N, H] and its router
    /// logits [N, E] → [N, H]. The routing kernel writes each token's `top_k` experts
    /// (ascending) and weights, the gate/up GEMV reads them, and the down GEMV sums each
    /// token's experts in the same launch.
    fn gemv_routed(
        &self,
        x: &Tensor,
        router_logits: &Tensor,
        top_k: usize,
        norm_topk_prob: bool,
    ) -> Result<Tensor> {
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;
        use half::{bf16, f16};

        let (n, hidden) = x.dims2()?;
        let (n_experts, inter, _) = self.gate.dims3()?;
        let pairs = n * top_k;
        let dev = x.device().as_cuda_device()?.clone();
        let stream = dev.cuda_stream();
        let x = owned(x)?;
        let logits = owned(router_logits)?;
        let (xs, _) = x.storage_and_layout();
        let (ls, _) = logits.storage_and_layout();
        let (wg, _) = self.gate.storage_and_layout();
        let (wu, _) = self.up.storage_and_layout();
        let (wd, _) = self.down.storage_and_layout();
        let (xs, wg, wu, wd) = (
            slice::<bf16>(&xs)?,
            slice::<bf16>(&wg)?,
            slice::<bf16>(&wu)?,
            slice::<bf16>(&wd)?,
        );
        let (top_k_arg, e_arg, norm) = (top_k as i32, n_experts as i32, norm_topk_prob as i32);

        let ids = unsafe { dev.alloc::<u32>(pairs) }?;
        let weights = unsafe { dev.alloc::<f32>(pairs) }?;
        let route = LaunchConfig {
            grid_dim: (n as u32, 1, 1),
            block_dim: (32, 1, 1),
            shared_mem_bytes: (n_experts * std::mem::size_of::<f32>()) as u32,
        };
        let name = match logits.dtype() {
            DType::BF16 => "athena_moe_route_bf16",
            DType::F16 => "athena_moe_route_f16",
            _ => "athena_moe_route_f32",
        };
        let func = GEMV.function(&dev, name)?;
        let mut b = stream.launch_builder(&func);
        match logits.dtype() {
            DType::BF16 => b.arg(slice::<bf16>(&ls)?),
            DType::F16 => b.arg(slice::<f16>(&ls)?),
            _ => b.arg(slice::<f32>(&ls)?),
        };
        b.arg(&ids)
            .arg(&weights)
            .arg(&e_arg)
            .arg(&top_k_arg)
            .arg(&norm);
        unsafe { b.launch(route) }.w()?;

        // The gate/up kernel reads pair p's expert at ids[(p / top_k)·stride + p % top_k]:
        // stride top_k for the routing kernel's [N, top_k].
        let h = unsafe { dev.alloc::<bf16>(pairs * inter) }?;
        let func = GEMV.function(&dev, "athena_moe_gate_up_bf16")?;
        let (inter_arg, hk8) = (inter as i32, (hidden / 8) as i32);
        let mut b = stream.launch_builder(&func);
        b.arg(xs).arg(wg).arg(wu).arg(&ids).arg(&h);
        b.arg(&top_k_arg).arg(&top_k_arg).arg(&inter_arg).arg(&hk8);
        unsafe { b.launch(gemv_grid(inter, pairs)) }.w()?;

        let y = unsafe { dev.alloc::<bf16>(n * hidden) }?;
        let func = GEMV.function(&dev, "athena_moe_down_sum_bf16")?;
        let (hidden_arg, ik8) = (hidden as i32, (inter / 8) as i32);
        let mut b = stream.launch_builder(&func);
        b.arg(&h).arg(wd).arg(&ids).arg(&weights).arg(&y);
        b.arg(&top_k_arg).arg(&hidden_arg).arg(&ik8);
        unsafe { b.launch(gemv_grid(hidden, n)) }.w()?;

        Ok(wrap(y, &dev, (n, hidden)))
    }
}

/// The launch shape of the GEMV kernels: one warp per output row, [`ROWS_PER_BLOCK`] rows a
/// block, one grid row per task (a routed pair, or a token for the summing down kernel).
fn gemv_grid(rows: usize, tasks: usize) -> candle_core::cuda_backend::cudarc::driver::LaunchConfig {
    candle_core::cuda_backend::cudarc::driver::LaunchConfig {
        grid_dim: (
            rows.div_ceil(ROWS_PER_BLOCK as usize) as u32,
            tasks as u32,
            1,
        ),
        block_dim: (32 * ROWS_PER_BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}
