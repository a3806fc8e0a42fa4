//! Sequence state: the KV cache of a batch of sequences, owned by a session and never by the
//! weights, so one loaded model serves many sessions.
//!
//! Sequences of different lengths are left-padded: column `c` of sequence `b` holds its token
//! at position `c - pad[b]`, and columns before `pad[b]` are masked for every query.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// Keys and values of one layer: one buffer [2, B, kv_heads, capacity, head_dim] (keys, then
/// values) of which the first `len` columns are filled. A step writes its columns in place; the
/// buffer grows (doubling) only when a step does not fit, so decoding neither copies the cache
/// nor allocates per step.
#[derive(Debug)]
pub(crate) struct LayerCache {
    kv: Tensor,
    len: usize,
}

impl LayerCache {
    /// Columns filled.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The buffer [2, B, kv_heads, capacity, head_dim], for kernels that write a step's
    /// columns into it (then [`Self::filled`]).
    #[cfg(feature = "cuda")]
    pub(crate) fn buffer(&self) -> &Tensor {
        &self.kv
    }

    /// Makes room in `cache` for `t` more columns of keys and values shaped `b` sequences ×
    /// `heads` × `head_dim` in `dtype` on `device`, moving what it holds into a larger buffer
    /// when it does not fit.
    pub(crate) fn reserve<'a>(
        cache: &'a mut Option<LayerCache>,
        (b, heads, t, d): (usize, usize, usize, usize),
        dtype: DType,
        device: &Device,
    ) -> Result<&'a mut LayerCache> {
        let len = cache.as_ref().map_or(0, |c| c.len);
        let needed = len + t;
        if cache
            .as_ref()
            .is_none_or(|c| c.kv.dim(3).is_ok_and(|cap| cap < needed))
        {
            let cap = needed.next_power_of_two().max(16);
            let grown = LayerCache {
                kv: Tensor::zeros((2, b, heads, cap, d), dtype, device)?,
                len,
            };
            if let Some(old) = cache.take() {
                if len > 0 {
                    grown
                        .kv
                        .slice_set(&old.kv.narrow(3, 0, len)?.contiguous()?, 3, 0)?;
                }
            }
            *cache = Some(grown);
        }
        cache
            .as_mut()
            .ok_or_else(|| Error::internal("session", "the layer cache is missing"))
    }

    /// Records that the next `t` columns were written and returns the keys and values of
    /// every column so far, [B, kv_heads, len, head_dim] each, as views of the buffer.
    pub(crate) fn filled(&mut self, t: usize) -> Result<(Tensor, Tensor)> {
        self.len += t;
        let (k, v) = (self.kv.get(0)?, self.kv.get(1)?);
        Ok((k.narrow(2, 0, self.len)?, v.narrow(2, 0, self.len)?))
    }

    /// Appends `k`, `v` [B, kv_heads, T, head_dim] to `cache` and returns the keys and values
    /// of every column so far, as views of the buffer.
    pub(crate) fn append(
        cache: &mut Option<LayerCache>,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let shape = k.dims4()?;
        let c = Self::reserve(cache, shape, k.dtype(), k.device())?;
        c.kv.get(0)?.slice_set(&k.contiguous()?, 2, c.len)?;
        c.kv.get(1)?.slice_set(&v.contiguous()?, 2, c.len)?;
        c.filled(shape.2)
    }
}

/// The state of a batch of sequences being run through the model (not `Clone`: a step writes
/// the cache in place).
#[derive(Debug)]
pub struct Session {
    pub(crate) layers: Vec<Option<LayerCache>>,
    pad: Vec<usize>,
    columns: usize,
    max_positions: usize,
}

impl Session {
    pub(crate) fn new(num_layers: usize, max_positions: usize) -> Self {
        Session {
            layers: (0..num_layers).map(|_| None).collect(),
            pad: vec![],
            columns: 0,
            max_positions,
        }
    }

    /// Number of sequences (0 before the first forward).
    pub fn batch_size(&self) -> usize {
        self.pad.len()
    }

    /// Tokens seen so far by sequence `b`.
    pub fn seq_len(&self, b: usize) -> usize {
        self.columns - self.pad.get(b).copied().unwrap_or(self.columns)
    }

    /// Cache columns so far (the longest sequence's length).
    pub fn columns(&self) -> usize {
        self.columns
    }

    /// Left padding of each sequence.
    pub fn padding(&self) -> &[usize] {
        &self.pad
    }

    /// Plans a step adding `tokens` to the session: the first step may give sequences of
    /// different lengths (they are left-padded); later steps give every sequence the same
    /// number of tokens. Returns the padded ids [B, T] row-major and the step's width T.
    pub(crate) fn plan(&mut self, tokens: &[Vec<u32>], pad_id: u32) -> Result<(Vec<u32>, usize)> {
        if tokens.is_empty() {
            return Err(Error::invalid(
                "tokens",
                "a step needs at least one sequence",
            ));
        }
        let width = tokens.iter().map(Vec::len).max().unwrap_or(0);
        if width == 0 {
            return Err(Error::invalid(
                "tokens",
                "every sequence of a step is empty",
            ));
        }
        if self.columns == 0 {
            self.pad = tokens.iter().map(|t| width - t.len()).collect();
        } else {
            if tokens.len() != self.pad.len() {
                return Err(Error::invalid(
                    "tokens",
                    format!(
                        "session has {} sequences, step gives {}",
                        self.pad.len(),
                        tokens.len()
                    ),
                ));
            }
            if tokens.iter().any(|t| t.len() != width) {
                return Err(Error::invalid(
                    "tokens",
                    "after the first step every sequence must get the same number of tokens",
                ));
            }
        }
        let longest = self.columns + width - self.pad.iter().min().copied().unwrap_or(0);
        if longest > self.max_positions {
            return Err(Error::invalid(
                "tokens",
                format!(
                    "sequence length {longest} exceeds the model's max_position_embeddings {}",
                    self.max_positions
                ),
            ));
        }
        let mut ids = Vec::with_capacity(tokens.len() * width);
        for t in tokens {
            ids.extend(std::iter::repeat_n(pad_id, width - t.len()));
            ids.extend_from_slice(t);
        }
        Ok((ids, width))
    }

    /// Positions [B, T] of the step's tokens (pad columns get position 0).
    pub(crate) fn positions(&self, width: usize) -> Vec<u32> {
        let mut pos = Vec::with_capacity(self.pad.len() * width);
        for &p in &self.pad {
            for c in self.columns..self.columns + width {
                pos.push(c.saturating_sub(p) as u32);
            }
        }
        pos
    }

    /// The additive attention mask [B, 1, T, columns + T]: 0 where a query may look, -inf
    /// elsewhere. A padding query looks at itself only, so its row stays finite. `None` when
    /// nothing needs masking (one sequence, no padding, one new token).
    pub(crate) fn mask(&self, width: usize) -> Option<(Vec<f32>, usize)> {
        let keys = self.columns + width;
        if width == 1 && self.pad.iter().all(|&p| p == 0) {
            return None;
        }
        let mut m = Vec::with_capacity(self.pad.len() * width * keys);
        for &p in &self.pad {
            for q in self.columns..self.columns + width {
                for k in 0..keys {
                    let visible = (k <= q && k >= p) || k == q;
                    m.push(if visible { 0.0 } else { f32::NEG_INFINITY });
                }
            }
        }
        Some((m, keys))
    }

    /// The position of the first of `t` tokens appended to a single-sequence session without
    /// padding (a fresh session becomes one), as a step on its own would give it; errors when
    /// they do not fit in the context or the session holds a padded batch.
    pub(crate) fn start_single(&mut self, t: usize) -> Result<usize> {
        if t == 0 {
            return Err(Error::invalid("tokens", "a sequence of a step is empty"));
        }
        if self.columns == 0 && self.pad.is_empty() {
            self.pad = vec![0];
        }
        if self.pad.len() != 1 || self.pad[0] != 0 {
            return Err(Error::invalid(
                "session",
                "only an unpadded single-sequence session can join a batched step",
            ));
        }
        if self.columns + t > self.max_positions {
            return Err(Error::invalid(
                "tokens",
                format!(
                    "sequence length {} exceeds the model's max_position_embeddings {}",
                    self.columns + t,
                    self.max_positions
                ),
            ));
        }
        Ok(self.columns)
    }

    /// Records that the step of `width` columns went through every layer.
    pub(crate) fn advance(&mut self, width: usize) {
        self.columns += width;
    }
}
