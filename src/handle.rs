//! [`TokenHandle`]: the layer's token for other uses than its requests, and
//! the cache's state for health checks and metrics.
//!
//! A websocket, a download through another HTTP client or a command-line
//! tool that prints the token can read it with [`TokenHandle::token`];
//! after a permission change [`TokenHandle::refresh`] gets a new one; a
//! service validates its credentials at start-up with
//! [`TokenHandle::login`]; a health endpoint reports
//! [`TokenHandle::snapshot`]. All of them share the layer's cache and its
//! single flight: they never cause a token request that a request would
//! not have caused or joined.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Empty;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use tower::{Layer, ServiceExt};
//! use wokelo_auth::{testing::MockServer, PasswordGrant, WokeloAuthLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let server = MockServer::start().await;
//! let layer = WokeloAuthLayer::new(PasswordGrant::new(server.credentials()));
//! let auth = layer.handle();
//!
//! // At start-up: fail fast on wrong credentials.
//! auth.login().await?;
//!
//! // Requests through the layer use the same token...
//! let client = layer.layer(Client::builder(TokioExecutor::new()).build_http());
//! let request = http::Request::get(server.url("/api/echo")).body(Empty::<Bytes>::new())?;
//! assert_eq!(client.oneshot(request).await?.status(), 200);
//!
//! // ...as another consumer of it.
//! let token = auth.token().await?;
//! assert_eq!(server.stats().tokens_presented[token.expose_secret()], 1);
//! assert_eq!(server.stats().token_requests, 1);
//!
//! let snapshot = auth.snapshot();
//! assert!(snapshot.token.is_some());
//! assert_eq!(snapshot.fetches.started(), 1);
//! # Ok(()) }
//! ```

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime},
};

use http::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

pub use crate::cache::{
    AuthSnapshot, CachedToken, ErrorKindCounts, FetchCounts, LastTokenError, UnauthorizedCounts,
};
use crate::{
    cache::{system_time_after, Entry},
    layer::Auth,
    ApiBase, TokenError,
};

/// A handle on the token of a [`WokeloAuthLayer`](crate::WokeloAuthLayer):
/// read it, refresh it, drop it, log in eagerly, take a snapshot of the
/// cache. From [`WokeloAuthLayer::handle`](crate::WokeloAuthLayer::handle)
/// or [`WokeloAuth::handle`](crate::WokeloAuth::handle); every handle, the
/// layer and every service it built share one cache. Cheap to clone. See
/// the [module docs](self) for an example.
///
/// Like the requests, its methods need a Tokio runtime with time enabled
/// when they fetch a token.
#[derive(Clone)]
pub struct TokenHandle {
    auth: Arc<Auth>,
}

impl TokenHandle {
    pub(crate) fn new(auth: Arc<Auth>) -> Self {
        Self { auth }
    }

    /// The current valid access token, fetching one if none is cached, for
    /// another consumer than the layer's requests: a websocket, a download
    /// through another client, a CLI that prints it.
    ///
    /// It goes through the same single flight as requests: with a token
    /// cached this makes no token request, and concurrent calls and
    /// requests on a cold layer share one fetch. Past the token's refresh
    /// point it starts the refresh ahead of expiry, in the background, and
    /// returns the still-valid token.
    ///
    /// Send it only to the API origin ([`api_base`](Self::api_base)): it is
    /// a long-lived secret. It may stop working before
    /// [`AccessToken::expires_at`] (revoked, replaced by a refresh): after a
    /// `401`, call [`refresh`](Self::refresh).
    ///
    /// # Errors
    ///
    /// The fetch's [`TokenError`], as a request waiting for it would get it:
    /// [`CredentialsRejected`](crate::TokenErrorKind::CredentialsRejected)
    /// at once for wrong credentials, and for the failure backoff after it
    /// without another token request;
    /// [`Unavailable`](crate::TokenErrorKind::Unavailable) or
    /// [`TimedOut`](crate::TokenErrorKind::TimedOut) after the fetch's
    /// retries; [`Configuration`](crate::TokenErrorKind::Configuration)
    /// outside a Tokio runtime.
    pub async fn token(&self) -> Result<AccessToken, TokenError> {
        self.auth.cache.token().await.map(|e| AccessToken::of(&e))
    }

    /// Fetches a new token now, even though the cached one is valid, and
    /// returns it: after a permission change, say, which tokens issued
    /// before it do not carry. The new token replaces the cached one for
    /// every request from then on; with Wokelo's rotating refresh tokens
    /// the old access token is revoked, and requests in flight with it are
    /// retried after their `401`.
    ///
    /// Single-flighted: concurrent calls, and requests that need a token
    /// meanwhile, share one fetch. A fetch already in flight when it is
    /// called (a refresh ahead of expiry, after a `401`, another
    /// `refresh`) is joined rather than a second one started. With a shared
    /// [`TokenStore`](crate::store::TokenStore), the token comes from the
    /// source (renewing the stored refresh token, under the store's lock),
    /// never adopted from the store, and is stored for the other processes.
    ///
    /// # Errors
    ///
    /// As for [`token`](Self::token). Inside the failure backoff window it
    /// fails fast with the error that opened it, as requests do. When the
    /// fetch fails, the cached token, if still valid, stays in use.
    pub async fn refresh(&self) -> Result<AccessToken, TokenError> {
        self.auth.cache.refresh().await.map(|e| AccessToken::of(&e))
    }

    /// Drops the cached token: the next request (or [`token`](Self::token)
    /// call) fetches another. Nothing is fetched now, and the fetch renews
    /// the dropped token with its refresh token where the source has one.
    ///
    /// With a shared [`TokenStore`](crate::store::TokenStore) the next fetch
    /// may adopt the token the store holds, which may be the one dropped:
    /// use [`refresh`](Self::refresh) to replace it everywhere.
    pub fn invalidate(&self) {
        self.auth.cache.drop_token();
    }

    /// Logs in now, if no valid token is cached, rather than on the first
    /// request: to validate the credentials at start-up, so that a service
    /// with a wrong password fails its readiness probe (or exits) instead
    /// of its first user's request. The token is cached for the requests.
    ///
    /// The same as [`token`](Self::token), without handing the token out.
    ///
    /// Wrong credentials open the failure backoff
    /// ([`WokeloAuthBuilder::credentials_backoff`](crate::WokeloAuthBuilder::credentials_backoff),
    /// 30 s by default): for that long every `login`, `token` and request
    /// that needs a token fails fast with the same error, and no token
    /// request is sent; the first call after it tries again. A readiness
    /// probe calling `login` every few seconds thus costs one token request
    /// per window, not one per probe.
    ///
    /// # Errors
    ///
    /// As for [`token`](Self::token): typically
    /// [`CredentialsRejected`](crate::TokenErrorKind::CredentialsRejected),
    /// whose message says which credentials to check.
    pub async fn login(&self) -> Result<(), TokenError> {
        self.auth.cache.token().await.map(drop)
    }

    /// The cache's state and counters now: whether a token is held and
    /// until when, fetches by reason and outcome, what `401`s led to, the
    /// last error. Never a secret. Takes the cache's lock briefly; requests
    /// that find a token cached do not take it.
    pub fn snapshot(&self) -> AuthSnapshot {
        self.auth.cache.snapshot()
    }

    /// The API base URL whose origin gets the token.
    pub fn api_base(&self) -> &ApiBase {
        &self.auth.base
    }
}

impl fmt::Debug for TokenHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenHandle")
            .field("api_base", &self.auth.base)
            .field("cache", &self.auth.cache)
            .finish()
    }
}

/// An access token from a [`TokenHandle`], with what the layer knows of it.
///
/// `Debug` shows its generation and expiry, never the token: read it with
/// [`expose_secret`](Self::expose_secret) or
/// [`authorization`](Self::authorization), where it is sent.
#[derive(Clone)]
pub struct AccessToken {
    token: SecretString,
    header: HeaderValue,
    generation: u64,
    expires_at: SystemTime,
    valid_until: Instant,
}

impl AccessToken {
    fn of(entry: &Entry) -> Self {
        let remaining = entry.expires_at.saturating_duration_since(Instant::now());
        Self {
            token: entry.token.access_token().clone(),
            header: entry.header.clone(),
            generation: entry.generation,
            expires_at: system_time_after(remaining),
            valid_until: entry.expires_at,
        }
    }

    /// The token itself, as sent after `Bearer ` (RFC 6750 section 2.1).
    pub fn expose_secret(&self) -> &str {
        self.token.expose_secret()
    }

    /// The token as a [`SecretString`], to hand on without exposing it.
    pub fn secret(&self) -> &SecretString {
        &self.token
    }

    /// `Bearer <token>`, for an `Authorization` header, marked sensitive (so
    /// that HTTP/2 does not index it, and tower-http's tracing hides it).
    pub fn authorization(&self) -> HeaderValue {
        self.header.clone()
    }

    /// The cache's number for this token (see
    /// [`CachedToken::generation`]).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// When it expires, on the system clock, as the layer reckons it.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// How long it is still valid, as the layer reckons it.
    pub fn expires_in(&self) -> Duration {
        self.valid_until.saturating_duration_since(Instant::now())
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"[REDACTED]")
            .field("generation", &self.generation)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}
