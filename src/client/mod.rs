//! [`Client`]: the production stack in one line.
//!
//! A hyper-util client speaking HTTP/1.1 and HTTP/2 over rustls (with this
//! crate's own crypto provider, so no process-level provider is needed),
//! through the same proxies and trusting the same certificate authorities
//! as the token requests ([`HttpsConnector`]),
//! [`WokeloAuthLayer`] for the token, [`WokeloRetryPolicy`] for Wokelo's
//! retry rules (`429`, `500`, `502`/`503`; `POST` only if opted in), and a
//! deadline for each call, retries and the body included.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let server = wokelo_auth::testing::MockServer::start().await;
//! # let credentials = server.credentials();
//! use wokelo_auth::Client;
//!
//! // In production: `Client::from_env()?` (WOKELO_CLIENT_ID, ...).
//! let client = Client::new(credentials);
//! let found: serde_json::Value = client
//!     .get("/api/enterprise/company/search?query=stripe")
//!     .await?
//!     .json()
//!     .await?;
//! assert_eq!(found["results"][0]["name"], "Stripe Inc.");
//! # Ok(()) }
//! ```

mod error;
mod response;

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, Method, Request, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Serialize;
use tokio::time::Instant;
use tower::{retry::Retry, util::BoxCloneSyncService, ServiceExt};

pub use error::{ClientError, ClientErrorKind};
pub use response::{Response, MAX_ERROR_BODY_BYTES};

use crate::{
    ApiBase, ConfigError, Credentials, Error, HttpsConnector, PasswordGrant, Proxy, Trust,
    WokeloAuthBuilder, WokeloAuthLayer, WokeloRetryPolicy,
};

/// The default deadline of one call, retries and reading the body included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

type Stack = BoxCloneSyncService<Request<Full<Bytes>>, http::Response<Incoming>, Error>;

/// A ready Wokelo API client: the whole stack, cheap to clone; every clone
/// shares one token. See the [module docs](self).
///
/// Clones share one connection pool too, and a pooled connection is driven
/// by a task on the runtime that opened it: use a client from one runtime
/// (or from runtimes that keep running). On another runtime while the first
/// sits idle (a current-thread runtime between `block_on` calls), a call can
/// wait for that connection until its deadline. The token requests keep no
/// pooled connection, so tokens work from any runtime.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    service: Stack,
    layer: WokeloAuthLayer,
    /// For the `Proxy-Authorization` of plain-`http` requests through a
    /// proxy that wants credentials (`https` ones carry it in `CONNECT`).
    connector: HttpsConnector,
    base: ApiBase,
    timeout: Duration,
}

impl Client {
    /// A client for the credentials and base URL in the environment
    /// (`WOKELO_CLIENT_ID`, `WOKELO_CLIENT_SECRET`, `WOKELO_USERNAME`,
    /// `WOKELO_PASSWORD`, optionally `WOKELO_BASE_URL` and
    /// `WOKELO_ALLOW_HTTP`), with the default settings.
    ///
    /// Proxies and trusted certificate authorities come from the
    /// environment too (see [`ClientBuilder::proxy`] and
    /// [`ClientBuilder::trust`]).
    ///
    /// # Errors
    ///
    /// Those of [`Credentials::from_env`]: a missing variable (named), a bad
    /// base URL, plain `http` to a host that is not loopback; and an
    /// unusable `SSL_CERT_FILE` or `SSL_CERT_DIR`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let credentials = Credentials::from_env()?;
        Ok(Self::builder(credentials).trust(Trust::from_env()?).build())
    }

    /// A client for `credentials`, with the default settings.
    pub fn new(credentials: Credentials) -> Self {
        Self::builder(credentials).build()
    }

    /// A builder for other settings: timeout, retry policy, the auth layer's.
    pub fn builder(credentials: Credentials) -> ClientBuilder {
        ClientBuilder {
            credentials,
            proxy: None,
            trust: None,
            configure: Box::new(|auth| auth),
            timeout: DEFAULT_TIMEOUT,
            retry: WokeloRetryPolicy::new(),
        }
    }

    /// The API base URL paths are joined to.
    pub fn base_url(&self) -> &ApiBase {
        &self.inner.base
    }

    /// The auth layer inside, shared by every clone.
    pub fn auth_layer(&self) -> &WokeloAuthLayer {
        &self.inner.layer
    }

    /// A handle on the client's token: read it (for a websocket or a
    /// download through another client), force a refresh, drop it, log in
    /// eagerly at start-up, or take a snapshot for a health endpoint. See
    /// [`TokenHandle`](crate::TokenHandle).
    pub fn handle(&self) -> crate::TokenHandle {
        self.inner.layer.handle()
    }

    /// The absolute URI of `path_or_url`: a path (starting with `/`) joined
    /// to the base URL, or an `http`/`https` URL as it is (which gets the
    /// token only if it is for the API's origin).
    ///
    /// # Errors
    ///
    /// [`ClientErrorKind::Request`] for anything else, or a URI that does
    /// not parse.
    pub fn url(&self, path_or_url: &str) -> Result<Uri, ClientError> {
        let scheme = path_or_url
            .split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase());
        let url = if path_or_url.starts_with('/') {
            // `//host/x` is a path here, on the API's host, not another host.
            self.inner.base.join(path_or_url)
        } else if matches!(scheme.as_deref(), Some("https" | "http")) {
            path_or_url.to_owned()
        } else {
            return Err(ClientError::new(
                ClientErrorKind::Request,
                format!(
                    "{:?} is neither a path (starting with /) nor an http(s) URL",
                    crate::source::scrub::one_line(path_or_url, 80)
                ),
            ));
        };
        let uri: Uri = url.parse().map_err(|e| {
            ClientError::new(
                ClientErrorKind::Request,
                format!(
                    "{:?} is not a valid URL",
                    crate::source::scrub::one_line(path_or_url, 80)
                ),
            )
            .with_source(e)
        })?;
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(ClientError::new(
                ClientErrorKind::Request,
                "a URL with user info (`user:password@`) is refused: the Wokelo API takes the bearer token, and the user info would be dropped silently",
            ));
        }
        Ok(uri)
    }

    /// `GET path_or_url` (see [`url`](Self::url)).
    ///
    /// # Errors
    ///
    /// See [`send`](Self::send). A status that is not a success is not an
    /// error here: see [`Response::error_for_status`] and
    /// [`Response::json`].
    pub async fn get(&self, path_or_url: &str) -> Result<Response, ClientError> {
        let request = self.request(Method::GET, path_or_url, None, Bytes::new())?;
        self.send(request).await
    }

    /// `POST path_or_url` with `body` as JSON.
    ///
    /// Not retried after a `429` or `5xx` unless the retry policy allows
    /// `POST` ([`ClientBuilder::retry_non_idempotent`]): a job submitted
    /// twice runs twice. Retried once after a `401`, with the same bytes.
    ///
    /// # Errors
    ///
    /// [`ClientErrorKind::Request`] when `body` does not serialize; see
    /// [`send`](Self::send).
    pub async fn post_json<T: Serialize + ?Sized>(
        &self,
        path_or_url: &str,
        body: &T,
    ) -> Result<Response, ClientError> {
        let json = serde_json::to_vec(body).map_err(|e| {
            ClientError::new(
                ClientErrorKind::Request,
                "the request body does not serialize to JSON",
            )
            .with_source(e)
        })?;
        let request = self.request(
            Method::POST,
            path_or_url,
            Some("application/json"),
            json.into(),
        )?;
        self.send(request).await
    }

    /// Sends `request` through the stack: token, retries, deadline. A
    /// relative URI (a path) is joined to the base URL, as
    /// [`url`](Self::url) does.
    ///
    /// # Errors
    ///
    /// [`ClientErrorKind::Token`] when no token could be had (the request
    /// was not sent), [`ClientErrorKind::Transport`] when the request could
    /// not be sent, [`ClientErrorKind::Timeout`] past the deadline,
    /// [`ClientErrorKind::Request`] for a URI [`url`](Self::url) refuses or
    /// when called outside a Tokio runtime.
    pub async fn send(&self, mut request: Request<Bytes>) -> Result<Response, ClientError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ClientError::new(
                ClientErrorKind::Request,
                "wokelo-auth's Client needs a Tokio runtime (with time and I/O enabled); call it inside one",
            ));
        }
        if request.uri().scheme().is_none() {
            let path = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            *request.uri_mut() = self.url(&path)?;
        }
        if let Some(value) = self.inner.connector.proxy_authorization(request.uri()) {
            request
                .headers_mut()
                .entry(header::PROXY_AUTHORIZATION)
                .or_insert(value);
        }
        let timeout = self.inner.timeout;
        let deadline = crate::cache::after(Instant::now(), timeout);
        let call = self.inner.service.clone().oneshot(request.map(Full::new));
        match tokio::time::timeout_at(deadline, call).await {
            Ok(Ok(response)) => Ok(Response::new(
                response,
                deadline,
                timeout,
                self.inner
                    .layer
                    .auth()
                    .cache
                    .cached_access_token()
                    .into_iter()
                    .collect(),
            )),
            Ok(Err(Error::Token(e))) => Err(ClientError::token(e)),
            Ok(Err(e)) => Err(ClientError::new(
                ClientErrorKind::Transport,
                format!("the request could not be sent: {}", transport_cause(&e)),
            )
            .with_source(e)),
            Err(_) => Err(ClientError::timeout(timeout)),
        }
    }

    fn request(
        &self,
        method: Method,
        path_or_url: &str,
        content_type: Option<&'static str>,
        body: Bytes,
    ) -> Result<Request<Bytes>, ClientError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(self.url(path_or_url)?)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("wokelo-auth/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(content_type) = content_type {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        builder.body(body).map_err(|e| {
            ClientError::new(ClientErrorKind::Request, "the request could not be built")
                .with_source(e)
        })
    }
}

/// The innermost cause of a transport failure, in one line.
fn transport_cause(error: &Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    crate::source::scrub::one_line(&cause.to_string(), 200)
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base)
            .field("timeout", &self.inner.timeout)
            .field("auth", &self.inner.layer)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Client`] with settings other than the defaults.
///
/// ```
/// use std::time::Duration;
/// use wokelo_auth::{Client, Credentials, WokeloRetryPolicy};
///
/// let credentials = Credentials::new("id", "secret", "analyst@example.com", "password");
/// let client = Client::builder(credentials)
///     .timeout(Duration::from_secs(120))
///     .retry_policy(WokeloRetryPolicy::new().with_budget(Duration::from_secs(60)))
///     .auth(|auth| auth.token_timeout(Duration::from_secs(10)))
///     .build();
/// # let _ = client;
/// ```
pub struct ClientBuilder {
    credentials: Credentials,
    proxy: Option<Proxy>,
    trust: Option<Trust>,
    configure: Box<dyn FnOnce(WokeloAuthBuilder) -> WokeloAuthBuilder + Send>,
    timeout: Duration,
    retry: WokeloRetryPolicy,
}

impl ClientBuilder {
    /// The deadline of one call: the token, every retry and reading the
    /// body (default [`DEFAULT_TIMEOUT`], 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The retry rules for the API's `429` and `5xx` answers (default
    /// [`WokeloRetryPolicy::new`]).
    pub fn retry_policy(mut self, policy: WokeloRetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Also retries `POST` and `PATCH` after `429`/`5xx` (off by default:
    /// a job submitted twice runs twice).
    pub fn retry_non_idempotent(mut self, yes: bool) -> Self {
        self.retry = self.retry.retry_non_idempotent(yes);
        self
    }

    /// The proxy for the API calls and the token requests alike (default
    /// [`Proxy::from_env`]: `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`,
    /// `NO_PROXY`, read when the client is built).
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// The certificate authorities trusted for the API calls and the token
    /// requests alike (default [`Trust::from_env`]: the operating system's
    /// store, or `SSL_CERT_FILE`/`SSL_CERT_DIR`, plus the webpki roots).
    pub fn trust(mut self, trust: Trust) -> Self {
        self.trust = Some(trust);
        self
    }

    /// Tunes the auth layer: token timeout, retries, backoffs, store.
    pub fn auth(
        mut self,
        configure: impl FnOnce(WokeloAuthBuilder) -> WokeloAuthBuilder + Send + 'static,
    ) -> Self {
        let before = self.configure;
        self.configure = Box::new(move |auth| configure(before(auth)));
        self
    }

    /// Builds the client. Needs no runtime; the first call needs Tokio's.
    ///
    /// An unusable `SSL_CERT_FILE` (with no [`trust`](Self::trust) given)
    /// fails the first call with a [`TokenErrorKind::Configuration`](crate::TokenErrorKind::Configuration)
    /// error naming it, before anything is sent.
    pub fn build(self) -> Client {
        let base = self.credentials.base_url().clone();
        let mut grant = PasswordGrant::new(self.credentials);
        if let Some(proxy) = &self.proxy {
            grant = grant.with_proxy(proxy.clone());
        }
        if let Some(trust) = &self.trust {
            grant = grant.with_trust(trust.clone());
        }
        let layer = (self.configure)(WokeloAuthLayer::builder(grant)).build();
        // With an unusable SSL_CERT_FILE the token request fails first and
        // says why; the API calls never go out.
        let trust = self
            .trust
            .unwrap_or_else(|| Trust::from_env().unwrap_or_else(|_| Trust::webpki_roots()));
        let connector = HttpsConnector::new(self.proxy.unwrap_or_else(Proxy::from_env), trust);
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector.clone());
        let auth = tower::Layer::layer(&layer, http);
        let service = Retry::new(self.retry, auth);
        Client {
            inner: Arc::new(Inner {
                service: BoxCloneSyncService::new(service),
                layer,
                connector,
                base,
                timeout: self.timeout,
            }),
        }
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("credentials", &self.credentials)
            .field("proxy", &self.proxy)
            .field("trust", &self.trust)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}
