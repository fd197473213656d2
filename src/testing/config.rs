//! How a [`MockServer`](super::MockServer) behaves: credentials, token lifetime,
//! refresh-token policy, latency and job length.

use std::time::Duration;

/// Configuration of a [`MockServer`](super::MockServer).
///
/// Every field is public; start from [`Default`] and override what a test needs:
///
/// ```
/// use std::time::Duration;
/// use wokelo_auth::testing::MockConfig;
///
/// let config = MockConfig {
///     token_lifetime: Duration::from_secs(2),
///     reuse_protection: true,
///     ..MockConfig::default()
/// };
/// assert_eq!(config.client_id, "mock-client-id");
/// ```
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// The only `client_id` the token endpoint accepts. Default `"mock-client-id"`.
    pub client_id: String,
    /// The only `client_secret` the token endpoint accepts. Default `"mock-client-secret"`.
    pub client_secret: String,
    /// The only `username` the password grant accepts; also the `user` the echo
    /// endpoint reports. Default `"analyst@example.com"`.
    pub username: String,
    /// The only `password` the password grant accepts. Default `"mock-password"`.
    pub password: String,
    /// How long an issued access token stays valid, measured on the
    /// [`tokio::time`] clock so paused-time tests can expire tokens with
    /// `tokio::time::advance` (tokio's `test-util` feature). Reported as
    /// `expires_in` in whole seconds, rounded down, but at least 1. Default one
    /// hour.
    pub token_lifetime: Duration,
    /// If `Some`, sent verbatim as `expires_in` instead of the value derived from
    /// `token_lifetime` (`Some(Value::Null)` omits the field), for tests of odd
    /// values such as strings, negatives or floats. The token still expires after
    /// `token_lifetime`. Default `None`.
    pub expires_in_override: Option<serde_json::Value>,
    /// Whether token responses carry a `refresh_token`. Default `true`.
    pub issue_refresh_tokens: bool,
    /// Refresh-token reuse protection. When `true`, presenting a refresh token that
    /// was already rotated away revokes its whole family: every access and refresh
    /// token descending from the same password grant. The reused token is rejected
    /// with `invalid_grant` either way. Default `false`.
    pub reuse_protection: bool,
    /// Delay added before every token-endpoint response (after the request is
    /// counted, before it is processed), to widen races in single-flight tests.
    /// Default zero.
    pub token_latency: Duration,
    /// How many status polls of a job answer `PENDING` (the first) or
    /// `PROCESSING` (the rest) before the job reports `COMPLETED` (or `FAILED`).
    /// Default 2.
    pub job_steps: u32,
    /// The fraction (0.0 to 1.0) of token requests, beyond the queued faults,
    /// that answer `503 {"detail":"Service temporarily unavailable."}` at
    /// random. For soak tests. Default 0.
    pub token_failure_rate: f64,
    /// The fraction (0.0 to 1.0) of protected-endpoint requests, beyond the
    /// queued faults, that answer `429` with `Retry-After: 0` at random. For
    /// soak tests. Default 0.
    pub api_throttle_rate: f64,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            client_id: "mock-client-id".to_owned(),
            client_secret: "mock-client-secret".to_owned(),
            username: "analyst@example.com".to_owned(),
            password: "mock-password".to_owned(),
            token_lifetime: Duration::from_secs(3600),
            expires_in_override: None,
            issue_refresh_tokens: true,
            reuse_protection: false,
            token_latency: Duration::ZERO,
            job_steps: 2,
            token_failure_rate: 0.0,
            api_throttle_rate: 0.0,
        }
    }
}

impl MockConfig {
    /// `expires_in` as the token endpoint reports it, `None` to omit the field.
    pub(crate) fn expires_in(&self) -> Option<serde_json::Value> {
        match &self.expires_in_override {
            Some(serde_json::Value::Null) => None,
            Some(value) => Some(value.clone()),
            None => Some(self.token_lifetime.as_secs().max(1).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_in_is_whole_seconds_at_least_one() {
        let mut config = MockConfig {
            token_lifetime: Duration::from_millis(1500),
            ..MockConfig::default()
        };
        assert_eq!(config.expires_in(), Some(1.into()));
        config.token_lifetime = Duration::from_millis(10);
        assert_eq!(config.expires_in(), Some(1.into()));
        config.expires_in_override = Some("3600".into());
        assert_eq!(config.expires_in(), Some("3600".into()));
        config.expires_in_override = Some(serde_json::Value::Null);
        assert_eq!(config.expires_in(), None);
    }
}
