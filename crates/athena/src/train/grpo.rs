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
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    const TOL: f32 = 1e-5;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() <= TOL * (1.0 + b.abs())
    }

    fn assert_close(a: f32, b: f32) {
        assert!(close(a, b), "{a} != {b}");
    }

    fn assert_all_close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!(close(*x, *y), "{a:?} != {b:?}");
        }
    }

    fn t2(v: &[&[f32]]) -> Tensor {
        let rows = v.len();
        let cols = v[0].len();
        let flat: Vec<f32> = v.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_vec(flat, (rows, cols), &Device::Cpu).unwrap()
    }

    fn t1(v: &[f32]) -> Tensor {
        Tensor::from_slice(v, v.len(), &Device::Cpu).unwrap()
    }

    fn cfg(loss_type: LossType) -> GrpoConfig {
        GrpoConfig {
            loss_type,
            ..GrpoConfig::default()
        }
    }

    fn loss_of(
        c: &GrpoConfig,
        logp: &Tensor,
        old: &Tensor,
        r: Option<&Tensor>,
        adv: &[f32],
        mask: &Tensor,
    ) -> GrpoLoss {
        grpo_loss(c, logp, old, r, &t1(adv), mask).unwrap()
    }

    fn val(l: &GrpoLoss) -> f32 {
        l.loss.to_scalar::<f32>().unwrap()
    }

    // ---- advantages ----

    #[test]
    fn advantages_unbiased_std() {
        // [1,0,0,1]: mean 0.5, deviations ±0.5, unbiased var = 4·0.25/3 = 1/3,
        // std = 0.5773503; Â = ±0.5 / (0.5773503 + 1e-4) = ±0.8658754.
        let a = group_advantages(&[1.0, 0.0, 0.0, 1.0], 4, true, 1e-4).unwrap();
        let x = 0.865_875_4;
        assert_all_close(&a, &[x, -x, -x, x]);
        // Without scaling: centred only.
        let a = group_advantages(&[1.0, 0.0, 0.0, 1.0], 4, false, 1e-4).unwrap();
        assert_all_close(&a, &[0.5, -0.5, -0.5, 0.5]);
    }

    #[test]
    fn advantages_groups_contiguous_and_degenerate() {
        // Group [0,1]: mean 0.5, unbiased std = sqrt(0.5/1) = 0.7071068 → ±0.5/0.7072068 =
        // ±0.7070068 (population std 0.5 would give ±0.9998). Group [3,3,3]: 0, no NaN.
        let a = group_advantages(&[0.0, 1.0, 3.0, 3.0, 3.0, 3.0], 2, true, 1e-4).unwrap();
        let y = 0.707_006_8;
        assert_all_close(&a, &[-y, y, 0.0, 0.0, 0.0, 0.0]);
        let a = group_advantages(&[2.0, 2.0, 2.0], 3, true, 1e-4).unwrap();
        assert!(a.iter().all(|v| *v == 0.0));
        // Groups of one: std 0, advantage 0.
        let a = group_advantages(&[5.0, -1.0], 1, true, 1e-4).unwrap();
        assert_all_close(&a, &[0.0, 0.0]);
        assert!(group_advantages(&[], 4, true, 1e-4).unwrap().is_empty());
    }

    #[test]
    fn advantages_errors() {
        assert!(group_advantages(&[1.0, 2.0, 3.0], 2, true, 1e-4).is_err());
        assert!(group_advantages(&[1.0], 0, true, 1e-4).is_err());
        assert!(group_advantages(&[f32::NAN, 1.0], 2, true, 1e-4).is_err());
        assert!(group_advantages(&[1.0, 1.0], 2, true, 0.0).is_err());
        assert!(group_advantages(&[1.0, 1.0], 2, false, 0.0).is_ok());
        assert!(group_advantages(&[1.0, 1.0], 2, true, -1.0).is_err());
    }

    // ---- aggregation ----

    /// B = 2, T = 3, mask [[1,1,1],[1,0,0]]; padding carries a wild ratio (e^5) that must not count.
    fn ragged() -> (Tensor, Tensor, Tensor) {
        let logp = t2(&[&[-0.3, -1.2, -0.7], &[-2.0, 5.0, 5.0]]);
        let old = t2(&[&[-0.3, -1.2, -0.7], &[-2.0, 0.0, 0.0]]);
        let mask = t2(&[&[1.0, 1.0, 1.0], &[1.0, 0.0, 0.0]]);
        (logp, old, mask)
    }

    #[test]
    fn on_policy_aggregations() {
        // ρ = 1 on every counted token, so per-token loss = -Â. Â = [1, -2].
        let (logp, old, mask) = ragged();
        let adv = [1.0, -2.0];
        // grpo: row 1: 3·(-1)/3 = -1; row 2: 1·2/1 = 2; mean = 0.5 = -mean_seq(Â).
        let l = loss_of(&cfg(LossType::Grpo), &logp, &old, None, &adv, &mask);
        assert_close(val(&l), 0.5);
        assert_close(l.ratio_mean, 1.0);
        assert_eq!(l.clip_fraction, 0.0);
        assert_eq!(l.kl_mean, 0.0);
        // dapo / bnpo: (-1-1-1+2)/4 tokens = -0.25 = -mean_token(Â).
        for lt in [LossType::Dapo, LossType::Bnpo] {
            let l = loss_of(&cfg(lt), &logp, &old, None, &adv, &mask);
            assert_close(val(&l), -0.25);
        }
        // dr_grpo: -1 / (B·L) = -1/(2·3) = -1/6, and with L = 5: -1/10.
        let mut c = cfg(LossType::DrGrpo);
        c.max_completion_length = 3;
        assert_close(
            val(&loss_of(&c, &logp, &old, None, &adv, &mask)),
            -1.0 / 6.0,
        );
        c.max_completion_length = 5;
        assert_close(val(&loss_of(&c, &logp, &old, None, &adv, &mask)), -0.1);
        // T = 3 exceeds L = 2: rejected.
        c.max_completion_length = 2;
        assert!(grpo_loss(&c, &logp, &old, None, &t1(&adv), &mask).is_err());
    }

    #[test]
    fn empty_rows_and_mask() {
        // Row 2 fully masked: grpo counts it with normaliser clamped to 1 (contributes 0):
        // (-1 + 0)/2 = -0.5. All masked: every loss is 0, no NaN.
        let logp = t2(&[&[0.0, 0.0], &[0.0, 0.0]]);
        let mask = t2(&[&[1.0, 1.0], &[0.0, 0.0]]);
        let l = loss_of(&cfg(LossType::Grpo), &logp, &logp, None, &[1.0, 3.0], &mask);
        assert_close(val(&l), -0.5);
        let zero = logp.zeros_like().unwrap();
        for lt in [
            LossType::Grpo,
            LossType::Dapo,
            LossType::Bnpo,
            LossType::DrGrpo,
        ] {
            let mut c = cfg(lt);
            c.max_completion_length = 2;
            let l = loss_of(&c, &logp, &logp, None, &[1.0, 3.0], &zero);
            assert_eq!(val(&l), 0.0);
            assert_eq!(l.clip_fraction, 0.0);
            assert_eq!(l.ratio_mean, 0.0);
        }
    }

    // ---- clipping ----

    #[test]
    fn clipping_symmetric() {
        // T = 1, ε = 0.2, four completions:
        //   ρ=1.5, Â=+1: -min(1.5, 1.2) = -1.2       (clipped high)
        //   ρ=0.5, Â=-1: -min(-0.5, -0.8) = 0.8      (clipped low)
        //   ρ=1.5, Â=-1: -min(-1.5, -1.2) = 1.5      (not clipped)
        //   ρ=0.5, Â=+1: -min(0.5, 0.8) = -0.5       (not clipped)
        // dapo: (-1.2 + 0.8 + 1.5 - 0.5)/4 = 0.15; clip_fraction 2/4; ratio_mean (1.5+0.5)·2/4 = 1.
        let l15 = 1.5f32.ln();
        let l05 = 0.5f32.ln();
        let logp = Var::from_tensor(&t2(&[&[l15], &[l05], &[l15], &[l05]])).unwrap();
        let old = t2(&[&[0.0], &[0.0], &[0.0], &[0.0]]);
        let mask = t2(&[&[1.0], &[1.0], &[1.0], &[1.0]]);
        let l = loss_of(
            &cfg(LossType::Dapo),
            logp.as_tensor(),
            &old,
            None,
            &[1.0, -1.0, -1.0, 1.0],
            &mask,
        );
        assert_close(val(&l), 0.15);
        assert_close(l.clip_fraction, 0.5);
        assert_close(l.ratio_mean, 1.0);
        // Gradients: clipped rows 0; unclipped d(-ρÂ/4)/dlogp = -ρÂ/4: 1.5/4 = 0.375, -0.5/4 = -0.125.
        let g = l.loss.backward().unwrap();
        let g = g.get(logp.as_tensor()).unwrap().flatten_all().unwrap();
        assert_all_close(&g.to_vec1::<f32>().unwrap(), &[0.0, 0.0, 0.375, -0.125]);
    }

    #[test]
    fn clipping_epsilon_high() {
        // ε = 0.2, ε_high = 0.28:
        //   ρ=1.25, Â=+1: within 1.28 → -1.25, not clipped (with ε_high = ε: -1.2, clipped)
        //   ρ=1.5,  Â=+1: -1.28, clipped
        //   ρ=0.75, Â=-1: below 0.8 → -min(-0.75, -0.8) = 0.8, clipped
        // dapo: (-1.25 - 1.28 + 0.8)/3 = -1.73/3; clip_fraction 2/3.
        let logp = t2(&[&[1.25f32.ln()], &[1.5f32.ln()], &[0.75f32.ln()]]);
        let old = logp.zeros_like().unwrap();
        let mask = old.ones_like().unwrap();
        let adv = [1.0, 1.0, -1.0];
        let mut c = cfg(LossType::Dapo);
        c.epsilon_high = Some(0.28);
        let l = loss_of(&c, &logp, &old, None, &adv, &mask);
        assert_close(val(&l), -1.73 / 3.0);
        assert_close(l.clip_fraction, 2.0 / 3.0);
        // Symmetric ε: (-1.2 - 1.2 + 0.8)/3 = -1.6/3; all three clipped.
        let l = loss_of(&cfg(LossType::Dapo), &logp, &old, None, &adv, &mask);
        assert_close(val(&l), -1.6 / 3.0);
        assert_close(l.clip_fraction, 1.0);
    }

    // ---- KL ----

    #[test]
    fn kl_k3_values() {
        let a = t1(&[-0.3, -1.0, -2.5]);
        let k = kl_k3(&a, &a).unwrap().to_vec1::<f32>().unwrap();
        assert!(k.iter().all(|v| *v == 0.0));
        // cur = ln 0.5, ref = ln 0.25: d = ref - cur = ln 0.5 = -0.6931472;
        // exp(d) - d - 1 = 0.5 + 0.6931472 - 1 = 0.1931472.
        let k = kl_k3(&t1(&[0.5f32.ln()]), &t1(&[0.25f32.ln()])).unwrap();
        assert_close(k.to_vec1::<f32>().unwrap()[0], 0.193_147_2);
        let b = t1(&[-1.0, -0.2, -3.0]);
        let k = kl_k3(&a, &b).unwrap().to_vec1::<f32>().unwrap();
        assert!(k.iter().all(|v| *v > 0.0));
        assert!(kl_k3(&a, &t1(&[0.0])).is_err());
    }

    #[test]
    fn beta_kl_added_with_gradient() {
        // On-policy, Â = 0, B = 1, T = 2, cur = ln 0.5, ref = ln 0.25 on both tokens:
        // per-token loss = β·0.1931472; dapo mean = 0.1·0.1931472 = 0.01931472.
        // d/dcur KL = 1 - exp(ref - cur) = 0.5, so dloss/dlogp_i = β·0.5/2 = 0.025.
        let logp = Var::from_tensor(&t2(&[&[0.5f32.ln(), 0.5f32.ln()]])).unwrap();
        let old = logp.as_tensor().detach();
        let r = t2(&[&[0.25f32.ln(), 0.25f32.ln()]]);
        let mask = t2(&[&[1.0, 1.0]]);
        let mut c = cfg(LossType::Dapo);
        c.beta = 0.1;
        c.max_completion_length = 2;
        let l = loss_of(&c, logp.as_tensor(), &old, Some(&r), &[0.0], &mask);
        assert_close(val(&l), 0.019_314_72);
        assert_close(l.kl_mean, 0.193_147_2);
        let g = l.loss.backward().unwrap();
        let g = g.get(logp.as_tensor()).unwrap().flatten_all().unwrap();
        assert_all_close(&g.to_vec1::<f32>().unwrap(), &[0.025, 0.025]);
        // β = 0 with a reference: KL logged but not added.
        c.beta = 0.0;
        let l = loss_of(&c, logp.as_tensor(), &old, Some(&r), &[0.0], &mask);
        assert_eq!(val(&l), 0.0);
        assert_close(l.kl_mean, 0.193_147_2);
        // β > 0 without a reference: error naming ref_logp.
        c.beta = 0.1;
        let e = grpo_loss(&c, logp.as_tensor(), &old, None, &t1(&[0.0]), &mask).unwrap_err();
        assert!(e.to_string().contains("ref_logp"), "{e}");
    }

    // ---- gradients ----

    #[test]
    fn gradient_unclipped() {
        // B = 2, T = 2, mask [[1,1],[1,0]], Â = [2, -1].
        // Row 0 token 0 off-policy ρ = 1.1 (within [0.8, 1.2]); others ρ = 1.
        // dapo: loss = -Σ ρ_i Â_i / 3, d/dlogp_i = -ρ_i Â_i / 3:
        //   [-2.2/3, -2/3; 1/3, 0] (padding gets 0).
        let logp = Var::from_tensor(&t2(&[&[1.1f32.ln(), -0.4], &[-1.0, -2.0]])).unwrap();
        let old = t2(&[&[0.0, -0.4], &[-1.0, -7.0]]);
        let mask = t2(&[&[1.0, 1.0], &[1.0, 0.0]]);
        let l = loss_of(
            &cfg(LossType::Dapo),
            logp.as_tensor(),
            &old,
            None,
            &[2.0, -1.0],
            &mask,
        );
        // value: -(1.1·2 + 2 - 1)/3 = -3.2/3
        assert_close(val(&l), -3.2 / 3.0);
        let g = l.loss.backward().unwrap();
        let g = g.get(logp.as_tensor()).unwrap().flatten_all().unwrap();
        assert_all_close(
            &g.to_vec1::<f32>().unwrap(),
            &[-2.2 / 3.0, -2.0 / 3.0, 1.0 / 3.0, 0.0],
        );
        // grpo: row 0 normalised by 2, row 1 by 1, then mean over 2 rows:
        //   [-2.2/4, -2/4; 1/2, 0].
        let l = loss_of(
            &cfg(LossType::Grpo),
            logp.as_tensor(),
            &old,
            None,
            &[2.0, -1.0],
            &mask,
        );
        let g = l.loss.backward().unwrap();
        let g = g.get(logp.as_tensor()).unwrap().flatten_all().unwrap();
        assert_all_close(&g.to_vec1::<f32>().unwrap(), &[-0.55, -0.5, 0.5, 0.0]);
        // dr_grpo, L = 4: d/dlogp_i = -ρ_i Â_i / (2·4) = [-2.2/8, -2/8; 1/8, 0].
        let mut c = cfg(LossType::DrGrpo);
        c.max_completion_length = 4;
        let l = loss_of(&c, logp.as_tensor(), &old, None, &[2.0, -1.0], &mask);
        let g = l.loss.backward().unwrap();
        let g = g.get(logp.as_tensor()).unwrap().flatten_all().unwrap();
        assert_all_close(&g.to_vec1::<f32>().unwrap(), &[-0.275, -0.25, 0.125, 0.0]);
    }

    #[test]
    fn gradient_at_clip_boundary_is_full() {
        // ρ exactly 1 + ε (not strictly above): not clipped, gradient -ρÂ = -1.25 with ε = 0.25.
        let logp = Var::from_tensor(&t2(&[&[1.25f32.ln()]])).unwrap();
        let old = t2(&[&[0.0]]);
        let mask = t2(&[&[1.0]]);
        let mut c = cfg(LossType::Dapo);
        c.epsilon = 0.25;
        let ratio = logp.as_tensor().exp().unwrap().flatten_all().unwrap();
        let rho = ratio.to_vec1::<f32>().unwrap()[0];
        let l = loss_of(&c, logp.as_tensor(), &old, None, &[1.0], &mask);
        let g = l.loss.backward().unwrap();
        let g = g.get(logp.as_tensor()).unwrap().flatten_all().unwrap();
        let g = g.to_vec1::<f32>().unwrap()[0];
        if rho > 1.25 {
            assert_eq!(g, 0.0);
        } else {
            assert_close(g, -rho);
        }
    }

    // ---- validation ----

    #[test]
    fn config_validation_names_field() {
        let bad = |f: &dyn Fn(&mut GrpoConfig), field: &str| {
            let mut c = GrpoConfig::default();
            f(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{e} should name {field}");
        };
        bad(&|c| c.epsilon = 0.0, "epsilon");
        bad(&|c| c.epsilon = 1.0, "epsilon");
        bad(&|c| c.epsilon = f64::NAN, "epsilon");
        bad(&|c| c.epsilon_high = Some(-0.1), "epsilon_high");
        bad(&|c| c.epsilon_high = Some(f64::INFINITY), "epsilon_high");
        bad(&|c| c.beta = -1.0, "beta");
        bad(&|c| c.adv_eps = 0.0, "adv_eps");
        bad(&|c| c.max_completion_length = 0, "max_completion_length");
        assert!(GrpoConfig::default().validate().is_ok());
        let c = GrpoConfig {
            epsilon_high: Some(0.28),
            ..GrpoConfig::default()
        };
        assert!(c.validate().is_ok());
        assert_eq!(c.epsilon_high(), 0.28);
        assert_eq!(GrpoConfig::default().epsilon_high(), 0.2);
    }

    #[test]
    fn loss_shape_errors() {
        let c = GrpoConfig::default();
        let x = t2(&[&[0.0], &[0.0]]);
        let m = x.ones_like().unwrap();
        let a = t1(&[1.0, 1.0]);
        let e = grpo_loss(&c, &x, &t2(&[&[0.0]]), None, &a, &m).unwrap_err();
        assert!(e.to_string().contains("old_logp"), "{e}");
        let e = grpo_loss(&c, &x, &x, None, &t1(&[1.0]), &m).unwrap_err();
        assert!(e.to_string().contains("advantages"), "{e}");
        let e = grpo_loss(&c, &x, &x, None, &a, &t2(&[&[1.0, 1.0]])).unwrap_err();
        assert!(e.to_string().contains("mask"), "{e}");
        let e = grpo_loss(&c, &x, &x, Some(&t2(&[&[0.0]])), &a, &m).unwrap_err();
        assert!(e.to_string().contains("ref_logp"), "{e}");
        let e = grpo_loss(&c, &t1(&[0.0]), &x, None, &a, &m).unwrap_err();
        assert!(e.to_string().contains("logp"), "{e}");
        let bad = GrpoConfig {
            epsilon: 2.0,
            ..GrpoConfig::default()
        };
        assert!(grpo_loss(&bad, &x, &x, None, &a, &m).is_err());
    }

    // ---- entropy and serde ----

    #[test]
    fn entropy_values() {
        // Row 1 uniform over 4: ln 4 = 1.3862944. Row 2 two live classes: ln 2 = 0.6931472.
        // Mean = 1.0397208.
        let ninf = f32::NEG_INFINITY;
        let logits = t2(&[&[0.0, 0.0, 0.0, 0.0], &[3.0, 3.0, ninf, ninf]]);
        assert_close(mean_entropy(&logits).unwrap(), 1.039_720_8);
        // Near-deterministic row: entropy ≈ 0.
        let h = mean_entropy(&t2(&[&[0.0, ninf, ninf]])).unwrap();
        assert_eq!(h, 0.0);
        assert!(mean_entropy(&t1(&[0.0, 1.0])).is_err());
    }

    #[test]
    fn serde_names_and_defaults() {
        assert_eq!(
            serde_json::to_string(&LossType::DrGrpo).unwrap(),
            "\"dr_grpo\""
        );
        let c: GrpoConfig = serde_json::from_str(r#"{"loss_type":"bnpo","beta":0.04}"#).unwrap();
        assert_eq!(c.loss_type, LossType::Bnpo);
        assert_eq!(c.beta, 0.04);
        assert_eq!(c.epsilon, 0.2);
        assert_eq!(c.adv_eps, 1e-4);
        assert!(c.scale_rewards);
        let d: GrpoConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(d, GrpoConfig::default());
        assert_eq!(d.loss_type, LossType::Dapo);
    }
}
