//! The HTTP client that reaches the token endpoint.
//!
//! Token requests never go through the wrapped service: that service carries
//! the layer, and a token fetch must not wait on (or be retried by) the very
//! machinery it feeds. By default this is hyper-util's pooled client, with
//! rustls when the `rustls` feature is on; a user or SDK crate can hand in
//! any tower service instead ([`PasswordGrant::with_http_client`](crate::PasswordGrant::with_http_client)).

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use tower::{util::BoxCloneSyncService, Service, ServiceExt};

use crate::BoxError;

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

/// The default client: hyper-util's pooled client on tokio, speaking HTTPS
/// through rustls (webpki roots) when the `rustls` feature is on.
pub(crate) fn default_client() -> TokenHttpClient {
    use hyper_util::{
        client::legacy::{connect::HttpConnector, Client},
        rt::{TokioExecutor, TokioTimer},
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let mut builder = Client::builder(TokioExecutor::new());
    // No idle connections kept: a pooled connection is driven by a task on
    // the runtime that opened it, and a later fetch may run on another
    // runtime (a test per runtime, a runtime per job) while that one is
    // idle or gone. Tokens are fetched minutes to days apart, so a new
    // connection per fetch costs nothing that matters.
    builder
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(0);
    #[cfg(feature = "rustls")]
    {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .expect("the ring provider supports the default TLS versions")
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        boxed(builder.build::<_, Full<Bytes>>(https))
    }
    #[cfg(not(feature = "rustls"))]
    {
        boxed(builder.build::<_, Full<Bytes>>(http))
    }
}
