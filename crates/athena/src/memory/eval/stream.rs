//! Fact streams: a sequence of facts about people and things, each with the operation it
//! calls for and enough of the ground truth to rebuild the memory state after it.
//!
//! # Format
//!
//! JSONL, one fact a line, in arrival order:
//!
//! ```text
//! {"user_id": "u1", "fact": "Alice moved to Rome.", "op": "UPDATE", "key": "Alice/city",
//!  "target": "Alice lives in Paris."}
//! ```
//!
//! - `user_id`: whose memory the fact goes to (each user's memory is a scope of its own);
//! - `fact`: the text;
//! - `op`: `ADD` (a slot nobody's memory covers yet), `UPDATE` (replaces the slot's memory),
//!   `DELETE` (retracts it), `NOOP` (restates it, in its own or an equivalent wording);
//! - `key`: the slot the fact is about, `subject/attribute` (`Alice/city`, `car/place`);
//! - `target`: for `UPDATE` and `DELETE`, the text of the memory replaced or retracted;
//!   absent otherwise;
//! - `state` (optional): every memory text of the user after the fact, sorted.
//!
//! The state is rebuilt by folding the lines per user, slot by slot: `ADD` and `UPDATE` set
//! the slot's memory to the fact's text (a memory holds the newest wording), `DELETE` clears
//! the slot, `NOOP` keeps it ([`TruthState`]). Reading a stream checks every line against
//! the fold: an `ADD` of a held slot, an `UPDATE`, `DELETE` or `NOOP` of an empty one, a
//! `target` that is not the slot's memory, two slots of one user holding the same text, and a
//! `state` that differs from the fold are refused with the file and line.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::io::for_each_jsonl_line;
use crate::memory::error::MemoryResult;
use crate::memory::types::MAX_SCOPE_ID_BYTES;

/// What a fact does to the memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StreamOp {
    /// A new memory.
    #[serde(rename = "ADD")]
    Add,
    /// Replaces a memory.
    #[serde(rename = "UPDATE")]
    Update,
    /// Retracts a memory.
    #[serde(rename = "DELETE")]
    Delete,
    /// Restates a memory: nothing changes.
    #[serde(rename = "NOOP")]
    Noop,
}

impl StreamOp {
    /// Every operation, in the action head's order.
    pub const ALL: [StreamOp; 4] = [
        StreamOp::Add,
        StreamOp::Update,
        StreamOp::Delete,
        StreamOp::Noop,
    ];

    /// The name the stream and the action head use.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamOp::Add => "ADD",
            StreamOp::Update => "UPDATE",
            StreamOp::Delete => "DELETE",
            StreamOp::Noop => "NOOP",
        }
    }
}

impl fmt::Display for StreamOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamFact {
    /// Whose memory the fact goes to.
    pub user_id: String,
    /// The fact's text.
    pub fact: String,
    /// What the fact does.
    pub op: StreamOp,
    /// The slot the fact is about: `subject/attribute`.
    pub key: String,
    /// For UPDATE and DELETE, the text of the memory replaced or retracted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Every memory text of the user after the fact, sorted (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Vec<String>>,
}

/// The ground-truth memory: per user, per slot, the text held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TruthState {
    users: BTreeMap<String, BTreeMap<String, String>>,
}

impl TruthState {
    /// The state before any fact.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one fact after checking it against the state; the error says what is wrong.
    pub fn apply(&mut self, f: &StreamFact) -> Result<(), String> {
        if f.user_id.trim().is_empty() {
            return Err("`user_id` is empty".into());
        }
        if f.user_id.len() > MAX_SCOPE_ID_BYTES {
            return Err(format!(
                "`user_id` is longer than {MAX_SCOPE_ID_BYTES} bytes"
            ));
        }
        if f.fact.trim().is_empty() {
            return Err("`fact` is empty".into());
        }
        if f.key.is_empty() {
            return Err("`key` is empty".into());
        }
        let slots = self.users.entry(f.user_id.clone()).or_default();
        let held = slots.get(&f.key);
        let takes_target = matches!(f.op, StreamOp::Update | StreamOp::Delete);
        match (&f.target, takes_target) {
            (None, true) => return Err(format!("{} needs a `target`", f.op)),
            (Some(_), false) => return Err(format!("{} takes no `target`", f.op)),
            _ => {}
        }
        match (f.op, held) {
            (StreamOp::Add, Some(h)) => {
                return Err(format!("ADD of `{}`, which already holds `{h}`", f.key))
            }
            (StreamOp::Update | StreamOp::Delete | StreamOp::Noop, None) => {
                return Err(format!("{} of `{}`, which holds nothing", f.op, f.key))
            }
            (_, Some(h)) if f.target.as_ref().is_some_and(|t| t != h) => {
                return Err(format!(
                    "`target` is not the memory `{}` holds (`{h}`)",
                    f.key
                ))
            }
            _ => {}
        }
        match f.op {
            StreamOp::Add | StreamOp::Update => {
                if let Some((k, _)) = slots.iter().find(|(k, t)| **t == f.fact && **k != f.key) {
                    return Err(format!("`{k}` already holds the text `{}`", f.fact));
                }
                slots.insert(f.key.clone(), f.fact.clone());
            }
            StreamOp::Delete => {
                slots.remove(&f.key);
            }
            StreamOp::Noop => {}
        }
        if let Some(state) = &f.state {
            let want = Self::sorted(slots);
            if *state != want {
                return Err(format!(
                    "`state` lists {} memories that differ from the {} the facts so far leave",
                    state.len(),
                    want.len()
                ));
            }
        }
        Ok(())
    }

    fn sorted(slots: &BTreeMap<String, String>) -> Vec<String> {
        let mut texts: Vec<String> = slots.values().cloned().collect();
        texts.sort();
        texts
    }

    /// The text `user`'s slot `key` holds.
    pub fn held(&self, user: &str, key: &str) -> Option<&str> {
        self.users.get(user)?.get(key).map(String::as_str)
    }

    /// Every user's memory texts.
    pub fn texts(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.users
            .iter()
            .map(|(u, slots)| (u.clone(), slots.values().cloned().collect()))
            .collect()
    }
}

/// The state after every fact of `facts`, checked line by line (see the module's doc).
pub fn fold(facts: &[StreamFact]) -> Result<TruthState, String> {
    let mut state = TruthState::new();
    for (i, f) in facts.iter().enumerate() {
        state.apply(f).map_err(|e| format!("fact {}: {e}", i + 1))?;
    }
    Ok(state)
}

/// Reads a stream and checks it against its own ground truth; errors name the file and line.
pub fn read_stream(path: &Path) -> MemoryResult<Vec<StreamFact>> {
    let mut facts = Vec::new();
    let mut state = TruthState::new();
    for_each_jsonl_line(path, |_, line| {
        let f: StreamFact = serde_json::from_str(line).map_err(|e| {
            let mut msg = e.to_string();
            if let Some(i) = msg.rfind(" at line ") {
                msg.truncate(i);
            }
            format!("invalid JSON: {msg} (column {})", e.column())
        })?;
        state.apply(&f)?;
        facts.push(f);
        Ok(())
    })?;
    if facts.is_empty() {
        return Err(Error::config(path, "no facts: the stream is empty").into());
    }
    Ok(facts)
}

/// Writes a stream as JSONL, atomically (see [`crate::io::write_atomic`]).
pub fn write_stream(path: &Path, facts: &[StreamFact]) -> MemoryResult<()> {
    crate::io::write_atomic(path, |tmp| {
        let io = |source| Error::Io {
            path: tmp.to_path_buf(),
            source,
        };
        let mut w = BufWriter::new(File::create(tmp).map_err(io)?);
        for f in facts {
            serde_json::to_writer(&mut w, f).map_err(|e| io(e.into()))?;
            w.write_all(b"\n").map_err(io)?;
        }
        w.flush().map_err(io)
    })?;
    Ok(())
}
