//! The [`MemoryActionHead`]'s forward and backward passes over plain f32 rows, for training.
//!
//! [`MemoryActionHead::batch_scores`] builds the scores from candle ops, and candle's autograd
//! can differentiate them; at the head's sizes (a few dozen rows of width 64 to 256 a step)
//! nearly all of that time is per-op overhead: an allocation per op and per gradient, a
//! thread-count query per matrix product, padding rows computed and differentiated. A
//! training step here instead reads the parameters once, runs the same architecture (see the
//! [module documentation](crate::models::action_head)) in one pass over the batch's real rows
//! only, keeps what the backward pass needs, and returns every parameter's gradient in one
//! more pass. Products go through [`crate::kernels::dot4`]. The values equal `batch_scores`'s
//! up to f32 rounding (summation order); the gradients equal candle's autograd of them
//! (tested in `head_grad/tests.rs`).
//!
//! Scores of one example never depend on the other examples of its batch, bit for bit.

use candle_core::Var;

use crate::error::{Error, Result};
use crate::kernels::{dot, dot4};
use crate::models::action_head::params::{per_param, Param, PARAM_COUNT};
use crate::models::action_head::{MemoryActionHead, MASKED_LOGIT};

/// The head's parameters as row-major f32, indexed by [`Param::index`], with the shapes of
/// the parameter table.
#[derive(Debug, Clone)]
pub(crate) struct Params {
    /// Input width `D`.
    pub input: usize,
    /// Projection width `d`.
    pub d: usize,
    /// Number of operations `n`.
    pub n_ops: usize,
    /// Whether each operation names a target (masked for examples without memories).
    pub target_op: Vec<bool>,
    /// The tensors, indexed by [`Param::index`].
    pub values: [Vec<f32>; PARAM_COUNT],
}

impl Params {
    /// The current values of `head`'s variables.
    pub fn read(head: &MemoryActionHead) -> Result<Self> {
        let cfg = head.config();
        let (input, d, n_ops) = (head.input_dim(), cfg.proj_dim, cfg.operations.len());
        let dims = cfg.dims(input);
        let data = head
            .varmap()
            .data()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let values = per_param(|param| {
            let name = param.name();
            let var: &Var = data
                .get(name)
                .ok_or_else(|| Error::tensor(name, "missing"))?;
            let values = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            let expected = param.numel(dims).unwrap_or(usize::MAX);
            if values.len() != expected {
                return Err(Error::tensor(
                    name,
                    format!("holds {} values, expected {expected}", values.len()),
                ));
            }
            Ok(values)
        })?;
        let target_op = cfg
            .operations
            .iter()
            .map(|op| cfg.target_operations.iter().any(|t| t == op))
            .collect();
        Ok(Self {
            input,
            d,
            n_ops,
            target_op,
            values,
        })
    }

    fn get(&self, param: Param) -> &[f32] {
        &self.values[param.index()]
    }
}

/// The inputs of a batch: each example's fact and real memories (no padding).
#[derive(Debug, Clone, Default)]
pub(crate) struct Rows {
    /// Input width `D`.
    pub dim: usize,
    /// `[B, D]`.
    pub facts: Vec<f32>,
    /// `[Σ counts, D]`: example 0's memories, then example 1's, ...
    pub memories: Vec<f32>,
    /// Memories of each example.
    pub counts: Vec<usize>,
}

impl Rows {
    /// Examples in the batch.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// The padded memory length `M` of the batch (the longest list).
    pub fn max_count(&self) -> usize {
        self.counts.iter().copied().max().unwrap_or(0)
    }
}

/// `a · btᵀ`: `a` `[m, k]`, `bt` `[n, k]` → `[m, n]`, row-major; four rows of `bt` at a time.
fn matmul_t(a: &[f32], m: usize, bt: &[f32], n: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    if k == 0 {
        return out;
    }
    let full = n / 4 * 4;
    for (i, row) in a.chunks_exact(k).take(m).enumerate() {
        let o = &mut out[i * n..(i + 1) * n];
        for j in (0..full).step_by(4) {
            let r = dot4(
                row,
                [
                    &bt[j * k..(j + 1) * k],
                    &bt[(j + 1) * k..(j + 2) * k],
                    &bt[(j + 2) * k..(j + 3) * k],
                    &bt[(j + 3) * k..(j + 4) * k],
                ],
            );
            o[j..j + 4].copy_from_slice(&r);
        }
        for j in full..n {
            o[j] = dot(row, &bt[j * k..(j + 1) * k]);
        }
    }
    out
}

/// Adds `bias` to every row of `y`.
fn add_bias(y: &mut [f32], bias: &[f32]) {
    for row in y.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

/// Column sums of `x` `[r, c]` added to `out` `[c]`.
fn add_col_sums(out: &mut [f32], x: &[f32]) {
    for row in x.chunks_exact(out.len()) {
        for (o, v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
}

/// `y += a · x` (nothing when `a` is 0).
#[inline]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    if a == 0.0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 (checked above).
        return unsafe { axpy_avx2(y, a, x) };
    }
    axpy_portable(y, a, x);
}

#[inline]
fn axpy_portable(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// [`axpy_portable`] compiled for AVX2 (eight lanes; multiply then add, as the portable one).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(y: &mut [f32], a: f32, x: &[f32]) {
    axpy_portable(y, a, x);
}

/// `gw += gᵀ · x`: `g` `[r, out]`, `x` `[r, in]`, `gw` `[out, in]` (the weight gradient of
/// a linear layer), skipping zero entries of `g`.
fn add_outer(gw: &mut [f32], g: &[f32], x: &[f32], out: usize, inp: usize) {
    if out == 0 || inp == 0 {
        return;
    }
    for (gr, xr) in g.chunks_exact(out).zip(x.chunks_exact(inp)) {
        for (o, &a) in gr.iter().enumerate() {
            axpy(&mut gw[o * inp..(o + 1) * inp], a, xr);
        }
    }
}

/// `g · w`: `g` `[r, out]`, `w` `[out, in]` → `[r, in]` (the input gradient of a linear
/// layer), skipping zero entries of `g`.
fn matmul_left(g: &[f32], w: &[f32], out: usize, inp: usize) -> Vec<f32> {
    if out == 0 {
        return Vec::new();
    }
    let rows = g.len() / out;
    let mut res = vec![0f32; rows * inp];
    for (gr, rr) in g.chunks_exact(out).zip(res.chunks_exact_mut(inp)) {
        for (o, &a) in gr.iter().enumerate() {
            axpy(rr, a, &w[o * inp..(o + 1) * inp]);
        }
    }
    res
}

/// What one forward pass computed, kept for [`backward`].
#[derive(Debug, Clone)]
pub(crate) struct Tape {
    b: usize,
    /// Padded memory length.
    pub m: usize,
    /// First memory row of each example in the `[Σ counts, ·]` arrays.
    offsets: Vec<usize>,
    counts: Vec<usize>,
    /// `tanh(P x + p)` of the facts, then of the memories: `[B + Σ counts, d]`.
    projected: Vec<f32>,
    /// Attention weights, `[Σ counts]`.
    alpha: Vec<f32>,
    /// `[f; c; f ⊙ c]`, `[B, 3d]`.
    features: Vec<f32>,
    /// `W_t f + w_s`, `[B, d]`.
    query: Vec<f32>,
    /// `[f ⊙ m; |f − m|]`, `[Σ counts, 2d]`.
    pairs: Vec<f32>,
    /// The match MLP's hidden layer, `[Σ counts, d]`.
    hidden: Vec<f32>,
    /// Operation logits `[B, n]`, target operations [`MASKED_LOGIT`] without memories.
    pub op_logits: Vec<f32>,
    /// Target logits `[B, M]`, padding [`MASKED_LOGIT`].
    pub target_logits: Vec<f32>,
}

/// The head's scores of a batch, keeping what [`backward`] needs.
pub(crate) fn forward(p: &Params, rows: &Rows) -> Result<Tape> {
    let (b, d, n, width) = (rows.len(), p.d, p.n_ops, p.input);
    let total: usize = rows.counts.iter().sum();
    if rows.dim != width || rows.facts.len() != b * width || rows.memories.len() != total * width {
        return Err(Error::invalid(
            "features",
            format!(
                "rows of width {} do not fit the head's input_dim {width}",
                rows.dim
            ),
        ));
    }
    let m = rows.max_count();
    let mut offsets = Vec::with_capacity(b);
    let mut at = 0;
    for &c in &rows.counts {
        offsets.push(at);
        at += c;
    }

    // The shared projection of facts and memories, in one product.
    let mut inputs = Vec::with_capacity((b + total) * width);
    inputs.extend_from_slice(&rows.facts);
    inputs.extend_from_slice(&rows.memories);
    let mut projected = matmul_t(&inputs, b + total, p.get(Param::ProjWeight), d, width);
    add_bias(&mut projected, p.get(Param::ProjBias));
    for v in &mut projected {
        *v = v.tanh();
    }
    let (f_all, mem_all) = projected.split_at(b * d);

    // Attention over each example's memories, and [f; c; f ⊙ c].
    let scale = (d as f32).sqrt();
    let mut alpha = vec![0f32; total];
    let mut features = vec![0f32; b * 3 * d];
    for i in 0..b {
        let f = &f_all[i * d..(i + 1) * d];
        let (o, c) = (offsets[i], rows.counts[i]);
        let mut ctx = vec![0f32; d];
        if c > 0 {
            let a = &mut alpha[o..o + c];
            for (j, a) in a.iter_mut().enumerate() {
                *a = dot(f, &mem_all[(o + j) * d..(o + j + 1) * d]) / scale;
            }
            let max = a.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for a in a.iter_mut() {
                *a = (*a - max).exp();
                sum += *a;
            }
            for (j, a) in a.iter_mut().enumerate() {
                *a /= sum;
                axpy(&mut ctx, *a, &mem_all[(o + j) * d..(o + j + 1) * d]);
            }
        }
        let row = &mut features[i * 3 * d..(i + 1) * 3 * d];
        row[..d].copy_from_slice(f);
        row[d..2 * d].copy_from_slice(&ctx);
        for k in 0..d {
            row[2 * d + k] = f[k] * ctx[k];
        }
    }
    let mut op_logits = matmul_t(&features, b, p.get(Param::OpWeight), n, 3 * d);
    add_bias(&mut op_logits, p.get(Param::OpBias));
    for (i, row) in op_logits.chunks_exact_mut(n).enumerate() {
        if rows.counts[i] == 0 {
            for (v, &masked) in row.iter_mut().zip(&p.target_op) {
                if masked {
                    *v += MASKED_LOGIT;
                }
            }
        }
    }

    // Targets: a bilinear score plus the match MLP over [f ⊙ m; |f − m|].
    let mut query = matmul_t(f_all, b, p.get(Param::TargetWeight), d, d);
    add_bias(&mut query, p.get(Param::TargetBias));
    let mut pairs = vec![0f32; total * 2 * d];
    for i in 0..b {
        let f = &f_all[i * d..(i + 1) * d];
        for r in offsets[i]..offsets[i] + rows.counts[i] {
            let mem = &mem_all[r * d..(r + 1) * d];
            let pair = &mut pairs[r * 2 * d..(r + 1) * 2 * d];
            for k in 0..d {
                pair[k] = f[k] * mem[k];
                pair[d + k] = (f[k] - mem[k]).abs();
            }
        }
    }
    let mut hidden = matmul_t(&pairs, total, p.get(Param::MatchWeight), d, 2 * d);
    add_bias(&mut hidden, p.get(Param::MatchBias));
    for v in &mut hidden {
        *v = v.tanh();
    }
    let u = p.get(Param::MatchOutWeight);
    let mut target_logits = vec![MASKED_LOGIT; b * m];
    for i in 0..b {
        let q = &query[i * d..(i + 1) * d];
        for j in 0..rows.counts[i] {
            let r = offsets[i] + j;
            let bilinear = dot(&mem_all[r * d..(r + 1) * d], q);
            let matched = dot(&hidden[r * d..(r + 1) * d], u);
            target_logits[i * m + j] = bilinear + matched;
        }
    }
    Ok(Tape {
        b,
        m,
        offsets,
        counts: rows.counts.clone(),
        projected,
        alpha,
        features,
        query,
        pairs,
        hidden,
        op_logits,
        target_logits,
    })
}

/// The gradient of every parameter, given the gradients of the loss with respect to the
/// operation logits `[B, n]` and the target logits `[B, M]` of `tape` (padding ignored).
pub(crate) fn backward(
    p: &Params,
    rows: &Rows,
    tape: &Tape,
    g_op: &[f32],
    g_target: &[f32],
) -> Result<[Vec<f32>; PARAM_COUNT]> {
    let (b, d, n, width, m) = (tape.b, p.d, p.n_ops, p.input, tape.m);
    if g_op.len() != b * n || g_target.len() != b * m {
        return Err(Error::invalid(
            "gradients",
            format!(
                "expected [{b}, {n}] and [{b}, {m}] logit gradients, got {} and {} values",
                g_op.len(),
                g_target.len()
            ),
        ));
    }
    let total = tape.alpha.len();
    let (f_all, mem_all) = tape.projected.split_at(b * d);
    let mut grads: [Vec<f32>; PARAM_COUNT] = std::array::from_fn(|i| vec![0f32; p.values[i].len()]);

    // op = W_op [f; c; f ⊙ c] + b_op.
    add_col_sums(&mut grads[Param::OpBias.index()], g_op);
    add_outer(
        &mut grads[Param::OpWeight.index()],
        g_op,
        &tape.features,
        n,
        3 * d,
    );
    let g_features = matmul_left(g_op, p.get(Param::OpWeight), n, 3 * d);

    // Gradients of the projected rows: facts, then memories.
    let mut g_proj = vec![0f32; (b + total) * d];
    let (g_f_all, g_mem_all) = g_proj.split_at_mut(b * d);

    // Target logits: g_t per real memory.
    let u = p.get(Param::MatchOutWeight);
    let mut g_query = vec![0f32; b * d];
    let mut g_hidden_pre = vec![0f32; total * d];
    for i in 0..b {
        for j in 0..tape.counts[i] {
            let r = tape.offsets[i] + j;
            let g = g_target[i * m + j];
            if g == 0.0 {
                continue;
            }
            let mem = &mem_all[r * d..(r + 1) * d];
            let q = &tape.query[i * d..(i + 1) * d];
            // bilinear = m · q
            axpy(&mut g_query[i * d..(i + 1) * d], g, mem);
            axpy(&mut g_mem_all[r * d..(r + 1) * d], g, q);
            // matched = u · h, h = tanh(z)
            let h = &tape.hidden[r * d..(r + 1) * d];
            axpy(&mut grads[Param::MatchOutWeight.index()], g, h);
            let gz = &mut g_hidden_pre[r * d..(r + 1) * d];
            for k in 0..d {
                gz[k] = g * u[k] * (1.0 - h[k] * h[k]);
            }
        }
    }
    // z = U pair + u_b.
    add_col_sums(&mut grads[Param::MatchBias.index()], &g_hidden_pre);
    add_outer(
        &mut grads[Param::MatchWeight.index()],
        &g_hidden_pre,
        &tape.pairs,
        d,
        2 * d,
    );
    let g_pairs = matmul_left(&g_hidden_pre, p.get(Param::MatchWeight), d, 2 * d);
    // q = W_t f + w_s.
    add_col_sums(&mut grads[Param::TargetBias.index()], &g_query);
    add_outer(
        &mut grads[Param::TargetWeight.index()],
        &g_query,
        f_all,
        d,
        d,
    );
    let g_f_query = matmul_left(&g_query, p.get(Param::TargetWeight), d, d);

    let scale = (d as f32).sqrt();
    for i in 0..b {
        let f = &f_all[i * d..(i + 1) * d];
        let gf = &mut g_f_all[i * d..(i + 1) * d];
        let gfe = &g_features[i * 3 * d..(i + 1) * 3 * d];
        let ctx = &tape.features[i * 3 * d + d..i * 3 * d + 2 * d];
        // [f; c; f ⊙ c]
        let mut g_ctx = vec![0f32; d];
        for k in 0..d {
            gf[k] += gfe[k] + gfe[2 * d + k] * ctx[k] + g_f_query[i * d + k];
            g_ctx[k] = gfe[d + k] + gfe[2 * d + k] * f[k];
        }
        let (o, c) = (tape.offsets[i], tape.counts[i]);
        if c == 0 {
            continue;
        }
        // c = Σ α_j m_j, α = softmax(f · m_j / √d).
        let alpha = &tape.alpha[o..o + c];
        let g_alpha: Vec<f32> = (0..c)
            .map(|j| dot(&g_ctx, &mem_all[(o + j) * d..(o + j + 1) * d]))
            .collect();
        let s: f32 = alpha.iter().zip(&g_alpha).map(|(a, g)| a * g).sum();
        for j in 0..c {
            let r = o + j;
            let mem = &mem_all[r * d..(r + 1) * d];
            let g_att = alpha[j] * (g_alpha[j] - s) / scale;
            axpy(gf, g_att, mem);
            let gm = &mut g_mem_all[r * d..(r + 1) * d];
            axpy(gm, alpha[j], &g_ctx);
            axpy(gm, g_att, f);
            // [f ⊙ m; |f − m|]
            let gp = &g_pairs[r * 2 * d..(r + 1) * 2 * d];
            for k in 0..d {
                let sign = if f[k] - mem[k] >= 0.0 { 1.0 } else { -1.0 };
                gf[k] += gp[k] * mem[k] + gp[d + k] * sign;
                gm[k] += gp[k] * f[k] - gp[d + k] * sign;
            }
        }
    }

    // tanh(P x + p) of every row.
    for (g, y) in g_proj.iter_mut().zip(&tape.projected) {
        *g *= 1.0 - y * y;
    }
    add_col_sums(&mut grads[Param::ProjBias.index()], &g_proj);
    let (g_facts, g_mems) = g_proj.split_at(b * d);
    add_outer(
        &mut grads[Param::ProjWeight.index()],
        g_facts,
        &rows.facts,
        d,
        width,
    );
    add_outer(
        &mut grads[Param::ProjWeight.index()],
        g_mems,
        &rows.memories,
        d,
        width,
    );
    Ok(grads)
}

/// Log-softmax of each row of `x` `[r, c]`, in place (f32, max-subtracted).
pub(crate) fn log_softmax_rows(x: &mut [f32], c: usize) {
    if c == 0 {
        return;
    }
    for row in x.chunks_exact_mut(c) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
        let log_sum = sum.ln();
        for v in row.iter_mut() {
            *v = *v - max - log_sum;
        }
    }
}

#[cfg(test)]
mod tests;
