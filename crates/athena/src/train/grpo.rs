//! GRPO objective for discrete actions.
//!
//! Follows the definitions of TRL's `GRPOTrainer` (token-level importance sampling):
//!
//! * advantages are normalised within each group of completions sampled for the same prompt:
//!   `Â = (r - mean_group(r)) / (std_group(r) + eps)` with the *unbiased* (Bessel-corrected)
//!   standard deviation and `eps = 1e-4`; a group of one has standard deviation 0;
//! * the per-token loss is `-min(ρ·Â, clip(ρ, 1-ε, 1+ε_high)·Â) + β·KL` with
//!   `ρ = exp(logp - old_logp)` and the k3 estimator `KL = exp(ref - cur) - (ref - cur) - 1`;
//! * the loss types differ only in how the masked per-token losses are aggregated (see
//!   [`LossType`]).
//!
//! For the memory action head each completion is a single sampled action, so a "token" is an
//! action and `T = 1`; the aggregation is kept general over a `[B, T]` mask.

use candle_core::{DType, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How masked per-token losses are reduced to a scalar, as TRL's `loss_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    /// Mean over sequences of (sum over the sequence's tokens / tokens in the sequence).
    Grpo,
    /// Sum over all tokens / total tokens (TRL normalises across the global batch). TRL's default.
    #[default]
    Dapo,
    /// Sum over all tokens / (B · `max_completion_length`): a constant normaliser.
    DrGrpo,
    /// Sum over all tokens / total mask tokens of the local batch (equal to `Dapo` in one process).
    Bnpo,
}

/// Hyper-parameters of the GRPO objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GrpoConfig {
    /// Lower clip range: the ratio is clipped below at `1 - epsilon`. Must lie in (0, 1).
    pub epsilon: f64,
    /// Upper clip range: the ratio is clipped above at `1 + epsilon_high`; `None` uses `epsilon`.
    pub epsilon_high: Option<f64>,
    /// Weight of the k3 KL penalty against the reference policy; 0 disables it.
    pub beta: f64,
    /// Aggregation of the per-token losses.
    pub loss_type: LossType,
    /// Divide group-centred rewards by the group's standard deviation.
    pub scale_rewards: bool,
    /// Added to the standard deviation before dividing (TRL: 1e-4).
    pub adv_eps: f64,
    /// Constant normaliser of `dr_grpo` (tokens per completion); 1 for single actions.
    pub max_completion_length: usize,
}

impl Default for GrpoConfig {
    fn default() -> Self {
        Self {
            epsilon: 0.2,
            epsilon_high: None,
            beta: 0.0,
            loss_type: LossType::Dapo,
            scale_rewards: true,
            adv_eps: 1e-4,
            max_completion_length: 1,
        }
    }
}

impl GrpoConfig {
    /// Checks every field, naming the first one that is out of range.
    pub fn validate(&self) -> Result<()> {
        if !(self.epsilon.is_finite() && self.epsilon > 0.0 && self.epsilon < 1.0) {
            return Err(Error::invalid(
                "epsilon",
                format!("must lie in (0, 1), got {}", self.epsilon),
            ));
        }
        if let Some(eh) = self.epsilon_high {
            if !(eh.is_finite() && eh > 0.0) {
                return Err(Error::invalid(
                    "epsilon_high",
                    format!("must be finite and > 0, got {eh}"),
                ));
            }
        }
        if !(self.beta.is_finite() && self.beta >= 0.0) {
            return Err(Error::invalid(
                "beta",
                format!("must be finite and >= 0, got {}", self.beta),
            ));
        }
        if !(self.adv_eps.is_finite() && self.adv_eps > 0.0) {
            return Err(Error::invalid(
                "adv_eps",
                format!("must be finite and > 0, got {}", self.adv_eps),
            ));
        }
        if self.max_completion_length == 0 {
            return Err(Error::invalid("max_completion_length", "must be >= 1"));
        }
        Ok(())
    }

    /// The upper clip range actually used: `epsilon_high`, or `epsilon` when unset.
    pub fn epsilon_high(&self) -> f64 {
        self.epsilon_high.unwrap_or(self.epsilon)
    }
}

/// Group-normalised advantages: rewards laid out `[num_groups * group_size]`, groups contiguous.
///
/// `Â_i = r_i - mean_g`, divided by `std_g + eps` when `scale` is set, where `std_g` is the
/// unbiased (Bessel-corrected, `n - 1`) standard deviation of the group, as TRL's `nanstd`;
/// a group of one has `std_g = 0` (its advantage is 0). Computed in f64.
pub fn group_advantages(
    rewards: &[f32],
    group_size: usize,
    scale: bool,
    eps: f32,
) -> Result<Vec<f32>> {
    if group_size == 0 {
        return Err(Error::invalid("group_size", "must be >= 1"));
    }
    if !rewards.len().is_multiple_of(group_size) {
        return Err(Error::invalid(
            "group_size",
            format!(
                "{} rewards do not split into groups of {group_size}",
                rewards.len()
            ),
        ));
    }
    if let Some(i) = rewards.iter().position(|r| !r.is_finite()) {
        return Err(Error::invalid(
            "rewards",
            format!("reward {i} is not finite ({})", rewards[i]),
        ));
    }
    if !eps.is_finite() || eps < 0.0 || (scale && eps == 0.0) {
        return Err(Error::invalid(
            "adv_eps",
            format!("must be finite and > 0 when scaling (>= 0 otherwise), got {eps}"),
        ));
    }
    let mut out = Vec::with_capacity(rewards.len());
    for group in rewards.chunks(group_size) {
        let n = group.len() as f64;
        let mean = group.iter().map(|&r| r as f64).sum::<f64>() / n;
        let denom = if scale {
            let std = if group.len() > 1 {
                let ss: f64 = group.iter().map(|&r| (r as f64 - mean).powi(2)).sum();
                (ss / (n - 1.0)).sqrt()
            } else {
                0.0
            };
            std + eps as f64
        } else {
            1.0
        };
        out.extend(group.iter().map(|&r| ((r as f64 - mean) / denom) as f32));
    }
    Ok(out)
}

/// The k3 KL estimator per element: `exp(ref - cur) - (ref - cur) - 1` (inputs are log-probs).
///
/// Non-negative, zero where the log-probs agree; differentiable with respect to both inputs.
pub fn kl_k3(logp: &Tensor, ref_logp: &Tensor) -> Result<Tensor> {
    if logp.dims() != ref_logp.dims() {
        return Err(Error::invalid(
            "ref_logp",
            format!(
                "shape {:?} differs from logp {:?}",
                ref_logp.dims(),
                logp.dims()
            ),
        ));
    }
    let d = ref_logp.sub(logp)?;
    Ok(((d.exp()? - &d)? - 1.0)?)
}

/// The GRPO objective and statistics for logging.
#[derive(Debug)]
pub struct GrpoLoss {
    /// Scalar loss (f32), differentiable with respect to `logp`.
    pub loss: Tensor,
    /// Fraction of masked tokens where the clip was active:
    /// `(ρ < 1-ε and Â < 0) or (ρ > 1+ε_high and Â > 0)`.
    pub clip_fraction: f32,
    /// Masked mean of the k3 KL against the reference (0 when no reference is given).
    pub kl_mean: f32,
    /// Masked mean of the importance ratio ρ.
    pub ratio_mean: f32,
}

fn check_2d(name: &'static str, t: &Tensor, b: usize, tt: usize) -> Result<()> {
    if t.dims() != [b, tt] {
        return Err(Error::invalid(
            name,
            format!("expected shape [{b}, {tt}], got {:?}", t.dims()),
        ));
    }
    Ok(())
}

fn scalar_f32(t: &Tensor) -> Result<f32> {
    Ok(t.to_dtype(DType::F32)?.to_scalar::<f32>()?)
}

/// GRPO loss over a batch of completions.
///
/// * `logp`: current policy log-probs of the taken actions `[B, T]` (differentiable);
/// * `old_logp`: `[B, T]` log-probs under the policy that sampled (detached here);
/// * `ref_logp`: optional `[B, T]` reference log-probs (detached here), required when `beta > 0`;
/// * `advantages`: `[B]`, one per completion, broadcast over its tokens;
/// * `mask`: `[B, T]`, 1 where the token counts, 0 for padding.
///
/// All arithmetic is done in f32. Sequences (or batches) without any masked token contribute 0
/// (normalisers are clamped to at least 1, as TRL).
pub fn grpo_loss(
    cfg: &GrpoConfig,
    logp: &Tensor,
    old_logp: &Tensor,
    ref_logp: Option<&Tensor>,
    advantages: &Tensor,
    mask: &Tensor,
) -> Result<GrpoLoss> {
    cfg.validate()?;
    let (b, t) = logp
        .dims2()
        .map_err(|_| Error::invalid("logp", format!("expected [B, T], got {:?}", logp.dims())))?;
    if b == 0 || t == 0 {
        return Err(Error::invalid(
            "logp",
            format!("empty batch {:?}", logp.dims()),
        ));
    }
    check_2d("old_logp", old_logp, b, t)?;
    check_2d("mask", mask, b, t)?;
    if let Some(r) = ref_logp {
        check_2d("ref_logp", r, b, t)?;
    }
    if advantages.dims() != [b] {
        return Err(Error::invalid(
            "advantages",
            format!("expected shape [{b}], got {:?}", advantages.dims()),
        ));
    }
    if cfg.beta > 0.0 && ref_logp.is_none() {
        return Err(Error::invalid("ref_logp", "required when beta > 0"));
    }
    if cfg.loss_type == LossType::DrGrpo && t > cfg.max_completion_length {
        return Err(Error::invalid(
            "max_completion_length",
            format!(
                "{} is shorter than the sequence axis T = {t}",
                cfg.max_completion_length
            ),
        ));
    }

    let logp = logp.to_dtype(DType::F32)?;
    let old_logp = old_logp.detach().to_dtype(DType::F32)?;
    let mask = mask.detach().to_dtype(DType::F32)?;
    let adv = advantages
        .detach()
        .to_dtype(DType::F32)?
        .reshape((b, 1))?
        .broadcast_as((b, t))?
        .contiguous()?;

    let eps_low = cfg.epsilon;
    let eps_high = cfg.epsilon_high();

    // ρ and the unclipped surrogate ρ·Â (differentiable through logp).
    let ratio = logp.sub(&old_logp)?.exp()?;
    let unclipped = ratio.mul(&adv)?;

    // Where the clip is active, min(ρÂ, clip(ρ)Â) is the constant clip(ρ)·Â (zero gradient);
    // elsewhere it equals ρÂ. Selecting explicitly gives the same values and gradients as
    // torch's min/clamp, including at ties.
    let ratio_d = ratio.detach();
    let zeros = adv.zeros_like()?;
    let low = ratio_d
        .lt(1.0 - eps_low)?
        .to_dtype(DType::F32)?
        .mul(&adv.lt(&zeros)?.to_dtype(DType::F32)?)?;
    let high = ratio_d
        .gt(1.0 + eps_high)?
        .to_dtype(DType::F32)?
        .mul(&adv.gt(&zeros)?.to_dtype(DType::F32)?)?;
    let clipped_active = low.add(&high)?; // the two events are disjoint
    let clipped_term = ratio_d.clamp(1.0 - eps_low, 1.0 + eps_high)?.mul(&adv)?;
    let surrogate = clipped_active
        .ne(0.0)?
        .where_cond(&clipped_term, &unclipped)?;
    let mut per_token = surrogate.neg()?;

    let kl = match ref_logp {
        Some(r) => Some(kl_k3(&logp, &r.detach().to_dtype(DType::F32)?)?),
        None => None,
    };
    if cfg.beta > 0.0 {
        if let Some(kl) = &kl {
            per_token = (per_token + (kl * cfg.beta)?)?;
        }
    }

    let masked = per_token.mul(&mask)?;
    let total_tokens = scalar_f32(&mask.sum_all()?)?;
    let denom_tokens = total_tokens.max(1.0) as f64;
    let loss = match cfg.loss_type {
        LossType::Grpo => {
            let per_seq = masked.sum(1)?;
            let counts = mask.sum(1)?.clamp(1.0, f64::INFINITY)?;
            per_seq.div(&counts)?.mean_all()?
        }
        LossType::Dapo | LossType::Bnpo => (masked.sum_all()? / denom_tokens)?,
        LossType::DrGrpo => (masked.sum_all()? / (b * cfg.max_completion_length) as f64)?,
    };

    let masked_mean = |x: &Tensor| -> Result<f32> {
        let s = scalar_f32(&x.detach().mul(&mask)?.sum_all()?)?;
        Ok((s as f64 / denom_tokens) as f32)
    };
    let clip_fraction = masked_mean(&clipped_active)?;
    let ratio_mean = masked_mean(&ratio_d)?;
    let kl_mean = match &kl {
        Some(kl) => masked_mean(kl)?,
        None => 0.0,
    };
    Ok(GrpoLoss {
        loss,
        clip_fraction,
        kl_mean,
        ratio_mean,
    })
}

/// Entropy of categorical distributions given logits `[N, K]` (mean over N, in nats), for logging.
///
/// Logits of `-inf` (masked classes) contribute nothing.
pub fn mean_entropy(logits: &Tensor) -> Result<f32> {
    let (n, k) = logits.dims2().map_err(|_| {
        Error::invalid(
            "logits",
            format!("expected [N, K], got {:?}", logits.dims()),
        )
    })?;
    if n == 0 || k == 0 {
        return Err(Error::invalid(
            "logits",
            format!("empty logits {:?}", logits.dims()),
        ));
    }
    let logits = logits.detach().to_dtype(DType::F32)?;
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let p = logp.exp()?;
    let plogp = p.mul(&logp)?;
    let zeros = plogp.zeros_like()?;
    let plogp = p.gt(0.0)?.where_cond(&plogp, &zeros)?;
    let h = plogp.sum(1)?.neg()?.mean_all()?;
    scalar_f32(&h)
}

#[cfg(test)]
mod tests;
