//! Several sequences' new tokens laid end to end in one forward pass (a prompt to a fresh
//! session, or one token to a running one, in any mix), each sequence attending causally over
//! its own KV cache: the server's continuous batching. Embeddings, projections, MoE and
//! lm_head see all the rows at once; only attention runs per sequence.

use candle_core::Tensor;

use super::super::rope::RopeAt;
use super::super::session::{LayerCache, Session};
use super::attention::Attention;
use super::layer::DecoderLayer;
use super::mask::step_mask;
use super::model::{other_model, Olmoe};
use crate::error::{Error, Result};

impl Attention {
    /// New tokens of several sequences laid end to end, `x` [1, R, H] (sequence i's `lens[i]`
    /// rows after the rows of the ones before it), each sequence attending causally over its
    /// own cache: the projections see all R rows at once, attention runs per sequence.
    pub(super) fn forward_each(
        &self,
        x: &Tensor,
        rope: &RopeAt,
        lens: &[usize],
        caches: &mut [&mut Option<LayerCache>],
    ) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if super::super::fused_cuda::runs(x) {
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
    pub(super) fn decode_each(
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

impl DecoderLayer {
    /// [`Self::forward`] for the new tokens of several sequences laid end to end (`lens`
    /// rows each), each with its own cache.
    pub(super) fn forward_each(
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
