//! Attention of one new token per sequence over its cached keys and values (decode):
//! `softmax(q·Kᵀ · scale) · V` per head, the heads in parallel on rayon's pool. It reads the
//! cache where it lies (rows of `head_dim` values, one per position) instead of going through
//! a general matrix product, whose fixed cost dominates at one query row.
//!
//! Values are f32 or bf16 ([`Value`]). A bf16 model's attention rounds where the reference's
//! bf16 tensors do: the scores, the scores times the scale (itself a bf16), the softmax
//! (taken in f32) and the output; sums run in f32.

use half::bf16;
use rayon::prelude::*;

use super::{axpy, bf16_to_f32, dot};

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
        bf16::from_f32(v).to_f32()
    }
}

/// Where one tensor of cached keys or values [batch, kv_heads, len, head_dim] lies in `data`:
/// element `[b, h, j, d]` at `offset + b·batch_stride + h·head_stride + j·head_dim + d`.
#[derive(Debug, Clone, Copy)]
pub struct CacheView<'a, V> {
    /// The backing storage.
    pub data: &'a [V],
    /// Index of element `[0, 0, 0, 0]`.
    pub offset: usize,
    /// Elements between sequences.
    pub batch_stride: usize,
    /// Elements between heads.
    pub head_stride: usize,
    /// Positions filled.
    pub len: usize,
}

impl<'a, V> CacheView<'a, V> {
    /// The view of sequence `b` alone.
    fn sequence(self, b: usize) -> CacheView<'a, V> {
        CacheView {
            offset: self.offset + b * self.batch_stride,
            ..self
        }
    }

    /// Position `j` of head `h` of sequence `b` (`head_dim` values), `None` out of range.
    fn row(&self, b: usize, h: usize, j: usize, head_dim: usize) -> Option<&[V]> {
        let at = self.offset + b * self.batch_stride + h * self.head_stride + j * head_dim;
        self.data.get(at..at + head_dim)
    }
}

/// The shape of a decode attention: `batch` sequences of one query each, `heads` query heads
/// sharing `kv_heads` key/value heads (grouped-query attention), `head_dim` values a head.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    /// Sequences.
    pub batch: usize,
    /// Query heads.
    pub heads: usize,
    /// Key and value heads (divides `heads`).
    pub kv_heads: usize,
    /// Values per head.
    pub head_dim: usize,
}

/// `out` [batch, heads, head_dim] for queries `q` [batch, heads, head_dim]: per head, the
/// scores `q·k_j · scale` over the cached positions, their softmax, and the weighted sum of
/// the values, rounded to `V` where [`Value`] says (the outputs are `V` values held in f32).
/// `None` when a length disagrees with `shape` or the views reach past their data.
pub fn decode<V: Value>(
    q: &[V],
    keys: CacheView<'_, V>,
    values: CacheView<'_, V>,
    shape: Heads,
    scale: f32,
) -> Option<Vec<f32>> {
    let per = shape.heads * shape.head_dim;
    if q.len() != shape.batch * per {
        return None;
    }
    let one = |b: usize| Query {
        q: &q[b * per..(b + 1) * per],
        keys: keys.sequence(b),
        values: values.sequence(b),
    };
    let queries: Vec<Query<'_, V>> = (0..shape.batch).map(one).collect();
    decode_each(&queries, shape, scale).map(|outs| outs.concat())
}

/// One sequence's query [heads, head_dim] and its cache (views of batch 1).
#[derive(Debug, Clone, Copy)]
pub struct Query<'a, V> {
    /// The query, head after head.
    pub q: &'a [V],
    /// Its cached keys.
    pub keys: CacheView<'a, V>,
    /// Its cached values.
    pub values: CacheView<'a, V>,
}

/// [`decode`] for several sequences, each with its own cache and length (a server's decode
/// step), in one parallel pass over every sequence's heads: one output [heads, head_dim] per
/// query. `shape.batch` is ignored.
pub fn decode_each<V: Value>(
    queries: &[Query<'_, V>],
    shape: Heads,
    scale: f32,
) -> Option<Vec<Vec<f32>>> {
    let Heads {
        heads,
        kv_heads,
        head_dim,
        ..
    } = shape;
    let group = heads.checked_div(kv_heads)?;
    let per = heads * head_dim;
    let fits = |x: &Query<'_, V>| {
        let len = x.keys.len;
        // The last row of each view must exist; the others lie below it.
        let last =
            |v: &CacheView<'_, V>| len == 0 || v.row(0, kv_heads - 1, len - 1, head_dim).is_some();
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
    tasks.into_par_iter().for_each_init(
        || (Vec::new(), vec![0f32; head_dim], vec![0f32; head_dim]),
        |(scores, qf, row), (x, h, o)| {
            let (kh, len) = (h / group, x.keys.len);
            let qh = V::widen(&x.q[h * head_dim..(h + 1) * head_dim], qf);
            scores.clear();
            scores.extend((0..len).map(|j| match x.keys.row(0, kh, j, head_dim) {
                Some(k) => V::round(V::round(dot(qh, V::widen(k, row))) * scale),
                None => f32::NAN,
            }));
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            for (j, &s) in scores.iter().enumerate() {
                if let Some(v) = x.values.row(0, kh, j, head_dim) {
                    axpy(V::round(s / sum), V::widen(v, row), o);
                }
            }
            for v in o.iter_mut() {
                *v = V::round(*v);
            }
        },
    );
    Some(outs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 4.0
            })
            .collect()
    }

    /// The plain definition in f64, element `[b, h, j, d]` of a cache at `cache(b, h, j, d)`.
    fn reference(
        q: &[f32],
        shape: Heads,
        len: usize,
        scale: f32,
        k: impl Fn(usize, usize, usize, usize) -> f32,
        v: impl Fn(usize, usize, usize, usize) -> f32,
    ) -> Vec<f64> {
        let Heads {
            batch,
            heads,
            kv_heads,
            head_dim: hd,
        } = shape;
        let mut out = vec![0f64; batch * heads * hd];
        for b in 0..batch {
            for h in 0..heads {
                let kh = h / (heads / kv_heads);
                let qh = &q[(b * heads + h) * hd..][..hd];
                let scores: Vec<f64> = (0..len)
                    .map(|j| {
                        let s: f64 = (0..hd).map(|d| f64::from(qh[d] * k(b, kh, j, d))).sum();
                        s * f64::from(scale)
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for d in 0..hd {
                    out[(b * heads + h) * hd + d] = (0..len)
                        .map(|j| e[j] / sum * f64::from(v(b, kh, j, d)))
                        .sum();
                }
            }
        }
        out
    }

    #[test]
    fn decode_matches_the_plain_definition_on_a_strided_cache() {
        // Two sequences, four query heads over two key/value heads, a buffer of 40 positions
        // of which 37 are filled, keys then values in one allocation (as a session holds them).
        let shape = Heads {
            batch: 2,
            heads: 4,
            kv_heads: 2,
            head_dim: 24,
        };
        let (cap, len, hd) = (40, 37, shape.head_dim);
        let per = shape.batch * shape.kv_heads * cap * hd;
        let data = values(2 * per, 7);
        let q = values(shape.batch * shape.heads * hd, 8);
        let view = |offset| CacheView {
            data: &data,
            offset,
            batch_stride: shape.kv_heads * cap * hd,
            head_stride: cap * hd,
            len,
        };
        let at = |base: usize| {
            let data = &data;
            move |b: usize, h: usize, j: usize, d: usize| {
                data[base + b * shape.kv_heads * cap * hd + h * cap * hd + j * hd + d]
            }
        };
        let scale = 1.0 / (hd as f32).sqrt();
        let got = decode(&q, view(0), view(per), shape, scale).unwrap();
        let want = reference(&q, shape, len, scale, at(0), at(per));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(*g) - w).abs() < 1e-5,
                "output {i}: {g} against {w}"
            );
        }
    }

    #[test]
    fn decode_refuses_shapes_its_data_does_not_hold() {
        let shape = Heads {
            batch: 1,
            heads: 2,
            kv_heads: 2,
            head_dim: 8,
        };
        let data = values(2 * 8 * 4, 1);
        let view = |len| CacheView {
            data: &data,
            offset: 0,
            batch_stride: 64,
            head_stride: 32,
            len,
        };
        let q = values(16, 2);
        assert!(decode(&q, view(4), view(4), shape, 1.0).is_some());
        // Past the buffer, a query of the wrong length, values and keys of different lengths.
        assert!(decode(&q, view(5), view(5), shape, 1.0).is_none());
        assert!(decode(&q[..8], view(4), view(4), shape, 1.0).is_none());
        assert!(decode(&q, view(4), view(3), shape, 1.0).is_none());
        let bad = Heads {
            kv_heads: 0,
            ..shape
        };
        assert!(decode(&q, view(4), view(4), bad, 1.0).is_none());
    }

    #[test]
    fn bf16_decode_stays_within_bf16_rounding_of_the_definition() {
        let shape = Heads {
            batch: 1,
            heads: 2,
            kv_heads: 1,
            head_dim: 16,
        };
        let (len, hd) = (9, shape.head_dim);
        let data: Vec<bf16> = values(2 * len * hd, 3)
            .iter()
            .map(|&v| bf16::from_f32(v))
            .collect();
        let q: Vec<bf16> = values(2 * hd, 4)
            .iter()
            .map(|&v| bf16::from_f32(v))
            .collect();
        let view = |offset| CacheView {
            data: &data,
            offset,
            batch_stride: len * hd,
            head_stride: len * hd,
            len,
        };
        let at = |base: usize| {
            let data = &data;
            move |_: usize, _: usize, j: usize, d: usize| data[base + j * hd + d].to_f32()
        };
        let qf: Vec<f32> = q.iter().map(|v| v.to_f32()).collect();
        let scale = 0.25;
        let got = decode(&q, view(0), view(len * hd), shape, scale).unwrap();
        let want = reference(&qf, shape, len, scale, at(0), at(len * hd));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            // Each output is a bf16 (rounded from sums of rounded terms).
            assert_eq!(*g, bf16::from_f32(*g).to_f32(), "output {i} is not a bf16");
            assert!(
                (f64::from(*g) - w).abs() <= 2e-2 * (1.0 + w.abs()),
                "{i}: {g} vs {w}"
            );
        }
    }
}
