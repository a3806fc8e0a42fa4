//! The machine's memory bandwidth, the ceiling of weight-bound decoding: a STREAM-style copy
//! and a read-only pass (what a decode step does to its weights), each on every thread of
//! rayon's pool, best of a few repetitions.

use std::time::Instant;

use rayon::prelude::*;

/// Measured bandwidth, in GB/s (10⁹ bytes a second).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bandwidth {
    /// `b[i] = a[i]`, bytes read plus bytes written (STREAM's "copy" convention).
    pub copy_gb_s: f64,
    /// `Σ a[i]·b[i]` over two arrays: bytes read.
    pub read_gb_s: f64,
}

/// Measures over arrays of `mib` MiB each (much larger than the caches), best of `reps`.
pub fn measure(mib: usize, reps: usize) -> Bandwidth {
    let n = (mib.max(1) << 20) / std::mem::size_of::<f32>();
    let a: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let mut b = vec![1f32; n];
    let chunk = n.div_ceil(rayon::current_num_threads() * 4).max(1);
    let bytes = (2 * n * std::mem::size_of::<f32>()) as f64;
    let (mut copy, mut read) = (f64::MAX, f64::MAX);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        b.par_chunks_mut(chunk)
            .zip(a.par_chunks(chunk))
            .for_each(|(b, a)| b.copy_from_slice(a));
        copy = copy.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let s: f32 = a
            .par_chunks(chunk)
            .zip(b.par_chunks(chunk))
            .map(|(a, b)| super::float::dot(a, b))
            .sum();
        read = read.min(t.elapsed().as_secs_f64());
        std::hint::black_box(s);
    }
    Bandwidth {
        copy_gb_s: bytes / copy.max(1e-9) / 1e9,
        read_gb_s: bytes / read.max(1e-9) / 1e9,
    }
}
