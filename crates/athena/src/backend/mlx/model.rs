//! OLMoE's forward pass on MLX arrays, in the reference's names
//! (<https://github.com/huggingface/transformers/blob/v5.24.0/src/transformers/models/olmoe/modeling_olmoe.py>). The kernels are those mlx-lm uses
//! (`mlx_lm/models/olmoe.py`, `switch_layers.py`): `quantized_matmul`, `gather_mm` /
//! `gather_qmm` over experts stacked [E, out, in], `fast::rms_norm`, `fast::rope`,
//! `fast::scaled_dot_product_attention`. Where mlx-lm departs from transformers, this file
//! follows transformers: `clip_qkv` clamps q, k and v after the norms, and the RoPE base and
//! linear scaling come from `rope_parameters` as well as `rope_theta` / `rope_scaling`.

use super::ffi::Array;
use super::lora::{LoraLinear, LoraSwitch};
use crate::checkpoint::{OlmoeArgs, RopeScaling};
use crate::error::{Error, Result};

/// A linear layer: dense or affine-quantized, with an optional bias, or either of them with a
/// LoRA update computed apart.
pub(super) enum Linear {
    /// `weight` [out, in].
    Dense { weight: Array, bias: Option<Array> },
    /// mlx-lm's packed `weight`, `scales` and `biases` (`mx.quantize`'s affine format).
    Quantized {
        weight: Array,
        scales: Array,
        biases: Array,
        group_size: usize,
        bits: u8,
        bias: Option<Array>,
    },
    /// `base` plus a LoRA update (mlx-lm's `LoRALinear`).
    Lora { base: Box<Linear>, lora: LoraLinear },
}

impl Linear {
    /// Bytes one product reads: the weight (packed codes, scales and biases when quantized)
    /// and the bias.
    fn weight_bytes(&self) -> usize {
        match self {
            Linear::Dense { weight, bias } => {
                weight.nbytes() + bias.as_ref().map_or(0, Array::nbytes)
            }
            Linear::Quantized {
                weight,
                scales,
                biases,
                bias,
                ..
            } => {
                weight.nbytes()
                    + scales.nbytes()
                    + biases.nbytes()
                    + bias.as_ref().map_or(0, Array::nbytes)
            }
            Linear::Lora { base, lora } => base.weight_bytes() + lora.bytes(),
        }
    }

    /// x @ Wᵀ (+ bias), as mlx-lm's `nn.Linear` / `nn.QuantizedLinear` compute it.
    pub(super) fn forward(&self, x: &Array) -> Result<Array> {
        match self {
            Linear::Dense { weight, bias } => {
                let wt = weight.swapaxes(-1, -2)?;
                match bias {
                    Some(b) => Array::addmm(b, x, &wt),
                    None => x.matmul(&wt),
                }
            }
            Linear::Quantized {
                weight,
                scales,
                biases,
                group_size,
                bits,
                bias,
            } => {
                let y = x.quantized_matmul(weight, scales, biases, *group_size, *bits)?;
                match bias {
                    Some(b) => y.add(b),
                    None => Ok(y),
                }
            }
            Linear::Lora { base, lora } => lora.forward(x, &base.forward(x)?),
        }
    }
}

/// The token embedding: a dense table or a quantized one (rows dequantized on lookup).
pub(super) enum Embedding {
    /// [vocab, hidden].
    Dense(Array),
    /// Packed rows with their scales and biases.
    Quantized {
        weight: Array,
        scales: Array,
        biases: Array,
        group_size: usize,
        bits: u8,
    },
}

impl Embedding {
    fn lookup(&self, ids: &Array) -> Result<Array> {
        match self {
            Embedding::Dense(table) => table.take(ids, 0),
            Embedding::Quantized {
                weight,
                scales,
                biases,
                group_size,
                bits,
            } => Array::dequantize(
                &weight.take(ids, 0)?,
                &scales.take(ids, 0)?,
                &biases.take(ids, 0)?,
                *group_size,
                *bits,
            ),
        }
    }

    /// Bytes of the whole table (what the tied output projection reads).
    fn bytes(&self) -> usize {
        match self {
            Embedding::Dense(table) => table.nbytes(),
            Embedding::Quantized {
                weight,
                scales,
                biases,
                ..
            } => weight.nbytes() + scales.nbytes() + biases.nbytes(),
        }
    }

    /// The table used as the output projection (tied embeddings).
    fn as_linear(&self, x: &Array) -> Result<Array> {
        match self {
            Embedding::Dense(table) => x.matmul(&table.swapaxes(-1, -2)?),
            Embedding::Quantized {
                weight,
                scales,
                biases,
                group_size,
                bits,
            } => x.quantized_matmul(weight, scales, biases, *group_size, *bits),
        }
    }
}

/// One projection of every expert of a layer, stacked [E, out, in].
pub(super) enum Experts {
    /// Float weights.
    Dense(Array),
    /// Packed weights, scales and biases, each with the leading expert axis.
    Quantized {
        weight: Array,
        scales: Array,
        biases: Array,
        group_size: usize,
        bits: u8,
    },
    /// `base` plus a LoRA update per expert (mlx-lm's `LoRASwitchLinear`).
    Lora {
        base: Box<Experts>,
        lora: LoraSwitch,
    },
}

impl Experts {
    /// Bytes of every expert's matrix together.
    fn bytes(&self) -> usize {
        match self {
            Experts::Dense(w) => w.nbytes(),
            Experts::Quantized {
                weight,
                scales,
                biases,
                ..
            } => weight.nbytes() + scales.nbytes() + biases.nbytes(),
            Experts::Lora { base, lora } => base.bytes() + lora.bytes(),
        }
    }

    /// x [.., 1, in] times the expert of each index: [.., k, 1, out].
    fn forward(&self, x: &Array, indices: &Array, sorted: bool) -> Result<Array> {
        match self {
            Experts::Dense(w) => x.gather_mm_t(w, indices, sorted),
            Experts::Quantized {
                weight,
                scales,
                biases,
                group_size,
                bits,
            } => x.gather_qmm(weight, scales, biases, indices, *group_size, *bits, sorted),
            Experts::Lora { base, lora } => {
                lora.forward(x, indices, sorted, &base.forward(x, indices, sorted)?)
            }
        }
    }
}

/// `self_attn`.
pub(super) struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub q_norm: Array,
    pub k_norm: Array,
}

/// `mlp`: the router and the experts.
pub(super) struct SparseMoeBlock {
    pub gate: Linear,
    pub gate_proj: Experts,
    pub up_proj: Experts,
    pub down_proj: Experts,
}

/// One decoder layer.
pub(super) struct DecoderLayer {
    pub input_layernorm: Array,
    pub self_attn: Attention,
    pub post_attention_layernorm: Array,
    pub mlp: SparseMoeBlock,
}

/// The whole model's weights, immutable once loaded.
pub(super) struct Olmoe {
    pub args: OlmoeArgs,
    pub embed_tokens: Embedding,
    pub layers: Vec<DecoderLayer>,
    pub norm: Array,
    /// `None` when tied to the embedding.
    pub lm_head: Option<Linear>,
}

/// The keys and values one layer has seen: [1, kv_heads, positions, head_dim].
#[derive(Default)]
pub(super) struct LayerCache {
    kv: Option<(Array, Array)>,
}

/// One sequence's KV cache.
pub(super) struct Cache {
    pub layers: Vec<LayerCache>,
    /// Positions already cached.
    pub offset: usize,
}

impl Cache {
    pub(super) fn new(layers: usize) -> Self {
        Cache {
            layers: (0..layers).map(|_| LayerCache::default()).collect(),
            offset: 0,
        }
    }
}

/// Below this many (token, expert) pairs the rows go to the experts unsorted, as in mlx-lm.
const SORT_THRESHOLD: usize = 64;

/// One sequence's share of a forward pass through one layer: its new rows (laid after those
/// of the sequences before it), the position of the first, and the layer's cache.
pub(super) struct SeqRows<'c> {
    pub len: usize,
    pub offset: usize,
    pub cache: &'c mut LayerCache,
}

impl Attention {
    /// `x` [1, N, hidden] holds the new rows of every sequence in `seqs`, end to end. The
    /// projections and norms run over all N rows at once; RoPE, the cache and attention run
    /// per sequence, each at its own offset over its own cache.
    fn forward(&self, x: &Array, args: &OlmoeArgs, seqs: &mut [SeqRows<'_>]) -> Result<Array> {
        let (h, kvh, hd) = (
            args.num_attention_heads,
            args.num_key_value_heads,
            args.head_dim,
        );
        let eps = args.rms_norm_eps as f32;
        let mut q = self.q_norm_apply(&self.q_proj.forward(x)?, &self.q_norm, eps)?;
        let mut k = self.q_norm_apply(&self.k_proj.forward(x)?, &self.k_norm, eps)?;
        let mut v = self.v_proj.forward(x)?;
        // transformers clamps after the norms; mlx-lm ignores clip_qkv.
        if let Some(c) = args.clip_qkv {
            let c = c as f32;
            q = q.clip(-c, c)?;
            k = k.clip(-c, c)?;
            v = v.clip(-c, c)?;
        }
        let scale = match args.rope_scaling {
            RopeScaling::Default => 1.0,
            RopeScaling::Linear { factor } => (1.0 / factor) as f32,
        };
        let theta = args.rope_theta as f32;
        let mut outs = Vec::with_capacity(seqs.len());
        let mut start = 0;
        for seq in seqs.iter_mut() {
            let l = seq.len;
            let heads = |t: &Array, n: usize| {
                t.slice(&[0, start, 0], &[1, start + l, n * hd])?
                    .reshape(&[1, l, n, hd])?
                    .transpose(&[0, 2, 1, 3])
            };
            let (q, k, v) = (heads(&q, h)?, heads(&k, kvh)?, heads(&v, kvh)?);
            let q = q.rope(hd, theta, scale, seq.offset)?;
            let k = k.rope(hd, theta, scale, seq.offset)?;
            let (k, v) = match seq.cache.kv.take() {
                Some((pk, pv)) => (
                    Array::concatenate(&[&pk, &k], 2)?,
                    Array::concatenate(&[&pv, &v], 2)?,
                ),
                None => (k, v),
            };
            let o = Array::sdpa(&q, &k, &v, (hd as f32).powf(-0.5), l > 1)?;
            seq.cache.kv = Some((k, v));
            outs.push(o.transpose(&[0, 2, 1, 3])?.reshape(&[1, l, h * hd])?);
            start += l;
        }
        match outs.as_slice() {
            [one] => self.o_proj.forward(one),
            _ => self
                .o_proj
                .forward(&Array::concatenate(&outs.iter().collect::<Vec<_>>(), 1)?),
        }
    }

    /// q_norm / k_norm: RMSNorm over the whole projected width.
    fn q_norm_apply(&self, x: &Array, weight: &Array, eps: f32) -> Result<Array> {
        x.rms_norm(Some(weight), eps)
    }
}

impl SparseMoeBlock {
    fn forward(&self, x: &Array, args: &OlmoeArgs) -> Result<Array> {
        let shape = x.shape();
        let d = shape[2];
        let n = shape[0] * shape[1];
        let k = args.num_experts_per_tok;
        let x_flat = x.reshape(&[n, d])?;
        // Softmax over all experts in float32, then the top k.
        let probs = self.gate.forward(&x_flat)?.softmax(-1, true)?;
        let indices = probs
            .negative()?
            .argpartition(k - 1, -1)?
            .slice(&[0, 0], &[n, k])?;
        let mut scores = probs.take_along_axis(&indices, -1)?;
        if args.norm_topk_prob {
            scores = scores.divide(&scores.sum(-1, true)?)?;
        }
        let y = self.switch_glu(&x_flat, &indices, n, k, d)?;
        let y = y.multiply(&scores.reshape(&[n, k, 1])?)?.sum(-2, false)?;
        y.reshape(&shape)
    }

    /// Each token row through its k experts: [n, k, d]. Many rows are first sorted by expert,
    /// so each expert's weights are read once, as mlx-lm's `SwitchGLU` does.
    fn switch_glu(
        &self,
        x: &Array,
        indices: &Array,
        n: usize,
        k: usize,
        d: usize,
    ) -> Result<Array> {
        let sort = n * k >= SORT_THRESHOLD;
        let (x, idx, inv) = if sort {
            let flat = indices.reshape(&[n * k])?;
            let order = flat.argsort(0)?;
            let inv = order.argsort(0)?;
            let rows = order.floor_divide(&Array::scalar(k as u32)?)?;
            let x = x.reshape(&[n, 1, d])?.take(&rows, 0)?;
            (x, flat.take(&order, 0)?, Some(inv))
        } else {
            (x.reshape(&[n, 1, 1, d])?, indices.reshape(&[n, k])?, None)
        };
        let up = self.up_proj.forward(&x, &idx, sort)?;
        let gate = self.gate_proj.forward(&x, &idx, sort)?;
        let act = gate.multiply(&gate.sigmoid()?)?.multiply(&up)?;
        let y = self.down_proj.forward(&act, &idx, sort)?;
        match inv {
            Some(inv) => y.take(&inv, 0)?.reshape(&[n, k, d]),
            None => y.reshape(&[n, k, d]),
        }
    }
}

impl DecoderLayer {
    fn forward(&self, x: &Array, args: &OlmoeArgs, seqs: &mut [SeqRows<'_>]) -> Result<Array> {
        let eps = args.rms_norm_eps as f32;
        let h = x.add(&self.self_attn.forward(
            &x.rms_norm(Some(&self.input_layernorm), eps)?,
            args,
            seqs,
        )?)?;
        h.add(&self.mlp.forward(
            &h.rms_norm(Some(&self.post_attention_layernorm), eps)?,
            args,
        )?)
    }
}

impl Olmoe {
    /// Weight bytes one decode step of one token reads, as loaded: each layer's attention,
    /// router and its `num_experts_per_tok` routed experts' share of the expert weights, and
    /// the output projection (the embedding row and the norms are negligible).
    pub(super) fn token_weight_bytes(&self) -> usize {
        let routed =
            |e: &Experts| e.bytes() * self.args.num_experts_per_tok / self.args.num_experts.max(1);
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                let a = &l.self_attn;
                let m = &l.mlp;
                [&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj, &m.gate]
                    .iter()
                    .map(|p| p.weight_bytes())
                    .sum::<usize>()
                    + routed(&m.gate_proj)
                    + routed(&m.up_proj)
                    + routed(&m.down_proj)
            })
            .sum();
        let head = match &self.lm_head {
            Some(h) => h.weight_bytes(),
            None => self.embed_tokens.bytes(),
        };
        layers + head
    }

    /// Checks ids against the vocabulary and the context length left in `cache`.
    fn check(&self, ids: &[u32], cache: &Cache) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::invalid("ids", "no tokens to run"));
        }
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= self.args.vocab_size) {
            return Err(Error::invalid(
                "ids",
                format!(
                    "token id {bad} is outside the vocabulary of {}",
                    self.args.vocab_size
                ),
            ));
        }
        let end = cache.offset + ids.len();
        if end > self.args.max_position_embeddings {
            return Err(Error::invalid(
                "ids",
                format!(
                    "{end} positions exceed the model's context of {}",
                    self.args.max_position_embeddings
                ),
            ));
        }
        Ok(())
    }

    /// Hidden states [1, N, hidden] before the final norm of the new tokens of every
    /// sequence in `seqs`, end to end, each following what its cache holds (which then holds
    /// them too). Embedding, projections, norms and the MoE block run over all N rows at once,
    /// so each weight is read once for them all; attention runs per sequence.
    pub(super) fn forward(&self, seqs: &mut [(&[u32], &mut Cache)]) -> Result<Array> {
        if seqs.is_empty() {
            return Err(Error::invalid(
                "tokens",
                "a step needs at least one sequence",
            ));
        }
        for (ids, cache) in seqs.iter() {
            self.check(ids, cache)?;
        }
        let ids: Vec<u32> = seqs
            .iter()
            .flat_map(|(ids, _)| ids.iter().copied())
            .collect();
        let mut h = self
            .embed_tokens
            .lookup(&Array::from_slice(&ids, &[1, ids.len()])?)?;
        for (l, layer) in self.layers.iter().enumerate() {
            let mut rows = seqs
                .iter_mut()
                .map(|(ids, cache)| {
                    let offset = cache.offset;
                    let cache = cache.layers.get_mut(l).ok_or_else(|| {
                        Error::internal("cache", "the cache has fewer layers than the model")
                    })?;
                    Ok(SeqRows {
                        len: ids.len(),
                        offset,
                        cache,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            h = layer.forward(&h, &self.args, &mut rows)?;
        }
        for (ids, cache) in seqs.iter_mut() {
            cache.offset += ids.len();
        }
        Ok(h)
    }

    /// Final-norm hidden states [1, L, hidden] of `ids` following what `cache` holds.
    pub(super) fn hidden(&self, ids: &[u32], cache: &mut Cache) -> Result<Array> {
        self.final_norm(&self.forward(&mut [(ids, cache)])?)
    }

    /// The final norm (`model.norm`).
    pub(super) fn final_norm(&self, h: &Array) -> Result<Array> {
        h.rms_norm(Some(&self.norm), self.args.rms_norm_eps as f32)
    }

    /// Logits of hidden states [.., hidden].
    pub(super) fn head(&self, h: &Array) -> Result<Array> {
        match &self.lm_head {
            Some(head) => head.forward(h),
            None => self.embed_tokens.as_linear(h),
        }
    }
}
