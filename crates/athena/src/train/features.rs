//! [`FeatureStore`]: the backbone's pooled hidden state of every text the action head is
//! trained or evaluated on, encoded once, on first use, and kept in a cache file on disk so
//! that later epochs and later runs never run the backbone again.
//!
//! # The cache file
//!
//! `features-<key>.safetensors` in the cache directory, where `<key>` is a hash of the
//! model's identity ([`model_identity`]: the checkpoint's files, dtype, quantization, LoRA,
//! device and pooling). It holds one f32 tensor `vectors` `[N, D]` and, in the metadata, the
//! identity in full and the `N` texts as a JSON array, row by row. It is rewritten atomically
//! ([`crate::io::write_atomic`]) whenever new texts have been encoded and [`FeatureStore::flush`]
//! is called; a file whose identity differs from the model's is refused.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::models::olmoe::OlmoeModel;
use crate::train::data::Example;
use crate::train::head_grad::Rows;

/// Texts encoded per call to [`OlmoeModel::encode`].
pub const DEFAULT_ENCODE_BATCH: usize = 16;

/// Bytes of each end of each weights file that go into [`model_identity`].
const FINGERPRINT_BYTES: u64 = 1 << 20;

/// 64-bit FNV-1a: a small, stable hash for cache keys (not for security).
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }
}

/// What makes two encodings of the same text equal: the model's checkpoint (its
/// `config.json`, and the name, size, first and last MiB of each `*.safetensors` file), the
/// compute dtype, quantization, LoRA adapter, device and pooling. A string, readable in the
/// cache file; its hash names the file.
pub fn model_identity(model: &OlmoeModel) -> Result<String> {
    let c = model.config();
    let dir = crate::checkpoint::hub::resolve(&c.model_name)?;
    let mut h = Fnv::new();
    let config = dir.join("config.json");
    h.write(&std::fs::read(&config).map_err(|source| Error::Io {
        path: config.clone(),
        source,
    })?);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(io(&dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    for path in files {
        let mut file = std::fs::File::open(&path).map_err(io(&path))?;
        let len = file.metadata().map_err(io(&path))?.len();
        h.write(path.file_name().map_or(&[][..], |n| n.as_encoded_bytes()));
        h.write(&len.to_le_bytes());
        let mut head = Vec::new();
        (&mut file)
            .take(FINGERPRINT_BYTES)
            .read_to_end(&mut head)
            .map_err(io(&path))?;
        h.write(&head);
        if len > 2 * FINGERPRINT_BYTES {
            use std::io::{Seek, SeekFrom};
            file.seek(SeekFrom::Start(len - FINGERPRINT_BYTES))
                .map_err(io(&path))?;
            let mut tail = Vec::new();
            file.read_to_end(&mut tail).map_err(io(&path))?;
            h.write(&tail);
        }
    }
    Ok(format!(
        "model={} weights={:016x} dtype={:?} quantization={:?} lora={:?} merge_lora={} \
         device={:?} pooling={:?} backend={:?}",
        c.model_name,
        h.0,
        c.dtype,
        c.quantization,
        c.lora_path,
        c.merge_lora,
        c.device,
        c.pooling,
        model.backend(),
    ))
}

/// Encodes texts into vectors, all of one width.
pub type Encoder<'a> = Box<dyn FnMut(&[&str]) -> Result<Vec<Vec<f32>>> + 'a>;

/// The on-disk half of a [`FeatureStore`].
struct CacheFile {
    path: PathBuf,
    identity: String,
}

/// Counters of a [`FeatureStore`], for the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct FeatureStats {
    /// Texts read from the cache file when the store was opened.
    pub from_cache: usize,
    /// Texts encoded by the backbone since.
    pub encoded: usize,
    /// Seconds spent encoding.
    pub encode_seconds: f64,
}

/// Pooled hidden states by text, all of one width, encoded on first use.
pub struct FeatureStore<'a> {
    vectors: HashMap<String, Vec<f32>>,
    /// Texts in the order they were added (the cache file's row order).
    order: Vec<String>,
    dim: usize,
    device: Device,
    encoder: Option<Encoder<'a>>,
    batch: usize,
    cache: Option<CacheFile>,
    dirty: bool,
    stats: FeatureStats,
}

impl std::fmt::Debug for FeatureStore<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureStore")
            .field("texts", &self.order.len())
            .field("dim", &self.dim)
            .field("cache", &self.cache.as_ref().map(|c| &c.path))
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<'a> FeatureStore<'a> {
    /// A store that encodes with `model` (`batch` texts per call) and, with a `cache_dir`,
    /// reads and writes the cache file of the model's [`model_identity`] there.
    pub fn for_model(
        model: &'a OlmoeModel,
        cache_dir: Option<&Path>,
        batch: usize,
        device: &Device,
    ) -> Result<Self> {
        let encoder: Encoder<'a> = Box::new(move |texts: &[&str]| model.encode(texts));
        let mut store = Self::with_encoder(encoder, batch, device)?;
        if let Some(dir) = cache_dir {
            let identity = model_identity(model)?;
            let mut h = Fnv::new();
            h.write(identity.as_bytes());
            let path = dir.join(format!("features-{:016x}.safetensors", h.0));
            store.open_cache(CacheFile { path, identity })?;
        }
        Ok(store)
    }

    /// A store over an encoder and no cache file.
    pub fn with_encoder(encoder: Encoder<'a>, batch: usize, device: &Device) -> Result<Self> {
        if batch == 0 {
            return Err(Error::invalid("batch", "must be >= 1"));
        }
        Ok(Self {
            vectors: HashMap::new(),
            order: Vec::new(),
            dim: 0,
            device: device.clone(),
            encoder: Some(encoder),
            batch,
            cache: None,
            dirty: false,
            stats: FeatureStats::default(),
        })
    }

    /// A fixed store over given vectors (no encoder: any other text is an error).
    pub fn from_vectors(vectors: HashMap<String, Vec<f32>>, device: &Device) -> Result<Self> {
        let mut store = Self {
            vectors: HashMap::new(),
            order: Vec::new(),
            dim: 0,
            device: device.clone(),
            encoder: None,
            batch: DEFAULT_ENCODE_BATCH,
            cache: None,
            dirty: false,
            stats: FeatureStats::default(),
        };
        let mut texts: Vec<_> = vectors.into_iter().collect();
        texts.sort_by(|a, b| a.0.cmp(&b.0));
        for (text, v) in texts {
            store.insert(text, v)?;
        }
        store.dirty = false;
        Ok(store)
    }

    fn insert(&mut self, text: String, v: Vec<f32>) -> Result<()> {
        if self.dim == 0 {
            self.dim = v.len();
        }
        if v.is_empty() || v.len() != self.dim {
            return Err(Error::invalid(
                "vectors",
                format!("`{text}` has width {}, expected {}", v.len(), self.dim),
            ));
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(Error::invalid(
                "vectors",
                format!("`{text}` has a value that is not finite"),
            ));
        }
        if self.vectors.insert(text.clone(), v).is_none() {
            self.order.push(text);
        }
        self.dirty = true;
        Ok(())
    }

    fn open_cache(&mut self, cache: CacheFile) -> Result<()> {
        let path = &cache.path;
        match std::fs::read(path) {
            Ok(bytes) => {
                let bad = |msg: String| Error::checkpoint(path, msg);
                let st = SafeTensors::deserialize(&bytes)
                    .map_err(|e| bad(format!("not a feature cache: {e}")))?;
                let (_, meta) = SafeTensors::read_metadata(&bytes)
                    .map_err(|e| bad(format!("not a feature cache: {e}")))?;
                let meta = meta.metadata().clone().unwrap_or_default();
                let identity = meta.get("identity").cloned().unwrap_or_default();
                if identity != cache.identity {
                    return Err(bad(format!(
                        "written for another model or setting ({identity}); this one is \
                         {}. Remove the file or use another cache directory",
                        cache.identity
                    )));
                }
                let texts: Vec<String> = meta
                    .get("texts")
                    .ok_or_else(|| bad("no `texts` in the metadata".into()))
                    .and_then(|t| {
                        serde_json::from_str(t).map_err(|e| bad(format!("`texts`: {e}")))
                    })?;
                let view = st
                    .tensor("vectors")
                    .map_err(|_| bad("tensor `vectors` is missing".into()))?;
                let (n, d) = match view.shape() {
                    &[n, d] if view.dtype() == Dtype::F32 && n == texts.len() && d > 0 => (n, d),
                    shape => {
                        return Err(bad(format!(
                            "tensor `vectors` is {:?} {shape:?}, expected F32 [{}, D]",
                            view.dtype(),
                            texts.len()
                        )))
                    }
                };
                let values: Vec<f32> = view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                for (text, row) in texts.into_iter().zip(values.chunks_exact(d)) {
                    self.insert(text, row.to_vec())
                        .map_err(|e| bad(e.to_string()))?;
                }
                self.stats.from_cache = n;
                self.dirty = false;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Io {
                    path: path.clone(),
                    source,
                })
            }
        }
        self.cache = Some(cache);
        Ok(())
    }

    /// Writes the cache file, atomically, if texts were encoded since it was last written.
    pub fn flush(&mut self) -> Result<()> {
        let Some(cache) = &self.cache else {
            return Ok(());
        };
        if !self.dirty {
            return Ok(());
        }
        let path = &cache.path;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mut bytes = Vec::with_capacity(self.order.len() * self.dim * 4);
        for text in &self.order {
            for v in &self.vectors[text] {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        let texts = serde_json::to_string(&self.order)
            .map_err(|e| Error::checkpoint(path, format!("cannot serialise: {e}")))?;
        let metadata = HashMap::from([
            ("identity".to_string(), cache.identity.clone()),
            ("texts".to_string(), texts),
        ]);
        let view = TensorView::new(Dtype::F32, vec![self.order.len(), self.dim], &bytes)
            .and_then(|v| safetensors::serialize([("vectors", v)], Some(metadata)))
            .map_err(|e| Error::checkpoint(path, format!("cannot serialise: {e}")))?;
        crate::io::write_atomic(path, |tmp| {
            std::fs::write(tmp, &view).map_err(|source| Error::Io {
                path: tmp.to_path_buf(),
                source,
            })
        })?;
        self.dirty = false;
        Ok(())
    }

    /// Encodes, `batch` at a time and in order of first appearance, those of `texts` not
    /// held yet; returns how many were encoded.
    pub fn ensure<'t>(&mut self, texts: impl IntoIterator<Item = &'t str>) -> Result<usize> {
        let mut seen = HashSet::new();
        let missing: Vec<&str> = texts
            .into_iter()
            .filter(|t| !self.vectors.contains_key(*t) && seen.insert(*t))
            .collect();
        if missing.is_empty() {
            return Ok(0);
        }
        let Some(encoder) = self.encoder.as_mut() else {
            return Err(Error::invalid(
                "texts",
                format!("`{}` was not encoded", missing[0]),
            ));
        };
        let start = Instant::now();
        let mut encoded = Vec::with_capacity(missing.len());
        for chunk in missing.chunks(self.batch) {
            let vectors = encoder(chunk)?;
            if vectors.len() != chunk.len() {
                return Err(Error::invalid(
                    "texts",
                    format!("{} texts gave {} vectors", chunk.len(), vectors.len()),
                ));
            }
            encoded.extend(chunk.iter().zip(vectors));
        }
        for (text, v) in encoded {
            self.insert(text.to_string(), v)?;
        }
        self.stats.encoded += missing.len();
        self.stats.encode_seconds += start.elapsed().as_secs_f64();
        Ok(missing.len())
    }

    /// [`Self::ensure`] for the facts and memory texts of `examples`.
    pub fn ensure_examples<'e>(
        &mut self,
        examples: impl IntoIterator<Item = &'e Example>,
    ) -> Result<usize> {
        let texts: Vec<&str> = examples
            .into_iter()
            .flat_map(|ex| {
                std::iter::once(ex.fact.as_str()).chain(ex.memories.iter().map(|m| m.text.as_str()))
            })
            .collect();
        self.ensure(texts)
    }

    /// Width of every vector (0 before the first one).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of distinct texts held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no text is held.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The counters.
    pub fn stats(&self) -> FeatureStats {
        self.stats
    }

    /// The cache file, if any.
    pub fn cache_path(&self) -> Option<&Path> {
        self.cache.as_ref().map(|c| c.path.as_path())
    }

    /// The vector of one text.
    pub fn vector(&self, text: &str) -> Result<&[f32]> {
        self.vectors
            .get(text)
            .map(Vec::as_slice)
            .ok_or_else(|| Error::invalid("texts", format!("`{text}` was not encoded")))
    }

    /// The inputs of a training pass ([`crate::train::head_grad`]) for `examples` (whose
    /// texts must be held): each fact, and each example's memories without padding.
    pub(crate) fn rows(&self, examples: &[&Example]) -> Result<Rows> {
        let d = self.dim;
        let total: usize = examples.iter().map(|e| e.memories.len()).sum();
        let mut rows = Rows {
            dim: d,
            facts: Vec::with_capacity(examples.len() * d),
            memories: Vec::with_capacity(total * d),
            counts: Vec::with_capacity(examples.len()),
        };
        for ex in examples {
            rows.facts.extend_from_slice(self.vector(&ex.fact)?);
            for mem in &ex.memories {
                rows.memories.extend_from_slice(self.vector(&mem.text)?);
            }
            rows.counts.push(ex.memories.len());
        }
        Ok(rows)
    }

    /// The inputs of [`crate::models::action_head::MemoryActionHead::batch_scores`] for
    /// `examples` (whose texts must be held): facts `[B, D]`, memories `[B, M, D]` zero-padded
    /// to the longest list, and each example's number of memories.
    pub fn batch(&self, examples: &[&Example]) -> Result<(Tensor, Tensor, Vec<usize>)> {
        let (b, d) = (examples.len(), self.dim);
        let m = examples.iter().map(|e| e.memories.len()).max().unwrap_or(0);
        let mut facts = Vec::with_capacity(b * d);
        let mut memories = vec![0f32; b * m * d];
        let mut counts = Vec::with_capacity(b);
        for (i, ex) in examples.iter().enumerate() {
            facts.extend_from_slice(self.vector(&ex.fact)?);
            for (j, mem) in ex.memories.iter().enumerate() {
                let at = (i * m + j) * d;
                memories[at..at + d].copy_from_slice(self.vector(&mem.text)?);
            }
            counts.push(ex.memories.len());
        }
        Ok((
            Tensor::from_vec(facts, (b, d), &self.device)?,
            Tensor::from_vec(memories, (b, m, d), &self.device)?,
            counts,
        ))
    }
}
