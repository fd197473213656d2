//! [`Response`]: an answer of the ready [`Client`](super::Client), read
//! within the call's deadline.

use std::fmt;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::{ClientError, ClientErrorKind};
use crate::source::token_response::parse_api_error_body;

/// The most of an error answer's body read for
/// [`Response::error_for_status`] and [`Response::json`] (64 KiB): the
/// error fields are at its start, and a huge error page must not fill
/// memory.
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// The answer to a call through [`Client`](super::Client): the status and
/// headers at once, the body when read.
///
/// The body is read within the same deadline as the call
/// ([`ClientBuilder::timeout`](super::ClientBuilder::timeout)). Read it, or
/// drop the response: an HTTP/2 connection is closed by hyper after many
/// responses dropped with their bodies unread.
pub struct Response {
    inner: http::Response<Incoming>,
    deadline: Instant,
    timeout: std::time::Duration,
    /// Secrets the API might quote back in an error body (the access token
    /// the request carried), scrubbed from [`ClientError`]s.
    secrets: Vec<SecretString>,
}

impl Response {
    pub(crate) fn new(
        inner: http::Response<Incoming>,
        deadline: Instant,
        timeout: std::time::Duration,
        secrets: Vec<SecretString>,
    ) -> Self {
        Self {
            inner,
            deadline,
            timeout,
            secrets,
        }
    }

    /// The status the API answered with.
    pub fn status(&self) -> StatusCode {
        self.inner.status()
    }

    /// The headers of the answer.
    pub fn headers(&self) -> &HeaderMap {
        self.inner.headers()
    }

    /// The body, read whole, whatever the status.
    ///
    /// # Errors
    ///
    /// [`ClientErrorKind::Transport`] when the connection fails while the
    /// body is read, [`ClientErrorKind::Timeout`] past the call's deadline.
    pub async fn bytes(self) -> Result<Bytes, ClientError> {
        let (deadline, timeout) = (self.deadline, self.timeout);
        let read = self.inner.into_body().collect();
        match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) => Err(ClientError::new(
                ClientErrorKind::Transport,
                "the connection failed while the answer's body was read",
            )
            .with_source(e)),
            Err(_) => Err(ClientError::timeout(timeout)),
        }
    }

    /// The body as text (UTF-8, invalid sequences replaced), whatever the
    /// status.
    ///
    /// # Errors
    ///
    /// Those of [`bytes`](Self::bytes).
    pub async fn text(self) -> Result<String, ClientError> {
        Ok(String::from_utf8_lossy(&self.bytes().await?).into_owned())
    }

    /// This response if its status is a success (`2xx`).
    ///
    /// # Errors
    ///
    /// [`ClientErrorKind::Status`] with the API's error body (`error`,
    /// `error_description`, `detail`, `message`, read within the deadline)
    /// for any other status.
    pub async fn error_for_status(mut self) -> Result<Self, ClientError> {
        let status = self.status();
        if status.is_success() {
            return Ok(self);
        }
        let secrets = std::mem::take(&mut self.secrets);
        let body = self.error_body().await;
        let api_error = parse_api_error_body(&body, secrets.iter().map(|s| s.expose_secret()));
        Err(ClientError::from_status(status, api_error))
    }

    /// The start of an error answer's body (at most [`MAX_ERROR_BODY_BYTES`]),
    /// read within the deadline; what follows is not read.
    async fn error_body(self) -> Bytes {
        let mut body = self.inner.into_body();
        let read = async {
            let mut kept = bytes::BytesMut::new();
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    let room = MAX_ERROR_BODY_BYTES - kept.len();
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                    if kept.len() == MAX_ERROR_BODY_BYTES {
                        break;
                    }
                }
            }
            kept.freeze()
        };
        tokio::time::timeout_at(self.deadline, read)
            .await
            .unwrap_or_default()
    }

    /// The body, deserialized from JSON, if the status is a success.
    ///
    /// # Errors
    ///
    /// [`ClientErrorKind::Status`] with the API's error body for a status
    /// that is not `2xx`; [`ClientErrorKind::Decode`] when the body is not
    /// the JSON `T` expects; those of [`bytes`](Self::bytes).
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, ClientError> {
        let body = self.error_for_status().await?.bytes().await?;
        serde_json::from_slice(&body).map_err(|e| {
            ClientError::new(
                ClientErrorKind::Decode,
                format!(
                    "the answer is not the JSON expected ({} bytes; {e})",
                    body.len()
                ),
            )
        })
    }

    /// The underlying `http::Response`, with its streaming body.
    pub fn into_http(self) -> http::Response<Incoming> {
        self.inner
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status())
            .field("headers", self.headers())
            .finish_non_exhaustive()
    }
}
