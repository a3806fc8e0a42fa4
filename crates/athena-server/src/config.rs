//! How the server runs: its limits and names.

use std::time::Duration;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The name `/v1/models` lists and responses carry.
    pub model_id: String,
    /// Sequences decoded together at most (the batch of a step).
    pub max_concurrency: usize,
    /// Requests that may wait beyond those; past them the answer is 429.
    pub queue: usize,
    /// Largest request body, in bytes (413 past it).
    pub max_body_bytes: usize,
    /// After SIGTERM (or the shutdown future), how long open requests may still run before
    /// they are cancelled.
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    /// 16 running, 64 waiting, 1 MiB bodies, 10 s grace.
    fn default() -> Self {
        ServerConfig {
            model_id: "athena".into(),
            max_concurrency: 16,
            queue: 64,
            max_body_bytes: 1 << 20,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}
