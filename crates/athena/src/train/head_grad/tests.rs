//! The hand-written pass against candle's autograd, and batch independence.

use super::*;
use crate::models::action_head::ActionHeadConfig;
use candle_core::{Device, Tensor, D};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn rows(rng: &mut StdRng, counts: &[usize], dim: usize) -> Rows {
    let total: usize = counts.iter().sum();
    let mut v = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
    Rows {
        dim,
        facts: v(counts.len() * dim),
        memories: v(total * dim),
        counts: counts.to_vec(),
    }
}

/// The candle inputs of the same batch: facts `[B, D]`, memories `[B, M, D]` padded with
/// a value that must not matter.
fn tensors(r: &Rows) -> (Tensor, Tensor) {
    let (b, m, dim) = (r.len(), r.max_count(), r.dim);
    let mut mem = vec![7.5f32; b * m * dim];
    let mut at = 0;
    for (i, &c) in r.counts.iter().enumerate() {
        for j in 0..c {
            let dst = (i * m + j) * dim;
            mem[dst..dst + dim].copy_from_slice(&r.memories[at * dim..(at + 1) * dim]);
            at += 1;
        }
    }
    (
        Tensor::from_vec(r.facts.clone(), (b, dim), &Device::Cpu).unwrap(),
        Tensor::from_vec(mem, (b, m, dim), &Device::Cpu).unwrap(),
    )
}

fn close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let tol = 1e-5 + 1e-4 * y.abs();
        assert!((x - y).abs() <= tol, "{what}[{i}]: {x} vs {y}");
    }
}

/// Forward values and every parameter's gradient equal candle's `batch_scores` and its
/// autograd, for a loss that weights every live logit (padding and masked operations
/// included, where both must give 0).
#[test]
fn forward_and_backward_equal_candle_autograd() {
    let mut rng = StdRng::seed_from_u64(11);
    for (counts, proj_dim) in [
        (vec![2usize, 0, 4, 1], 8usize),
        (vec![0, 0], 6),
        (vec![3], 5),
        (vec![1, 1, 1, 4, 2, 0, 3], 16),
    ] {
        let dim = 12;
        let head = MemoryActionHead::new(
            ActionHeadConfig {
                proj_dim,
                seed: 4,
                ..ActionHeadConfig::default()
            },
            dim,
            &Device::Cpu,
        )
        .unwrap();
        let r = rows(&mut rng, &counts, dim);
        let (facts, memories) = tensors(&r);
        let s = head.batch_scores(&facts, &memories, &counts).unwrap();
        let p = Params::read(&head).unwrap();
        let tape = forward(&p, &r).unwrap();
        let (b, n, m) = (r.len(), p.n_ops, r.max_count());
        close(
            &tape.op_logits,
            &s.op_logits.flatten_all().unwrap().to_vec1().unwrap(),
            "op_logits",
        );
        if let Some(t) = &s.target_logits {
            close(
                &tape.target_logits,
                &t.flatten_all().unwrap().to_vec1().unwrap(),
                "target_logits",
            );
        } else {
            assert_eq!(m, 0);
        }

        // loss = Σ w_op ⊙ log_softmax(op) + Σ w_t ⊙ log_softmax(target) · used.
        let w_op: Vec<f32> = (0..b * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let w_t: Vec<f32> = (0..b * m)
            .map(|k| {
                // Only real memories: a loss never weights padding.
                if k % m < counts[k / m] {
                    rng.random_range(-1.0..1.0)
                } else {
                    0.0
                }
            })
            .collect();
        let wt = |v: &[f32], c| Tensor::from_vec(v.to_vec(), (b, c), &Device::Cpu).unwrap();
        let mut loss = candle_nn::ops::log_softmax(&s.op_logits, D::Minus1)
            .unwrap()
            .mul(&wt(&w_op, n))
            .unwrap()
            .sum_all()
            .unwrap();
        if let Some(t) = &s.target_logits {
            let lt = candle_nn::ops::log_softmax(t, D::Minus1)
                .unwrap()
                .mul(&wt(&w_t, m))
                .unwrap()
                .sum_all()
                .unwrap();
            loss = (loss + lt).unwrap();
        }
        let autograd = loss.backward().unwrap();

        // The same loss's logit gradients by hand: w - softmax · Σ w, row by row.
        let logit_grad = |logits: &[f32], w: &[f32], c: usize| -> Vec<f32> {
            let mut lp = logits.to_vec();
            log_softmax_rows(&mut lp, c);
            let mut g = vec![0f32; lp.len()];
            for ((g, lp), w) in g
                .chunks_exact_mut(c)
                .zip(lp.chunks_exact(c))
                .zip(w.chunks_exact(c))
            {
                let total: f32 = w.iter().sum();
                for k in 0..c {
                    g[k] = w[k] - lp[k].exp() * total;
                }
            }
            g
        };
        let g_op = logit_grad(&tape.op_logits, &w_op, n);
        let g_t = if m > 0 {
            logit_grad(&tape.target_logits, &w_t, m)
        } else {
            Vec::new()
        };
        let grads = backward(&p, &r, &tape, &g_op, &g_t).unwrap();
        let data = head.varmap().data().lock().unwrap();
        for param in Param::ALL {
            let (i, name) = (param.index(), param.name());
            let var = &data[name];
            let expected = match autograd.get(var.as_tensor()) {
                Some(g) => g.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                None => vec![0f32; grads[i].len()],
            };
            close(&grads[i], &expected, name);
        }
    }
}

#[test]
fn an_example_scores_the_same_alone_as_in_a_batch() {
    let mut rng = StdRng::seed_from_u64(2);
    let head = MemoryActionHead::new(
        ActionHeadConfig {
            proj_dim: 16,
            ..ActionHeadConfig::default()
        },
        10,
        &Device::Cpu,
    )
    .unwrap();
    let p = Params::read(&head).unwrap();
    let batch = rows(&mut rng, &[1, 3, 0, 2], 10);
    let all = forward(&p, &batch).unwrap();
    let alone = Rows {
        dim: 10,
        facts: batch.facts[10..20].to_vec(),
        memories: batch.memories[10..40].to_vec(),
        counts: vec![3],
    };
    let one = forward(&p, &alone).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&one.op_logits), bits(&all.op_logits[4..8]));
    assert_eq!(bits(&one.target_logits), bits(&all.target_logits[3..6]));
}

#[test]
fn log_softmax_rows_normalises() {
    let mut x = vec![0.0, 0.0, 1.0, MASKED_LOGIT];
    log_softmax_rows(&mut x, 2);
    assert!((x[0] - 0.5f32.ln()).abs() < 1e-6);
    assert_eq!(x[3].exp(), 0.0);
    assert!(x[2].abs() < 1e-6);
}
