//! `MemoryActionHead`: what a loaded model's memory action head is (its operations, widths and
//! where it came from). The head itself stays in the model; `OLMoEModel.act` runs it.

use std::path::Path;

use athena::models::action_head::MemoryActionHead;
use pyo3::prelude::*;

/// A description of the memory action head attached on the candle path.
#[pyclass(name = "MemoryActionHead", module = "athena", frozen, get_all)]
#[derive(Debug, Clone)]
pub struct PyActionHead {
    /// The operations, in logit order (e.g. ADD, UPDATE, DELETE, NOOP).
    pub operations: Vec<String>,
    /// The operations that name an existing memory.
    pub target_operations: Vec<String>,
    /// Features the head takes (the model's hidden size).
    pub input_dim: usize,
    /// Width of the head's shared projection.
    pub proj_dim: usize,
    /// Seed of a fresh head's initialisation.
    pub seed: u64,
    /// The trained head's directory; None for a freshly initialised head.
    pub path: Option<String>,
}

impl PyActionHead {
    /// Describes `head`, loaded from `path` when it is a trained one.
    pub fn describe(head: &MemoryActionHead, path: Option<&Path>) -> Self {
        let c = head.config();
        PyActionHead {
            operations: c.operations.clone(),
            target_operations: c.target_operations.clone(),
            input_dim: head.input_dim(),
            proj_dim: c.proj_dim,
            seed: c.seed,
            path: path.map(|p| p.display().to_string()),
        }
    }
}

#[pymethods]
impl PyActionHead {
    /// Whether the head was loaded from a trained head's directory.
    #[getter]
    fn trained(&self) -> bool {
        self.path.is_some()
    }

    /// The head's operations, widths and directory, as Python would write them.
    fn __repr__(&self) -> String {
        let quoted = |items: &[String]| {
            let items: Vec<String> = items.iter().map(|s| format!("'{s}'")).collect();
            format!("[{}]", items.join(", "))
        };
        let path = self
            .path
            .as_ref()
            .map_or_else(|| "None".to_string(), |p| format!("'{p}'"));
        format!(
            "MemoryActionHead(operations={}, input_dim={}, proj_dim={}, path={path})",
            quoted(&self.operations),
            self.input_dim,
            self.proj_dim
        )
    }
}
