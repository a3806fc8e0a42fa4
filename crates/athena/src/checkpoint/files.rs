//! The safetensors files of a checkpoint: one `model.safetensors`, or shards listed by
//! `model.safetensors.index.json`. Files are memory-mapped and validated by the `safetensors`
//! crate when opened; errors name the file and, where there is one, the tensor.

use std::collections::BTreeMap;
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
    /// What errors about the whole checkpoint name: the index, the single file, or the
    /// directory of several files.
    origin: PathBuf,
}

#[derive(Deserialize)]
struct IndexFile {
    weight_map: BTreeMap<String, String>,
}

/// Reads a sharded checkpoint's index: tensor name → shard file.
fn read_index(index: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(index).map_err(|source| Error::Io {
        path: index.to_path_buf(),
        source,
    })?;
    let parsed: IndexFile = serde_json::from_str(&text)
        .map_err(|e| Error::checkpoint(index, format!("not a valid index: {e}")))?;
    Ok(parsed.weight_map)
}

/// The shard files a sharded checkpoint's index names, each once, sorted.
pub(crate) fn shard_names(index: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = read_index(index)?.into_values().collect();
    names.sort();
    names.dedup();
    Ok(names)
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
        let origin = match paths {
            [one] => one.clone(),
            _ => paths
                .first()
                .and_then(|p| p.parent())
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        };
        Ok(WeightFiles {
            shards,
            by_name,
            origin,
        })
    }

    fn open_index(dir: &Path, index: &Path) -> Result<Self> {
        let weight_map = read_index(index)?;
        let root = dir.canonicalize().map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        // In the HF cache a snapshot's files are symlinks into the repository's `blobs/`
        // (`models--owner--name/snapshots/<rev>/x -> ../../blobs/<sha>`): there the boundary
        // is the repository folder, elsewhere the model directory itself.
        let repo = root
            .parent()
            .filter(|s| s.file_name() == Some("snapshots".as_ref()))
            .and_then(Path::parent)
            .filter(|r| {
                r.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("models--"))
            });
        let bound = repo.unwrap_or(&root).to_path_buf();
        // Each shard once, in a stable order; every path must stay inside the model directory
        // and name a regular file.
        let mut shards: BTreeMap<&str, PathBuf> = BTreeMap::new();
        for (name, file) in &weight_map {
            if shards.contains_key(file.as_str()) {
                continue;
            }
            let refuse = |why: &str| {
                Error::checkpoint(index, format!("shard `{file}` (for tensor `{name}`) {why}"))
            };
            let rel = Path::new(file);
            let escapes = rel.is_absolute()
                || rel.components().any(|c| {
                    !matches!(
                        c,
                        std::path::Component::Normal(_) | std::path::Component::CurDir
                    )
                });
            if escapes {
                return Err(refuse("leaves the model directory"));
            }
            let path = dir.join(rel);
            let real = path.canonicalize().map_err(|_| refuse("is missing"))?;
            if !real.starts_with(&bound) {
                return Err(refuse("resolves outside the model directory (symlink?)"));
            }
            if !real.is_file() {
                return Err(refuse("is not a regular file"));
            }
            shards.insert(file, path);
        }
        let paths: Vec<PathBuf> = shards.into_values().collect();
        let mut files = Self::open_files(&paths)?;
        files.origin = index.to_path_buf();
        // The index and the shards must agree tensor by tensor.
        for (name, file) in &weight_map {
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
            .find(|(name, _)| !weight_map.contains_key(*name))
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

    /// The index or file that lists the checkpoint's tensors, for errors about the whole.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// The file that holds `name`.
    pub fn path_of(&self, name: &str) -> Option<&Path> {
        self.by_name
            .get(name)
            .map(|&i| self.shards[i].path.as_path())
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
        let missing = || Error::tensor(name, format!("missing from {}", self.origin.display()));
        let shard = self
            .by_name
            .get(name)
            .map(|&i| &self.shards[i])
            .ok_or_else(missing)?;
        let info = shard.metadata.info(name).ok_or_else(missing)?;
        Ok((shard, info))
    }

    /// Loads `name` onto `device` in its stored dtype.
    pub fn load(&self, name: &str, device: &Device) -> Result<Tensor> {
        let (shard, info) = self.info(name)?;
        let start = shard.header_len + 8 + info.data_offsets.0;
        let end = shard.header_len + 8 + info.data_offsets.1;
        let bytes = shard.mmap.get(start..end).ok_or_else(|| {
            Error::checkpoint(
                &shard.path,
                format!("tensor `{name}`: data past the end of the file"),
            )
        })?;
        let view = TensorView::new(info.dtype, info.shape.clone(), bytes)
            .map_err(|e| Error::checkpoint(&shard.path, format!("tensor `{name}`: {e}")))?;
        let tensor = view
            .load(device)
            .map_err(|e| Error::checkpoint(&shard.path, format!("tensor `{name}`: {e}")))?;
        shard.release(start, end - start);
        Ok(tensor)
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
    /// Drops the mapped pages of a range whose bytes were copied out, so a loaded checkpoint
    /// does not stay resident twice (once mapped, once converted).
    fn release(&self, offset: usize, len: usize) {
        #[cfg(unix)]
        {
            // SAFETY: the mapping is a read-only view of a file; no reference into this range
            // outlives `load` (the bytes were copied into the tensor), and dropped pages of a
            // file mapping are read back from the file if touched again.
            let _ = unsafe {
                self.mmap
                    .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
            };
        }
        #[cfg(not(unix))]
        let _ = (offset, len);
    }

    fn open(path: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the mapping is read-only and athena never writes to checkpoint files while
        // they are mapped; a concurrent external writer is outside the contract, as in every
        // mmap-based loader.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        let (header_len, metadata) = safetensors::SafeTensors::read_metadata(&mmap)
            .map_err(|e| Error::checkpoint(path, describe(&e, &mmap)))?;
        Ok(Shard {
            path: path.to_path_buf(),
            mmap,
            header_len,
            metadata,
        })
    }
}

/// The `safetensors` crate's verdict, made specific: which tensor is at fault and how, where
/// its error does not say.
fn describe(err: &SafeTensorError, bytes: &[u8]) -> String {
    use SafeTensorError::*;
    match err {
        HeaderTooSmall => format!(
            "not a safetensors file: {} bytes, shorter than the 8-byte header length",
            bytes.len()
        ),
        HeaderTooLarge => format!(
            "header length {} is larger than 100 MB",
            header_len(bytes).unwrap_or_default()
        ),
        InvalidHeaderLength => format!(
            "header length {} runs past the end of the file ({} bytes)",
            header_len(bytes).unwrap_or_default(),
            bytes.len()
        ),
        InvalidHeader(e) => format!("header is not UTF-8: {e}"),
        InvalidHeaderDeserialization(e) => match bad_entry(bytes) {
            Some((name, why)) => format!("tensor `{name}`: {why}"),
            None => format!("header is not valid safetensors JSON: {e}"),
        },
        InvalidOffset(_)
        | MetadataIncompleteBuffer
        | TensorInvalidInfo
        | ValidationOverflow
        | MisalignedSlice => match culprit(bytes) {
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

fn header_len(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?))
}

/// The header's tensor entries, by name; `None` when it is not a JSON object.
fn entries(bytes: &[u8]) -> Option<(usize, Vec<(String, serde_json::Value)>)> {
    let n = usize::try_from(header_len(bytes)?).ok()?;
    let header = std::str::from_utf8(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    let map: BTreeMap<String, serde_json::Value> = serde_json::from_str(header).ok()?;
    Some((
        n,
        map.into_iter()
            .filter(|(k, _)| k != "__metadata__")
            .collect(),
    ))
}

/// The first tensor entry that is not a valid safetensors entry (unknown dtype, missing field).
fn bad_entry(bytes: &[u8]) -> Option<(String, String)> {
    entries(bytes)?.1.into_iter().find_map(|(name, v)| {
        let e = serde_json::from_value::<RawInfo>(v).err()?;
        Some((name, format!("invalid header entry: {e}")))
    })
}

/// Walks the tensors in data order as the crate's validation does and says what is wrong with
/// the first one at fault: its offsets, its shape, its byte length, or where the data ends.
/// Only runs after the crate refused the header, to name the tensor.
fn culprit(bytes: &[u8]) -> Option<(String, String)> {
    let (n, entries) = entries(bytes)?;
    let data_len = (bytes.len() - 8 - n) as u64;
    let mut infos: Vec<(String, RawInfo)> = entries
        .into_iter()
        .filter_map(|(k, v)| Some((k, serde_json::from_value(v).ok()?)))
        .collect();
    infos.sort_by(|a, b| (a.1.data_offsets, &a.0).cmp(&(b.1.data_offsets, &b.0)));
    let mut end = 0u64;
    let mut prev: Option<&str> = None;
    for (name, info) in &infos {
        let (s, e) = info.data_offsets;
        let fault = |why: String| Some((name.clone(), why));
        if e < s {
            return fault(format!("data offsets [{s}, {e}] are inverted"));
        }
        if s != end {
            return fault(match prev {
                Some(p) if s < end => {
                    format!("data offsets [{s}, {e}] overlap tensor `{p}`, which ends at {end}")
                }
                Some(p) => format!(
                    "data offsets [{s}, {e}] leave a gap of {} bytes after tensor `{p}`",
                    s - end
                ),
                None => format!(
                    "data offsets [{s}, {e}] leave a gap of {s} bytes at the start of the data"
                ),
            });
        }
        let elems = info.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let Some(bits) = elems.and_then(|x| x.checked_mul(info.dtype.bitsize() as u64)) else {
            return fault(format!("shape {:?} overflows", info.shape));
        };
        if bits % 8 != 0 {
            return fault(format!(
                "shape {:?} of {:?} is not a whole number of bytes",
                info.shape, info.dtype
            ));
        }
        if bits / 8 != e - s {
            return fault(format!(
                "holds {} bytes but shape {:?} of {:?} needs {}",
                e - s,
                info.shape,
                info.dtype,
                bits / 8
            ));
        }
        end = e;
        prev = Some(name);
    }
    match prev {
        Some(p) if end > data_len => Some((
            p.to_string(),
            format!("data ends at byte {end}, but the file holds only {data_len} bytes of data (truncated?)"),
        )),
        Some(p) if end < data_len => Some((
            p.to_string(),
            format!(
                "{} bytes of data follow this last tensor (padded or corrupt file)",
                data_len - end
            ),
        )),
        _ => None,
    }
}
