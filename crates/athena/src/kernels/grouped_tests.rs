//! Tests of [`super::matmul_many`]: every product equal to `matmul` of it alone, bit for bit.

use half::bf16;

use super::grouped::*;
use super::{pool, WeightMatrix};
use crate::kernels::{matmul, Bf16Rows, F32Rows};
use crate::quant::{AffineParams, InputForm, QMatrix};

fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

#[test]
fn many_products_equal_each_product_alone() {
    let (rows, cols) = (300, 512);
    let wf = values(rows * cols, 1);
    let wb: Vec<bf16> = wf.iter().map(|&v| bf16::from_f32(v)).collect();
    let q4 = QMatrix::quantize("w4", &wf, rows, cols, AffineParams::new(4, 64).unwrap());
    let q8 = QMatrix::quantize_half(
        "w8",
        &wf[..70 * cols],
        70,
        cols,
        AffineParams::new(8, 32).unwrap(),
    );
    let (q4, q8) = (q4.unwrap(), q8.unwrap());
    let f32_rows = F32Rows { data: &wf, cols };
    let bf16_rows = Bf16Rows { data: &wb, cols };
    // One, three and six input rows (six runs alone), an input with an infinity (the
    // exact path), and three rows of bf16 values (bf16 × bf16 products for bf16 rows).
    let xs: Vec<(Vec<f32>, usize)> = [1usize, 3, 6, 1, 3]
        .iter()
        .enumerate()
        .map(|(i, &m)| {
            let mut x = values(m * cols, 10 + i as u32);
            if i == 3 {
                x[5] = f32::INFINITY;
            }
            if i == 4 {
                x.iter_mut().for_each(|v| *v = bf16::from_f32(*v).to_f32());
            }
            (x, m)
        })
        .collect();
    q4.with_rows(|w4| {
        q8.with_rows(|w8| {
            let ws: [&dyn WeightMatrix; 4] = [w4, w8, &f32_rows, &bf16_rows];
            let products: Vec<Product<'_>> = ws
                .iter()
                .flat_map(|&w| xs.iter().map(move |(x, m)| Product { w, x, m: *m }))
                .collect();
            assert_each_alone(&products, "");
        })
    });
}

/// `matmul_many(products)` on one and two threads, against `matmul` of each product
/// alone, bit for bit; returns the outputs.
fn assert_each_alone(products: &[Product<'_>], what: &str) -> Vec<Vec<f32>> {
    let mut last = Vec::new();
    for threads in [1, 2] {
        let got = pool::with_threads(threads, || matmul_many(products));
        for (k, (p, y)) in products.iter().zip(&got).enumerate() {
            let alone = pool::with_threads(threads, || matmul(p.w, p.x, p.m));
            assert_eq!(y.len(), p.m * p.w.rows(), "{what} product {k}");
            let same = y
                .iter()
                .zip(&alone)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{what} product {k} (m {}) on {threads} threads", p.m);
        }
        last = got;
    }
    last
}

#[test]
fn many_inputs_against_quantized_rows_equal_each_product_alone() {
    // Prefill-sized products (the panel kernels from ten inputs), in both input
    // forms, with row counts that do and do not fill whole tasks.
    let cols = 512;
    let wf = values(300 * cols, 3);
    let q4 = QMatrix::quantize("w4", &wf, 300, cols, AffineParams::new(4, 64).unwrap());
    let q8 = QMatrix::quantize(
        "w8",
        &wf[..70 * cols],
        70,
        cols,
        AffineParams::new(8, 32).unwrap(),
    );
    let (q4, q8) = (q4.unwrap(), q8.unwrap());
    let xs: Vec<(Vec<f32>, usize)> = [9usize, 16, 20, 2]
        .iter()
        .enumerate()
        .map(|(i, &m)| (values(m * cols, 40 + i as u32), m))
        .collect();
    for form in [InputForm::Int16, InputForm::Int8] {
        let (q4, q8) = (
            q4.clone().with_input_form(form),
            q8.clone().with_input_form(form),
        );
        q4.with_rows(|w4| {
            q8.with_rows(|w8| {
                let ws: [&dyn WeightMatrix; 2] = [w4, w8];
                let products: Vec<Product<'_>> = ws
                    .iter()
                    .flat_map(|&w| xs.iter().map(move |(x, m)| Product { w, x, m: *m }))
                    .collect();
                let got = assert_each_alone(&products, &format!("{form:?}"));
                for (p, y) in products.iter().zip(&got) {
                    let exact = crate::kernels::matmul_exact(p.w, p.x, p.m);
                    for (a, e) in y.iter().zip(&exact) {
                        assert!((a - e).abs() <= 0.05 * (1.0 + e.abs()), "{a} vs {e}");
                    }
                }
            })
        });
    }
}
