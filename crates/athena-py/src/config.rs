//! `OLMoEConfig`: athena's [`OlmoeConfig`] with the agent's Python names. Keyword arguments
//! are the fields of `OlmoeConfig` (TOML/JSON spelling), checked by the same deserializer and
//! [`OlmoeConfig::validate`], so an unknown field or a bad value is refused as a file would be.

use std::path::PathBuf;

use athena::config::{OlmoeConfig, Quantization};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyType};
use serde_json::Value;

use crate::convert::{from_python, serialize_to_python, to_python};
use crate::errors::{model_error, user_error};

/// What the caller asks of `OLMoEModel`: the checkpoint, the backend preference (MLX first
/// when `use_mlx`), quantization, LoRA, device, dtype and the memory action head.
#[pyclass(name = "OLMoEConfig", module = "athena", frozen)]
#[derive(Debug, Clone)]
pub struct PyOlmoeConfig {
    pub(crate) inner: OlmoeConfig,
}

impl PyOlmoeConfig {
    /// The configuration as JSON, fields in declaration order.
    fn json(&self) -> PyResult<Value> {
        serde_json::to_value(&self.inner).map_err(|e| user_error(e.to_string()))
    }

    /// One field as JSON.
    fn field(&self, name: &str) -> PyResult<Value> {
        Ok(self.json()?.get(name).cloned().unwrap_or(Value::Null))
    }
}

/// Builds a configuration from keyword arguments: `None` leaves a field at its default
/// (`quantization=None` is no quantization).
pub fn config_from_kwargs(kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<OlmoeConfig> {
    let mut fields = serde_json::Map::new();
    if let Some(kwargs) = kwargs {
        for (key, value) in kwargs.iter() {
            let key: String = key.extract()?;
            if value.is_none() {
                continue;
            }
            let value = if value.is_instance_of::<pyo3::types::PyString>()
                || value.is_instance_of::<pyo3::types::PyBool>()
                || value.is_instance_of::<pyo3::types::PyInt>()
                || value.is_instance_of::<pyo3::types::PyDict>()
            {
                from_python(&value)?
            } else {
                // Paths (os.PathLike) are given as their text.
                Value::String(value.str()?.to_string())
            };
            fields.insert(key, value);
        }
    }
    let config: OlmoeConfig =
        serde_json::from_value(Value::Object(fields)).map_err(|e| user_error(e.to_string()))?;
    config.validate().map_err(model_error)?;
    Ok(config)
}

#[pymethods]
impl PyOlmoeConfig {
    /// A configuration; every keyword is a field of athena's `OlmoeConfig` and defaults as
    /// documented there (`model_name` "allenai/OLMoE-1B-7B-0924-Instruct", `use_mlx` True,
    /// `device` "auto", `dtype` "f32", `quantization` None, ...).
    #[new]
    #[pyo3(signature = (model_name = None, **kwargs))]
    fn new(model_name: Option<String>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let mut inner = config_from_kwargs(kwargs)?;
        if let Some(name) = model_name {
            inner.model_name = name;
            inner.validate().map_err(model_error)?;
        }
        Ok(PyOlmoeConfig { inner })
    }

    /// Reads a `.toml` or `.json` configuration file.
    #[classmethod]
    fn from_file(_cls: &Bound<'_, PyType>, path: PathBuf) -> PyResult<Self> {
        let inner = OlmoeConfig::from_file(&path).map_err(model_error)?;
        Ok(PyOlmoeConfig { inner })
    }

    /// Hub id or local directory of the checkpoint.
    #[getter]
    fn model_name(&self) -> String {
        self.inner.model_name.clone()
    }

    /// Whether MLX is tried first.
    #[getter]
    fn use_mlx(&self) -> bool {
        self.inner.use_mlx
    }

    /// The checkpoint of the MLX path (None: `model_name`).
    #[getter]
    fn mlx_model_path(&self) -> Option<String> {
        self.inner.mlx_model_path.clone()
    }

    /// "8bit" or "4bit", or None for weights as stored.
    #[getter]
    fn quantization<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.inner.quantization {
            Quantization::None => Ok(py.None().into_bound(py)),
            q => serialize_to_python(py, &q),
        }
    }

    /// The LoRA adapter directory, or None.
    #[getter]
    fn lora_path(&self) -> Option<String> {
        self.inner
            .lora_path
            .as_ref()
            .map(|p| p.display().to_string())
    }

    /// Whether the adapter is merged into the weights.
    #[getter]
    fn merge_lora(&self) -> bool {
        self.inner.merge_lora
    }

    /// Whether quantized products run on int8 activations.
    #[getter]
    fn int8_activations(&self) -> bool {
        self.inner.int8_activations
    }

    /// "auto", "cpu", "cuda" or "metal".
    #[getter]
    fn device<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &self.field("device")?)
    }

    /// "f32", "bf16" or "f16".
    #[getter]
    fn dtype<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &self.field("dtype")?)
    }

    /// How `encode` pools hidden states.
    #[getter]
    fn pooling<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &self.field("pooling")?)
    }

    /// The most padded tokens one `encode` pass runs.
    #[getter]
    fn encode_batch_tokens(&self) -> usize {
        self.inner.encode_batch_tokens
    }

    /// The memory action head's configuration, as a dict.
    #[getter]
    fn action_head<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &self.field("action_head")?)
    }

    /// A trained head's directory, or None.
    #[getter]
    fn action_head_path(&self) -> Option<String> {
        self.inner
            .action_head_path
            .as_ref()
            .map(|p| p.display().to_string())
    }

    /// Every field, as a dict (the JSON form of the configuration).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &self.json()?)
    }

    /// The configuration as a constructor call with every field.
    fn __repr__(&self) -> PyResult<String> {
        let Value::Object(fields) = self.json()? else {
            return Ok("OLMoEConfig()".to_string());
        };
        let parts: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", python_literal(v)))
            .collect();
        Ok(format!("OLMoEConfig({})", parts.join(", ")))
    }

    /// Whether `other` is a configuration with the same fields.
    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyOlmoeConfig>()
            .is_ok_and(|o| o.get().inner == self.inner)
    }
}

/// A JSON value written as Python source.
fn python_literal(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::String(s) => format!("{s:?}").replace('"', "'"),
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(python_literal)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("'{k}': {}", python_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Number(n) => n.to_string(),
    }
}
