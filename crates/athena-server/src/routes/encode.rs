//! The routes that encode texts: embeddings and the memory action head.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::common::{admit, context, parse};
use crate::api::{self, EmbeddingInput, EmbeddingRequest, MemoryActionRequest};
use crate::error::ApiError;
use crate::state::Shared;

pub(super) async fn embeddings(
    State(s): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: EmbeddingRequest = parse(&s, body)?;
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
    let tok = s
        .model
        .tokenizer()
        .ok_or_else(|| ApiError::internal("the model is not loaded"))?;
    let mut prompt_tokens = 0;
    for (i, t) in texts.iter().enumerate() {
        let n = tok.encode(t, true)?.len();
        if n == 0 || n > ctx {
            return Err(ApiError::bad_request(
                "input",
                format!("input {i} has {n} tokens; it needs 1 to {ctx}"),
            ));
        }
        prompt_tokens += n;
    }
    let ticket = admit(&s, 1)?;
    let model = s.model.clone();
    let vectors = tokio::task::spawn_blocking(move || {
        let _ticket = ticket;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        model.encode(&refs)
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
    let tok = s
        .model
        .tokenizer()
        .ok_or_else(|| ApiError::internal("the model is not loaded"))?;
    let mut ids = std::collections::HashSet::new();
    for (i, m) in req.memories.iter().enumerate() {
        if !ids.insert(m.id.as_str()) {
            return Err(ApiError::bad_request(
                "memories",
                format!("duplicate memory id `{}`", m.id),
            ));
        }
        let n = tok.encode(&m.text, true)?.len();
        if n == 0 || n > ctx {
            return Err(ApiError::bad_request(
                "memories",
                format!("memory {i} has {n} tokens; it needs 1 to {ctx}"),
            ));
        }
    }
    let n = tok.encode(&req.fact, true)?.len();
    if n == 0 || n > ctx {
        return Err(ApiError::bad_request(
            "fact",
            format!("the fact has {n} tokens; it needs 1 to {ctx}"),
        ));
    }
    let ticket = admit(&s, 1)?;
    let model = s.model.clone();
    let action = tokio::task::spawn_blocking(move || {
        let _ticket = ticket;
        model.act(&req.fact, &req.memories)
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
