//! [`WokeloAuth`], the service the layer builds.

use std::{
    fmt,
    ops::Deref,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, PoisonError,
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{
    header::AUTHORIZATION,
    uri::{Authority, Scheme},
    Request, Response, Uri,
};
use http_body::Body;
use tower_service::Service;

use crate::{
    cache::{LocalToken, Reason, TokenCache},
    future::{ResponseFuture, Retry, RetryParts},
    layer::Auth,
    replay::{ReplayBody, ReplayHandle},
    BoxError, Error, TokenHandle,
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
    state: Arc<ServiceState<S>>,
    /// The token this clone attached last, while still current.
    local: Option<LocalToken>,
}

/// What the clones of one service share.
struct ServiceState<S> {
    auth: Arc<Auth>,
    /// The API base's authority as spelled in its URL, for the fast path of
    /// the origin check (see [`api_origin`]); empty if the base has none
    /// (never, for a valid base), which no request's authority is.
    authority: Box<str>,
    /// Handles on what the retry needs, one per thread slot.
    handles: Box<[Arc<RetryHandle<S>>]>,
}

/// What a response future keeps for the retry after a `401`.
///
/// Every request holds one, so its reference count is written twice per
/// request. Requests on different threads take different handles (see
/// [`thread_slot`]), each count on its own cache line, so that those writes
/// do not bounce one cache line between cores as a single shared count
/// would.
#[repr(align(128))]
pub(crate) struct RetryHandle<S> {
    shared: Arc<RetryShared<S>>,
}

/// What the retry needs, shared by the handles of one service.
pub(crate) struct RetryShared<S> {
    pub(crate) cache: Arc<TokenCache>,
    pub(crate) origin: Option<BaseOrigin>,
    /// A clone of the wrapped service, made when the layer was applied,
    /// cloned again for each retry: the first attempt does not leave a clone
    /// of the service behind for a retry that rarely comes.
    service: Mutex<S>,
}

impl<S> Deref for RetryHandle<S> {
    type Target = RetryShared<S>;

    fn deref(&self) -> &RetryShared<S> {
        &self.shared
    }
}

impl<S: Clone> RetryShared<S> {
    /// A clone of the wrapped service for a retry.
    pub(crate) fn service(&self) -> S {
        self.service
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The API base's scheme and authority, to rebuild a retried request's URI
/// (see `RetryParts`).
pub(crate) struct BaseOrigin {
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
}

/// How many handles a service has: more than the worker threads of most
/// runtimes; threads beyond that share.
const THREAD_SLOTS: usize = 16;

/// This thread's slot, fixed for its lifetime: threads are numbered as they
/// first send a request.
#[inline]
fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed) % THREAD_SLOTS;
    }
    SLOT.try_with(|slot| *slot).unwrap_or(0)
}

impl<S: Clone> WokeloAuth<S> {
    pub(crate) fn from_parts(inner: S, auth: Arc<Auth>) -> Self {
        let base = auth.base.as_str();
        let start = base.find("://").map_or(0, |i| i + 3);
        let end = base[start..].find('/').map_or(base.len(), |i| start + i);
        let origin = base.parse::<Uri>().ok().and_then(|uri| {
            Some(BaseOrigin {
                scheme: uri.scheme()?.clone(),
                authority: uri.authority()?.clone(),
            })
        });
        let authority = if origin.is_some() {
            base[start..end].into()
        } else {
            Box::default()
        };
        let shared = Arc::new(RetryShared {
            cache: auth.cache.clone(),
            origin,
            service: Mutex::new(inner.clone()),
        });
        let handles = (0..THREAD_SLOTS)
            .map(|_| {
                Arc::new(RetryHandle {
                    shared: shared.clone(),
                })
            })
            .collect();
        Self {
            inner,
            state: Arc::new(ServiceState {
                auth,
                authority,
                handles,
            }),
            local: None,
        }
    }
}

impl<S> WokeloAuth<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    ///
    /// The retry after a `401` goes through a clone of the service made when
    /// the layer was applied, which changes made here do not reach.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// A handle on the token this service attaches, shared with the layer
    /// that built it and every clone: see [`TokenHandle`].
    pub fn handle(&self) -> TokenHandle {
        TokenHandle::new(self.state.auth.clone())
    }
}

impl<S: Clone> Clone for WokeloAuth<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            state: self.state.clone(),
            local: self.local.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for WokeloAuth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WokeloAuth")
            .field("inner", &self.inner)
            .field("api_base", &self.state.auth.base)
            .finish_non_exhaustive()
    }
}

impl<S, B, R> Service<Request<B>> for WokeloAuth<S>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + 'static,
    R: Body + Send + 'static,
    R::Data: Send,
{
    type Response = Response<R>;
    type Error = Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| Error::Service(e.into()))
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let state = &*self.state;
        let auth = &*state.auth;
        let headers = request.headers();
        let origin = if !headers.is_empty() && headers.contains_key(AUTHORIZATION) {
            Origin::Other
        } else {
            api_origin(auth, &state.authority, request.uri())
        };
        if origin == Origin::Other {
            return ResponseFuture::passthrough(
                self.inner.call(request.map(ReplayBody::passthrough)),
            );
        }

        let parts = RetryParts::of(&request, origin == Origin::SpelledAsBase);
        let replay = ReplayHandle::prepare(request.body_mut(), auth.max_replay_body_bytes);
        let handle = state.handles[thread_slot()].clone();
        match auth.cache.current(&mut self.local) {
            Some((header, generation)) => {
                request.headers_mut().insert(AUTHORIZATION, header);
                ResponseFuture::called(
                    self.inner
                        .call(request.map(|body| ReplayBody::attach(body, &replay))),
                    Retry {
                        parts,
                        replay,
                        handle,
                        generation,
                    },
                )
            }
            None => {
                let request = request.map(|body| ReplayBody::attach(body, &replay));
                // The request is sent once a token arrives, through the
                // service that was driven to readiness; a clone stays.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let token = auth.cache.acquire(Reason::Missing);
                let retry = Retry {
                    parts,
                    replay,
                    handle,
                    generation: 0,
                };
                ResponseFuture::authorizing(token, request, inner, retry)
            }
        }
    }
}

/// Whether a request is for the API origin.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Its scheme and authority are the API base's, byte for byte.
    SpelledAsBase,
    /// The same origin spelled otherwise (case, default port).
    Same,
    /// Another origin, or none.
    Other,
}

/// Whether `uri` is for the API origin: [`ApiBase::same_origin`](crate::ApiBase::same_origin), with a
/// fast path for the common case of a request whose scheme and authority
/// are spelled as in the base URL (then host and port are equal, so the
/// full check would agree), which skips parsing host and port.
/// `base_authority` is the base's authority as spelled in its URL.
#[inline(always)]
fn api_origin(auth: &Auth, base_authority: &str, uri: &Uri) -> Origin {
    let base = &auth.base;
    let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
        // A relative URI has no origin.
        auth.unmatched_origin(uri);
        return Origin::Other;
    };
    // `Scheme::as_str` is inlined, and a comparison with a constant string
    // is a few instructions; `Scheme`'s `==` is a call.
    let scheme_matches = if base.is_https() {
        scheme.as_str() == "https"
    } else {
        scheme.as_str() == "http"
    };
    if scheme_matches && authority.as_str() == base_authority {
        return Origin::SpelledAsBase;
    }
    if same_origin(auth, uri) {
        Origin::Same
    } else {
        Origin::Other
    }
}

/// The full origin check, out of line; a request that does not match may
/// be worth a warning (see [`Auth::unmatched_origin`]).
#[inline(never)]
fn same_origin(auth: &Auth, uri: &Uri) -> bool {
    let same = auth.base.same_origin(uri);
    if !same {
        auth.unmatched_origin(uri);
    }
    same
}
