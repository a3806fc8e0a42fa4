//! What every handler sees: the model, the scheduler, admission and the configuration.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use athena::models::olmoe::OlmoeModel;

use crate::config::ServerConfig;
use crate::engine::Engine;

/// The state shared by every handler.
pub(crate) type Shared = Arc<AppState>;

/// Bounds the requests in the server (running and waiting).
#[derive(Debug)]
pub(crate) struct Admission {
    capacity: usize,
    held: AtomicUsize,
}

/// A place in the server, given back on drop.
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    n: usize,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.held.fetch_sub(self.n, Ordering::SeqCst);
    }
}

impl Admission {
    /// `capacity` places, none taken.
    pub(crate) fn new(capacity: usize) -> Self {
        Admission {
            capacity,
            held: AtomicUsize::new(0),
        }
    }

    /// Places in all.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Places taken now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// Takes `n` places, or none when fewer are free.
    pub(crate) fn try_acquire(self: &Arc<Self>, n: usize) -> Option<Ticket> {
        let mut held = self.held.load(Ordering::SeqCst);
        loop {
            if held + n > self.capacity {
                return None;
            }
            match self
                .held
                .compare_exchange(held, held + n, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => {
                    return Some(Ticket {
                        admission: self.clone(),
                        n,
                    })
                }
                Err(now) => held = now,
            }
        }
    }
}

/// What every handler sees.
pub(crate) struct AppState {
    pub model: Arc<OlmoeModel>,
    pub engine: Engine,
    pub admission: Arc<Admission>,
    pub config: ServerConfig,
    pub draining: AtomicBool,
    pub started: std::time::Instant,
}
