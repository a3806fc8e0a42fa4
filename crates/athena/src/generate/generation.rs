//! The one generation loop: prefill, then sample → stream → decode until eos, a stop string
//! or the token budget. The CLI and the server both call [`generate`]; it runs on any
//! [`Backend`].

use std::time::{Duration, Instant};

use serde::Serialize;

use super::constraint::Constraint;
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

/// One sequence's generation as a state machine, driven by whoever runs the model: it takes
/// each row of logits, samples, detokenizes, watches for eos, stop strings and the token
/// budget, and says which token to feed next. [`generate`] drives one on a session; the server
/// drives many on a [`crate::backend::SlotBatch`]. With a [`Constraint`] every token is drawn
/// from those the grammar allows, and the sequence ends when the grammar is complete.
#[derive(Debug)]
pub struct SequenceGenerator {
    sampler: Sampler,
    constraint: Option<Constraint>,
    stream: TokenStream,
    stops: StopMatcher,
    history: Vec<u32>,
    tokens: Vec<u32>,
    prompt_tokens: usize,
    context: usize,
    max_tokens: usize,
    skip_special_tokens: bool,
    finish_reason: Option<FinishReason>,
}

/// What one row of logits produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advance {
    /// Text completed by this token (possibly empty; never part of a character or of a stop
    /// string).
    pub text: String,
    /// The token to feed the model next; `None` once the sequence is finished.
    pub next: Option<u32>,
    /// Set when the sequence has just finished.
    pub finished: Option<FinishReason>,
}

impl SequenceGenerator {
    /// Checks the prompt against `context` (the model's `max_position_embeddings`) and the
    /// sampling parameters, and starts a sequence.
    pub fn new(prompt: &[u32], params: &GenerateParams, context: usize) -> Result<Self> {
        if prompt.is_empty() {
            return Err(Error::invalid("prompt", "the prompt has no tokens"));
        }
        if prompt.len() >= context {
            return Err(Error::invalid(
                "prompt",
                format!(
                    "{} tokens leave no room in the model's context of {context}",
                    prompt.len()
                ),
            ));
        }
        Ok(SequenceGenerator {
            sampler: Sampler::new(params.sampling.clone())?,
            constraint: None,
            stream: TokenStream::new(params.skip_special_tokens),
            stops: StopMatcher::new(params.stop.iter().cloned()),
            history: prompt.to_vec(),
            tokens: Vec::new(),
            prompt_tokens: prompt.len(),
            context,
            max_tokens: params.max_tokens,
            skip_special_tokens: params.skip_special_tokens,
            finish_reason: (params.max_tokens == 0).then_some(FinishReason::Length),
        })
    }

    /// Keeps the output inside `constraint`'s grammar: each token is drawn from those it allows,
    /// an end-of-sequence token only where the grammar accepts the text, and the sequence ends
    /// ([`FinishReason::Stop`]) once the grammar admits nothing more.
    pub fn with_constraint(mut self, constraint: Constraint) -> Self {
        self.constraint = Some(constraint);
        self
    }

    /// Why the sequence ended, once it has.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish_reason
    }

    /// Tokens produced so far (without eos).
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Tokens in the prompt.
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }

    /// Takes the logits of the last position: samples a token and returns the text it
    /// completes and what to feed next. Called after the sequence finished, it does nothing.
    pub fn advance(&mut self, tokenizer: &Tokenizer, logits: &[f32]) -> Result<Advance> {
        let mut text = String::new();
        if self.finish_reason.is_some() {
            return Ok(Advance {
                text,
                next: None,
                finished: None,
            });
        }
        let id = match &mut self.constraint {
            None => self.sampler.sample(logits, &self.history)?,
            Some(c) => self
                .sampler
                .sample_allowed(logits, &self.history, c.allowed()?)?,
        };
        let mut finished = None;
        if tokenizer.is_eos(id) {
            finished = Some(FinishReason::Stop);
        } else {
            if let Some(c) = &mut self.constraint {
                c.commit(id)?;
                if c.is_finished() {
                    finished = Some(FinishReason::Stop);
                }
            }
            self.tokens.push(id);
            self.history.push(id);
            if let Some(piece) = self.stream.push(tokenizer, id)? {
                let (out, stopped) = self.stops.push(&piece);
                text.push_str(&out);
                if stopped {
                    finished = Some(FinishReason::Stop);
                }
            }
            // The whole sequence (prompt and generated tokens) stays within the context.
            if finished.is_none()
                && (self.tokens.len() >= self.max_tokens
                    || self.prompt_tokens + self.tokens.len() >= self.context)
            {
                finished = Some(FinishReason::Length);
            }
        }
        if let Some(reason) = finished {
            self.finish_reason = Some(reason);
            text.push_str(&self.flush(tokenizer)?);
        }
        Ok(Advance {
            text,
            next: finished.is_none().then_some(id),
            finished,
        })
    }

    /// Ends the sequence early (a cancelled request): what text was held back is returned.
    pub fn stop(&mut self, tokenizer: &Tokenizer, reason: FinishReason) -> Result<String> {
        if self.finish_reason.is_some() {
            return Ok(String::new());
        }
        self.finish_reason = Some(reason);
        self.flush(tokenizer)
    }

    /// The text still held by the detokenizer and the stop matcher, at the end.
    fn flush(&mut self, tokenizer: &Tokenizer) -> Result<String> {
        let mut text = String::new();
        if !self.stops.is_stopped() {
            if let Some(rest) = self.stream.finish(tokenizer)? {
                let (out, stopped) = self.stops.push(&rest);
                text.push_str(&out);
                if stopped {
                    self.finish_reason = Some(FinishReason::Stop);
                }
            }
        }
        let rest = self.stops.finish();
        if !rest.is_empty() && !self.stops.is_stopped() {
            text.push_str(&rest);
        }
        Ok(text)
    }

    /// The finished generation (timings zero; the driver fills them in).
    pub fn into_generation(self, tokenizer: &Tokenizer) -> Result<Generation> {
        let text = tokenizer.decode(&self.tokens, self.skip_special_tokens)?;
        let text = match self.stops.stop_string().and_then(|s| text.find(s)) {
            Some(cut) => text[..cut].to_string(),
            None => text,
        };
        Ok(Generation {
            text,
            tokens: self.tokens,
            prompt_tokens: self.prompt_tokens,
            finish_reason: self.finish_reason.unwrap_or(FinishReason::Length),
            prefill: Duration::ZERO,
            decode: Duration::ZERO,
        })
    }
}

/// Generates a continuation of `prompt` on `model`, calling `on_text` with each piece of text
/// as soon as it is complete (never a partial UTF-8 character, never a part of a stop string).
pub fn generate(
    model: &dyn Backend,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    params: &GenerateParams,
    on_text: impl FnMut(&str),
) -> Result<Generation> {
    let seq = SequenceGenerator::new(prompt, params, model.args().max_position_embeddings)?;
    run(model, tokenizer, prompt, seq, || true, on_text)
}

/// [`generate`] that asks `keep_going` before each decoding step and stops with
/// [`Error::Cancelled`] once it answers `false` (a reader of the text that went away).
pub fn generate_while(
    model: &dyn Backend,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    params: &GenerateParams,
    keep_going: impl FnMut() -> bool,
    on_text: impl FnMut(&str),
) -> Result<Generation> {
    let seq = SequenceGenerator::new(prompt, params, model.args().max_position_embeddings)?;
    run(model, tokenizer, prompt, seq, keep_going, on_text)
}

/// [`generate`] with the output kept inside `constraint`'s grammar (a JSON schema, a Lark
/// grammar: see [`super::Grammars::compile`]). The output is complete under the grammar unless
/// the generation ends by `max_tokens`, the context or a stop string
/// ([`FinishReason::Length`], or [`FinishReason::Stop`] with a stop string in `params`).
pub fn generate_constrained(
    model: &dyn Backend,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    params: &GenerateParams,
    constraint: Constraint,
    on_text: impl FnMut(&str),
) -> Result<Generation> {
    let seq = SequenceGenerator::new(prompt, params, model.args().max_position_embeddings)?
        .with_constraint(constraint);
    run(model, tokenizer, prompt, seq, || true, on_text)
}

/// Drives `seq` on a fresh session of `model` while `keep_going` says so.
fn run(
    model: &dyn Backend,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    mut seq: SequenceGenerator,
    mut keep_going: impl FnMut() -> bool,
    mut on_text: impl FnMut(&str),
) -> Result<Generation> {
    let _span = tracing::info_span!("generate", prompt_tokens = prompt.len()).entered();
    let start = Instant::now();
    let mut session = model.session();
    let mut logits = first_row(session.step(&[prompt.to_vec()])?)?;
    let prefill = start.elapsed();
    let start = Instant::now();
    while seq.finish_reason().is_none() {
        let step = seq.advance(tokenizer, &logits)?;
        if !step.text.is_empty() {
            on_text(&step.text);
        }
        match step.next {
            Some(_) if !keep_going() => return Err(Error::Cancelled { what: "generate" }),
            Some(id) => logits = first_row(session.step(&[vec![id]])?)?,
            None => break,
        }
    }
    let decode = start.elapsed();
    Ok(Generation {
        prefill,
        decode,
        ..seq.into_generation(tokenizer)?
    })
}

fn first_row(rows: Vec<Vec<f32>>) -> Result<Vec<f32>> {
    rows.into_iter()
        .next()
        .ok_or_else(|| Error::internal("logits", "the backend returned no rows"))
}
