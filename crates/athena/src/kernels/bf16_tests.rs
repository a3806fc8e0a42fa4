//! The AVX-512 float kernels and the bf16 × bf16 products against a plain f64 reference, on
//! odd sizes, with the AVX2 and portable tiers alongside.

use half::bf16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::x86::{avx2, avx512_float};
use super::*;

const LENGTHS: [usize; 12] = [0, 1, 7, 15, 16, 17, 31, 33, 64, 257, 1000, 2049];

/// `n` values in [-2, 2) rounded to bf16.
fn bf16_values(n: usize, seed: u64) -> Vec<bf16> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| bf16::from_f32(rng.random_range(-2.0f32..2.0)))
        .collect()
}

fn widen(v: &[bf16]) -> Vec<f32> {
    v.iter().map(|v| v.to_f32()).collect()
}

/// `n` f32 values in [-2, 2) that are not bf16.
fn f32_values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| rng.random_range(-2.0f32..2.0))
        .map(|v| f32::from_bits(f32::to_bits(v) | 1))
        .collect()
}

/// |got − Σ a·b| within `rel` of Σ|a·b|.
fn close(got: f32, a: &[f32], b: &[f32], rel: f64) -> bool {
    let exact: f64 = a
        .iter()
        .zip(b)
        .map(|(&a, &b)| f64::from(a) * f64::from(b))
        .sum();
    let mag: f64 = a
        .iter()
        .zip(b)
        .map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs())
        .sum();
    (f64::from(got) - exact).abs() <= rel * mag.max(1e-30)
}

/// The bound of an f32 sum over sixteen lanes of `n` pair products: `n / 16 + 8` roundings.
fn pairs_bound(n: usize) -> f64 {
    (n as f64 / 16.0 + 8.0) * f64::from(f32::EPSILON) / 2.0
}

#[test]
fn dot_bf16_wide_matches_reference_on_odd_lengths() {
    for n in LENGTHS {
        let (w, x) = (bf16_values(n, 1), f32_values(n, 2));
        let wf = widen(&w);
        assert!(close(dot_bf16_wide(&w, &x), &wf, &x, 1e-6), "n {n}");
    }
}

#[test]
#[cfg_attr(not(athena_host_avx2_fma), ignore = "this CPU has no AVX2+FMA")]
fn avx2_dot_bf16_wide_matches_reference_on_odd_lengths() {
    assert!(has_avx2_fma());
    for n in LENGTHS {
        let (w, x) = (bf16_values(n, 1), f32_values(n, 2));
        let wf = widen(&w);
        // SAFETY: AVX2 and FMA are present (asserted above); lengths are equal.
        let got = unsafe { avx2::dot_bf16_wide(&w, &x) };
        assert!(close(got, &wf, &x, 1e-6), "avx2 n {n}");
    }
}

#[test]
fn bf16_to_f32_is_exact() {
    for n in LENGTHS {
        let w = bf16_values(n, 4);
        let want = widen(&w);
        let mut out = vec![0f32; n];
        bf16_to_f32(&w, &mut out);
        assert_eq!(out, want, "n {n}");
    }
}

#[test]
#[cfg_attr(not(athena_host_avx512), ignore = "this CPU has no AVX-512 F/BW/VL")]
fn avx512_bf16_to_f32_is_exact() {
    assert!(has_avx512());
    for n in LENGTHS {
        let w = bf16_values(n, 4);
        let want = widen(&w);
        let mut out = vec![0f32; n];
        // SAFETY: AVX-512 F/BW/VL are present (asserted above); lengths are equal.
        unsafe { avx512_float::bf16_to_f32(&w, &mut out) };
        assert_eq!(out, want, "avx512 n {n}");
    }
}

#[test]
#[cfg_attr(not(athena_host_avx512), ignore = "this CPU has no AVX-512 F/BW/VL")]
fn pack_is_exact_on_bf16_values_only() {
    for n in LENGTHS {
        let w = bf16_values(n, 3);
        let wf = widen(&w);
        let mut out = vec![bf16::ZERO; n];
        assert!(bf16_pairs::pack(&wf, &mut out), "n {n}");
        assert_eq!(out, w, "n {n}");
        // One value with a low bit set, in the vector part and in the tail.
        for at in [0, n / 2, n.saturating_sub(1)]
            .into_iter()
            .filter(|_| n > 0)
        {
            let mut bad = wf.clone();
            bad[at] = f32::from_bits(bad[at].to_bits() | 0x8000);
            assert!(!bf16_pairs::pack(&bad, &mut out), "n {n} at {at}");
        }
    }
}

/// `dots::<4, C>` against the reference for every input count.
fn check_dots<const C: usize>(n: usize) {
    let ws: Vec<Vec<bf16>> = (0..4).map(|j| bf16_values(n, 10 + j)).collect();
    let xs: Vec<Vec<bf16>> = (0..C as u64).map(|k| bf16_values(n, 20 + k)).collect();
    let w: [&[bf16]; 4] = std::array::from_fn(|j| &ws[j][..]);
    let x: [&[bf16]; C] = std::array::from_fn(|k| &xs[k][..]);
    let got = bf16_pairs::dots(w, x);
    for j in 0..4 {
        for k in 0..C {
            let (wf, xf) = (widen(&ws[j]), widen(&xs[k]));
            assert!(
                close(got[j][k], &wf, &xf, pairs_bound(n)),
                "n {n} C {C} [{j}][{k}]"
            );
            let port = portable::dot_bf16_pairs(&ws[j], &xs[k]);
            assert!(close(port, &wf, &xf, pairs_bound(n)), "portable n {n}");
        }
    }
}

#[test]
fn bf16_pair_dots_match_reference() {
    for n in LENGTHS {
        check_dots::<1>(n);
        check_dots::<2>(n);
        check_dots::<3>(n);
        check_dots::<4>(n);
    }
}

/// f32 rows without [`WeightMatrix::bf16_row`], as a wrapper that does not forward it reads them.
struct Widened<'a>(Bf16Rows<'a>);

impl WeightMatrix for Widened<'_> {
    fn rows(&self) -> usize {
        self.0.rows()
    }
    fn cols(&self) -> usize {
        self.0.cols()
    }
    fn row<'a>(&'a self, r: usize, buf: &'a mut [f32]) -> &'a [f32] {
        self.0.row(r, buf)
    }
}

/// `y` [m, rows] against the reference, row by row.
fn check_product(y: &[f32], w: &[f32], x: &[f32], rows: usize, cols: usize, what: &str) {
    let m = x.len() / cols.max(1);
    assert_eq!(y.len(), m * rows, "{what}");
    for i in 0..m {
        let xi = &x[i * cols..(i + 1) * cols];
        for r in 0..rows {
            let wr = &w[r * cols..(r + 1) * cols];
            assert!(
                close(y[i * rows + r], wr, xi, pairs_bound(cols)),
                "{what} {rows}x{cols} m {m} [{i}][{r}]"
            );
        }
    }
}

const SHAPES: [(usize, usize, usize); 7] = [
    (1, 8, 2),
    (5, 33, 3),
    (37, 64, 4),
    (37, 257, 5),
    (64, 2048, 9),
    (130, 256, 17),
    (6, 40, 260),
];

#[test]
fn matmul_on_bf16_inputs_matches_reference() {
    for (rows, cols, m) in SHAPES {
        let wb = bf16_values(rows * cols, 30);
        let (wf, x) = (widen(&wb), widen(&bf16_values(m * cols, 31)));
        let direct = matmul(&Bf16Rows { data: &wb, cols }, &x, m);
        check_product(&direct, &wf, &x, rows, cols, "bf16 rows");
        let widened = matmul(&Widened(Bf16Rows { data: &wb, cols }), &x, m);
        check_product(&widened, &wf, &x, rows, cols, "widened rows");
    }
}

#[test]
#[cfg_attr(not(athena_host_avx512_bf16), ignore = "this CPU has no AVX512_BF16")]
fn matmul_on_bf16_inputs_reads_bf16_and_widened_rows_alike() {
    assert!(has_avx512_bf16());
    for (rows, cols, m) in SHAPES {
        let wb = bf16_values(rows * cols, 30);
        let x = widen(&bf16_values(m * cols, 31));
        let direct = matmul(&Bf16Rows { data: &wb, cols }, &x, m);
        let widened = matmul(&Widened(Bf16Rows { data: &wb, cols }), &x, m);
        // Both read the same bf16 values into the same kernel.
        assert_eq!(direct, widened, "{rows}x{cols} m {m}");
    }
}

#[test]
fn matmul_on_bf16_inputs_takes_inexact_weight_rows_on_the_exact_path() {
    let (rows, cols, m) = (11, 70, 6);
    let mut w = widen(&bf16_values(rows * cols, 40));
    // Row 0 is bf16 (so the bf16 path runs); rows 5 and 10 are not.
    for r in [5, 10] {
        w[r * cols + 3] = f32::from_bits(w[r * cols + 3].to_bits() | 0x40);
    }
    let x = widen(&bf16_values(m * cols, 41));
    let y = matmul(&F32Rows { data: &w, cols }, &x, m);
    check_product(&y, &w, &x, rows, cols, "mixed rows");
    let exact = matmul_exact(&F32Rows { data: &w, cols }, &x, m);
    for i in 0..m {
        for r in [5, 10] {
            assert_eq!(y[i * rows + r], exact[i * rows + r], "[{i}][{r}]");
        }
    }
}

#[test]
fn matmul_on_other_inputs_or_weights_is_the_exact_product() {
    let (rows, cols, m) = (9, 48, 7);
    let wb = bf16_values(rows * cols, 50);
    let bf = Bf16Rows { data: &wb, cols };
    // Inputs that are not bf16.
    let x = f32_values(m * cols, 51);
    assert_eq!(matmul(&bf, &x, m), matmul_exact(&bf, &x, m));
    // bf16 inputs, f32 weights that are not bf16.
    let wf = f32_values(rows * cols, 52);
    let f = F32Rows { data: &wf, cols };
    let xb = widen(&bf16_values(m * cols, 53));
    assert_eq!(matmul(&f, &xb, m), matmul_exact(&f, &xb, m));
}
