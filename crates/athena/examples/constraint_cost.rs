//! What constrained decoding's token masks cost beside the decode step they follow.
//!
//! ```sh
//! cargo run --release -p athena --example constraint_cost -- MODEL_DIR [STEPS] [BATCH,...] [f32|bf16]
//! ```
//!
//! Loads MODEL_DIR on candle (default dtype bf16), starts BATCH sequences (default 1 and 16)
//! of a 16-token prompt under a JSON schema (an array of records; a sequence whose answer is
//! complete starts a new one), and runs STEPS batched decode steps (default 32). Each step is timed in two
//! parts: the batched forward pass, and for every row the grammar's work (computing the allowed
//! tokens and taking the drawn token into the grammar) apart from the draw under the mask.
//! Prints one JSON line per batch size with the medians over the steps and the grammar's share
//! of the whole step.

use std::time::Instant;

use athena::config::{ComputeDtype, OlmoeConfig};
use athena::generate::{Grammar, Sampler, SamplingParams};
use athena::models::olmoe::OlmoeModel;
use serde_json::json;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args
        .first()
        .ok_or("usage: constraint_cost MODEL_DIR [STEPS] [BATCH,...]")?;
    let steps: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(32);
    let batches: Vec<usize> = match args.get(2) {
        Some(list) => list.split(',').map(str::parse).collect::<Result<_, _>>()?,
        None => vec![1, 16],
    };
    let mut config = OlmoeConfig::for_model(dir.as_str());
    config.use_mlx = false;
    config.dtype = match args.get(3).map(String::as_str) {
        Some("f32") => ComputeDtype::F32,
        _ => ComputeDtype::Bf16,
    };
    let mut model = OlmoeModel::new(config);
    model.load()?;
    let backend = model.model().ok_or("the model did not load")?;
    let tokenizer = model.tokenizer().ok_or("the model has no tokenizer")?;
    let start = Instant::now();
    let grammars = model.grammars()?;
    let trie_ms = start.elapsed().as_secs_f64() * 1e3;
    let schema = json!({
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 24},
                "age": {"type": "integer", "minimum": 0, "maximum": 120},
                "city": {"enum": ["Paris", "Rome", "Oslo", "Lima"]},
                "score": {"type": "number"},
            },
            "required": ["name", "age", "city", "score"],
            "additionalProperties": false,
        },
    });
    let start = Instant::now();
    let proto = grammars.compile(&Grammar::JsonSchema(schema))?;
    let compile_ms = start.elapsed().as_secs_f64() * 1e3;
    let prompt = tokenizer.encode(
        "A list of people, as JSON, with their ages and cities:",
        true,
    )?;
    let prompt = &prompt[..prompt.len().min(16)];
    for &batch in &batches {
        let mut slots = backend.slots();
        let mut rows = Vec::new();
        let prompts: Vec<&[u32]> = (0..batch).map(|_| prompt).collect();
        for (i, inserted) in slots.insert_many(&prompts).into_iter().enumerate() {
            let (slot, logits) = inserted?;
            let sampler = Sampler::new(SamplingParams {
                temperature: 1.0,
                seed: i as u64,
                ..Default::default()
            })?;
            rows.push((slot, logits, sampler, proto.clone(), Vec::<u32>::new()));
        }
        let (mut forward, mut mask, mut sample) = (Vec::new(), Vec::new(), Vec::new());
        let mut restarts = 0;
        for _ in 0..steps {
            let (mut mask_s, mut sample_s) = (0.0, 0.0);
            let mut next = Vec::with_capacity(batch);
            for (slot, logits, sampler, constraint, history) in &mut rows {
                let t0 = Instant::now();
                let allowed = constraint.allowed()?.to_vec();
                let t1 = Instant::now();
                let id = sampler.sample_allowed(logits, history, &allowed)?;
                let t2 = Instant::now();
                constraint.commit(id)?;
                if constraint.is_finished() {
                    // A complete answer starts over (the text goes on; the timing is what
                    // counts).
                    *constraint = proto.clone();
                    restarts += 1;
                }
                let t3 = Instant::now();
                mask_s += (t1 - t0 + (t3 - t2)).as_secs_f64();
                sample_s += (t2 - t1).as_secs_f64();
                history.push(id);
                next.push((*slot, id));
            }
            mask.push(mask_s * 1e3);
            sample.push(sample_s * 1e3);
            let start = Instant::now();
            let out = slots.step(&next)?;
            forward.push(start.elapsed().as_secs_f64() * 1e3);
            for (row, logits) in rows.iter_mut().zip(out) {
                row.1 = logits;
            }
        }
        let (f, m, d) = (median(forward), median(mask), median(sample));
        println!(
            "{}",
            json!({
                "batch": batch,
                "steps": steps,
                "dtype": format!("{:?}", model.config().dtype),
                "vocab": grammars.vocab_size(),
                "trie_build_ms": trie_ms,
                "schema_compile_ms": compile_ms,
                "median_forward_ms": f,
                "median_mask_ms_per_step": m,
                "median_mask_ms_per_token": m / batch as f64,
                "median_masked_sampling_ms_per_step": d,
                "mask_share_of_step": m / (f + m + d),
                "answers_completed": restarts,
            })
        );
    }
    Ok(())
}
