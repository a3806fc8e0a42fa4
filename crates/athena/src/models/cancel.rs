//! A flag that lets whoever asked for a long piece of work withdraw the request: the work
//! checks it between forward passes and stops with [`Error::Cancelled`](crate::Error::Cancelled).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A shared cancellation flag; clones see the same flag.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A flag not yet raised.
    pub fn new() -> Self {
        Cancel::default()
    }

    /// Raises the flag: work that checks it stops at its next check.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether the flag was raised.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// A guard that raises the flag when dropped: held by the requester (an HTTP handler, say),
    /// it cancels the work when the requester goes away before the work is done.
    pub fn on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(self.clone())
    }
}

/// Raises its [`Cancel`] flag when dropped.
#[derive(Debug)]
pub struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_flag_and_the_guard_raises_it() {
        let flag = Cancel::new();
        let seen = flag.clone();
        assert!(!seen.is_cancelled());
        drop(flag.on_drop());
        assert!(seen.is_cancelled());
    }
}
