//! How the server runs: its limits, names and who may call it.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::ApiKey;
use crate::banks::MemoryBanks;
use crate::limits::Limits;
use crate::origin::AllowedHosts;

/// The default [`ServerConfig::token_budget`].
pub const DEFAULT_TOKEN_BUDGET: usize = 1 << 17;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The name `/v1/models` lists and responses carry.
    pub model_id: String,
    /// Other names a request's `model` may give (the model's path or hub name, say).
    pub aliases: Vec<String>,
    /// Sequences decoded together at most (the batch of a step).
    pub max_concurrency: usize,
    /// Requests that may wait beyond those; past them the answer is 429.
    pub queue: usize,
    /// Tokens the server holds at most, over the requests running and waiting: a generation
    /// costs its prompt plus its `max_tokens` (per choice), an encoding all its tokens. A
    /// request past what is free is 429; one past the whole budget, 400.
    pub token_budget: usize,
    /// Largest request body, in bytes (413 past it).
    pub max_body_bytes: usize,
    /// After SIGTERM (or the shutdown future), how long open requests may still run before
    /// they are cancelled.
    pub shutdown_grace: Duration,
    /// The key every route but `/health` asks for; none: no key asked.
    pub api_key: Option<ApiKey>,
    /// The `Host` headers answered.
    pub allowed_hosts: AllowedHosts,
    /// Timeouts and the bound on connections.
    pub limits: Limits,
    /// The memory bank the memory routes serve (`--memory-db`); without one they answer 404
    /// `memory_disabled`.
    pub memory: Option<Arc<MemoryBanks>>,
}

impl ServerConfig {
    /// Whether a request's `model` names the served model (no name does too).
    pub fn serves(&self, model: Option<&str>) -> bool {
        match model {
            None => true,
            Some(m) => m == self.model_id || self.aliases.iter().any(|a| a == m),
        }
    }
}

impl Default for ServerConfig {
    /// 16 running, 64 waiting, 131072 tokens, 1 MiB bodies, 10 s grace, no key, local hosts only, the
    /// default [`Limits`], no memory bank.
    fn default() -> Self {
        ServerConfig {
            model_id: "athena".into(),
            aliases: Vec::new(),
            max_concurrency: 16,
            queue: 64,
            token_budget: DEFAULT_TOKEN_BUDGET,
            max_body_bytes: 1 << 20,
            shutdown_grace: Duration::from_secs(10),
            api_key: None,
            allowed_hosts: AllowedHosts::Local,
            limits: Limits::default(),
            memory: None,
        }
    }
}
