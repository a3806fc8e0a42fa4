//! The measurement behind the memory bank's vector codes: exact f32 search, sign bits plus a
//! re-score, and usearch's HNSW, on synthetic 2048-wide embeddings shaped as a language model's
//! (a shared direction, topics, noise). Not part of the athena workspace.
//!
//! `cargo run --release -- N [RERANK] [hnsw]`: N memories, RERANK candidates re-scored
//! (default 200), HNSW (int8 and f16) measured too when a third argument is given. As
//! committed it re-scores on int16 values of the difference from the mean; the int8 variants
//! of BENCHMARKS differ in the two lines that build `i8s` and score it.

use rand::prelude::*;
use rand_distr_free::*;
mod rand_distr_free {
    use rand::Rng;
    pub fn gauss<R: Rng>(r: &mut R) -> f32 {
        // Box-Muller
        let u1: f32 = r.r#gen::<f32>().max(1e-12);
        let u2: f32 = r.r#gen();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }
}
use simsimd::{BinarySimilarity, SpatialSimilarity};
use std::time::Instant;

const D: usize = 2048;

fn normalize(v: &mut [f32]) { let n = v.iter().map(|x| x*x).sum::<f32>().sqrt(); v.iter_mut().for_each(|x| *x /= n); }

fn main() {
    let n: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let rerank: usize = std::env::args().nth(2).map(|s| s.parse().unwrap()).unwrap_or(200);
    let hnsw = std::env::args().nth(3).is_some();
    let mut rng = StdRng::seed_from_u64(7);
    let mean: Vec<f32> = (0..D).map(|_| gauss(&mut rng) * 2.0).collect();
    let nclusters = n / 20 + 1;
    let centers: Vec<Vec<f32>> = (0..nclusters).map(|_| (0..D).map(|_| gauss(&mut rng)).collect()).collect();
    let mut data = vec![0f32; n * D];
    for i in 0..n {
        let c = &centers[rng.gen_range(0..nclusters)];
        let row = &mut data[i*D..(i+1)*D];
        for j in 0..D { row[j] = mean[j] + c[j] + 0.7 * gauss(&mut rng); }
        normalize(row);
    }
    let nq = 200;
    let queries: Vec<Vec<f32>> = (0..nq).map(|_| {
        let i = rng.gen_range(0..n);
        let mut q: Vec<f32> = (0..D).map(|j| data[i*D+j] * 1.0 + 0.7/ (D as f32).sqrt() * gauss(&mut rng)).collect();
        normalize(&mut q); q }).collect();
    // exact
    let t = Instant::now();
    let exact: Vec<Vec<usize>> = queries.iter().map(|q| {
        let mut s: Vec<(f32, usize)> = (0..n).map(|i| (f32::dot(q, &data[i*D..(i+1)*D]).unwrap() as f32, i)).collect();
        s.sort_by(|a, b| b.0.total_cmp(&a.0)); s[..10].iter().map(|x| x.1).collect() }).collect();
    println!("exact f32: {:.3} ms/query", t.elapsed().as_secs_f64() * 1e3 / nq as f64);
    // binary codes of centered vectors + int8
    let mut center = vec![0f32; D];
    for i in 0..n { for j in 0..D { center[j] += data[i*D+j] / n as f32; } }
    let code = |v: &[f32]| -> Vec<u8> { let mut c = vec![0u8; D/8]; for j in 0..D { if v[j] - center[j] > 0.0 { c[j/8] |= 1 << (j%8); } } c };
    let bits: Vec<u8> = (0..n).flat_map(|i| code(&data[i*D..(i+1)*D])).collect();
    let (i8s, scales): (Vec<i16>, Vec<f32>) = { let mut q = Vec::with_capacity(n*D); let mut s = Vec::new();
        for i in 0..n { let row: Vec<f32> = (0..D).map(|j| data[i*D+j] - center[j]).collect(); let m = row.iter().fold(0f32, |a, x| a.max(x.abs())); let sc = m / 32767.0; s.push(sc); q.extend(row.iter().map(|x| (x / sc).round() as i16)); } (q, s) };
    let mut lat = vec![];
    let mut recall = 0.0;
    for (qi, q) in queries.iter().enumerate() {
        let t = Instant::now();
        let qc = code(q);
        let m = q.iter().fold(0f32, |a, x| a.max(x.abs())); let qs = m / 127.0;
        let q8: Vec<i8> = q.iter().map(|x| (x / qs).round() as i8).collect();
        let mut h: Vec<(u32, u32)> = (0..n).map(|i| (u8::hamming(&qc, &bits[i*D/8..(i+1)*D/8]).unwrap() as u32, i as u32)).collect();
        let r = rerank.min(n);
        if r < n { h.select_nth_unstable_by_key(r - 1, |x| x.0); h.truncate(r); }
        let mut s: Vec<(f32, usize)> = h.iter().map(|&(_, i)| { let i = i as usize; (q.iter().zip(&i8s[i*D..(i+1)*D]).map(|(a,&b)| a * b as f32).sum::<f32>() * scales[i], i) }).collect();
        s.sort_by(|a, b| b.0.total_cmp(&a.0));
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        let got: Vec<usize> = s[..10].iter().map(|x| x.1).collect();
        recall += exact[qi].iter().filter(|e| got.contains(e)).count() as f64 / 10.0;
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    println!("binary+i8 rerank {rerank}: p50 {:.3} ms p99 {:.3} ms recall@10 {:.3}", lat[nq/2], lat[nq*99/100], recall / nq as f64);
    if hnsw {
        use usearch::{Index, IndexOptions, MetricKind, ScalarKind};
        for quant in [ScalarKind::I8, ScalarKind::F16] {
        let opts = IndexOptions { dimensions: D, metric: MetricKind::Cos, quantization: quant, connectivity: 16, expansion_add: 128, expansion_search: 64, multi: false };
        let index = Index::new(&opts).unwrap(); index.reserve(n).unwrap();
        let t = Instant::now();
        for i in 0..n { index.add(i as u64, &data[i*D..(i+1)*D]).unwrap(); }
        let build = t.elapsed().as_secs_f64();
        let mut lat = vec![]; let mut recall = 0.0;
        for (qi, q) in queries.iter().enumerate() {
            let t = Instant::now(); let res = index.search(q, 10).unwrap(); lat.push(t.elapsed().as_secs_f64()*1e3);
            recall += exact[qi].iter().filter(|e| res.keys.contains(&(**e as u64))).count() as f64 / 10.0;
        }
        lat.sort_by(|a, b| a.total_cmp(b));
        println!("usearch {quant:?}: build {build:.1} s, p50 {:.3} ms p99 {:.3} ms recall@10 {:.3} mem {} B", lat[nq/2], lat[nq*99/100], recall / nq as f64, index.memory_usage());
        }
    }
}
