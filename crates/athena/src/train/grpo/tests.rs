//! The GRPO objective against values worked out by hand.

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
