//! [`WokeloAuthMiddleware`]: the layer's behaviour as a reqwest-middleware
//! [`Middleware`].

use std::{fmt, sync::Arc};

use ::reqwest::{header::AUTHORIZATION, Request, Response, StatusCode, Url};
use http::{Extensions, HeaderValue};
use reqwest_middleware::{Middleware, Next, Result};

use crate::{
    cache::{After401, Reason},
    layer::Auth,
    Error, TokenSource, WokeloAuthLayer,
};

/// Authenticates requests to the Wokelo API sent through a
/// [`reqwest_middleware::ClientWithMiddleware`].
///
/// The same behaviour as [`WokeloAuthLayer`]: the token is fetched on first
/// use (one fetch for all the requests waiting for it), refreshed ahead of
/// expiry, attached as `Authorization: Bearer <token>` (marked sensitive)
/// to requests for the API origin that carry no `Authorization` of their
/// own, and on a `401` refreshed once with the request sent again. Other
/// requests pass through untouched.
///
/// Every clone, and every layer or middleware made from the same
/// [`WokeloAuthLayer`], shares one token cache. See the [module
/// docs](crate::reqwest) for an example.
///
/// # The retry after a `401`
///
/// The request is sent again only if [`Request::try_clone`] can copy it:
/// a body given as bytes, a string or JSON can; a streamed body
/// (`reqwest::Body::wrap` of an `http_body::Body`, or `wrap_stream` with
/// reqwest's `stream` feature) cannot, and its `401` is returned (the
/// token is refreshed for the next request). Nor is a body larger than the
/// layer's [`max_replay_body_bytes`](crate::WokeloAuthBuilder::max_replay_body_bytes)
/// (default 64 KiB) kept for a retry: its `401` is returned too. A `401`
/// whose Bearer challenge names `insufficient_scope` or `invalid_request`
/// is returned as it is, as is a second `401`.
///
/// # Errors
///
/// When no token can be had, the request is not sent and the result is
/// [`reqwest_middleware::Error::Middleware`] holding an [`Error::Token`]
/// (reach it with `downcast_ref::<wokelo_auth::Error>()`); the errors of the
/// rest of the chain are passed on as they are.
#[derive(Clone)]
pub struct WokeloAuthMiddleware {
    auth: Arc<Auth>,
    origin: Arc<ApiOrigin>,
}

/// The API base's origin as the `url` crate spells it (the parser reqwest
/// connects with), so that a request's URL is compared field by field.
struct ApiOrigin {
    scheme: &'static str,
    host: String,
    port: u16,
}

impl WokeloAuthMiddleware {
    /// A middleware with the default settings, getting tokens from `source`.
    /// For other settings, build a layer with [`WokeloAuthLayer::builder`]
    /// and convert it (`WokeloAuthMiddleware::from(layer)`).
    pub fn new(source: impl TokenSource) -> Self {
        Self::from(WokeloAuthLayer::new(source))
    }

    /// A middleware sharing `layer`'s token cache and settings: a tower
    /// stack and a reqwest client built from the same layer log in once.
    pub fn from_layer(layer: &WokeloAuthLayer) -> Self {
        let auth = layer.auth().clone();
        // An `ApiBase` is a valid http(s) URL with a host, which `Url`
        // parses too; should it not, no request matches the empty host and
        // the token is attached to none.
        let url = Url::parse(auth.base.as_str()).ok();
        let origin = ApiOrigin {
            scheme: if auth.base.is_https() {
                "https"
            } else {
                "http"
            },
            host: url
                .as_ref()
                .and_then(Url::host_str)
                .unwrap_or_default()
                .to_owned(),
            port: url
                .as_ref()
                .and_then(Url::port_or_known_default)
                .unwrap_or(0),
        };
        Self {
            auth,
            origin: Arc::new(origin),
        }
    }

    /// The API base URL whose origin gets the token.
    pub fn api_base(&self) -> &crate::ApiBase {
        &self.auth.base
    }

    /// Whether `request` gets the token: for the API origin, without an
    /// `Authorization` of its own.
    fn wants_token(&self, request: &Request) -> bool {
        let url = request.url();
        let origin = &*self.origin;
        !request.headers().contains_key(AUTHORIZATION)
            && url.scheme() == origin.scheme
            && url.port_or_known_default() == Some(origin.port)
            && url.host_str() == Some(origin.host.as_str())
            && !origin.host.is_empty()
    }

    /// A copy of `request` to send after a `401`, if its body can be copied
    /// and is within the replay cap.
    fn replayable(&self, request: &Request) -> Option<Request> {
        let len = request
            .body()
            .map_or(Some(0), |body| body.as_bytes().map(<[u8]>::len));
        if len? > self.auth.max_replay_body_bytes {
            return None;
        }
        request.try_clone()
    }

    /// After a `401` to the token of `generation`: the answer to return, or
    /// the retry's with a fresh token. The same steps as the tower
    /// service's (see `future.rs`).
    async fn after_401(
        &self,
        response: Response,
        replay: Option<Request>,
        generation: u64,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<Response> {
        let cache = &self.auth.cache;
        let replayable = replay.is_some();
        if cache.after_401(response.headers(), generation, replayable) == After401::Return {
            return Ok(response);
        }
        let Some(mut retry) = replay else {
            return Ok(response);
        };
        drain(response);
        let (header, generation) = token(cache.acquire(Reason::Unauthorized).await)?;
        retry.headers_mut().insert(AUTHORIZATION, header);
        let response = next.run(retry, extensions).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            cache.after_second_401(generation);
        } else {
            cache.after_retry_answered(generation);
        }
        Ok(response)
    }
}

impl From<WokeloAuthLayer> for WokeloAuthMiddleware {
    fn from(layer: WokeloAuthLayer) -> Self {
        Self::from_layer(&layer)
    }
}

#[async_trait::async_trait]
impl Middleware for WokeloAuthMiddleware {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<Response> {
        if !self.wants_token(&request) {
            return next.run(request, extensions).await;
        }
        let cache = &self.auth.cache;
        // No copy of the token is kept per middleware: it would need a lock
        // per request, as every request shares `&self`. The cache's slow
        // path reads the clock and the entry instead (see BENCHMARKS.md).
        let (header, generation) = match cache.current(&mut None) {
            Some(current) => current,
            // Boxed, as the retry below: the future every request allocates
            // stays small (see BENCHMARKS.md).
            None => token(Box::pin(cache.acquire(Reason::Missing)).await)?,
        };
        let replay = self.replayable(&request);
        request.headers_mut().insert(AUTHORIZATION, header);
        let response = next.clone().run(request, extensions).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        Box::pin(self.after_401(response, replay, generation, extensions, next)).await
    }
}

/// The header and generation of a fetched token, or the middleware error.
fn token(
    fetched: std::result::Result<Arc<crate::cache::Entry>, crate::TokenError>,
) -> Result<(HeaderValue, u64)> {
    match fetched {
        Ok(entry) => Ok((entry.header.clone(), entry.generation)),
        Err(error) => Err(reqwest_middleware::Error::middleware(Error::Token(error))),
    }
}

/// The most of a `401`'s body read before letting go of it.
const MAX_DRAIN_BYTES: usize = 64 * 1024;

/// Reads the `401`'s body (at most [`MAX_DRAIN_BYTES`]) on its own task, so
/// that its HTTP/1.1 connection can go back to the pool; the retry does not
/// wait for it.
fn drain(mut response: Response) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let mut read = 0;
            while let Ok(Some(chunk)) = response.chunk().await {
                read += chunk.len();
                if read > MAX_DRAIN_BYTES {
                    break;
                }
            }
        });
    }
}

impl fmt::Debug for WokeloAuthMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WokeloAuthMiddleware")
            .field("api_base", &self.auth.base)
            .field("max_replay_body_bytes", &self.auth.max_replay_body_bytes)
            .field("cache", &self.auth.cache)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StaticToken;

    fn middleware(base: &str) -> WokeloAuthMiddleware {
        WokeloAuthLayer::builder(StaticToken::new("t"))
            .api_base(base.parse().unwrap())
            .build()
            .into()
    }

    fn request(url: &str) -> Request {
        Request::new(::reqwest::Method::GET, Url::parse(url).unwrap())
    }

    #[test]
    fn the_token_goes_to_the_api_origin_only() {
        let m = middleware("https://API.wokelo.ai/v1");
        assert!(m.wants_token(&request("https://api.wokelo.ai/api/x?q=1")));
        assert!(m.wants_token(&request("https://api.wokelo.ai:443/api/x")));
        assert!(!m.wants_token(&request("http://api.wokelo.ai/api/x")));
        assert!(!m.wants_token(&request("https://api.wokelo.ai:8443/api/x")));
        assert!(!m.wants_token(&request("https://api.wokelo.ai.evil.example/")));
        assert!(!m.wants_token(&request("https://evil.example/?api.wokelo.ai")));

        let m = middleware("http://127.0.0.1:8080");
        assert!(m.wants_token(&request("http://127.0.0.1:8080/api/echo")));
        assert!(!m.wants_token(&request("http://127.0.0.1:8081/api/echo")));
        assert!(!m.wants_token(&request("http://localhost:8080/api/echo")));

        let m = middleware("http://[::1]:8080");
        assert!(m.wants_token(&request("http://[::1]:8080/api/echo")));
        assert!(!m.wants_token(&request("http://[::2]:8080/api/echo")));
    }

    #[test]
    fn a_request_with_its_own_authorization_is_left_alone() {
        let m = middleware("https://api.wokelo.ai");
        let mut r = request("https://api.wokelo.ai/api/x");
        r.headers_mut()
            .insert(AUTHORIZATION, HeaderValue::from_static("Basic eA=="));
        assert!(!m.wants_token(&r));
    }

    #[test]
    fn bodies_over_the_cap_or_streamed_are_not_kept_for_a_retry() {
        let m: WokeloAuthMiddleware = WokeloAuthLayer::builder(StaticToken::new("t"))
            .max_replay_body_bytes(4)
            .build()
            .into();
        let mut r = request("https://api.wokelo.ai/api/x");
        assert!(m.replayable(&r).is_some(), "no body");
        *r.body_mut() = Some("1234".into());
        assert!(m.replayable(&r).is_some(), "at the cap");
        *r.body_mut() = Some("12345".into());
        assert!(m.replayable(&r).is_none(), "over the cap");
        *r.body_mut() = Some(::reqwest::Body::wrap(http_body_util::Full::new(
            bytes::Bytes::from_static(b"1"),
        )));
        assert!(m.replayable(&r).is_none(), "a stream");
    }
}
