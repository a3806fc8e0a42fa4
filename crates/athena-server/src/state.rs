//! What every handler sees: the model, the scheduler, admission and the configuration.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use athena::models::olmoe::OlmoeModel;

use crate::config::ServerConfig;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::tokenize::Tokenizing;

/// The state shared by every handler.
pub(crate) type Shared = Arc<AppState>;

/// Bounds what the server holds at once (running and waiting): sequences, and tokens (a
/// request's cost: prompt plus new tokens for a generation, all its tokens for an encoding).
#[derive(Debug)]
pub(crate) struct Admission {
    sequences: usize,
    tokens: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Held {
    pub sequences: usize,
    pub tokens: usize,
}

/// A place in the server, given back on drop.
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    cost: Held,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut held = self.admission.lock();
        held.sequences -= self.cost.sequences;
        held.tokens -= self.cost.tokens;
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// It could fit, but not now.
    Busy,
    /// It costs more tokens than the whole budget: it never fits.
    TooCostly {
        /// The budget.
        budget: usize,
    },
}

impl Admission {
    /// Room for `sequences` sequences and `tokens` tokens, none taken.
    pub(crate) fn new(sequences: usize, tokens: usize) -> Self {
        Admission {
            sequences,
            tokens,
            held: Mutex::new(Held::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // The guarded counters stay consistent even if a holder panicked.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sequences in all.
    pub(crate) fn capacity(&self) -> usize {
        self.sequences
    }

    /// Tokens in all.
    pub(crate) fn token_budget(&self) -> usize {
        self.tokens
    }

    /// What is taken now.
    pub(crate) fn held(&self) -> Held {
        *self.lock()
    }

    /// Takes `sequences` places and `tokens` tokens, or nothing when either is short.
    pub(crate) fn try_acquire(
        self: &Arc<Self>,
        sequences: usize,
        tokens: usize,
    ) -> Result<Ticket, Refusal> {
        if tokens > self.tokens {
            return Err(Refusal::TooCostly {
                budget: self.tokens,
            });
        }
        let mut held = self.lock();
        if held.sequences + sequences > self.sequences || held.tokens + tokens > self.tokens {
            return Err(Refusal::Busy);
        }
        held.sequences += sequences;
        held.tokens += tokens;
        Ok(Ticket {
            admission: self.clone(),
            cost: Held { sequences, tokens },
        })
    }
}

/// What every handler sees.
pub(crate) struct AppState {
    pub model: Arc<OlmoeModel>,
    pub engine: Engine,
    pub admission: Arc<Admission>,
    pub tokenizing: Tokenizing,
    pub metrics: Arc<Metrics>,
    pub config: ServerConfig,
    pub draining: AtomicBool,
    pub started: std::time::Instant,
    /// The address the server listens on.
    pub bound: Option<std::net::SocketAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_counts_tokens_and_sequences() {
        let a = Arc::new(Admission::new(4, 100));
        let t1 = a.try_acquire(1, 60).unwrap();
        assert_eq!(a.try_acquire(1, 50).unwrap_err(), Refusal::Busy);
        let t2 = a.try_acquire(3, 40).unwrap();
        assert_eq!(a.try_acquire(1, 0).unwrap_err(), Refusal::Busy);
        assert_eq!(
            a.try_acquire(1, 101).unwrap_err(),
            Refusal::TooCostly { budget: 100 }
        );
        drop((t1, t2));
        let held = a.held();
        assert_eq!((held.sequences, held.tokens), (0, 0));
        assert!(a.try_acquire(4, 100).is_ok());
    }
}
