//! The Python exceptions of athena's errors: [`AthenaUserError`] (a `ValueError`) for the
//! caller's mistakes, [`AthenaError`] (a `RuntimeError`) for the rest. Both carry the Rust
//! message unchanged.

use athena::memory::MemoryError;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::PyErr;

pyo3::create_exception!(
    athena,
    AthenaUserError,
    PyValueError,
    "The caller's mistake: bad input, a missing or malformed file, an unavailable device."
);
pyo3::create_exception!(
    athena,
    AthenaError,
    PyRuntimeError,
    "A failure that is not the caller's doing: a tensor operation, a store, a bug in athena."
);

/// The exception of a library error.
pub fn model_error(e: athena::Error) -> PyErr {
    if e.is_user_error() {
        AthenaUserError::new_err(e.to_string())
    } else {
        AthenaError::new_err(e.to_string())
    }
}

/// The exception of a memory bank error: the caller's mistakes (an unknown id, bad text,
/// metadata or scope, a foreign or damaged file, an untrained head) are [`AthenaUserError`].
pub fn memory_error(e: MemoryError) -> PyErr {
    let user = match &e {
        MemoryError::Model(inner) => inner.is_user_error(),
        MemoryError::CorruptDb { .. }
        | MemoryError::ForeignDb { .. }
        | MemoryError::OtherModel { .. }
        | MemoryError::UnknownId { .. }
        | MemoryError::BadText { .. }
        | MemoryError::BadMetadata { .. }
        | MemoryError::BadScope { .. }
        | MemoryError::Invalid { .. }
        | MemoryError::UntrainedHead => true,
        MemoryError::TargetGone { .. }
        | MemoryError::Sqlite(_)
        | MemoryError::Postgres(_)
        | MemoryError::Internal(_) => false,
    };
    if user {
        AthenaUserError::new_err(e.to_string())
    } else {
        AthenaError::new_err(e.to_string())
    }
}

/// A caller's mistake found in the binding itself (an argument of the wrong shape).
pub fn user_error(msg: impl Into<String>) -> PyErr {
    AthenaUserError::new_err(msg.into())
}
