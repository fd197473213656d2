//! Errors: why a token could not be had, and the service's own error type.

use std::{error::Error as StdError, fmt, sync::Arc, time::Duration};

use http::StatusCode;

/// A type-erased error, as used across tower.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// What kind of failure a [`TokenError`] is.
///
/// The kind decides what the layer does next: transient kinds are retried with
/// backoff, the others are remembered for the failed-credentials backoff window
/// so that a wrong password does not hammer the token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenErrorKind {
    /// The token endpoint refused the credentials (`400 invalid_grant`,
    /// `401 invalid_client`, `unauthorized_client`, ...). Not retried: fix the
    /// client id, client secret, username or password.
    CredentialsRejected,
    /// The token endpoint could not be reached or answered with a transient
    /// failure (connection error, `408`, `429`, `5xx`), also after retries.
    Unavailable,
    /// The token fetch did not finish within the configured timeout.
    TimedOut,
    /// The token endpoint answered, but not with a usable token: a body that is
    /// not JSON, too large, without `access_token`, or an unexpected status.
    InvalidResponse,
    /// The configuration cannot work, e.g. an `https` base URL without the
    /// `rustls` feature. Not retried.
    Configuration,
}

impl TokenErrorKind {
    /// Whether a failure of this kind may go away by itself, so that trying
    /// again after a backoff makes sense.
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Unavailable | Self::TimedOut)
    }
}

/// The error body of an OAuth2 token endpoint, or of the Wokelo API.
///
/// Wokelo's error bodies vary in shape; whichever of these fields the server
/// sent is kept so that error messages can show it.
///
/// Filled by [`PasswordGrant`](crate::PasswordGrant), each field is the
/// server's text with every secret the request carried (client secret,
/// password, refresh token, the access token being renewed, and the tokens
/// in the answer itself) replaced by `[REDACTED]`, in any encoding the server
/// may quote it in; control characters are replaced by spaces and the text
/// is cut to 200 characters. A secret shorter than 4 characters is replaced
/// only where it stands alone, not inside longer words.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OAuthErrorBody {
    /// `error`, e.g. `invalid_grant`.
    pub error: Option<String>,
    /// `error_description`, e.g. `Invalid credentials given.`
    pub error_description: Option<String>,
    /// `detail`, as Django REST framework sends it.
    pub detail: Option<String>,
    /// `message`, as some Wokelo endpoints send it.
    pub message: Option<String>,
}

impl OAuthErrorBody {
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        self.error.is_none()
            && self.error_description.is_none()
            && self.detail.is_none()
            && self.message.is_none()
    }
}

impl fmt::Display for OAuthErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut part = |f: &mut fmt::Formatter<'_>, s: &str| {
            let sep = if first { "" } else { ": " };
            first = false;
            write!(f, "{sep}{s}")
        };
        for s in [
            &self.error,
            &self.error_description,
            &self.detail,
            &self.message,
        ]
        .into_iter()
        .flatten()
        {
            part(f, s)?;
        }
        Ok(())
    }
}

/// Why a token could not be obtained.
///
/// Cheap to clone: one fetch's outcome is handed to every request that waited
/// for it, and a credentials error is kept for the backoff window. Its messages
/// never contain a secret.
#[derive(Clone)]
pub struct TokenError {
    inner: Arc<Inner>,
}

struct Inner {
    kind: TokenErrorKind,
    message: String,
    status: Option<StatusCode>,
    body: Option<OAuthErrorBody>,
    retry_after: Option<Duration>,
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

impl TokenError {
    /// A new error of `kind`, with a message saying what went wrong and, where
    /// it helps, what to do. Never put a secret in the message.
    pub fn new(kind: TokenErrorKind, message: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                kind,
                message: message.into(),
                status: None,
                body: None,
                retry_after: None,
                source: None,
            }),
        }
    }

    /// Sets the underlying cause, reachable through [`std::error::Error::source`].
    pub fn with_source(self, source: impl Into<BoxError>) -> Self {
        self.with_boxed_source(source.into())
    }

    /// [`with_source`](Self::with_source) for an already boxed error (which
    /// keeps the compiler's lifetime inference simple inside `async` blocks).
    pub fn with_boxed_source(self, source: BoxError) -> Self {
        self.map(|i| i.source = Some(Arc::from(source)))
    }

    /// Sets the HTTP status the token endpoint answered with.
    pub fn with_status(self, status: StatusCode) -> Self {
        self.map(|i| i.status = Some(status))
    }

    /// Sets the error body the token endpoint sent.
    pub fn with_body(self, body: OAuthErrorBody) -> Self {
        self.map(|i| i.body = (!body.is_empty()).then_some(body))
    }

    /// Sets how long the server asked to wait before trying again
    /// (`Retry-After`), at most [`MAX_RETRY_AFTER`](crate::source::MAX_RETRY_AFTER):
    /// a longer wait is cut to it.
    pub fn with_retry_after(self, retry_after: Duration) -> Self {
        let retry_after = retry_after.min(crate::source::MAX_RETRY_AFTER);
        self.map(|i| i.retry_after = Some(retry_after))
    }

    fn map(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => f(inner),
            None => {
                let old = &self.inner;
                let mut inner = Inner {
                    kind: old.kind,
                    message: old.message.clone(),
                    status: old.status,
                    body: old.body.clone(),
                    retry_after: old.retry_after,
                    source: old.source.clone(),
                };
                f(&mut inner);
                self.inner = Arc::new(inner);
            }
        }
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> TokenErrorKind {
        self.inner.kind
    }

    /// Whether the token endpoint refused the credentials.
    pub fn is_credentials_rejected(&self) -> bool {
        self.kind() == TokenErrorKind::CredentialsRejected
    }

    /// The HTTP status of the token endpoint's answer, if there was one.
    pub fn status(&self) -> Option<StatusCode> {
        self.inner.status
    }

    /// The error body the token endpoint sent, if it sent one.
    pub fn body(&self) -> Option<&OAuthErrorBody> {
        self.inner.body.as_ref()
    }

    /// How long the server asked to wait before trying again, at most
    /// [`MAX_RETRY_AFTER`](crate::source::MAX_RETRY_AFTER).
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// The message, without status or body.
    pub fn message(&self) -> &str {
        &self.inner.message
    }
}

impl fmt::Debug for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TokenError");
        d.field("kind", &self.inner.kind)
            .field("message", &self.inner.message);
        if let Some(status) = self.inner.status {
            d.field("status", &status);
        }
        if let Some(body) = &self.inner.body {
            d.field("body", body);
        }
        if let Some(retry_after) = self.inner.retry_after {
            d.field("retry_after", &retry_after);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)?;
        match (self.inner.status, &self.inner.body) {
            (Some(status), Some(body)) => write!(f, " (HTTP {}: {body})", status.as_u16()),
            (Some(status), None) => write!(f, " (HTTP {})", status.as_u16()),
            (None, Some(body)) => write!(f, " ({body})"),
            (None, None) => Ok(()),
        }
    }
}

impl StdError for TokenError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// The error of the [`WokeloAuth`](crate::WokeloAuth) service.
///
/// Tells apart a failure to obtain a token (see [`TokenError::kind`]) from a
/// failure of the wrapped service, whose error is reachable through
/// [`source`](std::error::Error::source) and [`Error::into_service_error`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// No token could be obtained, so the request was not sent.
    Token(TokenError),
    /// The wrapped service failed.
    Service(BoxError),
}

impl Error {
    /// The token error, if this is one.
    pub fn token_error(&self) -> Option<&TokenError> {
        match self {
            Self::Token(e) => Some(e),
            Self::Service(_) => None,
        }
    }

    /// The wrapped service's error, if this is one.
    pub fn into_service_error(self) -> Option<BoxError> {
        match self {
            Self::Service(e) => Some(e),
            Self::Token(_) => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token(e) => write!(f, "could not obtain a Wokelo access token: {e}"),
            Self::Service(_) => f.write_str("the wrapped HTTP service failed"),
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Token(e) => e.source(),
            Self::Service(e) => Some(&**e),
        }
    }
}

impl From<TokenError> for Error {
    fn from(e: TokenError) -> Self {
        Self::Token(e)
    }
}

/// A configuration value is missing or malformed: an environment variable, a
/// base URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    message: String,
    missing: Vec<&'static str>,
}

impl ConfigError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            missing: Vec::new(),
        }
    }

    pub(crate) fn missing_env(missing: Vec<&'static str>) -> Self {
        Self {
            message: format!(
                "missing environment variable{} {}: set {} to your Wokelo API credentials",
                if missing.len() == 1 { "" } else { "s" },
                missing.join(", "),
                if missing.len() == 1 { "it" } else { "them" },
            ),
            missing,
        }
    }

    /// The environment variables that were missing, if that is the problem.
    pub fn missing_variables(&self) -> &[&'static str] {
        &self.missing
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_error_display_shows_status_and_server_fields() {
        let e = TokenError::new(
            TokenErrorKind::CredentialsRejected,
            "the token endpoint rejected the credentials",
        )
        .with_status(StatusCode::BAD_REQUEST)
        .with_body(OAuthErrorBody {
            error: Some("invalid_grant".into()),
            error_description: Some("Invalid credentials given.".into()),
            ..Default::default()
        });
        assert_eq!(
            e.to_string(),
            "the token endpoint rejected the credentials (HTTP 400: invalid_grant: Invalid credentials given.)"
        );
        assert!(e.is_credentials_rejected());
        assert!(!e.kind().is_transient());
    }

    #[test]
    fn builder_methods_on_a_shared_error_do_not_touch_the_other_clone() {
        let a = TokenError::new(TokenErrorKind::Unavailable, "down");
        let b = a.clone().with_status(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(a.status(), None);
        assert_eq!(b.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    }

    #[test]
    fn retry_after_is_capped() {
        let e =
            TokenError::new(TokenErrorKind::Unavailable, "busy").with_retry_after(Duration::MAX);
        assert_eq!(e.retry_after(), Some(crate::source::MAX_RETRY_AFTER));
        let e = e.with_retry_after(Duration::from_secs(3));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn missing_env_names_every_variable() {
        let e = ConfigError::missing_env(vec!["WOKELO_USERNAME", "WOKELO_PASSWORD"]);
        assert!(e.to_string().contains("WOKELO_USERNAME, WOKELO_PASSWORD"));
        assert_eq!(
            e.missing_variables(),
            ["WOKELO_USERNAME", "WOKELO_PASSWORD"]
        );
    }

    #[test]
    fn service_error_is_the_source() {
        let e = Error::Service("boom".into());
        assert_eq!(e.source().unwrap().to_string(), "boom");
    }
}
