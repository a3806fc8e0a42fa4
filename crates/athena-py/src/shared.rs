//! The loaded model as the module's objects share it: one [`OlmoeModel`] behind a lock, read
//! by encode, act, generation streams, the tokenizer and memory banks, written by `load()`.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use athena::backend::Backend;
use athena::generate::Tokenizer;
use athena::models::olmoe::OlmoeModel;

/// The model, shared by the Python objects that use it.
pub type SharedModel = Arc<RwLock<OlmoeModel>>;

/// Reads the shared model; a lock poisoned by a panic still holds a usable model.
pub fn read(model: &SharedModel) -> RwLockReadGuard<'_, OlmoeModel> {
    model
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes the shared model (to load it).
pub fn write(model: &SharedModel) -> RwLockWriteGuard<'_, OlmoeModel> {
    model
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The loaded backend and tokenizer: [`athena::Error::NotLoaded`] before loading, a tokenizer
/// error for a model without one.
pub fn loaded_parts(m: &OlmoeModel) -> athena::Result<(&dyn Backend, &Tokenizer)> {
    let backend = m.model().ok_or(athena::Error::NotLoaded)?;
    Ok((backend, m.text_tokenizer()?))
}
