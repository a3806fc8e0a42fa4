//! How the server runs: its limits, names and who may call it.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::ApiKey;
use crate::banks::MemoryBanks;
use crate::limits::Limits;
use crate::origin::AllowedHosts;

/// The default [`ServerConfig::token_budget`].
pub const DEFAULT_TOKEN_BUDGET: usize = 1 << 17;

/// The default [`ServerConfig::max_concurrency`] where the memory the model computes in
/// cannot be measured (the CPU, MLX).
pub const DEFAULT_MAX_CONCURRENCY: usize = 16;

/// The most sequences [`default_max_concurrency`] runs together on an accelerator.
pub const MAX_DEVICE_CONCURRENCY: usize = 256;

/// `--max-concurrency`'s default: where the model computes on an accelerator whose free
/// memory is known (after loading), as many sequences as fit when each holds a KV cache of
/// the whole context, in nine tenths of that memory (the rest stays for activations), between
/// 1 and [`MAX_DEVICE_CONCURRENCY`]; elsewhere [`DEFAULT_MAX_CONCURRENCY`].
pub fn default_max_concurrency(
    free_bytes: Option<u64>,
    kv_bytes_per_sequence: Option<u64>,
) -> usize {
    match (free_bytes, kv_bytes_per_sequence) {
        (Some(free), Some(per_sequence)) if per_sequence > 0 => {
            let fits = free / 10 * 9 / per_sequence;
            usize::try_from(fits)
                .unwrap_or(usize::MAX)
                .clamp(1, MAX_DEVICE_CONCURRENCY)
        }
        _ => DEFAULT_MAX_CONCURRENCY,
    }
}

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
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_concurrency_follows_the_kv_memory_of_an_accelerator() {
        // No accelerator, or nothing known of the cache: the CPU's default.
        assert_eq!(
            default_max_concurrency(None, Some(1 << 20)),
            DEFAULT_MAX_CONCURRENCY
        );
        assert_eq!(
            default_max_concurrency(Some(1 << 40), None),
            DEFAULT_MAX_CONCURRENCY
        );
        assert_eq!(
            default_max_concurrency(Some(1 << 40), Some(0)),
            DEFAULT_MAX_CONCURRENCY
        );
        // OLMoE-1B-7B in bf16: 16 layers x 2 x 16 heads x 128 x 2 bytes = 128 KiB a token,
        // 512 MiB for a 4096-token sequence. 64 GiB free: 57.6 GiB for caches, 115 sequences.
        let per_sequence = 16 * 2 * 16 * 128 * 2 * 4096;
        assert_eq!(
            default_max_concurrency(Some(64 << 30), Some(per_sequence)),
            115
        );
        // Bounded on both sides.
        assert_eq!(
            default_max_concurrency(Some(1 << 50), Some(per_sequence)),
            MAX_DEVICE_CONCURRENCY
        );
        assert_eq!(
            default_max_concurrency(Some(1 << 20), Some(per_sequence)),
            1
        );
    }
}
