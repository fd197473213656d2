//! Counters a test reads to check what its client actually sent.

use std::collections::BTreeMap;

/// A snapshot of a [`MockServer`](super::MockServer)'s counters, taken by
/// [`MockServer::stats`](super::MockServer::stats) and cleared by
/// [`MockServer::reset_stats`](super::MockServer::reset_stats).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MockStats {
    /// Every `POST /auth/token/`, counted on arrival, whatever its outcome.
    pub token_requests: u64,
    /// Token requests with `grant_type=password`, whatever their outcome.
    pub password_grants: u64,
    /// Token requests with `grant_type=refresh_token`, whatever their outcome.
    pub refresh_grants: u64,
    /// Successful token responses (a token was minted and sent).
    pub tokens_issued: u64,
    /// Token responses with a status of 400 or more, injected faults included.
    pub token_errors: u64,
    /// Token responses whose JSON body has `"error": "invalid_grant"`.
    pub invalid_grant: u64,
    /// Token responses whose JSON body has `"error": "invalid_client"`.
    pub invalid_client: u64,
    /// Every request to a protected endpoint (under `/api/`).
    pub api_requests: u64,
    /// Protected-endpoint responses by status code.
    pub api_by_status: BTreeMap<u16, u64>,
    /// Protected-endpoint `401` responses, injected faults included.
    pub unauthorized: u64,
    /// Access token -> how many protected requests carried it as
    /// `Authorization: Bearer <token>` (valid or not).
    pub tokens_presented: BTreeMap<String, u64>,
    /// Token-request body encoding (`"form"`, `"json"` or `"multipart"`, from the
    /// `Content-Type`) -> how many token requests used it.
    pub token_encodings: BTreeMap<String, u64>,
}
