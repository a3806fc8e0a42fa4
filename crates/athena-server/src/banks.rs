//! The memory bank behind the memory routes: a few open connections to one bank (a SQLite file
//! or a PostgreSQL database), each lent to one request at a time and used on tokio's blocking
//! pool, so that the async workers never wait on the database.

use std::sync::{Arc, Mutex};

use athena::memory::{
    head_hash, is_postgres_url, model_identity, BankConfig, Decider, EmbeddingIdentity, MemoryBank,
    MemoryError, MemoryResult,
};
use athena::models::olmoe::OlmoeModel;
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// The instructions the model reads before the conversation when it extracts facts
/// (`infer=true`), unless the server is given its own.
pub const DEFAULT_EXTRACTION_PROMPT: &str = "You extract facts worth remembering about the user \
from a conversation: preferences, plans, people, places, and anything they ask to be remembered. \
Write each fact as one short sentence about the user. Answer with JSON: {\"facts\": [...]}; an \
empty list when there is nothing worth remembering.";

/// Where the bank is and how it is used.
#[derive(Clone)]
pub struct MemoryOptions {
    /// A SQLite file (created if missing) or a `postgres://` URL.
    pub location: String,
    /// The bank's configuration; `index_bytes` is shared out among the connections.
    pub bank: BankConfig,
    /// Connections held open (at least 1); as many requests use the bank at once.
    pub connections: usize,
    /// The instructions for fact extraction (`infer=true`).
    pub extraction_prompt: String,
}

impl std::fmt::Debug for MemoryOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryOptions")
            .field("location", &redacted(&self.location))
            .field("bank", &self.bank)
            .field("connections", &self.connections)
            .field("extraction_prompt", &self.extraction_prompt)
            .finish()
    }
}

/// `location` without a password.
fn redacted(location: &str) -> String {
    if is_postgres_url(location) {
        athena::memory::postgres::redact_url(location)
    } else {
        location.to_string()
    }
}

/// The open bank: its connections, the identity of the served model's embeddings, and the
/// action head that decides adds, when the server has a trained one.
pub struct MemoryBanks {
    options: MemoryOptions,
    /// Connections not in use.
    idle: Mutex<Vec<MemoryBank>>,
    /// One permit per connection.
    permits: Arc<Semaphore>,
    /// The identity the served model's embeddings have.
    identity: EmbeddingIdentity,
    /// Hex SHA-256 of the trained head's weights; `None` without a trained head.
    head_hash: Option<String>,
}

impl std::fmt::Debug for MemoryBanks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBanks")
            .field("options", &self.options)
            .field("identity", &self.identity)
            .field("head_hash", &self.head_hash)
            .finish()
    }
}

impl MemoryBanks {
    /// Opens `options.connections` connections to the bank for `model` (loaded), and checks
    /// that the bank holds embeddings of this model, if it holds any. Blocks: call it before
    /// serving, or on the blocking pool.
    pub fn open(options: MemoryOptions, model: &OlmoeModel) -> MemoryResult<Self> {
        let width = model
            .model()
            .map(|m| m.args().hidden_size)
            .ok_or(athena::Error::NotLoaded)?;
        let identity = model_identity(model, width);
        let n = options.connections.max(1);
        let mut config = options.bank.clone();
        config.index_bytes = options.bank.index_bytes / n;
        let mut idle = Vec::with_capacity(n);
        for _ in 0..n {
            idle.push(MemoryBank::open(&options.location, config.clone())?);
        }
        if let Some(bank) = idle[0].identity()? {
            if bank != identity {
                return Err(MemoryError::OtherModel {
                    bank: bank.to_string(),
                    given: identity.to_string(),
                });
            }
        }
        let head_hash = match (model.action_head(), &model.config().action_head_path) {
            (Some(_), Some(dir)) => Some(head_hash(dir)?),
            _ => None,
        };
        Ok(MemoryBanks {
            options: MemoryOptions {
                bank: config,
                connections: n,
                ..options
            },
            idle: Mutex::new(idle),
            permits: Arc::new(Semaphore::new(n)),
            identity,
            head_hash,
        })
    }

    /// Where the bank is (a path, or a URL without its password).
    pub fn location(&self) -> String {
        redacted(&self.options.location)
    }

    /// How many connections the server holds.
    pub fn connections(&self) -> usize {
        self.options.connections
    }

    /// The configuration each connection's bank has.
    pub fn config(&self) -> &BankConfig {
        &self.options.bank
    }

    /// The instructions the model reads to extract facts from a conversation.
    pub fn extraction_prompt(&self) -> &str {
        &self.options.extraction_prompt
    }

    /// The identity of the served model's embeddings.
    pub fn identity(&self) -> &EmbeddingIdentity {
        &self.identity
    }

    /// Whether adds go through a trained action head by default.
    pub fn has_head(&self) -> bool {
        self.head_hash.is_some()
    }

    /// Whether an add asking `use_head` goes through the trained action head: by default
    /// when the server has one; 400 when it asks for a head the server does not have.
    pub(crate) fn wants_head(
        &self,
        model: &OlmoeModel,
        use_head: Option<bool>,
    ) -> Result<bool, ApiError> {
        match (use_head, model.action_head(), &self.head_hash) {
            (Some(false), _, _) => Ok(false),
            (_, Some(_), Some(_)) => Ok(true),
            (None, _, _) => Ok(false),
            (Some(true), None, _) => Err(ApiError {
                code: Some("backend_unsupported"),
                ..ApiError::bad_request(
                    "use_head",
                    format!(
                        "the memory action head runs on the candle backend only; this server \
                         runs on {}: pass use_head=false",
                        model.backend().map(|b| b.to_string()).unwrap_or_default()
                    ),
                )
            }),
            (Some(true), Some(_), None) => Err(MemoryError::UntrainedHead.into()),
        }
    }

    /// The trained action head and its hash, when the server has one.
    pub(crate) fn decider<'m>(&'m self, model: &'m OlmoeModel) -> Option<Decider<'m>> {
        let hash = self.head_hash.as_deref()?;
        Some(Decider {
            head: model.action_head()?,
            head_hash: Some(hash),
        })
    }

    /// Runs `work` on one connection, on the blocking pool, once one is free. A connection
    /// whose PostgreSQL session closed is dropped, and a new one opened in its place when it
    /// is next needed.
    pub(crate) async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&mut MemoryBank) -> MemoryResult<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::internal("the memory bank's connections are closed"))?;
        let banks = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let taken = banks.lock().pop();
            let mut bank = match taken {
                Some(bank) => bank,
                None => MemoryBank::open(&banks.options.location, banks.options.bank.clone())?,
            };
            let result = work(&mut bank);
            let closed = matches!(&result, Err(MemoryError::Postgres(e)) if e.is_closed());
            if closed {
                tracing::warn!(
                    bank = %banks.location(),
                    "a PostgreSQL connection closed; a new one is opened when next needed"
                );
            } else {
                banks.lock().push(bank);
            }
            result
        })
        .await
        .map_err(|_| ApiError::internal("a memory bank task failed"))?
        .map_err(ApiError::from)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<MemoryBank>> {
        // The list of idle connections stays consistent even if a holder panicked.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for MemoryBanks {
    /// Closes the connections on a thread of their own: a PostgreSQL connection blocks on
    /// its own runtime to close, which tokio forbids on an async worker, where the last
    /// handle on the bank is usually dropped when the server stops.
    fn drop(&mut self) {
        let idle = std::mem::take(&mut *self.lock());
        if idle.is_empty() {
            return;
        }
        let closing = std::thread::Builder::new()
            .name("athena-memory-close".into())
            .spawn(move || drop(idle));
        match closing {
            Ok(t) => {
                if t.join().is_err() {
                    tracing::warn!("closing the memory bank's connections failed");
                }
            }
            Err(e) => tracing::warn!("closing the memory bank's connections: {e}"),
        }
    }
}
