//! Times `OlmoeModel::encode` of 1 and of 64 short texts, called from Rust: the baseline of
//! the Python binding's overhead (`crates/athena-py/bench/encode_overhead.py` times the same
//! calls from Python; docs/BENCHMARKS.md has the figures).
//!
//!     cargo run --release -p athena-py --example encode_timing -- fixtures/models/base 200

use std::time::Instant;

use athena::config::OlmoeConfig;
use athena::models::olmoe::OlmoeModel;

/// The texts both timings encode: `n` short facts.
fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("The user mentioned fact number {i} today."))
        .collect()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model_dir = args.next().unwrap_or_else(|| "fixtures/models/base".into());
    let repeats: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(200);
    let mut config = OlmoeConfig::for_model(model_dir);
    config.use_mlx = false;
    let mut model = OlmoeModel::new(config);
    model.load()?;
    for n in [1, 64] {
        let texts = texts(n);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        for _ in 0..5 {
            model.encode(&refs)?;
        }
        let times: Vec<f64> = (0..repeats.max(1))
            .map(|_| {
                let start = Instant::now();
                model
                    .encode(&refs)
                    .map(|_| start.elapsed().as_secs_f64() * 1e6)
            })
            .collect::<Result<_, _>>()?;
        println!(
            "rust encode n={n}: median {:.1} us over {} calls",
            median(times),
            repeats.max(1)
        );
    }
    Ok(())
}
