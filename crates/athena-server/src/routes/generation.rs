//! Chat and text completions: render, submit to the scheduler, answer whole or streamed.

use std::convert::Infallible;
use std::time::Instant;

use athena::generate::{ChatMessage, ChatTemplate, FinishReason, GenerateParams};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::common::{admit, check_model, context, now, parse, request_id, tokenize};
use crate::api::{self, ChatRequest, CompletionRequest, Content, GenerationRequest, Prompt, Usage};
use crate::engine::{Event, Job};
use crate::error::{ApiError, ErrorBody};
use crate::responses::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk, ChunkChoice, Completion,
    CompletionChoice, Delta, Finish, NoLogprobs, ObjectKind, Role, StreamEvent,
};
use crate::state::{AppState, Shared, Ticket};

/// The chat's messages as the template sees them.
fn messages(req: &ChatRequest) -> Result<Vec<ChatMessage>, ApiError> {
    if req.messages.is_empty() {
        return Err(ApiError::bad_request(
            "messages",
            "`messages` must not be empty",
        ));
    }
    if req.messages.len() > api::MAX_MESSAGES {
        return Err(ApiError::bad_request(
            "messages",
            format!(
                "at most {} messages, got {}",
                api::MAX_MESSAGES,
                req.messages.len()
            ),
        ));
    }
    req.messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if m.role.is_empty() {
                return Err(ApiError::bad_request(
                    "messages",
                    format!("message {i} has an empty role"),
                ));
            }
            let content = match &m.content {
                None => String::new(),
                Some(Content::Text(t)) => t.clone(),
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for p in parts {
                        match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => text.push_str(t),
                            (kind, _) => {
                                return Err(ApiError::bad_request(
                                    "messages",
                                    format!(
                                    "message {i}: content parts of type `{kind}` are not supported"
                                ),
                                ))
                            }
                        }
                    }
                    text
                }
            };
            Ok(ChatMessage::new(m.role.clone(), content))
        })
        .collect()
}

/// The prompt ids of a chat, through the checkpoint's template or athena's default one.
pub(super) fn chat_prompt(state: &AppState, msgs: &[ChatMessage]) -> Result<Vec<u32>, ApiError> {
    let tok = state
        .model
        .tokenizer()
        .ok_or_else(|| ApiError::internal("the model is not loaded"))?;
    let builtin;
    let template = match tok.chat_template() {
        Some(t) => t,
        None => {
            builtin = ChatTemplate::builtin(tok.special_tokens().clone())?;
            &builtin
        }
    };
    // A template that refuses the conversation (`raise_exception`) is the client's problem.
    let text = template
        .render(msgs, true)
        .map_err(|e| ApiError::bad_request("messages", e.to_string()))?;
    Ok(tok.encode(&text, false)?)
}

/// Submits every choice of every prompt on one channel.
fn submit(
    state: &AppState,
    prompts: Vec<(Vec<u32>, GenerateParams)>,
    req: &GenerationRequest,
) -> Result<UnboundedReceiver<Event>, ApiError> {
    let (tx, rx) = unbounded_channel();
    let mut index = 0u32;
    for (prompt, params) in prompts {
        for i in 0..req.n {
            let job = Job {
                prompt: prompt.clone(),
                params: GenerationRequest::for_choice(&params, i),
                logit_bias: req.logit_bias.clone(),
                index,
                events: tx.clone(),
                submitted: Instant::now(),
            };
            state
                .engine
                .submit(job)
                .map_err(|_| ApiError::unavailable("the scheduler has stopped"))?;
            index += 1;
        }
    }
    Ok(rx)
}

/// One finished choice.
struct Choice {
    text: String,
    finish_reason: Option<FinishReason>,
}

/// Waits for every choice, within the generation timeout (past it the receiver is dropped and
/// the scheduler frees the sequences); the usage counts each prompt once.
async fn collect(
    state: &AppState,
    rx: UnboundedReceiver<Event>,
    choices: usize,
    n: usize,
) -> Result<(Vec<Choice>, Usage), ApiError> {
    let limit = state.config.limits.generation_timeout;
    tokio::time::timeout(limit, collect_all(rx, choices, n))
        .await
        .map_err(|_| ApiError::timeout("the generation", limit))?
}

async fn collect_all(
    mut rx: UnboundedReceiver<Event>,
    choices: usize,
    n: usize,
) -> Result<(Vec<Choice>, Usage), ApiError> {
    let mut out: Vec<Choice> = (0..choices)
        .map(|_| Choice {
            text: String::new(),
            finish_reason: None,
        })
        .collect();
    let mut usage = Usage::default();
    let mut done = 0;
    while done < choices {
        match rx.recv().await {
            Some(Event::Text { index, text }) => {
                if let Some(c) = out.get_mut(index as usize) {
                    c.text.push_str(&text);
                }
            }
            Some(Event::Done {
                index,
                finish_reason,
                prompt_tokens,
                completion_tokens,
            }) => {
                if let Some(c) = out.get_mut(index as usize) {
                    c.finish_reason = Some(finish_reason);
                }
                if (index as usize).is_multiple_of(n) {
                    usage.prompt_tokens += prompt_tokens;
                }
                usage.completion_tokens += completion_tokens;
                done += 1;
            }
            Some(Event::Failed { message, .. }) => return Err(ApiError::internal(message)),
            None => return Err(ApiError::internal("the scheduler stopped")),
        }
    }
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
    Ok((out, usage))
}

/// What a streamed chunk looks like for each endpoint.
#[derive(Clone, Copy)]
enum Kind {
    Chat,
    Completion,
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
        Kind::Chat => {
            let choices = match piece {
                Piece::None => vec![],
                Piece::Opening(index) => vec![ChunkChoice {
                    index,
                    delta: Delta {
                        role: Some(Role::Assistant),
                        content: Some(String::new()),
                    },
                    logprobs: NoLogprobs::default(),
                    finish_reason: None,
                }],
                Piece::Text(index, text) => vec![ChunkChoice {
                    index,
                    delta: Delta {
                        role: None,
                        content: Some(text),
                    },
                    logprobs: NoLogprobs::default(),
                    finish_reason: None,
                }],
                Piece::Finish(index, reason) => vec![ChunkChoice {
                    index,
                    delta: Delta::default(),
                    logprobs: NoLogprobs::default(),
                    finish_reason: Some(reason),
                }],
            };
            serde_json::to_string(&ChatCompletionChunk {
                id: id.to_string(),
                object: ObjectKind::ChatCompletionChunk,
                created,
                model: model.to_string(),
                choices,
                usage,
            })
        }
        Kind::Completion => {
            let choice = |index, text, finish_reason| CompletionChoice {
                index,
                text,
                logprobs: NoLogprobs::default(),
                finish_reason,
            };
            let choices = match piece {
                Piece::None | Piece::Opening(_) => vec![],
                Piece::Text(index, text) => vec![choice(index, text, None)],
                Piece::Finish(index, reason) => vec![choice(index, String::new(), Some(reason))],
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

/// What one streamed chunk says about a choice.
enum Piece {
    /// Nothing (the usage chunk).
    None,
    /// The role that opens a chat choice.
    Opening(usize),
    /// New text of a choice.
    Text(usize, String),
    /// A choice's end.
    Finish(usize, Finish),
}

/// Server-sent events of a generation, ending with `[DONE]`. The stream owns the receiver and
/// the ticket: a client that goes away drops both, and the scheduler frees the sequences.
fn sse(
    kind: Kind,
    state: &AppState,
    rx: UnboundedReceiver<Event>,
    ticket: Ticket,
    choices: usize,
    n: usize,
    include_usage: bool,
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
    }
    let st = St {
        rx,
        _ticket: ticket,
        done: 0,
        usage: Usage::default(),
        finished: false,
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
            match event {
                Some(Event::Text { index, text }) => {
                    let piece = Piece::Text(index as usize, text);
                    events.push(chunk(kind, &id, &model, created, piece, None));
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
                    let piece = Piece::Finish(index as usize, finish_reason.into());
                    events.push(chunk(kind, &id, &model, created, piece, None));
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

/// A chat completion, whole or streamed as server-sent events.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai", request_body = ChatRequest,
    responses(
        (status = 200, description = "The completion: JSON, or with `stream` server-sent events \
            whose `data:` lines are `ChatCompletionChunk`s and, last, `[DONE]`",
            content((ChatCompletion = "application/json"), (StreamEvent = "text/event-stream"))),
        (status = 404, description = "`model` names a model this server does not serve", body = ErrorBody),
    ))]
pub(super) async fn chat(
    State(s): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: ChatRequest = parse(&s, body)?;
    check_model(&s, req.model.as_deref())?;
    let (ctx, vocab) = context(&s)?;
    let gen = req.sampling.parse(vocab)?;
    req.refused.check()?;
    let msgs = messages(&req)?;
    let bytes = msgs.iter().map(|m| m.role.len() + m.content.len()).sum();
    s.tokenizing
        .check_len("messages", "the conversation", bytes)?;
    let state = s.clone();
    let ids = s.tokenizing.run(move || chat_prompt(&state, &msgs)).await?;
    let params = gen.fit(ids.len(), ctx)?;
    let cost = (ids.len() + params.max_tokens).saturating_mul(gen.n);
    let ticket = admit(&s, "max_tokens", gen.n, cost)?;
    let rx = submit(&s, vec![(ids, params)], &gen)?;
    if gen.stream {
        return Ok(
            sse(Kind::Chat, &s, rx, ticket, gen.n, gen.n, gen.include_usage).into_response(),
        );
    }
    let (choices, usage) = collect(&s, rx, gen.n, gen.n).await?;
    drop(ticket);
    let choices = choices
        .into_iter()
        .enumerate()
        .map(|(index, c)| ChatChoice {
            index,
            message: AssistantMessage {
                role: Role::Assistant,
                content: c.text,
            },
            logprobs: NoLogprobs::default(),
            finish_reason: c.finish_reason.map(Finish::from),
        })
        .collect();
    Ok(Json(ChatCompletion {
        id: request_id("chatcmpl"),
        object: ObjectKind::ChatCompletion,
        created: now(),
        model: s.config.model_id.clone(),
        choices,
        usage,
    })
    .into_response())
}

/// A text completion, whole or streamed as server-sent events.
#[utoipa::path(post, path = "/v1/completions", tag = "openai", request_body = CompletionRequest,
    responses(
        (status = 200, description = "The completion: JSON, or with `stream` server-sent events \
            whose `data:` lines are `Completion` chunks and, last, `[DONE]`",
            content((Completion = "application/json"), (StreamEvent = "text/event-stream"))),
        (status = 404, description = "`model` names a model this server does not serve", body = ErrorBody),
    ))]
pub(super) async fn completions(
    State(s): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: CompletionRequest = parse(&s, body)?;
    check_model(&s, req.model.as_deref())?;
    let (ctx, vocab) = context(&s)?;
    let gen = req.sampling.parse(vocab)?;
    req.refused.check()?;
    if req.echo == Some(true) {
        return Err(ApiError::bad_request("echo", "`echo` is not supported"));
    }
    let ids_of = |ids: &[i64]| -> Result<Vec<u32>, ApiError> {
        ids.iter()
            .map(|&i| {
                u32::try_from(i)
                    .ok()
                    .filter(|&i| (i as usize) < vocab)
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "prompt",
                            format!("token id {i} is not below the vocabulary size {vocab}"),
                        )
                    })
            })
            .collect()
    };
    let count = match &req.prompt {
        Prompt::Text(_) | Prompt::Ids(_) => 1,
        Prompt::Texts(ts) => ts.len(),
        Prompt::IdLists(lists) => lists.len(),
    };
    if count == 0 {
        return Err(ApiError::bad_request(
            "prompt",
            "`prompt` must not be empty",
        ));
    }
    let choices = count.saturating_mul(gen.n);
    if choices > api::MAX_N {
        return Err(ApiError::bad_request(
            "prompt",
            format!("prompts × n is {choices}; at most {}", api::MAX_N),
        ));
    }
    if let Prompt::Text(t) = &req.prompt {
        s.tokenizing.check_len("prompt", "the prompt", t.len())?;
    }
    if let Prompt::Texts(ts) = &req.prompt {
        for (i, t) in ts.iter().enumerate() {
            s.tokenizing
                .check_len("prompt", &format!("prompt {i}"), t.len())?;
        }
    }
    let prompts: Vec<Vec<u32>> = match req.prompt {
        Prompt::Text(t) => tokenize(&s, vec![t]).await?,
        Prompt::Texts(ts) => tokenize(&s, ts).await?,
        Prompt::Ids(ids) => vec![ids_of(&ids)?],
        Prompt::IdLists(lists) => lists.iter().map(|l| ids_of(l)).collect::<Result<_, _>>()?,
    };
    let prompts = prompts
        .into_iter()
        .map(|ids| {
            let p = gen.fit(ids.len(), ctx)?;
            Ok((ids, p))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let cost = prompts
        .iter()
        .map(|(ids, p)| (ids.len() + p.max_tokens).saturating_mul(gen.n))
        .fold(0usize, usize::saturating_add);
    let ticket = admit(&s, "max_tokens", choices, cost)?;
    let rx = submit(&s, prompts, &gen)?;
    if gen.stream {
        return Ok(sse(
            Kind::Completion,
            &s,
            rx,
            ticket,
            choices,
            gen.n,
            gen.include_usage,
        )
        .into_response());
    }
    let (out, usage) = collect(&s, rx, choices, gen.n).await?;
    drop(ticket);
    let choices = out
        .into_iter()
        .enumerate()
        .map(|(index, c)| CompletionChoice {
            index,
            text: c.text,
            logprobs: NoLogprobs::default(),
            finish_reason: c.finish_reason.map(Finish::from),
        })
        .collect();
    Ok(Json(Completion {
        id: request_id("cmpl"),
        object: ObjectKind::TextCompletion,
        created: now(),
        model: s.config.model_id.clone(),
        choices,
        usage: Some(usage),
    })
    .into_response())
}
