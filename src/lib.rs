//! Tower middleware that authenticates requests to the [Wokelo] API.
//!
//! [`WokeloAuthLayer`] wraps any tower HTTP service (a hyper-util client, an
//! axum proxy's outbound client, another SDK's stack) and:
//!
//! - gets a bearer token lazily, on the first request, from a pluggable
//!   [`TokenSource`] (built in: Wokelo's password and refresh-token grants,
//!   [`PasswordGrant`]);
//! - caches it for every clone of the service, refreshes it ahead of expiry,
//!   and never lets concurrent requests stampede the token endpoint;
//! - attaches `Authorization: Bearer <token>` (marked sensitive) to requests
//!   for the API origin, and to no other host;
//! - on a `401`, refreshes the token and retries the request once, replaying
//!   its body byte for byte.
//!
//! # Example
//!
//! ```
//! use http_body_util::{BodyExt, Empty};
//! use bytes::Bytes;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use tower::{ServiceBuilder, ServiceExt};
//! use wokelo_auth::{testing::MockServer, Credentials, PasswordGrant, WokeloAuthLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A local stand-in for https://api.wokelo.ai; in production use
//! // `Credentials::from_env()?`.
//! let server = MockServer::start().await;
//! let credentials = server.credentials();
//!
//! let client = Client::builder(TokioExecutor::new()).build_http();
//! let client = ServiceBuilder::new()
//!     .layer(WokeloAuthLayer::new(PasswordGrant::new(credentials)))
//!     .service(client);
//!
//! let request = http::Request::get(server.url("/api/enterprise/company/search?query=stripe"))
//!     .body(Empty::<Bytes>::new())?;
//! let response = client.oneshot(request).await?;
//! assert_eq!(response.status(), 200);
//! # Ok(()) }
//! ```
//!
//! # Behaviour
//!
//! | situation | what the layer does |
//! |---|---|
//! | first request | fetches a token; concurrent requests wait for that one fetch |
//! | token near expiry | one request starts a background refresh; all go on with the valid token (the refresh point is marked by a timer on the runtime, so no request reads the clock before it) |
//! | token expired | requests wait for one fetch |
//! | `401` from the API | drops the token if it is still the one sent, gets a new one (one fetch for all), retries once with the body replayed; a second `401` is returned as it is |
//! | `401`, body over the replay cap | returns the `401`; the token is refreshed for the next request |
//! | `401` a new token cannot fix | a Bearer `insufficient_scope`/`invalid_request` challenge is returned as it is; a fresh token refused on the retry keeps its `401`s for [`WokeloAuthBuilder::unauthorized_backoff`] |
//! | the runtime that started a fetch shuts down or idles | the fetch is started again, or taken over, from a live runtime; no request waits past the fetch timeout |
//! | `403` | returned as it is; no refresh |
//! | token endpoint `429`/`5xx`/down | retried with exponential backoff and jitter (honouring `Retry-After`) within the fetch timeout, then [`TokenErrorKind::Unavailable`] |
//! | wrong credentials | [`TokenErrorKind::CredentialsRejected`], not retried; requests fail fast with it for the backoff window (30 s) |
//! | request to another host | passes through without the token |
//! | request with its own `Authorization` | passes through untouched, never retried |
//! | no API base named (builder or source) and a request for another origin | passes through without the token; a WARN once per layer names the origin in use and the fix ([`WokeloAuthBuilder::api_base`], or forwarding [`TokenSource::api_base`]) |
//!
//! # More
//!
//! - [`TokenHandle`] (from [`WokeloAuthLayer::handle`] or
//!   [`WokeloAuth::handle`]): the token for other consumers (a websocket, a
//!   download through another client), a forced refresh, eager login at
//!   start-up, and an [`AuthSnapshot`] of the cache for health endpoints
//!   and metrics.
//! - [`store`]: persist the token in a file for a command-line tool, or share
//!   one token and one refresher across a fleet through Redis.
//! - [`retry_policy`]: Wokelo's published retry rules for `429` and `5xx`, as
//!   a tower retry policy to compose outside this layer.
//! - `testing` (feature `testing`): an embedded mock of the Wokelo API for
//!   your own tests.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `rustls` | yes | HTTPS to the token endpoint (rustls, webpki roots) |
//! | `testing` | no | `testing::MockServer` |
//! | `encryption` | no | sealing stored tokens at rest |
//! | `redis` | no | `store::RedisStore` (implies `encryption`) |
//! | `reqwest` | no | `reqwest::WokeloAuthMiddleware` for reqwest-middleware, and `reqwest::ReqwestService`: a `reqwest::Client` under the layer or as the token client |
//!
//! The layer needs a Tokio runtime with time enabled: token fetches run on
//! their own task, with timers for timeouts and backoff.
//!
//! [Wokelo]: https://wokelo.ai
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
mod cache;
mod challenge;
#[cfg(feature = "rustls")]
#[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
pub mod client;
mod error;
pub mod future;
pub mod handle;
mod layer;
mod origin;
#[cfg(test)]
mod proptests;
mod replay;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub mod reqwest;
pub mod retry_policy;
mod service;
pub mod source;
pub mod store;
mod token;
mod token_client;

#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

pub use cache::{DEFAULT_LIFETIME, MAX_FAILURE_WINDOW, MAX_LIFETIME, MIN_LIFETIME};
#[cfg(feature = "rustls")]
pub use client::{Client, ClientBuilder, ClientError, ClientErrorKind};
pub use error::{BoxError, ConfigError, Error, OAuthErrorBody, TokenError, TokenErrorKind};
pub use handle::{AccessToken, AuthSnapshot, TokenHandle};
pub use layer::{WokeloAuthBuilder, WokeloAuthLayer};
pub use origin::{ApiBase, DEFAULT_BASE_URL};
pub use replay::{ReplayBody, DEFAULT_MAX_REPLAY_BODY_BYTES};
pub use retry_policy::{ReplayableBody, RetryBody, WokeloRetryPolicy};
pub use service::WokeloAuth;
pub use source::{
    token_source_fn, Credentials, GrantCounts, PasswordGrant, StaticToken, TokenFuture,
    TokenRequestEncoding, TokenSource, TokenSourceFn, MAX_RETRY_AFTER, MAX_TOKEN_RESPONSE_BYTES,
};
pub use token::Token;
#[cfg(feature = "rustls")]
pub use token_client::Trust;
pub use token_client::{HttpsConnector, HttpsStream, Proxy};

/// The README's code, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
