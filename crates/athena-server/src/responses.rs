//! The bodies the server answers with, as types: the handlers build these and nothing else, and
//! `/openapi.json` describes them from the same definitions, so the description cannot drift
//! from what is sent.

use std::collections::BTreeMap;

use athena::generate::FinishReason;
use serde::Serialize;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::ToSchema;

use crate::api::Usage;

/// The `object` field: what kind of object a body or an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum ObjectKind {
    /// A list (`/v1/models`, `/v1/embeddings`).
    #[serde(rename = "list")]
    List,
    /// A model of the list.
    #[serde(rename = "model")]
    Model,
    /// One embedding.
    #[serde(rename = "embedding")]
    Embedding,
    /// A whole chat completion.
    #[serde(rename = "chat.completion")]
    ChatCompletion,
    /// One streamed chunk of a chat completion.
    #[serde(rename = "chat.completion.chunk")]
    ChatCompletionChunk,
    /// A text completion, whole or one streamed chunk.
    #[serde(rename = "text_completion")]
    TextCompletion,
    /// A memory action.
    #[serde(rename = "memory.action")]
    MemoryAction,
}

/// Why a choice stopped, as OpenAI spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Finish {
    /// A stop string or the end-of-sequence token.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The answer is a tool call.
    #[serde(rename = "tool_calls")]
    ToolCalls,
}

impl From<FinishReason> for Finish {
    fn from(r: FinishReason) -> Self {
        match r {
            FinishReason::Stop => Finish::Stop,
            FinishReason::Length => Finish::Length,
        }
    }
}

/// The author of a generated message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The model.
    Assistant,
}

/// The schema of a field that is always `null` (log probabilities, which are not computed).
fn null() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Null)
}

/// Log probabilities: never computed, always `null`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NoLogprobs(Option<()>);

/// `GET /v1/models`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelList {
    /// `list`.
    pub object: ObjectKind,
    /// The one model served.
    pub data: Vec<ModelCard>,
}

/// The model served.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelCard {
    /// Its name (`--served-model-name`, else `--model`).
    pub id: String,
    /// `model`.
    pub object: ObjectKind,
    /// Always 0.
    pub created: u64,
    /// `athena`.
    pub owned_by: String,
    /// The backend that runs it.
    pub backend: Option<String>,
    /// Its context, in tokens.
    pub max_model_len: Option<usize>,
}

/// Whether the server takes requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Serving.
    Ok,
    /// Shutting down: no new requests.
    Draining,
}

/// `GET /health`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    /// `ok` (200) or `draining` (503).
    pub status: HealthStatus,
    /// The backend that runs the model.
    pub backend: Option<String>,
    /// The model's name.
    pub model: String,
    /// Sequences decoding now.
    pub running: usize,
    /// Sequences waiting for a slot.
    pub waiting: usize,
    /// Sequences admitted (running or waiting).
    pub requests_in_server: usize,
    /// Tokens admitted.
    pub tokens_in_server: usize,
    /// `--token-budget`.
    pub token_budget: usize,
    /// `--max-concurrency`.
    pub max_concurrency: usize,
    /// `--queue`.
    pub queue: usize,
    /// Seconds since the server started.
    pub uptime_s: u64,
}

/// The assistant's answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AssistantMessage {
    /// `assistant`.
    pub role: Role,
    /// The generated text; `null` when the answer is a tool call.
    pub content: Option<String>,
    /// The answer's tool call, when it is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

/// The kind of a tool call: a function's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ToolCallKind {
    /// A function call.
    Function,
}

/// A tool call the model made.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ToolCall {
    /// `call_…`, unique in the server's lifetime.
    pub id: String,
    /// `function`.
    #[serde(rename = "type")]
    pub kind: ToolCallKind,
    /// The function and its arguments.
    pub function: FunctionCall,
}

/// The function a tool call calls.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FunctionCall {
    /// One of the request's functions.
    pub name: String,
    /// The arguments: a JSON object as text, valid under the function's parameters (unless the
    /// answer was cut off by `max_tokens`).
    pub arguments: String,
}

/// A piece of a streamed tool call: the first gives its id, kind and name, the next ones more
/// of its arguments.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ToolCallDelta {
    /// The call's index in the message (always 0: one call per answer).
    pub index: usize,
    /// `call_…`, in the first piece.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `function`, in the first piece.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<ToolCallKind>,
    /// The name (first piece) and more of the arguments.
    pub function: FunctionCallDelta,
}

/// What a streamed piece adds to a call's function.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FunctionCallDelta {
    /// The function's name, in the first piece.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// More of the arguments' text.
    pub arguments: String,
}

/// One choice of a chat completion.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChatChoice {
    /// Its index.
    pub index: usize,
    /// The answer.
    pub message: AssistantMessage,
    /// Always `null`.
    #[schema(schema_with = null)]
    pub logprobs: NoLogprobs,
    /// Why it stopped.
    pub finish_reason: Option<Finish>,
}

/// `POST /v1/chat/completions` without `stream`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChatCompletion {
    /// `chatcmpl-…`.
    pub id: String,
    /// `chat.completion`.
    pub object: ObjectKind,
    /// Unix seconds.
    pub created: u64,
    /// The model's name.
    pub model: String,
    /// One per choice.
    pub choices: Vec<ChatChoice>,
    /// Token counts.
    pub usage: Usage,
}

/// What a streamed chat chunk adds to a choice.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Delta {
    /// `assistant`, in the first chunk of each choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// More text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// More of a tool call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// One choice of a streamed chat chunk.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChunkChoice {
    /// The choice's index.
    pub index: usize,
    /// What it adds.
    pub delta: Delta,
    /// Always `null`.
    #[schema(schema_with = null)]
    pub logprobs: NoLogprobs,
    /// Set in the choice's last chunk.
    pub finish_reason: Option<Finish>,
}

/// One server-sent event of a streamed chat completion.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChatCompletionChunk {
    /// The same for every chunk of a stream.
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: ObjectKind,
    /// Unix seconds.
    pub created: u64,
    /// The model's name.
    pub model: String,
    /// The choices this chunk adds to (none in the usage chunk).
    pub choices: Vec<ChunkChoice>,
    /// In the last chunk, when `stream_options.include_usage` asks for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// One choice of a text completion (whole, or a streamed piece of it).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CompletionChoice {
    /// Its index (prompts × `n`, prompt-major).
    pub index: usize,
    /// The text (in a stream, the new text).
    pub text: String,
    /// Always `null`.
    #[schema(schema_with = null)]
    pub logprobs: NoLogprobs,
    /// Why it stopped.
    pub finish_reason: Option<Finish>,
}

/// `POST /v1/completions`, whole, or one server-sent event of a stream.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Completion {
    /// `cmpl-…`.
    pub id: String,
    /// `text_completion`.
    pub object: ObjectKind,
    /// Unix seconds.
    pub created: u64,
    /// The model's name.
    pub model: String,
    /// The choices (in a stream, those this chunk adds to).
    pub choices: Vec<CompletionChoice>,
    /// Token counts: always in a whole completion; in a stream, in the last chunk when
    /// `stream_options.include_usage` asks for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// An embedding: floats, or their little-endian f32 bytes in base64.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Vector {
    /// `encoding_format: float`.
    Float(Vec<f32>),
    /// `encoding_format: base64`.
    Base64(String),
}

/// One embedding.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Embedding {
    /// `embedding`.
    pub object: ObjectKind,
    /// The input's index.
    pub index: usize,
    /// The vector.
    pub embedding: Vector,
}

/// Tokens an embeddings request read.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct EmbeddingUsage {
    /// Tokens of every input.
    pub prompt_tokens: usize,
    /// The same.
    pub total_tokens: usize,
}

/// `POST /v1/embeddings`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EmbeddingList {
    /// `list`.
    pub object: ObjectKind,
    /// One per input, in order.
    pub data: Vec<Embedding>,
    /// The model's name.
    pub model: String,
    /// Token counts.
    pub usage: EmbeddingUsage,
}

/// The head's decision for the fact.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Action {
    /// The chosen operation (`ADD`, `UPDATE`, `DELETE`, `NOOP` for the default head).
    pub op: String,
    /// The memory a target operation names; `null` otherwise.
    pub target: Option<String>,
    /// Probability of every operation.
    pub probabilities: BTreeMap<String, f32>,
    /// Probability of every memory as the target, by id; empty without memories.
    pub target_probabilities: BTreeMap<String, f32>,
}

impl From<athena::models::action_head::Action> for Action {
    fn from(a: athena::models::action_head::Action) -> Self {
        Action {
            op: a.op,
            target: a.target,
            probabilities: a.probabilities,
            target_probabilities: a.target_probabilities,
        }
    }
}

/// `POST /v1/memory/actions`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemoryAction {
    /// `memory.action`.
    pub object: ObjectKind,
    /// The model's name.
    pub model: String,
    /// The decision.
    pub action: Action,
    /// Whether the server's head was trained (`--head`); an untrained one decides at random.
    pub head_trained: bool,
    /// Why the decision should not be trusted, when it should not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// One server-sent event of a stream, as an event parser reads it: its `data` is a chunk of the
/// route's kind (`ChatCompletionChunk` or `Completion`, as JSON text), or `[DONE]` at the end.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StreamEvent {
    /// The event's `data:` line.
    pub data: String,
    /// The event's name, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
}
