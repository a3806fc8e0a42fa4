//! Streamed generations: the scheduler's events as server-sent events in OpenAI's chunk shapes,
//! with a chat answer's tool call streamed as `tool_calls` deltas.

use std::convert::Infallible;

use athena::generate::tool_call::{ToolCallStream, ToolStreamPiece};
use athena::generate::FinishReason;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::mpsc::UnboundedReceiver;

use super::common::{now, request_id};
use crate::api::Usage;
use crate::engine::Event;
use crate::error::ApiError;
use crate::responses::{
    ChatCompletionChunk, ChunkChoice, Completion, CompletionChoice, Delta, Finish,
    FunctionCallDelta, NoLogprobs, ObjectKind, Role, ToolCallDelta, ToolCallKind,
};
use crate::state::{AppState, Ticket};

/// What a streamed chunk looks like for each endpoint.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    Chat,
    Completion,
}

/// What one streamed chunk says about a choice.
enum Piece {
    /// Nothing (the usage chunk).
    None,
    /// The role that opens a chat choice.
    Opening(usize),
    /// New text of a choice.
    Text(usize, String),
    /// A tool call opens: its id and function name.
    CallStart(usize, String, String),
    /// More of a tool call's arguments.
    Arguments(usize, String),
    /// A choice's end.
    Finish(usize, Finish),
}

/// A new tool call's id: `call_` and characters unique in the server's lifetime.
pub(super) fn call_id() -> String {
    request_id("call").replacen('-', "_", 1)
}

fn chat_delta(piece: Piece) -> Option<ChunkChoice> {
    let choice = |index, delta, finish_reason| ChunkChoice {
        index,
        delta,
        logprobs: NoLogprobs::default(),
        finish_reason,
    };
    let call = |index, call: ToolCallDelta| {
        let delta = Delta {
            tool_calls: Some(vec![call]),
            ..Delta::default()
        };
        choice(index, delta, None)
    };
    Some(match piece {
        Piece::None => return None,
        Piece::Opening(index) => {
            let delta = Delta {
                role: Some(Role::Assistant),
                content: Some(String::new()),
                tool_calls: None,
            };
            choice(index, delta, None)
        }
        Piece::Text(index, text) => {
            let delta = Delta {
                content: Some(text),
                ..Delta::default()
            };
            choice(index, delta, None)
        }
        Piece::CallStart(index, id, name) => call(
            index,
            ToolCallDelta {
                index: 0,
                id: Some(id),
                kind: Some(ToolCallKind::Function),
                function: FunctionCallDelta {
                    name: Some(name),
                    arguments: String::new(),
                },
            },
        ),
        Piece::Arguments(index, arguments) => call(
            index,
            ToolCallDelta {
                index: 0,
                id: None,
                kind: None,
                function: FunctionCallDelta {
                    name: None,
                    arguments,
                },
            },
        ),
        Piece::Finish(index, reason) => choice(index, Delta::default(), Some(reason)),
    })
}

/// One streamed event's body: a chat chunk or a completion chunk.
fn chunk(
    kind: Kind,
    id: &str,
    model: &str,
    created: u64,
    piece: Piece,
    usage: Option<Usage>,
) -> SseEvent {
    let json = match kind {
        Kind::Chat => serde_json::to_string(&ChatCompletionChunk {
            id: id.to_string(),
            object: ObjectKind::ChatCompletionChunk,
            created,
            model: model.to_string(),
            choices: chat_delta(piece).into_iter().collect(),
            usage,
        }),
        Kind::Completion => {
            let choice = |index, text, finish_reason| CompletionChoice {
                index,
                text,
                logprobs: NoLogprobs::default(),
                finish_reason,
            };
            let choices = match piece {
                Piece::Text(index, text) => vec![choice(index, text, None)],
                Piece::Finish(index, reason) => vec![choice(index, String::new(), Some(reason))],
                // Completions have no roles and no tool calls.
                _ => vec![],
            };
            serde_json::to_string(&Completion {
                id: id.to_string(),
                object: ObjectKind::TextCompletion,
                created,
                model: model.to_string(),
                choices,
                usage,
            })
        }
    };
    // Serializing these types cannot fail (no maps with non-string keys, no foreign types).
    SseEvent::default().data(json.unwrap_or_default())
}

/// The pieces of a choice's text: the text itself, or, when the answer may be a tool call,
/// what its [`ToolCallStream`] makes of it.
fn pieces(index: usize, out: Vec<ToolStreamPiece>) -> impl Iterator<Item = Piece> {
    out.into_iter().map(move |p| match p {
        ToolStreamPiece::Text(t) => Piece::Text(index, t),
        ToolStreamPiece::CallStart(name) => Piece::CallStart(index, call_id(), name),
        ToolStreamPiece::Arguments(a) => Piece::Arguments(index, a),
    })
}

/// How a streamed or whole chat choice ends: `tool_calls` for a whole call.
pub(super) fn finish(reason: FinishReason, is_call: bool) -> Finish {
    match reason {
        FinishReason::Stop if is_call => Finish::ToolCalls,
        other => other.into(),
    }
}

/// Server-sent events of a generation, ending with `[DONE]`. The stream owns the receiver and
/// the ticket: a client that goes away drops both, and the scheduler frees the sequences. With
/// `tools`, each chat choice's text goes through a [`ToolCallStream`]. `choices` counts every
/// choice of every prompt, `n` the choices per prompt.
pub(super) fn sse(
    kind: Kind,
    state: &AppState,
    rx: UnboundedReceiver<Event>,
    ticket: Ticket,
    (choices, n): (usize, usize),
    include_usage: bool,
    tools: bool,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let id = request_id(match kind {
        Kind::Chat => "chatcmpl",
        Kind::Completion => "cmpl",
    });
    let model = state.config.model_id.clone();
    let created = now();
    let limit = state.config.limits.generation_timeout;
    let deadline = tokio::time::Instant::now() + limit;
    // The role opens every chat choice.
    let opening: Vec<SseEvent> = match kind {
        Kind::Chat => (0..choices)
            .map(|i| chunk(kind, &id, &model, created, Piece::Opening(i), None))
            .collect(),
        Kind::Completion => vec![],
    };
    struct St {
        rx: UnboundedReceiver<Event>,
        _ticket: Ticket,
        done: usize,
        usage: Usage,
        finished: bool,
        calls: Option<Vec<ToolCallStream>>,
    }
    let st = St {
        rx,
        _ticket: ticket,
        done: 0,
        usage: Usage::default(),
        finished: false,
        calls: tools.then(|| (0..choices).map(|_| ToolCallStream::default()).collect()),
    };
    let body = stream::unfold(st, move |mut st| {
        let (id, model) = (id.clone(), model.clone());
        async move {
            if st.finished {
                return None;
            }
            let mut events = Vec::new();
            if st.done == choices {
                st.finished = true;
                if include_usage {
                    st.usage.total_tokens = st.usage.prompt_tokens + st.usage.completion_tokens;
                    let usage = Some(st.usage);
                    events.push(chunk(kind, &id, &model, created, Piece::None, usage));
                }
                events.push(SseEvent::default().data("[DONE]"));
                return Some((events, st));
            }
            let Ok(event) = tokio::time::timeout_at(deadline, st.rx.recv()).await else {
                // Ending the stream drops the receiver: the scheduler frees the sequences.
                st.finished = true;
                let e = ApiError::timeout("the generation", limit);
                events.push(SseEvent::default().data(e.body()));
                return Some((events, st));
            };
            let mut push = |piece| events.push(chunk(kind, &id, &model, created, piece, None));
            match event {
                Some(Event::Text { index, text }) => {
                    let index = index as usize;
                    match st.calls.as_mut().and_then(|c| c.get_mut(index)) {
                        Some(call) => pieces(index, call.push(&text)).for_each(&mut push),
                        None => push(Piece::Text(index, text)),
                    }
                }
                Some(Event::Done {
                    index,
                    finish_reason,
                    prompt_tokens,
                    completion_tokens,
                }) => {
                    st.done += 1;
                    if (index as usize).is_multiple_of(n) {
                        st.usage.prompt_tokens += prompt_tokens;
                    }
                    st.usage.completion_tokens += completion_tokens;
                    let index = index as usize;
                    let mut is_call = false;
                    if let Some(call) = st.calls.as_mut().and_then(|c| c.get_mut(index)) {
                        pieces(index, call.finish()).for_each(&mut push);
                        is_call = call.is_call();
                    }
                    push(Piece::Finish(index, finish(finish_reason, is_call)));
                }
                Some(Event::Failed { message, .. }) => {
                    st.finished = true;
                    let e = ApiError::internal(message);
                    events.push(SseEvent::default().data(e.body()));
                }
                None => {
                    st.finished = true;
                    events.push(
                        SseEvent::default()
                            .data(ApiError::internal("the scheduler stopped").body()),
                    );
                }
            }
            Some((events, st))
        }
    })
    .flat_map(|events| stream::iter(events.into_iter().map(Ok)));
    let all = stream::iter(opening.into_iter().map(Ok)).chain(body);
    Sse::new(all).keep_alive(KeepAlive::default())
}
