//! Chat and text completions: render, submit to the scheduler, answer whole or streamed.

use std::time::Instant;

use athena::generate::tool_call::split_output;
use athena::generate::{ChatMessage, ChatTemplate, Constraint, FinishReason, GenerateParams};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::common::{admit, check_model, context, now, parse, request_id, tokenize};
use super::stream::{call_id, finish, sse, Kind};
use crate::api::{self, ChatRequest, CompletionRequest, Content, GenerationRequest, Prompt, Usage};
use crate::engine::{Event, Job};
use crate::error::{ApiError, ErrorBody};
use crate::responses::{
    AssistantMessage, ChatChoice, ChatCompletion, Completion, CompletionChoice, Finish,
    FunctionCall, NoLogprobs, ObjectKind, Role, StreamEvent, ToolCall, ToolCallKind,
};
use crate::state::{AppState, Shared};
use crate::structured::{self, OutputSpec};

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
            if m.role == "tool" {
                return Ok(structured::tool_message(&content));
            }
            let content = match &m.tool_calls {
                Some(calls) => structured::assistant_text(content, calls),
                None => content,
            };
            Ok(ChatMessage::new(m.role.clone(), content))
        })
        .collect()
}

/// The constraint of `spec`'s grammar, compiled off the async workers; a grammar llguidance
/// refuses is a 400 naming the request field it came from.
async fn constraint(s: &Shared, spec: &OutputSpec) -> Result<Option<Constraint>, ApiError> {
    let Some((grammar, param)) = spec.grammar.clone() else {
        return Ok(None);
    };
    let model = s.model.clone();
    s.tokenizing
        .run(move || {
            let grammars = model.grammars()?;
            match grammars.compile(&grammar) {
                Ok(c) => Ok(Some(c)),
                Err(e @ athena::Error::Grammar { .. }) => {
                    Err(ApiError::bad_request(param, e.to_string()))
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
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
    constraint: Option<&Constraint>,
) -> Result<UnboundedReceiver<Event>, ApiError> {
    let (tx, rx) = unbounded_channel();
    let mut index = 0u32;
    for (prompt, params) in prompts {
        for i in 0..req.n {
            let job = Job {
                prompt: prompt.clone(),
                params: GenerationRequest::for_choice(&params, i),
                logit_bias: req.logit_bias.clone(),
                constraint: constraint.cloned(),
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
    let spec = structured::chat_output(
        req.response_format.as_ref(),
        req.tools.as_deref(),
        req.tool_choice.as_ref(),
    )?;
    let msgs = structured::with_tools(messages(&req)?, &spec);
    let bytes = msgs.iter().map(|m| m.role.len() + m.content.len()).sum();
    s.tokenizing
        .check_len("messages", "the conversation", bytes)?;
    let constraint = constraint(&s, &spec).await?;
    let state = s.clone();
    let ids = s.tokenizing.run(move || chat_prompt(&state, &msgs)).await?;
    let params = gen.fit(ids.len(), ctx)?;
    let cost = (ids.len() + params.max_tokens).saturating_mul(gen.n);
    let ticket = admit(&s, "max_tokens", gen.n, cost)?;
    let rx = submit(&s, vec![(ids, params)], &gen, constraint.as_ref())?;
    let tools = spec.calls_tools();
    if gen.stream {
        let stream = sse(
            Kind::Chat,
            &s,
            rx,
            ticket,
            (gen.n, gen.n),
            gen.include_usage,
            tools,
        );
        return Ok(stream.into_response());
    }
    let (choices, usage) = collect(&s, rx, gen.n, gen.n).await?;
    drop(ticket);
    let choices = choices
        .into_iter()
        .enumerate()
        .map(|(index, c)| chat_choice(index, c, tools))
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

/// A finished chat choice as OpenAI answers it: text, or (when the request has tools and the
/// text is a call) a tool call with `content: null`.
fn chat_choice(index: usize, c: Choice, tools: bool) -> ChatChoice {
    let (content, call) = if tools {
        split_output(&c.text)
    } else {
        (c.text, None)
    };
    let is_call = call.is_some();
    let tool_calls = call.map(|(name, arguments)| {
        vec![ToolCall {
            id: call_id(),
            kind: ToolCallKind::Function,
            function: FunctionCall { name, arguments },
        }]
    });
    ChatChoice {
        index,
        message: AssistantMessage {
            role: Role::Assistant,
            content: (!is_call || !content.is_empty()).then_some(content),
            tool_calls,
        },
        logprobs: NoLogprobs::default(),
        finish_reason: c.finish_reason.map(|r| finish(r, is_call)),
    }
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
    let spec = structured::completion_output(req.response_format.as_ref());
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
    let constraint = constraint(&s, &spec).await?;
    let ticket = admit(&s, "max_tokens", choices, cost)?;
    let rx = submit(&s, prompts, &gen, constraint.as_ref())?;
    if gen.stream {
        let stream = sse(
            Kind::Completion,
            &s,
            rx,
            ticket,
            (choices, gen.n),
            gen.include_usage,
            false,
        );
        return Ok(stream.into_response());
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
