//! The one generation loop: prefill, then sample → stream → decode until eos, a stop string
//! or the token budget. The CLI and the server both call [`generate`]; it runs on any
//! [`Backend`].

use std::time::{Duration, Instant};

use serde::Serialize;

use super::sampler::{Sampler, SamplingParams};
use super::stream::{StopMatcher, TokenStream};
use super::tokenizer::Tokenizer;
use crate::backend::Backend;
use crate::error::{Error, Result};

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateParams {
    /// Most new tokens to produce.
    pub max_tokens: usize,
    /// How to choose each token.
    pub sampling: SamplingParams,
    /// Strings that end the text (not included in it).
    pub stop: Vec<String>,
    /// Leave special tokens out of the text.
    pub skip_special_tokens: bool,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 128,
            sampling: SamplingParams::default(),
            stop: vec![],
            skip_special_tokens: true,
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// `max_tokens` reached, or the model's context is full.
    Length,
}

/// The result of a generation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generation {
    /// The text produced (without the prompt, eos or stop string).
    pub text: String,
    /// The ids produced (without eos).
    pub tokens: Vec<u32>,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Time spent on the prompt.
    #[serde(skip)]
    pub prefill: Duration,
    /// Time spent producing the rest.
    #[serde(skip)]
    pub decode: Duration,
}

/// Generates a continuation of `prompt` on `model`, calling `on_text` with each piece of text
/// as soon as it is complete (never a partial UTF-8 character, never a part of a stop string).
pub fn generate(
    model: &dyn Backend,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    params: &GenerateParams,
    mut on_text: impl FnMut(&str),
) -> Result<Generation> {
    let _span = tracing::info_span!("generate", prompt_tokens = prompt.len()).entered();
    if prompt.is_empty() {
        return Err(Error::invalid("prompt", "the prompt has no tokens"));
    }
    let context = model.args().max_position_embeddings;
    if prompt.len() >= context {
        return Err(Error::invalid(
            "prompt",
            format!(
                "{} tokens leave no room in the model's context of {context}",
                prompt.len()
            ),
        ));
    }
    let mut sampler = Sampler::new(params.sampling.clone())?;
    let mut stream = TokenStream::new(params.skip_special_tokens);
    let mut stops = StopMatcher::new(params.stop.iter().cloned());
    let mut history = prompt.to_vec();
    let mut tokens = Vec::new();
    let mut finish_reason = FinishReason::Length;
    let mut emit = |piece: &str, stops: &mut StopMatcher| -> bool {
        let (out, stopped) = stops.push(piece);
        if !out.is_empty() {
            on_text(&out);
        }
        stopped
    };

    let start = Instant::now();
    let mut session = model.session();
    let mut logits = first_row(session.step(&[prompt.to_vec()])?)?;
    let prefill = start.elapsed();
    let start = Instant::now();
    while tokens.len() < params.max_tokens {
        let id = sampler.sample(&logits, &history)?;
        if tokenizer.is_eos(id) {
            finish_reason = FinishReason::Stop;
            break;
        }
        tokens.push(id);
        history.push(id);
        if let Some(piece) = stream.push(tokenizer, id)? {
            if emit(&piece, &mut stops) {
                finish_reason = FinishReason::Stop;
                break;
            }
        }
        // The whole sequence (prompt and generated tokens) stays within the context.
        if tokens.len() == params.max_tokens || prompt.len() + tokens.len() >= context {
            break;
        }
        logits = first_row(session.step(&[vec![id]])?)?;
    }
    if !stops.is_stopped() {
        if let Some(rest) = stream.finish(tokenizer)? {
            if emit(&rest, &mut stops) {
                finish_reason = FinishReason::Stop;
            }
        }
    }
    let rest = stops.finish();
    if !rest.is_empty() && !stops.is_stopped() {
        on_text(&rest);
    }
    let decode = start.elapsed();
    let text = tokenizer.decode(&tokens, params.skip_special_tokens)?;
    let text = match stops.stop_string().and_then(|s| text.find(s)) {
        Some(cut) => text[..cut].to_string(),
        None => text,
    };
    Ok(Generation {
        text,
        tokens,
        prompt_tokens: prompt.len(),
        finish_reason,
        prefill,
        decode,
    })
}

fn first_row(rows: Vec<Vec<f32>>) -> Result<Vec<f32>> {
    rows.into_iter()
        .next()
        .ok_or_else(|| Error::invalid("logits", "the backend returned no rows"))
}
