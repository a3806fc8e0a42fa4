//! Batched MLX = one by one: sequences that share one forward pass (continuous batching,
//! sessions of several sequences, encode) give what each sequence gives alone.
#![cfg(feature = "mlx")]

mod common;

use athena::backend::mlx::load_mlx;
use athena::backend::{Backend, Pooling, Slot, SlotBatch};
use common::{fixture, max_diff};

/// How far a batched float32 row may be from the same row run alone.
const TOL: f32 = 1e-5;

fn argmax(row: &[f32]) -> u32 {
    row.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
        )
        .0 as u32
}

/// `n` token ids from `seed`, inside the vocabulary.
fn prompt(model: &dyn Backend, seed: u32, n: usize) -> Vec<u32> {
    let vocab = model.args().vocab_size as u32;
    (0..n as u32)
        .map(|i| (seed * 7919 + i * 104_729 + 13) % vocab)
        .collect()
}

/// A sequence decoded greedily in a slot: its prompt, every row of logits it got, and the
/// tokens it chose from them.
struct Decoded {
    prompt: Vec<u32>,
    slot: Slot,
    rows: Vec<Vec<f32>>,
}

impl Decoded {
    fn next(&self) -> u32 {
        argmax(self.rows.last().unwrap())
    }
}

/// A prompt inserted alone into `batch`.
fn start(batch: &mut dyn SlotBatch, prompt: Vec<u32>) -> Decoded {
    let (slot, row) = batch.insert(&prompt).unwrap();
    Decoded {
        prompt,
        slot,
        rows: vec![row],
    }
}

/// One step of the listed sequences, in the order given.
fn step(batch: &mut dyn SlotBatch, seqs: &mut [&mut Decoded]) {
    let steps: Vec<(Slot, u32)> = seqs.iter().map(|s| (s.slot, s.next())).collect();
    let rows = batch.step(&steps).unwrap();
    assert_eq!(rows.len(), seqs.len());
    for (s, row) in seqs.iter_mut().zip(rows) {
        s.rows.push(row);
    }
}

/// The same prompt decoded alone through a session, for as many rows as `seq` got: the
/// largest difference of any row, after checking that the greedy tokens agree.
fn against_alone(model: &dyn Backend, seq: &Decoded, name: &str) -> f32 {
    let mut session = model.session();
    let mut row = session
        .step(std::slice::from_ref(&seq.prompt))
        .unwrap()
        .remove(0);
    let mut worst = 0f32;
    for (i, got) in seq.rows.iter().enumerate() {
        worst = worst.max(max_diff(got, &row));
        assert_eq!(argmax(got), argmax(&row), "{name}: greedy token {i}");
        if i + 1 < seq.rows.len() {
            row = session.step(&[vec![argmax(got)]]).unwrap().remove(0);
        }
    }
    worst
}

#[test]
fn slots_joining_at_different_times_equal_each_sequence_alone() {
    for name in ["base", "gqa_normtopk", "clip_bias", "mlx_q4"] {
        let model = load_mlx(&fixture(name)).unwrap();
        let model: &dyn Backend = &model;
        let mut batch = model.slots();
        let mut a = start(batch.as_mut(), prompt(model, 1, 6));
        step(batch.as_mut(), &mut [&mut a]);
        // Two prompts of different lengths prefilled together beside a running sequence.
        let (pb, pc) = (prompt(model, 2, 3), prompt(model, 3, 11));
        let joined = batch.insert_many(&[&pb, &pc]);
        let [b, c]: [_; 2] = joined
            .into_iter()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
            .try_into()
            .unwrap();
        let mut b = Decoded {
            prompt: pb,
            slot: b.0,
            rows: vec![b.1],
        };
        let mut c = Decoded {
            prompt: pc,
            slot: c.0,
            rows: vec![c.1],
        };
        assert_eq!(batch.len(), 3);
        step(batch.as_mut(), &mut [&mut c, &mut a, &mut b]);
        step(batch.as_mut(), &mut [&mut b, &mut c, &mut a]);
        // One leaves; its slot is reused by a one-token prompt.
        batch.remove(b.slot);
        assert_eq!(batch.len(), 2);
        let mut d = start(batch.as_mut(), prompt(model, 4, 1));
        assert_eq!(d.slot, b.slot, "{name}: the freed slot is reused");
        for _ in 0..3 {
            step(batch.as_mut(), &mut [&mut d, &mut a, &mut c]);
        }
        // A step may leave some sequences out.
        step(batch.as_mut(), &mut [&mut c]);
        let worst = [&a, &b, &c, &d]
            .iter()
            .map(|s| against_alone(model, s, name))
            .fold(0f32, f32::max);
        eprintln!("{name}: slots vs alone, max |Δ| = {worst:e}");
        assert!(worst <= TOL, "{name}: slots vs alone differ by {worst}");
    }
}

#[test]
fn a_slot_step_refuses_unknown_and_repeated_slots() {
    let model = load_mlx(&fixture("base")).unwrap();
    let mut batch = model.slots();
    let (slot, _) = batch.insert(&[1, 2, 3]).unwrap();
    assert!(batch.step(&[(slot + 1, 1)]).is_err(), "unknown slot");
    assert!(
        batch.step(&[(slot, 1), (slot, 2)]).is_err(),
        "repeated slot"
    );
    // A bad prompt among good ones fails alone.
    let vocab = model.args().vocab_size as u32;
    let joined = batch.insert_many(&[&[1, 2], &[vocab], &[3]]);
    assert!(joined[0].is_ok() && joined[1].is_err() && joined[2].is_ok());
    // The held sequences still step.
    assert_eq!(batch.step(&[(slot, 4)]).unwrap().len(), 1);
}

#[test]
fn a_session_of_several_sequences_equals_each_alone() {
    let model = load_mlx(&fixture("gqa_normtopk")).unwrap();
    let prompts = [
        prompt(&model, 5, 7),
        prompt(&model, 6, 2),
        prompt(&model, 7, 4),
    ];
    let mut together = model.session();
    let mut rows = together.step(&prompts).unwrap();
    let mut alone: Vec<_> = prompts.iter().map(|_| model.session()).collect();
    let mut want: Vec<Vec<f32>> = alone
        .iter_mut()
        .zip(&prompts)
        .map(|(s, p)| s.step(std::slice::from_ref(p)).unwrap().remove(0))
        .collect();
    let mut worst = 0f32;
    for _ in 0..4 {
        for (got, want) in rows.iter().zip(&want) {
            worst = worst.max(max_diff(got, want));
            assert_eq!(argmax(got), argmax(want));
        }
        let next: Vec<Vec<u32>> = rows.iter().map(|r| vec![argmax(r)]).collect();
        rows = together.step(&next).unwrap();
        want = alone
            .iter_mut()
            .zip(&next)
            .map(|(s, t)| s.step(std::slice::from_ref(t)).unwrap().remove(0))
            .collect();
    }
    eprintln!("session of three vs alone, max |Δ| = {worst:e}");
    assert!(worst <= TOL, "session of three vs alone differ by {worst}");
}

#[test]
fn encode_of_a_batch_equals_each_text_alone() {
    for name in ["base", "gqa_normtopk", "mlx_q4"] {
        let model = load_mlx(&fixture(name)).unwrap();
        let texts: Vec<Vec<u32>> = [7, 2, 12, 1, 5]
            .iter()
            .enumerate()
            .map(|(i, &n)| prompt(&model, 10 + i as u32, n))
            .collect();
        for pooling in [Pooling::Mean, Pooling::Last] {
            let batched = model.encode(&texts, pooling).unwrap();
            assert_eq!(batched.len(), texts.len());
            let mut worst = 0f32;
            for (text, got) in texts.iter().zip(&batched) {
                let alone = model.encode(std::slice::from_ref(text), pooling).unwrap();
                worst = worst.max(max_diff(got, &alone[0]));
            }
            eprintln!("{name} {pooling:?}: encode batch vs alone, max |Δ| = {worst:e}");
            assert!(worst <= TOL, "{name} {pooling:?}: differ by {worst}");
        }
        assert!(model.encode(&[], Pooling::Mean).unwrap().is_empty());
    }
}
