//! `OlmoeSparseMoeBlock`: router softmax (f32) over all experts, then top-k, optional
//! renormalisation, and `down(silu(gate(x)) · up(x))` summed with the routing weights.
//!
//! Token rows are grouped by expert and each routed expert runs once over its rows; experts
//! no token chose are never touched. Experts are summed in ascending index order, as the
//! reference does.
//!
//! On the CPU, when every expert is a plain dense (f32 or bf16) or quantized matrix, the block
//! runs on [`crate::kernels`] over plain buffers: gate and up in one pass over interleaved rows
//! with SiLU applied as their products come out, then down, then the weighted sum. Values are
//! rounded to the compute dtype where the reference's tensors would hold them, so a bf16
//! model sums what transformers' bf16 model sums.

use candle_core::{DType, Tensor};
use half::bf16;

use super::linear::Linear;
use super::weights::Weights;
use crate::checkpoint::{ExpertProj, OlmoeArgs};
use crate::error::Result;
use crate::kernels::{self, WeightMatrix};
use crate::lora::{ExpertProjKind, LoraTarget};

/// The experts of one layer: one [`Linear`] per expert and projection (dense experts are
/// views of the canonical stacked [E, out, in] tensors).
#[derive(Debug, Clone)]
struct Experts {
    /// [I, H] each.
    gate: Vec<Linear>,
    /// [I, H] each.
    up: Vec<Linear>,
    /// [H, I] each.
    down: Vec<Linear>,
}

/// A layer's router and experts.
#[derive(Debug, Clone)]
pub(crate) struct SparseMoeBlock {
    gate: Linear,
    experts: Experts,
    top_k: usize,
    norm_topk_prob: bool,
    /// Every expert can run on the CPU kernels (dense f32/bf16 or quantized, no LoRA).
    cpu_kernels: bool,
    /// The same experts as stacked device tensors, for the grouped CUDA path.
    #[cfg(feature = "cuda")]
    stacked: Option<super::moe_cuda::StackedExperts>,
}

/// Gate and up rows interleaved (row 2i is gate row i, row 2i+1 up row i), so one pass of
/// [`kernels::matmul`] computes both projections while each row pair is hot.
struct GateUp<'a> {
    gate: &'a dyn WeightMatrix,
    up: &'a dyn WeightMatrix,
}

impl WeightMatrix for GateUp<'_> {
    fn rows(&self) -> usize {
        2 * self.gate.rows()
    }
    fn cols(&self) -> usize {
        self.gate.cols()
    }
    fn row<'a>(&'a self, r: usize, buf: &'a mut [f32]) -> &'a [f32] {
        match r % 2 {
            0 => self.gate.row(r / 2, buf),
            _ => self.up.row(r / 2, buf),
        }
    }
    fn dot(&self, r: usize, x: &[f32], buf: &mut [f32]) -> f32 {
        match r % 2 {
            0 => self.gate.dot(r / 2, x, buf),
            _ => self.up.dot(r / 2, x, buf),
        }
    }
    fn dot_rows(
        &self,
        rows: std::ops::Range<usize>,
        xs: &[&[f32]],
        out: &mut [f32],
        buf: &mut [f32],
    ) {
        // Gate rows are the even rows of the range, up rows the odd ones.
        let n = xs.len();
        let gate = rows.start.div_ceil(2)..rows.end.div_ceil(2);
        let up = rows.start / 2..rows.end / 2;
        let mut g = vec![0f32; gate.len() * n];
        let mut u = vec![0f32; up.len() * n];
        self.gate.dot_rows(gate.clone(), xs, &mut g, buf);
        self.up.dot_rows(up.clone(), xs, &mut u, buf);
        for (r, out) in rows.zip(out.chunks_exact_mut(n.max(1))) {
            let (src, i) = match r % 2 {
                0 => (&g, r / 2 - gate.start),
                _ => (&u, r / 2 - up.start),
            };
            out.copy_from_slice(&src[i * n..(i + 1) * n]);
        }
    }
    fn reads_prepared(&self) -> bool {
        self.gate.reads_prepared() && self.up.reads_prepared()
    }
    fn input_form(&self) -> kernels::InputForm {
        self.gate.input_form()
    }
    fn bf16_row(&self, r: usize) -> Option<&[bf16]> {
        match r % 2 {
            0 => self.gate.bf16_row(r / 2),
            _ => self.up.bf16_row(r / 2),
        }
    }
}

/// Tokens from which [`SparseMoeBlock::forward`]'s work around the products runs in parallel.
const PAR_MIN_TOKENS: usize = 8;

fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

/// Routing of a batch of token rows: for each row its chosen experts and weights.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Routing {
    /// Per row, `top_k` (expert, weight) pairs in descending probability.
    pub choices: Vec<Vec<(usize, f32)>>,
}

impl Routing {
    /// Softmax over each row of `logits` [N, E] in f32, top-k, optional renormalisation.
    pub(crate) fn from_logits(logits: &Tensor, top_k: usize, norm_topk_prob: bool) -> Result<Self> {
        let probs = candle_nn::ops::softmax_last_dim(&logits.to_dtype(DType::F32)?)?;
        let probs: Vec<Vec<f32>> = probs.to_vec2()?;
        let choices = probs
            .into_iter()
            .map(|row| {
                let mut idx: Vec<usize> = (0..row.len()).collect();
                // Descending probability; equal values keep the lower index first (stable).
                idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
                let mut chosen: Vec<(usize, f32)> =
                    idx[..top_k].iter().map(|&e| (e, row[e])).collect();
                if norm_topk_prob {
                    let sum: f32 = chosen.iter().map(|c| c.1).sum();
                    for c in &mut chosen {
                        c.1 /= sum;
                    }
                }
                chosen
            })
            .collect();
        Ok(Routing { choices })
    }

    /// For each expert in ascending order: the rows routed to it and their weights.
    pub(crate) fn by_expert(&self, num_experts: usize) -> Vec<(usize, Vec<u32>, Vec<f32>)> {
        let mut groups: Vec<(Vec<u32>, Vec<f32>)> = vec![(vec![], vec![]); num_experts];
        for (row, choices) in self.choices.iter().enumerate() {
            for &(e, w) in choices {
                groups[e].0.push(row as u32);
                groups[e].1.push(w);
            }
        }
        groups
            .into_iter()
            .enumerate()
            .filter(|(_, (rows, _))| !rows.is_empty())
            .map(|(e, (rows, w))| (e, rows, w))
            .collect()
    }
}

impl SparseMoeBlock {
    pub(crate) fn new(w: &Weights, args: &OlmoeArgs, layer: usize) -> Result<Self> {
        let (e, h) = (args.num_experts, args.hidden_size);
        let name = format!("model.layers.{layer}.mlp.gate");
        let gate = w.linear(
            &name,
            e,
            h,
            false,
            Some(LoraTarget::Router { layer }),
            false,
        )?;
        let experts = |proj: ExpertProj, kind: ExpertProjKind| {
            w.experts(layer, proj, |expert| LoraTarget::Expert {
                layer,
                expert,
                proj: kind,
            })
        };
        #[cfg(feature = "cuda")]
        let stacked = Self::stacked(w, layer)?;
        #[cfg(feature = "cuda")]
        let views = match &stacked {
            // Dense experts as views of the stacks the grouped path multiplies.
            Some(s) => {
                let views = |t: &Tensor| -> Result<Vec<Linear>> {
                    (0..e).map(|x| Ok(Linear::dense(t.get(x)?, None))).collect()
                };
                Some(Experts {
                    gate: views(&s.gate)?,
                    up: views(&s.up)?,
                    down: views(&s.down)?,
                })
            }
            None => None,
        };
        #[cfg(not(feature = "cuda"))]
        let views: Option<Experts> = None;
        let experts = match views {
            Some(views) => views,
            None => Experts {
                gate: experts(ExpertProj::Gate, ExpertProjKind::Gate)?,
                up: experts(ExpertProj::Up, ExpertProjKind::Up)?,
                down: experts(ExpertProj::Down, ExpertProjKind::Down)?,
            },
        };
        let mut cpu_kernels = true;
        for l in experts.gate.iter().chain(&experts.up).chain(&experts.down) {
            cpu_kernels &= l.with_rows(|_| ())?.is_some();
        }
        Ok(SparseMoeBlock {
            gate,
            experts,
            top_k: args.num_experts_per_tok,
            norm_topk_prob: args.norm_topk_prob,
            cpu_kernels,
            #[cfg(feature = "cuda")]
            stacked,
        })
    }

    /// Plain dense experts on a CUDA device in a half dtype, with no adapter: loaded as the
    /// canonical stacks, which the grouped path multiplies directly.
    #[cfg(feature = "cuda")]
    fn stacked(w: &Weights, layer: usize) -> Result<Option<super::moe_cuda::StackedExperts>> {
        let module = crate::checkpoint::CheckpointReader::switch_module(layer, ExpertProj::Gate);
        if !w.r.device().is_cuda()
            || !matches!(w.dtype(), DType::BF16 | DType::F16)
            || w.opts.quantize.is_some()
            || w.opts.lora.is_some()
            || w.r.is_quantized(&module)
        {
            return Ok(None);
        }
        Ok(Some(super::moe_cuda::StackedExperts {
            gate: w.r.experts(layer, ExpertProj::Gate)?,
            up: w.r.experts(layer, ExpertProj::Up)?,
            down: w.r.experts(layer, ExpertProj::Down)?,
        }))
    }

    /// Weight bytes one token reads here: the router and `top_k` experts of average size.
    pub(crate) fn token_weight_bytes(&self) -> usize {
        let e = &self.experts;
        let all: usize = e
            .gate
            .iter()
            .chain(&e.up)
            .chain(&e.down)
            .map(Linear::weight_bytes)
            .sum();
        self.gate.weight_bytes() + all * self.top_k / e.gate.len().max(1)
    }

    /// x [B, T, H] → [B, T, H].
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let x = x.reshape((b * t, h))?;
        let router_logits = self.gate.forward(&x)?;
        #[cfg(feature = "cuda")]
        if let Some(stacked) = self.stacked.as_ref().filter(|s| s.runs(&x, self.top_k)) {
            let y = stacked.forward(&x, &router_logits, self.top_k, self.norm_topk_prob)?;
            return Ok(y.reshape((b, t, h))?);
        }
        let routing = Routing::from_logits(&router_logits, self.top_k, self.norm_topk_prob)?;
        let num_experts = self.experts.gate.len();
        if self.cpu_kernels && matches!(x.dtype(), DType::F32 | DType::BF16) {
            let out = self.forward_kernels(&x, &routing)?;
            return Ok(out.reshape((b, t, h))?);
        }
        let mut out = x.zeros_like()?;
        for (e, rows, weights) in routing.by_expert(num_experts) {
            let n = rows.len();
            let rows = Tensor::from_vec(rows, (n,), x.device())?;
            let xs = x.index_select(&rows, 0)?;
            let gate = self.experts.gate[e].forward(&xs)?;
            let up = self.experts.up[e].forward(&xs)?;
            let hidden = (candle_nn::ops::silu(&gate)? * up)?;
            let y = self.experts.down[e].forward(&hidden)?;
            // The reference casts the routing weights to the router's dtype before scaling.
            let w = Tensor::from_vec(weights, (n, 1), x.device())?.to_dtype(x.dtype())?;
            let y = y.broadcast_mul(&w)?;
            out = out.index_add(&rows, &y, 0)?;
        }
        Ok(out.reshape((b, t, h))?)
    }

    /// [`Self::forward`] on the CPU kernels: x [N, H] (f32 or bf16) → [N, H] in x's dtype.
    fn forward_kernels(&self, x: &Tensor, routing: &Routing) -> Result<Tensor> {
        let (n, h) = x.dims2()?;
        // The reference's intermediate tensors are in the compute dtype: round where it would.
        // A closure rather than a function pointer, so that it is inlined into the loops.
        let in_bf16 = x.dtype() == DType::BF16;
        let round = |v: f32| match in_bf16 {
            true => kernels::round_bf16(v),
            false => v,
        };
        let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let groups = routing.by_expert(self.experts.gate.len());
        // Past a few tokens (prefill) the per-token work around the products runs on the
        // kernel pool too; at decode a hand-off would cost more than it saves.
        let parallel = n >= PAR_MIN_TOKENS;
        let map = |count: usize, f: &(dyn Fn(usize) -> Vec<f32> + Sync)| match parallel {
            true => kernels::pool::map(count, f),
            false => (0..count).map(f).collect::<Vec<_>>(),
        };
        // Each expert's input rows: a one-token step's experts all read its row in place.
        let gathered: Vec<Vec<f32>> = match n {
            1 => Vec::new(),
            _ => map(groups.len(), &|g| {
                let mut x = Vec::with_capacity(groups[g].1.len() * h);
                for &r in &groups[g].1 {
                    x.extend_from_slice(&xs[r as usize * h..(r as usize + 1) * h]);
                }
                x
            }),
        };
        let inputs: Vec<&[f32]> = match n {
            1 => vec![&xs[..]; groups.len()],
            _ => gathered.iter().map(Vec::as_slice).collect(),
        };
        // Gate and up of every routed expert in one pass, then down of every one.
        let layers: Vec<&Linear> = groups
            .iter()
            .flat_map(|&(e, _, _)| [&self.experts.gate[e], &self.experts.up[e]])
            .collect();
        let gate_ups = Linear::with_all_rows(&layers, |rows| {
            let pairs: Vec<GateUp<'_>> = rows
                .chunks_exact(2)
                .map(|p| GateUp {
                    gate: p[0],
                    up: p[1],
                })
                .collect();
            let products: Vec<kernels::Product<'_>> = pairs
                .iter()
                .zip(&inputs)
                .zip(&groups)
                .map(|((w, x), (_, rows, _))| kernels::Product {
                    w,
                    x,
                    m: rows.len(),
                })
                .collect();
            kernels::matmul_many(&products)
        })?
        .ok_or_else(|| expert_not_on_kernels(&groups))?;
        let hidden: Vec<Vec<f32>> = map(gate_ups.len(), &|g| {
            gate_ups[g]
                .chunks_exact(2)
                .map(|gu| round(round(silu(round(gu[0]))) * round(gu[1])))
                .collect()
        });
        let downs: Vec<&Linear> = groups
            .iter()
            .map(|&(e, _, _)| &self.experts.down[e])
            .collect();
        let ys = Linear::with_all_rows(&downs, |rows| {
            let products: Vec<kernels::Product<'_>> = rows
                .iter()
                .zip(&hidden)
                .zip(&groups)
                .map(|((&w, x), (_, rows, _))| kernels::Product {
                    w,
                    x,
                    m: rows.len(),
                })
                .collect();
            kernels::matmul_many(&products)
        })?
        .ok_or_else(|| expert_not_on_kernels(&groups))?;
        // Each token's experts in ascending order, as the reference sums them.
        let mut terms: Vec<Vec<(&[f32], f32)>> = vec![Vec::new(); n];
        for ((_, rows, weights), y) in groups.iter().zip(&ys) {
            for ((&r, &w), y) in rows.iter().zip(weights).zip(y.chunks_exact(h)) {
                terms[r as usize].push((y, round(w)));
            }
        }
        let mut out = vec![0f32; n * h];
        let combine = |(acc, terms): (&mut [f32], &Vec<(&[f32], f32)>)| {
            for &(y, w) in terms {
                match in_bf16 {
                    true => {
                        for (a, &y) in acc.iter_mut().zip(y) {
                            *a = round(*a + round(round(y) * w));
                        }
                    }
                    // f32: nothing to round, and a loop the compiler vectorizes.
                    false => {
                        for (a, &y) in acc.iter_mut().zip(y) {
                            *a += y * w;
                        }
                    }
                }
            }
        };
        match parallel {
            true => {
                let per = n.div_ceil(kernels::pool::threads() * 4);
                kernels::pool::for_each_chunk(&mut out, per * h, |c, chunk| {
                    chunk.chunks_mut(h).zip(&terms[c * per..]).for_each(combine)
                })
            }
            false => out.chunks_mut(h).zip(&terms).for_each(combine),
        }
        Ok(Tensor::from_vec(out, (n, h), x.device())?.to_dtype(x.dtype())?)
    }
}

fn expert_not_on_kernels(groups: &[(usize, Vec<u32>, Vec<f32>)]) -> crate::error::Error {
    let experts: Vec<usize> = groups.iter().map(|g| g.0).collect();
    crate::error::Error::internal(
        "experts",
        format!("one of experts {experts:?} is not in a layout the CPU kernels read"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn routing_softmax_topk_and_renorm() {
        let logits = Tensor::new(&[[0.0f32, 1.0, 2.0, 3.0]], &Device::Cpu).unwrap();
        let r = Routing::from_logits(&logits, 2, false).unwrap();
        let z: f32 = [0.0f32, 1.0, 2.0, 3.0].iter().map(|v| v.exp()).sum();
        let (e0, w0) = r.choices[0][0];
        let (e1, w1) = r.choices[0][1];
        assert_eq!((e0, e1), (3, 2));
        assert!((w0 - 3f32.exp() / z).abs() < 1e-6 && (w1 - 2f32.exp() / z).abs() < 1e-6);
        let r = Routing::from_logits(&logits, 2, true).unwrap();
        let s: f32 = r.choices[0].iter().map(|c| c.1).sum();
        assert!((s - 1.0).abs() < 1e-6);
        let groups = r.by_expert(4);
        assert_eq!(groups.iter().map(|g| g.0).collect::<Vec<_>>(), vec![2, 3]);
    }
}
