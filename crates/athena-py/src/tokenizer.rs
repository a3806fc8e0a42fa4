//! `Tokenizer`: the loaded model's tokenizer (text to ids and back).

use pyo3::prelude::*;

use crate::errors::model_error;
use crate::shared::{read, SharedModel};

/// The tokenizer of a loaded `OLMoEModel`.
#[pyclass(name = "Tokenizer", module = "athena", frozen)]
pub struct PyTokenizer {
    model: SharedModel,
}

impl PyTokenizer {
    /// The tokenizer of `model`, which must be loaded.
    pub fn of(model: SharedModel) -> PyResult<Self> {
        read(&model).text_tokenizer().map_err(model_error)?;
        Ok(PyTokenizer { model })
    }
}

#[pymethods]
impl PyTokenizer {
    /// The ids of `text`, with the model's special tokens (BOS) unless told otherwise.
    #[pyo3(signature = (text, add_special_tokens = true))]
    fn encode(&self, py: Python<'_>, text: String, add_special_tokens: bool) -> PyResult<Vec<u32>> {
        let model = self.model.clone();
        py.detach(move || {
            let m = read(&model);
            let tokenizer = m.text_tokenizer()?;
            tokenizer.encode(&text, add_special_tokens)
        })
        .map_err(model_error)
    }

    /// The text of `ids`, special tokens left out unless told otherwise.
    #[pyo3(signature = (ids, skip_special_tokens = true))]
    fn decode(&self, py: Python<'_>, ids: Vec<u32>, skip_special_tokens: bool) -> PyResult<String> {
        let model = self.model.clone();
        py.detach(move || {
            let m = read(&model);
            let tokenizer = m.text_tokenizer()?;
            tokenizer.decode(&ids, skip_special_tokens)
        })
        .map_err(model_error)
    }
}
