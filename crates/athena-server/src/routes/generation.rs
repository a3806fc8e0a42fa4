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
use serde_json::json;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::common::{admit, check_model, context, now, parse, request_id, tokenize};
use crate::api::{self, ChatRequest, CompletionRequest, Content, GenerationRequest, Prompt, Usage};
use crate::engine::{Event, Job};
use crate::error::ApiError;
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

fn chunk(
    kind: Kind,
    id: &str,
    model: &str,
    created: u64,
    choices: serde_json::Value,
) -> serde_json::Value {
    let object = match kind {
        Kind::Chat => "chat.completion.chunk",
        Kind::Completion => "text_completion",
    };
    json!({"id": id, "object": object, "created": created, "model": model, "choices": choices})
}

fn data(v: &serde_json::Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
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
            .map(|i| {
                data(&chunk(
                    kind,
                    &id,
                    &model,
                    created,
                    json!([{
                    "index": i, "delta": {"role": "assistant", "content": ""},
                    "logprobs": null, "finish_reason": null}]),
                ))
            })
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
                    let mut c = chunk(kind, &id, &model, created, json!([]));
                    c["usage"] = json!(st.usage);
                    events.push(data(&c));
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
                    let choice = match kind {
                        Kind::Chat => json!([{"index": index, "delta": {"content": text},
                            "logprobs": null, "finish_reason": null}]),
                        Kind::Completion => json!([{"index": index, "text": text,
                            "logprobs": null, "finish_reason": null}]),
                    };
                    events.push(data(&chunk(kind, &id, &model, created, choice)));
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
                    let reason = api::finish_reason(finish_reason);
                    let choice = match kind {
                        Kind::Chat => json!([{"index": index, "delta": {},
                            "logprobs": null, "finish_reason": reason}]),
                        Kind::Completion => json!([{"index": index, "text": "",
                            "logprobs": null, "finish_reason": reason}]),
                    };
                    events.push(data(&chunk(kind, &id, &model, created, choice)));
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

pub(super) async fn chat(
    State(s): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: ChatRequest = parse(&s, body)?;
    check_model(&s, req.model.as_deref())?;
    let (ctx, vocab) = context(&s)?;
    let gen = req.sampling.parse(vocab)?;
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
    let choices: Vec<_> = choices
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"index": i, "message": {"role": "assistant", "content": c.text},
                "logprobs": null,
                "finish_reason": c.finish_reason.map(api::finish_reason)})
        })
        .collect();
    Ok(Json(json!({
        "id": request_id("chatcmpl"),
        "object": "chat.completion",
        "created": now(),
        "model": s.config.model_id,
        "choices": choices,
        "usage": usage,
    }))
    .into_response())
}

pub(super) async fn completions(
    State(s): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: CompletionRequest = parse(&s, body)?;
    check_model(&s, req.model.as_deref())?;
    let (ctx, vocab) = context(&s)?;
    let gen = req.sampling.parse(vocab)?;
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
    let out: Vec<_> = out
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"index": i, "text": c.text, "logprobs": null,
                "finish_reason": c.finish_reason.map(api::finish_reason)})
        })
        .collect();
    Ok(Json(json!({
        "id": request_id("cmpl"),
        "object": "text_completion",
        "created": now(),
        "model": s.config.model_id,
        "choices": out,
        "usage": usage,
    }))
    .into_response())
}
