//! The single flight: one fetch task, awaited by every request that needs a token.

use super::*;

impl TokenCache {
    /// The slow path: a valid token, fetching one (or joining the fetch in
    /// flight) if needed. Fails fast inside the failure backoff window.
    pub(crate) fn acquire(self: &Arc<Self>, reason: Reason) -> Acquire {
        Acquire {
            cache: self.clone(),
            reason,
            fetch: None,
        }
    }

    /// After a `401`: drops the cached token if it is still `generation`.
    /// Returns whether it did.
    pub(crate) fn invalidate(self: &Arc<Self>, generation: u64) -> bool {
        let _state = self.lock();
        let current = self.current.load();
        if current.as_ref().is_some_and(|e| e.generation == generation) {
            drop(current);
            self.publish(None);
            true
        } else {
            false
        }
    }

    /// Starts a fetch in the background unless a token is cached, a fetch is
    /// in flight or the failure window is open: after a `401` that cannot be
    /// retried, the next request then finds a fresh token.
    pub(crate) fn prefetch(self: &Arc<Self>, reason: Reason) {
        let mut state = self.lock();
        let now = Instant::now();
        let blocked = state.failure.as_ref().is_some_and(|f| now < f.until);
        if state.inflight.is_none() && !blocked && self.valid_entry(now).is_none() {
            if let Err(e) = self.start_fetch(&mut state, reason) {
                tracing::warn!(error = %e, "cannot start a token fetch");
            }
        }
    }

    /// Spawns the fetch task and records it as the one in flight.
    pub(super) fn start_fetch(
        self: &Arc<Self>,
        state: &mut State,
        reason: Reason,
    ) -> Result<(u64, Shared<FetchFuture>), TokenError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            TokenError::new(
                TokenErrorKind::Configuration,
                "wokelo-auth needs a Tokio runtime (with time enabled) to fetch tokens; run the client inside one",
            )
        })?;
        let id = state.next_fetch_id;
        state.next_fetch_id += 1;
        let current = state.last.clone();
        let cache = self.clone();
        let task = runtime.spawn(async move {
            let output = cache.run_fetch(current, reason).await;
            cache.complete(id, &output);
            output
        });
        // The task records its outcome before it ends. If it died instead
        // (panic, runtime shut down), this future, which runs once for all
        // waiters inside `Shared`, records the failure. It holds the cache
        // weakly: it is stored in the cache.
        let weak = Arc::downgrade(self);
        let fetch: FetchFuture = Box::pin(async move {
            match task.await {
                Ok(output) => output,
                Err(e) => {
                    let output = Err(TokenError::new(
                        TokenErrorKind::Unavailable,
                        if e.is_panic() {
                            "the token source panicked"
                        } else {
                            "the token fetch was cancelled because its runtime shut down"
                        },
                    ));
                    if let Some(cache) = weak.upgrade() {
                        cache.complete(id, &output);
                    }
                    output
                }
            }
        });
        let fetch = fetch.shared();
        self.fetching.store(true, Ordering::Release);
        state.inflight = Some(Inflight {
            id,
            fetch: fetch.clone(),
        });
        Ok((id, fetch))
    }

    /// Records a fetch's outcome, once: the fetch task, or, if the task
    /// died, the shared future its waiters await.
    pub(super) fn complete(self: &Arc<Self>, id: u64, output: &FetchOutput) {
        let mut state = self.lock();
        if state.inflight.as_ref().map(|i| i.id) != Some(id) {
            return;
        }
        state.inflight = None;
        self.fetching.store(false, Ordering::Release);
        let now = Instant::now();
        match output {
            Ok(entry) => {
                state.last = Some(entry.clone());
                state.failure = None;
                self.publish(Some(entry.clone()));
            }
            Err(error) => {
                let window = if error.kind().is_transient() {
                    error.retry_after()
                } else {
                    Some(self.config.failure_backoff)
                };
                state.failure = window.map(|w| Failure {
                    error: error.clone(),
                    until: now + w,
                });
                // Keep serving a token that is still valid; try again later.
                if let Some(entry) = self.valid_entry(now) {
                    let remaining = entry.expires_at - now;
                    let retry_in = (remaining / 2)
                        .min(Duration::from_secs(30))
                        .max(window.unwrap_or(Duration::ZERO));
                    tracing::warn!(
                        error = %error,
                        retry_in_ms = retry_in.as_millis() as u64,
                        valid_for_ms = remaining.as_millis() as u64,
                        "token refresh failed; serving the current token meanwhile"
                    );
                    let refresh_at = now + retry_in;
                    let postponed = entry.rescheduled(refresh_at, entry.wake_at.min(refresh_at));
                    self.publish(Some(Arc::new(postponed)));
                }
            }
        }
    }
}

/// The future a request awaits when it has no valid token (see
/// [`TokenCache::acquire`]). A named type rather than a boxed `async` block,
/// so that it lives in the response future's pending state without an
/// allocation of its own.
pub(crate) struct Acquire {
    cache: Arc<TokenCache>,
    reason: Reason,
    /// The fetch joined, once polled and no valid token was cached.
    fetch: Option<Shared<FetchFuture>>,
}

impl Future for Acquire {
    type Output = FetchOutput;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<FetchOutput> {
        let this = &mut *self;
        let fetch = match &mut this.fetch {
            Some(fetch) => fetch,
            None => {
                let cache = &this.cache;
                let mut state = cache.lock();
                let now = Instant::now();
                if let Some(entry) = cache.valid_entry(now) {
                    return Poll::Ready(Ok(entry));
                }
                let fetch = match &state.inflight {
                    Some(inflight) => inflight.fetch.clone(),
                    None => {
                        if let Some(failure) = state.failure.as_ref().filter(|f| now < f.until) {
                            return Poll::Ready(Err(failure.error.clone()));
                        }
                        match cache.start_fetch(&mut state, this.reason) {
                            Ok((_, fetch)) => fetch,
                            Err(e) => return Poll::Ready(Err(e)),
                        }
                    }
                };
                // The fetch records its own outcome (see `start_fetch`), so
                // the waiters of a stampede do not each take the lock again
                // once it completes.
                this.fetch.insert(fetch)
            }
        };
        fetch.poll_unpin(cx)
    }
}
