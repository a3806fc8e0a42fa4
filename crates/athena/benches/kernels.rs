//! Micro-benchmarks of the CPU kernels at OLMoE-1B-7B's expert shape (1024 × 2048): decode
//! (one input row) and a prefill-sized batch, for f32, bf16 and 8- and 4-bit weights.
//!
//! `cargo bench -p athena --bench kernels` (`RAYON_NUM_THREADS` sets the pool size).
//!
//! `prepare_input` times the int16 form of one input row (1024 and 2048 values).
//!
//! `pool_handoff` times the hand-off of a small product to the threads after a stretch of
//! serial work, as in a decode step: the kernel pool against rayon's.

use athena::kernels::{self, Bf16Rows, F32Rows};
use athena::quant::{AffineParams, InputForm, QMatrix};
use candle_core::DType;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::bf16;

const ROWS: usize = 1024;
const COLS: usize = 2048;

fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

fn dots(c: &mut Criterion) {
    let (a, b) = (values(COLS, 1), values(COLS, 2));
    let ab: Vec<bf16> = a.iter().map(|&v| bf16::from_f32(v)).collect();
    let mut g = c.benchmark_group("dot");
    g.throughput(Throughput::Elements(COLS as u64));
    g.bench_function("f32", |bch| bch.iter(|| kernels::dot(&a, &b)));
    g.bench_function("bf16", |bch| bch.iter(|| kernels::dot_bf16(&ab, &b)));
    g.finish();
}

/// The int16 form of one input row, prepared before every quantized product (serial work
/// between a decode step's products).
fn prepare(c: &mut Criterion) {
    let mut g = c.benchmark_group("prepare_input");
    for cols in [1024, 2048] {
        let x = values(cols, 9);
        let mut out = Vec::new();
        g.throughput(Throughput::Elements(cols as u64));
        g.bench_function(BenchmarkId::new("int16", cols), |bch| {
            bch.iter(|| kernels::affine::prepare_input(&x, &mut out))
        });
    }
    g.finish();
}

fn matmuls(c: &mut Criterion) {
    let w = values(ROWS * COLS, 3);
    let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
    let q8 = QMatrix::quantize("w8", &w, ROWS, COLS, AffineParams::new(8, 32).unwrap()).unwrap();
    let q4 = QMatrix::quantize("w4", &w, ROWS, COLS, AffineParams::new(4, 64).unwrap()).unwrap();
    for m in [1usize, 16] {
        let x = values(m * COLS, 4);
        let mut g = c.benchmark_group(format!("matmul_{ROWS}x{COLS}_m{m}"));
        g.throughput(Throughput::Elements((ROWS * COLS * m) as u64));
        g.bench_function(BenchmarkId::new("f32", m), |bch| {
            bch.iter(|| {
                kernels::matmul(
                    &F32Rows {
                        data: &w,
                        cols: COLS,
                    },
                    &x,
                    m,
                )
            })
        });
        g.bench_function(BenchmarkId::new("bf16", m), |bch| {
            bch.iter(|| {
                kernels::matmul(
                    &Bf16Rows {
                        data: &wb,
                        cols: COLS,
                    },
                    &x,
                    m,
                )
            })
        });
        g.bench_function(BenchmarkId::new("q8_g32", m), |bch| {
            bch.iter(|| q8.matmul(&x, m).unwrap())
        });
        g.bench_function(BenchmarkId::new("q4_g64", m), |bch| {
            bch.iter(|| q4.matmul(&x, m).unwrap())
        });
        // The model's path: the inputs' int16 or int8 form.
        for (name, q) in [("q8_g32", &q8), ("q4_g64", &q4)] {
            for form in [InputForm::Int16, InputForm::Int8] {
                let q = q.clone().with_input_form(form);
                g.bench_function(BenchmarkId::new(format!("{name}_{form:?}"), m), |bch| {
                    bch.iter(|| q.with_rows(|w| kernels::matmul(w, &x, m)))
                });
            }
        }
        g.finish();
    }
}

/// Decode as the model runs it: one input row against a stream of expert-sized 4- and 8-bit
/// matrices larger together than the last-level cache, through [`kernels::matmul`] (the
/// inputs' int16 or int8 form), with scales and biases in f16, bf16 or f32. Throughput is the
/// weight bytes read.
fn decode_stream(c: &mut Criterion) {
    const MATRICES: usize = 48;
    let x = values(COLS, 5);
    for (bits, gs, form, scales) in [
        (4u8, 64usize, InputForm::Int16, DType::F16),
        (4, 64, InputForm::Int16, DType::BF16),
        (4, 64, InputForm::Int16, DType::F32),
        (4, 64, InputForm::Int8, DType::F16),
        (8, 64, InputForm::Int16, DType::F16),
        (8, 64, InputForm::Int8, DType::F16),
    ] {
        let params = AffineParams::new(bits, gs).unwrap();
        let ms: Vec<QMatrix> = (0..MATRICES)
            .map(|i| {
                let w = values(ROWS * COLS, 10 + i as u32);
                let q = QMatrix::quantize("w", &w, ROWS, COLS, params).unwrap();
                match scales {
                    DType::F16 => q.with_half_scales("w").unwrap(),
                    DType::BF16 => q.with_bf16_scales(),
                    _ => q,
                }
                .with_input_form(form)
            })
            .collect();
        let bytes: usize = ms.iter().map(QMatrix::storage_bytes).sum();
        let mut g = c.benchmark_group("decode_stream");
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(format!("q{bits}_g{gs}_{form:?}_{scales:?}"), |bch| {
            bch.iter(|| {
                for m in &ms {
                    criterion::black_box(m.with_rows(|w| kernels::matmul(w, &x, 1)));
                }
            })
        });
        g.finish();
    }
}

/// Spins (without sleeping) for `d`.
fn busy(d: std::time::Duration) {
    let t = std::time::Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

fn pool_handoff(c: &mut Criterion) {
    use rayon::prelude::*;
    use std::time::Duration;
    let (serial, task) = (Duration::from_micros(200), Duration::from_micros(60));
    let mut g = c.benchmark_group("pool_handoff");
    // Each iteration: 200 µs on the calling thread, then two tasks of 60 µs (260 µs at best
    // on two threads); the excess is the cost of waking and joining the threads.
    g.bench_function("kernel_pool", |bch| {
        bch.iter(|| {
            busy(serial);
            kernels::pool::run(2, |_| busy(task));
        })
    });
    g.bench_function("rayon", |bch| {
        bch.iter(|| {
            busy(serial);
            (0..2).into_par_iter().for_each(|_| busy(task));
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = dots, prepare, matmuls, decode_stream, pool_handoff
}
criterion_main!(benches);
