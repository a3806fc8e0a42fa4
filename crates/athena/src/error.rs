//! Typed errors of the library. Every variant names the file, tensor or field at fault.

use std::path::PathBuf;

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in athena, with enough context to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `config.json` (or another JSON file) is malformed or describes something unsupported.
    #[error("{path}: {msg}")]
    Config {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong, naming the field.
        msg: String,
    },
    /// A safetensors file or a sharded index is malformed.
    #[error("{path}: {msg}")]
    Checkpoint {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong, naming the tensor where there is one.
        msg: String,
    },
    /// A tensor is missing, duplicated or has the wrong shape or dtype.
    #[error("tensor `{name}`: {msg}")]
    Tensor {
        /// The tensor at fault.
        name: String,
        /// What is wrong.
        msg: String,
    },
    /// The tokenizer or chat template could not be loaded or applied.
    #[error("{path}: {msg}")]
    Tokenizer {
        /// The file at fault (tokenizer.json, tokenizer_config.json).
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A model could not be found locally or on the hub.
    #[error("model `{model}`: {msg}")]
    Resolve {
        /// The hub id or path that was asked for.
        model: String,
        /// What is wrong.
        msg: String,
    },
    /// A broken internal invariant: a bug in athena, never the caller's mistake.
    #[error("internal error in {what}: {msg} (this is a bug in athena)")]
    Internal {
        /// The component whose invariant broke.
        what: &'static str,
        /// What was found.
        msg: String,
    },
    /// A request (ids, sampling parameters, batch) is invalid.
    #[error("invalid {field}: {msg}")]
    Invalid {
        /// The parameter at fault.
        field: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// A grammar or JSON schema for constrained decoding is malformed, too large, or uses what
    /// llguidance does not implement.
    #[error("unsupported grammar: {msg}")]
    Grammar {
        /// What is wrong, as llguidance (or the size check) says it.
        msg: String,
    },
    /// No backend could load the model; `reasons` says why each one was passed over.
    #[error("No inference backend available (MLX and candle both unavailable): {reasons}")]
    NoBackend {
        /// Each backend's reason, in the order they were tried.
        reasons: String,
    },
    /// The model has not been loaded yet.
    #[error("the model is not loaded: call load() first")]
    NotLoaded,
    /// The operation exists only on the trainable candle path.
    #[error("{what} needs the candle path; this model runs on {backend}")]
    NeedsCandle {
        /// What was asked for.
        what: &'static str,
        /// The backend the model runs on.
        backend: crate::options::BackendKind,
    },
    /// A training run would overwrite a trained head it was not told to replace.
    #[error(
        "{} already holds a trained head ({}); pass --overwrite to train a new one in its \
         place, or --resume to continue its run",
        out.display(),
        file.display()
    )]
    HeadExists {
        /// The run's output directory.
        out: PathBuf,
        /// The head's file found there.
        file: PathBuf,
    },
    /// The requester withdrew the request ([`crate::models::cancel::Cancel`]) before the
    /// work was done.
    #[error("{what} was cancelled")]
    Cancelled {
        /// The work that stopped.
        what: &'static str,
    },
    /// An error from candle's tensor operations.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// Shorthand for [`Error::Config`].
    pub fn config(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Config {
            path: path.into(),
            msg: msg.into(),
        }
    }
    /// Shorthand for [`Error::Checkpoint`].
    pub fn checkpoint(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            msg: msg.into(),
        }
    }
    /// Shorthand for [`Error::Tensor`].
    pub fn tensor(name: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Tensor {
            name: name.into(),
            msg: msg.into(),
        }
    }
    /// Shorthand for [`Error::Tokenizer`].
    pub fn tokenizer(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Tokenizer {
            path: path.into(),
            msg: msg.into(),
        }
    }
    /// Shorthand for [`Error::Internal`].
    pub fn internal(what: &'static str, msg: impl Into<String>) -> Self {
        Error::Internal {
            what,
            msg: msg.into(),
        }
    }
    /// Whether the error is the caller's doing (bad input, a missing or malformed file, an
    /// unavailable device) rather than a bug in athena or a failed tensor operation.
    pub fn is_user_error(&self) -> bool {
        !matches!(self, Error::Internal { .. } | Error::Candle(_))
    }
    /// Shorthand for [`Error::Grammar`].
    pub fn grammar(msg: impl Into<String>) -> Self {
        Error::Grammar { msg: msg.into() }
    }
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(field: &'static str, msg: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            msg: msg.into(),
        }
    }
}
