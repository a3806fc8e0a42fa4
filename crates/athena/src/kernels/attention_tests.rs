//! Tests of decode attention against its plain definition.

use half::bf16;

use super::attention::*;

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
