//! `GenerationStream`: the text of one generation, piece by piece, produced on a thread of
//! its own while Python reads it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};

use athena::generate::{generate_while, GenerateParams};
use pyo3::prelude::*;

use crate::errors::{model_error, AthenaError};
use crate::shared::{loaded_parts, read, SharedModel};

/// What the generating thread sends.
enum Piece {
    /// Text completed by a token.
    Text(String),
    /// The generation failed.
    Failed(athena::Error),
    /// The generation ended normally.
    Done,
}

/// An iterator of generated text pieces; dropping it stops the generation at the next token.
#[pyclass(name = "GenerationStream", module = "athena", frozen)]
pub struct PyGenerationStream {
    pieces: Mutex<Receiver<Piece>>,
    /// Cleared when the reader goes away; the generating thread checks it before each token.
    wanted: Arc<AtomicBool>,
    finished: AtomicBool,
}

impl PyGenerationStream {
    /// Starts generating `prompt` (tokenized with its special tokens) on a new thread.
    pub fn start(model: SharedModel, prompt: String, params: GenerateParams) -> Self {
        let (send, pieces) = channel();
        let wanted = Arc::new(AtomicBool::new(true));
        let keep_going = wanted.clone();
        std::thread::spawn(move || {
            let m = read(&model);
            let result = loaded_parts(&m).and_then(|(backend, tokenizer)| {
                let ids = tokenizer.encode(&prompt, true)?;
                generate_while(
                    backend,
                    tokenizer,
                    &ids,
                    &params,
                    || keep_going.load(Ordering::Relaxed),
                    |text| {
                        if send.send(Piece::Text(text.to_string())).is_err() {
                            keep_going.store(false, Ordering::Relaxed);
                        }
                    },
                )
            });
            // A reader that went away reads nothing more.
            let _ = send.send(match result {
                Ok(_) | Err(athena::Error::Cancelled { .. }) => Piece::Done,
                Err(e) => Piece::Failed(e),
            });
        });
        PyGenerationStream {
            pieces: Mutex::new(pieces),
            wanted,
            finished: AtomicBool::new(false),
        }
    }
}

impl Drop for PyGenerationStream {
    fn drop(&mut self) {
        self.wanted.store(false, Ordering::Relaxed);
    }
}

#[pymethods]
impl PyGenerationStream {
    /// The stream itself.
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next piece of text; StopIteration once the generation has ended.
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<String>> {
        if self.finished.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let next = py.detach(|| {
            self.pieces
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .recv()
        });
        match next {
            Ok(Piece::Text(text)) => Ok(Some(text)),
            Ok(Piece::Done) => {
                self.finished.store(true, Ordering::Relaxed);
                Ok(None)
            }
            Ok(Piece::Failed(e)) => {
                self.finished.store(true, Ordering::Relaxed);
                Err(model_error(e))
            }
            Err(_) => {
                self.finished.store(true, Ordering::Relaxed);
                Err(AthenaError::new_err(
                    "the generation stopped without finishing (its thread ended early)",
                ))
            }
        }
    }

    /// Stops the generation at the next token.
    fn close(&self) {
        self.wanted.store(false, Ordering::Relaxed);
    }
}
