//! Errors as OpenAI spells them: `{"error": {"message", "type", "param", "code"}}`, each
//! knowing its HTTP status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An error answered to a client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub message: String,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    /// A short machine-readable code.
    pub code: Option<&'static str>,
    /// Seconds to wait before retrying (429, 503).
    pub retry_after: Option<u64>,
}

/// The body of every error answer: `{"error": {...}}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// An error, as OpenAI spells it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// What went wrong, for a person.
    pub message: String,
    /// `invalid_request_error`, `not_found_error`, `rate_limit_error` or `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    /// A short machine-readable code (`invalid_api_key`, `model_not_found`, ...).
    pub code: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 400: a request that parses but asks for something invalid.
    pub fn bad_request(param: &str, message: impl Into<String>) -> Self {
        ApiError {
            param: Some(param.to_string()),
            ..Self::new(StatusCode::BAD_REQUEST, message)
        }
    }

    /// 400: a body that is not JSON (or not UTF-8).
    pub fn malformed(message: impl Into<String>) -> Self {
        ApiError {
            code: Some("invalid_json"),
            ..Self::new(StatusCode::BAD_REQUEST, message)
        }
    }

    /// 422: JSON of the wrong shape (a missing field, a wrong type).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    /// 413: a body past the server's limit.
    pub fn too_large(limit: usize) -> Self {
        ApiError {
            code: Some("body_too_large"),
            ..Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body exceeds {limit} bytes"),
            )
        }
    }

    /// 429: the queue is full.
    pub fn overloaded(capacity: usize) -> Self {
        ApiError {
            code: Some("queue_full"),
            retry_after: Some(1),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("the server is busy ({capacity} requests running or queued); retry later"),
            )
        }
    }

    /// 503: shutting down.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }

    /// 404: no such route or model.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 401: no API key, or the wrong one.
    pub fn invalid_api_key(message: impl Into<String>) -> Self {
        ApiError {
            code: Some("invalid_api_key"),
            ..Self::new(StatusCode::UNAUTHORIZED, message)
        }
    }

    /// 421: a `Host` header that does not name this server.
    pub fn misdirected(host: &str) -> Self {
        ApiError {
            code: Some("invalid_host"),
            ..Self::new(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "the Host header `{host}` does not name this server; start it with \
                     --allowed-hosts to accept other names"
                ),
            )
        }
    }

    /// 415: a POST whose body is not declared as JSON.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        ApiError {
            code: Some("unsupported_media_type"),
            ..Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("the body must be JSON (`Content-Type: application/json`), not `{content_type}`"),
            )
        }
    }

    /// 404: a `model` this server does not serve.
    pub fn model_not_found(model: &str) -> Self {
        ApiError {
            param: Some("model".into()),
            code: Some("model_not_found"),
            ..Self::new(
                StatusCode::NOT_FOUND,
                format!("The model `{model}` does not exist or you do not have access to it."),
            )
        }
    }

    /// 408: the body did not arrive in time.
    pub fn body_timeout(limit: std::time::Duration) -> Self {
        ApiError {
            code: Some("body_timeout"),
            ..Self::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {limit:?}"),
            )
        }
    }

    /// 504: `what` ran past its time limit.
    pub fn timeout(what: &str, limit: std::time::Duration) -> Self {
        ApiError {
            code: Some("timeout"),
            ..Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("{what} ran past the server's limit of {limit:?}"),
            )
        }
    }

    /// 500: the engine failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// OpenAI's error type for this status.
    pub fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            // OpenAI answers an unknown model as an invalid request.
            StatusCode::NOT_FOUND if self.code == Some("model_not_found") => {
                "invalid_request_error"
            }
            StatusCode::NOT_FOUND => "not_found_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// The body, as a value.
    pub fn to_body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                message: self.message.clone(),
                kind: self.kind().to_string(),
                param: self.param.clone(),
                code: self.code.map(str::to_string),
            },
        }
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        serde_json::to_string(&self.to_body())
            .unwrap_or_else(|_| r#"{"error":{"message":"error","type":"server_error"}}"#.into())
    }
}

impl From<athena::Error> for ApiError {
    /// Invalid input is the client's fault; anything else, a broken internal invariant
    /// ([`athena::Error::Internal`]) above all, is the server's.
    fn from(e: athena::Error) -> Self {
        match &e {
            athena::Error::Internal { .. } => ApiError::internal(e.to_string()),
            athena::Error::Invalid { .. } | athena::Error::Grammar { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, e.to_string())
            }
            athena::Error::NeedsCandle { .. } => ApiError {
                code: Some("backend_unsupported"),
                ..ApiError::new(StatusCode::BAD_REQUEST, e.to_string())
            },
            // The requester is gone (a timeout answered it): what is sent here is not read.
            athena::Error::Cancelled { .. } => ApiError::unavailable(e.to_string()),
            _ => ApiError::internal(e.to_string()),
        }
    }
}

impl From<athena::memory::MemoryError> for ApiError {
    /// An unknown id is 404, the caller's invalid input 400, a head target that vanished
    /// under a concurrent write 409 (retry); a fault of the store or of the bank, 500.
    fn from(e: athena::memory::MemoryError) -> Self {
        use athena::memory::MemoryError as M;
        let message = e.to_string();
        match e {
            M::UnknownId { .. } => ApiError {
                code: Some("memory_not_found"),
                ..ApiError::not_found(message)
            },
            M::BadText { what, .. } => ApiError::bad_request(&what, message),
            M::BadMetadata { .. } => ApiError::bad_request("metadata", message),
            M::BadScope { .. } => ApiError::bad_request("filters", message),
            M::Invalid { field, .. } => ApiError::bad_request(field, message),
            M::UntrainedHead => ApiError {
                code: Some("untrained_head"),
                ..ApiError::bad_request("use_head", message)
            },
            M::TargetGone { .. } => ApiError {
                code: Some("target_gone"),
                retry_after: Some(1),
                ..Self::new(StatusCode::CONFLICT, message)
            },
            M::Model(e) => e.into(),
            _ => ApiError::internal(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, "{}", self.message);
        } else {
            tracing::debug!(status = %self.status, "{}", self.message);
        }
        let mut res = (self.status, self.body()).into_response();
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(s) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callers_mistakes_are_4xx_and_athenas_bugs_500() {
        let invalid = ApiError::from(athena::Error::invalid("top_p", "2 is not in (0, 1]"));
        assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
        let bug = ApiError::from(athena::Error::internal(
            "logits",
            "the backend returned no rows",
        ));
        assert_eq!(bug.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(bug.message.contains("bug"), "{}", bug.message);
        assert!(!athena::Error::internal("x", "y").is_user_error());
        assert!(athena::Error::invalid("x", "y").is_user_error());
    }
}
