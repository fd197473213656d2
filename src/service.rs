//! [`WokeloAuth`], the service the layer builds.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{header::AUTHORIZATION, Request, Response};
use http_body::Body;
use tower_service::Service;

use crate::{
    cache::Reason,
    future::{ResponseFuture, Retry, RetryParts},
    layer::Auth,
    replay::ReplayBody,
    BoxError, Error,
};

/// Authenticates requests to the Wokelo API; built by
/// [`WokeloAuthLayer`](crate::WokeloAuthLayer).
///
/// For a request to the API origin without an `Authorization` header, it
/// attaches `Authorization: Bearer <token>` (marked sensitive) and, on a
/// `401`, refreshes the token and sends the request once more. Other
/// requests pass through untouched. The wrapped service receives the body as
/// a [`ReplayBody`]. See the [crate docs](crate).
pub struct WokeloAuth<S> {
    inner: S,
    auth: Arc<Auth>,
}

impl<S> WokeloAuth<S> {
    pub(crate) fn from_parts(inner: S, auth: Arc<Auth>) -> Self {
        Self { inner, auth }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for WokeloAuth<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            auth: self.auth.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for WokeloAuth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WokeloAuth")
            .field("inner", &self.inner)
            .field("api_base", &self.auth.base)
            .finish_non_exhaustive()
    }
}

impl<S, B, R> Service<Request<B>> for WokeloAuth<S>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes>,
{
    type Response = Response<R>;
    type Error = Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| Error::Service(e.into()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // Take the service that was driven to readiness; leave a clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);

        if request.headers().contains_key(AUTHORIZATION)
            || !self.auth.base.same_origin(request.uri())
        {
            return ResponseFuture::passthrough(inner.call(request.map(ReplayBody::passthrough)));
        }

        let (parts, body) = request.into_parts();
        let (body, replay) = ReplayBody::capture(body, self.auth.max_replay_body_bytes);
        let retry = |generation| Retry {
            parts: RetryParts::of(&parts),
            replay,
            service: self.inner.clone(),
            cache: self.auth.cache.clone(),
            generation,
        };
        match self.auth.cache.current() {
            Some((header, generation)) => {
                let retry = retry(generation);
                let mut request = Request::from_parts(parts, body);
                request.headers_mut().insert(AUTHORIZATION, header);
                ResponseFuture::called(inner.call(request), retry)
            }
            None => {
                let retry = retry(0);
                let token = self.auth.cache.acquire(Reason::Missing);
                ResponseFuture::authorizing(token, Request::from_parts(parts, body), inner, retry)
            }
        }
    }
}
