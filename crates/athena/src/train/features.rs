//! [`FeatureSet`]: the backbone's pooled hidden state of every text of a set of examples,
//! computed once so that the action head can be trained without running the backbone again.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::models::olmoe::OlmoeModel;
use crate::train::data::Example;

/// Texts encoded per call to [`OlmoeModel::encode`] by [`FeatureSet::build`].
pub const DEFAULT_ENCODE_BATCH: usize = 16;

/// Pooled hidden states by text, all of the same width.
#[derive(Debug, Clone)]
pub struct FeatureSet {
    vectors: HashMap<String, Vec<f32>>,
    dim: usize,
    device: Device,
}

impl FeatureSet {
    /// Encodes every distinct text (facts and memory texts) of `examples` once, `batch` texts
    /// per call to [`OlmoeModel::encode`], in order of first appearance.
    pub fn build(
        model: &OlmoeModel,
        examples: &[&[Example]],
        batch: usize,
        device: &Device,
    ) -> Result<Self> {
        if batch == 0 {
            return Err(Error::invalid("batch", "must be >= 1"));
        }
        let mut texts: Vec<&str> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for ex in examples.iter().flat_map(|set| set.iter()) {
            let all = std::iter::once(ex.fact.as_str())
                .chain(ex.memories.iter().map(|m| m.text.as_str()));
            for text in all {
                if seen.insert(text) {
                    texts.push(text);
                }
            }
        }
        let mut vectors = HashMap::with_capacity(texts.len());
        for chunk in texts.chunks(batch) {
            let encoded = model.encode(chunk)?;
            if encoded.len() != chunk.len() {
                return Err(Error::invalid(
                    "texts",
                    format!("{} texts gave {} vectors", chunk.len(), encoded.len()),
                ));
            }
            for (text, v) in chunk.iter().zip(encoded) {
                vectors.insert((*text).to_string(), v);
            }
        }
        Self::from_vectors(vectors, device)
    }

    /// A set over given vectors; they must be non-empty, of one width and finite.
    pub fn from_vectors(vectors: HashMap<String, Vec<f32>>, device: &Device) -> Result<Self> {
        let dim = vectors.values().next().map_or(0, Vec::len);
        if dim == 0 {
            return Err(Error::invalid(
                "vectors",
                "no vectors, or vectors of width 0",
            ));
        }
        for (text, v) in &vectors {
            if v.len() != dim {
                return Err(Error::invalid(
                    "vectors",
                    format!("`{text}` has width {}, others {dim}", v.len()),
                ));
            }
            if v.iter().any(|x| !x.is_finite()) {
                return Err(Error::invalid(
                    "vectors",
                    format!("`{text}` has a value that is not finite"),
                ));
            }
        }
        Ok(Self {
            vectors,
            dim,
            device: device.clone(),
        })
    }

    /// Width of every vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of distinct texts.
    pub fn len(&self) -> usize {
        self.vectors.len()
    }

    /// Whether there are no texts (never, for a built set).
    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }

    /// The vector of one text.
    pub fn vector(&self, text: &str) -> Result<&[f32]> {
        self.vectors
            .get(text)
            .map(Vec::as_slice)
            .ok_or_else(|| Error::invalid("texts", format!("`{text}` was not encoded")))
    }

    /// The fact's vector, `[D]`.
    pub fn fact(&self, ex: &Example) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            self.vector(&ex.fact)?,
            self.dim,
            &self.device,
        )?)
    }

    /// The memories' vectors, `[M, D]` (`M` may be 0).
    pub fn memories(&self, ex: &Example) -> Result<Tensor> {
        let mut flat = Vec::with_capacity(ex.memories.len() * self.dim);
        for m in &ex.memories {
            flat.extend_from_slice(self.vector(&m.text)?);
        }
        Ok(Tensor::from_vec(
            flat,
            (ex.memories.len(), self.dim),
            &self.device,
        )?)
    }
}
