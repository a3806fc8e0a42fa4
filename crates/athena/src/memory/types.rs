//! The bank's plain data: scopes, records, history rows, events and search hits, and the
//! checks every one of them passes before anything is written.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::error::{MemoryError, MemoryResult};

/// A JSON object attached to a memory.
pub type Metadata = Map<String, Value>;

/// Longest user, agent or run id, in bytes.
pub const MAX_SCOPE_ID_BYTES: usize = 256;

/// Whose memory: a user, an agent, a run, or a combination. At least one id is required.
///
/// As a filter (search, list, delete_all) a scope matches every memory whose ids equal the
/// ids it gives; the ids it leaves out match anything, as mem0's filters do. A memory is
/// written with exactly the ids of the scope it was added in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Scope {
    /// The user the memory belongs to.
    pub user_id: Option<String>,
    /// The agent the memory belongs to.
    pub agent_id: Option<String>,
    /// The run (conversation, session) the memory belongs to.
    pub run_id: Option<String>,
}

impl Scope {
    /// A scope of one user.
    pub fn user(id: impl Into<String>) -> Self {
        Scope {
            user_id: Some(id.into()),
            ..Scope::default()
        }
    }

    /// Checks that at least one id is given and that none is empty or too long.
    pub fn validate(&self) -> MemoryResult<()> {
        let mut any = false;
        for (name, id) in self.parts() {
            let Some(id) = id else { continue };
            any = true;
            if id.trim().is_empty() {
                return Err(MemoryError::BadScope {
                    msg: format!("{name} is empty"),
                });
            }
            if id.len() > MAX_SCOPE_ID_BYTES {
                return Err(MemoryError::BadScope {
                    msg: format!(
                        "{name} is {} bytes, more than {MAX_SCOPE_ID_BYTES}",
                        id.len()
                    ),
                });
            }
        }
        if !any {
            return Err(MemoryError::BadScope {
                msg: "give at least one of user_id, agent_id, run_id".into(),
            });
        }
        Ok(())
    }

    /// The three ids by name, in a fixed order (the lock order).
    pub fn parts(&self) -> [(&'static str, Option<&str>); 3] {
        [
            ("user_id", self.user_id.as_deref()),
            ("agent_id", self.agent_id.as_deref()),
            ("run_id", self.run_id.as_deref()),
        ]
    }

    /// The ids as stored: an absent id is the empty string (so that unique indexes treat
    /// it as a value).
    pub(crate) fn columns(&self) -> [&str; 3] {
        [
            self.user_id.as_deref().unwrap_or(""),
            self.agent_id.as_deref().unwrap_or(""),
            self.run_id.as_deref().unwrap_or(""),
        ]
    }

    /// The scope stored as three columns (empty = absent).
    pub(crate) fn from_columns(user: String, agent: String, run: String) -> Self {
        let some = |s: String| (!s.is_empty()).then_some(s);
        Scope {
            user_id: some(user),
            agent_id: some(agent),
            run_id: some(run),
        }
    }

    /// Whether a memory written in `other` matches this scope as a filter.
    pub fn matches(&self, other: &Scope) -> bool {
        let ok = |a: &Option<String>, b: &Option<String>| a.is_none() || a == b;
        ok(&self.user_id, &other.user_id)
            && ok(&self.agent_id, &other.agent_id)
            && ok(&self.run_id, &other.run_id)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (name, id) in self.parts() {
            if let Some(id) = id {
                if !first {
                    f.write_str(", ")?;
                }
                write!(f, "{name}={id}")?;
                first = false;
            }
        }
        Ok(())
    }
}

/// What produced an embedding. A bank holds embeddings of one identity only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EmbeddingIdentity {
    /// The model: a hub id, or the canonical path of a local directory.
    pub model: String,
    /// The width of every vector.
    pub hidden_size: usize,
    /// How hidden states were pooled (`mean`, `last`, ...).
    pub pooling: String,
}

impl fmt::Display for EmbeddingIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "model `{}` (hidden size {}, {} pooling)",
            self.model, self.hidden_size, self.pooling
        )
    }
}

/// One stored memory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// A UUID v7 (time-ordered).
    pub id: Uuid,
    /// Whose memory it is.
    #[serde(flatten)]
    pub scope: Scope,
    /// The memory's text.
    pub text: String,
    /// Hex SHA-256 of the text ([`content_hash`]).
    pub hash: String,
    /// Caller's data attached to the memory.
    pub metadata: Metadata,
    /// When it was added, in microseconds since the Unix epoch.
    pub created_at: i64,
    /// When it last changed, in microseconds since the Unix epoch.
    pub updated_at: i64,
    /// The text's pooled hidden state as the model's `encode` returned it; the bank's
    /// [`EmbeddingIdentity`] says what made it.
    #[serde(skip)]
    pub embedding: Vec<f32>,
}

/// What happened to a memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventKind {
    /// A new memory.
    #[serde(rename = "ADD")]
    Add,
    /// A memory's text replaced.
    #[serde(rename = "UPDATE")]
    Update,
    /// A memory removed.
    #[serde(rename = "DELETE")]
    Delete,
    /// Nothing changed (the fact was known).
    #[serde(rename = "NONE")]
    Noop,
}

impl EventKind {
    /// The name stored in history rows and printed in events.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Add => "ADD",
            EventKind::Update => "UPDATE",
            EventKind::Delete => "DELETE",
            EventKind::Noop => "NONE",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> MemoryResult<Self> {
        Ok(match s {
            "ADD" => EventKind::Add,
            "UPDATE" => EventKind::Update,
            "DELETE" => EventKind::Delete,
            "NONE" => EventKind::Noop,
            other => {
                return Err(MemoryError::Internal(format!(
                    "unknown event `{other}` in the history"
                )))
            }
        })
    }
}

/// One change to one memory, kept after the memory is gone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryRow {
    /// The memory that changed.
    pub memory_id: Uuid,
    /// What happened (never NONE).
    pub event: EventKind,
    /// The text before (UPDATE, DELETE).
    pub old_memory: Option<String>,
    /// The text after (ADD, UPDATE).
    pub new_memory: Option<String>,
    /// The fact that caused the change, when an `add` did.
    pub fact: Option<String>,
    /// The head's probability of each operation, when the head decided.
    pub probabilities: Option<BTreeMap<String, f32>>,
    /// Hex SHA-256 of the head's weights file, when the head decided.
    pub head_hash: Option<String>,
    /// When, in microseconds since the Unix epoch.
    pub created_at: i64,
}

/// What `add` did with one fact, in mem0's shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// The memory added, updated or deleted (for NONE, the memory that already held the
    /// fact, if any).
    pub id: Option<Uuid>,
    /// ADD, UPDATE, DELETE or NONE.
    pub event: EventKind,
    /// The memory's text now (for DELETE, the text that was removed).
    pub memory: String,
    /// The text before an UPDATE.
    pub previous_memory: Option<String>,
}

/// What the head decided, as history rows record it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Probability of each operation.
    pub probabilities: BTreeMap<String, f32>,
    /// The head's weights hash.
    pub head_hash: Option<String>,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchHit {
    /// The memory.
    pub record: Record,
    /// The fused retrieval score (higher is better).
    pub score: f32,
    /// The cosine similarity of the memory's embedding with the query's.
    pub similarity: f32,
}

/// Hex SHA-256 of a text: what makes two memories "the same fact".
pub fn content_hash(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

/// Lower-case hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Now, in microseconds since the Unix epoch.
pub(crate) fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// An RFC 3339 UTC timestamp (`2026-01-02T03:04:05.678901Z`) for microseconds since the
/// Unix epoch.
pub fn rfc3339(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses a memory id.
pub fn parse_id(id: &str) -> MemoryResult<Uuid> {
    Uuid::parse_str(id.trim()).map_err(|e| MemoryError::invalid("id", format!("`{id}`: {e}")))
}

/// Whether `metadata` holds every key of `filter` with an equal value.
pub fn metadata_matches(metadata: &Metadata, filter: &Metadata) -> bool {
    filter.iter().all(|(k, v)| metadata.get(k) == Some(v))
}

/// Parses metadata text: it must be a JSON object.
pub fn parse_metadata(text: &str) -> MemoryResult<Metadata> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(MemoryError::BadMetadata {
            msg: format!("expected a JSON object, got {}", json_kind(&other)),
        }),
        Err(e) => Err(MemoryError::BadMetadata {
            msg: format!("not JSON: {e}"),
        }),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(951_782_400_000_001), "2000-02-29T00:00:00.000001Z");
        assert_eq!(
            rfc3339(1_767_225_599_500_000),
            "2025-12-31T23:59:59.500000Z"
        );
    }

    #[test]
    fn scopes_need_an_id_and_filter_by_the_given_ones() {
        assert!(matches!(
            Scope::default().validate(),
            Err(MemoryError::BadScope { .. })
        ));
        assert!(Scope::user(" ").validate().is_err());
        let alice = Scope::user("alice");
        let alice_bot = Scope {
            agent_id: Some("bot".into()),
            ..alice.clone()
        };
        assert!(alice.matches(&alice_bot));
        assert!(!alice_bot.matches(&alice));
        assert!(!alice.matches(&Scope::user("bob")));
        assert_eq!(alice_bot.to_string(), "user_id=alice, agent_id=bot");
    }

    #[test]
    fn metadata_must_be_an_object() {
        assert!(parse_metadata(r#"{"a": 1}"#).is_ok());
        for bad in ["[1]", "3", "\"x\"", "null", "{"] {
            assert!(matches!(
                parse_metadata(bad),
                Err(MemoryError::BadMetadata { .. })
            ));
        }
    }
}
