//! Every kernel against a plain f64 reference, on both the AVX2 path (where the CPU has it)
//! and the portable one.

use half::bf16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

fn reference_dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&a, &b)| f64::from(a) * f64::from(b))
        .sum()
}

/// |got − exact| within `rel` of Σ|a·b| (what f32 rounding can reach).
fn close(got: f32, a: &[f32], b: &[f32], rel: f64) -> bool {
    let mag: f64 = a.iter().zip(b).map(|(&a, &b)| f64::from(a * b).abs()).sum();
    (f64::from(got) - reference_dot(a, b)).abs() <= rel * mag.max(1e-30)
}

const LENGTHS: [usize; 9] = [0, 1, 7, 8, 31, 64, 257, 1000, 2048];

#[test]
fn dot_matches_reference() {
    for n in LENGTHS {
        let (a, b) = (values(n, 1), values(n, 2));
        assert!(close(dot(&a, &b), &a, &b, 1e-6), "n {n}");
        assert!(close(portable::dot(&a, &b), &a, &b, 1e-6), "portable n {n}");
    }
}

#[test]
fn dot4_matches_dot() {
    for n in LENGTHS {
        let w = values(n, 3);
        let xs: Vec<Vec<f32>> = (0..4).map(|k| values(n, 10 + k)).collect();
        let got = dot4(&w, [&xs[0], &xs[1], &xs[2], &xs[3]]);
        for (g, x) in got.iter().zip(&xs) {
            assert!(close(*g, &w, x, 1e-6), "n {n}");
        }
    }
}

#[test]
fn dot2x4_matches_reference() {
    for n in LENGTHS {
        let ws: Vec<Vec<f32>> = (0..2).map(|j| values(n, 40 + j)).collect();
        let xs: Vec<Vec<f32>> = (0..4).map(|k| values(n, 50 + k)).collect();
        let x = [&xs[0][..], &xs[1], &xs[2], &xs[3]];
        let got = dot2x4([&ws[0], &ws[1]], x);
        let port = portable::dot2x4([&ws[0], &ws[1]], x);
        for j in 0..2 {
            for k in 0..4 {
                assert!(close(got[j][k], &ws[j], x[k], 1e-6), "n {n} [{j}][{k}]");
                // Each pair in `dot`'s order, bit for bit (on either tier).
                assert_eq!(got[j][k], dot(&ws[j], x[k]), "n {n} [{j}][{k}]");
                assert!(close(port[j][k], &ws[j], x[k], 1e-6), "portable n {n}");
            }
        }
    }
}

#[test]
fn bf16_kernels_match_reference() {
    for n in LENGTHS {
        let w: Vec<bf16> = values(n, 4).into_iter().map(bf16::from_f32).collect();
        let wf: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
        let x = values(n, 5);
        assert!(close(dot_bf16(&w, &x), &wf, &x, 1e-6), "n {n}");
        assert!(close(dot_bf16_wide(&w, &x), &wf, &x, 1e-6), "wide n {n}");
        assert!(
            close(portable::dot_bf16(&w, &x), &wf, &x, 1e-6),
            "portable n {n}"
        );
        let mut out = vec![0f32; n];
        bf16_to_f32(&w, &mut out);
        assert_eq!(out, wf, "n {n}");
    }
}

#[test]
fn dequantize_group_matches_reference() {
    let mut rng = StdRng::seed_from_u64(6);
    for bits in [4u8, 8] {
        for gs in [32usize, 64, 128] {
            let words: Vec<u32> = (0..gs * usize::from(bits) / 32)
                .map(|_| rng.random())
                .collect();
            let (scale, bias) = (0.0123f32, -0.77f32);
            let mask = (1u32 << bits) - 1;
            let want: Vec<f32> = (0..gs)
                .map(|i| {
                    let bit = i * usize::from(bits);
                    let code = (words[bit / 32] >> (bit % 32)) & mask;
                    scale * code as f32 + bias
                })
                .collect();
            let mut got = vec![0f32; gs];
            assert!(dequantize_group(bits, &words, scale, bias, &mut got));
            let mut port = vec![0f32; gs];
            portable::dequantize(bits, &words, scale, bias, &mut port);
            for i in 0..gs {
                // The SIMD path rounds once (fused multiply-add), the reference twice.
                assert!(
                    (got[i] - want[i]).abs() <= 1e-6,
                    "bits {bits} gs {gs} [{i}]"
                );
                assert_eq!(port[i], want[i], "portable bits {bits} gs {gs} [{i}]");
            }
        }
    }
    let mut out = vec![0f32; 32];
    assert!(!dequantize_group(3, &[0; 3], 1.0, 0.0, &mut out));
    assert!(!dequantize_group(8, &[0; 2], 1.0, 0.0, &mut out));
}

#[test]
fn matmul_matches_reference_for_f32_and_bf16_rows() {
    for (rows, cols, m) in [
        (1, 8, 1),
        (37, 64, 1),
        (37, 64, 3),
        (64, 2048, 9),
        (5, 40, 130),
    ] {
        let w = values(rows * cols, 7);
        let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        let wbf: Vec<f32> = wb.iter().map(|v| v.to_f32()).collect();
        let x = values(m * cols, 8);
        let y = matmul(&F32Rows { data: &w, cols }, &x, m);
        let yb = matmul(&Bf16Rows { data: &wb, cols }, &x, m);
        for i in 0..m {
            let xi = &x[i * cols..(i + 1) * cols];
            for r in 0..rows {
                let (got, gotb) = (y[i * rows + r], yb[i * rows + r]);
                assert!(
                    close(got, &w[r * cols..(r + 1) * cols], xi, 1e-6),
                    "f32 {rows}x{cols} m {m}"
                );
                assert!(
                    close(gotb, &wbf[r * cols..(r + 1) * cols], xi, 1e-6),
                    "bf16 {rows}x{cols} m {m}"
                );
            }
        }
    }
}

#[test]
fn one_input_row_equals_the_same_row_of_a_batch() {
    let (rows, cols, m) = (33, 520, 6);
    let w = values(rows * cols, 9);
    let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
    let x = values(m * cols, 10);
    for i in 0..m {
        let xi = &x[i * cols..(i + 1) * cols];
        let (f, b) = (F32Rows { data: &w, cols }, Bf16Rows { data: &wb, cols });
        let (yf, yb) = (matmul_exact(&f, &x, m), matmul_exact(&b, &x, m));
        assert_eq!(
            matmul_exact(&f, xi, 1),
            yf[i * rows..(i + 1) * rows],
            "f32 row {i}"
        );
        assert_eq!(
            matmul_exact(&b, xi, 1),
            yb[i * rows..(i + 1) * rows],
            "bf16 row {i}"
        );
    }
}

/// Random codes packed MLX-style, per-group scales and biases, and the dequantized row.
fn affine_row(
    bits: u8,
    gs: usize,
    cols: usize,
    seed: u64,
) -> (Vec<u32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let words: Vec<u32> = (0..cols * usize::from(bits) / 32)
        .map(|_| rng.random())
        .collect();
    let groups = cols / gs;
    let scales: Vec<f32> = (0..groups)
        .map(|_| rng.random_range(0.001f32..0.05))
        .collect();
    let biases: Vec<f32> = (0..groups)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let mask = (1u32 << bits) - 1;
    let w = (0..cols)
        .map(|i| {
            let bit = i * usize::from(bits);
            let code = (words[bit / 32] >> (bit % 32)) & mask;
            scales[i / gs] * code as f32 + biases[i / gs]
        })
        .collect();
    (words, scales, biases, w)
}

#[test]
fn prepared_input_round_trips_within_a_step() {
    let mut x = values(256, 20);
    x[40] = 0.0;
    x[64..96].fill(0.0);
    let mut xp = Vec::new();
    assert!(affine::prepare_input(&x, &mut xp));
    assert_eq!(&xp[..256], &x[..]);
    let q = affine::prepared(&xp, 256).unwrap();
    for (b, xb) in x.chunks_exact(32).enumerate() {
        let max = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let sum: f64 = xb.iter().map(|&v| f64::from(v)).sum();
        assert!((f64::from(q.sums[0][b]) - sum).abs() <= 1e-6 * (1.0 + sum.abs()));
        for (i, &v) in xb.iter().enumerate() {
            let back = f32::from(q.codes[layout::code_index(256, b * 32 + i)]) * q.step(b);
            assert!(
                (back - v).abs() <= max / 32767.0 * 0.51 + 1e-7,
                "block {b} [{i}]"
            );
        }
    }
    // No tail for widths off the block size, non-finite values, or a plain row.
    assert!(!affine::prepare_input(&x[..100], &mut xp));
    assert_eq!(xp, &x[..100]);
    let mut bad = x.clone();
    bad[3] = f32::NAN;
    assert!(!affine::prepare_input(&bad, &mut xp));
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&xp), bits(&bad), "only the row itself is left");
    assert!(affine::prepared(&x, 256).is_none());
}

#[test]
fn affine_dot_matches_reference() {
    for bits in [4u8, 8] {
        for gs in [32usize, 64, 128] {
            for cols in [128usize, 2048] {
                let (words, scales, biases, w) = affine_row(bits, gs, cols, 30 + cols as u64);
                let mut x = values(cols, 31);
                // An outlier channel: the other values of its block lose relative precision.
                x[5] = 40.0;
                let mut xp = Vec::new();
                assert!(affine::prepare_input(&x, &mut xp));
                let q = affine::prepared(&xp, cols).unwrap();
                let got = affine::dot_affine(bits, gs, &words, &scales, &biases, q).unwrap();
                let mut port = [0f32];
                portable::dot_affine(bits, gs, &words, &scales, &biases, &[q], &mut port);
                let port = port[0];
                // The int16 inputs carry 2⁻¹⁶ of each block's largest value: bound the error by
                // Σ|w|·max|x_block| of that (plus f32 rounding of Σ|w·x|).
                let bound: f64 = w
                    .chunks_exact(32)
                    .zip(x.chunks_exact(32))
                    .map(|(wb, xb)| {
                        let max = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                        let sw: f64 = wb.iter().map(|&v| f64::from(v.abs())).sum();
                        sw * f64::from(max) / 32767.0 * 0.51
                    })
                    .sum();
                let mag: f64 = w
                    .iter()
                    .zip(&x)
                    .map(|(&a, &b)| f64::from(a * b).abs())
                    .sum();
                let want = reference_dot(&w, &x);
                for (g, what) in [(got, "dispatched"), (port, "portable")] {
                    assert!(
                        (f64::from(g) - want).abs() <= bound + 1e-5 * mag,
                        "{what} bits {bits} gs {gs} cols {cols}: {g} vs {want}"
                    );
                }
            }
        }
    }
    let (words, scales, biases, _) = affine_row(4, 64, 128, 1);
    let mut xp = Vec::new();
    affine::prepare_input(&values(128, 2), &mut xp);
    let q = affine::prepared(&xp, 128).unwrap();
    assert!(affine::dot_affine(3, 64, &words, &scales, &biases, q).is_none());
    assert!(affine::dot_affine(4, 64, &words[..8], &scales, &biases, q).is_none());
}

/// Quantized rows for `matmul`: codes, scales and biases as MLX lays them out.
struct AffineRows {
    bits: u8,
    gs: usize,
    cols: usize,
    words: Vec<u32>,
    scales: Vec<f32>,
    biases: Vec<f32>,
    w: Vec<f32>,
}

impl WeightMatrix for AffineRows {
    fn rows(&self) -> usize {
        self.w.len() / self.cols
    }
    fn cols(&self) -> usize {
        self.cols
    }
    fn row<'a>(&'a self, r: usize, _buf: &'a mut [f32]) -> &'a [f32] {
        &self.w[r * self.cols..(r + 1) * self.cols]
    }
    fn dot(&self, r: usize, x: &[f32], buf: &mut [f32]) -> f32 {
        let (groups, rw) = (self.cols / self.gs, self.cols * usize::from(self.bits) / 32);
        match affine::prepared(x, self.cols) {
            Some(q) => affine::dot_affine(
                self.bits,
                self.gs,
                &self.words[r * rw..(r + 1) * rw],
                &self.scales[r * groups..(r + 1) * groups],
                &self.biases[r * groups..(r + 1) * groups],
                q,
            )
            .unwrap(),
            None => dot(self.row(r, buf), x),
        }
    }
}

#[test]
fn matmul_runs_quantized_rows_on_prepared_inputs_at_decode_sizes() {
    let (rows, cols) = (300, 512);
    for bits in [4u8, 8] {
        let parts: Vec<_> = (0..rows)
            .map(|r| affine_row(bits, 64, cols, 50 + r as u64))
            .collect();
        let m = AffineRows {
            bits,
            gs: 64,
            cols,
            words: parts.iter().flat_map(|p| p.0.clone()).collect(),
            scales: parts.iter().flat_map(|p| p.1.clone()).collect(),
            biases: parts.iter().flat_map(|p| p.2.clone()).collect(),
            w: parts.iter().flat_map(|p| p.3.clone()).collect(),
        };
        for n in [1usize, 3, 4, 5] {
            let x = values(n * cols, 60 + n as u64);
            let fast = matmul(&m, &x, n);
            let exact = matmul_exact(&m, &x, n);
            let want = matmul_exact(&F32Rows { data: &m.w, cols }, &x, n);
            assert_eq!(exact, want, "exact path, bits {bits} m {n}");
            for i in 0..n {
                let xi = &x[i * cols..(i + 1) * cols];
                for r in 0..rows {
                    let wr = &m.w[r * cols..(r + 1) * cols];
                    assert!(
                        close(fast[i * rows + r], wr, xi, 2e-4),
                        "bits {bits} m {n} [{i}, {r}]"
                    );
                }
            }
        }
    }
}

#[test]
fn round_bf16_is_half_s_rounding() {
    let mut rng = StdRng::seed_from_u64(7);
    let special = [
        0u32,
        0x8000_0000,
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0000,
        0x7f80_0001,
        0xffa0_1234,
        0x7f7f_ffff,
        0x3f80_8000,
        0x3f81_8000,
        0x3f80_8001,
        0x0000_8000,
        0x0001_8000,
    ];
    let bits = special
        .into_iter()
        .chain((0..200_000).map(|_| rng.random::<u32>()));
    for b in bits {
        let v = f32::from_bits(b);
        let want = bf16::from_f32(v).to_f32().to_bits();
        assert_eq!(round_bf16(v).to_bits(), want, "{b:#010x}");
    }
}
