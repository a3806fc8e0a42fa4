//! The affine int16 kernels on each instruction set (a test per set, ignored where this CPU
//! lacks it), against plain integer and f64 references: 4 and 8 bits, group sizes 32, 64 and
//! 128, odd block counts, one to nine inputs at once, mixed signs, zero blocks and an outlier.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::affine;
use super::layout::{
    block_offsets, code_index, QInput, BLOCK_LEN, INPUTS_PER_PASS, ROWS_PER_BLOCK,
};
use super::*;
use std::ops::Range;

/// Three tests of `$body(isa)`, one per instruction set of the integer kernels, in a module
/// named `$name`: each SIMD one ignored, with the reason, on a CPU without its extensions.
macro_rules! per_instruction_set {
    ($name:ident, $body:ident) => {
        mod $name {
            use super::*;

            #[test]
            #[cfg_attr(not(athena_host_avx512_vnni), ignore = "this CPU has no AVX-512 VNNI")]
            fn avx512_vnni() {
                $body(InstructionSet::Avx512Vnni);
            }

            #[test]
            #[cfg_attr(not(athena_host_avx2_fma), ignore = "this CPU has no AVX2+FMA")]
            fn avx2_fma() {
                $body(InstructionSet::Avx2Fma);
            }

            #[test]
            fn portable() {
                $body(InstructionSet::Portable);
            }
        }
    };
}

/// Mixed-sign inputs with a zero block, a lone zero and an outlier channel.
pub(super) fn inputs(cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut x: Vec<f32> = (0..cols).map(|_| rng.random_range(-3.0f32..3.0)).collect();
    if cols >= 64 {
        x[32..64].fill(0.0);
    }
    x[cols / 3] = 0.0;
    x[cols - 1] = -57.0;
    x
}

/// Random MLX codes for `rows` rows, with per-group scales and biases (a zero scale and
/// negative ones included).
pub(super) struct Quantized {
    pub(super) bits: u8,
    pub(super) gs: usize,
    pub(super) cols: usize,
    pub(super) words: Vec<u32>,
    pub(super) scales: Vec<f32>,
    pub(super) biases: Vec<f32>,
}

impl Quantized {
    pub(super) fn new(bits: u8, gs: usize, rows: usize, cols: usize, seed: u64) -> Quantized {
        let mut rng = StdRng::seed_from_u64(seed);
        let words = (0..rows * cols * usize::from(bits) / 32)
            .map(|_| rng.random())
            .collect();
        let groups = rows * cols / gs;
        let mut scales: Vec<f32> = (0..groups)
            .map(|_| rng.random_range(-0.05f32..0.05))
            .collect();
        scales[0] = 0.0;
        let biases = (0..groups)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        Quantized {
            bits,
            gs,
            cols,
            words,
            scales,
            biases,
        }
    }

    pub(super) fn row_words(&self, r: usize) -> &[u32] {
        let n = self.cols * usize::from(self.bits) / 32;
        &self.words[r * n..(r + 1) * n]
    }

    pub(super) fn row_groups<'a>(&self, v: &'a [f32], r: usize) -> &'a [f32] {
        let g = self.cols / self.gs;
        &v[r * g..(r + 1) * g]
    }

    pub(super) fn code(&self, r: usize, i: usize) -> i64 {
        let bit = i * usize::from(self.bits);
        let words = self.row_words(r);
        i64::from((words[bit / 32] >> (bit % 32)) & ((1u32 << self.bits) - 1))
    }

    /// Weight `i` of row `r`, in f64.
    pub(super) fn weight(&self, r: usize, i: usize) -> f64 {
        let g = r * self.cols / self.gs + i / self.gs;
        f64::from(self.scales[g]) * self.code(r, i) as f64 + f64::from(self.biases[g])
    }

    /// What the kernels compute, in exact integers and f64: per block the integer product of
    /// codes, times the step and the scale, plus the biases times the exact group sums.
    fn reference(&self, r: usize, q: &QInput<'_>) -> f64 {
        let cols = self.cols;
        let mut total = 0f64;
        for b in 0..cols / 32 {
            let s: i64 = (b * 32..(b + 1) * 32)
                .map(|i| self.code(r, i) * i64::from(q.codes[code_index(cols, i)]))
                .sum();
            let g = r * cols / self.gs + b * 32 / self.gs;
            total += s as f64 * f64::from(q.step(b)) * f64::from(self.scales[g]);
        }
        let sums = q.group_sums(self.gs).unwrap();
        total
            + self
                .row_groups(&self.biases, r)
                .iter()
                .zip(sums)
                .map(|(&b, &s)| f64::from(b) * f64::from(s))
                .sum::<f64>()
    }

    /// Σ|terms| of [`Quantized::reference`]: what f32 rounding of the sums is relative to.
    fn magnitude(&self, r: usize, q: &QInput<'_>) -> f64 {
        let cols = self.cols;
        let mut total = 0f64;
        for i in 0..cols {
            let g = r * cols / self.gs + i / self.gs;
            let x = f64::from(q.codes[code_index(cols, i)]) * f64::from(q.step(i / 32));
            total += (f64::from(self.scales[g]) * self.code(r, i) as f64 * x).abs();
        }
        let sums = q.group_sums(self.gs).unwrap();
        total
            + self
                .row_groups(&self.biases, r)
                .iter()
                .zip(sums)
                .map(|(&b, &s)| f64::from(b * s).abs())
                .sum::<f64>()
    }
}

/// Prepared forms of `n` input rows of `cols` values.
fn prepare(cols: usize, n: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let xs: Vec<Vec<f32>> = (0..n).map(|k| inputs(cols, seed + k as u64)).collect();
    let xp = xs
        .iter()
        .map(|x| {
            let mut p = Vec::new();
            assert!(affine::prepare_input(x, &mut p));
            p
        })
        .collect();
    (xs, xp)
}

#[test]
fn prepared_codes_follow_the_span_order() {
    for cols in [32usize, 96, 128, 2048] {
        let x: Vec<f32> = (0..cols).map(|i| i as f32 + 1.0).collect();
        let mut xp = Vec::new();
        assert!(affine::prepare_input(&x, &mut xp));
        let q = affine::prepared(&xp, cols).unwrap();
        let mut seen = vec![false; cols];
        for i in 0..cols {
            let k = code_index(cols, i);
            assert!(!seen[k], "cols {cols}: position {k} taken twice");
            seen[k] = true;
            let back = f32::from(q.codes[k]) * q.step(i / 32);
            // One step for each span of 64 values (or a last lone block): its largest.
            let max = x[(i / 64 * 64 + 63).min(cols - 1)];
            assert!(
                (back - x[i]).abs() <= max / 32767.0 * 0.51,
                "cols {cols} [{i}]"
            );
        }
        for b in 0..cols / 32 {
            let (even, odd) = block_offsets(cols / 32, b);
            assert_eq!(even, code_index(cols, 32 * b), "cols {cols} block {b}");
            assert_eq!(odd, code_index(cols, 32 * b + 1), "cols {cols} block {b}");
            assert!(q.steps[8 * b..8 * b + 8].iter().all(|&s| s == q.step(b)));
            assert_eq!(q.spans[b / 2], q.step(b), "cols {cols} block {b}");
        }
        assert_eq!(q.spans.len(), (cols / 32).div_ceil(2));
        let exact = |n: usize, k: usize| -> f32 {
            x[n * k..n * (k + 1)]
                .iter()
                .map(|&v| f64::from(v))
                .sum::<f64>() as f32
        };
        for (s, n) in [(0, 32), (1, 64), (2, 128)] {
            assert_eq!(q.sums[s].len(), cols / n, "cols {cols}");
            for (k, &v) in q.sums[s].iter().enumerate() {
                assert_eq!(v, exact(n, k), "cols {cols} sums of {n} [{k}]");
            }
        }
    }
}

fn affine_many_matches_integer_reference_on(isa: InstructionSet) {
    for bits in [4u8, 8] {
        for gs in [32usize, 64, 128] {
            for cols in [32usize, 96, 128, 384, 2048] {
                if cols % gs != 0 {
                    continue;
                }
                let rows = 3;
                let w = Quantized::new(bits, gs, rows, cols, 100 + cols as u64);
                let (_, xp) = prepare(cols, 9, 7 * cols as u64);
                let qs: Vec<QInput<'_>> = xp
                    .iter()
                    .map(|p| affine::prepared(p, cols).unwrap())
                    .collect();
                for r in 0..rows {
                    let (s, b) = (w.row_groups(&w.scales, r), w.row_groups(&w.biases, r));
                    for n in 1..=qs.len() {
                        let mut out = vec![f32::NAN; n];
                        let words = w.row_words(r);
                        assert!(affine::dot_affine_on(
                            isa,
                            bits,
                            gs,
                            words,
                            s,
                            b,
                            &qs[..n],
                            &mut out
                        ));
                        for (k, (&got, q)) in out.iter().zip(&qs).enumerate() {
                            let want = w.reference(r, q);
                            let tol = 1e-5 * w.magnitude(r, q) + 1e-6;
                            assert!(
                                (f64::from(got) - want).abs() <= tol,
                                "{isa:?} bits {bits} gs {gs} cols {cols} row {r} n {n} \
                                 input {k}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}

per_instruction_set!(
    affine_many_matches_integer_reference,
    affine_many_matches_integer_reference_on
);

fn affine_rows_equal_one_row_at_a_time_on(isa: InstructionSet) {
    const R: usize = ROWS_PER_BLOCK;
    for bits in [4u8, 8] {
        for gs in [32usize, 64, 128] {
            for cols in [32usize, 96, 384, 2048] {
                if cols % gs != 0 {
                    continue;
                }
                let w = Quantized::new(bits, gs, R, cols, 300 + cols as u64);
                let (_, xp) = prepare(cols, 3, 5 * cols as u64);
                let qs: Vec<QInput<'_>> = xp
                    .iter()
                    .map(|p| affine::prepared(p, cols).unwrap())
                    .collect();
                let words: [&[u32]; R] = std::array::from_fn(|r| w.row_words(r));
                let scales: [&[f32]; R] = std::array::from_fn(|r| w.row_groups(&w.scales, r));
                let biases: [&[f32]; R] = std::array::from_fn(|r| w.row_groups(&w.biases, r));
                // One input (the shared loads on AVX-512), then three (one row at a time).
                for n in [1usize, 3] {
                    let k = affine::AffineDots::new(isa, bits, gs, &qs[..n]).unwrap();
                    let mut out = vec![f32::NAN; R * n];
                    // The next rows to prefetch: any codes, here the rows themselves.
                    assert!(k.rows(words, scales, biases, words[0], &mut out));
                    for r in 0..R {
                        let mut one = vec![f32::NAN; n];
                        assert!(k.row(words[r], scales[r], biases[r], &mut one));
                        assert_eq!(out[r * n..(r + 1) * n], one[..], "{isa:?} {bits} {gs}");
                        for (i, q) in qs[..n].iter().enumerate() {
                            let want = w.reference(r, q);
                            let tol = 1e-5 * w.magnitude(r, q) + 1e-6;
                            let got = f64::from(out[r * n + i]);
                            assert!((got - want).abs() <= tol, "{isa:?} {got} vs {want}");
                        }
                    }
                    // A row of the wrong width is refused, with nothing written.
                    let mut short = words;
                    short[2] = &words[2][1..];
                    let mut out = vec![f32::NAN; R * n];
                    assert!(!k.rows(short, scales, biases, &[], &mut out));
                    assert!(out.iter().all(|v| v.is_nan()));
                }
            }
        }
    }
}

per_instruction_set!(
    affine_rows_equal_one_row_at_a_time,
    affine_rows_equal_one_row_at_a_time_on
);

/// Decode's one-call path ([`decode::decode_rows`]): every row of a range, with scales and
/// biases stored in f32, bf16 or f16, equal bit for bit to [`affine::AffineDots::row`] on the
/// same values widened, whatever the range's start and length; shapes it does not take are
/// refused with nothing written.
#[test]
fn decode_rows_equal_each_row_alone() {
    use half::{bf16, f16};

    use super::decode;
    let vnni = has_avx512_vnni();
    let rows = 11;
    for bits in [4u8, 8] {
        for cols in [64usize, 192, 2048] {
            let groups = cols / 64;
            let w = Quantized::new(bits, 64, rows, cols, 77 + cols as u64);
            let (_, xp) = prepare(cols, 1, 9 + cols as u64);
            let q = affine::prepared(&xp[0], cols).unwrap();
            let k = affine::AffineDots::new(InstructionSet::best(), bits, 64, &[q]).unwrap();
            let (sb, bb): (Vec<bf16>, Vec<bf16>) = (
                w.scales.iter().map(|&v| bf16::from_f32(v)).collect(),
                w.biases.iter().map(|&v| bf16::from_f32(v)).collect(),
            );
            let (sh, bh): (Vec<f16>, Vec<f16>) = (
                w.scales.iter().map(|&v| f16::from_f32(v)).collect(),
                w.biases.iter().map(|&v| f16::from_f32(v)).collect(),
            );
            let stored = [
                (GroupValues::F32(&w.scales), GroupValues::F32(&w.biases)),
                (GroupValues::Bf16(&sb), GroupValues::Bf16(&bb)),
                (GroupValues::F16(&sh), GroupValues::F16(&bh)),
            ];
            for (scales, biases) in stored {
                let mut buf = vec![0f32; 2 * rows * groups];
                let (sbuf, bbuf) = buf.split_at_mut(rows * groups);
                let (s, b) = (scales.widened(sbuf), biases.widened(bbuf));
                for range in [0..rows, 3..4, 1..10, 5..5, 2..9] {
                    let mut out = vec![f32::NAN; range.len()];
                    let done = decode::decode_rows(
                        bits,
                        64,
                        &w.words,
                        scales,
                        biases,
                        &q,
                        range.clone(),
                        &mut out,
                    );
                    assert_eq!(done, vnni, "{bits}-bit {cols} {scales:?}");
                    if !done {
                        assert!(out.iter().all(|v| v.is_nan()));
                        continue;
                    }
                    for (i, r) in range.clone().enumerate() {
                        let g = r * groups..(r + 1) * groups;
                        let mut one = [f32::NAN];
                        assert!(k.row(w.row_words(r), &s[g.clone()], &b[g], &mut one));
                        assert_eq!(
                            out[i].to_bits(),
                            one[0].to_bits(),
                            "{bits}-bit {cols} row {r}"
                        );
                    }
                }
            }
            // Refused: groups of 32, codes or scales short of the range, a wrong output length.
            let (s, b) = (GroupValues::F32(&w.scales), GroupValues::F32(&w.biases));
            let short = &w.words[..w.words.len() - 1];
            let short_scales = GroupValues::F32(&w.scales[..w.scales.len() - 1]);
            for (gs, words, scales, len) in [
                (32, &w.words[..], s, rows),
                (64, short, s, rows),
                (64, &w.words[..], short_scales, rows),
                (64, &w.words[..], s, rows - 1),
            ] {
                let mut out = vec![f32::NAN; len];
                assert!(!decode::decode_rows(
                    bits,
                    gs,
                    words,
                    scales,
                    b,
                    &q,
                    0..rows,
                    &mut out
                ));
                assert!(out.iter().all(|v| v.is_nan()));
            }
        }
    }
}

fn affine_dot_is_within_the_input_step_of_the_exact_product_on(isa: InstructionSet) {
    for bits in [4u8, 8] {
        for gs in [32usize, 64, 128] {
            let cols = 1024;
            let w = Quantized::new(bits, gs, 1, cols, 5);
            let (xs, xp) = prepare(cols, 1, 9);
            let q = affine::prepared(&xp[0], cols).unwrap();
            let (s, b) = (w.row_groups(&w.scales, 0), w.row_groups(&w.biases, 0));
            let exact: f64 = (0..cols)
                .map(|i| w.weight(0, i) * f64::from(xs[0][i]))
                .sum();
            // 2⁻¹⁶ of each block's largest input, times Σ|w| of the block, plus f32 rounding.
            let bound: f64 = xs[0]
                .chunks_exact(32)
                .enumerate()
                .map(|(blk, xb)| {
                    let max = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let sw: f64 = (32 * blk..32 * (blk + 1))
                        .map(|i| w.weight(0, i).abs())
                        .sum();
                    sw * f64::from(max) / 32767.0 * 0.51
                })
                .sum::<f64>()
                + 1e-5 * w.magnitude(0, &q);
            let mut out = [0f32];
            assert!(affine::dot_affine_on(
                isa,
                bits,
                gs,
                w.row_words(0),
                s,
                b,
                &[q],
                &mut out
            ));
            assert!(
                (f64::from(out[0]) - exact).abs() <= bound,
                "{isa:?} bits {bits} gs {gs}: {} vs {exact}",
                out[0]
            );
        }
    }
}

per_instruction_set!(
    affine_dot_is_within_the_input_step_of_the_exact_product,
    affine_dot_is_within_the_input_step_of_the_exact_product_on
);

fn affine_many_rejects_mismatched_arguments_on(isa: InstructionSet) {
    let w = Quantized::new(4, 64, 1, 128, 3);
    let (_, xp) = prepare(128, 2, 4);
    let qs: Vec<QInput<'_>> = xp
        .iter()
        .map(|p| affine::prepared(p, 128).unwrap())
        .collect();
    let (s, b) = (&w.scales[..2], &w.biases[..2]);
    let mut out = [0f32; 2];
    let words = w.row_words(0);
    assert!(!affine::dot_affine_on(
        isa, 3, 64, words, s, b, &qs, &mut out
    ));
    assert!(!affine::dot_affine_on(
        isa, 4, 48, words, s, b, &qs, &mut out
    ));
    assert!(!affine::dot_affine_on(
        isa,
        4,
        64,
        &words[..8],
        s,
        b,
        &qs,
        &mut out
    ));
    assert!(!affine::dot_affine_on(
        isa,
        4,
        64,
        words,
        s,
        &b[..1],
        &qs,
        &mut out
    ));
    assert!(!affine::dot_affine_on(
        isa,
        4,
        64,
        words,
        s,
        b,
        &qs,
        &mut out[..1]
    ));
    // Inputs of another width.
    let (_, other) = prepare(64, 1, 5);
    let q64 = [affine::prepared(&other[0], 64).unwrap()];
    assert!(!affine::dot_affine_on(
        isa,
        4,
        64,
        words,
        s,
        b,
        &q64,
        &mut out[..1]
    ));
}

per_instruction_set!(
    affine_many_rejects_mismatched_arguments,
    affine_many_rejects_mismatched_arguments_on
);

/// Quantized rows for `matmul` that read prepared inputs, several at a time.
struct ManyRows(Quantized, usize);

impl WeightMatrix for ManyRows {
    fn rows(&self) -> usize {
        self.1
    }
    fn cols(&self) -> usize {
        self.0.cols
    }
    fn row<'a>(&'a self, r: usize, buf: &'a mut [f32]) -> &'a [f32] {
        for (i, b) in buf.iter_mut().enumerate().take(self.0.cols) {
            *b = self.0.weight(r, i) as f32;
        }
        buf
    }
    fn dot(&self, r: usize, x: &[f32], buf: &mut [f32]) -> f32 {
        let mut out = [0f32];
        self.dot_rows(r..r + 1, &[x], &mut out, buf);
        out[0]
    }
    fn dot_rows(&self, rows: Range<usize>, xs: &[&[f32]], out: &mut [f32], buf: &mut [f32]) {
        let q = &self.0;
        let qs: Option<Vec<QInput<'_>>> = xs.iter().map(|x| affine::prepared(x, q.cols)).collect();
        for (r, out) in rows.zip(out.chunks_exact_mut(xs.len())) {
            let (s, b) = (q.row_groups(&q.scales, r), q.row_groups(&q.biases, r));
            match &qs {
                Some(qs) => {
                    for (qs, out) in qs
                        .chunks(INPUTS_PER_PASS)
                        .zip(out.chunks_mut(INPUTS_PER_PASS))
                    {
                        assert!(affine::dot_affine_on(
                            InstructionSet::best(),
                            q.bits,
                            q.gs,
                            q.row_words(r),
                            s,
                            b,
                            qs,
                            out
                        ))
                    }
                }
                None => {
                    for (o, x) in out.iter_mut().zip(xs) {
                        *o = super::dot(self.row(r, buf), x);
                    }
                }
            }
        }
    }
    fn reads_prepared(&self) -> bool {
        true
    }
}

#[test]
fn matmul_runs_prepared_inputs_at_every_size() {
    // 300 rows take row blocks; 40 rows with many inputs split the inputs too.
    for (rows, cols, bits, gs) in [(300, 512, 4u8, 64), (40, 2048, 8, 32), (40, 384, 4, 128)] {
        let w = ManyRows(Quantized::new(bits, gs, rows, cols, 70), rows);
        for m in [1usize, 2, 5, 16, 130] {
            let x: Vec<f32> = (0..m).flat_map(|k| inputs(cols, 80 + k as u64)).collect();
            let y = matmul(&w, &x, m);
            assert_eq!(y.len(), m * rows);
            for i in (0..m).step_by(7) {
                let xi = &x[i * cols..(i + 1) * cols];
                let one = matmul(&w, xi, 1);
                let mut xp = Vec::new();
                assert!(affine::prepare_input(xi, &mut xp));
                let q = affine::prepared(&xp, cols).unwrap();
                for r in 0..rows {
                    let got = y[i * rows + r];
                    // Each input alone gives the same values, bit for bit.
                    assert_eq!(got, one[r], "{rows}x{cols} m {m} [{i}, {r}]");
                    let want = w.0.reference(r, &q);
                    let tol = 1e-5 * w.0.magnitude(r, &q) + 1e-6;
                    assert!(
                        (f64::from(got) - want).abs() <= tol,
                        "{rows}x{cols} m {m} [{i}, {r}]: {got} vs {want}"
                    );
                }
            }
        }
        // A non-finite input keeps the exact path (NaN out where the exact product has it).
        let mut x = inputs(cols, 1);
        x[3] = f32::INFINITY;
        let y = matmul(&w, &x, 1);
        assert_eq!(y, matmul_exact(&w, &x, 1));
    }
}

#[test]
fn quantized_matrices_run_prepared_inputs_close_to_the_exact_product() {
    use crate::quant::{AffineParams, QMatrix};
    for bits in [4u8, 8] {
        for gs in [32usize, 64, 128] {
            let (rows, cols) = (70, 256);
            let mut rng = StdRng::seed_from_u64(11);
            let wf: Vec<f32> = (0..rows * cols)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect();
            let params = AffineParams::new(bits, gs).unwrap();
            for half in [false, true] {
                let q = match half {
                    false => QMatrix::quantize("w", &wf, rows, cols, params).unwrap(),
                    true => QMatrix::quantize_half("w", &wf, rows, cols, params).unwrap(),
                };
                for m in [1usize, 3, 9] {
                    let x: Vec<f32> = (0..m).flat_map(|k| inputs(cols, 90 + k as u64)).collect();
                    let exact = q.matmul(&x, m).unwrap();
                    let fast = q.with_rows(|w| {
                        assert!(w.reads_prepared());
                        matmul(w, &x, m)
                    });
                    let scale = exact.iter().fold(1f32, |a, v| a.max(v.abs()));
                    for (k, (f, e)) in fast.iter().zip(&exact).enumerate() {
                        assert!(
                            (f - e).abs() <= 2e-4 * scale,
                            "bits {bits} gs {gs} half {half} m {m} [{k}]: {f} vs {e}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
#[cfg_attr(not(athena_host_avx512_vnni), ignore = "this CPU has no AVX-512 VNNI")]
fn int16_panels_match_the_integer_reference() {
    use super::panel::{self, Panel, Unpacked, WeightRows, PANEL};
    const R: usize = 4;
    for bits in [4u8, 8] {
        for gs in [32usize, 64, 128] {
            for cols in [128usize, 384, 2048] {
                let w = Quantized::new(bits, gs, R, cols, 900 + cols as u64 + u64::from(bits));
                let (_, xp) = prepare(cols, 21, 13 * cols as u64);
                let qs: Vec<QInput<'_>> = xp
                    .iter()
                    .map(|p| affine::prepared(p, cols).unwrap())
                    .collect();
                let mut rows: [Unpacked; R] = Default::default();
                for (r, u) in rows.iter_mut().enumerate() {
                    assert!(u.unpack(InputForm::Int16, bits, cols, w.row_words(r)));
                }
                let all = WeightRows {
                    rows: std::array::from_fn(|r| &rows[r]),
                    scales: std::array::from_fn(|r| w.row_groups(&w.scales, r)),
                    biases: std::array::from_fn(|r| w.row_groups(&w.biases, r)),
                };
                for n in [1usize, 8, 16, 21] {
                    let mut four = vec![f32::NAN; R * n];
                    let mut one = vec![f32::NAN; R * n];
                    for (p, chunk) in qs[..n].chunks(PANEL).enumerate() {
                        let panel = Panel::new_int16(bits, gs, chunk).unwrap();
                        let at = p * PANEL;
                        assert!(panel::dots::<R>(bits, gs, all, &panel, &mut four[at..], n));
                        for r in 0..R {
                            let single = WeightRows {
                                rows: [all.rows[r]],
                                scales: [all.scales[r]],
                                biases: [all.biases[r]],
                            };
                            let out = &mut one[r * n + at..];
                            assert!(panel::dots::<1>(bits, gs, single, &panel, out, n));
                        }
                    }
                    assert_eq!(four, one, "bits {bits} gs {gs} cols {cols} n {n}");
                    for r in 0..R {
                        for (k, q) in qs[..n].iter().enumerate() {
                            let (got, want) = (f64::from(four[r * n + k]), w.reference(r, q));
                            let tol = 1e-5 * w.magnitude(r, q) + 1e-6;
                            assert!(
                                (got - want).abs() <= tol,
                                "bits {bits} gs {gs} cols {cols} row {r} input {k}: {got} vs {want}"
                            );
                        }
                    }
                }
                // A panel of the other form is refused, with nothing written.
                let (_, xp8) = super::affine8_tests::prepare(cols, 2, 5);
                let q8: Vec<_> = xp8
                    .iter()
                    .map(|p| super::affine8::prepared(p, cols).unwrap())
                    .collect();
                let other = Panel::new(bits, gs, &q8).unwrap();
                let mut out = vec![f32::NAN; R * 2];
                assert!(!panel::dots::<R>(bits, gs, all, &other, &mut out, 2));
                assert!(out.iter().all(|v| v.is_nan()));
            }
        }
    }
}

/// The int16 form's parts on this CPU's kernels against their plain definitions, bit for
/// bit: codes (halves, ties, the saturating top, a zero step), the largest magnitude, and the
/// block sums summed value by value in f64.
#[test]
fn prepared_parts_equal_their_plain_definitions() {
    let mut rng = StdRng::seed_from_u64(11);
    for case in 0..200 {
        let scale = [1e-30f32, 1e-3, 1.0, 7.0, 1e6, 3e37][case % 6];
        let mut xb: Vec<f32> = (0..BLOCK_LEN)
            .map(|_| rng.random_range(-1.0f32..1.0) * scale)
            .collect();
        // Values that land on .5 steps, and the extremes of the range.
        xb[3] = 2.5 * scale / 32767.0;
        xb[4] = -3.5 * scale / 32767.0;
        xb[7] = scale;
        xb[8] = -scale;
        let max = affine::max_abs(&xb);
        assert_eq!(
            max.to_bits(),
            xb.iter().fold(0f32, |m, v| m.max(v.abs())).to_bits()
        );
        for inv in [32767.0 / max, 0.0, 32767.0 / max * 1.000_001] {
            let (mut ev, mut od) = ([0i16; 16], [0i16; 16]);
            let (mut pe, mut po) = ([0i16; 16], [0i16; 16]);
            affine::block_codes(&xb, inv, &mut ev, &mut od);
            affine::block_codes_plain(&xb, inv, &mut pe, &mut po);
            assert_eq!((ev, od), (pe, po), "case {case}, inv {inv}");
        }
    }
    for cols in [32, 96, 160, 2048] {
        let x = inputs(cols, cols as u64);
        let want: Vec<f64> = x
            .chunks_exact(BLOCK_LEN)
            .map(|b| b.iter().fold(-0.0f64, |s, &v| s + f64::from(v)))
            .collect();
        let got = affine::exact_block_sums(&x);
        assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{cols} columns"
        );
    }
}
