//! [`WokeloRetryPolicy`]: Wokelo's published retry rules as a tower
//! [`retry::Policy`](tower::retry::Policy).
//!
//! Compose it *outside* the auth layer, so that each retry goes through the
//! layer again (and gets a valid token):
//!
//! ```
//! use std::time::Duration;
//! use tower::{retry::RetryLayer, ServiceBuilder};
//! use wokelo_auth::{StaticToken, WokeloAuthLayer, WokeloRetryPolicy};
//!
//! # let hyper_client = tower::service_fn(|_req: http::Request<wokelo_auth::ReplayBody<http_body_util::Full<bytes::Bytes>>>| async {
//! #     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
//! # });
//! let client = ServiceBuilder::new()
//!     .layer(RetryLayer::new(
//!         WokeloRetryPolicy::new().with_budget(Duration::from_secs(120)),
//!     ))
//!     .layer(WokeloAuthLayer::new(StaticToken::new("token")))
//!     .service(hyper_client);
//! # let _ = client;
//! ```
//!
//! | answer | retried |
//! |---|---|
//! | `429` | yes (at most 10 times): exponential backoff from 1 s to 60 s with jitter, or `Retry-After` (seconds or HTTP-date) |
//! | `500` | at most 3 times |
//! | `502`, `503` | at most 5 times |
//! | `401` | never here: the auth layer refreshes and retries once |
//! | `403`, other `4xx`, other statuses | never |
//! | errors | never (the auth layer already retries the token endpoint) |
//!
//! How long it waits, for any number the server sends:
//!
//! | the wait | bound |
//! |---|---|
//! | backoff (no `Retry-After`) | `1 s * 2^(n-1)`, capped at the max wait (60 s by default, [`with_max_wait`](WokeloRetryPolicy::with_max_wait)), times a random factor in [0.5, 1.0) |
//! | `Retry-After` up to the max wait | waited as sent, never shortened: an earlier retry would earn another `429` |
//! | `Retry-After` past the max wait (up to `2^64 - 1` seconds, or a far HTTP-date) | not waited for: the answer goes back at once, its `Retry-After` intact, for the caller to decide |
//! | any wait that would end past the budget (5 minutes from the first failure by default, [`with_budget`](WokeloRetryPolicy::with_budget)) | not started: the answer goes back at once |
//!
//! Every sum of an instant and a wait is checked: a wait or budget too long
//! to add (`Duration::MAX`, say) means "no retry" for the wait and "no
//! limit" for the budget, never a panic.
//!
//! Only idempotent methods (`GET`, `HEAD`, `OPTIONS`, `PUT`, `DELETE`,
//! `TRACE`) are retried unless [`retry_non_idempotent`](WokeloRetryPolicy::retry_non_idempotent)
//! is set: a job submit (`POST`) must not be duplicated by surprise. A
//! request whose body cannot be replayed ([`ReplayableBody`]) is not retried.
//!
//! Buffered bodies (`Full<Bytes>`, `Empty<Bytes>`, `String`) are resent as
//! they are. A streaming body (hyper's `Incoming` in a proxy, say) goes in a
//! [`RetryBody`]: it streams the first attempt and keeps up to a cap (64 KiB
//! by default) to resend; a body past the cap is not retried.

use std::{
    fmt,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Empty, Full};
use tokio::time::Instant;

use crate::{
    replay::{ReplayBody, ReplayHandle},
    source::token_response::parse_retry_after_unbounded,
    BoxError,
};

/// A request body that can be sent again.
pub trait ReplayableBody: http_body::Body + Sized {
    /// A copy of the body for another attempt, or `None` if it cannot be
    /// replayed. Called before the first attempt is sent.
    fn try_clone(&self) -> Option<Self>;

    /// Whether this copy can still be sent, asked after the attempt before
    /// it (a streaming body may have outgrown what was kept). Default: yes.
    fn can_replay(&self) -> bool {
        true
    }
}

impl ReplayableBody for Full<Bytes> {
    fn try_clone(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl ReplayableBody for Empty<Bytes> {
    fn try_clone(&self) -> Option<Self> {
        Some(*self)
    }
}

impl ReplayableBody for String {
    fn try_clone(&self) -> Option<Self> {
        Some(self.clone())
    }
}

/// A streaming request body that [`WokeloRetryPolicy`] can resend: the first
/// attempt streams it as it comes, keeping up to a cap of it (the crate's
/// replay machinery, as for the retry after a `401`); each retry resends the
/// kept bytes. A body that outgrew the cap, or was not sent whole, is not
/// retried.
///
/// ```
/// use wokelo_auth::retry_policy::RetryBody;
/// # let incoming = http_body_util::Full::new(bytes::Bytes::from_static(b"{}"));
/// let request = http::Request::post("https://api.wokelo.ai/api/enterprise/report/")
///     .body(RetryBody::new(incoming))
///     .unwrap();
/// # let _ = request;
/// ```
pub struct RetryBody<B> {
    kind: RetryKind<B>,
    handle: Arc<ReplayHandle>,
}

enum RetryKind<B> {
    /// The first attempt: the caller's body, copied up to the cap.
    First(Pin<Box<ReplayBody<B>>>),
    /// A retry that has not started: the copy is taken on first poll.
    Pending,
    /// A retry under way.
    Replaying(Pin<Box<ReplayBody<B>>>),
}

impl<B: Body<Data = Bytes>> RetryBody<B> {
    /// Wraps `body`, keeping up to 64 KiB of it to resend.
    pub fn new(body: B) -> Self {
        Self::with_max_bytes(body, crate::DEFAULT_MAX_REPLAY_BODY_BYTES)
    }

    /// Wraps `body`, keeping up to `max_bytes` of it to resend.
    pub fn with_max_bytes(body: B, max_bytes: usize) -> Self {
        let (first, handle) = ReplayBody::capture(body, max_bytes);
        Self {
            kind: RetryKind::First(Box::pin(first)),
            handle: Arc::new(handle),
        }
    }
}

impl<B> fmt::Debug for RetryBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            RetryKind::First(_) => "first attempt",
            RetryKind::Pending | RetryKind::Replaying(_) => "retry",
        };
        f.debug_struct("RetryBody").field("kind", &kind).finish()
    }
}

impl<B> Body for RetryBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let RetryKind::Pending = this.kind {
            match this.handle.replay() {
                Some(body) => this.kind = RetryKind::Replaying(Box::pin(body)),
                None => {
                    return Poll::Ready(Some(Err(
                        "the request body cannot be resent: it was not sent whole, or outgrew the replay cap".into(),
                    )))
                }
            }
        }
        match &mut this.kind {
            RetryKind::First(body) => body.as_mut().poll_frame(cx).map_err(Into::into),
            RetryKind::Replaying(body) => body.as_mut().poll_frame(cx).map_err(Into::into),
            RetryKind::Pending => unreachable!("replaced above"),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            RetryKind::First(body) => body.is_end_stream(),
            RetryKind::Replaying(body) => body.is_end_stream(),
            // What the copy will say (a copy that cannot be sent is not at
            // its end: polling it gives the error).
            RetryKind::Pending => self.handle.replay_hint().is_some_and(|(_, end)| end),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            RetryKind::First(body) => body.size_hint(),
            RetryKind::Replaying(body) => body.size_hint(),
            RetryKind::Pending => self
                .handle
                .replay_hint()
                .map_or_else(SizeHint::default, |(hint, _)| hint),
        }
    }
}

impl<B> ReplayableBody for RetryBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    fn try_clone(&self) -> Option<Self> {
        Some(Self {
            kind: RetryKind::Pending,
            handle: self.handle.clone(),
        })
    }

    fn can_replay(&self) -> bool {
        self.handle.replay::<B>().is_some()
    }
}

/// Wokelo's retry rules for the API's own answers; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct WokeloRetryPolicy {
    retry_non_idempotent: bool,
    budget: Duration,
    base: Duration,
    max_wait: Duration,
    max_429: u32,
    max_500: u32,
    max_502_503: u32,
    // Per request: the Retry service clones the policy for each request.
    first_failure: Option<Instant>,
    tries_429: u32,
    tries_500: u32,
    tries_502_503: u32,
}

impl Default for WokeloRetryPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl WokeloRetryPolicy {
    /// The published rules, idempotent methods only, a 5 minute budget.
    pub fn new() -> Self {
        Self {
            retry_non_idempotent: false,
            budget: Duration::from_secs(300),
            base: Duration::from_secs(1),
            max_wait: Duration::from_secs(60),
            max_429: 10,
            max_500: 3,
            max_502_503: 5,
            first_failure: None,
            tries_429: 0,
            tries_500: 0,
            tries_502_503: 0,
        }
    }

    /// Also retries `POST` and `PATCH`. Off by default: retrying a job
    /// submit can start the job twice.
    pub fn retry_non_idempotent(mut self, yes: bool) -> Self {
        self.retry_non_idempotent = yes;
        self
    }

    /// The most time spent retrying one request, counted from its first
    /// failed attempt (default 5 minutes). A wait that would end past the
    /// budget is not started: the last answer is returned instead. A budget
    /// too long to add to an instant (`Duration::MAX`) is no limit; the
    /// [max wait](Self::with_max_wait) still bounds each wait.
    pub fn with_budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// The longest single wait (default 60 s, the ceiling of Wokelo's
    /// published backoff): the backoff doubles up to it, and a
    /// `Retry-After` longer than it is not waited for (the answer is
    /// returned at once, for the caller to decide).
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// How many `429`s are retried for one request (default 10).
    pub fn with_max_429_retries(mut self, retries: u32) -> Self {
        self.max_429 = retries;
        self
    }

    fn method_allowed(&self, method: &Method) -> bool {
        self.retry_non_idempotent || method.is_idempotent()
    }

    /// Backoff for the `n`th retry: from 1 s doubling to the max wait, jittered.
    fn backoff(&self, n: u32) -> Duration {
        crate::backoff::jittered(self.base, self.max_wait, n)
    }

    /// The wait before the next attempt, or `None` to stop, for a response
    /// with `status` and `headers`.
    fn decide(&mut self, status: StatusCode, headers: &http::HeaderMap) -> Option<Duration> {
        let (tries, max) = match status.as_u16() {
            429 => (&mut self.tries_429, self.max_429),
            500 => (&mut self.tries_500, self.max_500),
            502 | 503 => (&mut self.tries_502_503, self.max_502_503),
            _ => return None,
        };
        if *tries >= max {
            return None;
        }
        *tries += 1;
        let n = *tries;
        // The server's word wins, if it is within the max wait; the budget
        // bounds it below. See the module docs' table.
        let delay = match parse_retry_after_unbounded(headers) {
            Some(asked) if asked > self.max_wait => return None,
            Some(asked) => asked,
            None => self.backoff(n),
        };
        let now = Instant::now();
        let first = *self.first_failure.get_or_insert(now);
        // A wait too long to add ends past any budget; a budget too long to
        // add is no limit.
        let end = now.checked_add(delay)?;
        match first.checked_add(self.budget) {
            Some(deadline) if end > deadline => None,
            _ => Some(delay),
        }
    }
}

/// The wait before a retry.
pub type RetryDelay = Pin<Box<tokio::time::Sleep>>;

impl<B, R, E> tower::retry::Policy<Request<B>, Response<R>, E> for WokeloRetryPolicy
where
    B: ReplayableBody,
{
    type Future = RetryDelay;

    fn retry(
        &mut self,
        req: &mut Request<B>,
        result: &mut Result<Response<R>, E>,
    ) -> Option<Self::Future> {
        let response = result.as_ref().ok()?;
        if !self.method_allowed(req.method()) || !req.body().can_replay() {
            return None;
        }
        let delay = self.decide(response.status(), response.headers())?;
        tracing::debug!(
            status = response.status().as_u16(),
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "retrying the request after the API's answer"
        );
        Some(Box::pin(tokio::time::sleep(delay)))
    }

    fn clone_request(&mut self, req: &Request<B>) -> Option<Request<B>> {
        if !self.method_allowed(req.method()) {
            return None;
        }
        let body = req.body().try_clone()?;
        let mut clone = Request::new(body);
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.version_mut() = req.version();
        *clone.headers_mut() = req.headers().clone();
        *clone.extensions_mut() = req.extensions().clone();
        Some(clone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{header::RETRY_AFTER, HeaderMap};

    fn headers(retry_after: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = retry_after {
            h.insert(RETRY_AFTER, v.parse().unwrap());
        }
        h
    }

    #[tokio::test(start_paused = true)]
    async fn limits_per_status() {
        let h = headers(None);
        for (status, max) in [(500, 3), (502, 5), (503, 5), (429, 10)] {
            let mut p = WokeloRetryPolicy::new().with_budget(Duration::from_secs(100_000));
            let n = (0..20)
                .take_while(|_| {
                    p.decide(StatusCode::from_u16(status).unwrap(), &h)
                        .is_some()
                })
                .count();
            assert_eq!(n, max, "status {status}");
        }
        let mut p = WokeloRetryPolicy::new();
        for status in [400, 401, 403, 404, 504, 200] {
            assert!(
                p.decide(StatusCode::from_u16(status).unwrap(), &h)
                    .is_none(),
                "{status}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_for_429_grows_from_1s_to_60s() {
        let p = WokeloRetryPolicy::new();
        for n in 1..=12 {
            let d = p.backoff(n);
            let nominal = Duration::from_secs(1u64 << (n - 1)).min(Duration::from_secs(60));
            assert!(d >= nominal / 2 && d < nominal, "try {n}: {d:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_wins_and_the_budget_bounds_it() {
        let mut p = WokeloRetryPolicy::new().with_budget(Duration::from_secs(10));
        assert_eq!(
            p.decide(StatusCode::TOO_MANY_REQUESTS, &headers(Some("7"))),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            p.decide(StatusCode::TOO_MANY_REQUESTS, &headers(Some("11"))),
            None
        );
    }

    /// Asks the policy, through tower's `Policy::retry`, about a `429` with
    /// `retry_after` to a `GET`: the wait it would start, if any.
    fn wait_for_429(p: &mut WokeloRetryPolicy, retry_after: Option<&str>) -> Option<RetryDelay> {
        let mut request = Request::get("https://api.wokelo.ai/api/x")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        *response.headers_mut() = headers(retry_after);
        let mut result: Result<_, ()> = Ok(response);
        tower::retry::Policy::retry(p, &mut request, &mut result)
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_of_any_size_returns_the_answer_without_waiting() {
        let policies = [
            WokeloRetryPolicy::new(),
            WokeloRetryPolicy::new().with_budget(Duration::MAX),
            WokeloRetryPolicy::new().with_max_wait(Duration::MAX),
            WokeloRetryPolicy::new()
                .with_budget(Duration::MAX)
                .with_max_wait(Duration::MAX),
        ];
        for policy in policies {
            for asked in ["18446744073709551615", "9999999999", "61", "301"] {
                let mut p = policy.clone();
                let started = Instant::now();
                let wait = wait_for_429(&mut p, Some(asked));
                // Only an unbounded policy may wait past 60 s or 5 minutes,
                // and never for a wait that cannot be added to the clock.
                let unbounded = p.max_wait == Duration::MAX && p.budget == Duration::MAX;
                let allowed = match asked {
                    "61" => p.max_wait == Duration::MAX,
                    "301" | "9999999999" => unbounded,
                    _ => false,
                };
                assert_eq!(wait.is_some(), allowed, "{p:?} with Retry-After: {asked}");
                assert_eq!(Instant::now(), started, "decided without waiting");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_unbounded_budget_still_retries_with_backoff() {
        let mut p = WokeloRetryPolicy::new().with_budget(Duration::MAX);
        for n in 1..=10u32 {
            let started = Instant::now();
            let wait = wait_for_429(&mut p, None).expect("within the tries");
            wait.await;
            let waited = started.elapsed();
            let nominal = Duration::from_secs(1u64 << (n - 1)).min(Duration::from_secs(60));
            assert!(
                waited >= nominal / 2 && waited <= nominal,
                "try {n}: {waited:?}"
            );
        }
        assert!(wait_for_429(&mut p, None).is_none(), "ten tries at most");
    }

    #[tokio::test(start_paused = true)]
    async fn the_max_wait_bounds_the_backoff_and_the_retry_after() {
        let mut p = WokeloRetryPolicy::new()
            .with_max_wait(Duration::from_secs(5))
            .with_max_429_retries(u32::MAX);
        for n in 1..=40 {
            let d = p
                .decide(StatusCode::TOO_MANY_REQUESTS, &headers(None))
                .unwrap_or_else(|| panic!("try {n} within the budget"));
            assert!(d < Duration::from_secs(5), "try {n}: {d:?}");
            tokio::time::advance(d).await;
        }
        assert_eq!(
            p.decide(StatusCode::TOO_MANY_REQUESTS, &headers(Some("5"))),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            p.decide(StatusCode::TOO_MANY_REQUESTS, &headers(Some("6"))),
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_counts_from_the_first_failure() {
        let mut p = WokeloRetryPolicy::new().with_budget(Duration::from_secs(10));
        let ok = |p: &mut WokeloRetryPolicy, secs: &str| {
            p.decide(StatusCode::SERVICE_UNAVAILABLE, &headers(Some(secs)))
        };
        assert_eq!(ok(&mut p, "4"), Some(Duration::from_secs(4)));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            ok(&mut p, "6"),
            Some(Duration::from_secs(6)),
            "ends at 10 s"
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(ok(&mut p, "1"), None, "would end at 11 s");
    }
}
