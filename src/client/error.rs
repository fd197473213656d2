//! [`ClientError`]: what went wrong with a call through the ready [`Client`](super::Client).

use std::{error::Error as StdError, fmt, time::Duration};

use http::StatusCode;

use crate::{BoxError, OAuthErrorBody, TokenError};

/// Which part of a call failed; see [`ClientError::kind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientErrorKind {
    /// No access token could be had (see [`ClientError::token_error`]): the
    /// request was not sent.
    Token,
    /// The request could not be sent or its answer not read: connection
    /// refused or reset, DNS, TLS.
    Transport,
    /// The call (retries included) did not finish within the client's
    /// timeout.
    Timeout,
    /// The API answered with a status that is not a success (see
    /// [`ClientError::status`] and [`ClientError::api_error`]).
    Status,
    /// The answer's body is not the JSON the caller asked for.
    Decode,
    /// The request could not be built: a path or URL that is not valid, a
    /// body that does not serialize.
    Request,
}

/// The error of a call through the ready [`Client`](super::Client).
///
/// Its message says which part failed and, where it helps, what to do; it
/// never contains a secret. The underlying error is its
/// [`source`](std::error::Error::source).
pub struct ClientError {
    // Boxed: a small `Result` for every call.
    inner: Box<Inner>,
}

struct Inner {
    kind: ClientErrorKind,
    message: String,
    status: Option<StatusCode>,
    api_error: Option<OAuthErrorBody>,
    source: Option<BoxError>,
}

impl ClientError {
    pub(crate) fn new(kind: ClientErrorKind, message: impl Into<String>) -> Self {
        Self {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                status: None,
                api_error: None,
                source: None,
            }),
        }
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    pub(crate) fn token(error: TokenError) -> Self {
        Self::new(
            ClientErrorKind::Token,
            format!("could not obtain a Wokelo access token: {error}"),
        )
        .with_source(error)
    }

    pub(crate) fn timeout(after: Duration) -> Self {
        Self::new(
            ClientErrorKind::Timeout,
            format!(
                "the call did not finish within {after:?} (retries included); raise it with ClientBuilder::timeout"
            ),
        )
    }

    pub(crate) fn from_status(status: StatusCode, api_error: OAuthErrorBody) -> Self {
        let mut message = format!("the Wokelo API answered {status}");
        if !api_error.is_empty() {
            message.push_str(&format!(": {api_error}"));
        }
        let mut error = Self::new(ClientErrorKind::Status, message);
        error.inner.status = Some(status);
        error.inner.api_error = (!api_error.is_empty()).then_some(api_error);
        error
    }

    /// Which part of the call failed.
    pub fn kind(&self) -> ClientErrorKind {
        self.inner.kind
    }

    /// The API's status, for [`ClientErrorKind::Status`].
    pub fn status(&self) -> Option<StatusCode> {
        self.inner.status
    }

    /// The API's error body (`error`, `error_description`, `detail`,
    /// `message`), for [`ClientErrorKind::Status`] when it sent one.
    pub fn api_error(&self) -> Option<&OAuthErrorBody> {
        self.inner.api_error.as_ref()
    }

    /// The token error, for [`ClientErrorKind::Token`].
    pub fn token_error(&self) -> Option<&TokenError> {
        self.inner.source.as_ref()?.downcast_ref()
    }
}

impl fmt::Debug for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ClientError");
        let i = &self.inner;
        d.field("kind", &i.kind).field("message", &i.message);
        if let Some(status) = i.status {
            d.field("status", &status);
        }
        if let Some(body) = &i.api_error {
            d.field("api_error", body);
        }
        if let Some(source) = &i.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)
    }
}

impl StdError for ClientError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}
