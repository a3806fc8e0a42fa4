//! Training data files, the synthetic task and rewards.

use std::path::Path;

use athena::models::action_head::ActionHeadConfig;
use athena::models::olmoe::Memory;
use athena::train::data::{
    parse_example, read_examples, synthetic_examples, write_examples, Example, Label,
};
use athena::train::reward::{is_correct, LabelReward, Reward};
use athena::Error;

const GOOD: &str = r#"{"fact":"Alice moved to Rome.","memories":[{"id":"m1","text":"Alice lives in Paris."},{"id":"m2","text":"Bob has a cat."}],"label":{"op":"UPDATE","target":"m1"}}"#;

fn config_error(dir: &Path, content: &str) -> String {
    let path = dir.join("data.jsonl");
    std::fs::write(&path, content).unwrap();
    match read_examples(&path, &ActionHeadConfig::default()) {
        Err(Error::Config { path: p, msg }) => {
            assert_eq!(p, path);
            msg
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn each_bad_line_is_named_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str); 13] = [
        ("{not json", "invalid JSON"),
        (
            r#"{"memories":[],"label":{"op":"ADD"}}"#,
            "missing field `fact`",
        ),
        (
            r#"{"fact":"x","label":{"op":"ADD"}}"#,
            "missing field `memories`",
        ),
        (r#"{"fact":"x","memories":[]}"#, "missing field `label`"),
        (
            r#"{"fact":"x","memories":[],"label":{"op":"ADD"},"extra":1}"#,
            "unknown field `extra`",
        ),
        (
            r#"{"fact":"x","memories":[{"id":"m1","text":"t","score":1}],"label":{"op":"ADD"}}"#,
            "unknown field `score`",
        ),
        (
            r#"{"fact":"x","memories":[],"label":{"op":"ADD","why":"?"}}"#,
            "unknown field `why`",
        ),
        (
            r#"{"fact":"  ","memories":[],"label":{"op":"ADD"}}"#,
            "`fact` is empty",
        ),
        (
            r#"{"fact":"x","memories":[{"id":"m1","text":"a"},{"id":"m1","text":"b"}],"label":{"op":"ADD"}}"#,
            "memory id `m1` appears more than once",
        ),
        (
            r#"{"fact":"x","memories":[],"label":{"op":"MERGE"}}"#,
            "unknown op `MERGE`",
        ),
        (
            r#"{"fact":"x","memories":[{"id":"m1","text":"a"}],"label":{"op":"DELETE"}}"#,
            "op `DELETE` needs a target",
        ),
        (
            r#"{"fact":"x","memories":[{"id":"m1","text":"a"}],"label":{"op":"UPDATE","target":"m9"}}"#,
            "target `m9` of op `UPDATE` is not among the memories",
        ),
        (
            r#"{"fact":"x","memories":[{"id":"m1","text":"a"}],"label":{"op":"NOOP","target":"m1"}}"#,
            "op `NOOP` takes no target but names `m1`",
        ),
    ];
    for (bad, reason) in cases {
        // A good line, a blank line, then the bad one: line 3.
        let msg = config_error(dir.path(), &format!("{GOOD}\n\n{bad}\n{GOOD}\n"));
        assert!(msg.starts_with("line 3: "), "{msg}");
        assert!(msg.contains(reason), "{msg} lacks {reason}");
        let direct = parse_example(bad, &ActionHeadConfig::default()).unwrap_err();
        assert!(direct.contains(reason), "{direct}");
    }
}

#[test]
fn empty_files_overlong_lines_and_bad_utf8_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(config_error(dir.path(), "").contains("no examples"));
    assert!(config_error(dir.path(), "\n  \n\r\n").contains("no examples"));
    let long = format!("{GOOD}\n{}\n", "x".repeat((1 << 20) + 1));
    let msg = config_error(dir.path(), &long);
    assert!(msg.starts_with("line 2: longer than"), "{msg}");
    let path = dir.path().join("bytes.jsonl");
    std::fs::write(&path, [GOOD.as_bytes(), b"\n\xff\xfe\n"].concat()).unwrap();
    let err = read_examples(&path, &ActionHeadConfig::default()).unwrap_err();
    assert!(err.to_string().contains("line 2: not UTF-8"), "{err}");
    let missing = read_examples(&dir.path().join("nope"), &ActionHeadConfig::default());
    assert!(matches!(missing, Err(Error::Io { .. })));
}

#[test]
fn crlf_lines_and_a_missing_final_newline_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crlf.jsonl");
    std::fs::write(&path, format!("{GOOD}\r\n{GOOD}")).unwrap();
    let examples = read_examples(&path, &ActionHeadConfig::default()).unwrap();
    assert_eq!(examples.len(), 2);
}

#[test]
fn a_file_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let mut examples = synthetic_examples(40, 3);
    examples.push(Example {
        fact: "Line\nbreak \"quoted\" ünïcode".into(),
        memories: vec![Memory {
            id: "x".into(),
            text: "a\tb".into(),
        }],
        label: Label {
            op: "DELETE".into(),
            target: Some("x".into()),
        },
    });
    write_examples(&path, &examples).unwrap();
    let back = read_examples(&path, &ActionHeadConfig::default()).unwrap();
    assert_eq!(back, examples);
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "no temporary file is left");
}

#[test]
fn the_synthetic_task_is_deterministic_and_balanced() {
    assert_eq!(synthetic_examples(400, 11), synthetic_examples(400, 11));
    assert_ne!(synthetic_examples(400, 11), synthetic_examples(400, 12));
    assert_eq!(synthetic_examples(10, 5), synthetic_examples(400, 5)[..10]);
    let examples = synthetic_examples(400, 11);
    for op in ["ADD", "UPDATE", "DELETE", "NOOP"] {
        let count = examples.iter().filter(|e| e.label.op == op).count();
        assert!((80..=120).contains(&count), "{op}: {count}");
    }
    assert!(synthetic_examples(0, 1).is_empty());
}

/// The operation the synthetic wording implies.
fn op_from_wording(fact: &str) -> &'static str {
    if ["no longer", "stopped", "quit"]
        .iter()
        .any(|w| fact.contains(w))
    {
        "DELETE"
    } else if ["moved to", " now ", "traded", "switched", "swapped"]
        .iter()
        .any(|w| fact.contains(w))
    {
        "UPDATE"
    } else if ["started", " got "].iter().any(|w| fact.contains(w)) {
        "ADD"
    } else {
        "NOOP"
    }
}

#[test]
fn synthetic_examples_validate_and_follow_the_wording() {
    let cfg = ActionHeadConfig::default();
    for seed in 0..4 {
        for ex in synthetic_examples(400, seed) {
            let line = serde_json::to_string(&ex).unwrap();
            assert_eq!(parse_example(&line, &cfg).unwrap(), ex);
            assert!((1..=4).contains(&ex.memories.len()), "{ex:?}");
            assert_eq!(op_from_wording(&ex.fact), ex.label.op, "{ex:?}");
            let name = ex.fact.split([' ', '\'']).next().unwrap();
            let about: Vec<_> = ex
                .memories
                .iter()
                .filter(|m| {
                    m.text.starts_with(&format!("{name} "))
                        || m.text.starts_with(&format!("{name}'"))
                })
                .collect();
            match ex.label.target.as_deref() {
                Some(t) => {
                    let m = ex.memories.iter().find(|m| m.id == t).unwrap();
                    assert!(m.text.starts_with(name), "{ex:?}");
                    // DELETE names the held value; UPDATE names it or a new one.
                    if ex.label.op == "DELETE" {
                        let value = m.text.trim_end_matches('.').rsplit(' ').next().unwrap();
                        assert!(ex.fact.contains(value), "{ex:?}");
                    }
                }
                None if ex.label.op == "NOOP" => {
                    // The restated value is held about the same person.
                    let value = ex.fact.trim_end_matches('.').rsplit(' ').next().unwrap();
                    assert!(
                        about
                            .iter()
                            .any(|m| m.text.ends_with(&format!(" {value}."))),
                        "{ex:?}"
                    );
                }
                None => {}
            }
        }
    }
}

#[test]
fn spot_check_known_examples() {
    let examples = synthetic_examples(8, 0);
    let line = |i: usize| serde_json::to_string(&examples[i]).unwrap();
    // Pinned: the generator must not drift between versions or platforms.
    assert_eq!(
        line(0),
        r#"{"fact":"Olivia no longer has a parrot.","memories":[{"id":"m1","text":"Olivia has a parrot."},{"id":"m2","text":"Olivia plays football."}],"label":{"op":"DELETE","target":"m1"}}"#
    );
    assert_eq!(
        line(1),
        r#"{"fact":"Niaj now works as a chef.","memories":[{"id":"m1","text":"Grace works as a lawyer."},{"id":"m2","text":"Niaj works as a nurse."},{"id":"m3","text":"Niaj plays violin."},{"id":"m4","text":"Niaj lives in Rome."}],"label":{"op":"UPDATE","target":"m2"}}"#
    );
    // ADD: nobody's memory covers Carol's job.
    assert_eq!(examples[2].fact, "Carol started working as a baker.");
    assert!(examples[2]
        .memories
        .iter()
        .all(|m| !m.text.starts_with("Carol")));
    assert_eq!(
        examples[2].label,
        Label {
            op: "ADD".into(),
            target: None
        }
    );
    // NOOP in another wording of a held memory, among the same person's other memories.
    assert_eq!(examples[3].fact, "Bob is employed as a nurse.");
    assert!(examples[3]
        .memories
        .iter()
        .any(|m| m.text == "Bob works as a nurse."));
    assert_eq!(examples[3].label.op, "NOOP");
    // UPDATE never "moves" to the held value.
    for ex in synthetic_examples(400, 9) {
        if ex.label.op == "UPDATE" {
            let t = ex.label.target.as_deref().unwrap();
            let held = &ex.memories.iter().find(|m| m.id == t).unwrap().text;
            let new = ex.fact.trim_end_matches('.').rsplit(' ').next().unwrap();
            assert!(!held.ends_with(&format!(" {new}.")), "{ex:?}");
        }
    }
}

fn example(op: &str, target: Option<&str>) -> Example {
    Example {
        fact: "f".into(),
        memories: vec![
            Memory {
                id: "m1".into(),
                text: "a".into(),
            },
            Memory {
                id: "m2".into(),
                text: "b".into(),
            },
        ],
        label: Label {
            op: op.into(),
            target: target.map(String::from),
        },
    }
}

#[test]
fn label_reward_by_hand() {
    let r = LabelReward {
        op_weight: 1.0,
        target_weight: 0.5,
        wrong_penalty: -0.25,
    };
    let update = example("UPDATE", Some("m1"));
    assert_eq!(r.reward(&update, "UPDATE", Some("m1")), 1.5);
    assert_eq!(r.reward(&update, "UPDATE", Some("m2")), 1.0);
    assert_eq!(r.reward(&update, "UPDATE", None), 1.0);
    assert_eq!(r.reward(&update, "DELETE", Some("m1")), -0.25);
    assert_eq!(r.reward(&update, "NOOP", None), -0.25);
    assert_eq!(r.max_reward(&update), 1.5);
    let noop = example("NOOP", None);
    assert_eq!(r.reward(&noop, "NOOP", None), 1.0);
    assert_eq!(r.reward(&noop, "ADD", None), -0.25);
    assert_eq!(r.reward(&noop, "UPDATE", Some("m1")), -0.25);
    assert_eq!(r.max_reward(&noop), 1.0);

    let d = LabelReward::default();
    assert_eq!(
        (d.op_weight, d.target_weight, d.wrong_penalty),
        (1.0, 1.0, 0.0)
    );
    assert_eq!(d.reward(&update, "UPDATE", Some("m1")), 2.0);
    assert_eq!(d.reward(&update, "ADD", None), 0.0);
    assert_eq!(d.name(), "label");
    let parsed: LabelReward = serde_json::from_str(r#"{"wrong_penalty": -1}"#).unwrap();
    assert_eq!(
        parsed,
        LabelReward {
            wrong_penalty: -1.0,
            ..LabelReward::default()
        }
    );
    assert!(LabelReward {
        op_weight: f32::NAN,
        ..d.clone()
    }
    .validate()
    .is_err());
    assert!(d.validate().is_ok());
}

#[test]
fn correctness_is_exact() {
    let update = example("UPDATE", Some("m1"));
    assert!(is_correct(&update, "UPDATE", Some("m1")));
    assert!(!is_correct(&update, "UPDATE", Some("m2")));
    assert!(!is_correct(&update, "UPDATE", None));
    assert!(!is_correct(&update, "DELETE", Some("m1")));
    let add = example("ADD", None);
    assert!(is_correct(&add, "ADD", None));
    assert!(!is_correct(&add, "NOOP", None));
}

struct Brevity;

impl Reward for Brevity {
    fn reward(&self, example: &Example, op: &str, _target: Option<&str>) -> f32 {
        if op == example.label.op {
            1.0 / example.fact.len() as f32
        } else {
            0.0
        }
    }
    fn name(&self) -> &str {
        "brevity"
    }
}

#[test]
fn a_custom_reward_plugs_in() {
    let rewards: Vec<Box<dyn Reward>> = vec![Box::new(LabelReward::default()), Box::new(Brevity)];
    let ex = example("ADD", None);
    let got: Vec<(String, f32)> = rewards
        .iter()
        .map(|r| (r.name().to_string(), r.reward(&ex, "ADD", None)))
        .collect();
    assert_eq!(
        got,
        [("label".to_string(), 1.0), ("brevity".to_string(), 1.0)]
    );
    let shared: std::sync::Arc<dyn Reward> = std::sync::Arc::new(Brevity);
    std::thread::spawn(move || shared.reward(&ex, "NOOP", None))
        .join()
        .unwrap();
}
