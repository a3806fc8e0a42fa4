//! The memory-quality eval: fact streams and their ground truth, the metrics on hand-made
//! cases, and replays into real SQLite banks on the fixture model.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use athena::config::OlmoeConfig;
use athena::memory::eval::examples::stream_examples;
use athena::memory::eval::metrics::{score, score_end_state, FactOutcome, ScopeTexts};
use athena::memory::eval::replay::{evaluate, outcome, replay, Strategy};
use athena::memory::eval::stream::{
    fold, read_stream, write_stream, StreamFact, StreamOp, TruthState,
};
use athena::memory::eval::synth::{synthetic_stream, StreamConfig};
use athena::memory::{BankConfig, Decider, Event, EventKind, MemoryBank};
use athena::models::action_head::{ActionHeadConfig, MemoryActionHead};
use athena::models::olmoe::OlmoeModel;
use athena::train::data::{read_examples, write_examples};
use athena::Error;
use candle_core::Device;

fn fact(user: &str, text: &str, op: StreamOp, key: &str, target: Option<&str>) -> StreamFact {
    StreamFact {
        user_id: user.into(),
        fact: text.into(),
        op,
        key: key.into(),
        target: target.map(String::from),
        state: None,
    }
}

fn texts(pairs: &[(&str, &[&str])]) -> ScopeTexts {
    pairs
        .iter()
        .map(|(u, ts)| (u.to_string(), ts.iter().map(|t| t.to_string()).collect()))
        .collect()
}

fn model() -> OlmoeModel {
    let mut config = OlmoeConfig::for_model(common::fixture("base").to_str().unwrap());
    config.use_mlx = false;
    let mut model = OlmoeModel::new(config);
    model.load().unwrap();
    model
}

fn fresh_bank(dir: &tempfile::TempDir) -> MemoryBank {
    let path = dir.path().join("memory.db");
    MemoryBank::open(path.to_str().unwrap(), BankConfig::default()).unwrap()
}

/// Three ADDs, then an UPDATE, a DELETE and a reworded NOOP, for one user.
fn hand_stream() -> Vec<StreamFact> {
    use StreamOp::*;
    vec![
        fact("u1", "Alice lives in Paris.", Add, "Alice/city", None),
        fact("u1", "Bob has a cat.", Add, "Bob/pet", None),
        fact("u1", "The car is in the garage.", Add, "car/place", None),
        fact(
            "u1",
            "Alice moved to Rome.",
            Update,
            "Alice/city",
            Some("Alice lives in Paris."),
        ),
        fact(
            "u1",
            "Bob no longer has a cat.",
            Delete,
            "Bob/pet",
            Some("Bob has a cat."),
        ),
        fact("u1", "The car sits in the garage.", Noop, "car/place", None),
    ]
}

#[test]
fn the_generator_is_fixed_by_its_seed() {
    let config = StreamConfig {
        facts: 300,
        ..StreamConfig::default()
    };
    let a = synthetic_stream(&config);
    assert_eq!(a.len(), 300);
    assert_eq!(a, synthetic_stream(&config));
    let other = synthetic_stream(&StreamConfig { seed: 1, ..config });
    assert_ne!(a, other);
    // The state is an annotation: with it, the facts are the same.
    let with_state = synthetic_stream(&StreamConfig {
        with_state: true,
        ..StreamConfig::default()
    });
    let plain = synthetic_stream(&StreamConfig::default());
    assert_eq!(with_state.len(), plain.len());
    for (s, p) in with_state.iter().zip(&plain) {
        assert!(s.state.is_some());
        assert_eq!(
            StreamFact {
                state: None,
                ..s.clone()
            },
            *p
        );
    }
}

#[test]
fn the_ground_truth_is_the_fold_of_the_operations() {
    let config = StreamConfig {
        facts: 2000,
        users: 3,
        seed: 7,
        with_state: true,
        ..StreamConfig::default()
    };
    let stream = synthetic_stream(&config);
    // `apply` checks each written state against the fold, line by line.
    let truth = fold(&stream).unwrap();
    // Rebuild each user's state independently, from texts only.
    let mut by_text: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for f in &stream {
        let state = by_text.entry(&f.user_id).or_default();
        match f.op {
            StreamOp::Add => assert!(state.insert(f.fact.clone()), "{f:?}"),
            StreamOp::Update => {
                assert!(state.remove(f.target.as_ref().unwrap()), "{f:?}");
                assert!(state.insert(f.fact.clone()), "{f:?}");
            }
            StreamOp::Delete => assert!(state.remove(f.target.as_ref().unwrap()), "{f:?}"),
            StreamOp::Noop => {}
        }
        let written: BTreeSet<String> = f.state.clone().unwrap().into_iter().collect();
        assert_eq!(*state, written, "{f:?}");
    }
    let rebuilt: ScopeTexts = by_text
        .into_iter()
        .map(|(u, s)| (u.to_string(), s))
        .collect();
    assert_eq!(truth.texts(), rebuilt);
    // Every operation is drawn, for every user.
    let users: BTreeSet<&str> = stream.iter().map(|f| f.user_id.as_str()).collect();
    assert_eq!(users, BTreeSet::from(["u1", "u2", "u3"]));
    for op in StreamOp::ALL {
        let n = stream.iter().filter(|f| f.op == op).count();
        assert!(n > 200, "{op}: {n}");
    }
    // Some NOOPs repeat the memory's text exactly, some reword it.
    let mut state = TruthState::new();
    let (mut exact, mut reworded) = (0, 0);
    for f in &stream {
        if f.op == StreamOp::Noop {
            if state.held(&f.user_id, &f.key) == Some(f.fact.as_str()) {
                exact += 1;
            } else {
                reworded += 1;
            }
        }
        state.apply(f).unwrap();
    }
    assert!(
        exact > 20 && reworded > 20,
        "{exact} exact, {reworded} reworded"
    );
}

#[test]
fn streams_round_trip_and_bad_lines_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.jsonl");
    let stream = synthetic_stream(&StreamConfig {
        facts: 50,
        with_state: true,
        ..StreamConfig::default()
    });
    write_stream(&path, &stream).unwrap();
    assert_eq!(read_stream(&path).unwrap(), stream);

    let add = r#"{"user_id":"u1","fact":"Alice lives in Paris.","op":"ADD","key":"Alice/city"}"#;
    let cases: [(String, &str); 9] = [
        ("{".into(), "line 1: invalid JSON"),
        (
            format!("{add}\n{add}"),
            "line 2: ADD of `Alice/city`, which already holds",
        ),
        (
            r#"{"user_id":"u1","fact":"Bob left Rome.","op":"DELETE","key":"Bob/city","target":"Bob lives in Rome."}"#.into(),
            "line 1: DELETE of `Bob/city`, which holds nothing",
        ),
        (
            format!("{add}\n{}", r#"{"user_id":"u1","fact":"Alice moved to Oslo.","op":"UPDATE","key":"Alice/city","target":"Alice lives in Rome."}"#),
            "line 2: `target` is not the memory `Alice/city` holds",
        ),
        (
            format!("{add}\n{}", r#"{"user_id":"u1","fact":"Alice moved to Oslo.","op":"UPDATE","key":"Alice/city"}"#),
            "line 2: UPDATE needs a `target`",
        ),
        (
            r#"{"user_id":"u1","fact":"x","op":"ADD","key":"k","state":["y"]}"#.into(),
            "line 1: `state` lists 1 memories that differ",
        ),
        (
            r#"{"user_id":"","fact":"x","op":"ADD","key":"k"}"#.into(),
            "line 1: `user_id` is empty",
        ),
        (
            r#"{"user_id":"u","fact":"x","op":"ADD","key":"k","extra":1}"#.into(),
            "line 1: invalid JSON: unknown field `extra`",
        ),
        ("\n\n".into(), "no facts"),
    ];
    for (text, want) in cases {
        std::fs::write(&path, &text).unwrap();
        match read_stream(&path) {
            Err(athena::memory::MemoryError::Model(Error::Config { path: p, msg })) => {
                assert_eq!(p, path);
                assert!(msg.contains(want), "{text}: `{msg}` lacks `{want}`");
            }
            other => panic!("{text}: expected a config error, got {other:?}"),
        }
    }
}

#[test]
fn end_state_metrics_on_hand_made_cases() {
    let truth = texts(&[("a", &["x", "y", "z"]), ("b", &["p"])]);
    // Perfect.
    let s = score_end_state(&truth, &truth);
    assert_eq!((s.precision, s.recall, s.exact_match), (1.0, 1.0, 1.0));
    // One extra memory in `a`, one missing in `b`: 4 held of which 3 right; 4 expected.
    let held = texts(&[("a", &["x", "y", "z", "w"]), ("b", &[])]);
    let s = score_end_state(&truth, &held);
    assert_eq!((s.held, s.expected, s.correct), (4, 4, 3));
    assert_eq!((s.precision, s.recall), (0.75, 0.75));
    assert_eq!((s.exact_scopes, s.scopes, s.exact_match), (0, 2, 0.0));
    // A scope only the bank has counts; nothing held is precision 1.
    let s = score_end_state(&texts(&[("a", &["x"])]), &texts(&[("c", &["q"])]));
    assert_eq!((s.precision, s.recall, s.scopes), (0.0, 0.0, 2));
    let s = score_end_state(&texts(&[("a", &["x", "y"])]), &texts(&[]));
    assert_eq!((s.precision, s.recall, s.exact_match), (1.0, 0.0, 0.0));
    let s = score_end_state(&texts(&[("a", &[])]), &texts(&[]));
    assert_eq!((s.precision, s.recall, s.exact_match), (1.0, 1.0, 1.0));
}

#[test]
fn operation_accuracy_needs_the_right_target() {
    let stream = hand_stream();
    let update = &stream[3];
    let event = |kind, memory: &str, previous: Option<&str>| Event {
        id: None,
        event: kind,
        memory: memory.into(),
        previous_memory: previous.map(String::from),
    };
    let right = outcome(
        update,
        &event(
            EventKind::Update,
            "Alice moved to Rome.",
            Some("Alice lives in Paris."),
        ),
    );
    assert!(right.correct);
    let wrong_target = outcome(
        update,
        &event(
            EventKind::Update,
            "Alice moved to Rome.",
            Some("Bob has a cat."),
        ),
    );
    assert!(!wrong_target.correct);
    assert_eq!(wrong_target.got, StreamOp::Update);
    assert!(
        !outcome(
            &stream[4],
            &event(EventKind::Delete, "The car is in the garage.", None)
        )
        .correct
    );
    assert!(
        outcome(
            &stream[4],
            &event(EventKind::Delete, "Bob has a cat.", None)
        )
        .correct
    );
    assert!(outcome(&stream[5], &event(EventKind::Noop, "x", None)).correct);

    let o = |expected, got, correct| FactOutcome {
        expected,
        got,
        correct,
    };
    use StreamOp::*;
    let outcomes = [
        o(Add, Add, true),
        o(Add, Add, true),
        o(Update, Update, false),
        o(Update, Add, false),
        o(Delete, Delete, true),
        o(Noop, Add, false),
    ];
    let r = score(&outcomes, &texts(&[]), &texts(&[]));
    assert_eq!(r.facts, 6);
    assert_eq!(r.accuracy, 0.5);
    assert_eq!(r.operations["ADD"].accuracy, Some(1.0));
    assert_eq!(r.operations["UPDATE"].accuracy, Some(0.0));
    assert_eq!(r.operations["UPDATE"].total, 2);
    assert_eq!(r.operations["DELETE"].accuracy, Some(1.0));
    assert_eq!(r.operations["NOOP"].accuracy, Some(0.0));
    assert_eq!(r.confusion["UPDATE"]["UPDATE"], 1);
    assert_eq!(r.confusion["UPDATE"]["ADD"], 1);
    assert_eq!(r.confusion["NOOP"]["ADD"], 1);
    let none = score(&outcomes[..2], &texts(&[]), &texts(&[]));
    assert_eq!(none.operations["DELETE"].accuracy, None);
}

#[test]
fn always_add_keeps_every_replaced_and_retracted_fact() {
    let model = model();
    let dir = tempfile::tempdir().unwrap();
    let mut bank = fresh_bank(&dir);
    let stream = hand_stream();
    let r = evaluate(&mut bank, &model, &stream, Strategy::AlwaysAdd, &mut |_| {}).unwrap();
    // Truth: {Alice moved to Rome., The car is in the garage.}. The bank holds the three
    // ADDs, the UPDATE's fact, the DELETE's fact and the reworded NOOP: 6, of which 2 right.
    assert_eq!(
        (r.end_state.held, r.end_state.expected, r.end_state.correct),
        (6, 2, 2)
    );
    assert_eq!(r.end_state.precision, 2.0 / 6.0);
    assert_eq!(r.end_state.recall, 1.0);
    assert_eq!(r.end_state.exact_match, 0.0);
    assert_eq!(r.operations["ADD"].accuracy, Some(1.0));
    assert_eq!(r.operations["UPDATE"].accuracy, Some(0.0));
    assert_eq!(r.operations["DELETE"].accuracy, Some(0.0));
    assert_eq!(r.operations["NOOP"].accuracy, Some(0.0));
    assert!(bank.check().unwrap().is_ok());

    // Only ADDs: perfect.
    let dir = tempfile::tempdir().unwrap();
    let mut bank = fresh_bank(&dir);
    let r = evaluate(
        &mut bank,
        &model,
        &stream[..3],
        Strategy::AlwaysAdd,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(
        (
            r.end_state.precision,
            r.end_state.recall,
            r.end_state.exact_match,
            r.accuracy
        ),
        (1.0, 1.0, 1.0, 1.0)
    );
    // The bank must be fresh for the stream's users.
    assert!(evaluate(&mut bank, &model, &stream, Strategy::AlwaysAdd, &mut |_| {}).is_err());
}

#[test]
fn a_head_replay_is_scored_on_every_fact_and_leaves_a_sound_bank() {
    let model = model();
    let width = model.action_head().unwrap().input_dim();
    let head = MemoryActionHead::new(
        ActionHeadConfig {
            seed: 3,
            ..ActionHeadConfig::default()
        },
        width,
        &Device::Cpu,
    )
    .unwrap();
    let stream = synthetic_stream(&StreamConfig {
        facts: 60,
        users: 2,
        ..StreamConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut bank = fresh_bank(&dir);
    let mut seen = 0;
    let decider = Decider {
        head: &head,
        head_hash: None,
    };
    let r = replay(
        &mut bank,
        &model,
        &stream,
        Strategy::Head(decider),
        &mut |n| seen = n,
    )
    .unwrap();
    assert_eq!((r.outcomes.len(), seen), (60, 60));
    assert_eq!(r.held.len(), 2);
    let in_bank: usize = r.held.values().map(BTreeSet::len).sum();
    let listed = ["u1", "u2"]
        .iter()
        .map(|u| {
            bank.get_all(&athena::memory::Scope::user(*u), 0, 1000)
                .unwrap()
                .len()
        })
        .sum::<usize>();
    assert_eq!(in_bank, listed);
    assert!(bank.check().unwrap().is_ok());
}

#[test]
fn stream_examples_carry_retrievals_candidates_and_the_truths_labels() {
    let model = model();
    let stream = synthetic_stream(&StreamConfig {
        facts: 120,
        users: 2,
        seed: 5,
        ..StreamConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut bank = fresh_bank(&dir);
    let (examples, stats) = stream_examples(&mut bank, &model, &stream).unwrap();
    assert_eq!(stats.facts, 120);
    assert_eq!(stats.examples, examples.len());
    assert_eq!(
        stats.examples + stats.known + stats.target_not_retrieved,
        stats.facts
    );
    assert_eq!(stats.by_op.values().sum::<usize>(), stats.examples);
    assert!(stats.known > 0);
    for e in &examples {
        assert!(e.memories.len() <= BankConfig::default().candidates);
        assert!(e.memories.iter().all(|m| m.text != e.fact), "{e:?}");
        if let Some(t) = &e.label.target {
            assert!(e.memories.iter().any(|m| &m.id == t));
        }
    }
    // The bank ends in the truth's state.
    let truth = fold(&stream).unwrap().texts();
    for (user, want) in &truth {
        let scope = athena::memory::Scope::user(user);
        let got: BTreeSet<String> = bank
            .get_all(&scope, 0, 1000)
            .unwrap()
            .into_iter()
            .map(|r| r.text)
            .collect();
        assert_eq!(got, *want);
    }
    // The examples are valid train-head data.
    let path = dir.path().join("examples.jsonl");
    write_examples(&path, &examples).unwrap();
    assert_eq!(
        read_examples(&path, &ActionHeadConfig::default()).unwrap(),
        examples
    );
}
