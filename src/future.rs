//! [`ResponseFuture`], the future of [`WokeloAuth`](crate::WokeloAuth).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use bytes::Buf;
use futures_util::FutureExt;
use http::{
    header::{HeaderName, AUTHORIZATION},
    uri::{self, PathAndQuery},
    Extensions, HeaderValue, Method, Request, Response, StatusCode, Uri, Version,
};
use http_body::Body;
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tower::util::Oneshot;
use tower_service::Service;

use crate::{
    cache::{Acquire, After401, Reason, TokenCache},
    replay::{ReplayBody, ReplayHandle},
    service::{BaseOrigin, RetryHandle},
    BoxError, Error,
};

/// The request line and headers, kept to rebuild the request for the retry.
/// Cloned before the `Authorization` header goes in.
///
/// The headers are kept as a list rather than a second `HeaderMap`: one
/// exact-size allocation instead of two (none for a request without
/// headers), and a smaller future. The retry rebuilds the map in the same
/// order, values of a name in their order, so it is sent as the first was.
pub(crate) struct RetryParts {
    method: Method,
    uri: RetryUri,
    version: Version,
    headers: Vec<(HeaderName, HeaderValue)>,
    extensions: Extensions,
}

/// The request's URI, for the retry. When its scheme and authority are
/// spelled exactly as the API base's (the common case), only the path and
/// query are kept, and the retry puts the base's scheme and authority back:
/// the same URI, for one reference count instead of two and a smaller
/// future.
enum RetryUri {
    Path(PathAndQuery),
    // Boxed: rare, and larger than a path.
    Full(Box<Uri>),
}

impl RetryParts {
    /// `spelled_as_base`: the request's scheme and authority are the API
    /// base's, byte for byte.
    #[inline(always)]
    pub(crate) fn of<B>(request: &Request<B>, spelled_as_base: bool) -> Self {
        let headers = if request.headers().is_empty() {
            Vec::new()
        } else {
            let mut headers = Vec::with_capacity(request.headers().len());
            headers.extend(
                request
                    .headers()
                    .iter()
                    .map(|(name, value)| (name.clone(), value.clone())),
            );
            headers
        };
        let uri = match request.uri().path_and_query() {
            Some(path) if spelled_as_base => RetryUri::Path(path.clone()),
            _ => RetryUri::Full(Box::new(request.uri().clone())),
        };
        Self {
            method: request.method().clone(),
            uri,
            version: request.version(),
            headers,
            extensions: request.extensions().clone(),
        }
    }

    fn into_request<B>(self, body: B, base: Option<&BaseOrigin>) -> Request<B> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method;
        *request.uri_mut() = match self.uri {
            RetryUri::Full(uri) => *uri,
            RetryUri::Path(path) => {
                let base = base.expect("only a request spelled as the base keeps just its path");
                let mut parts = uri::Parts::default();
                parts.scheme = Some(base.scheme.clone());
                parts.authority = Some(base.authority.clone());
                parts.path_and_query = Some(path);
                Uri::from_parts(parts).expect("scheme, authority and path make a URI")
            }
        };
        *request.version_mut() = self.version;
        let headers = request.headers_mut();
        headers.reserve(self.headers.len());
        for (name, value) in self.headers {
            headers.append(name, value);
        }
        *request.extensions_mut() = self.extensions;
        request
    }
}

/// What the one retry after a `401` needs.
pub(crate) struct Retry<S> {
    pub(crate) parts: RetryParts,
    pub(crate) replay: ReplayHandle,
    /// The token cache, the API origin and a service for the retry.
    pub(crate) handle: Arc<RetryHandle<S>>,
    /// The generation of the token the first attempt carried.
    pub(crate) generation: u64,
}

pin_project! {
    /// The response future of [`WokeloAuth`](crate::WokeloAuth).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        #[pin]
        state: State<S, B>,
        // `None` once retried, or for requests that are never retried.
        retry: Option<Retry<S>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        // Waiting for a token, then sending the request. Boxed, so that the
        // futures of the hot path do not carry its room (the request, the
        // service and the wait: 480 bytes instead of 272 for a trivial
        // service), which every caller moves; it costs one allocation per
        // request that waits (see BENCHMARKS.md).
        Authorizing {
            pending: Option<Box<Pending<S, B>>>,
            retrying: bool,
        },
        Called { #[pin] future: S::Future },
        // Boxed: only after a `401`, and as large as the pending request.
        // With the token it carries, to note a second `401`.
        Retrying {
            future: Pin<Box<Oneshot<S, Request<ReplayBody<B>>>>>,
            cache: Arc<TokenCache>,
            generation: u64,
        },
    }
}

/// A request waiting for a token, and the service to send it through
/// (ready for the first attempt; not yet for the retry).
pub(crate) struct Pending<S, B> {
    token: Acquire,
    request: Request<ReplayBody<B>>,
    service: S,
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    pub(crate) fn passthrough(future: S::Future) -> Self {
        Self {
            state: State::Called { future },
            retry: None,
        }
    }

    /// The first attempt went out; `retry` is what a retry needs.
    #[inline(always)]
    pub(crate) fn called(future: S::Future, retry: Retry<S>) -> Self {
        Self {
            state: State::Called { future },
            retry: Some(retry),
        }
    }

    pub(crate) fn authorizing(
        token: Acquire,
        request: Request<ReplayBody<B>>,
        service: S,
        retry: Retry<S>,
    ) -> Self {
        Self {
            state: State::Authorizing {
                pending: Some(Box::new(Pending {
                    token,
                    request,
                    service,
                })),
                retrying: false,
            },
            retry: Some(retry),
        }
    }
}

impl<S, B, R> Future for ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    R: Body + Send + 'static,
    R::Data: Send,
{
    type Output = Result<Response<R>, Error>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // The hot path, inline: the request went out, the answer is not a
        // `401`.
        if let StateProj::Called { future } = this.state.as_mut().project() {
            let response = ready!(future.poll(cx)).map_err(|e| Error::Service(e.into()))?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Poll::Ready(Ok(response));
            }
            if let Some(response) = answered(this.state.as_mut(), this.retry, response) {
                return Poll::Ready(Ok(response));
            }
        }
        drive(this.state, this.retry, cx)
    }
}

/// Drives the future through its other states: waiting for a token, the
/// first attempt after it, the retry. Out of line, off the hot path.
#[inline(never)]
fn drive<S, B, R>(
    mut state: Pin<&mut State<S, B>>,
    retry: &mut Option<Retry<S>>,
    cx: &mut Context<'_>,
) -> Poll<Result<Response<R>, Error>>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    R: Body + Send + 'static,
    R::Data: Send,
{
    loop {
        match state.as_mut().project() {
            StateProj::Authorizing { pending, retrying } => {
                let waiting = pending
                    .as_mut()
                    .expect("ResponseFuture polled after completion");
                let entry = ready!(waiting.token.poll_unpin(cx))?;
                let Pending {
                    mut request,
                    mut service,
                    token,
                } = *pending.take().expect("checked above");
                request
                    .headers_mut()
                    .insert(AUTHORIZATION, entry.header.clone());
                if *retrying {
                    state.set(State::Retrying {
                        future: Box::pin(Oneshot::new(service, request)),
                        cache: token.cache().clone(),
                        generation: entry.generation,
                    });
                } else {
                    if let Some(retry) = retry.as_mut() {
                        retry.generation = entry.generation;
                    }
                    state.set(State::Called {
                        future: service.call(request),
                    });
                }
            }
            StateProj::Called { future } => {
                let response = ready!(future.poll(cx)).map_err(|e| Error::Service(e.into()))?;
                if let Some(response) = answered(state.as_mut(), retry, response) {
                    return Poll::Ready(Ok(response));
                }
            }
            StateProj::Retrying {
                future,
                cache,
                generation,
            } => {
                let response =
                    ready!(future.as_mut().poll(cx)).map_err(|e| Error::Service(e.into()))?;
                if response.status() == StatusCode::UNAUTHORIZED {
                    cache.after_second_401(*generation);
                } else {
                    cache.after_retry_answered(*generation);
                }
                return Poll::Ready(Ok(response));
            }
        }
    }
}

/// What an answer leads to: `Some` to return it; `None` after a `401` that
/// is retried, with `state` moved on to the retry. Out of line: the hot
/// path only comes here with a `401`.
#[inline(never)]
fn answered<S, B, R>(
    mut state: Pin<&mut State<S, B>>,
    retry: &mut Option<Retry<S>>,
    response: Response<R>,
) -> Option<Response<R>>
where
    S: Service<Request<ReplayBody<B>>> + Clone,
    R: Body + Send + 'static,
    R::Data: Send,
{
    if response.status() != StatusCode::UNAUTHORIZED {
        return Some(response);
    }
    let Some(taken) = retry.take() else {
        // Already retried, or never to be.
        return Some(response);
    };
    match after_401(taken, response) {
        Ok(next) => {
            state.set(next);
            None
        }
        Err(response) => Some(response),
    }
}

/// The most of a `401`'s body read before letting go of it.
const MAX_DRAIN_BYTES: usize = 64 * 1024;

/// Reads the `401`'s body to its end (at most [`MAX_DRAIN_BYTES`]) on its own
/// task, rather than dropping it unread: an HTTP/1.1 connection whose
/// response body was not read cannot go back to the pool. The retry does not
/// wait for it.
fn drain<R>(body: R)
where
    R: Body + Send + 'static,
    R::Data: Send,
{
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let mut body = std::pin::pin!(body);
            let mut read = 0;
            while let Some(Ok(frame)) = body.as_mut().frame().await {
                read += frame.data_ref().map_or(0, |d| d.remaining());
                if read > MAX_DRAIN_BYTES {
                    break;
                }
            }
        });
    }
}

/// After a `401`: drops the token if it is still the one sent, and gives the
/// state that refreshes it and resends the request, or the `401` back when
/// the body cannot be replayed. Out of line: the hot path never gets here.
#[cold]
#[inline(never)]
fn after_401<S, B, R>(retry: Retry<S>, response: Response<R>) -> Result<State<S, B>, Response<R>>
where
    S: Service<Request<ReplayBody<B>>> + Clone,
    R: Body + Send + 'static,
    R::Data: Send,
{
    let cache = &retry.handle.cache;
    let body = retry.replay.replay();
    if cache.after_401(response.headers(), retry.generation, body.is_some()) == After401::Return {
        return Err(response);
    }
    let Some(body) = body else {
        return Err(response);
    };
    drain(response.into_body());
    Ok(State::Authorizing {
        pending: Some(Box::new(Pending {
            token: cache.acquire(Reason::Unauthorized),
            request: retry.parts.into_request(body, retry.handle.origin.as_ref()),
            service: retry.handle.service(),
        })),
        retrying: true,
    })
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Authorizing {
                retrying: false, ..
            } => "authorizing",
            State::Authorizing { retrying: true, .. } => "refreshing after 401",
            State::Called { .. } => "called",
            State::Retrying { .. } => "retrying",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("can_retry", &self.retry.is_some())
            .finish()
    }
}
