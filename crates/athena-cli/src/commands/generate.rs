//! `athena generate`: text from a prompt, streamed to stdout as it comes.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use athena::generate::{
    generate, generate_constrained, ChatMessage, ChatTemplate, GenerateParams, Grammar, Grammars,
    SamplingParams,
};

use crate::agent::LoadFlags;

/// Flags of `athena generate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    load: LoadFlags,
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
    /// Keep the output to JSON valid under the JSON schema in this file.
    #[arg(long, conflicts_with = "grammar")]
    json_schema: Option<PathBuf>,
    /// Keep the output to the grammar in this file (llguidance's Lark syntax, which can embed
    /// JSON schemas with `%json {...}`).
    #[arg(long)]
    grammar: Option<PathBuf>,
}

/// The grammar `--json-schema` or `--grammar` names, read from its file.
fn grammar(a: &Args) -> Result<Option<Grammar>> {
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    if let Some(p) = &a.json_schema {
        let schema = serde_json::from_str(&read(p)?)
            .with_context(|| format!("{} is not JSON", p.display()))?;
        return Ok(Some(Grammar::JsonSchema(schema)));
    }
    Ok(a.grammar.as_ref().map(read).transpose()?.map(Grammar::Lark))
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
    let grammar = grammar(&a)?;
    let loaded = a.load.load()?;
    let model = loaded.model().context("the model did not load")?;
    let tokenizer = loaded.text_tokenizer()?;
    let constraint = match &grammar {
        None => None,
        Some(g) => {
            let grammars = Grammars::new(tokenizer, model.args().vocab_size)?;
            let source = a.json_schema.as_ref().or(a.grammar.as_ref());
            let name = source.map(|p| p.display().to_string()).unwrap_or_default();
            Some(grammars.compile(g).with_context(|| name)?)
        }
    };
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
    let on_text = |piece: &str| {
        // A closed stdout (e.g. `| head`) must not abort generation with a panic.
        let _ = out.write_all(piece.as_bytes()).and_then(|_| out.flush());
    };
    let g = match constraint {
        None => generate(model, tokenizer, &ids, &params, on_text),
        Some(c) => generate_constrained(model, tokenizer, &ids, &params, c, on_text),
    }
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
