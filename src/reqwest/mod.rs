//! reqwest support (feature `reqwest`): the layer's behaviour for
//! [reqwest] 0.13 and [reqwest-middleware] 0.5 users.
//!
//! - [`WokeloAuthMiddleware`]: a reqwest-middleware `Middleware`. Keep
//!   `RequestBuilder::send()`; the token is fetched once for every request
//!   and clone, attached to the API origin only, refreshed ahead of expiry,
//!   and refreshed with the request sent again after a `401`.
//! - [`ReqwestService`]: a `reqwest::Client` as a tower service, to put
//!   under [`WokeloAuthLayer`](crate::WokeloAuthLayer), or to fetch tokens
//!   with ([`PasswordGrant::with_http_client`](crate::PasswordGrant::with_http_client))
//!   so that they go through the client's proxy and TLS settings too.
//! - [`tls_config`] (with the `rustls` feature, on by default): TLS for the
//!   reqwest client on the crate's own crypto provider, so that nothing
//!   needs a process-level rustls `CryptoProvider`.
//!
//! # Example
//!
//! ```
//! use wokelo_auth::{reqwest::{ReqwestService, WokeloAuthMiddleware}, PasswordGrant};
//! # use wokelo_auth::testing::MockServer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let server = MockServer::start().await;
//! # let credentials = server.credentials();
//! # let url = server.url("/api/enterprise/company/search?query=stripe");
//! // In production: `let credentials = wokelo_auth::Credentials::from_env()?;`
//! let http = reqwest::Client::builder()
//!     .tls_backend_preconfigured(wokelo_auth::reqwest::tls_config())
//!     .build()?;
//! // Token requests through the same client (its proxy and TLS settings).
//! let source = PasswordGrant::new(credentials).with_http_client(ReqwestService::new(http.clone()));
//! let client = reqwest_middleware::ClientBuilder::new(http)
//!     .with(WokeloAuthMiddleware::new(source))
//!     .build();
//!
//! let response = client.get(url).send().await?;
//! assert_eq!(response.status(), 200);
//! # Ok(()) }
//! ```
//!
//! [reqwest]: https://docs.rs/reqwest/0.13
//! [reqwest-middleware]: https://docs.rs/reqwest-middleware/0.5

mod middleware;
mod service;
#[cfg(feature = "rustls")]
mod tls;

pub use middleware::WokeloAuthMiddleware;
pub use service::{ReqwestService, ResponseFuture};
#[cfg(feature = "rustls")]
#[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
pub use tls::tls_config;
