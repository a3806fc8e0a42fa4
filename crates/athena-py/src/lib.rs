//! The `athena` Python module (`athena._athena`, re-exported by the `athena` package): OLMoE
//! loaded as the agent loads it, encode, act, generate, the memory bank and the training of
//! the memory action head, each a thin layer over the library.
//!
//! Imports go one way: `errors`, `convert`, `logging` and `shared` (the model behind its lock)
//! are leaves; `config`, `head`, `tokenizer` and `stream` above them; `model`; `memory` and
//! `train` on top.
#![warn(missing_docs)]

mod config;
mod convert;
mod errors;
mod head;
mod logging;
mod memory;
mod model;
mod shared;
mod stream;
mod tokenizer;
mod train;

use athena::backend::mlx::MlxProvider;
use athena::backend::{Availability, BackendProvider};
use pyo3::prelude::*;

/// Why MLX cannot run in this build, or None when it can (compiled in, with a usable
/// device): the first step of `OLMoEModel.load()` with `use_mlx=True`.
#[pyfunction]
fn mlx_unavailable_reason() -> Option<String> {
    match MlxProvider.availability() {
        Availability::Available => None,
        Availability::NotCompiled(why) | Availability::NoDevice(why) => Some(why),
    }
}

/// The extension module.
#[pymodule]
#[pyo3(name = "_athena")]
fn athena_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    logging::install();
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("AthenaUserError", py.get_type::<errors::AthenaUserError>())?;
    m.add("AthenaError", py.get_type::<errors::AthenaError>())?;
    m.add_class::<config::PyOlmoeConfig>()?;
    m.add_class::<model::PyOlmoeModel>()?;
    m.add_class::<head::PyActionHead>()?;
    m.add_class::<tokenizer::PyTokenizer>()?;
    m.add_class::<stream::PyGenerationStream>()?;
    m.add_class::<memory::PyMemoryBank>()?;
    m.add_function(wrap_pyfunction!(train::train_head, m)?)?;
    m.add_function(wrap_pyfunction!(mlx_unavailable_reason, m)?)?;
    Ok(())
}
