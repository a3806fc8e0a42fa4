//! Latency of `MemoryBank::add` with the action head deciding, and the share of it that is
//! encoding the fact.
//!
//! ```sh
//! cargo run --release -p athena --example memory_add -- MODEL HEAD DB [ADDS] [QUANTIZATION]
//! ```
//!
//! Loads MODEL on the candle path (QUANTIZATION `none`, `8bit` or `4bit`; default `4bit`)
//! with the trained head HEAD, then adds ADDS (default 30) new facts of about 20 tokens, one
//! at a time, to the scope `user_id = bench` of the bank DB. Each add is timed in its two
//! parts, as `add` runs them: encoding the fact, then retrieval, the head's decision and the
//! transaction. Prints one JSON line of medians and percentiles.
//!
//! A scope holding fewer than `FILL` memories (env `FILL`, default 10000) is first filled up
//! with memories whose embeddings are the model's embeddings of a few facts plus noise, so that
//! retrieval works on a scope of that size without encoding every memory.

use std::time::Instant;

use athena::config::OlmoeConfig;
use athena::memory::{head_hash, model_identity, BankConfig, Decider, MemoryBank, Metadata, Scope};
use athena::models::olmoe::OlmoeModel;
use athena::options::Quantization;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model_dir, head_dir, db] = [0, 1, 2].map(|i| args.get(i).cloned());
    let (Some(model_dir), Some(head_dir), Some(db)) = (model_dir, head_dir, db) else {
        return Err("give MODEL HEAD DB [ADDS] [QUANTIZATION]".into());
    };
    let adds: usize = args.get(3).map_or(Ok(30), |s| s.parse())?;
    let quantization = match args.get(4).map_or("4bit", String::as_str) {
        "none" => Quantization::None,
        "8bit" => Quantization::Int8,
        "4bit" => Quantization::Int4,
        other => return Err(format!("unknown quantization `{other}`").into()),
    };

    let mut config = OlmoeConfig::for_model(&model_dir);
    config.use_mlx = false;
    config.quantization = quantization;
    config.action_head_path = Some(head_dir.clone().into());
    let mut model = OlmoeModel::new(config);
    model.load()?;
    let head = model.action_head().ok_or("no action head")?;
    let hash = head_hash(std::path::Path::new(&head_dir))?;
    let decider = Decider {
        head,
        head_hash: Some(&hash),
    };
    let mut bank = MemoryBank::open(&db, BankConfig::default())?;
    let scope = Scope::user("bench");
    let fill: usize = std::env::var("FILL").map_or(Ok(10_000), |s| s.parse())?;
    let held = bank.get_all(&scope, 0, u64::MAX)?.len();
    if held < fill {
        let seeds = model.encode(&[
            "Alice likes green tea every Sunday",
            "Bob repairs a red bicycle after work",
            "Chen studies organic chemistry in the morning",
            "Dana collects antique maps twice a month",
        ])?;
        let identity = model_identity(&model, seeds[0].len());
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut noise = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f32 / (1u64 << 53) as f32 - 0.5
        };
        for start in (held..fill).step_by(1000) {
            let end = (start + 1000).min(fill);
            let texts: Vec<String> = (start..end).map(|i| format!("filler memory {i}")).collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let vectors: Vec<Vec<f32>> = (start..end)
                .map(|i| {
                    let seed = &seeds[i % seeds.len()];
                    let scale = seed.iter().map(|x| x.abs()).sum::<f32>() / seed.len() as f32;
                    seed.iter().map(|x| x + scale * noise()).collect()
                })
                .collect();
            bank.add_embedded(&identity, &refs, &vectors, &scope, &Metadata::new(), None)?;
        }
    }
    let before = bank.get_all(&scope, 0, u64::MAX)?.len();

    // The first add builds the scope's cached codes: timed apart.
    let fact = |i: usize| format!("Visit {i}: the user bought figs and a bowl");
    let tokens = model
        .tokenizer()
        .ok_or("no tokenizer")?
        .encode(&fact(0), true)?
        .len();
    let mut encode_ms = Vec::new();
    let mut decide_ms = Vec::new();
    let mut total_ms = Vec::new();
    let mut first_ms = 0.0;
    let mut events = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..=adds {
        let text = fact(i + before);
        let started = Instant::now();
        let vectors = model.encode(&[&text])?;
        let encoded = Instant::now();
        let identity = model_identity(&model, vectors[0].len());
        let done = bank.add_embedded(
            &identity,
            &[&text],
            &vectors,
            &scope,
            &Metadata::new(),
            Some(decider),
        )?;
        let finished = Instant::now();
        let total = (finished - started).as_secs_f64() * 1e3;
        if i == 0 {
            first_ms = total;
            continue;
        }
        *events
            .entry(done[0].event.as_str().to_string())
            .or_default() += 1;
        encode_ms.push((encoded - started).as_secs_f64() * 1e3);
        decide_ms.push((finished - encoded).as_secs_f64() * 1e3);
        total_ms.push(total);
    }
    let mut sorted = total_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let p90 = sorted[(sorted.len() - 1) * 9 / 10];
    let (encode, decide, total) = (
        median(&mut encode_ms),
        median(&mut decide_ms),
        median(&mut total_ms),
    );
    println!(
        "{}",
        serde_json::json!({
            "scope_memories": before,
            "adds": adds,
            "fact_tokens": tokens,
            "first_add_ms": first_ms,
            "add_p50_ms": total,
            "add_p90_ms": p90,
            "encode_p50_ms": encode,
            "retrieve_decide_apply_p50_ms": decide,
            "encode_share": encode / total,
            "events": events,
        })
    );
    Ok(())
}
