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

    /// The plain definition in f64 for one sequence's query, its cache's element `[h, j, d]`
    /// at `k(h, j, d)` and `v(h, j, d)`.
    fn reference(
        q: &[f32],
        shape: Heads,
        len: usize,
        scale: f32,
        k: impl Fn(usize, usize, usize) -> f32,
        v: impl Fn(usize, usize, usize) -> f32,
    ) -> Vec<f64> {
        let Heads {
            heads,
            kv_heads,
            head_dim: hd,
        } = shape;
        let mut out = vec![0f64; heads * hd];
        for h in 0..heads {
            let kh = h / (heads / kv_heads);
            let qh = &q[h * hd..][..hd];
            let scores: Vec<f64> = (0..len)
                .map(|j| {
                    let s: f64 = (0..hd).map(|d| f64::from(qh[d] * k(kh, j, d))).sum();
                    s * f64::from(scale)
                })
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for d in 0..hd {
                out[h * hd + d] = (0..len).map(|j| e[j] / sum * f64::from(v(kh, j, d))).sum();
            }
        }
        out
    }

    #[test]
    fn decode_matches_the_plain_definition_on_strided_caches() {
        // Two sequences of 37 and 20 positions in buffers of 40, four query heads over two
        // key/value heads, keys then values in one allocation (as a session holds them).
        let shape = Heads {
            heads: 4,
            kv_heads: 2,
            head_dim: 24,
        };
        let (cap, hd) = (40, shape.head_dim);
        let per = shape.kv_heads * cap * hd;
        let data = values(4 * per, 7);
        let qs = values(2 * shape.heads * hd, 8);
        let view = |offset, len| CacheView {
            data: &data,
            offset,
            head_stride: cap * hd,
            len,
        };
        let at = |base: usize| {
            let data = &data;
            move |h: usize, j: usize, d: usize| data[base + h * cap * hd + j * hd + d]
        };
        let scale = 1.0 / (hd as f32).sqrt();
        let q = |i: usize| &qs[i * shape.heads * hd..(i + 1) * shape.heads * hd];
        // Sequence i: keys at 2i·per, values at (2i + 1)·per.
        let lens = [37, 20];
        let queries: Vec<Query<'_, f32>> = (0..2)
            .map(|i| Query {
                q: q(i),
                keys: view(2 * i * per, lens[i]),
                values: view((2 * i + 1) * per, lens[i]),
            })
            .collect();
        let got = decode_each(&queries, shape, scale).unwrap();
        for (i, got) in got.iter().enumerate() {
            let want = reference(
                q(i),
                shape,
                lens[i],
                scale,
                at(2 * i * per),
                at((2 * i + 1) * per),
            );
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (f64::from(*g) - w).abs() < 1e-5,
                    "sequence {i}, output {k}: {g} against {w}"
                );
            }
        }
    }

    #[test]
    fn decode_refuses_shapes_its_data_does_not_hold() {
        let shape = Heads {
            heads: 2,
            kv_heads: 2,
            head_dim: 8,
        };
        let data = values(2 * 8 * 4, 1);
        let view = |len| CacheView {
            data: &data,
            offset: 0,
            head_stride: 32,
            len,
        };
        let q = values(16, 2);
        let one = |q, keys, values| [Query { q, keys, values }];
        assert!(decode_each(&one(&q, view(4), view(4)), shape, 1.0).is_some());
        // Past the buffer, a query of the wrong length, values and keys of different lengths.
        assert!(decode_each(&one(&q, view(5), view(5)), shape, 1.0).is_none());
        assert!(decode_each(&one(&q[..8], view(4), view(4)), shape, 1.0).is_none());
        assert!(decode_each(&one(&q, view(4), view(3)), shape, 1.0).is_none());
        let bad = Heads {
            kv_heads: 0,
            ..shape
        };
        assert!(decode_each(&one(&q, view(4), view(4)), bad, 1.0).is_none());
    }

    #[test]
    fn bf16_decode_stays_within_bf16_rounding_of_the_definition() {
        let shape = Heads {
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
            head_stride: len * hd,
            len,
        };
        let at = |base: usize| {
            let data = &data;
            move |_: usize, j: usize, d: usize| data[base + j * hd + d].to_f32()
        };
        let qf: Vec<f32> = q.iter().map(|v| v.to_f32()).collect();
        let scale = 0.25;
        let query = Query {
            q: &q,
            keys: view(0),
            values: view(len * hd),
        };
        let got = decode_each(&[query], shape, scale).unwrap().concat();
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
