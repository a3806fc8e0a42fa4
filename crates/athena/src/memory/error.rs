//! Typed errors of the memory bank. Each variant names the thing at fault; a caller's mistake
//! (an unknown id, an empty fact, a foreign file) is told apart from a fault of the store.

use std::path::PathBuf;

/// Result with the memory bank's [`MemoryError`].
pub type MemoryResult<T, E = MemoryError> = std::result::Result<T, E>;

/// Everything that can go wrong in the memory bank.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The database file is not a SQLite database, or is damaged.
    #[error("{path}: not a readable memory bank ({msg})")]
    CorruptDb {
        /// The file at fault.
        path: PathBuf,
        /// What SQLite said.
        msg: String,
    },
    /// The database holds tables of something else, or a bank of another schema version.
    #[error("{location}: {msg}")]
    ForeignDb {
        /// The file or server URL at fault (without its password).
        location: String,
        /// What is wrong.
        msg: String,
    },
    /// An embedding from another model, hidden size or pooling than the bank's.
    #[error(
        "the bank holds embeddings of {bank}, not of {given}; use the same model, or another --db"
    )]
    OtherModel {
        /// The identity the bank was written with.
        bank: String,
        /// The identity that was given.
        given: String,
    },
    /// No memory has this id (in this scope, where a scope was given).
    #[error("no memory with id `{id}`")]
    UnknownId {
        /// The id that was asked for.
        id: String,
    },
    /// A fact, query or memory text is empty or too large.
    #[error("{what}: {msg}")]
    BadText {
        /// Which text (e.g. `fact 2`, `query`).
        what: String,
        /// What is wrong.
        msg: String,
    },
    /// Metadata that is not a JSON object, or a metadata filter that is not one.
    #[error("metadata: {msg}")]
    BadMetadata {
        /// What is wrong.
        msg: String,
    },
    /// A scope with no user, agent or run id, or with an empty one.
    #[error("scope: {msg}")]
    BadScope {
        /// What is wrong.
        msg: String,
    },
    /// Another invalid argument (an id that is not a UUID, a zero `top_k`, a bad URL).
    #[error("invalid {field}: {msg}")]
    Invalid {
        /// The argument at fault.
        field: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// `add` with inference needs a trained action head.
    #[error(
        "the memory action head is untrained: a random head would UPDATE or DELETE memories at \
         random. Train one with `athena train-head` and pass it with `--head DIR` (or \
         `action_head_path` in the config), or add without inference (`--no-infer`, always ADD)"
    )]
    UntrainedHead,
    /// The head chose an UPDATE or DELETE whose target vanished, even after a retry.
    #[error("fact `{fact}`: the head's {op} target `{id}` no longer exists")]
    TargetGone {
        /// The fact being added.
        fact: String,
        /// The operation.
        op: String,
        /// The target id.
        id: String,
    },
    /// The model failed (loading, encoding, the head).
    #[error(transparent)]
    Model(#[from] crate::Error),
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[error("postgres: {0}")]
    Postgres(#[from] postgres::Error),
    /// The stored data breaks an invariant of the bank (a bug, or a file edited by hand).
    #[error("internal: {0}")]
    Internal(String),
}

impl MemoryError {
    /// Shorthand for [`MemoryError::Invalid`].
    pub fn invalid(field: &'static str, msg: impl Into<String>) -> Self {
        MemoryError::Invalid {
            field,
            msg: msg.into(),
        }
    }
    /// Shorthand for [`MemoryError::BadText`].
    pub fn bad_text(what: impl Into<String>, msg: impl Into<String>) -> Self {
        MemoryError::BadText {
            what: what.into(),
            msg: msg.into(),
        }
    }
}
