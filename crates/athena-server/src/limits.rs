//! How long a client may take and how many connections it may hold: the bounds that keep slow
//! or idle clients from holding the server, with their defaults.

use std::time::Duration;

/// Time and connection bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// From the moment a connection waits for a request (a new connection, or a kept-alive one
    /// between requests) until that request's headers are in; then the connection is closed.
    /// Default 10 s.
    pub header_read_timeout: Duration,
    /// From the end of the headers until the whole body is in; past it the answer is 408 and
    /// the connection is closed. Default 30 s.
    pub body_read_timeout: Duration,
    /// How long a connection may sit with no request in flight and no bytes arriving before
    /// it is closed. Default 5 s (uvicorn's, which vLLM uses).
    pub idle_timeout: Duration,
    /// The longest a request other than a generation may take, from its headers to its
    /// answer; past it the answer is 504. Default 600 s.
    pub request_timeout: Duration,
    /// The longest a generation may run, streamed or not; past it the sequences are cancelled
    /// and the client told so. Default 1800 s.
    pub generation_timeout: Duration,
    /// Open connections at most; a connection past them is answered 503 and closed at once.
    /// Default 512.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(600),
            generation_timeout: Duration::from_secs(1800),
            max_connections: 512,
        }
    }
}
