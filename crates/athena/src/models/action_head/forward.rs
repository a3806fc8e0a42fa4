//! The head's forward pass as candle ops: differentiable scores of a fact (or a batch of
//! facts) against memories, and the decision they give.

use std::collections::{BTreeMap, HashSet};

use candle_core::{DType, Tensor, D};

use super::head::{Action, BatchScores, HeadScores, MemoryActionHead, MASKED_LOGIT};
use super::params::Param;
use crate::error::{Error, Result};

/// `x W^T + b`, as torch's `Linear`, for `x` of shape `[N, in]`.
fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
    x.matmul(&weight.t()?)?.broadcast_add(bias)
}

/// Index of the largest value, the first on ties.
fn argmax(values: &[f32]) -> usize {
    crate::generate::argmax(values) as usize
}

fn check_finite(field: &'static str, what: &str, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::invalid(
            field,
            format!("{what}: value {i} is not finite"),
        )),
        None => Ok(()),
    }
}

impl MemoryActionHead {
    /// `tanh(P x + p)` for `x` of shape `[N, D]`: `[N, d]`.
    fn project(&self, x: &Tensor) -> Result<Tensor> {
        Ok(linear(
            x,
            self.param(Param::ProjWeight),
            self.param(Param::ProjBias),
        )?
        .tanh()?)
    }

    /// Differentiable scores for a fact `[D]` against memories `[M, D]` (`M` may be 0), both
    /// f32 on the head's device: [`Self::batch_scores`] of a batch of one.
    pub fn scores(&self, fact: &Tensor, memories: &Tensor) -> Result<HeadScores> {
        let width = self.input_dim();
        if fact.dims() != [width] {
            return Err(Error::invalid(
                "fact",
                format!("expected shape [{width}], got {:?}", fact.dims()),
            ));
        }
        let m = match memories.dims() {
            &[m, w] if w == width => m,
            dims => {
                return Err(Error::invalid(
                    "memories",
                    format!("expected shape [M, {width}], got {dims:?}"),
                ))
            }
        };
        let batch = self.batch_scores(&fact.unsqueeze(0)?, &memories.unsqueeze(0)?, &[m])?;
        Ok(HeadScores {
            op_logits: batch.op_logits.squeeze(0)?,
            target_logits: match batch.target_logits {
                Some(t) if m > 0 => Some(t.squeeze(0)?),
                _ => None,
            },
        })
    }

    /// Differentiable scores of a batch: facts `[B, D]`, memories `[B, M, D]` padded to the
    /// longest list (`M` may be 0), and the number of real memories of each example
    /// (`counts[b] <= M`; padding rows are ignored whatever they hold). Every step is one
    /// batched candle op, so a training step costs a handful of ops whatever `B` is.
    ///
    /// Padding targets, and target operations of examples without memories, get the logit
    /// [`MASKED_LOGIT`]: their probability is exactly 0 and every gradient stays finite.
    pub fn batch_scores(
        &self,
        facts: &Tensor,
        memories: &Tensor,
        counts: &[usize],
    ) -> Result<BatchScores> {
        let width = self.input_dim();
        let b = counts.len();
        if facts.dims() != [b, width] {
            return Err(Error::invalid(
                "fact",
                format!("expected shape [{b}, {width}], got {:?}", facts.dims()),
            ));
        }
        let m = match memories.dims() {
            &[bb, m, w] if bb == b && w == width => m,
            dims => {
                return Err(Error::invalid(
                    "memories",
                    format!("expected shape [{b}, M, {width}], got {dims:?}"),
                ))
            }
        };
        if let Some(c) = counts.iter().find(|&&c| c > m) {
            return Err(Error::invalid(
                "memories",
                format!("a count of {c} memories exceeds the padded length {m}"),
            ));
        }
        for (field, t) in [("fact", facts), ("memories", memories)] {
            if t.dtype() != DType::F32 {
                return Err(Error::invalid(
                    field,
                    format!("expected dtype f32, got {:?}", t.dtype()),
                ));
            }
        }
        let d = self.config().proj_dim;
        let device = self.device();
        // [B, n_ops]: MASKED_LOGIT on target operations of examples without memories.
        let op_mask: Vec<f32> = counts
            .iter()
            .flat_map(|&c| {
                self.config().operations.iter().map(move |op| {
                    if c == 0 && self.config().is_target(op) {
                        MASKED_LOGIT
                    } else {
                        0.0
                    }
                })
            })
            .collect();
        let op_mask = Tensor::from_vec(op_mask, (b, self.config().operations.len()), device)?;

        let f = self.project(facts)?; // [B, d]
        if m == 0 {
            let c = f.zeros_like()?;
            return Ok(BatchScores {
                op_logits: (self.op_logits(&f, &c)? + op_mask)?,
                target_logits: None,
            });
        }
        // [B, M]: 0 on real memories, MASKED_LOGIT on padding; [B, 1]: 1 where any memory.
        let pad: Vec<f32> = counts
            .iter()
            .flat_map(|&c| (0..m).map(move |j| if j < c { 0.0 } else { MASKED_LOGIT }))
            .collect();
        let pad = Tensor::from_vec(pad, (b, m), device)?;
        let any: Vec<f32> = counts.iter().map(|&c| f32::from(u8::from(c > 0))).collect();
        let any = Tensor::from_vec(any, (b, 1), device)?;

        let mem = self
            .project(&memories.reshape((b * m, width))?)?
            .reshape((b, m, d))?; // [B, M, d]
        let scale = (d as f64).sqrt();
        let att = (mem.matmul(&f.unsqueeze(2)?)?.squeeze(2)? / scale)?; // [B, M]
        let att = candle_nn::ops::softmax(&(att + &pad)?, D::Minus1)?.broadcast_mul(&any)?;
        let c = att.unsqueeze(1)?.matmul(&mem)?.squeeze(1)?; // [B, d]
        let op_logits = (self.op_logits(&f, &c)? + op_mask)?;
        let query = linear(
            &f,
            self.param(Param::TargetWeight),
            self.param(Param::TargetBias),
        )?; // [B, d]
        let bilinear = mem.matmul(&query.unsqueeze(2)?)?.squeeze(2)?; // [B, M]
                                                                      // The match MLP over [f' ⊙ m_j'; |f' − m_j'|], one score per memory.
        let fb = f.unsqueeze(1)?.broadcast_as((b, m, d))?;
        let pair =
            Tensor::cat(&[(&fb * &mem)?, (&fb - &mem)?.abs()?], 2)?.reshape((b * m, 2 * d))?;
        let hidden = linear(
            &pair,
            self.param(Param::MatchWeight),
            self.param(Param::MatchBias),
        )?
        .tanh()?;
        let matched = hidden
            .matmul(&self.param(Param::MatchOutWeight).t()?)?
            .reshape((b, m))?;
        let target_logits = ((bilinear + matched)? + pad)?; // [B, M]
        Ok(BatchScores {
            op_logits,
            target_logits: Some(target_logits),
        })
    }

    /// `W_op [f'; c; f' ⊙ c] + b_op`, `[B, n_ops]`.
    fn op_logits(&self, f: &Tensor, c: &Tensor) -> Result<Tensor> {
        let features = Tensor::cat(&[f, c, &(f * c)?], 1)?; // [B, 3d]
        Ok(linear(
            &features,
            self.param(Param::OpWeight),
            self.param(Param::OpBias),
        )?)
    }

    /// Decides what to do with `fact` given `memories` (id, hidden state). Every width must be
    /// `input_dim`, every value finite and every id distinct. The operation is the most
    /// probable one; for a target operation the target is the most probable memory.
    pub fn decide(&self, fact: &[f32], memories: &[(String, Vec<f32>)]) -> Result<Action> {
        let width = self.input_dim();
        if fact.len() != width {
            return Err(Error::invalid(
                "fact",
                format!(
                    "width {} does not match the head's input_dim {width}",
                    fact.len()
                ),
            ));
        }
        check_finite("fact", "the fact", fact)?;
        let mut ids = HashSet::new();
        for (i, (id, values)) in memories.iter().enumerate() {
            if values.len() != width {
                return Err(Error::invalid(
                    "memories",
                    format!(
                        "memory {i} (`{id}`) has width {}, not the head's input_dim {width}",
                        values.len()
                    ),
                ));
            }
            check_finite("memories", &format!("memory {i} (`{id}`)"), values)?;
            if !ids.insert(id.as_str()) {
                return Err(Error::invalid(
                    "memories",
                    format!("id `{id}` appears more than once"),
                ));
            }
        }

        let fact = Tensor::from_slice(fact, width, self.device())?;
        let flat: Vec<f32> = memories
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        let memories_t = Tensor::from_vec(flat, (memories.len(), width), self.device())?;
        let scores = self.scores(&fact, &memories_t)?;

        let op_probs = candle_nn::ops::softmax(&scores.op_logits, D::Minus1)?.to_vec1::<f32>()?;
        if op_probs.iter().any(|p| p.is_nan()) {
            return Err(Error::tensor(
                "op_logits",
                "the operation scores are not finite; the head's parameters have diverged",
            ));
        }
        let op_index = argmax(&op_probs);
        let op = self
            .config()
            .operations
            .get(op_index)
            .cloned()
            .ok_or_else(|| Error::invalid("operations", "no operation to choose"))?;
        let probabilities = self
            .config()
            .operations
            .iter()
            .cloned()
            .zip(op_probs)
            .collect();

        let mut target = None;
        let mut target_probabilities = BTreeMap::new();
        if let Some(logits) = &scores.target_logits {
            let probs = candle_nn::ops::softmax(logits, D::Minus1)?.to_vec1::<f32>()?;
            if probs.iter().any(|p| p.is_nan()) {
                return Err(Error::tensor(
                    "target_logits",
                    "the target scores are not finite; the head's parameters have diverged",
                ));
            }
            if self.config().is_target(&op) {
                target = memories.get(argmax(&probs)).map(|(id, _)| id.clone());
            }
            target_probabilities = memories
                .iter()
                .map(|(id, _)| id.clone())
                .zip(probs)
                .collect();
        }
        Ok(Action {
            op,
            target,
            probabilities,
            target_probabilities,
        })
    }
}
