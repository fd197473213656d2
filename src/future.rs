//! [`ResponseFuture`], the future of [`WokeloAuth`](crate::WokeloAuth).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use futures_util::FutureExt;
use http::{
    header::AUTHORIZATION, Extensions, HeaderMap, Method, Request, Response, StatusCode, Uri,
    Version,
};
use pin_project_lite::pin_project;
use tower::util::Oneshot;
use tower_service::Service;

use crate::{
    cache::{AcquireFuture, Reason, TokenCache},
    replay::{ReplayBody, ReplayHandle},
    BoxError, Error,
};

/// The request line and headers, kept to rebuild the request for the retry.
/// Cloned before the `Authorization` header goes in.
pub(crate) struct RetryParts {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    extensions: Extensions,
}

impl RetryParts {
    pub(crate) fn of(parts: &http::request::Parts) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            extensions: parts.extensions.clone(),
        }
    }

    fn into_request<B>(self, body: B) -> Request<B> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers;
        *request.extensions_mut() = self.extensions;
        request
    }
}

/// What the one retry after a `401` needs.
pub(crate) struct Retry<S> {
    pub(crate) parts: RetryParts,
    pub(crate) replay: ReplayHandle,
    /// An unready clone of the wrapped service.
    pub(crate) service: S,
    pub(crate) cache: Arc<TokenCache>,
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
        // Waiting for a token, then sending `request` (through `service`, which
        // is ready for the first attempt and not yet for the retry).
        Authorizing {
            token: AcquireFuture,
            pending: Option<(Request<ReplayBody<B>>, S)>,
            retrying: bool,
        },
        Called { #[pin] future: S::Future },
        Retrying { #[pin] future: Oneshot<S, Request<ReplayBody<B>>> },
    }
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

    pub(crate) fn called(future: S::Future, retry: Retry<S>) -> Self {
        Self {
            state: State::Called { future },
            retry: Some(retry),
        }
    }

    pub(crate) fn authorizing(
        token: AcquireFuture,
        request: Request<ReplayBody<B>>,
        service: S,
        retry: Retry<S>,
    ) -> Self {
        Self {
            state: State::Authorizing {
                token,
                pending: Some((request, service)),
                retrying: false,
            },
            retry: Some(retry),
        }
    }
}

impl<S, B, R> Future for ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<R>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<R>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Authorizing {
                    token,
                    pending,
                    retrying,
                } => {
                    let entry = ready!(token.poll_unpin(cx))?;
                    let (mut request, mut service) = pending
                        .take()
                        .expect("ResponseFuture polled after completion");
                    request
                        .headers_mut()
                        .insert(AUTHORIZATION, entry.header.clone());
                    if *retrying {
                        this.state.set(State::Retrying {
                            future: Oneshot::new(service, request),
                        });
                    } else {
                        if let Some(retry) = this.retry.as_mut() {
                            retry.generation = entry.generation;
                        }
                        this.state.set(State::Called {
                            future: service.call(request),
                        });
                    }
                }
                StateProj::Called { future } => {
                    let response = ready!(future.poll(cx)).map_err(|e| Error::Service(e.into()))?;
                    if response.status() != StatusCode::UNAUTHORIZED {
                        return Poll::Ready(Ok(response));
                    }
                    let Some(retry) = this.retry.take() else {
                        return Poll::Ready(Ok(response));
                    };
                    let invalidated = retry.cache.invalidate(retry.generation);
                    let Some(body) = retry.replay.replay() else {
                        tracing::warn!(
                            generation = retry.generation,
                            invalidated,
                            "API answered 401; the request body cannot be replayed (streamed past the replay cap, or not sent whole), so the 401 is returned and the token refreshed for the next request"
                        );
                        retry.cache.prefetch(Reason::Unauthorized);
                        return Poll::Ready(Ok(response));
                    };
                    tracing::debug!(
                        generation = retry.generation,
                        invalidated,
                        "API answered 401; retrying once with a fresh token"
                    );
                    drop(response);
                    this.state.set(State::Authorizing {
                        token: retry.cache.acquire(Reason::Unauthorized),
                        pending: Some((retry.parts.into_request(body), retry.service)),
                        retrying: true,
                    });
                }
                StateProj::Retrying { future } => {
                    return future.poll(cx).map_err(|e| Error::Service(e.into()));
                }
            }
        }
    }
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
