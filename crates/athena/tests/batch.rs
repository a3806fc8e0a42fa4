//! Continuous batching: a batched step over slots that joined at different times gives the
//! same logits as running each sequence alone, on the candle override and on the default
//! built from `Backend::session()`.

mod common;

use athena::backend::{Backend, BackendKind, DecodeSession, Pooling, Slot};
use athena::checkpoint::OlmoeArgs;
use candle_core::DType;
use common::{load, max_diff};

/// A backend that forwards to the candle model but keeps the default `slots()`.
struct Plain<'a>(&'a dyn Backend);

impl Backend for Plain<'_> {
    fn kind(&self) -> BackendKind {
        self.0.kind()
    }
    fn args(&self) -> &OlmoeArgs {
        self.0.args()
    }
    fn device(&self) -> &'static str {
        self.0.device()
    }
    fn session(&self) -> Box<dyn DecodeSession + '_> {
        self.0.session()
    }
    fn logits(&self, ids: &[u32]) -> athena::Result<Vec<Vec<f32>>> {
        self.0.logits(ids)
    }
    fn encode(&self, batch: &[Vec<u32>], pooling: Pooling) -> athena::Result<Vec<Vec<f32>>> {
        self.0.encode(batch, pooling)
    }
}

/// One sequence alone: its prompt, then its tokens one at a time; the logits after each.
fn alone(model: &dyn Backend, prompt: &[u32], tokens: &[u32]) -> Vec<Vec<f32>> {
    let mut s = model.session();
    let mut out = vec![s.step(&[prompt.to_vec()]).unwrap().remove(0)];
    for &t in tokens {
        out.push(s.step(&[vec![t]]).unwrap().remove(0));
    }
    out
}

/// Three sequences joining at different steps, one leaving early; every row is compared
/// with the same sequence run alone.
fn check(model: &dyn Backend, reference: &dyn Backend) {
    let prompts: [&[u32]; 3] = [
        &[17, 301, 88, 452, 5, 230, 511, 64, 377, 129, 260],
        &[42, 399, 7, 268, 150],
        &[3],
    ];
    let tokens: [&[u32]; 3] = [&[9, 100, 200, 300, 400], &[11, 12, 13, 14], &[500, 501]];
    let expected: Vec<Vec<Vec<f32>>> = (0..3)
        .map(|i| alone(reference, prompts[i], tokens[i]))
        .collect();
    let mut got: Vec<Vec<Vec<f32>>> = vec![vec![]; 3];
    let mut batch = model.slots();
    let mut slot: Vec<Slot> = vec![0; 3];
    let mut next = [0usize; 3];
    // (sequences joining before this step, sequences stepped, sequences leaving after it)
    let schedule: [(&[usize], &[usize], &[usize]); 5] = [
        (&[0], &[0], &[]),
        (&[1], &[1, 0], &[]),
        (&[2], &[2, 0, 1], &[]),
        (&[], &[1, 2, 0], &[2]),
        (&[], &[0, 1], &[]),
    ];
    for (join, stepped, leave) in schedule {
        for &i in join {
            let (s, logits) = batch.insert(prompts[i]).unwrap();
            slot[i] = s;
            got[i].push(logits);
        }
        let steps: Vec<(Slot, u32)> = stepped
            .iter()
            .map(|&i| (slot[i], tokens[i][next[i]]))
            .collect();
        for (&i, row) in stepped.iter().zip(batch.step(&steps).unwrap()) {
            next[i] += 1;
            got[i].push(row);
        }
        for &i in leave {
            batch.remove(slot[i]);
        }
    }
    assert_eq!(batch.len(), 2);
    for i in 0..3 {
        assert_eq!(got[i].len(), next[i] + 1);
        for (j, (g, e)) in got[i].iter().zip(&expected[i]).enumerate() {
            let d = max_diff(g, e);
            assert!(d <= 1e-4, "sequence {i} row {j}: max |diff| {d}");
        }
    }
    // A freed slot is reused; bad steps are errors, not panics.
    let (s, _) = batch.insert(&[1, 2]).unwrap();
    assert_eq!(s, slot[2]);
    assert!(batch.step(&[(99, 1)]).is_err());
    assert!(batch.step(&[(s, 1), (s, 2)]).is_err());
    assert!(batch.step(&[(s, 1_000_000)]).is_err());
}

#[test]
fn a_batched_step_equals_each_sequence_alone() {
    let model = load("base", DType::F32);
    check(&model, &model);
}

#[test]
fn the_default_slot_batch_equals_each_sequence_alone() {
    let model = load("base", DType::F32);
    check(&Plain(&model), &model);
}

#[test]
fn batched_steps_hold_with_gqa_and_clipping() {
    for name in ["gqa_normtopk", "clip_bias"] {
        let model = load(name, DType::F32);
        check(&model, &model);
    }
}
