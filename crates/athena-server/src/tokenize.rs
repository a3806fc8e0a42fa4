//! Tokenization off the async workers: texts are tokenized on the blocking pool, a few at a
//! time, behind a bounded queue (429 past it), after a length check that refuses, before any
//! work, a text too long in bytes to fit the context in tokens.

use std::sync::Arc;

use athena::generate::Tokenizer;
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// Tokenizations that may wait for a worker; past them the answer is 429.
const QUEUE: usize = 64;

/// The tokenization pool.
#[derive(Debug)]
pub(crate) struct Tokenizing {
    /// Tokenizations running.
    workers: Arc<Semaphore>,
    /// Tokenizations running or waiting.
    places: Arc<Semaphore>,
    /// Longest text, in bytes, that may still fit the context: the context times the most
    /// bytes a token can stand for.
    max_text_bytes: usize,
}

impl Tokenizing {
    /// A pool of one worker per core for `tokenizer`, whose model has `context` positions.
    pub(crate) fn new(tokenizer: &Tokenizer, context: usize) -> Self {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        Tokenizing {
            workers: Arc::new(Semaphore::new(workers)),
            places: Arc::new(Semaphore::new(workers + QUEUE)),
            max_text_bytes: context.saturating_mul(max_bytes_per_token(tokenizer)),
        }
    }

    /// 400 for a text of `bytes` bytes that cannot fit the context whatever its tokens.
    pub(crate) fn check_len(&self, param: &str, what: &str, bytes: usize) -> Result<(), ApiError> {
        if bytes > self.max_text_bytes {
            return Err(ApiError::bad_request(
                param,
                format!(
                    "{what} is {bytes} bytes: more tokens than the model's context can hold \
                     (at most {} bytes)",
                    self.max_text_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Runs `work` (tokenization) on the blocking pool once a worker is free; 429 when the
    /// queue is full.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let place = self
            .places
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::overloaded(QUEUE))?;
        let worker = self
            .workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::internal("the tokenization pool is closed"))?;
        tokio::task::spawn_blocking(move || {
            let _held = (place, worker);
            work()
        })
        .await
        .map_err(|_| ApiError::internal("a tokenization task failed"))?
    }
}

/// The most input bytes one token can stand for, bounded above: the longest token string in
/// the vocabulary, doubled for normalizers that shorten what they read.
fn max_bytes_per_token(tokenizer: &Tokenizer) -> usize {
    let longest = tokenizer
        .inner()
        .get_vocab(true)
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(1);
    longest.max(1).saturating_mul(2)
}
