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
fn bf16_kernels_match_reference() {
    for n in LENGTHS {
        let w: Vec<bf16> = values(n, 4).into_iter().map(bf16::from_f32).collect();
        let wf: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
        let x = values(n, 5);
        assert!(close(dot_bf16(&w, &x), &wf, &x, 1e-6), "n {n}");
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
        let (yf, yb) = (matmul(&f, &x, m), matmul(&b, &x, m));
        assert_eq!(
            matmul(&f, xi, 1),
            yf[i * rows..(i + 1) * rows],
            "f32 row {i}"
        );
        assert_eq!(
            matmul(&b, xi, 1),
            yb[i * rows..(i + 1) * rows],
            "bf16 row {i}"
        );
    }
}
