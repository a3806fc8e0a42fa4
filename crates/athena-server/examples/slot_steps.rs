//! Times continuous-batching steps without HTTP: `n` sequences join a slot batch together
//! (prompts of `p` tokens), then `steps` batched decode steps run over all of them.
//!
//!     cargo run --release -p athena-server --example slot_steps -- MODEL [n] [steps] [p] [f32|bf16] [none|8bit|4bit]

use std::time::Instant;

use athena::config::{ComputeDtype, OlmoeConfig, Quantization};
use athena::generate::argmax;
use athena::models::olmoe::OlmoeModel;

fn main() -> athena::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let dir = arg(1, "");
    let n: usize = arg(2, "16").parse().unwrap_or(16);
    let steps: usize = arg(3, "8").parse().unwrap_or(8);
    let p: usize = arg(4, "14").parse().unwrap_or(14);
    let dtype = if arg(5, "f32") == "bf16" {
        ComputeDtype::Bf16
    } else {
        ComputeDtype::F32
    };
    let quantization = match arg(6, "none").as_str() {
        "8bit" => Quantization::Int8,
        "4bit" => Quantization::Int4,
        _ => Quantization::None,
    };
    let mut model = OlmoeModel::new(OlmoeConfig {
        use_mlx: false,
        quantization,
        dtype,
        ..OlmoeConfig::for_model(dir)
    });
    model.load()?;
    let backend = model
        .model()
        .ok_or_else(|| athena::Error::invalid("model", "not loaded"))?;
    let vocab = backend.args().vocab_size;
    let mut batch = backend.slots();
    let t0 = Instant::now();
    let mut running = Vec::new();
    for b in 0..n {
        let prompt: Vec<u32> = (0..p)
            .map(|i| ((i * 7919 + b * 104_729) % vocab) as u32)
            .collect();
        let (slot, logits) = batch.insert(&prompt)?;
        running.push((slot, argmax(&logits)));
    }
    let prefill = t0.elapsed().as_secs_f64();
    let mut times = Vec::new();
    for _ in 0..steps {
        let t = Instant::now();
        let rows = batch.step(&running)?;
        times.push(t.elapsed().as_secs_f64());
        for (r, row) in running.iter_mut().zip(&rows) {
            r.1 = argmax(row);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{{\"n\":{n},\"dtype\":\"{dtype:?}\",\"quant\":\"{:?}\",\"prefill_s\":{prefill:.3},\"step_median_s\":{median:.4},\"step_min_s\":{:.4},\"tok_s\":{:.2}}}",
        quantization,
        times[0],
        n as f64 / median
    );
    Ok(())
}
