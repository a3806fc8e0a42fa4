//! The OpenAI request and response bodies, and the parsing of a request into validated types
//! ("parse, don't validate"): a [`GenerationRequest`] is trusted by the rest of the server.

use std::collections::HashMap;

use athena::generate::{GenerateParams, SamplingParams};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::refused::{RefusedChatFields, RefusedCompletionFields};
use crate::structured::{MessageToolCall, ResponseFormat, Tool, ToolChoice};

/// Most choices one request may ask for.
pub const MAX_N: usize = 16;
/// Most stop strings.
pub const MAX_STOP: usize = 8;
/// Longest stop string, in bytes.
pub const MAX_STOP_BYTES: usize = 256;
/// Most messages in a chat.
pub const MAX_MESSAGES: usize = 1024;
/// Most inputs in one embeddings request.
pub const MAX_EMBED_INPUTS: usize = 256;
/// Most logit_bias entries.
pub const MAX_LOGIT_BIAS: usize = 1024;
/// Most memories in one memory-actions request.
pub const MAX_MEMORIES: usize = 1024;
/// `max_tokens` when a request gives none (bounded by the room left in the context).
pub const DEFAULT_MAX_TOKENS: usize = 256;

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// A message's content: a string, or a list of parts of which the text ones count.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts (`{"type": "text", "text": ...}`).
    Parts(Vec<ContentPart>),
}

/// One content part.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ContentPart {
    /// The part's type; only `text` is supported.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a text part.
    #[serde(default)]
    pub text: Option<String>,
}

/// One chat message.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct Message {
    /// `system`, `user`, `assistant`, ...
    pub role: String,
    /// What it says (`null` for an assistant turn without text).
    #[serde(default)]
    pub content: Option<Content>,
    /// The tool calls of an assistant turn.
    #[serde(default)]
    pub tool_calls: Option<Vec<MessageToolCall>>,
    /// The call a `tool` message answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// The speaker's name (not shown to the model).
    #[serde(default)]
    pub name: Option<String>,
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct StreamOptions {
    /// Send a last chunk with the usage.
    #[serde(default)]
    pub include_usage: bool,
}

/// The sampling and budget fields that chat and completions share.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct Sampling {
    /// Most new tokens.
    #[schema(minimum = 1)]
    pub max_tokens: Option<i64>,
    /// The newer spelling of `max_tokens` (chat).
    #[schema(minimum = 1)]
    pub max_completion_tokens: Option<i64>,
    /// 0 to 2; 0 is greedy. Default 1.
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    /// (0, 1].
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub top_p: Option<f64>,
    /// ≥ 1; -1 or 0 mean no limit, as in vLLM.
    #[schema(minimum = -1)]
    pub top_k: Option<i64>,
    /// [0, 1).
    #[schema(minimum = 0, exclusive_maximum = 1)]
    pub min_p: Option<f64>,
    /// > 0, at most 100.
    #[schema(exclusive_minimum = 0, maximum = 100)]
    pub repetition_penalty: Option<f64>,
    /// Only 0 is supported.
    #[schema(minimum = -2, maximum = 2)]
    pub presence_penalty: Option<f64>,
    /// Only 0 is supported.
    #[schema(minimum = -2, maximum = 2)]
    pub frequency_penalty: Option<f64>,
    /// Seed of the random generator.
    pub seed: Option<i64>,
    /// Stop strings.
    pub stop: Option<Stop>,
    /// Choices, 1 to [`MAX_N`].
    #[schema(minimum = 1, maximum = 16)]
    pub n: Option<i64>,
    /// Stream server-sent events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Stream options.
    pub stream_options: Option<StreamOptions>,
    /// Token id (as a string) → bias in [-100, 100].
    pub logit_bias: Option<HashMap<String, f64>>,
    /// Log probabilities are not supported; only null/false/0 is accepted.
    #[schema(value_type = Option<bool>)]
    pub logprobs: Option<serde_json::Value>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ChatRequest {
    /// The model name (any; the server serves one).
    #[serde(default)]
    pub model: Option<String>,
    /// The conversation, 1 to [`MAX_MESSAGES`] messages.
    #[schema(min_items = 1)]
    pub messages: Vec<Message>,
    /// Sampling and budget.
    #[serde(flatten)]
    pub sampling: Sampling,
    /// Keep the output to JSON: any object, or valid under a schema.
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    /// Functions the model may call.
    #[serde(default)]
    #[schema(max_items = 128)]
    pub tools: Option<Vec<Tool>>,
    /// Whether, and which, function to call (default `auto` with tools, else `none`).
    #[serde(default)]
    pub tool_choice: Option<ToolChoice>,
    /// Accepted either way: a choice makes at most one call.
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// Fields that change the output and are not supported (a 400 when set).
    #[serde(flatten)]
    pub refused: RefusedChatFields,
}

/// `prompt` of a completion: text, texts, ids, or lists of ids.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Prompt {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(Vec<String>),
    /// One prompt as token ids.
    Ids(Vec<i64>),
    /// Several prompts as token ids.
    IdLists(Vec<Vec<i64>>),
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CompletionRequest {
    /// The model name.
    #[serde(default)]
    pub model: Option<String>,
    /// The prompt(s).
    pub prompt: Prompt,
    /// Echo is not supported; only false is accepted.
    #[serde(default)]
    pub echo: Option<bool>,
    /// Sampling and budget.
    #[serde(flatten)]
    pub sampling: Sampling,
    /// Keep the output to JSON: any object, or valid under a schema.
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    /// Fields that change the output and are not supported (a 400 when set).
    #[serde(flatten)]
    pub refused: RefusedCompletionFields,
}

/// `input` of an embeddings request.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(Vec<String>),
}

/// `POST /v1/embeddings`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct EmbeddingRequest {
    /// The model name.
    #[serde(default)]
    pub model: Option<String>,
    /// The text(s).
    pub input: EmbeddingInput,
    /// `float` (default) or `base64` (little-endian f32, as the openai client asks).
    #[serde(default)]
    #[schema(pattern = "^(float|base64)$")]
    pub encoding_format: Option<String>,
}

/// `POST /v1/memory/actions`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct MemoryActionRequest {
    /// The new fact.
    #[schema(min_length = 1)]
    pub fact: String,
    /// The memories held.
    #[serde(default)]
    pub memories: Vec<MemoryItem>,
}

/// A memory held, as a memory-actions request names it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct MemoryItem {
    /// Its id, unique in the request; a target operation names it.
    pub id: String,
    /// Its text.
    pub text: String,
}

/// Token counts.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq, ToSchema)]
pub struct Usage {
    /// Prompt tokens (over every choice's prompt, counted once per prompt).
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// The sum.
    pub total_tokens: usize,
}

/// A validated generation request: what the scheduler needs, per choice.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// Budget, sampling, stops.
    pub params: GenerateParams,
    /// Bias per token id.
    pub logit_bias: Vec<(u32, f32)>,
    /// Choices per prompt.
    pub n: usize,
    /// Stream events.
    pub stream: bool,
    /// Send a usage chunk at the end of a stream.
    pub include_usage: bool,
    /// Whether `max_tokens` was given (else it is the room left, up to the default).
    pub max_tokens: Option<usize>,
}

fn finite(
    param: &str,
    v: Option<f64>,
    ok: impl Fn(f64) -> bool,
    range: &str,
) -> Result<Option<f32>, ApiError> {
    match v {
        None => Ok(None),
        Some(x) if x.is_finite() && ok(x) => Ok(Some(x as f32)),
        Some(x) => Err(ApiError::bad_request(
            param,
            format!("`{param}` must be a finite number {range}, got {x}"),
        )),
    }
}

impl Sampling {
    /// Validates every field against the model's vocabulary.
    pub fn parse(&self, vocab: usize) -> Result<GenerationRequest, ApiError> {
        let max_tokens = match self.max_completion_tokens.or(self.max_tokens) {
            None => None,
            Some(m) if m <= 0 => {
                return Err(ApiError::bad_request(
                    "max_tokens",
                    format!("`max_tokens` must be at least 1, got {m}"),
                ))
            }
            Some(m) => Some(usize::try_from(m).unwrap_or(usize::MAX)),
        };
        let temperature = finite(
            "temperature",
            self.temperature,
            |t| (0.0..=2.0).contains(&t),
            "in [0, 2]",
        )?
        .unwrap_or(1.0);
        let top_p = finite("top_p", self.top_p, |p| p > 0.0 && p <= 1.0, "in (0, 1]")?;
        let min_p = finite(
            "min_p",
            self.min_p,
            |p| (0.0..1.0).contains(&p),
            "in [0, 1)",
        )?;
        let repetition_penalty = finite(
            "repetition_penalty",
            self.repetition_penalty,
            |r| r > 0.0 && r <= 100.0,
            "in (0, 100]",
        )?;
        for (param, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if let Some(x) = finite(param, v, |x| (-2.0..=2.0).contains(&x), "in [-2, 2]")? {
                if x != 0.0 {
                    return Err(ApiError::bad_request(
                        param,
                        format!("`{param}` is not supported (only 0); use repetition_penalty"),
                    ));
                }
            }
        }
        let top_k = match self.top_k {
            None | Some(-1) | Some(0) => None,
            Some(k) if k < 0 => {
                return Err(ApiError::bad_request(
                    "top_k",
                    format!("`top_k` must be at least 1 (or -1 for no limit), got {k}"),
                ))
            }
            Some(k) => Some(usize::try_from(k).unwrap_or(usize::MAX).min(vocab)),
        };
        let n = match self.n {
            None => 1,
            Some(n) if n >= 1 && n as u64 <= MAX_N as u64 => n as usize,
            Some(n) => {
                return Err(ApiError::bad_request(
                    "n",
                    format!("`n` must be between 1 and {MAX_N}, got {n}"),
                ))
            }
        };
        let stop = match &self.stop {
            None => vec![],
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stop.len() > MAX_STOP {
            return Err(ApiError::bad_request(
                "stop",
                format!("at most {MAX_STOP} stop strings, got {}", stop.len()),
            ));
        }
        if let Some(s) = stop.iter().find(|s| s.len() > MAX_STOP_BYTES) {
            return Err(ApiError::bad_request(
                "stop",
                format!(
                    "a stop string is {} bytes; at most {MAX_STOP_BYTES}",
                    s.len()
                ),
            ));
        }
        let mut logit_bias = Vec::new();
        if let Some(map) = &self.logit_bias {
            if map.len() > MAX_LOGIT_BIAS {
                return Err(ApiError::bad_request(
                    "logit_bias",
                    format!("at most {MAX_LOGIT_BIAS} entries, got {}", map.len()),
                ));
            }
            for (k, &v) in map {
                let id = k
                    .parse::<u32>()
                    .ok()
                    .filter(|&id| (id as usize) < vocab)
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "logit_bias",
                            format!("`{k}` is not a token id below the vocabulary size {vocab}"),
                        )
                    })?;
                if !(v.is_finite() && (-100.0..=100.0).contains(&v)) {
                    return Err(ApiError::bad_request(
                        "logit_bias",
                        format!("the bias of token {id} must be in [-100, 100], got {v}"),
                    ));
                }
                logit_bias.push((id, v as f32));
            }
            logit_bias.sort_by_key(|b| b.0);
        }
        match &self.logprobs {
            None | Some(serde_json::Value::Null) | Some(serde_json::Value::Bool(false)) => {}
            Some(v) if v.as_i64() == Some(0) => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    "logprobs",
                    "log probabilities are not supported",
                ))
            }
        }
        let sampling = SamplingParams {
            temperature,
            top_k,
            top_p,
            min_p,
            repetition_penalty,
            seed: self.seed.map(|s| s as u64).unwrap_or(0),
        };
        sampling
            .validate()
            .map_err(|e| ApiError::bad_request("sampling", e.to_string()))?;
        let stream = self.stream.unwrap_or(false);
        Ok(GenerationRequest {
            params: GenerateParams {
                max_tokens: max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
                sampling,
                stop,
                skip_special_tokens: true,
            },
            logit_bias,
            n,
            stream,
            include_usage: stream
                && self
                    .stream_options
                    .as_ref()
                    .map(|o| o.include_usage)
                    .unwrap_or(false),
            max_tokens,
        })
    }
}

impl GenerationRequest {
    /// Fits the budget to a prompt of `prompt_tokens` in a context of `context`: an explicit
    /// `max_tokens` that does not fit is an error; the default shrinks to the room left.
    pub fn fit(&self, prompt_tokens: usize, context: usize) -> Result<GenerateParams, ApiError> {
        if prompt_tokens == 0 {
            return Err(ApiError::bad_request("prompt", "the prompt has no tokens"));
        }
        if prompt_tokens >= context {
            return Err(ApiError::bad_request(
                "messages",
                format!("the prompt has {prompt_tokens} tokens; the model's context is {context}"),
            ));
        }
        let room = context - prompt_tokens;
        let mut params = self.params.clone();
        params.max_tokens = match self.max_tokens {
            Some(m) if m > room => {
                return Err(ApiError::bad_request(
                    "max_tokens",
                    format!(
                        "the prompt ({prompt_tokens} tokens) plus max_tokens ({m}) exceeds the model's context of {context}"
                    ),
                ))
            }
            Some(m) => m,
            None => DEFAULT_MAX_TOKENS.min(room),
        };
        Ok(params)
    }

    /// The sampling parameters of choice `i`: choices after the first get their own seeds.
    pub fn for_choice(params: &GenerateParams, i: usize) -> GenerateParams {
        let mut p = params.clone();
        p.sampling.seed = p.sampling.seed.wrapping_add(i as u64);
        p
    }
}

/// Base64 (standard alphabet, padded) of `bytes`.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    fn sampling(json: &str) -> Result<GenerationRequest, ApiError> {
        serde_json::from_str::<Sampling>(json).unwrap().parse(512)
    }

    #[test]
    fn out_of_range_fields_are_bad_requests() {
        for bad in [
            r#"{"max_tokens": 0}"#,
            r#"{"max_tokens": -3}"#,
            r#"{"temperature": -1}"#,
            r#"{"temperature": 3}"#,
            r#"{"top_p": 0}"#,
            r#"{"top_p": 1.5}"#,
            r#"{"min_p": 1}"#,
            r#"{"top_k": -5}"#,
            r#"{"n": 0}"#,
            r#"{"n": 1000000}"#,
            r#"{"presence_penalty": 1}"#,
            r#"{"logit_bias": {"999999": 1}}"#,
            r#"{"logit_bias": {"abc": 1}}"#,
            r#"{"logit_bias": {"5": 1000}}"#,
            r#"{"stop": ["a","b","c","d","e","f","g","h","i"]}"#,
            r#"{"logprobs": true}"#,
        ] {
            let e = sampling(bad).unwrap_err();
            assert_eq!(e.status, 400, "{bad}");
        }
    }

    #[test]
    fn defaults_and_the_context_bound() {
        let r = sampling("{}").unwrap();
        assert_eq!(r.n, 1);
        assert_eq!(r.params.sampling.temperature, 1.0);
        assert_eq!(
            r.fit(10, 256).unwrap().max_tokens,
            DEFAULT_MAX_TOKENS.min(246)
        );
        let r = sampling(r#"{"max_tokens": 300}"#).unwrap();
        assert_eq!(r.fit(10, 256).unwrap_err().status, 400);
        assert_eq!(r.fit(300, 256).unwrap_err().status, 400);
        let r = sampling(r#"{"top_k": -1, "stop": "x", "seed": 7, "n": 2}"#).unwrap();
        assert_eq!(r.params.sampling.top_k, None);
        assert_eq!(r.params.stop, vec!["x".to_string()]);
        assert_eq!(GenerationRequest::for_choice(&r.params, 1).sampling.seed, 8);
    }
}
