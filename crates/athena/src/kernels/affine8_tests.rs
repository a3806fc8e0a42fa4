//! The int8 form of [`super::affine8`] and its AVX-512 VNNI kernels, against plain integer
//! and f64 references: 4 and 8 bits, group sizes 32, 64 and 128, one to four inputs and four
//! rows at once, mixed signs, zero blocks and an outlier.

use super::affine8::{self, Int8Dots};
use super::affine_tests::{inputs, Quantized};
use super::layout::{InputForm, QInput8, ROWS_PER_BLOCK};

/// Input rows of `cols` values and their int8 prepared forms.
pub(super) fn prepare(cols: usize, n: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let xs: Vec<Vec<f32>> = (0..n).map(|k| inputs(cols, seed + k as u64)).collect();
    let xp = xs
        .iter()
        .map(|x| {
            let mut p = vec![0f32; cols + affine8::prepared_len(cols)];
            assert!(affine8::write_prepared(x, &mut p));
            p
        })
        .collect();
    (xs, xp)
}

/// What the kernels compute, in exact integers and f64 (see `Quantized::reference`).
fn reference(w: &Quantized, r: usize, q: &QInput8<'_>) -> f64 {
    let cols = w.cols;
    let mut total = 0f64;
    for b in 0..cols / 32 {
        let s: i64 = (b * 32..(b + 1) * 32)
            .map(|i| w.code(r, i) * i64::from(q.codes[i]))
            .sum();
        let g = r * cols / w.gs + b * 32 / w.gs;
        total += s as f64 * f64::from(q.step(b)) * f64::from(w.scales[g]);
    }
    let sums = q.group_sums(w.gs).unwrap();
    let biases = w.row_groups(&w.biases, r);
    total
        + biases
            .iter()
            .zip(sums)
            .map(|(&b, &s)| f64::from(b) * f64::from(s))
            .sum::<f64>()
}

/// The exact product in f64 and the bound the int8 rounding of the inputs puts on the
/// kernels' distance from it: half a step per value, times the weight's magnitude.
fn exact_and_bound(w: &Quantized, r: usize, x: &[f32], q: &QInput8<'_>) -> (f64, f64) {
    let (mut exact, mut bound, mut mag) = (0f64, 0f64, 0f64);
    for (i, &xi) in x.iter().enumerate() {
        let wi = w.weight(r, i);
        exact += wi * f64::from(xi);
        mag += (wi * f64::from(xi)).abs();
        bound += wi.abs() * f64::from(q.step(i / 32)) / 2.0;
    }
    (exact, bound * (1.0 + 1e-6) + 1e-5 * mag + 1e-6)
}

#[test]
fn int8_form_rounds_each_value_within_half_a_step() {
    for cols in [64usize, 192, 2048] {
        let (xs, xp) = prepare(cols, 1, cols as u64);
        let q = affine8::prepared(&xp[0], cols).unwrap();
        assert_eq!(&xp[0][..cols], &xs[0][..]);
        for (i, &x) in xs[0].iter().enumerate() {
            let (c, s) = (q.codes[i], q.step(i / 32));
            assert!(
                (f32::from(c) * s - x).abs() <= s / 2.0 * (1.0 + 1e-6),
                "{cols} [{i}]"
            );
            assert_eq!(q.even_codes[affine8::even_index(i)], c);
        }
        // The evens-first lanes: 0–3 and 8–11 the span's first block, the others its second.
        for b in 0..cols / 32 {
            for lane in 0..16 {
                let block = 2 * (b / 2) + (lane / 4) % 2;
                if block == b {
                    assert_eq!(q.even_steps[16 * (b / 2) + lane], q.step(b));
                }
            }
        }
        // A block of zeros (the second, past 64 columns) has a zero step and zero codes.
        if cols > 64 {
            assert_eq!(q.step(1), 0.0);
            assert!(q.codes[32..64].iter().all(|&c| c == 0));
        }
    }
    // No int8 form for widths that are not whole spans, or for a non-finite value.
    assert_eq!(affine8::prepared_len(96), 0);
    let mut out = vec![0f32; 96 + 64];
    assert!(!affine8::write_prepared(&inputs(96, 1), &mut out));
    let mut x = inputs(128, 2);
    x[7] = f32::NAN;
    let mut out = vec![0f32; 128 + affine8::prepared_len(128)];
    assert!(!affine8::write_prepared(&x, &mut out));
    assert!(affine8::prepared(&out, 128).is_none());
}

#[test]
#[cfg_attr(not(athena_host_avx512_vnni), ignore = "this CPU has no AVX-512 VNNI")]
fn int8_dots_match_integer_reference_and_the_exact_product() {
    const R: usize = ROWS_PER_BLOCK;
    for bits in [4u8, 8] {
        for gs in [32usize, 64, 128] {
            for cols in [64usize, 192, 384, 2048] {
                if cols % gs != 0 {
                    continue;
                }
                let w = Quantized::new(bits, gs, R, cols, 500 + cols as u64);
                let (xs, xp) = prepare(cols, 4, 9 * cols as u64);
                let qs: Vec<QInput8<'_>> = xp
                    .iter()
                    .map(|p| affine8::prepared(p, cols).unwrap())
                    .collect();
                let words: [&[u32]; R] = std::array::from_fn(|r| w.row_words(r));
                let scales: [&[f32]; R] = std::array::from_fn(|r| w.row_groups(&w.scales, r));
                let biases: [&[f32]; R] = std::array::from_fn(|r| w.row_groups(&w.biases, r));
                for n in 1..=qs.len() {
                    let k = Int8Dots::new(bits, gs, &qs[..n]).unwrap();
                    let mut four = vec![f32::NAN; R * n];
                    assert!(k.rows(words, scales, biases, words[1], &mut four));
                    for r in 0..R {
                        let mut out = vec![f32::NAN; n];
                        assert!(k.row(words[r], scales[r], biases[r], &mut out));
                        assert_eq!(four[r * n..(r + 1) * n], out[..], "{bits} {gs} {cols} {n}");
                        for (i, q) in qs[..n].iter().enumerate() {
                            let got = f64::from(out[i]);
                            let want = reference(&w, r, q);
                            let (exact, bound) = exact_and_bound(&w, r, &xs[i], q);
                            assert!(
                                (got - want).abs() <= 1e-5 * bound + 1e-5,
                                "bits {bits} gs {gs} cols {cols} row {r} n {n}: {got} vs {want}"
                            );
                            assert!(
                                (got - exact).abs() <= bound,
                                "bits {bits} gs {gs} cols {cols} row {r}: {got} vs exact {exact}"
                            );
                        }
                    }
                }
                // Mismatched rows and inputs are refused, with nothing written.
                let k = Int8Dots::new(bits, gs, &qs[..1]).unwrap();
                let mut out = [f32::NAN; R];
                assert!(!k.row(&words[0][1..], scales[0], biases[0], &mut out));
                assert!(!k.rows(
                    words,
                    scales,
                    [biases[0]; R].map(|b| &b[1..]),
                    &[],
                    &mut out
                ));
                assert!(out.iter().all(|v| v.is_nan()));
                assert!(Int8Dots::new(bits, 16, &qs[..1]).is_none());
                assert!(Int8Dots::new(bits, gs, &[]).is_none());
            }
        }
    }
}

#[test]
#[cfg_attr(not(athena_host_avx512_vnni), ignore = "this CPU has no AVX-512 VNNI")]
fn panels_match_the_integer_reference() {
    use super::panel::{self, Panel, Unpacked, WeightRows, PANEL};
    const R: usize = 4;
    for bits in [4u8, 8] {
        for gs in [32usize, 64, 128] {
            for cols in [128usize, 384, 2048] {
                let w = Quantized::new(bits, gs, R, cols, 700 + cols as u64 + u64::from(bits));
                let (xs, xp) = prepare(cols, 21, 11 * cols as u64);
                let qs: Vec<QInput8<'_>> = xp
                    .iter()
                    .map(|p| affine8::prepared(p, cols).unwrap())
                    .collect();
                let mut rows: [Unpacked; R] = Default::default();
                for (r, u) in rows.iter_mut().enumerate() {
                    assert!(u.unpack(InputForm::Int8, bits, cols, w.row_words(r)));
                }
                let scales: [&[f32]; R] = std::array::from_fn(|r| w.row_groups(&w.scales, r));
                let biases: [&[f32]; R] = std::array::from_fn(|r| w.row_groups(&w.biases, r));
                for n in [1usize, 8, 16, 21] {
                    let mut four = vec![f32::NAN; R * n];
                    let mut one = vec![f32::NAN; R * n];
                    for (p, chunk) in qs[..n].chunks(PANEL).enumerate() {
                        let panel = Panel::new(bits, gs, chunk).unwrap();
                        let at = p * PANEL;
                        let all = WeightRows {
                            rows: std::array::from_fn(|r| &rows[r]),
                            scales,
                            biases,
                        };
                        assert!(panel::dots::<R>(bits, gs, all, &panel, &mut four[at..], n));
                        for r in 0..R {
                            let single = WeightRows {
                                rows: [&rows[r]],
                                scales: [scales[r]],
                                biases: [biases[r]],
                            };
                            let out = &mut one[r * n + at..];
                            assert!(panel::dots::<1>(bits, gs, single, &panel, out, n));
                        }
                    }
                    assert_eq!(four, one, "bits {bits} gs {gs} cols {cols} n {n}");
                    for r in 0..R {
                        for (k, q) in qs[..n].iter().enumerate() {
                            let got = f64::from(four[r * n + k]);
                            let want = reference(&w, r, q);
                            let (exact, bound) = exact_and_bound(&w, r, &xs[k], q);
                            assert!(
                                (got - want).abs() <= 1e-5 * bound + 1e-5,
                                "bits {bits} gs {gs} cols {cols} row {r} input {k}: {got} vs {want}"
                            );
                            assert!((got - exact).abs() <= bound, "{got} vs exact {exact}");
                        }
                    }
                }
                // Rows and panels that disagree are refused, with nothing written.
                let panel = Panel::new(bits, gs, &qs[..PANEL]).unwrap();
                let mut out = vec![f32::NAN; R * PANEL];
                let all = WeightRows {
                    rows: std::array::from_fn(|r| &rows[r]),
                    scales,
                    biases,
                };
                let short = WeightRows {
                    scales: [&scales[0][1..]; R],
                    ..all
                };
                assert!(!panel::dots::<R>(bits, gs, short, &panel, &mut out, PANEL));
                assert!(!panel::dots::<R>(
                    bits,
                    gs,
                    all,
                    &panel,
                    &mut out[1..],
                    PANEL
                ));
                assert!(out.iter().all(|v| v.is_nan()));
                assert!(Int8Dots::new(bits, 16, &qs[..1]).is_none());
                assert!(Int8Dots::new(bits, gs, &[]).is_none());
            }
        }
    }
}
