//! OLMoE on candle, in transformers' vocabulary.
//! Reference: transformers/models/olmoe/modeling_olmoe.py (v5.24).
//!
//! Weights are immutable; the KV cache lives in a [`Session`].

mod decode_attention;
mod fused_attention;

use candle_core::{DType, Device, Tensor, D};

use self::fused_attention::joint_qkv;
use super::linear::{Embedding, Linear};
use super::moe::SparseMoeBlock;
use super::rope::{Rope, RopeAt};
use super::session::{LayerCache, Session};
use super::weights::Weights;
use crate::checkpoint::{CheckpointReader, OlmoeArgs};
use crate::error::{Error, Result};
use crate::lora::{AttnProj, LoraTarget};

/// `OlmoeRMSNorm`: normalise in f32, cast back, then scale by the weight.
#[derive(Debug, Clone)]
pub(crate) struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(r: &CheckpointReader, name: &str, width: usize, eps: f64) -> Result<Self> {
        Ok(RmsNorm {
            weight: r.tensor(&format!("{name}.weight"), &[width])?,
            eps,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // On a GPU the fused kernel also serves half dtypes: it rounds once, after the
        // scaling, where the reference rounds before it too (at most one unit in the last
        // place apart), and it saves the eight launches of the unfused form.
        if x.dtype() == DType::F32 || x.device().is_cuda() {
            // The fused kernel computes exactly x * rsqrt(mean(x²) + eps) * w in f32.
            return Ok(candle_nn::ops::rms_norm(
                &x.contiguous()?,
                &self.weight,
                self.eps as f32,
            )?);
        }
        let dtype = x.dtype();
        let x32 = x.to_dtype(DType::F32)?;
        let variance = x32.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = x32.broadcast_div(&(variance + self.eps)?.sqrt()?)?;
        Ok(normed.to_dtype(dtype)?.broadcast_mul(&self.weight)?)
    }

    /// The residual stream `x + y` and its norm; on a GPU one fused launch
    /// ([`super::fused_cuda::add_rms_norm`], the same rounding as [`Self::forward`] there).
    fn forward_residual(&self, x: &Tensor, y: &Tensor) -> Result<(Tensor, Tensor)> {
        #[cfg(feature = "cuda")]
        if super::fused_cuda::runs(x) {
            return super::fused_cuda::add_rms_norm(x, y, &self.weight, self.eps);
        }
        let sum = (x + y)?;
        let normed = self.forward(&sum)?;
        Ok((sum, normed))
    }
}

/// `OlmoeAttention`: q/k norms over the full projected width, optional clip, NeoX RoPE, GQA.
#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    /// q, k and v as one [q + 2·kv, H] projection (q_proj, k_proj and v_proj are then views
    /// of it): on a GPU with the fused kernels, when all three are dense without bias.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    qkv_proj: Option<Linear>,
    o_proj: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    clip_qkv: Option<f64>,
}

impl Attention {
    fn new(w: &Weights, args: &OlmoeArgs, layer: usize) -> Result<Self> {
        let p = format!("model.layers.{layer}.self_attn");
        let (h, hd) = (args.hidden_size, args.head_dim);
        let (q_width, kv_width) = (args.num_attention_heads * hd, args.num_key_value_heads * hd);
        let bias = args.attention_bias;
        let proj = |name: &str, out: usize, inp: usize, which: AttnProj| {
            let target = LoraTarget::Attn { layer, proj: which };
            w.linear(&format!("{p}.{name}"), out, inp, bias, Some(target), true)
        };
        let (q_proj, k_proj, v_proj) = (
            proj("q_proj", q_width, h, AttnProj::Q)?,
            proj("k_proj", kv_width, h, AttnProj::K)?,
            proj("v_proj", kv_width, h, AttnProj::V)?,
        );
        let (qkv_proj, [q_proj, k_proj, v_proj]) = match joint_qkv(&q_proj, &k_proj, &v_proj)? {
            Some((joint, views)) => (Some(joint), views),
            None => (None, [q_proj, k_proj, v_proj]),
        };
        Ok(Attention {
            q_proj,
            k_proj,
            v_proj,
            qkv_proj,
            o_proj: proj("o_proj", h, q_width, AttnProj::O)?,
            q_norm: RmsNorm::new(w.r, &format!("{p}.q_norm"), q_width, args.rms_norm_eps)?,
            k_norm: RmsNorm::new(w.r, &format!("{p}.k_norm"), kv_width, args.rms_norm_eps)?,
            num_heads: args.num_attention_heads,
            num_kv_heads: args.num_key_value_heads,
            head_dim: hd,
            clip_qkv: args.clip_qkv,
        })
    }

    /// Bytes of the four projections' weights.
    fn weight_bytes(&self) -> usize {
        [&self.q_proj, &self.k_proj, &self.v_proj, &self.o_proj]
            .iter()
            .map(|l| l.weight_bytes())
            .sum()
    }

    /// Projects `x` [B, T, H] to rotated q [B, heads, T, D] and k, v [B, kv_heads, T, D].
    fn qkv(&self, x: &Tensor, rope: &RopeAt) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, t, _) = x.dims3()?;
        let [q, k, v]: [Tensor; 3] =
            Linear::forward_each(&[&self.q_proj, &self.k_proj, &self.v_proj], x)?
                .try_into()
                .map_err(|_| Error::invalid("qkv", "three projections expected"))?;
        let mut q = self.q_norm.forward(&q)?;
        let mut k = self.k_norm.forward(&k)?;
        let mut v = v;
        if let Some(c) = self.clip_qkv {
            q = q.clamp(-c, c)?;
            k = k.clamp(-c, c)?;
            v = v.clamp(-c, c)?;
        }
        let q = q
            .reshape((b, t, self.num_heads, self.head_dim))?
            .transpose(1, 2)?;
        let k = k
            .reshape((b, t, self.num_kv_heads, self.head_dim))?
            .transpose(1, 2)?;
        let v = v
            .reshape((b, t, self.num_kv_heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        Ok((rope.apply(&q)?, rope.apply(&k)?, v))
    }

    /// Attends q [B, heads, T, D] over keys and values [B, kv_heads, L, D]; returns
    /// [B, heads, T, D]. The scores are scaled by 1/√D unless `scaled_q` (q comes scaled).
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        scaled_q: bool,
    ) -> Result<Tensor> {
        if mask.is_none() && !scaled_q {
            if let Some(out) = self.decode_attention(q, k, v)? {
                return Ok(out);
            }
        }
        let k = repeat_kv(k, self.num_heads / self.num_kv_heads)?;
        let v = repeat_kv(v, self.num_heads / self.num_kv_heads)?;
        let mut scores = q.matmul(&k.t()?)?;
        if !scaled_q {
            scores = (scores * self.softmax_scale())?;
        }
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let dtype = scores.dtype();
        // The reference's f32 softmax rounded to the compute dtype; candle's CUDA kernel
        // accumulates half dtypes in f32 and rounds once, the same thing in one launch.
        let probs = if scores.device().is_cuda() {
            candle_nn::ops::softmax_last_dim(&scores)?
        } else {
            candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(dtype)?
        };
        Ok(probs.matmul(&v)?)
    }

    /// 1/√D, the scale of the attention scores.
    fn softmax_scale(&self) -> f64 {
        1.0 / (self.head_dim as f64).sqrt()
    }

    /// [B, heads, T, D] → o_proj over [B, T, heads·D].
    fn output(&self, out: &Tensor) -> Result<Tensor> {
        let (b, _, t, _) = out.dims4()?;
        let out = out
            .transpose(1, 2)?
            .reshape((b, t, self.num_heads * self.head_dim))?;
        self.o_proj.forward(&out)
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &RopeAt,
        mask: Option<&Tensor>,
        cache: &mut Option<LayerCache>,
    ) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if super::fused_cuda::runs(x) {
            let (b, t, h) = x.dims3()?;
            let proj = self.project(&x.reshape((b * t, h))?)?;
            let (cos, sin) = rope.rows()?;
            let (q, k, v) = self.prologue(&proj, (&cos, &sin), (b, t), cache)?;
            return self.output(&self.attend(&q, &k, &v, mask, true)?);
        }
        let (q, k, v) = self.qkv(x, rope)?;
        let (k, v) = LayerCache::append(cache, &k, &v)?;
        let out = self.attend(&q, &k, &v, mask, false)?;
        self.output(&out)
    }

    /// New tokens of several sequences laid end to end, `x` [1, R, H] (sequence i's `lens[i]`
    /// rows after the rows of the ones before it), each sequence attending causally over its
    /// own cache: the projections see all R rows at once, attention runs per sequence.
    fn forward_each(
        &self,
        x: &Tensor,
        rope: &RopeAt,
        lens: &[usize],
        caches: &mut [&mut Option<LayerCache>],
    ) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if super::fused_cuda::runs(x) {
            return self.forward_each_fused(x, rope, lens, caches);
        }
        let (q, k, v) = self.qkv(x, rope)?;
        if lens.iter().all(|&t| t == 1) {
            return self.decode_each(&q, &k, &v, caches);
        }
        let mut outs = Vec::with_capacity(caches.len());
        let mut offset = 0;
        for (cache, &t) in caches.iter_mut().zip(lens) {
            let part = |x: &Tensor| -> Result<Tensor> { Ok(x.narrow(2, offset, t)?.contiguous()?) };
            let (qi, ki, vi) = (part(&q)?, part(&k)?, part(&v)?);
            let mask = step_mask(cache, t, q.dtype(), q.device())?;
            let (ki, vi) = LayerCache::append(cache, &ki, &vi)?;
            outs.push(self.attend(&qi, &ki, &vi, mask.as_ref(), false)?);
            offset += t;
        }
        self.output(&Tensor::cat(&outs, 2)?)
    }
}

impl Attention {
    /// [`Self::forward_each`] when every sequence brings one token: each sequence's key and
    /// value appended to its cache, then every sequence attended in one pass where the decode
    /// path applies, else one after another.
    fn decode_each(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        caches: &mut [&mut Option<LayerCache>],
    ) -> Result<Tensor> {
        let column =
            |x: &Tensor, i: usize| -> Result<Tensor> { Ok(x.narrow(2, i, 1)?.contiguous()?) };
        let mut kvs = Vec::with_capacity(caches.len());
        for (i, cache) in caches.iter_mut().enumerate() {
            kvs.push(LayerCache::append(cache, &column(k, i)?, &column(v, i)?)?);
        }
        if let Some(out) = self.decode_attention_each(q, &kvs)? {
            return self.o_proj.forward(&out);
        }
        let outs = kvs
            .iter()
            .enumerate()
            .map(|(i, (ki, vi))| self.attend(&column(q, i)?, ki, vi, None, false))
            .collect::<Result<Vec<_>>>()?;
        self.output(&Tensor::cat(&outs, 2)?)
    }
}

/// The mask of `t` new tokens of one sequence after what `cache` holds: none for one token.
fn step_mask(
    cache: &Option<LayerCache>,
    t: usize,
    dtype: DType,
    device: &Device,
) -> Result<Option<Tensor>> {
    match t {
        1 => Ok(None),
        _ => {
            let past = cache.as_ref().map_or(0, LayerCache::len);
            Ok(Some(causal_mask(past, t, dtype, device)?))
        }
    }
}

/// The additive mask [1, 1, t, past + t] of `t` new queries after `past` cached columns: query
/// q sees keys up to `past + q`.
fn causal_mask(past: usize, t: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let keys = past + t;
    let m: Vec<f32> = (0..t)
        .flat_map(|q| {
            (0..keys).map(move |k| {
                if k <= past + q {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(m, (1, 1, t, keys), device)?.to_dtype(dtype)?)
}

/// [B, kv, T, D] → [B, kv·n, T, D], each kv head repeated n times in place.
fn repeat_kv(x: &Tensor, n: usize) -> Result<Tensor> {
    if n == 1 {
        return Ok(x.clone());
    }
    let (b, kv, t, d) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .expand((b, kv, n, t, d))?
        .reshape((b, kv * n, t, d))?)
}

/// `OlmoeDecoderLayer`: pre-norm attention, then pre-norm sparse MoE, both residual.
#[derive(Debug, Clone)]
struct DecoderLayer {
    self_attn: Attention,
    mlp: SparseMoeBlock,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    fn new(w: &Weights, args: &OlmoeArgs, layer: usize) -> Result<Self> {
        let p = format!("model.layers.{layer}");
        let eps = args.rms_norm_eps;
        let norm = |name: &str| RmsNorm::new(w.r, &format!("{p}.{name}"), args.hidden_size, eps);
        Ok(DecoderLayer {
            self_attn: Attention::new(w, args, layer)?,
            mlp: SparseMoeBlock::new(w, args, layer)?,
            input_layernorm: norm("input_layernorm")?,
            post_attention_layernorm: norm("post_attention_layernorm")?,
        })
    }

    /// The layer on the residual stream `x` [B, T, H], given `normed`, its input_layernorm:
    /// returns the stream after attention and the MoE block's output. Their sum is the
    /// layer's output, which the caller forms together with the norm that follows it.
    fn forward(
        &self,
        x: &Tensor,
        normed: &Tensor,
        rope: &RopeAt,
        mask: Option<&Tensor>,
        cache: &mut Option<LayerCache>,
    ) -> Result<(Tensor, Tensor)> {
        let attn = self.self_attn.forward(normed, rope, mask, cache)?;
        let (h, out) = self.post_attention_layernorm.forward_residual(x, &attn)?;
        Ok((h, self.mlp.forward(&out)?))
    }

    /// [`Self::forward`] for the new tokens of several sequences laid end to end (`lens`
    /// rows each), each with its own cache.
    fn forward_each(
        &self,
        x: &Tensor,
        normed: &Tensor,
        rope: &RopeAt,
        lens: &[usize],
        caches: &mut [&mut Option<LayerCache>],
    ) -> Result<(Tensor, Tensor)> {
        let attn = self.self_attn.forward_each(normed, rope, lens, caches)?;
        let (h, out) = self.post_attention_layernorm.forward_residual(x, &attn)?;
        Ok((h, self.mlp.forward(&out)?))
    }
}

/// `OlmoeForCausalLM`: embeddings, decoder layers, final norm, lm_head (tied or not).
#[derive(Debug, Clone)]
pub struct Olmoe {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: Rope,
    args: OlmoeArgs,
    device: Device,
    dtype: DType,
}

impl Olmoe {
    /// Builds the model from a checkpoint; `on_layer(done, total)` reports progress.
    pub(crate) fn new(
        w: &Weights,
        args: &OlmoeArgs,
        mut on_layer: impl FnMut(usize, usize),
    ) -> Result<Self> {
        let (v, h) = (args.vocab_size, args.hidden_size);
        let embed_tokens = w.embedding()?;
        // The vocabulary-sized matrices first: converting them needs the most scratch memory,
        // which is then free again before the layers accumulate.
        let lm_head = if args.tie_word_embeddings {
            // Some exporters still write the tied copy; it must then have the embedding's shape.
            let _ = w.r.optional("lm_head.weight", &[v, h])?;
            w.tied_head(&embed_tokens)?
        } else {
            w.linear("lm_head", v, h, false, None, true)?
        };
        let mut layers = Vec::with_capacity(args.num_hidden_layers);
        for l in 0..args.num_hidden_layers {
            layers.push(DecoderLayer::new(w, args, l)?);
            on_layer(l + 1, args.num_hidden_layers);
        }
        let norm = RmsNorm::new(w.r, "model.norm", h, args.rms_norm_eps)?;
        let device = w.r.device().clone();
        let dtype = w.dtype();
        // The run-time compiled kernels, compiled and loaded now rather than in the first
        // forward pass.
        #[cfg(feature = "cuda")]
        if let Device::Cuda(dev) = &device {
            super::fused_cuda::prepare(dev)?;
            super::moe_cuda::prepare(dev)?;
        }
        Ok(Olmoe {
            rope: Rope::new(args, dtype, &device)?,
            embed_tokens,
            layers,
            norm,
            lm_head,
            args: args.clone(),
            device,
            dtype,
        })
    }

    /// The model's arguments.
    pub fn args(&self) -> &OlmoeArgs {
        &self.args
    }

    /// The compute dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Weight bytes one token's decode step reads, as the weights are held: every layer's
    /// attention and router, its routed experts (at their average size) and lm_head; the
    /// embedding row and the norms are left out.
    pub fn token_weight_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.self_attn.weight_bytes() + l.mlp.token_weight_bytes())
            .sum::<usize>()
            + self.lm_head.weight_bytes()
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A fresh session (empty KV cache) for this model.
    pub fn session(&self) -> Session {
        Session::new(self.layers.len(), self.args.max_position_embeddings)
    }

    /// Runs a step: appends `tokens` (one list per sequence) to `session` and returns the
    /// final-norm hidden states [B, T, H] of the step's columns (left-padded on the first step).
    pub fn forward_hidden(&self, tokens: &[Vec<u32>], session: &mut Session) -> Result<Tensor> {
        let vocab = self.args.vocab_size;
        if let Some(bad) = tokens.iter().flatten().find(|&&id| id as usize >= vocab) {
            return Err(Error::invalid(
                "token id",
                format!("{bad} is out of range for vocab_size {vocab}"),
            ));
        }
        let pad_id = self
            .args
            .pad_token_id
            .filter(|&p| (p as usize) < vocab)
            .unwrap_or(0);
        let (ids, width) = session.plan(tokens, pad_id)?;
        let b = tokens.len();
        let positions = Tensor::from_vec(session.positions(width), (b, width), &self.device)?;
        let mask = match session.mask(width) {
            None => None,
            Some((m, keys)) => {
                Some(Tensor::from_vec(m, (b, 1, width, keys), &self.device)?.to_dtype(self.dtype)?)
            }
        };
        let x = self
            .embed_tokens
            .forward(&ids, self.dtype, &self.device)?
            .reshape((b, width, self.args.hidden_size))?;
        // cos/sin gathered once for the step, not per layer and tensor.
        let rope = self.rope.at(&positions)?;
        let caches = &mut session.layers;
        let normed = self.run_layers(x, |l, layer, x, normed| {
            let cache = caches.get_mut(l).ok_or_else(other_model)?;
            layer.forward(x, normed, &rope, mask.as_ref(), cache)
        })?;
        session.advance(width);
        Ok(normed)
    }

    /// Runs `layer(index, layer, x, normed)` for every layer, from the embeddings `x`: each
    /// returns its stream after attention and its MoE output, whose sum (the next layer's
    /// input) is formed together with the norm that follows it (the next layer's
    /// input_layernorm, after the last the final norm; one fused launch on a GPU). Returns
    /// the final norm of the last layer's output.
    fn run_layers(
        &self,
        x: Tensor,
        mut layer: impl FnMut(usize, &DecoderLayer, &Tensor, &Tensor) -> Result<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        let mut normed = match self.layers.first() {
            Some(first) => first.input_layernorm.forward(&x)?,
            None => self.norm.forward(&x)?,
        };
        let mut x = x;
        for (l, this) in self.layers.iter().enumerate() {
            let (h, out) = layer(l, this, &x, &normed)?;
            let next = self
                .layers
                .get(l + 1)
                .map_or(&self.norm, |n| &n.input_layernorm);
            (x, normed) = next.forward_residual(&h, &out)?;
        }
        Ok(normed)
    }

    /// Applies lm_head to hidden states [.., H] → logits [.., V] in the compute dtype.
    pub fn lm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden)
    }

    /// Runs a step and returns the logits [B, T, V] of every column of the step.
    pub fn forward(&self, tokens: &[Vec<u32>], session: &mut Session) -> Result<Tensor> {
        let hidden = self.forward_hidden(tokens, session)?;
        self.lm_head(&hidden)
    }

    /// Runs a step and returns only each sequence's last logits [B, V] (what decoding needs).
    pub fn forward_last(&self, tokens: &[Vec<u32>], session: &mut Session) -> Result<Tensor> {
        let hidden = self.forward_hidden(tokens, session)?;
        let t = hidden.dim(1)?;
        self.lm_head(&hidden.narrow(1, t - 1, 1)?.squeeze(1)?.contiguous()?)
    }
}

impl Olmoe {
    /// Appends tokens to each of several single-sequence sessions in one forward pass: a
    /// prompt to a fresh session (prefill) or one token to a running one (decode), in any mix
    /// and at any lengths. Embeddings, projections, MoE and lm_head run over all the new rows
    /// at once; attention runs per sequence over its own cache, causally. Returns each
    /// sequence's last logits [N, V], as the same tokens run alone would give them.
    pub fn forward_each(&self, steps: &mut [(&mut Session, &[u32])]) -> Result<Tensor> {
        let vocab = self.args.vocab_size;
        if steps.is_empty() {
            return Err(Error::invalid(
                "tokens",
                "a step needs at least one sequence",
            ));
        }
        let rows: usize = steps.iter().map(|(_, t)| t.len()).sum();
        let mut ids = Vec::with_capacity(rows);
        let mut positions = Vec::with_capacity(rows);
        let mut lens = Vec::with_capacity(steps.len());
        let mut last = Vec::with_capacity(steps.len());
        for (session, tokens) in steps.iter_mut() {
            if let Some(bad) = tokens.iter().find(|&&id| id as usize >= vocab) {
                return Err(Error::invalid(
                    "token id",
                    format!("{bad} is out of range for vocab_size {vocab}"),
                ));
            }
            let start = session.start_single(tokens.len())?;
            positions.extend((start..start + tokens.len()).map(|p| p as u32));
            ids.extend_from_slice(tokens);
            lens.push(tokens.len());
            last.push((ids.len() - 1) as u32);
        }
        let positions = Tensor::from_vec(positions, (1, rows), &self.device)?;
        let x = self
            .embed_tokens
            .forward(&ids, self.dtype, &self.device)?
            .reshape((1, rows, self.args.hidden_size))?;
        let rope = self.rope.at(&positions)?;
        let normed = self.run_layers(x, |l, layer, x, normed| {
            let mut caches: Vec<&mut Option<LayerCache>> = steps
                .iter_mut()
                .map(|(s, _)| s.layers.get_mut(l))
                .collect::<Option<_>>()
                .ok_or_else(other_model)?;
            layer.forward_each(x, normed, &rope, &lens, &mut caches)
        })?;
        for ((session, _), &t) in steps.iter_mut().zip(&lens) {
            session.advance(t);
        }
        let n = last.len();
        let normed = match rows == n {
            true => normed.squeeze(0)?,
            false => {
                let last = Tensor::from_vec(last, (n,), &self.device)?;
                normed.squeeze(0)?.index_select(&last, 0)?
            }
        };
        self.lm_head(&normed)
    }
}

/// The error of a session whose layers are not this model's.
fn other_model() -> Error {
    Error::invalid("session", "a session of another model")
}
