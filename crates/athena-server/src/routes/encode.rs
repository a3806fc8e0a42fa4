//! The routes that encode texts: embeddings and the memory action head.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::common::{admit, check_model, context, model_work, parse, tokenize};
use crate::api::{self, EmbeddingInput, EmbeddingRequest, MemoryActionRequest};
use crate::error::{ApiError, ErrorBody};
use crate::responses::{
    Embedding, EmbeddingList, EmbeddingUsage, MemoryAction, ObjectKind, Vector,
};
use crate::state::Shared;

/// The model's pooled hidden states of each input.
#[utoipa::path(post, path = "/v1/embeddings", tag = "openai", request_body = EmbeddingRequest,
    responses(
        (status = 200, description = "One embedding per input", body = EmbeddingList),
        (status = 404, description = "`model` names a model this server does not serve", body = ErrorBody),
    ))]
pub(super) async fn embeddings(
    State(s): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: EmbeddingRequest = parse(&s, body)?;
    check_model(&s, req.model.as_deref())?;
    let texts = match req.input {
        EmbeddingInput::Text(t) => vec![t],
        EmbeddingInput::Texts(ts) => ts,
    };
    if texts.is_empty() || texts.len() > api::MAX_EMBED_INPUTS {
        return Err(ApiError::bad_request(
            "input",
            format!(
                "`input` must hold 1 to {} texts, got {}",
                api::MAX_EMBED_INPUTS,
                texts.len()
            ),
        ));
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "encoding_format",
                format!("`{other}` is not `float` or `base64`"),
            ))
        }
    };
    let (ctx, _) = context(&s)?;
    for (i, t) in texts.iter().enumerate() {
        s.tokenizing
            .check_len("input", &format!("input {i}"), t.len())?;
    }
    let batch = tokenize(&s, texts).await?;
    for (i, ids) in batch.iter().enumerate() {
        let n = ids.len();
        if n == 0 || n > ctx {
            return Err(ApiError::bad_request(
                "input",
                format!("input {i} has {n} tokens; it needs 1 to {ctx}"),
            ));
        }
    }
    let prompt_tokens: usize = batch.iter().map(Vec::len).sum();
    let ticket = admit(&s, "input", 1, prompt_tokens)?;
    let vectors = model_work(&s, ticket, "embedding", move |model, cancel| {
        model.encode_ids_until(&batch, cancel)
    })
    .await?;
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Vector::Base64(api::base64(&bytes))
            } else {
                Vector::Float(v)
            };
            Embedding {
                object: ObjectKind::Embedding,
                index,
                embedding,
            }
        })
        .collect();
    Ok(Json(EmbeddingList {
        object: ObjectKind::List,
        data,
        model: s.config.model_id.clone(),
        usage: EmbeddingUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    })
    .into_response())
}

/// The memory action head's decision for a new fact against the memories held.
#[utoipa::path(post, path = "/v1/memory/actions", tag = "memory", request_body = MemoryActionRequest,
    responses((status = 200, description = "The head's decision", body = MemoryAction)))]
pub(super) async fn memory_actions(
    State(s): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: MemoryActionRequest = parse(&s, body)?;
    if s.model.action_head().is_none() {
        return Err(ApiError {
            code: Some("backend_unsupported"),
            ..ApiError::bad_request(
                "fact",
                format!(
                    "the memory action head runs on the candle backend only; this server runs on {}",
                    s.model.backend().map(|b| b.to_string()).unwrap_or_default()
                ),
            )
        });
    }
    if req.fact.trim().is_empty() {
        return Err(ApiError::bad_request("fact", "`fact` must not be empty"));
    }
    if req.memories.len() > api::MAX_MEMORIES {
        return Err(ApiError::bad_request(
            "memories",
            format!(
                "at most {} memories, got {}",
                api::MAX_MEMORIES,
                req.memories.len()
            ),
        ));
    }
    let (ctx, _) = context(&s)?;
    {
        let mut seen = std::collections::HashSet::new();
        for (i, m) in req.memories.iter().enumerate() {
            if !seen.insert(m.id.as_str()) {
                return Err(ApiError::bad_request(
                    "memories",
                    format!("duplicate memory id `{}`", m.id),
                ));
            }
            s.tokenizing
                .check_len("memories", &format!("memory {i}"), m.text.len())?;
        }
    }
    s.tokenizing.check_len("fact", "the fact", req.fact.len())?;
    let (ids, mut texts): (Vec<String>, Vec<String>) =
        req.memories.into_iter().map(|m| (m.id, m.text)).unzip();
    texts.insert(0, req.fact);
    let mut batch = tokenize(&s, texts).await?.into_iter();
    let fact = batch.next().unwrap_or_default();
    let memories: Vec<(String, Vec<u32>)> = ids.into_iter().zip(batch).collect();
    for (i, (_, m)) in memories.iter().enumerate() {
        let n = m.len();
        if n == 0 || n > ctx {
            return Err(ApiError::bad_request(
                "memories",
                format!("memory {i} has {n} tokens; it needs 1 to {ctx}"),
            ));
        }
    }
    let n = fact.len();
    if n == 0 || n > ctx {
        return Err(ApiError::bad_request(
            "fact",
            format!("the fact has {n} tokens; it needs 1 to {ctx}"),
        ));
    }
    let cost = memories.iter().map(|(_, m)| m.len()).sum::<usize>() + n;
    let ticket = admit(&s, "memories", 1, cost)?;
    let action = model_work(&s, ticket, "memory action", move |model, cancel| {
        model.act_ids_until(fact, memories, cancel)
    })
    .await?;
    // A head that was never trained decides at random: say so, in the response and the log.
    let head_trained = s.model.config().action_head_path.is_some();
    if !head_trained {
        tracing::warn!(
            "/v1/memory/actions answered from an untrained (random) action head; \
             train one with `athena train-head` and serve it with --head"
        );
    }
    Ok(Json(MemoryAction {
        object: ObjectKind::MemoryAction,
        model: s.config.model_id.clone(),
        action: action.into(),
        head_trained,
        warning: (!head_trained).then(|| UNTRAINED_HEAD_WARNING.to_string()),
    })
    .into_response())
}

/// What `/v1/memory/actions` says when the server's action head was never trained.
pub(crate) const UNTRAINED_HEAD_WARNING: &str = "the memory action head is untrained: its \
    decisions are random; train one with `athena train-head` and start the server with --head DIR";
