//! Parity of [`QMatrix`] with MLX's affine quantization, against the outputs MLX itself wrote
//! to `fixtures/quant/affine.safetensors` (see `scripts/make_quant_fixtures.py`): unpacking and
//! dequantizing mlx-lm tensors, the quantized matmul, and the quantizer bit for bit.

use std::collections::HashMap;
use std::path::PathBuf;

use athena::quant::{AffineParams, QMatrix};
use candle_core::{DType, Device, Tensor};

const MATRICES: [(&str, usize, usize); 2] = [("m128", 24, 128), ("m256", 16, 256)];
const BITS: [u8; 6] = [2, 3, 4, 5, 6, 8];
const GROUP_SIZES: [usize; 3] = [32, 64, 128];

fn fixtures() -> HashMap<String, Tensor> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/quant/affine.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu).unwrap()
}

fn get<'a>(f: &'a HashMap<String, Tensor>, key: &str) -> &'a Tensor {
    f.get(key)
        .unwrap_or_else(|| panic!("fixture tensor {key} is missing"))
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn u32s(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// Every (matrix, bits, group size) entry the fixture holds: all 36 of the grid.
fn entries() -> Vec<(&'static str, usize, usize, AffineParams)> {
    let mut out = Vec::new();
    for (name, rows, cols) in MATRICES {
        for bits in BITS {
            for gs in GROUP_SIZES {
                if cols % gs == 0 {
                    out.push((name, rows, cols, AffineParams::new(bits, gs).unwrap()));
                }
            }
        }
    }
    assert_eq!(out.len(), 36);
    out
}

fn prefix(name: &str, p: AffineParams) -> String {
    format!("{name}.b{}_g{}", p.bits, p.group_size)
}

#[test]
fn dequantize_and_matmul_match_mlx() {
    let f = fixtures();
    for (name, rows, cols, p) in entries() {
        let k = prefix(name, p);
        let m = QMatrix::from_mlx(
            &k,
            get(&f, &format!("{k}.weight")),
            get(&f, &format!("{k}.scales")),
            get(&f, &format!("{k}.biases")),
            p,
        )
        .unwrap();
        assert_eq!((m.rows(), m.cols(), m.params()), (rows, cols, p));

        let want = f32s(get(&f, &format!("{k}.dequant")));
        let got = m.dequantize();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-6,
            "{k}: dequantize differs from mx.dequantize by {worst}"
        );

        let x = f32s(get(&f, &format!("{name}.x")));
        let want = f32s(get(&f, &format!("{k}.y")));
        let got = m.matmul(&x, 3).unwrap();
        assert_eq!(got.len(), 3 * rows);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-4,
            "{k}: matmul differs from mx.quantized_matmul by {worst}"
        );
        // MLX's own f32 sums are up to ~8e-5 off on these outputs (|y| up to ~190). athena's
        // are held to 1e-6 of the exact product of the same dequantized weights, relative to
        // the size of what is summed: Σ |x| · (|scale · q| + |bias|).
        let deq = m.dequantize();
        let biases = f32s(get(&f, &format!("{k}.biases")));
        let gs = p.group_size;
        for (j, &g) in got.iter().enumerate() {
            let (i, r) = (j / rows, j % rows);
            let row = &deq[r * cols..(r + 1) * cols];
            let xs = &x[i * cols..(i + 1) * cols];
            let exact: f64 = xs
                .iter()
                .zip(row)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            let mag: f64 = (0..cols)
                .map(|c| {
                    let bias = f64::from(biases[r * (cols / gs) + c / gs]);
                    f64::from(xs[c]).abs() * ((f64::from(row[c]) - bias).abs() + bias.abs())
                })
                .sum();
            let err = (f64::from(g) - exact).abs();
            assert!(err <= 1e-6 * mag, "{k} y[{i}, {r}]: {g} vs exact {exact}");
        }
    }
}

#[test]
fn quantize_is_bit_identical_to_mx_quantize() {
    let f = fixtures();
    for (name, rows, cols, p) in entries() {
        let k = prefix(name, p);
        let w = f32s(get(&f, &format!("{name}.w")));
        let m = QMatrix::quantize(&k, &w, rows, cols, p).unwrap();
        let (weight, scales, biases) = m.to_mlx(DType::F32).unwrap();
        assert_eq!(
            u32s(&weight),
            u32s(get(&f, &format!("{k}.weight"))),
            "{k}: packed codes"
        );
        for (what, ours) in [("scales", &scales), ("biases", &biases)] {
            let ours: Vec<u32> = f32s(ours).iter().map(|v| v.to_bits()).collect();
            let mlx: Vec<u32> = f32s(get(&f, &format!("{k}.{what}")))
                .iter()
                .map(|v| v.to_bits())
                .collect();
            assert_eq!(ours, mlx, "{k}: {what}");
        }
    }
}

/// mlx-lm quantizing a bf16 checkpoint: same codes from the bf16 weights, scales and biases
/// rounded to bf16; MLX then dequantizes in bf16 arithmetic, athena in f32.
#[test]
fn bf16_checkpoints_match_mlx() {
    let f = fixtures();
    for (name, rows, cols) in MATRICES {
        let w = f32s(get(&f, &format!("{name}.bf16.w")));
        for bits in [4u8, 8] {
            let p = AffineParams::new(bits, 64).unwrap();
            let k = format!("{name}.bf16.b{bits}_g64");
            let (weight, scales, biases) = (
                get(&f, &format!("{k}.weight")),
                get(&f, &format!("{k}.scales")),
                get(&f, &format!("{k}.biases")),
            );
            assert_eq!(scales.dtype(), DType::BF16);

            let ours = QMatrix::quantize(&k, &w, rows, cols, p).unwrap();
            let (ow, os, ob) = ours.to_mlx(DType::BF16).unwrap();
            assert_eq!(u32s(&ow), u32s(weight), "{k}: packed codes");
            assert_eq!(f32s(&os), f32s(scales), "{k}: scales");
            assert_eq!(f32s(&ob), f32s(biases), "{k}: biases");
            // Load-time quantization of a bf16 checkpoint keeps them so in memory.
            let held = ours.clone().with_bf16_scales();
            assert_eq!(held.scales_dtype(), DType::BF16);
            let (_, hs, hb) = held.to_mlx(DType::BF16).unwrap();
            assert_eq!(f32s(&hs), f32s(scales), "{k}: scales held in bf16");
            assert_eq!(f32s(&hb), f32s(biases), "{k}: biases held in bf16");

            let m = QMatrix::from_mlx(&k, weight, scales, biases, p).unwrap();
            assert_eq!(m.scales_dtype(), DType::BF16);
            let want = f32s(get(&f, &format!("{k}.dequant")));
            let (s, b) = (f32s(scales), f32s(biases));
            for (i, (got, want)) in m.dequantize().iter().zip(&want).enumerate() {
                let g = i / 64;
                // MLX rounds scale·q and the sum to bf16 (8 significant bits).
                let tol = (s[g].abs() * ((1u32 << bits) - 1) as f32 + b[g].abs()) / 128.0;
                assert!((got - want).abs() <= tol, "{k}[{i}]: {got} vs MLX {want}");
            }
        }
    }
}
