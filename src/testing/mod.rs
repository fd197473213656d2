//! An embedded mock of the Wokelo API, for tests of this crate and of SDK crates
//! built on it.
//!
//! [`MockServer`] listens on `127.0.0.1` on a free port and speaks HTTP/1.1 and
//! HTTP/2 (h2c prior knowledge). It implements what an authenticating client
//! meets on the real API, with the real statuses, bodies and headers (see the
//! crate's notes on the Wokelo API):
//!
//! - **`POST /auth/token/`**: the `password` and `refresh_token` grants, with
//!   bodies in `application/x-www-form-urlencoded`, `application/json` or
//!   `multipart/form-data`; `invalid_client` (401), `invalid_grant`,
//!   `unsupported_grant_type` and `invalid_request` (400) errors; rotating
//!   refresh tokens (a refresh revokes the previous access and refresh token),
//!   with optional [reuse protection](MockConfig::reuse_protection).
//! - **Everything under `/api/`** requires `Authorization: Bearer <token>` and
//!   answers `401` with the API's `WWW-Authenticate` challenges when the token is
//!   missing, expired or invalid. The whole request body is read before any
//!   answer, as the buffering proxy in front of the real API does. Behind it:
//!   - `ANY /api/echo…` describes the request it received: `method`, `path`,
//!     `query`, `content_type`, `headers` (all but `authorization`), `body_len`
//!     and `body_sha256` (lowercase hex), and the `user`;
//!   - `GET /api/enterprise/company/search?query=…` returns a small result list;
//!   - jobs: `POST /api/enterprise/report/` answers `202` with a `request_id`;
//!     `GET /api/enterprise/request/status/?request_id=…` advances it one step per
//!     poll (`PENDING`, then `PROCESSING`, for [`job_steps`](MockConfig::job_steps)
//!     polls, then `COMPLETED`, or `FAILED` if the job body had `"fail": true`);
//!     `GET /api/enterprise/request/result/?request_id=…` answers `409` until a
//!     status poll has reported the job finished, then `200` with the result;
//!   - `ANY /api/forbidden` answers `403 {"message": …}`;
//!   - any other path answers `404 {"detail": "Not found."}`.
//!
//! Tests steer it: [`revoke_all`](MockServer::revoke_all) invalidates every
//! token, [`fail_next_token_requests`](MockServer::fail_next_token_requests) and
//! [`fail_next_api_requests`](MockServer::fail_next_api_requests) queue
//! [`TokenFault`]s and [`ApiFault`]s, and [`stats`](MockServer::stats) counts
//! what the client sent: token requests by grant and encoding, errors, API
//! requests by status, and which access tokens were presented. Token expiry runs
//! on the [`tokio::time`] clock, so a test can expire tokens with
//! `tokio::time::advance` (tokio's `test-util` feature).
//!
//! # Example
//!
//! A password grant and an authenticated call, over a plain hyper-util client:
//!
//! ```
//! use bytes::Bytes;
//! use http::header::{AUTHORIZATION, CONTENT_TYPE};
//! use http::{Request, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use wokelo_auth::testing::MockServer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let server = MockServer::start().await;
//! let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//!
//! let config = server.config();
//! let form = serde_urlencoded::to_string([
//!     ("grant_type", "password"),
//!     ("client_id", config.client_id.as_str()),
//!     ("client_secret", config.client_secret.as_str()),
//!     ("username", config.username.as_str()),
//!     ("password", config.password.as_str()),
//! ])?;
//! let request = Request::post(server.url("/auth/token/"))
//!     .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
//!     .body(Full::from(form))?;
//! let response = client.request(request).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! let token: serde_json::Value =
//!     serde_json::from_slice(&response.into_body().collect().await?.to_bytes())?;
//! let access_token = token["access_token"].as_str().expect("a token");
//!
//! let request = Request::post(server.url("/api/echo?x=1"))
//!     .header(AUTHORIZATION, format!("Bearer {access_token}"))
//!     .body(Full::from("hello"))?;
//! let response = client.request(request).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! let echo: serde_json::Value =
//!     serde_json::from_slice(&response.into_body().collect().await?.to_bytes())?;
//! assert_eq!(echo["body_len"], 5);
//! assert_eq!(echo["query"], "x=1");
//!
//! // Without a token the API refuses, with the API's challenge.
//! let response = client
//!     .request(Request::get(server.url("/api/echo")).body(Full::default())?)
//!     .await?;
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(response.headers()["www-authenticate"], r#"Bearer realm="api""#);
//!
//! let stats = server.stats();
//! assert_eq!((stats.token_requests, stats.tokens_issued), (1, 1));
//! assert_eq!(stats.tokens_presented[access_token], 1);
//! assert_eq!(stats.unauthorized, 1);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

mod api;
mod body;
mod config;
mod fault;
mod form;
mod jobs;
mod server;
mod state;
mod stats;
mod token_endpoint;
mod tokens;

pub use config::MockConfig;
pub use fault::{ApiFault, TokenFault};
pub use stats::MockStats;

use state::Shared;

/// A running mock Wokelo API server; see the [module docs](self) for what it
/// serves and an example.
///
/// Dropping it shuts the server down: the listener and every open connection
/// are closed, and requests held by [`TokenFault::Hang`] are released.
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
    /// Dropped with the server, which wakes everything awaiting shutdown.
    _shutdown: watch::Sender<()>,
}

impl MockServer {
    /// Starts a server with [`MockConfig::default`].
    ///
    /// # Panics
    ///
    /// As [`MockServer::start_with`].
    pub async fn start() -> MockServer {
        MockServer::start_with(MockConfig::default()).await
    }

    /// Starts a server with `config`, listening on `127.0.0.1` on a free port and
    /// running on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime, or if no port on `127.0.0.1` can be
    /// bound.
    pub async fn start_with(config: MockConfig) -> MockServer {
        let listener = server::bind()
            .unwrap_or_else(|error| panic!("MockServer cannot listen on 127.0.0.1: {error}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("MockServer cannot read its own address: {error}"));
        let (shutdown, shutdown_rx) = watch::channel(());
        let shared = Arc::new(Shared::new(config, shutdown_rx));
        let accept = tokio::spawn(server::serve(listener, Arc::clone(&shared)));
        MockServer {
            addr,
            shared,
            accept,
            _shutdown: shutdown,
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The base URL followed by `path_and_query`, which should start with `/`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base_url())
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &MockConfig {
        &self.shared.config
    }

    /// [`Credentials`](crate::Credentials) this server accepts, with the base URL
    /// set to this server: what a test hands to
    /// [`PasswordGrant`](crate::PasswordGrant).
    pub fn credentials(&self) -> crate::Credentials {
        let config = &self.shared.config;
        let base = crate::ApiBase::parse(&self.base_url())
            .unwrap_or_else(|error| panic!("the mock server's own URL is invalid: {error}"));
        crate::Credentials::new(
            config.client_id.as_str(),
            config.client_secret.as_str(),
            config.username.as_str(),
            config.password.as_str(),
        )
        .with_base_url(base)
    }

    /// Revokes every access and refresh token issued so far: presenting any of
    /// them afterwards gets `401` (access) or `invalid_grant` (refresh).
    pub fn revoke_all(&self) {
        self.shared.lock().tokens.revoke_all();
    }

    /// Makes the next `n` token requests fail with `fault`, after any faults
    /// already queued (first in, first out).
    ///
    /// # Panics
    ///
    /// If `fault` is a [`TokenFault::Status`] whose status is not a valid HTTP
    /// status code (100 to 999).
    pub fn fail_next_token_requests(&self, n: usize, fault: TokenFault) {
        if let TokenFault::Status { status, .. } = &fault {
            fault::check_status(*status);
        }
        self.shared
            .lock()
            .token_faults
            .extend(std::iter::repeat_n(fault, n));
    }

    /// Makes the next `n` requests to protected endpoints fail with `fault`,
    /// after any faults already queued (first in, first out).
    ///
    /// # Panics
    ///
    /// If `fault` is an [`ApiFault::Status`] whose status is not a valid HTTP
    /// status code (100 to 999).
    pub fn fail_next_api_requests(&self, n: usize, fault: ApiFault) {
        if let ApiFault::Status { status, .. } = &fault {
            fault::check_status(*status);
        }
        self.shared
            .lock()
            .api_faults
            .extend(std::iter::repeat_n(fault, n));
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MockStats {
        self.shared.lock().stats.clone()
    }

    /// Sets every counter back to zero. Tokens, jobs and queued faults stay.
    pub fn reset_stats(&self) {
        self.shared.lock().stats = MockStats::default();
    }

    /// Mints a valid access token (with no refresh token) without going through
    /// the token endpoint, and without counting it in [`MockStats`]. It expires
    /// after [`MockConfig::token_lifetime`] like any other.
    pub fn issue_token(&self) -> String {
        let lifetime = self.shared.config.token_lifetime;
        self.shared
            .lock()
            .tokens
            .login(lifetime, false)
            .access_token
    }
}

impl fmt::Debug for MockServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
