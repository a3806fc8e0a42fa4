//! `MemoryBank`: athena's memory bank with mem0's method names, answering with the dicts
//! `athena memory ... --json` prints ([`athena::memory::mem0`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use athena::config::OlmoeConfig;
use athena::memory::{
    mem0, parse_id, parse_metadata, BankConfig, MemoryBank, MemoryError, Metadata, Scope,
    SearchOptions,
};
use athena::models::olmoe::OlmoeModel;
use pyo3::prelude::*;

use crate::convert::{from_python, to_python};
use crate::errors::{memory_error, model_error, user_error};
use crate::model::PyOlmoeModel;
use crate::shared::{read, SharedModel};

/// An agent's memories in SQLite (a file, created if missing) or PostgreSQL (a
/// `postgres://` URL), with the history of every change.
#[pyclass(name = "MemoryBank", module = "athena", frozen)]
pub struct PyMemoryBank {
    bank: Mutex<MemoryBank>,
    model: Option<SharedModel>,
}

/// The scope of the ids given; `None` when none is given.
fn scope(
    user_id: Option<String>,
    agent_id: Option<String>,
    run_id: Option<String>,
) -> Option<Scope> {
    let scope = Scope {
        user_id,
        agent_id,
        run_id,
    };
    (scope != Scope::default()).then_some(scope)
}

/// A scope that must name a user, agent or run.
fn required_scope(
    user_id: Option<String>,
    agent_id: Option<String>,
    run_id: Option<String>,
) -> PyResult<Scope> {
    let scope = scope(user_id, agent_id, run_id).unwrap_or_default();
    scope.validate().map_err(memory_error)?;
    Ok(scope)
}

/// A Python dict of metadata (or None) as the bank's metadata.
fn metadata(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Metadata> {
    match obj {
        None => Ok(Metadata::new()),
        Some(o) if o.is_none() => Ok(Metadata::new()),
        Some(o) => parse_metadata(&from_python(o)?.to_string()).map_err(memory_error),
    }
}

/// The memory id given, parsed.
fn id(memory_id: &str) -> PyResult<uuid::Uuid> {
    parse_id(memory_id).map_err(memory_error)
}

impl PyMemoryBank {
    /// Runs `f` on the bank (and the model, where one is needed) with the GIL released.
    fn with_bank<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut MemoryBank) -> Result<T, MemoryError> + Send,
    ) -> PyResult<T> {
        py.detach(|| {
            let mut bank = self
                .bank
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut bank)
        })
        .map_err(memory_error)
    }

    /// The model, or the caller's error when the bank was opened without one.
    fn model(&self, what: &str) -> PyResult<SharedModel> {
        self.model.clone().ok_or_else(|| {
            user_error(format!(
                "{what} encodes text: open the MemoryBank with model=(an OLMoEModel or a model name)"
            ))
        })
    }
}

#[pymethods]
impl PyMemoryBank {
    /// Opens the bank at `db`. `model` is a loaded `OLMoEModel` or a model name or directory
    /// (loaded here on the candle path, with the trained head in `head` when given); a bank
    /// without a model can list, get, delete and show history, not add, search or update.
    #[new]
    #[pyo3(signature = (db, model = None, head = None, max_text_bytes = athena::memory::DEFAULT_MAX_TEXT_BYTES))]
    fn new(
        py: Python<'_>,
        db: String,
        model: Option<&Bound<'_, PyAny>>,
        head: Option<PathBuf>,
        max_text_bytes: usize,
    ) -> PyResult<Self> {
        let model: Option<SharedModel> = match model {
            None => {
                if head.is_some() {
                    return Err(user_error("head= needs model= (a model name or directory)"));
                }
                None
            }
            Some(m) if m.is_none() => None,
            Some(m) => match m.cast::<PyOlmoeModel>() {
                Ok(loaded) => {
                    if head.is_some() {
                        return Err(user_error(
                            "head= goes with a model name; an OLMoEModel carries the head of its \
                             config's action_head_path",
                        ));
                    }
                    Some(loaded.get().model.clone())
                }
                Err(_) => {
                    let name: String = m.extract()?;
                    let mut config = OlmoeConfig::for_model(name);
                    config.use_mlx = false;
                    config.action_head_path = head;
                    let mut model = OlmoeModel::new(config);
                    py.detach(|| model.load().map(|_| ()))
                        .map_err(model_error)?;
                    Some(Arc::new(RwLock::new(model)))
                }
            },
        };
        let config = BankConfig {
            max_text_bytes,
            ..BankConfig::default()
        };
        let bank = py
            .detach(|| MemoryBank::open(&db, config))
            .map_err(memory_error)?;
        Ok(PyMemoryBank {
            bank: Mutex::new(bank),
            model,
        })
    }

    /// Adds facts (a string or a list of strings) to a scope. With `infer` the trained action
    /// head decides ADD, UPDATE, DELETE or NOOP for each; without it every fact is added.
    /// Returns `{"results": [{"id", "event", "memory", "previous_memory"}, ...]}`.
    #[pyo3(signature = (messages, user_id = None, agent_id = None, run_id = None, metadata = None, infer = true))]
    #[allow(clippy::too_many_arguments)]
    fn add<'py>(
        &self,
        py: Python<'py>,
        messages: &Bound<'py, PyAny>,
        user_id: Option<String>,
        agent_id: Option<String>,
        run_id: Option<String>,
        metadata: Option<&Bound<'py, PyAny>>,
        infer: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let facts: Vec<String> = match messages.extract::<String>() {
            Ok(one) => vec![one],
            Err(_) => messages.extract()?,
        };
        let scope = required_scope(user_id, agent_id, run_id)?;
        let metadata = self::metadata(metadata)?;
        let model = self.model("add")?;
        let events = self.with_bank(py, move |bank| {
            let m = read(&model);
            if infer && m.config().action_head_path.is_none() {
                return Err(MemoryError::UntrainedHead);
            }
            for (i, f) in facts.iter().enumerate() {
                bank.check_text(&format!("fact {}", i + 1), f)?;
            }
            let facts: Vec<&str> = facts.iter().map(String::as_str).collect();
            bank.add(&m, &facts, &scope, &metadata, infer)
        })?;
        to_python(py, &mem0::add_results(&events))
    }

    /// The scope's memories most like `query`, best first:
    /// `{"results": [{"id", "memory", "score", "metadata"}, ...]}`.
    #[pyo3(signature = (query, user_id = None, agent_id = None, run_id = None, limit = 10, threshold = None, filters = None))]
    #[allow(clippy::too_many_arguments)]
    fn search<'py>(
        &self,
        py: Python<'py>,
        query: String,
        user_id: Option<String>,
        agent_id: Option<String>,
        run_id: Option<String>,
        limit: usize,
        threshold: Option<f32>,
        filters: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut options = SearchOptions::new(required_scope(user_id, agent_id, run_id)?);
        options.top_k = limit;
        options.threshold = threshold;
        options.filters = metadata(filters)?;
        let model = self.model("search")?;
        let hits = self.with_bank(py, move |bank| bank.search(&read(&model), &query, &options))?;
        to_python(py, &mem0::search_results(&hits))
    }

    /// One memory: `{"id", "memory", "hash", "metadata", "created_at", "updated_at",
    /// "user_id", "agent_id", "run_id"}`.
    fn get<'py>(&self, py: Python<'py>, memory_id: &str) -> PyResult<Bound<'py, PyAny>> {
        let id = id(memory_id)?;
        let record = self.with_bank(py, move |bank| bank.get(id, None))?;
        to_python(py, &mem0::record(&record))
    }

    /// A scope's memories, oldest first: `{"results": [memory, ...]}`.
    #[pyo3(signature = (user_id = None, agent_id = None, run_id = None, offset = 0, limit = 100))]
    fn get_all<'py>(
        &self,
        py: Python<'py>,
        user_id: Option<String>,
        agent_id: Option<String>,
        run_id: Option<String>,
        offset: u64,
        limit: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let scope = required_scope(user_id, agent_id, run_id)?;
        let records = self.with_bank(py, move |bank| bank.get_all(&scope, offset, limit))?;
        to_python(py, &mem0::list_results(&records))
    }

    /// Replaces a memory's text (re-encoded): `{"message", "id", "event"}`.
    fn update<'py>(
        &self,
        py: Python<'py>,
        memory_id: &str,
        data: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = id(memory_id)?;
        let model = self.model("update")?;
        let event = self.with_bank(py, move |bank| {
            bank.check_text("text", &data)?;
            bank.get(id, None)?;
            bank.update(&read(&model), id, None, &data)
        })?;
        to_python(py, &mem0::updated(id, event.event))
    }

    /// Deletes one memory: `{"message", "id"}`.
    fn delete<'py>(&self, py: Python<'py>, memory_id: &str) -> PyResult<Bound<'py, PyAny>> {
        let id = id(memory_id)?;
        self.with_bank(py, move |bank| bank.delete(id, None))?;
        to_python(py, &mem0::deleted(id))
    }

    /// Deletes every memory of a scope: `{"message", "deleted"}`.
    #[pyo3(signature = (user_id = None, agent_id = None, run_id = None))]
    fn delete_all<'py>(
        &self,
        py: Python<'py>,
        user_id: Option<String>,
        agent_id: Option<String>,
        run_id: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let scope = required_scope(user_id, agent_id, run_id)?;
        let n = self.with_bank(py, move |bank| bank.delete_all(&scope))?;
        to_python(py, &mem0::deleted_all(n))
    }

    /// A memory's history, oldest first: `{"results": [{"memory_id", "event", "old_memory",
    /// "new_memory", "created_at"}, ...]}`.
    fn history<'py>(&self, py: Python<'py>, memory_id: &str) -> PyResult<Bound<'py, PyAny>> {
        let id = id(memory_id)?;
        let rows = self.with_bank(py, move |bank| bank.history(id, None))?;
        to_python(py, &mem0::history_results(&rows))
    }

    /// Deletes every memory of every scope and all history: `{"message"}`.
    fn reset<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.with_bank(py, |bank| bank.reset())?;
        to_python(py, &mem0::reset())
    }

    /// Where the bank is (a file, or a URL without its password).
    #[getter]
    fn location(&self, py: Python<'_>) -> PyResult<String> {
        self.with_bank(py, |bank| Ok(bank.location()))
    }
}
