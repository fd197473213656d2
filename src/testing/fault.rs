//! Failures a test can inject into the next requests, in FIFO order.

use std::time::Duration;

/// A failure injected into the token endpoint (`POST /auth/token/`) by
/// [`MockServer::fail_next_token_requests`](super::MockServer::fail_next_token_requests).
///
/// An injected fault takes precedence over normal processing; the request is still
/// counted in [`MockStats`](super::MockStats) (`token_requests`, its encoding and,
/// if the body parses, `password_grants` or `refresh_grants`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum TokenFault {
    /// Answer with this status and this body, sent as `application/json`.
    Status {
        /// The HTTP status code.
        status: u16,
        /// The response body, sent verbatim.
        body: String,
    },
    /// Sleep this long (on the tokio clock), then answer normally.
    Delay(Duration),
    /// Never answer: hold the request open until the server is dropped.
    Hang,
    /// `200 OK` with a non-JSON `text/html` body.
    Malformed,
    /// `200 OK` with a JSON token response lacking `access_token`.
    MissingAccessToken,
    /// `200 OK` with a JSON-looking body of exactly this many bytes that never
    /// closes its string, streamed in chunks with a `Content-Length`.
    Oversized(usize),
    /// `429 Too Many Requests` with a `Retry-After` header and
    /// `{"detail":"Request was throttled."}`.
    TooManyRequests {
        /// The `Retry-After` value, in seconds.
        retry_after_secs: u64,
    },
}

/// A failure injected into the protected endpoints (everything under `/api/`) by
/// [`MockServer::fail_next_api_requests`](super::MockServer::fail_next_api_requests).
///
/// An injected fault is answered before the bearer token is checked; the request
/// is still counted in [`MockStats`](super::MockStats).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ApiFault {
    /// Answer with this status and this body, sent as `application/json`.
    Status {
        /// The HTTP status code, e.g. 429, 500 or 503.
        status: u16,
        /// The response body, sent verbatim.
        body: String,
        /// If `Some`, a `Retry-After` header with this many seconds.
        retry_after_secs: Option<u64>,
    },
    /// `401 Unauthorized` exactly as for an invalid token, even if the request
    /// carries a valid one.
    Unauthorized,
}

/// Panics with a useful message if a fault carries an impossible status code, so
/// the mistake shows at the line that queued it rather than in a handler.
pub(crate) fn check_status(status: u16) {
    assert!(
        http::StatusCode::from_u16(status).is_ok(),
        "injected fault status {status} is not a valid HTTP status code (100..=999)"
    );
}
