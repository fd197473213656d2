//! The single flight: one fetch task, awaited by every request that needs a token.

use super::*;

impl TokenCache {
    /// The slow path: a valid token, fetching one (or joining the fetch in
    /// flight) if needed; with [`Reason::Forced`], the outcome of a fetch
    /// even though a valid token is cached. Fails fast inside the failure
    /// backoff window.
    pub(crate) fn acquire(self: &Arc<Self>, reason: Reason) -> Acquire {
        Acquire {
            cache: self.clone(),
            reason,
            joined: None,
            lost: 0,
        }
    }

    /// After a `401`: drops the cached token if it is still `generation`,
    /// unless a new token already failed the same way (see
    /// [`TokenCache::refused_on_retry`]).
    ///
    /// `replayable`: the request will be retried. When it will not (its body
    /// was not kept), a token that was itself fetched for a `401` within the
    /// unauthorized backoff, and not seen working on a retry since (see
    /// [`TokenCache::after_retry_answered`]), is kept too: no retry shows
    /// whether fresh tokens help, and dropping it would make every such
    /// request cost a token.
    pub(crate) fn invalidate(self: &Arc<Self>, generation: u64, replayable: bool) -> Invalidation {
        let mut state = self.lock();
        let now = Instant::now();
        if !replayable {
            if let Some((fetched, at)) = state.fetched_for_401 {
                let until = after(at, self.unauthorized_backoff());
                if fetched == generation && now < until {
                    state.refused = Some((generation, until));
                }
            }
        }
        if state
            .refused
            .is_some_and(|(refused, until)| refused == generation && now < until)
        {
            return Invalidation::Refused;
        }
        let current = self.current.load();
        if current.as_ref().is_some_and(|e| e.generation == generation) {
            drop(current);
            self.publish(None);
            self.counters.0.token_dropped();
            Invalidation::Dropped
        } else {
            Invalidation::Replaced
        }
    }

    /// The retry after a `401` was answered `401` again, with the token of
    /// `generation`, fetched for it: the API refuses fresh tokens. For the
    /// unauthorized backoff, further `401`s to that token are returned as
    /// they are rather than each costing a new token (see
    /// [`WokeloAuthBuilder::unauthorized_backoff`](crate::WokeloAuthBuilder::unauthorized_backoff)).
    pub(crate) fn refused_on_retry(&self, generation: u64) {
        let until = after(Instant::now(), self.unauthorized_backoff());
        self.lock().refused = Some((generation, until));
    }

    fn unauthorized_backoff(&self) -> Duration {
        self.config.unauthorized_backoff.min(MAX_FAILURE_WINDOW)
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

    /// Starts a fetch on this runtime and records it as the one in flight.
    pub(super) fn start_fetch(
        self: &Arc<Self>,
        state: &mut State,
        reason: Reason,
    ) -> Result<(), TokenError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            TokenError::new(
                TokenErrorKind::Configuration,
                "wokelo-auth needs a Tokio runtime (with time enabled) to fetch tokens; run the client inside one",
            )
        })?;
        let id = state.next_fetch_id;
        state.next_fetch_id += 1;
        self.counters.0.started(reason);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let flight = Arc::new(Flight {
            id,
            runtime: runtime.id(),
            deadline: after(Instant::now(), self.config.fetch_timeout),
            last: state.last.clone(),
            refresh_spent: state.refresh_spent,
            reason,
            sender: Mutex::new(Some(sender)),
            workers: AtomicUsize::new(0),
            helped: AtomicBool::new(false),
        });
        self.spawn_worker(&runtime, flight.clone());
        // `None`: every worker ended without an outcome (its runtime shut
        // down, or it was abandoned); the waiters then start another fetch.
        let fetch: FetchFuture = Box::pin(async move { receiver.await.ok() });
        self.fetching.store(true, Ordering::Release);
        state.inflight = Some(Inflight {
            flight,
            fetch: fetch.shared(),
        });
        Ok(())
    }

    /// Spawns a task on `runtime` that runs `flight`'s fetch, unless another
    /// worker of the flight has taken it on already.
    fn spawn_worker(self: &Arc<Self>, runtime: &tokio::runtime::Handle, flight: Arc<Flight>) {
        flight.workers.fetch_add(1, Ordering::AcqRel);
        let mut worker = Worker {
            cache: Arc::downgrade(self),
            flight,
            sender: None,
        };
        let cache = self.clone();
        runtime.spawn(async move {
            let Some(sender) = worker
                .flight
                .sender
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
            else {
                return;
            };
            worker.sender = Some(sender);
            let flight = &worker.flight;
            let last = flight.last.clone();
            let output = cache
                .run_fetch(last, flight.reason, flight.refresh_spent)
                .await;
            cache.complete(flight.id, &output);
            if let Some(sender) = worker.sender.take() {
                let _ = sender.send(output);
            }
        });
    }

    /// Forgets the fetch `id` without an outcome: its worker is gone (its
    /// runtime shut down) or stuck on an idle runtime. The next request
    /// starts another. `taken_on`: a worker had started it, so its refresh
    /// token may have been presented (see `State::refresh_spent`).
    pub(super) fn abandon(&self, id: u64, taken_on: bool) {
        let mut state = self.lock();
        if state.inflight.as_ref().map(|i| i.flight.id) == Some(id) {
            state.inflight = None;
            state.refresh_spent |= taken_on;
            self.fetching.store(false, Ordering::Release);
        }
    }

    /// Records a fetch's outcome, once: the fetch task, or, if the task
    /// died, the shared future its waiters await.
    pub(super) fn complete(self: &Arc<Self>, id: u64, output: &FetchOutput) {
        let mut state = self.lock();
        if state.inflight.as_ref().map(|i| i.flight.id) != Some(id) {
            return;
        }
        let reason = state.inflight.take().map(|i| i.flight.reason);
        self.fetching.store(false, Ordering::Release);
        self.counters.0.completed(output);
        let now = Instant::now();
        match output {
            Ok(entry) => {
                if reason == Some(Reason::Unauthorized) {
                    state.fetched_for_401 = Some((entry.generation, now));
                }
                state.refresh_spent = false;
                state.last = Some(entry.clone());
                state.failure = None;
                self.publish(Some(entry.clone()));
            }
            Err(error) => {
                state.last_error = Some(LastTokenError {
                    error: error.clone(),
                    at: SystemTime::now(),
                });
                let serving = self.valid_entry(now);
                let window = self.failure_window(error, serving.is_some());
                state.failure = window.map(|w| Failure {
                    error: error.clone(),
                    until: after(now, w),
                });
                if let Some(entry) = serving {
                    self.retry_refresh_later(&entry, error, now);
                }
            }
        }
    }
}

/// What a `401` did to the cached token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Invalidation {
    /// It was the cached one, and is dropped.
    Dropped,
    /// Another request replaced it already.
    Replaced,
    /// A fresh token was refused just before: kept, and the `401` stands.
    Refused,
}

/// One fetch in flight: what it fetches with, and who runs it.
///
/// The fetch runs on a task of the runtime that started it. A request on
/// another runtime that finds it not yet taken on (that runtime may be idle:
/// a current-thread runtime between two `block_on` calls) spawns a second
/// worker on its own runtime; the first worker to run takes the fetch on,
/// the other ends at once. A request on another runtime also bounds its
/// wait by the fetch's deadline on its own clock, so that a fetch stuck on
/// an idle runtime cannot hold it longer than the fetch timeout.
pub(super) struct Flight {
    pub(super) id: u64,
    /// The runtime of the worker that started it.
    runtime: tokio::runtime::Id,
    deadline: Instant,
    /// The token being replaced, and why: the fetch's inputs.
    last: Option<Arc<Entry>>,
    /// `last`'s refresh token may have been spent (see `State::refresh_spent`).
    refresh_spent: bool,
    reason: Reason,
    /// Taken by the worker that runs the fetch. Dropped unsent (the waiters
    /// see the fetch lost) when no worker is left to run it.
    sender: Mutex<Option<tokio::sync::oneshot::Sender<FetchOutput>>>,
    /// Workers spawned and not yet ended.
    workers: AtomicUsize,
    /// A worker was spawned on a second runtime.
    helped: AtomicBool,
}

/// A worker task's hold on its flight. Dropped with the task, also when the
/// task is dropped unfinished (its runtime shut down) or panics: then the
/// waiters learn that the fetch is lost, or that the source panicked.
struct Worker {
    cache: Weak<TokenCache>,
    flight: Arc<Flight>,
    /// Set while this worker runs the fetch.
    sender: Option<tokio::sync::oneshot::Sender<FetchOutput>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let last = self.flight.workers.fetch_sub(1, Ordering::AcqRel) == 1;
        let taken_on = self.sender.is_some();
        let sender = match self.sender.take() {
            // This worker ran the fetch and did not finish it.
            Some(sender) => Some(sender),
            // No worker is left, and none took the fetch on.
            None if last => self
                .flight
                .sender
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
            None => return,
        };
        let Some(sender) = sender else { return };
        let Some(cache) = self.cache.upgrade() else {
            return;
        };
        if std::thread::panicking() {
            let output = Err(TokenError::new(
                TokenErrorKind::Unavailable,
                "the token source panicked",
            ));
            cache.complete(self.flight.id, &output);
            let _ = sender.send(output);
        } else {
            // Dropping the sender tells the waiters; they start again.
            cache.abandon(self.flight.id, taken_on);
        }
    }
}

/// How often a request starts the fetch again after it was lost with its
/// runtime before giving up.
const MAX_LOST_FETCHES: u8 = 3;

/// The future a request awaits when it has no valid token (see
/// [`TokenCache::acquire`]). A named type rather than a boxed `async` block,
/// so that it lives in the response future's pending state without an
/// allocation of its own.
pub(crate) struct Acquire {
    cache: Arc<TokenCache>,
    reason: Reason,
    /// The fetch joined, once polled and no valid token was cached.
    joined: Option<Joined>,
    /// Fetches lost so far (see [`Flight`]).
    lost: u8,
}

struct Joined {
    flight: Arc<Flight>,
    fetch: Shared<FetchFuture>,
    /// The fetch's deadline on this request's runtime, when the fetch runs
    /// on another one.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Acquire {
    /// The cache this request waits on.
    pub(crate) fn cache(&self) -> &Arc<TokenCache> {
        &self.cache
    }

    /// Joins the fetch in flight, starting one if there is none: `Err` for
    /// an answer without waiting (a valid token, the failure window, no
    /// runtime).
    fn join(&mut self) -> Result<Joined, FetchOutput> {
        let cache = &self.cache;
        let mut state = cache.lock();
        let now = Instant::now();
        // A forced refresh wants a token newer than the cached one.
        if self.reason != Reason::Forced {
            if let Some(entry) = cache.valid_entry(now) {
                return Err(Ok(entry));
            }
        }
        if state.inflight.is_none() {
            if let Some(failure) = state.failure.as_ref().filter(|f| now < f.until) {
                return Err(Err(failure.error.clone()));
            }
            cache.start_fetch(&mut state, self.reason).map_err(Err)?;
        }
        let inflight = state.inflight.as_ref().expect("started above");
        let flight = &inflight.flight;
        let deadline = match tokio::runtime::Handle::try_current() {
            Ok(here) if here.id() != flight.runtime => {
                let untaken = flight
                    .sender
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_some();
                if untaken && !flight.helped.swap(true, Ordering::AcqRel) {
                    cache.spawn_worker(&here, flight.clone());
                }
                Some(Box::pin(tokio::time::sleep_until(flight.deadline)))
            }
            _ => None,
        };
        Ok(Joined {
            flight: flight.clone(),
            fetch: inflight.fetch.clone(),
            deadline,
        })
    }
}

impl Future for Acquire {
    type Output = FetchOutput;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<FetchOutput> {
        let this = &mut *self;
        loop {
            let joined = match &mut this.joined {
                Some(joined) => joined,
                None => match this.join() {
                    Ok(joined) => this.joined.insert(joined),
                    Err(answer) => return Poll::Ready(answer),
                },
            };
            // The fetch records its own outcome (see `spawn_worker`), so
            // the waiters of a stampede do not each take the lock again
            // once it completes.
            match joined.fetch.poll_unpin(cx) {
                Poll::Ready(Some(output)) => return Poll::Ready(output),
                Poll::Ready(None) => {
                    this.joined = None;
                    this.lost += 1;
                    if this.lost >= MAX_LOST_FETCHES {
                        return Poll::Ready(Err(TokenError::new(
                            TokenErrorKind::Unavailable,
                            "the token fetch was lost with the runtime running it, three times; keep a Tokio runtime running while requests wait for a token",
                        )));
                    }
                }
                Poll::Pending => {
                    let Some(deadline) = &mut joined.deadline else {
                        return Poll::Pending;
                    };
                    ready!(deadline.as_mut().poll(cx));
                    let taken_on = joined
                        .flight
                        .sender
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .is_none();
                    this.cache.abandon(joined.flight.id, taken_on);
                    return Poll::Ready(Err(this.cache.timed_out(
                        "the token fetch, running on another Tokio runtime that did not drive it, did not finish",
                    )));
                }
            }
        }
    }
}
