//! The memory bank: an agent's memories, kept by athena.
//!
//! A [`MemoryBank`] stores records (a UUID v7, a scope of user, agent and run ids, the text,
//! its hash, JSON metadata, timestamps and the text's embedding) with the history of every
//! change, in SQLite (one file, the default) or PostgreSQL (for several processes). `add`
//! encodes new facts, retrieves each one's candidates, lets the trained
//! [`MemoryActionHead`](crate::models::action_head::MemoryActionHead) decide ADD, UPDATE,
//! DELETE or NOOP, and applies the decision with its history row in one transaction.
//! Retrieval fuses cosine similarity over the embeddings with the store's full-text ranking
//! ([`retrieval`]).
//!
//! ```
//! use athena::memory::{BankConfig, MemoryBank, Metadata, Scope};
//! use athena::models::olmoe::OlmoeModel;
//! use athena::config::OlmoeConfig;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let db = dir.path().join("memory.db");
//! let mut bank = MemoryBank::open(db.to_str().unwrap(), BankConfig::default())?;
//! let model_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/base");
//! let mut config = OlmoeConfig::for_model(model_dir);
//! config.use_mlx = false;
//! let mut model = OlmoeModel::new(config);
//! model.load()?;
//! let alice = Scope::user("alice");
//! // Without inference every new fact is added; with it, a trained head decides.
//! let events = bank.add(&model, &["Alice lives in Paris."], &alice, &Metadata::new(), false)?;
//! assert_eq!(events.len(), 1);
//! assert_eq!(bank.get_all(&alice, 0, 100)?.len(), 1);
//! assert!(bank.check()?.is_ok());
//! # Ok::<(), athena::memory::MemoryError>(())
//! ```

mod add;
mod bank;
mod codes;
mod error;
pub mod eval;
mod import;
mod journal;
pub mod mem0;
pub mod postgres;
pub mod retrieval;
pub mod sqlite;
mod store;
mod types;
mod vector_cache;

pub use add::{head_hash, model_identity, Decider};
pub use bank::{
    is_postgres_url, BankConfig, Edit, MemoryBank, SearchOptions, DEFAULT_MAX_TEXT_BYTES, MAX_TOP_K,
};
pub use error::{MemoryError, MemoryResult};
pub use import::parse_conversation_line;
pub use store::{IntegrityReport, Store, StoreTx, VectorVisitor, SCHEMA_VERSION};
pub use types::{
    content_hash, metadata_matches, parse_id, parse_metadata, rfc3339, Decision, EmbeddingIdentity,
    Event, EventKind, HistoryRow, Metadata, Record, Scope, SearchHit, MAX_SCOPE_ID_BYTES,
};
