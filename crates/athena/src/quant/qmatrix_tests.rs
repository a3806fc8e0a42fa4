//! Tests of [`QMatrix`] and [`AffineParams`]: validation, `mx.quantize`'s rounding,
//! dequantization, products and the MLX tensor round trip.

use candle_core::{DType, Device, Tensor};

use super::pack;
use super::scalars::Scalars;
use super::{AffineParams, QMatrix};
use crate::error::Error;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ALL_GROUP_SIZES: [usize; 3] = AffineParams::GROUP_SIZES;
const BITS: [u8; 6] = AffineParams::BITS;

fn params(bits: u8, gs: usize) -> AffineParams {
    AffineParams::new(bits, gs).unwrap()
}

/// Random weights whose rows differ in scale and offset, plus a few special groups.
fn weights(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut w: Vec<f32> = (0..rows * cols)
        .map(|i| {
            let row = i / cols;
            let scale = [0.02, 1.0, 7.0][row % 3];
            let offset = if row % 4 == 3 { 0.5 } else { 0.0 };
            scale * rng.random_range(-1.0f32..1.0) + offset
        })
        .collect();
    w[..32].fill(0.0);
    if rows > 1 {
        w[cols..cols + 32].fill(-0.25);
    }
    w
}

fn q(w: &[f32], rows: usize, cols: usize, p: AffineParams) -> QMatrix {
    QMatrix::quantize("t", w, rows, cols, p).unwrap()
}

fn naive_matmul(w: &[f32], rows: usize, cols: usize, x: &[f32], m: usize) -> Vec<f32> {
    let mut y = vec![0f32; m * rows];
    for i in 0..m {
        for r in 0..rows {
            y[i * rows + r] = (0..cols).map(|k| x[i * cols + k] * w[r * cols + k]).sum();
        }
    }
    y
}

#[test]
fn params_validate_and_name_the_field() {
    for bits in [0, 1, 7, 9, 16] {
        let err = AffineParams::new(bits, 64).unwrap_err();
        assert!(matches!(err, Error::Invalid { field: "bits", .. }), "{err}");
    }
    for gs in [0, 16, 48, 256] {
        let err = AffineParams::new(4, gs).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Invalid {
                    field: "group_size",
                    ..
                }
            ),
            "{err}"
        );
    }
    let p = params(3, 64);
    assert_eq!(p.packed_cols(128).unwrap(), 12);
    assert_eq!(params(5, 32).packed_cols(32).unwrap(), 5);
    assert_eq!(params(6, 128).packed_cols(256).unwrap(), 48);
    assert!(matches!(
        p.packed_cols(96).unwrap_err(),
        Error::Invalid {
            field: "group_size",
            ..
        }
    ));
    assert!(p.packed_cols(0).is_err());
    let raw = AffineParams {
        bits: 7,
        group_size: 64,
    };
    assert!(matches!(
        raw.packed_cols(64).unwrap_err(),
        Error::Invalid { field: "bits", .. }
    ));
}

#[test]
fn params_deserialize_from_mlx_config_and_validate() {
    let p: AffineParams =
        serde_json::from_str(r#"{"group_size": 64, "bits": 4, "mode": "affine"}"#).unwrap();
    assert_eq!(p, params(4, 64));
    let err = serde_json::from_str::<AffineParams>(r#"{"group_size": 64, "bits": 7}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bits"), "{err}");
    let err = serde_json::from_str::<AffineParams>(r#"{"group_size": 100, "bits": 4}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("group_size"), "{err}");
}

#[test]
fn quantize_dequantize_error_is_within_half_a_step() {
    let (rows, cols) = (12, 256);
    let w = weights(rows, cols, 1);
    for bits in BITS {
        for gs in ALL_GROUP_SIZES {
            let m = q(&w, rows, cols, params(bits, gs));
            let d = m.dequantize();
            let n_bins = m.params.max_code();
            let mut codes = vec![0f32; gs];
            for (i, (&orig, &back)) in w.iter().zip(&d).enumerate() {
                let (r, c) = (i / cols, i % cols);
                let g = r * (cols / gs) + c / gs;
                let step = m.scales.value(g).abs();
                let row_words = cols / 32 * usize::from(bits);
                let gw = m.params.group_words();
                let words = &m.packed[r * row_words + (c / gs) * gw..][..gw];
                pack::unpack(bits, words, &mut codes);
                let code = codes[c % gs];
                let err = (orig - back).abs();
                let slack = 1e-6 * (orig.abs() + m.biases.value(g).abs()) + 1e-12;
                // MLX shrinks the step so that the edge of larger magnitude is an integer
                // number of steps from zero; the opposite extreme can then fall just past
                // the last code and be clamped, losing up to one whole step.
                let bound = if code == n_bins { step } else { step / 2.0 };
                assert!(
                    err <= bound + slack,
                    "bits {bits} gs {gs} [{r}, {c}]: {orig} -> {back} (step {step}, code {code})"
                );
            }
        }
    }
}

#[test]
fn quantize_keeps_the_edge_and_zero_exact() {
    let cols = 64;
    let mut w: Vec<f32> = (0..cols).map(|i| (i as f32 - 20.0) * 0.037).collect();
    w[3] = 0.0;
    let edge = w[cols - 1];
    for bits in BITS {
        let d = q(&w, 1, cols, params(bits, 64)).dequantize();
        assert_eq!(d[cols - 1], edge, "bits {bits}: the edge is the bias");
        assert_eq!(d[3], 0.0, "bits {bits}: zero is on the grid");
    }
    // Constant and all-zero groups come back exactly.
    for v in [0.0f32, 0.375, -3.5] {
        let w = vec![v; 32];
        for bits in BITS {
            let d = q(&w, 1, 32, params(bits, 32)).dequantize();
            assert!(d.iter().all(|&x| x == v), "bits {bits} constant {v}: {d:?}");
        }
    }
}

#[test]
fn quantize_rejects_bad_shapes_and_values_naming_the_tensor() {
    let w = vec![0.5f32; 2 * 48];
    let err = QMatrix::quantize("blk.q_proj", &w, 2, 48, params(4, 32)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Invalid {
                field: "group_size",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("blk.q_proj"), "{err}");

    let err = QMatrix::quantize("blk.q_proj", &w, 4, 32, params(4, 32)).unwrap_err();
    assert!(
        matches!(&err, Error::Tensor { name, .. } if name == "blk.q_proj"),
        "{err}"
    );

    let mut w = vec![0.5f32; 2 * 64];
    w[64 + 40] = f32::NAN;
    let err = QMatrix::quantize("blk.q_proj", &w, 2, 64, params(4, 32)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("blk.q_proj") && msg.contains("row 1, columns 32..64"),
        "{msg}"
    );

    let mut w = vec![0.0f32; 32];
    w[0] = f32::MAX;
    w[1] = -f32::MAX;
    let err = QMatrix::quantize("big", &w, 1, 32, params(8, 32)).unwrap_err();
    assert!(err.to_string().contains("too wide"), "{err}");
}

#[test]
fn matmul_matches_dequantize_then_matmul() {
    let (rows, cols) = (10, 256);
    let w = weights(rows, cols, 2);
    for bits in BITS {
        for gs in ALL_GROUP_SIZES {
            let m = q(&w, rows, cols, params(bits, gs));
            let dw = m.dequantize();
            for n in [1usize, 3, 17] {
                let mut rng = StdRng::seed_from_u64(n as u64 * 31 + u64::from(bits));
                let x: Vec<f32> = (0..n * cols).map(|_| rng.random_range(-2.0..2.0)).collect();
                let got = m.matmul(&x, n).unwrap();
                let want = naive_matmul(&dw, rows, cols, &x, n);
                assert_close(
                    &got,
                    &want,
                    &x,
                    &dw,
                    rows,
                    cols,
                    &format!("b{bits} g{gs} m{n}"),
                );
            }
        }
    }
}

/// `got` within 1e-5 of `want`, relative to the magnitude of the summed products
/// `Σ |x·w|` of each output (an output's own value can cancel to ~0).
fn assert_close(
    got: &[f32],
    want: &[f32],
    x: &[f32],
    w: &[f32],
    rows: usize,
    cols: usize,
    what: &str,
) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (j, (&g, &e)) in got.iter().zip(want).enumerate() {
        let (i, r) = (j / rows, j % rows);
        let mag: f32 = (0..cols)
            .map(|k| (x[i * cols + k] * w[r * cols + k]).abs())
            .sum();
        assert!(
            (g - e).abs() <= 1e-5 * mag + 1e-30,
            "{what} y[{i}, {r}]: {g} vs {e} (Σ|xw| {mag})"
        );
    }
}

#[test]
fn matmul_large_runs_parallel_and_tiled() {
    // 48 rows × 4096 cols × 17 inputs is past the parallel threshold, and 4096 columns
    // make the input tiles shorter than 17 rows.
    let (rows, cols, n) = (48, 4096, 17);
    let w = weights(rows, cols, 3);
    let mut rng = StdRng::seed_from_u64(9);
    let x: Vec<f32> = (0..n * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
    for (bits, gs) in [(4, 64), (3, 128), (8, 32)] {
        let m = q(&w, rows, cols, params(bits, gs));
        let dw = m.dequantize();
        let got = m.matmul(&x, n).unwrap();
        let want = naive_matmul(&dw, rows, cols, &x, n);
        assert_close(
            &got,
            &want,
            &x,
            &dw,
            rows,
            cols,
            &format!("large b{bits} g{gs}"),
        );
        // One input row at a time gives the same rows as the batch, bit for bit.
        for i in [0, 16] {
            let one = m.matmul(&x[i * cols..(i + 1) * cols], 1).unwrap();
            assert_eq!(one, got[i * rows..(i + 1) * rows], "row {i}");
        }
    }
}

/// bf16 scales and biases are the f32 ones rounded, and the products read them through
/// the same kernels: equal to the dequantized rows' exact products.
#[test]
fn bf16_scales_are_the_rounded_values_and_multiply_alike() {
    let (rows, cols) = (9, 256);
    let w = weights(rows, cols, 13);
    let x = weights(1, cols, 14);
    for (bits, gs) in [(4, 64), (8, 64), (4, 32)] {
        let m = QMatrix::quantize("w", &w, rows, cols, params(bits, gs)).unwrap();
        let b = m.clone().with_bf16_scales();
        assert_eq!(b.scales_dtype(), DType::BF16);
        for i in 0..m.scales.len() {
            let (s, bs) = (m.scales.value(i), b.scales.value(i));
            assert_eq!(bs, half::bf16::from_f32(s).to_f32(), "scale {i}");
            let (z, bz) = (m.biases.value(i), b.biases.value(i));
            assert_eq!(bz, half::bf16::from_f32(z).to_f32(), "bias {i}");
        }
        let deq = b.dequantize();
        let got = b.matmul(&x, 1).unwrap();
        for (r, g) in got.iter().enumerate() {
            let want: f32 = deq[r * cols..(r + 1) * cols]
                .iter()
                .zip(&x)
                .map(|(a, b)| a * b)
                .sum();
            assert!(
                (g - want).abs() <= 1e-3 * (1.0 + want.abs()),
                "b{bits} row {r}: {g} vs {want}"
            );
        }
    }
}

/// A value past bf16's range (f32's largest rounds up to infinity in bf16) leaves the
/// matrix's scales and biases in f32 rather than turning them into infinities.
#[test]
fn bf16_scales_past_bf16_range_stay_f32() {
    let mut w = weights(2, 64, 15);
    w[3] = f32::MAX;
    let m = QMatrix::quantize("w", &w, 2, 64, params(4, 64)).unwrap();
    let past = |v: f32| half::bf16::from_f32(v).is_infinite();
    assert!(past(m.scales.value(0)) || past(m.biases.value(0)));
    let kept = m.clone().with_bf16_scales();
    assert_eq!(kept.scales_dtype(), DType::F32);
    assert_eq!((kept.scales, kept.biases), (m.scales, m.biases));
}

#[test]
fn quantize_half_keeps_every_weight_within_half_a_step() {
    let (rows, cols) = (6, 256);
    let w = weights(rows, cols, 11);
    for (bits, gs) in [(8, 32), (4, 64)] {
        let m = QMatrix::quantize_half("w", &w, rows, cols, params(bits, gs)).unwrap();
        assert_eq!(m.scales_dtype(), DType::F16);
        let back = m.dequantize();
        for (i, (&a, &b)) in w.iter().zip(&back).enumerate() {
            let (step, bias) = (m.scales.value(i / gs).abs(), m.biases.value(i / gs));
            // One step plus the bias's f16 rounding (half an f16 ulp: 2⁻¹¹ relative) at a
            // clamped extreme, plus f32 rounding.
            let slack = step + bias.abs() * 2f32.powi(-11);
            assert!(
                (a - b).abs() <= slack + 1e-6 * a.abs().max(1.0),
                "b{bits} [{i}]: {a} vs {b}"
            );
        }
    }
}

#[test]
fn matmul_checks_the_input_length() {
    let m = q(&weights(2, 64, 4), 2, 64, params(4, 64));
    let err = m.matmul(&[0.0; 100], 2).unwrap_err();
    assert!(matches!(err, Error::Invalid { field: "x", .. }), "{err}");
    assert!(m.matmul(&[], 0).unwrap().is_empty());
    let err = m.matmul(&[0.0; 64], usize::MAX).unwrap_err();
    assert!(matches!(err, Error::Invalid { field: "x", .. }), "{err}");
}

#[test]
fn dequantize_row_matches_the_whole_matrix() {
    let (rows, cols) = (5, 128);
    let m = q(&weights(rows, cols, 5), rows, cols, params(5, 32));
    let all = m.dequantize();
    let mut row = vec![0f32; cols];
    for r in 0..rows {
        m.dequantize_row(r, &mut row).unwrap();
        assert_eq!(row, all[r * cols..(r + 1) * cols]);
    }
    let err = m.dequantize_row(rows, &mut row).unwrap_err();
    assert!(matches!(err, Error::Invalid { field: "row", .. }), "{err}");
    let err = m.dequantize_row(0, &mut row[..10]).unwrap_err();
    assert!(matches!(err, Error::Invalid { field: "out", .. }), "{err}");
}

#[test]
fn mlx_tensors_round_trip() {
    let (rows, cols) = (6, 192);
    let m = q(&weights(rows, cols, 6), rows, cols, params(6, 64));
    let (w, s, b) = m.to_mlx(DType::F32).unwrap();
    assert_eq!(w.dims(), &[rows, 36]);
    assert_eq!(w.dtype(), DType::U32);
    assert_eq!(s.dims(), &[rows, 3]);
    let back = QMatrix::from_mlx("t", &w, &s, &b, m.params()).unwrap();
    assert_eq!((back.rows(), back.cols()), (rows, cols));
    assert_eq!(back.packed, m.packed);
    assert_eq!(back.scales, m.scales);
    assert_eq!(back.biases, m.biases);

    let (w, s, b) = m.to_mlx(DType::BF16).unwrap();
    assert_eq!(s.dtype(), DType::BF16);
    let half = QMatrix::from_mlx("t", &w, &s, &b, m.params()).unwrap();
    assert_eq!(half.scales_dtype(), DType::BF16);
    assert!(
        matches!(half.scales, Scalars::Bf16(_)),
        "bf16 scales are kept as stored"
    );
    assert_eq!(half.storage_bytes(), m.storage_bytes() - 2 * 2 * rows * 3);
    assert_eq!(half.packed, m.packed);
    for (h, f) in half.scales.to_f32_vec().iter().zip(&m.scales.to_f32_vec()) {
        assert!((h - f).abs() <= f.abs() / 128.0, "{h} vs {f}");
    }
    assert!(matches!(
        m.to_mlx(DType::U8).unwrap_err(),
        Error::Invalid { field: "dtype", .. }
    ));
}

#[test]
fn from_mlx_rejects_bad_tensors_naming_them() {
    let (rows, cols) = (4, 128);
    let p = params(4, 64);
    let m = q(&weights(rows, cols, 7), rows, cols, p);
    let (w, s, b) = m.to_mlx(DType::F16).unwrap();
    let name = "model.layers.0.self_attn.q_proj";
    let named = |err: Error, suffix: &str| match err {
        Error::Tensor { name: n, msg } => {
            assert_eq!(n, format!("{name}.{suffix}"), "{msg}");
            msg
        }
        other => panic!("expected a tensor error on {suffix}, got {other}"),
    };

    // Weight not packed in U32.
    let wf = w.to_dtype(DType::F32).unwrap();
    named(
        QMatrix::from_mlx(name, &wf, &s, &b, p).unwrap_err(),
        "weight",
    );
    // Packed width that does not match the scales (as if read at the wrong bits).
    let msg = named(
        QMatrix::from_mlx(name, &w, &s, &b, params(8, 64)).unwrap_err(),
        "weight",
    );
    assert!(
        msg.contains("16 words wide") && msg.contains("into 32"),
        "{msg}"
    );
    let narrow = w.narrow(1, 0, 8).unwrap();
    named(
        QMatrix::from_mlx(name, &narrow, &s, &b, p).unwrap_err(),
        "weight",
    );
    // Weight not 2-D.
    let flat = w.flatten_all().unwrap();
    named(
        QMatrix::from_mlx(name, &flat, &s, &b, p).unwrap_err(),
        "weight",
    );
    // Scales with the wrong number of rows, or not 2-D.
    let s3 = s.narrow(0, 0, 3).unwrap();
    let b3 = b.narrow(0, 0, 3).unwrap();
    named(
        QMatrix::from_mlx(name, &w, &s3, &b3, p).unwrap_err(),
        "scales",
    );
    let s1 = s.flatten_all().unwrap();
    named(
        QMatrix::from_mlx(name, &w, &s1, &b, p).unwrap_err(),
        "scales",
    );
    // Biases that disagree with the scales.
    named(
        QMatrix::from_mlx(name, &w, &s, &b3, p).unwrap_err(),
        "biases",
    );
    // Scales that are not floating point, or not finite.
    let su = s.to_dtype(DType::U32).unwrap();
    let bu = b.to_dtype(DType::U32).unwrap();
    named(
        QMatrix::from_mlx(name, &w, &su, &bu, p).unwrap_err(),
        "scales",
    );
    let mut bad = m.scales.to_f32_vec();
    bad[5] = f32::INFINITY;
    let sb = Tensor::from_vec(bad, (rows, 2), &Device::Cpu).unwrap();
    let msg = named(
        QMatrix::from_mlx(name, &w, &sb, &b, p).unwrap_err(),
        "scales",
    );
    assert!(msg.contains("[2, 1]"), "{msg}");
    let mut bad = m.biases.to_f32_vec();
    bad[0] = f32::NAN;
    let bb = Tensor::from_vec(bad, (rows, 2), &Device::Cpu).unwrap();
    named(
        QMatrix::from_mlx(name, &w, &s, &bb, p).unwrap_err(),
        "biases",
    );
    // Half-precision scalars are kept as stored and checked as well.
    let sh = sb.to_dtype(DType::BF16).unwrap();
    let msg = named(
        QMatrix::from_mlx(name, &w, &sh, &b, p).unwrap_err(),
        "scales",
    );
    assert!(msg.contains("inf") && msg.contains("[2, 1]"), "{msg}");
}

#[test]
fn storage_is_bits_per_weight_plus_group_parameters() {
    let (rows, cols) = (8, 256);
    let m = q(&weights(rows, cols, 8), rows, cols, params(4, 64));
    assert_eq!(m.storage_bytes(), rows * cols / 2 + rows * (cols / 64) * 8);
}
