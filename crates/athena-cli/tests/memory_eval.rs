//! `athena memory eval`, `synth-stream` and `stream-examples` end to end on the fixture model.

use std::path::Path;

use serde_json::Value;

mod support;
use support::{athena, stderr};

fn fixture() -> String {
    support::fixture().display().to_string()
}

fn eval_json(stream: &Path, extra: &[&str]) -> Value {
    let model = fixture();
    let mut args = vec![
        "memory",
        "eval",
        "--model",
        &model,
        "--use-mlx",
        "false",
        "--stream",
        stream.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let o = athena(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8(o.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

const ADDS: &str = r#"{"user_id":"u1","fact":"Alice lives in Paris.","op":"ADD","key":"Alice/city"}
{"user_id":"u1","fact":"Bob has a cat.","op":"ADD","key":"Bob/pet"}
{"user_id":"u2","fact":"The car is in the garage.","op":"ADD","key":"car/place"}
"#;

#[test]
fn always_add_is_perfect_on_adds_and_loses_precision_on_updates() {
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("adds.jsonl");
    std::fs::write(&stream, ADDS).unwrap();
    let out = eval_json(&stream, &["--no-infer"]);
    assert_eq!(out["strategy"], "always-add");
    let r = &out["report"];
    assert_eq!(r["facts"], 3);
    assert_eq!(r["end_state"]["precision"], 1.0);
    assert_eq!(r["end_state"]["recall"], 1.0);
    assert_eq!(r["end_state"]["exact_match"], 1.0);
    assert_eq!(r["end_state"]["scopes"], 2);
    assert_eq!(r["accuracy"], 1.0);
    assert_eq!(r["operations"]["ADD"]["accuracy"], 1.0);
    assert_eq!(r["operations"]["UPDATE"]["accuracy"], Value::Null);

    // An UPDATE: the bank keeps the old memory next to the new one. u1 holds 3 memories
    // where the truth holds 2, u2 holds its 1: precision 3/4, recall 3/3, exact 1 scope of 2.
    let update = r#"{"user_id":"u1","fact":"Alice moved to Rome.","op":"UPDATE","key":"Alice/city","target":"Alice lives in Paris."}"#;
    std::fs::write(&stream, format!("{ADDS}{update}\n")).unwrap();
    let r = &eval_json(&stream, &["--no-infer"])["report"];
    assert_eq!(r["end_state"]["held"], 4);
    assert_eq!(r["end_state"]["expected"], 3);
    assert_eq!(r["end_state"]["precision"], 0.75);
    assert_eq!(r["end_state"]["recall"], 1.0);
    assert_eq!(r["end_state"]["exact_match"], 0.5);
    assert_eq!(r["operations"]["UPDATE"]["accuracy"], 0.0);
    assert_eq!(r["confusion"]["UPDATE"]["ADD"], 1);
    assert_eq!(r["accuracy"], 0.75);
}

#[test]
fn synth_stream_is_deterministic_and_always_add_never_forgets() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.jsonl");
    let b = dir.path().join("b.jsonl");
    for out in [&a, &b] {
        let o = athena(&[
            "memory",
            "synth-stream",
            "--n",
            "80",
            "--users",
            "2",
            "--seed",
            "9",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains("wrote 80 facts"), "{}", stderr(&o));
    }
    let text = std::fs::read_to_string(&a).unwrap();
    assert_eq!(text, std::fs::read_to_string(&b).unwrap());
    assert_eq!(text.lines().count(), 80);

    let r = &eval_json(&a, &["--no-infer"])["report"];
    assert_eq!(r["facts"], 80);
    // Every memory the truth holds was added at some point and nothing is ever removed.
    assert_eq!(r["end_state"]["recall"], 1.0);
    assert_eq!(r["operations"]["UPDATE"]["accuracy"], 0.0);
    assert_eq!(r["operations"]["DELETE"]["accuracy"], 0.0);
    assert!(r["end_state"]["precision"].as_f64().unwrap() < 1.0);
    // A fact is added unless its text is held already (an ADD whose text a restatement
    // brought in earlier is a NOOP).
    for (op, row) in r["confusion"].as_object().unwrap() {
        for (got, n) in row.as_object().unwrap() {
            if !["ADD", "NOOP"].contains(&got.as_str()) {
                assert_eq!(n, 0, "{op} -> {got}");
            }
        }
    }
}

#[test]
fn eval_needs_a_trained_head_or_an_explicit_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("adds.jsonl");
    std::fs::write(&stream, ADDS).unwrap();
    let model = fixture();
    let base = [
        "memory",
        "eval",
        "--model",
        &model,
        "--use-mlx",
        "false",
        "--stream",
        stream.to_str().unwrap(),
    ];
    let o = athena(&base);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--random-head"), "{}", stderr(&o));

    let mut both = base.to_vec();
    both.extend(["--no-infer", "--random-head"]);
    assert!(!athena(&both).status.success());

    let out = eval_json(&stream, &["--random-head", "--seed", "4"]);
    assert_eq!(out["strategy"], "random head (seed 4)");
    assert_eq!(out["report"]["facts"], 3);

    std::fs::write(&stream, "{\"user_id\":\"u1\"}\n").unwrap();
    let o = athena(&[&base[..], &["--no-infer"]].concat());
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("line 1: invalid JSON: missing field"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn stream_examples_writes_train_head_data() {
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("s.jsonl");
    let examples = dir.path().join("examples.jsonl");
    let o = athena(&[
        "memory",
        "synth-stream",
        "--n",
        "60",
        "--out",
        stream.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let model = fixture();
    let o = athena(&[
        "memory",
        "stream-examples",
        "--model",
        &model,
        "--use-mlx",
        "false",
        "--stream",
        stream.to_str().unwrap(),
        "--out",
        examples.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stats: Value = serde_json::from_slice(&o.stdout).unwrap();
    let n = stats["examples"].as_u64().unwrap();
    assert!(n > 0);
    let text = std::fs::read_to_string(&examples).unwrap();
    assert_eq!(text.lines().count() as u64, n);
    for line in text.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        assert!(e["label"]["op"].is_string());
        assert!(e["memories"].is_array());
    }
}
