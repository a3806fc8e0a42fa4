//! Training data for the memory action head: JSONL examples, one a line, and a synthetic task.
//!
//! A line reads
//! `{"fact": "...", "memories": [{"id": "m1", "text": "..."}], "label": {"op": "UPDATE", "target": "m1"}}`.
//! [`read_examples`] checks every line against the head's [`ActionHeadConfig`]; errors name the
//! file and the line. [`synthetic_examples`] builds a deterministic task whose answer follows
//! from the wording of the fact and from whom it is about.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::for_each_jsonl_line;
use crate::models::action_head::ActionHeadConfig;
use crate::models::olmoe::Memory;
use crate::train::rng::SplitMix64;

pub use crate::io::{MAX_FILE_BYTES, MAX_LINE_BYTES};

/// The right decision for an example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    /// The operation, one of [`ActionHeadConfig::operations`].
    pub op: String,
    /// The id of the memory the operation names, for target operations; `None` otherwise.
    #[serde(default)]
    pub target: Option<String>,
}

/// One training example: a new fact, the memories held, and the right decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// The new fact.
    pub fact: String,
    /// The memories held when the fact arrives.
    pub memories: Vec<Memory>,
    /// The right decision.
    pub label: Label,
}

/// The wire form of a memory, refusing unknown fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMemory {
    id: String,
    text: String,
}

/// The wire form of an example, refusing unknown fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExample {
    fact: String,
    memories: Vec<RawMemory>,
    label: Label,
}

/// Parses and checks one line against `cfg`; the error is the reason, without the line number.
///
/// Refused: malformed JSON, missing or unknown fields, an empty fact, an empty or duplicate
/// memory id, an operation not in `cfg.operations`, a target operation without a target or
/// whose target is not among the memories, and a non-target operation with a target.
pub fn parse_example(line: &str, cfg: &ActionHeadConfig) -> std::result::Result<Example, String> {
    let raw: RawExample = serde_json::from_str(line).map_err(|e| {
        let mut msg = e.to_string();
        if let Some(i) = msg.rfind(" at line ") {
            msg.truncate(i);
        }
        format!("invalid JSON: {msg} (column {})", e.column())
    })?;
    if raw.fact.trim().is_empty() {
        return Err("`fact` is empty".into());
    }
    let mut ids = HashSet::new();
    for m in &raw.memories {
        if m.id.is_empty() {
            return Err("a memory id is empty".into());
        }
        if !ids.insert(m.id.as_str()) {
            return Err(format!("memory id `{}` appears more than once", m.id));
        }
    }
    let op = raw.label.op.as_str();
    if !cfg.operations.iter().any(|o| o == op) {
        return Err(format!(
            "unknown op `{op}`; expected one of {:?}",
            cfg.operations
        ));
    }
    let needs_target = cfg.target_operations.iter().any(|o| o == op);
    match (&raw.label.target, needs_target) {
        (None, true) => return Err(format!("op `{op}` needs a target memory id")),
        (Some(t), true) if !ids.contains(t.as_str()) => {
            return Err(format!(
                "target `{t}` of op `{op}` is not among the memories"
            ))
        }
        (Some(t), false) => return Err(format!("op `{op}` takes no target but names `{t}`")),
        _ => {}
    }
    Ok(Example {
        fact: raw.fact,
        memories: raw
            .memories
            .into_iter()
            .map(|m| Memory {
                id: m.id,
                text: m.text,
            })
            .collect(),
        label: raw.label,
    })
}

/// Reads and checks a JSONL file of examples against the head's operations.
///
/// Blank lines are skipped. Every bad line (see [`parse_example`]), a line over
/// [`MAX_LINE_BYTES`], a line that is not UTF-8, a file over [`MAX_FILE_BYTES`] and a file with
/// no example are [`Error::Config`] naming the file and, for a line, `line N: <reason>`.
pub fn read_examples(path: &Path, cfg: &ActionHeadConfig) -> Result<Vec<Example>> {
    cfg.validate()?;
    let mut examples = Vec::new();
    for_each_jsonl_line(path, |_, line| {
        examples.push(parse_example(line, cfg)?);
        Ok(())
    })?;
    if examples.is_empty() {
        return Err(Error::config(path, "no examples: the file is empty"));
    }
    Ok(examples)
}

/// Writes `examples` as JSONL, one a line, atomically (see [`crate::io::write_atomic`]).
pub fn write_examples(path: &Path, examples: &[Example]) -> Result<()> {
    crate::io::write_atomic(path, |tmp| {
        let io = |source| Error::Io {
            path: tmp.to_path_buf(),
            source,
        };
        let mut w = BufWriter::new(File::create(tmp).map_err(io)?);
        for example in examples {
            serde_json::to_writer(&mut w, example).map_err(|e| Error::Io {
                path: tmp.to_path_buf(),
                source: e.into(),
            })?;
            w.write_all(b"\n").map_err(io)?;
        }
        w.flush().map_err(io)
    })
}

const NAMES: [&str; 16] = [
    "Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory",
    "Niaj", "Olivia", "Peggy", "Rupert", "Sybil",
];

/// One attribute of a person: its values and how each kind of fact about it is worded.
/// `{n}` is the person, `{v}` the value, `{o}` the old value, `{w}` the new one.
struct Attribute {
    values: &'static [&'static str],
    /// How a memory states it.
    memory: &'static str,
    /// Restatements of a known value (NOOP); the first is the memory's own wording.
    same: &'static [&'static str],
    /// A new attribute (ADD): "started", "got".
    add: &'static str,
    /// A changed value (UPDATE): "moved to", "now", "traded", "switched", "swapped".
    update: &'static str,
    /// A value no longer true (DELETE): "no longer", "stopped", "quit".
    delete: &'static str,
}

const ATTRIBUTES: [Attribute; 5] = [
    Attribute {
        values: &[
            "Paris", "Rome", "Berlin", "Tokyo", "Lima", "Oslo", "Cairo", "Madrid",
        ],
        memory: "{n} lives in {v}.",
        same: &[
            "{n} lives in {v}.",
            "{n} is living in {v}.",
            "{n}'s home is in {v}.",
        ],
        add: "{n} started living in {v}.",
        update: "{n} moved to {w}.",
        delete: "{n} no longer lives in {o}.",
    },
    Attribute {
        values: &[
            "teacher", "nurse", "pilot", "chef", "lawyer", "baker", "doctor", "farmer",
        ],
        memory: "{n} works as a {v}.",
        same: &[
            "{n} works as a {v}.",
            "{n} is a {v}.",
            "{n} is employed as a {v}.",
        ],
        add: "{n} started working as a {v}.",
        update: "{n} now works as a {w}.",
        delete: "{n} quit working as a {o}.",
    },
    Attribute {
        values: &[
            "cat", "dog", "parrot", "rabbit", "hamster", "turtle", "goldfish", "horse",
        ],
        memory: "{n} has a {v}.",
        same: &["{n} has a {v}.", "{n} owns a {v}.", "{n} keeps a {v}."],
        add: "{n} got a {v}.",
        update: "{n} traded the {o} for a {w}.",
        delete: "{n} no longer has a {o}.",
    },
    Attribute {
        values: &[
            "coffee", "tea", "cocoa", "lemonade", "kombucha", "milk", "juice", "cider",
        ],
        memory: "{n} likes {v}.",
        same: &[
            "{n} likes {v}.",
            "{n} enjoys {v}.",
            "{n}'s favourite drink is {v}.",
        ],
        add: "{n} started drinking {v}.",
        update: "{n} switched from {o} to {w}.",
        delete: "{n} stopped drinking {o}.",
    },
    Attribute {
        values: &[
            "piano", "chess", "tennis", "guitar", "golf", "violin", "football", "cricket",
        ],
        memory: "{n} plays {v}.",
        same: &[
            "{n} plays {v}.",
            "{n} likes to play {v}.",
            "{n}'s hobby is {v}.",
        ],
        add: "{n} started learning {v}.",
        update: "{n} swapped {o} for {w}.",
        delete: "{n} no longer plays {o}.",
    },
];

fn fill(template: &str, name: &str, value: &str, old: &str, new: &str) -> String {
    template
        .replace("{n}", name)
        .replace("{v}", value)
        .replace("{o}", old)
        .replace("{w}", new)
}

const OPS: [&str; 4] = ["ADD", "UPDATE", "DELETE", "NOOP"];

/// A synthetic memory task of `n` examples, fixed by `seed`.
///
/// People (sixteen first names) have attributes: a city, a job, a pet, a drink, a
/// hobby. Memories state one attribute of one person ("Alice lives in Paris."). Each example
/// holds 1 to 4 memories about distinct (person, attribute) pairs, in random order with ids
/// `m1`, `m2`, ...; the operation follows from the fact's wording and the target from whom
/// and what the fact is about:
///
/// - `ADD`: "started ..." or "got a ..." about a (person, attribute) no memory covers;
/// - `UPDATE`: "moved to", "now works as", "traded ... for", "switched from ... to",
///   "swapped ... for" a new value; the target is the memory of that person's attribute;
/// - `DELETE`: "no longer", "stopped", "quit" the held value; same target;
/// - `NOOP`: a restatement of a held memory, in its own or an equivalent wording.
///
/// The other memories are distractors: the same person's other attributes or other people's
/// same attribute. Operations come in shuffled blocks of four, so each is a quarter of the
/// examples (exactly, when `n` is a multiple of 4) and chance accuracy is 25%. The labels use
/// the default [`ActionHeadConfig`] operations (`UPDATE` and `DELETE` take a target).
pub fn synthetic_examples(n: usize, seed: u64) -> Vec<Example> {
    let mut rng = SplitMix64::new(seed);
    let mut ops = OPS;
    let mut examples = Vec::with_capacity(n);
    for i in 0..n {
        if i % OPS.len() == 0 {
            rng.shuffle(&mut ops);
        }
        examples.push(synthetic_example(&mut rng, ops[i % OPS.len()]));
    }
    examples
}

fn synthetic_example(rng: &mut SplitMix64, op: &str) -> Example {
    let person = rng.below(NAMES.len());
    let attr = rng.below(ATTRIBUTES.len());
    let a = &ATTRIBUTES[attr];
    let name = NAMES[person];
    let value = rng.below(a.values.len());

    // (person, attribute, value) of every memory; the subject's comes first unless it is ADD.
    let mut held: Vec<(usize, usize, usize)> = Vec::new();
    if op != "ADD" {
        held.push((person, attr, value));
    }
    let count = 1 + rng.below(4);
    while held.len() < count {
        // Half the distractors share the person, half the attribute: hard negatives.
        let (p, t) = if rng.below(2) == 0 {
            (person, rng.below(ATTRIBUTES.len()))
        } else {
            (rng.below(NAMES.len()), attr)
        };
        if (p, t) == (person, attr) || held.iter().any(|&(q, u, _)| (q, u) == (p, t)) {
            continue;
        }
        held.push((p, t, rng.below(ATTRIBUTES[t].values.len())));
    }
    rng.shuffle(&mut held);

    let memories: Vec<Memory> = held
        .iter()
        .enumerate()
        .map(|(i, &(p, t, v))| {
            let at = &ATTRIBUTES[t];
            Memory {
                id: format!("m{}", i + 1),
                text: fill(at.memory, NAMES[p], at.values[v], "", ""),
            }
        })
        .collect();
    let subject_id = held
        .iter()
        .position(|&(p, t, _)| (p, t) == (person, attr))
        .map(|i| format!("m{}", i + 1));

    let old = a.values[value];
    let new = {
        let shift = 1 + rng.below(a.values.len() - 1);
        a.values[(value + shift) % a.values.len()]
    };
    let (fact, target) = match op {
        "ADD" => (fill(a.add, name, old, "", ""), None),
        "UPDATE" => (fill(a.update, name, "", old, new), subject_id),
        "DELETE" => (fill(a.delete, name, "", old, ""), subject_id),
        _ => {
            let same = a.same[rng.below(a.same.len())];
            (fill(same, name, old, "", ""), None)
        }
    };
    Example {
        fact,
        memories,
        label: Label {
            op: op.to_string(),
            target,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ActionHeadConfig {
        ActionHeadConfig::default()
    }

    #[test]
    fn parses_a_valid_line() {
        let ex = parse_example(
            r#"{"fact":"Alice moved to Rome.","memories":[{"id":"m1","text":"Alice lives in Paris."}],"label":{"op":"UPDATE","target":"m1"}}"#,
            &cfg(),
        )
        .unwrap();
        assert_eq!(ex.label.target.as_deref(), Some("m1"));
        assert_eq!(ex.memories[0].text, "Alice lives in Paris.");
    }

    #[test]
    fn a_noop_needs_no_target_field() {
        let ex = parse_example(
            r#"{"fact":"x","memories":[],"label":{"op":"NOOP"}}"#,
            &cfg(),
        )
        .unwrap();
        assert_eq!(ex.label.target, None);
    }
}
