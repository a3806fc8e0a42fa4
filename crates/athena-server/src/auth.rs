//! The API key: when the server has one, every route but `/health` asks for it.

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The key a server accepts, held as its SHA-256 digest: a presented key is hashed and the two
/// digests compared in constant time, so the comparison takes the same time whatever the
/// presented key's length or contents.
#[derive(Clone)]
pub struct ApiKey {
    digest: [u8; 32],
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

/// An API key that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the API key must be non-empty printable ASCII without spaces")]
pub struct InvalidApiKey;

impl ApiKey {
    /// A key of printable ASCII without spaces (what an `Authorization` header can carry).
    pub fn new(key: &str) -> Result<ApiKey, InvalidApiKey> {
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidApiKey);
        }
        Ok(ApiKey {
            digest: Sha256::digest(key.as_bytes()).into(),
        })
    }

    /// Whether `presented` is this key.
    pub fn matches(&self, presented: &str) -> bool {
        let digest = Sha256::digest(presented.as_bytes());
        self.digest.ct_eq(digest.as_slice()).into()
    }
}

/// The key a request presents: `Authorization: Bearer KEY` (OpenAI's clients) or
/// `Authorization: Token KEY` (mem0's client); the scheme is case-insensitive.
fn presented(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.trim().split_once(' ')?;
    let known = scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token");
    known.then(|| key.trim())
}

/// Whether a request to `path` with `headers` may pass: always without a key, else only with
/// it (`/health` excepted, for load balancers and probes).
pub(crate) fn check(key: Option<&ApiKey>, path: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = key else {
        return Ok(());
    };
    if path == "/health" {
        return Ok(());
    }
    match presented(headers) {
        Some(k) if key.matches(k) => Ok(()),
        Some(_) => Err(ApiError::invalid_api_key("Incorrect API key provided.")),
        None => Err(ApiError::invalid_api_key(
            "No API key provided: send `Authorization: Bearer KEY`.",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, StatusCode};

    fn with_auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn bearer_and_token_schemes_carry_the_key() {
        let key = ApiKey::new("sk-secret").unwrap();
        for ok in [
            "Bearer sk-secret",
            "bearer sk-secret",
            "Token sk-secret",
            "TOKEN  sk-secret",
        ] {
            assert!(
                check(Some(&key), "/v1/models", &with_auth(ok)).is_ok(),
                "{ok}"
            );
        }
        for wrong in [
            "Bearer sk-secreT",
            "Bearer sk-secret2",
            "Basic sk-secret",
            "sk-secret",
        ] {
            let e = check(Some(&key), "/v1/models", &with_auth(wrong)).unwrap_err();
            assert_eq!(e.status, StatusCode::UNAUTHORIZED, "{wrong}");
            assert_eq!(e.code, Some("invalid_api_key"));
            assert_eq!(e.kind(), "invalid_request_error");
        }
        let missing = check(Some(&key), "/metrics", &HeaderMap::new()).unwrap_err();
        assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn health_and_keyless_servers_need_no_key() {
        let key = ApiKey::new("k").unwrap();
        assert!(check(Some(&key), "/health", &HeaderMap::new()).is_ok());
        assert!(check(None, "/v1/models", &HeaderMap::new()).is_ok());
    }

    #[test]
    fn unusable_keys_are_refused() {
        assert!(ApiKey::new("").is_err());
        assert!(ApiKey::new("two words").is_err());
        assert!(ApiKey::new("é").is_err());
        assert_eq!(format!("{:?}", ApiKey::new("k").unwrap()), "ApiKey(..)");
    }
}
