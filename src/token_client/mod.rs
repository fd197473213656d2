//! The HTTP client that reaches the token endpoint.
//!
//! Token requests never go through the wrapped service: that service carries
//! the layer, and a token fetch must not wait on (or be retried by) the very
//! machinery it feeds. By default this is hyper-util's client over an
//! [`HttpsConnector`]: the environment's proxies ([`Proxy`]) and, with the
//! `rustls` feature, HTTPS trusting the operating system's store and the
//! webpki roots (`Trust`). The same connector serves the API client, so both
//! take the same route. A user or SDK crate can hand in any tower service
//! instead ([`PasswordGrant::with_http_client`](crate::PasswordGrant::with_http_client)).

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use tower::{util::BoxCloneSyncService, Service, ServiceExt};

mod cause;
mod connector;
mod proxy;
#[cfg(feature = "rustls")]
mod tls;

pub(crate) use cause::unreachable;
pub use connector::{HttpsConnector, HttpsStream};
pub use proxy::Proxy;
#[cfg(feature = "rustls")]
#[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
pub use tls::Trust;

use crate::BoxError;
#[cfg(feature = "rustls")]
use crate::ConfigError;

/// A response body from the token client, type-erased.
pub(crate) type TokenResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// The type-erased token client.
pub(crate) type TokenHttpClient =
    BoxCloneSyncService<Request<Full<Bytes>>, Response<TokenResponseBody>, BoxError>;

/// Boxes any tower HTTP service into a [`TokenHttpClient`].
pub(crate) fn boxed<S, B>(service: S) -> TokenHttpClient
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    BoxCloneSyncService::new(
        service
            .map_response(|res: Response<B>| res.map(|b| b.map_err(Into::into).boxed_unsync()))
            .map_err(Into::into),
    )
}

/// The network settings of the default token client: its proxies and, with
/// the `rustls` feature, the CAs it trusts. Read from the environment when a
/// [`PasswordGrant`](crate::PasswordGrant) is built.
#[derive(Clone, Debug)]
pub(crate) struct Network {
    pub(crate) proxy: Proxy,
    /// An unusable `SSL_CERT_FILE` is kept as its error, returned by the
    /// first token request (before anything is sent).
    #[cfg(feature = "rustls")]
    pub(crate) trust: Result<Trust, ConfigError>,
}

impl Network {
    /// [`Proxy::from_env`] and [`Trust::from_env`], read now.
    pub(crate) fn from_env() -> Self {
        Self {
            proxy: Proxy::from_env(),
            #[cfg(feature = "rustls")]
            trust: Trust::from_env(),
        }
    }

    /// The default client with these settings: hyper-util's client on tokio
    /// over an [`HttpsConnector`].
    pub(crate) fn client(&self) -> TokenHttpClient {
        use hyper_util::{
            client::legacy::Client,
            rt::{TokioExecutor, TokioTimer},
        };
        #[cfg(feature = "rustls")]
        let connector = match &self.trust {
            Ok(trust) => HttpsConnector::new(self.proxy.clone(), trust.clone()),
            Err(e) => return failing(e),
        };
        #[cfg(not(feature = "rustls"))]
        let connector = HttpsConnector::new(self.proxy.clone());
        let mut builder = Client::builder(TokioExecutor::new());
        // No idle connections kept: a pooled connection is driven by a task on
        // the runtime that opened it, and a later fetch may run on another
        // runtime (a test per runtime, a runtime per job) while that one is
        // idle or gone. Tokens are fetched minutes to days apart, so a new
        // connection per fetch costs nothing that matters.
        builder
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(0);
        let client = builder.build::<_, Full<Bytes>>(connector.clone());
        boxed(
            client.map_request(move |mut request: Request<Full<Bytes>>| {
                // A plain-http request through a proxy carries the proxy's
                // credentials itself (an https one sends them in its CONNECT).
                if let Some(auth) = connector.proxy_authorization(request.uri()) {
                    request
                        .headers_mut()
                        .insert(http::header::PROXY_AUTHORIZATION, auth);
                }
                request
            }),
        )
    }
}

/// A client that fails every request with the configuration error `e`.
#[cfg(feature = "rustls")]
fn failing(e: &ConfigError) -> TokenHttpClient {
    let error = crate::TokenError::new(
        crate::TokenErrorKind::Configuration,
        format!("the token client's TLS trust cannot be set up: {e}"),
    );
    boxed(tower::service_fn(move |_: Request<Full<Bytes>>| {
        let error = error.clone();
        async move { Err::<Response<Full<Bytes>>, BoxError>(Box::new(error)) }
    }))
}
