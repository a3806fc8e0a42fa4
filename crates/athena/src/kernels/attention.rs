//! Attention of one new token per sequence over its cached keys and values (decode):
//! `softmax(q·Kᵀ · scale) · V` per head, the heads in parallel on the kernel
//! [`pool`](super::pool). It reads the cache where it lies (rows of `head_dim` values, one per
//! position) instead of going through a general matrix product, whose fixed cost dominates
//! at one query row.
//!
//! Values are f32 or bf16 ([`Value`]). A bf16 model's attention rounds where the reference's
//! bf16 tensors do: the scores, the scores times the scale (itself a bf16), the softmax
//! (taken in f32) and the output; sums run in f32.

use half::bf16;

use super::float::{axpy, bf16_to_f32, dot, round_bf16};

/// An element type of the cache and the query.
pub trait Value: Copy + Send + Sync {
    /// `src` as f32: itself, or widened into `buf` (as long).
    fn widen<'a>(src: &'a [Self], buf: &'a mut [f32]) -> &'a [f32];
    /// `v` rounded to this type's precision, as f32.
    fn round(v: f32) -> f32;
}

impl Value for f32 {
    fn widen<'a>(src: &'a [f32], _buf: &'a mut [f32]) -> &'a [f32] {
        src
    }
    #[inline]
    fn round(v: f32) -> f32 {
        v
    }
}

impl Value for bf16 {
    fn widen<'a>(src: &'a [bf16], buf: &'a mut [f32]) -> &'a [f32] {
        bf16_to_f32(src, buf);
        buf
    }
    #[inline]
    fn round(v: f32) -> f32 {
        round_bf16(v)
    }
}

/// Where one sequence's cached keys or values [kv_heads, len, head_dim] lie in `data`:
/// element `[h, j, d]` at `offset + h·head_stride + j·head_dim + d`.
#[derive(Debug, Clone, Copy)]
pub struct CacheView<'a, V> {
    /// The backing storage.
    pub data: &'a [V],
    /// Index of element `[0, 0, 0]`.
    pub offset: usize,
    /// Elements between heads.
    pub head_stride: usize,
    /// Positions filled.
    pub len: usize,
}

impl<V> CacheView<'_, V> {
    /// Position `j` of head `h` (`head_dim` values), `None` out of range.
    fn row(&self, h: usize, j: usize, head_dim: usize) -> Option<&[V]> {
        let at = self.offset + h * self.head_stride + j * head_dim;
        self.data.get(at..at + head_dim)
    }
}

/// The heads of a decode attention: `heads` query heads sharing `kv_heads` key/value heads
/// (grouped-query attention), `head_dim` values a head.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    /// Query heads.
    pub heads: usize,
    /// Key and value heads (divides `heads`).
    pub kv_heads: usize,
    /// Values per head.
    pub head_dim: usize,
}

/// One sequence's query [heads, head_dim] and its cache.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a, V> {
    /// The query, head after head.
    pub q: &'a [V],
    /// Its cached keys.
    pub keys: CacheView<'a, V>,
    /// Its cached values.
    pub values: CacheView<'a, V>,
}

/// Attention of one new token per sequence, each sequence with its own cache and length, in
/// one parallel pass over every sequence's heads: per head, the scores `q·k_j · scale` over
/// the cached positions, their softmax, and the weighted sum of the values, rounded to `V`
/// where [`Value`] says. One output [heads, head_dim] per query (`V` values held in f32);
/// `None` when a length disagrees with `shape` or a view reaches past its data.
pub fn decode_each<V: Value>(
    queries: &[Query<'_, V>],
    shape: Heads,
    scale: f32,
) -> Option<Vec<Vec<f32>>> {
    let Heads {
        heads,
        kv_heads,
        head_dim,
    } = shape;
    let group = heads.checked_div(kv_heads)?;
    let per = heads * head_dim;
    let fits = |x: &Query<'_, V>| {
        let len = x.keys.len;
        // The last row of each view must exist; the others lie below it.
        let last =
            |v: &CacheView<'_, V>| len == 0 || v.row(kv_heads - 1, len - 1, head_dim).is_some();
        x.q.len() == per && x.values.len == len && last(&x.keys) && last(&x.values)
    };
    if head_dim == 0 || !queries.iter().all(fits) {
        return None;
    }
    let scale = V::round(scale);
    let mut outs: Vec<Vec<f32>> = queries.iter().map(|_| vec![0f32; per]).collect();
    let mut tasks: Vec<(&Query<'_, V>, usize, &mut [f32])> =
        Vec::with_capacity(queries.len() * heads);
    for (x, out) in queries.iter().zip(outs.iter_mut()) {
        for (h, o) in out.chunks_mut(head_dim).enumerate() {
            tasks.push((x, h, o));
        }
    }
    let per = tasks.len().div_ceil(super::pool::threads() * 4);
    super::pool::for_each_chunk(&mut tasks, per, |_, part| {
        let (mut scores, mut qf, mut row) =
            (Vec::new(), vec![0f32; head_dim], vec![0f32; head_dim]);
        for &mut (x, h, ref mut o) in part.iter_mut() {
            let (kh, len) = (h / group, x.keys.len);
            let qh = V::widen(&x.q[h * head_dim..(h + 1) * head_dim], &mut qf);
            scores.clear();
            scores.extend((0..len).map(|j| match x.keys.row(kh, j, head_dim) {
                Some(k) => V::round(V::round(dot(qh, V::widen(k, &mut row))) * scale),
                None => f32::NAN,
            }));
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            for (j, &s) in scores.iter().enumerate() {
                if let Some(v) = x.values.row(kh, j, head_dim) {
                    axpy(V::round(s / sum), V::widen(v, &mut row), o);
                }
            }
            for v in o.iter_mut() {
                *v = V::round(*v);
            }
        }
    });
    Some(outs)
}
