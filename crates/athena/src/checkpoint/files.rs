//! The safetensors files of a checkpoint: one `model.safetensors`, or shards listed by
//! `model.safetensors.index.json`. Files are memory-mapped and validated by the `safetensors`
//! crate when opened; errors name the file and, where there is one, the tensor (REFERENCE §6).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::safetensors::Load;
use candle_core::{Device, Tensor};
use memmap2::Mmap;
use safetensors::tensor::{Metadata, SafeTensorError, TensorView};
use safetensors::Dtype;
use serde::Deserialize;

use crate::error::{Error, Result};

/// The name of a single-file checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The name of a sharded checkpoint's index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// One memory-mapped, validated safetensors file.
struct Shard {
    path: PathBuf,
    mmap: Mmap,
    header_len: usize,
    metadata: Metadata,
}

/// All tensors of a checkpoint, by name.
pub struct WeightFiles {
    shards: Vec<Shard>,
    by_name: BTreeMap<String, usize>,
}

#[derive(Deserialize)]
struct IndexFile {
    weight_map: BTreeMap<String, String>,
}

impl WeightFiles {
    /// Opens the checkpoint in `dir`: the sharded index if present, else `model.safetensors`.
    pub fn open(dir: &Path) -> Result<Self> {
        let index = dir.join(INDEX_FILE);
        if index.is_file() {
            return Self::open_index(dir, &index);
        }
        let single = dir.join(SINGLE_FILE);
        if single.is_file() {
            return Self::open_files(&[single]);
        }
        Err(Error::checkpoint(
            dir,
            format!("no `{SINGLE_FILE}` or `{INDEX_FILE}` in the model directory"),
        ))
    }

    /// Opens the given files as one checkpoint; a tensor present in two files is an error.
    pub fn open_files(paths: &[PathBuf]) -> Result<Self> {
        let mut shards = Vec::with_capacity(paths.len());
        let mut by_name = BTreeMap::new();
        for path in paths {
            let shard = Shard::open(path)?;
            let i = shards.len();
            for name in shard.metadata.offset_keys() {
                if let Some(prev) = by_name.insert(name.clone(), i) {
                    let prev: &Shard = &shards[prev];
                    return Err(Error::checkpoint(
                        path,
                        format!("tensor `{name}` is also in {}", prev.path.display()),
                    ));
                }
            }
            shards.push(shard);
        }
        Ok(WeightFiles { shards, by_name })
    }

    fn open_index(dir: &Path, index: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(index).map_err(|source| Error::Io {
            path: index.to_path_buf(),
            source,
        })?;
        let parsed: IndexFile = serde_json::from_str(&text)
            .map_err(|e| Error::checkpoint(index, format!("not a valid index: {e}")))?;
        let root = dir.canonicalize().map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        // Each shard once, in a stable order; every path must stay inside the model directory.
        let mut files: Vec<String> = parsed.weight_map.values().cloned().collect();
        files.sort();
        files.dedup();
        let mut paths = Vec::with_capacity(files.len());
        for file in &files {
            let rel = Path::new(file);
            let escapes = rel.is_absolute()
                || rel
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)));
            if escapes {
                return Err(Error::checkpoint(
                    index,
                    format!("shard path `{file}` leaves the model directory"),
                ));
            }
            let path = dir.join(rel);
            let real = path.canonicalize().map_err(|_| {
                Error::checkpoint(index, format!("shard `{file}` is missing"))
            })?;
            if !real.starts_with(&root) {
                return Err(Error::checkpoint(
                    index,
                    format!("shard `{file}` resolves outside the model directory (symlink?)"),
                ));
            }
            paths.push(path);
        }
        let files = Self::open_files(&paths)?;
        // The index and the shards must agree tensor by tensor.
        for (name, file) in &parsed.weight_map {
            match files.by_name.get(name) {
                None => {
                    return Err(Error::checkpoint(
                        index,
                        format!("tensor `{name}` is listed for `{file}` but not found in it"),
                    ))
                }
                Some(&i) if files.shards[i].path != dir.join(file) => {
                    return Err(Error::checkpoint(
                        index,
                        format!(
                            "tensor `{name}` is listed for `{file}` but stored in {}",
                            files.shards[i].path.display()
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        if let Some((name, &i)) = files
            .by_name
            .iter()
            .find(|(name, _)| !parsed.weight_map.contains_key(*name))
        {
            return Err(Error::checkpoint(
                index,
                format!(
                    "tensor `{name}` in {} is not listed in the index",
                    files.shards[i].path.display()
                ),
            ));
        }
        Ok(files)
    }

    /// Names of all tensors, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Whether the checkpoint holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The shape of `name`, or an error naming the missing tensor.
    pub fn shape(&self, name: &str) -> Result<&[usize]> {
        let (shard, info) = self.info(name)?;
        let _ = shard;
        Ok(&info.shape)
    }

    /// The stored dtype of `name`.
    pub fn dtype(&self, name: &str) -> Result<Dtype> {
        Ok(self.info(name)?.1.dtype)
    }

    fn info(&self, name: &str) -> Result<(&Shard, &safetensors::tensor::TensorInfo)> {
        let shard = self
            .by_name
            .get(name)
            .map(|&i| &self.shards[i])
            .ok_or_else(|| Error::tensor(name, "missing from the checkpoint"))?;
        let info = shard
            .metadata
            .info(name)
            .ok_or_else(|| Error::tensor(name, "missing from the checkpoint"))?;
        Ok((shard, info))
    }

    /// Loads `name` onto `device` in its stored dtype.
    pub fn load(&self, name: &str, device: &Device) -> Result<Tensor> {
        let (shard, info) = self.info(name)?;
        let start = shard.header_len + 8 + info.data_offsets.0;
        let end = shard.header_len + 8 + info.data_offsets.1;
        let bytes = shard.mmap.get(start..end).ok_or_else(|| {
            Error::checkpoint(&shard.path, format!("tensor `{name}`: data past the end of the file"))
        })?;
        let view = TensorView::new(info.dtype, info.shape.clone(), bytes).map_err(|e| {
            Error::checkpoint(&shard.path, format!("tensor `{name}`: {e}"))
        })?;
        view.load(device).map_err(|e| {
            Error::checkpoint(&shard.path, format!("tensor `{name}`: {e}"))
        })
    }

    /// The files backing the checkpoint.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.shards.iter().map(|s| s.path.as_path())
    }

    /// Total bytes of tensor data.
    pub fn data_bytes(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| (s.mmap.len() - s.header_len - 8) as u64)
            .sum()
    }
}

impl Shard {
    fn open(path: &Path) -> Result<Self> {
        let io = |source| Error::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the mapping is read-only and athena never writes to checkpoint files while
        // they are mapped; a concurrent external writer is outside the contract, as in every
        // mmap-based loader.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        let (header_len, metadata) = safetensors::SafeTensors::read_metadata(&mmap)
            .map_err(|e| Error::checkpoint(path, describe(&e, &mmap)))?;
        Ok(Shard { path: path.to_path_buf(), mmap, header_len, metadata })
    }
}

/// The `safetensors` crate's verdict, made specific: which tensor is at fault where its error
/// does not say.
fn describe(err: &SafeTensorError, bytes: &[u8]) -> String {
    use SafeTensorError::*;
    match err {
        HeaderTooSmall => "not a safetensors file: shorter than its 8-byte header length".into(),
        HeaderTooLarge => "header length is larger than 100 MB".into(),
        InvalidHeaderLength => "header length runs past the end of the file".into(),
        InvalidHeader(e) => format!("header is not UTF-8: {e}"),
        InvalidHeaderDeserialization(e) => format!("header is not valid safetensors JSON: {e}"),
        InvalidOffset(name) => {
            format!("tensor `{name}`: data offsets are inverted, overlapping or leave a gap")
        }
        MetadataIncompleteBuffer => {
            "tensor data does not end at the end of the file (truncated or padded)".into()
        }
        TensorInvalidInfo | ValidationOverflow | MisalignedSlice => match culprit(bytes) {
            Some((name, why)) => format!("tensor `{name}`: {why}"),
            None => format!("invalid tensor metadata: {err}"),
        },
        other => other.to_string(),
    }
}

#[derive(Deserialize)]
struct RawInfo {
    shape: Vec<u64>,
    dtype: Dtype,
    data_offsets: (u64, u64),
}

/// Finds the first tensor whose shape overflows or whose byte length disagrees with its
/// shape and dtype. Only runs after the crate refused the header, to name the tensor.
fn culprit(bytes: &[u8]) -> Option<(String, String)> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header = std::str::from_utf8(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    let map: HashMap<String, serde_json::Value> = serde_json::from_str(header).ok()?;
    let mut infos: Vec<(String, RawInfo)> = map
        .into_iter()
        .filter(|(k, _)| k != "__metadata__")
        .filter_map(|(k, v)| Some((k, serde_json::from_value(v).ok()?)))
        .collect();
    infos.sort_by_key(|(_, i)| i.data_offsets);
    for (name, info) in infos {
        let elems = info.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let Some(bits) = elems.and_then(|e| e.checked_mul(info.dtype.bitsize() as u64)) else {
            return Some((name, format!("shape {:?} overflows", info.shape)));
        };
        let len = info.data_offsets.1.saturating_sub(info.data_offsets.0);
        if bits % 8 != 0 || bits / 8 != len {
            return Some((
                name,
                format!(
                    "byte length {len} does not match shape {:?} × {:?}",
                    info.shape, info.dtype
                ),
            ));
        }
    }
    None
}
