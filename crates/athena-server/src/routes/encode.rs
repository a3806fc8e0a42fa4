//! The routes that encode texts: embeddings and the memory action head.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::common::{admit, check_model, context, parse, tokenize};
use crate::api::{self, EmbeddingInput, EmbeddingRequest, MemoryActionRequest};
use crate::error::ApiError;
use crate::state::Shared;

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
    let model = s.model.clone();
    let vectors = tokio::task::spawn_blocking(move || {
        let _ticket = ticket;
        model.encode_ids(&batch)
    })
    .await
    .map_err(|_| ApiError::internal("the embedding task failed"))??;
    let data: Vec<_> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(api::base64(&bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": s.config.model_id,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }))
    .into_response())
}

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
    let model = s.model.clone();
    let action = tokio::task::spawn_blocking(move || {
        let _ticket = ticket;
        model.act_ids(fact, memories)
    })
    .await
    .map_err(|_| ApiError::internal("the memory action task failed"))??;
    let mut body = json!({"object": "memory.action", "model": s.config.model_id, "action": action});
    // A head that was never trained decides at random: say so, in the response and the log.
    if s.model.config().action_head_path.is_none() {
        tracing::warn!(
            "/v1/memory/actions answered from an untrained (random) action head; \
             train one with `athena train-head` and serve it with --head"
        );
        body["head_trained"] = json!(false);
        body["warning"] = json!(UNTRAINED_HEAD_WARNING);
    } else {
        body["head_trained"] = json!(true);
    }
    Ok(Json(body).into_response())
}

/// What `/v1/memory/actions` says when the server's action head was never trained.
pub(crate) const UNTRAINED_HEAD_WARNING: &str = "the memory action head is untrained: its \
    decisions are random; train one with `athena train-head` and start the server with --head DIR";
