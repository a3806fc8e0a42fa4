//! Defences against requests a web page makes on a visitor's behalf: the `Host` header must
//! name this server (a page that rebinds its own domain name to 127.0.0.1 sends its own name),
//! and a POST must say its body is JSON (a cross-site form or `fetch` without a preflight can
//! only send `text/plain`, form or multipart bodies).

use std::net::{IpAddr, SocketAddr};

use axum::http::uri::Authority;
use axum::http::{header, HeaderMap, Method};

use crate::error::ApiError;

/// Which `Host` headers the server answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowedHosts {
    /// `localhost`, loopback addresses and the bound address; when bound to every interface
    /// (`0.0.0.0`, `::`), any IP address. Names other than `localhost` are refused: only a
    /// name can be rebound, so only names need listing.
    #[default]
    Local,
    /// Those, and these names (`host` for any port, `host:port` for one).
    Also(Vec<String>),
    /// Any host (`--allowed-hosts '*'`).
    Any,
}

impl AllowedHosts {
    /// `*` for any host, else a comma-separated list of names added to the local ones.
    pub fn parse(list: &str) -> AllowedHosts {
        let names: Vec<String> = list
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        if names.iter().any(|h| h == "*") {
            AllowedHosts::Any
        } else if names.is_empty() {
            AllowedHosts::Local
        } else {
            AllowedHosts::Also(names)
        }
    }

    /// Whether a request whose `Host` header is `host` may reach a server bound to `bound`.
    pub fn allows(&self, host: &str, bound: Option<SocketAddr>) -> bool {
        if *self == AllowedHosts::Any {
            return true;
        }
        let Ok(authority) = host.parse::<Authority>() else {
            return false;
        };
        let name = authority.host().to_ascii_lowercase();
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        let local = match bare.parse::<IpAddr>() {
            Ok(ip) => {
                ip.is_loopback() || bound.is_some_and(|b| b.ip() == ip || b.ip().is_unspecified())
            }
            Err(_) => name == "localhost",
        };
        if local {
            return true;
        }
        let AllowedHosts::Also(names) = self else {
            return false;
        };
        let with_port = authority.as_str().to_ascii_lowercase();
        names.iter().any(|n| *n == name || *n == with_port)
    }
}

/// 421 unless the `Host` header (when there is one) names this server.
pub(crate) fn check_host(
    allowed: &AllowedHosts,
    bound: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let Some(host) = headers.get(header::HOST) else {
        return Ok(());
    };
    let host = host.to_str().unwrap_or("");
    if allowed.allows(host, bound) {
        Ok(())
    } else {
        Err(ApiError::misdirected(host))
    }
}

/// 415 for a POST or PUT whose `Content-Type` is not JSON (`application/json` or `…+json`).
pub(crate) fn check_content_type(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    if method != Method::POST && method != Method::PUT {
        return Ok(());
    }
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, StatusCode};

    const BOUND: &str = "127.0.0.1:8080";

    fn bound() -> Option<SocketAddr> {
        Some(BOUND.parse().unwrap())
    }

    #[test]
    fn local_names_pass_and_other_names_do_not() {
        let local = AllowedHosts::Local;
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1:8080",
            "[::1]:9",
            "127.0.0.2",
        ] {
            assert!(local.allows(ok, bound()), "{ok}");
        }
        for no in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.5",
            "",
        ] {
            assert!(!local.allows(no, bound()), "{no}");
        }
        let everywhere = Some("0.0.0.0:8080".parse().unwrap());
        assert!(local.allows("10.0.0.5:8080", everywhere));
        assert!(!local.allows("evil.example:8080", everywhere));
    }

    #[test]
    fn listed_names_and_star() {
        let also = AllowedHosts::parse("api.example, box:9000");
        assert!(also.allows("api.example:1234", bound()));
        assert!(also.allows("box:9000", bound()));
        assert!(!also.allows("box:9001", bound()));
        assert!(also.allows("localhost", bound()));
        assert!(!also.allows("evil.example", bound()));
        assert_eq!(AllowedHosts::parse("*"), AllowedHosts::Any);
        assert!(AllowedHosts::Any.allows("evil.example", bound()));
        assert_eq!(AllowedHosts::parse(""), AllowedHosts::Local);
    }

    #[test]
    fn a_wrong_host_is_421_and_no_host_passes() {
        let mut h = HeaderMap::new();
        assert!(check_host(&AllowedHosts::Local, bound(), &h).is_ok());
        h.insert(header::HOST, HeaderValue::from_static("rebound.example"));
        let e = check_host(&AllowedHosts::Local, bound(), &h).unwrap_err();
        assert_eq!(e.status, StatusCode::MISDIRECTED_REQUEST);
    }

    #[test]
    fn posts_must_be_json() {
        let mut h = HeaderMap::new();
        assert!(check_content_type(&Method::GET, &h).is_ok());
        assert_eq!(
            check_content_type(&Method::POST, &h).unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        for (value, ok) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/merge-patch+json", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
            ("multipart/form-data; boundary=x", false),
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(check_content_type(&Method::POST, &h).is_ok(), ok, "{value}");
        }
    }
}
