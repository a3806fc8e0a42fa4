//! `athena generate`: text from a prompt, streamed to stdout as it comes.

use std::io::Write;

use anyhow::{Context, Result};
use athena::generate::{
    generate, ChatMessage, ChatTemplate, GenerateParams, SamplingParams, Tokenizer,
};

use crate::model::ModelArgs;

/// Flags of `athena generate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// A system message (with --chat).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Most new tokens.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Keep the k most likely tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Nucleus sampling mass.
    #[arg(long)]
    top_p: Option<f32>,
    /// Drop tokens below min_p × the top probability.
    #[arg(long)]
    min_p: Option<f32>,
    /// Penalise repeated tokens (> 1 discourages them).
    #[arg(long)]
    repetition_penalty: Option<f32>,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop when this string appears (repeatable).
    #[arg(long)]
    stop: Vec<String>,
}

/// Runs `athena generate`.
pub fn run(a: Args) -> Result<()> {
    let sampling = SamplingParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        repetition_penalty: a.repetition_penalty,
        seed: a.seed,
    };
    sampling.validate()?;
    let (dir, model) = a.model.load()?;
    let tokenizer = Tokenizer::from_dir(&dir)?;
    let prompt = if a.chat {
        let mut messages = vec![];
        if let Some(system) = a.system {
            messages.push(ChatMessage::system(system));
        }
        messages.push(ChatMessage::user(a.prompt));
        let builtin;
        let template = match tokenizer.chat_template() {
            Some(t) => t,
            None => {
                tracing::info!("the checkpoint has no chat template; using athena's default");
                builtin = ChatTemplate::builtin(tokenizer.special_tokens().clone())?;
                &builtin
            }
        };
        template.render(&messages, true)?
    } else {
        a.prompt
    };
    let ids = tokenizer.encode(&prompt, !a.chat)?;
    let params = GenerateParams {
        max_tokens: a.max_tokens,
        sampling,
        stop: a.stop,
        skip_special_tokens: true,
    };
    let mut out = std::io::stdout().lock();
    let g = generate(&model, &tokenizer, &ids, &params, |piece| {
        // A closed stdout (e.g. `| head`) must not abort generation with a panic.
        let _ = out.write_all(piece.as_bytes()).and_then(|_| out.flush());
    })
    .context("generation failed")?;
    let _ = writeln!(out);
    let decode_s = g.decode.as_secs_f64();
    eprintln!(
        "[{} prompt tokens, {} generated, {:?}; prefill {:.1} tok/s, decode {:.1} tok/s]",
        g.prompt_tokens,
        g.tokens.len(),
        g.finish_reason,
        g.prompt_tokens as f64 / g.prefill.as_secs_f64().max(1e-9),
        g.tokens.len().saturating_sub(1) as f64 / decode_s.max(1e-9),
    );
    Ok(())
}
