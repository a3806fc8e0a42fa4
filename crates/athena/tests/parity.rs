//! The candle forward pass against HF transformers' logits and hidden states on every fixture
//! (scripts/make_fixtures.py), plus the cache and batch properties.

mod common;

use athena::backend::candle::Olmoe;
use candle_core::{DType, Tensor};
use common::{load, max_abs_diff, Reference, VARIANTS};

const TOL: f32 = 1e-4;

/// The logits of `ids` through the cache: the first four tokens in one pass, then one token
/// a step.
fn cached_logits(model: &Olmoe, ids: &[u32]) -> Tensor {
    let mut s = model.session();
    let mut rows = vec![model
        .forward(&[ids[..4].to_vec()], &mut s)
        .unwrap()
        .squeeze(0)
        .unwrap()];
    for &id in &ids[4..] {
        rows.push(
            model
                .forward(&[vec![id]], &mut s)
                .unwrap()
                .squeeze(0)
                .unwrap(),
        );
    }
    Tensor::cat(&rows, 0).unwrap()
}

#[test]
fn logits_and_hidden_states_match_transformers() {
    for &name in VARIANTS {
        let model = load(name, DType::F32);
        let r = Reference::load(name);
        for case in ["a", "b"] {
            let ids = r.ids(&format!("ids_{case}"));
            let mut s = model.session();
            let hidden = model
                .forward_hidden(std::slice::from_ref(&ids), &mut s)
                .unwrap()
                .squeeze(0)
                .unwrap();
            let logits = model.lm_head(&hidden).unwrap();
            let dl = max_abs_diff(&logits, r.get(&format!("logits_{case}")));
            let dh = max_abs_diff(&hidden, r.get(&format!("hidden_{case}")));
            println!("{name}/{case}: max |Δlogit| {dl:.2e}, max |Δhidden| {dh:.2e}");
            assert!(dl <= TOL, "{name}/{case}: max |Δlogit| {dl} > {TOL}");
            assert!(dh <= TOL, "{name}/{case}: max |Δhidden| {dh} > {TOL}");
        }
    }
}

#[test]
fn cached_decode_equals_full_forward() {
    for &name in VARIANTS {
        let model = load(name, DType::F32);
        let r = Reference::load(name);
        let cached = cached_logits(&model, &r.ids("ids_a"));
        let d = max_abs_diff(&cached, r.get("logits_a"));
        assert!(
            d <= TOL,
            "{name}: cached decode differs from transformers by {d}"
        );
    }
}

#[test]
fn a_padded_batch_equals_its_sequences_one_by_one() {
    for &name in VARIANTS {
        let model = load(name, DType::F32);
        let r = Reference::load(name);
        let (a, b) = (r.ids("ids_a"), r.ids("ids_b"));
        let mut s = model.session();
        let logits = model.forward(&[a.clone(), b.clone()], &mut s).unwrap();
        assert_eq!(s.padding(), &[0, a.len() - b.len()]);
        let row_a = logits.get(0).unwrap();
        let row_b = logits
            .get(1)
            .unwrap()
            .narrow(0, a.len() - b.len(), b.len())
            .unwrap();
        let da = max_abs_diff(&row_a, r.get("logits_a"));
        let db = max_abs_diff(&row_b, r.get("logits_b"));
        assert!(
            da <= TOL && db <= TOL,
            "{name}: batch prefill differs: {da} {db}"
        );

        // Two decode steps in the batch equal the same steps run alone.
        let steps = [[7u32, 300], [11, 5]];
        let mut batched = vec![];
        for step in steps {
            batched.push(
                model
                    .forward_last(&[vec![step[0]], vec![step[1]]], &mut s)
                    .unwrap(),
            );
        }
        for (row, prompt) in [(0usize, &a), (1, &b)] {
            let mut single = model.session();
            model
                .forward(std::slice::from_ref(prompt), &mut single)
                .unwrap();
            for (i, step) in steps.iter().enumerate() {
                let alone = model
                    .forward_last(&[vec![step[row]]], &mut single)
                    .unwrap()
                    .squeeze(0)
                    .unwrap();
                let d = max_abs_diff(&batched[i].get(row).unwrap(), &alone);
                assert!(
                    d <= TOL,
                    "{name}: batched decode row {row} step {i} differs by {d}"
                );
            }
        }
    }
}

#[test]
fn greedy_decoding_matches_transformers_generate() {
    for &name in VARIANTS {
        let model = load(name, DType::F32);
        let r = Reference::load(name);
        let expected = r.ids("greedy_ids");
        let mut s = model.session();
        let mut next = r.ids("ids_a");
        let mut got = vec![];
        for _ in 0..expected.len() {
            let logits = model
                .forward_last(&[next], &mut s)
                .unwrap()
                .squeeze(0)
                .unwrap();
            let id = logits.argmax(0).unwrap().to_scalar::<u32>().unwrap();
            got.push(id);
            next = vec![id];
        }
        assert_eq!(got, expected, "{name}");
    }
}

#[test]
fn bf16_compute_stays_close_to_transformers_bf16() {
    let model = load("base", DType::BF16);
    let r = Reference::load("base");
    let mut s = model.session();
    let logits = model
        .forward(&[r.ids("ids_a")], &mut s)
        .unwrap()
        .squeeze(0)
        .unwrap();
    let vs_bf16 = max_abs_diff(&logits, r.get("logits_a_bf16"));
    let vs_f32 = max_abs_diff(&logits, r.get("logits_a"));
    println!("bf16: max |Δlogit| vs transformers bf16 {vs_bf16:.3e}, vs f32 {vs_f32:.3e}");
    // transformers' own bf16 run is 3.85e-2 from its f32 run on this fixture; bf16 rounding
    // order differs between engines, so hold athena to the same scale as that gap.
    assert!(
        vs_bf16 <= 5e-2,
        "bf16 differs from transformers bf16 by {vs_bf16}"
    );
}

#[test]
fn bf16_cached_decode_stays_close_to_transformers_bf16() {
    // Decode in bf16 runs attention on the CPU's decode path (one query against the cache),
    // rounding where the reference's bf16 tensors do; it is held to the bound of the bf16
    // forward above.
    let model = load("base", DType::BF16);
    let r = Reference::load("base");
    let cached = cached_logits(&model, &r.ids("ids_a"));
    let d = max_abs_diff(&cached, r.get("logits_a_bf16"));
    println!("bf16 cached decode: max |Δlogit| vs transformers bf16 {d:.3e}");
    assert!(
        d <= 5e-2,
        "bf16 cached decode differs from transformers bf16 by {d}"
    );
}
