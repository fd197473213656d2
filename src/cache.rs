//! The token cache every clone of the service shares.
//!
//! - **Hot path**: each service clone keeps the token it last attached (a
//!   [`LocalToken`]) with the cache's *epoch* at that time; while the epoch
//!   is unchanged, [`TokenCache::current`] attaches it after one atomic load:
//!   no lock, no allocation, no clock read. Every change of the cached entry
//!   bumps the epoch, and so does a timer set for each entry at its wake
//!   point (see [`Entry::wake_at`]), after which the slow path reads the
//!   entry through an [`ArcSwapOption`] and checks the clock.
//! - **Single flight**: every fetch runs as one spawned task whose result is a
//!   [`Shared`] future; all requests needing a token await that one fetch, so
//!   N concurrent requests cause one token request, and the fetch completes
//!   even when the request that started it is dropped.
//! - **Refresh-ahead**: once past `refresh_at` (a jittered margin before
//!   expiry) a request starts a background fetch and goes on with the still
//!   valid token. If that fetch fails, the old token is served until it
//!   expires and the refresh is tried again later.
//! - **Generations**: each entry has a number; a `401` invalidates the entry
//!   only if it is still the one the failed request carried.
//! - **Failure backoff**: after a non-transient failure (wrong credentials,
//!   invalid response) requests fail fast with that error for a window,
//!   rather than hammering the token endpoint.
//! - **Shared stores**: with an external [`TokenStore`], a fetch first looks
//!   for a token another process stored, and refreshes only under the
//!   store's lock, from the stored refresh token (see [`crate::store`]).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, PoisonError, Weak,
    },
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use http::HeaderValue;
use secrecy::ExposeSecret;
use tokio::time::Instant;
use tracing::Instrument;

use crate::{
    store::{Lease, MemoryStore, StoredToken, TokenStore},
    Token, TokenError, TokenErrorKind, TokenSource,
};

/// The lifetime assumed when a token states none, or a zero, negative or
/// non-numeric one: one hour. A token that dies earlier is caught by the
/// `401` retry.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// The longest lifetime believed (365 days); longer ones are clamped.
pub const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The shortest lifetime believed (one second); shorter ones are raised to
/// it, so that a token is usable at least once.
pub const MIN_LIFETIME: Duration = Duration::from_secs(1);

/// Tuning of the cache; the layer's builder sets it.
#[derive(Clone, Debug)]
pub(crate) struct CacheConfig {
    pub(crate) fetch_timeout: Duration,
    pub(crate) max_retries: u32,
    pub(crate) retry_backoff: Duration,
    pub(crate) max_retry_backoff: Duration,
    pub(crate) failure_backoff: Duration,
    pub(crate) max_refresh_margin: Duration,
    pub(crate) default_lifetime: Duration,
    /// How often a cached token is compared with a shared store's.
    pub(crate) store_sync_interval: Duration,
    /// How often a process waiting for another's refresh looks again.
    pub(crate) store_poll_interval: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            fetch_timeout: Duration::from_secs(30),
            max_retries: 3,
            retry_backoff: Duration::from_millis(200),
            max_retry_backoff: Duration::from_secs(10),
            failure_backoff: Duration::from_secs(30),
            max_refresh_margin: Duration::from_secs(5 * 60),
            default_lifetime: DEFAULT_LIFETIME,
            store_sync_interval: Duration::from_secs(60),
            store_poll_interval: Duration::from_millis(50),
        }
    }
}

/// A cached token, ready to attach.
pub(crate) struct Entry {
    /// `Bearer <token>`, marked sensitive.
    pub(crate) header: HeaderValue,
    pub(crate) generation: u64,
    /// When the hot path must look up from the token: the refresh point, or
    /// the next comparison with a shared store, whichever comes first.
    pub(crate) wake_at: Instant,
    pub(crate) refresh_at: Instant,
    pub(crate) expires_at: Instant,
    pub(crate) token: Token,
    /// Which fetch made this token, across processes (see [`StoredToken::id`]).
    pub(crate) store_id: u64,
    /// A timer is set to bump the cache's epoch at `wake_at`, so service
    /// clones may keep this entry without reading the clock (see
    /// [`TokenCache::current`]).
    timed: AtomicBool,
}

impl Entry {
    /// The same token with another refresh point and wake point.
    fn rescheduled(&self, refresh_at: Instant, wake_at: Instant) -> Self {
        Self {
            header: self.header.clone(),
            generation: self.generation,
            wake_at,
            refresh_at,
            expires_at: self.expires_at,
            token: self.token.clone(),
            store_id: self.store_id,
            timed: AtomicBool::new(false),
        }
    }
}

/// What one service clone keeps of the cached token, valid while the cache's
/// epoch is still `epoch`: the header to attach, or only that the clone
/// looked once (see [`TokenCache::current_slow`]).
#[derive(Clone)]
pub(crate) struct LocalToken {
    epoch: u64,
    copy: Option<(HeaderValue, u64)>,
}

/// Keeps a value on its own cache line, so that writes to its neighbours do
/// not evict it from the other cores' caches.
#[repr(align(128))]
struct CachePadded<T>(T);

pub(crate) type FetchOutput = Result<Arc<Entry>, TokenError>;

/// The fetch task's outcome, shared by every request waiting for it.
pub(crate) type FetchFuture = BoxFuture<'static, FetchOutput>;

pub(crate) struct TokenCache {
    /// Bumped after every change of `current` and at the current entry's
    /// wake point: a service clone's [`LocalToken`] is valid while this is
    /// unchanged. Read on every request, written rarely.
    epoch: CachePadded<AtomicU64>,
    current: ArcSwapOption<Entry>,
    /// A fetch is in flight; lets the hot path skip the lock during refresh-ahead.
    fetching: AtomicBool,
    next_generation: AtomicU64,
    state: Mutex<State>,
    source: Box<dyn TokenSource>,
    store: Box<dyn TokenStore>,
    store_key: String,
    /// The store is failing; logged once per outage.
    store_down: AtomicBool,
    /// A comparison with the store is running.
    syncing: AtomicBool,
    /// The timer task of the entry stored last (see [`TokenCache::set_timer`]),
    /// aborted when another replaces it, so that no timers pile up.
    timer: Mutex<Option<tokio::task::AbortHandle>>,
    config: CacheConfig,
}

#[derive(Default)]
struct State {
    inflight: Option<Inflight>,
    /// The newest token, even if expired or invalidated: its refresh token
    /// feeds the next fetch.
    last: Option<Arc<Entry>>,
    failure: Option<Failure>,
    next_fetch_id: u64,
}

struct Inflight {
    id: u64,
    fetch: Shared<FetchFuture>,
}

struct Failure {
    error: TokenError,
    until: Instant,
}

/// Why a fetch started, for tracing.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Reason {
    /// No token yet, or the cached one expired.
    Missing,
    /// The cached token is close to expiry.
    RefreshAhead,
    /// The API answered `401` to the cached token.
    Unauthorized,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::RefreshAhead => "refresh_ahead",
            Self::Unauthorized => "unauthorized",
        }
    }
}

impl TokenCache {
    pub(crate) fn new(
        source: Box<dyn TokenSource>,
        store: Option<Box<dyn TokenStore>>,
        store_key: String,
        config: CacheConfig,
    ) -> Self {
        Self {
            epoch: CachePadded(AtomicU64::new(1)),
            current: ArcSwapOption::empty(),
            fetching: AtomicBool::new(false),
            next_generation: AtomicU64::new(1),
            state: Mutex::new(State::default()),
            source,
            store: store.unwrap_or_else(|| Box::new(MemoryStore)),
            store_key,
            store_down: AtomicBool::new(false),
            syncing: AtomicBool::new(false),
            timer: Mutex::new(None),
            config,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The hot path: the header to attach and its generation, if a valid
    /// token is cached. `local` is the calling service clone's copy; while
    /// the epoch is unchanged it is used as it is.
    #[inline(always)]
    pub(crate) fn current(
        self: &Arc<Self>,
        local: &mut Option<LocalToken>,
    ) -> Option<(HeaderValue, u64)> {
        if let Some(LocalToken {
            epoch,
            copy: Some((header, generation)),
        }) = local
        {
            if *epoch == self.epoch.0.load(Ordering::Acquire) {
                return Some((header.clone(), *generation));
            }
        }
        self.current_slow(local)
    }

    /// The entry, checked against the clock. Past its wake point this also
    /// starts a background refresh (once) and still returns the valid token.
    /// Before it, and with its timer set, a copy goes into `local` (from the
    /// clone's second look at the same epoch on).
    #[cold]
    #[inline(never)]
    fn current_slow(
        self: &Arc<Self>,
        local: &mut Option<LocalToken>,
    ) -> Option<(HeaderValue, u64)> {
        // Read before the entry: if the entry changes after this read, the
        // epoch does too, and the next request looks again.
        let epoch = self.epoch.0.load(Ordering::Acquire);
        let looked_before = local.take().is_some_and(|l| l.epoch == epoch);
        let guard = self.current.load();
        let entry = guard.as_ref()?;
        let now = Instant::now();
        if now >= entry.wake_at {
            if now >= entry.expires_at {
                return None;
            }
            self.wake(entry, now);
        } else if entry.timed.load(Ordering::Acquire) {
            // A copy from the second request of a clone on: a clone used
            // once (a clone per request) does not pay for checking the
            // clock twice.
            let copy = (looked_before && clock_runs(now))
                .then(|| (own_copy(&entry.header), entry.generation));
            *local = Some(LocalToken { epoch, copy });
        } else {
            // Stored outside a runtime, or the runtime running its timer shut
            // down: set one from this runtime, if there is one.
            self.set_timer(entry);
        }
        Some((entry.header.clone(), entry.generation))
    }

    /// Makes `entry` the current one (or none), then bumps the epoch so that
    /// every service clone looks at it.
    fn publish(self: &Arc<Self>, entry: Option<Arc<Entry>>) {
        if let Some(entry) = &entry {
            self.set_timer(entry);
        }
        self.current.store(entry);
        self.epoch.0.fetch_add(1, Ordering::Release);
    }

    /// Spawns a task that bumps the epoch at `entry`'s wake point (or when
    /// the task is dropped, as when its runtime shuts down), unless one is
    /// set already or there is no runtime (then the hot path reads the clock
    /// on every request until one is set).
    fn set_timer(self: &Arc<Self>, entry: &Arc<Entry>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if entry
            .timed
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let wake_at = entry.wake_at;
        let expired = WakePoint {
            cache: Arc::downgrade(self),
            entry: Arc::downgrade(entry),
        };
        let task = runtime.spawn(async move {
            tokio::time::sleep_until(wake_at).await;
            drop(expired);
        });
        let previous = self
            .timer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(task.abort_handle());
        if let Some(previous) = previous {
            previous.abort();
        }
    }

    fn valid_entry(&self, now: Instant) -> Option<Arc<Entry>> {
        self.current.load_full().filter(|e| now < e.expires_at)
    }

    /// Past the entry's wake point: refresh ahead, or compare with the store.
    #[cold]
    fn wake(self: &Arc<Self>, entry: &Entry, now: Instant) {
        if now >= entry.refresh_at {
            if !self.fetching.load(Ordering::Acquire) {
                self.refresh_ahead();
            }
        } else if !self.syncing.swap(true, Ordering::AcqRel) {
            self.sync_with_store(entry.generation);
        }
    }

    /// Adopts a newer token another process stored, if there is one, and
    /// sets the next comparison.
    fn sync_with_store(self: &Arc<Self>, generation: u64) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.syncing.store(false, Ordering::Release);
            return;
        };
        let cache = self.clone();
        runtime.spawn(async move {
            let stored = cache.store_op(cache.store.load(&cache.store_key)).await;
            let mut state = cache.lock();
            let now = Instant::now();
            if let Some(current) = cache
                .valid_entry(now)
                .filter(|e| e.generation == generation)
            {
                let newer = stored.ok().flatten().filter(|s| {
                    s.id != current.store_id
                        && s.remaining() > current.expires_at.saturating_duration_since(now)
                });
                let next = match newer.map(|s| cache.adopt(s)) {
                    Some(Ok(adopted)) => {
                        tracing::debug!("adopted a newer token from the token store");
                        state.last = Some(adopted.clone());
                        adopted
                    }
                    _ => Arc::new(
                        current.rescheduled(
                            current.refresh_at,
                            current
                                .refresh_at
                                .min(now + cache.config.store_sync_interval),
                        ),
                    ),
                };
                cache.publish(Some(next));
            }
            drop(state);
            cache.syncing.store(false, Ordering::Release);
        });
    }

    #[cold]
    fn refresh_ahead(self: &Arc<Self>) {
        let mut state = self.lock();
        let now = Instant::now();
        let due = self.valid_entry(now).is_some_and(|e| now >= e.refresh_at);
        if state.inflight.is_none() && due {
            if let Err(e) = self.start_fetch(&mut state, Reason::RefreshAhead) {
                tracing::warn!(error = %e, "cannot refresh the token ahead of expiry");
            }
        }
    }

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
    fn start_fetch(
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
    fn complete(self: &Arc<Self>, id: u64, output: &FetchOutput) {
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

    /// One fetch, traced: through the shared store if there is one, else
    /// straight from the source.
    async fn run_fetch(&self, last: Option<Arc<Entry>>, reason: Reason) -> FetchOutput {
        let span = tracing::info_span!(
            "wokelo_auth.token_fetch",
            source = self.source.name(),
            store = self.store.name(),
            reason = reason.as_str(),
            attempts = tracing::field::Empty,
            outcome = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
        );
        let started = Instant::now();
        let deadline = started + self.config.fetch_timeout;
        let mut attempts = 0;
        let output = async {
            if self.store.is_external() {
                self.fetch_shared(last, reason, deadline, &mut attempts)
                    .await
            } else {
                let current = last.map(|e| e.token.clone());
                let (token, requested_at) = self
                    .fetch_from_source(current, deadline, &mut attempts)
                    .await?;
                self.entry(token, requested_at, fastrand::u64(..))
            }
        }
        .instrument(span.clone())
        .await;
        span.record("attempts", attempts);
        span.record("duration_ms", started.elapsed().as_millis() as u64);
        match &output {
            Ok(entry) => {
                span.record("outcome", if attempts == 0 { "adopted" } else { "ok" });
                tracing::info!(
                    parent: &span,
                    generation = entry.generation,
                    expires_in_s = entry.expires_at.saturating_duration_since(Instant::now()).as_secs(),
                    "token acquired"
                );
            }
            Err(e) => {
                span.record("outcome", tracing::field::debug(e.kind()));
                tracing::warn!(parent: &span, error = %e, "token fetch failed");
            }
        }
        output
    }

    /// The source, retried on transient failures with exponential backoff
    /// and jitter (or `Retry-After`), within `deadline`. Returns the token and
    /// when it was requested (its lifetime counts from then).
    async fn fetch_from_source(
        &self,
        current: Option<Token>,
        deadline: Instant,
        attempts: &mut u32,
    ) -> Result<(Token, Instant), TokenError> {
        loop {
            *attempts += 1;
            let requested_at = Instant::now();
            let outcome = tokio::time::timeout_at(deadline, self.source.fetch(current.as_ref()))
                .await
                .unwrap_or_else(|_| Err(self.timed_out("the token endpoint did not answer")));
            let error = match outcome {
                Ok(token) => return Ok((token, requested_at)),
                Err(e) => e,
            };
            let retryable =
                error.kind() == TokenErrorKind::Unavailable && *attempts <= self.config.max_retries;
            let delay = error.retry_after().unwrap_or_else(|| {
                crate::backoff::jittered(
                    self.config.retry_backoff,
                    self.config.max_retry_backoff,
                    *attempts,
                )
            });
            if !retryable || Instant::now() + delay >= deadline {
                return Err(error);
            }
            tracing::debug!(
                attempt = *attempts,
                error = %error,
                delay_ms = delay.as_millis() as u64,
                "token fetch failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    fn timed_out(&self, what: &str) -> TokenError {
        TokenError::new(
            TokenErrorKind::TimedOut,
            format!("{what} within {:?}", self.config.fetch_timeout),
        )
    }

    /// A fetch through a shared store: adopt what another process stored,
    /// else refresh under the store's lock (waiting while another process
    /// holds it); on a store failure, fetch in this process.
    async fn fetch_shared(
        &self,
        last: Option<Arc<Entry>>,
        reason: Reason,
        deadline: Instant,
        attempts: &mut u32,
    ) -> FetchOutput {
        let key = self.store_key.as_str();
        // The token being replaced is never adopted back; refresh-ahead also
        // wants one that outlives it.
        let (avoid, outlive) = match (&last, reason) {
            (Some(e), Reason::RefreshAhead) => (
                Some(e.store_id),
                e.expires_at.saturating_duration_since(Instant::now()),
            ),
            (Some(e), Reason::Unauthorized) => (Some(e.store_id), Duration::ZERO),
            _ => (None, Duration::ZERO),
        };
        let usable = |s: &StoredToken| Some(s.id) != avoid && s.remaining() > outlive;
        let mut waited = false;
        loop {
            match self.store_op(self.store.load(key)).await {
                Ok(Some(stored)) if usable(&stored) => return self.adopt(stored),
                Ok(_) => {}
                Err(()) => return self.fetch_alone(deadline, attempts).await,
            }
            let ttl = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1));
            match self.store_op(self.store.lock(key, ttl)).await {
                Ok(Some(lease)) => {
                    let output = self
                        .fetch_under_lease(&lease, usable, deadline, attempts)
                        .await;
                    let _ = self.store_op(self.store.unlock(key, &lease)).await;
                    return output;
                }
                Ok(None) => {
                    if !waited {
                        tracing::debug!("another process is refreshing the token; waiting for it");
                        waited = true;
                    }
                    let poll = self
                        .config
                        .store_poll_interval
                        .mul_f64(0.5 + fastrand::f64());
                    if Instant::now() + poll >= deadline {
                        return Err(self.timed_out("no token appeared in the token store while another process held its refresh lock"));
                    }
                    tokio::time::sleep(poll).await;
                }
                Err(()) => return self.fetch_alone(deadline, attempts).await,
            }
        }
    }

    async fn fetch_under_lease(
        &self,
        lease: &Lease,
        usable: impl Fn(&StoredToken) -> bool,
        deadline: Instant,
        attempts: &mut u32,
    ) -> FetchOutput {
        let key = self.store_key.as_str();
        // Another process may have stored a token between our read and our lock.
        let stored = self.store_op(self.store.load(key)).await.ok().flatten();
        if let Some(stored) = stored.as_ref().filter(|s| usable(s)) {
            return self.adopt(stored.clone());
        }
        // Refresh from the stored token only: a refresh token this process
        // kept may have been rotated away by another.
        let current = stored.map(|s| s.token);
        let (token, requested_at) = self.fetch_from_source(current, deadline, attempts).await?;
        let entry = self.entry(token, requested_at, fastrand::u64(..))?;
        let record = StoredToken::new(
            entry.store_id,
            entry.token.clone(),
            SystemTime::now() + entry.expires_at.saturating_duration_since(Instant::now()),
        );
        if let Ok(false) = self.store_op(self.store.save(key, &record, lease)).await {
            tracing::warn!("the token store's refresh lock expired before the token was saved; this process alone uses it");
        }
        Ok(entry)
    }

    /// The store is failing: log in in this process alone. A fresh login, not
    /// a refresh, since a refresh token from the store may have been rotated
    /// by another process in the meantime.
    async fn fetch_alone(&self, deadline: Instant, attempts: &mut u32) -> FetchOutput {
        let (token, requested_at) = self.fetch_from_source(None, deadline, attempts).await?;
        self.entry(token, requested_at, fastrand::u64(..))
    }

    /// Runs a store operation, logging once when the store starts failing and
    /// once when it recovers.
    async fn store_op<T>(&self, op: crate::store::StoreFuture<'_, T>) -> Result<T, ()> {
        match op.await {
            Ok(value) => {
                if self.store_down.swap(false, Ordering::AcqRel) {
                    tracing::info!(
                        store = self.store.name(),
                        "the token store is reachable again; sharing tokens"
                    );
                }
                Ok(value)
            }
            Err(e) => {
                if !self.store_down.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        store = self.store.name(),
                        error = %e,
                        "the token store is unavailable; fetching tokens in this process until it is back"
                    );
                }
                Err(())
            }
        }
    }

    /// A token another process stored, as a local entry.
    fn adopt(&self, stored: StoredToken) -> FetchOutput {
        let remaining = stored.remaining();
        self.entry_for(
            stored.token,
            Instant::now(),
            remaining.max(Duration::from_millis(1)),
            stored.id,
        )
    }

    fn entry(&self, token: Token, requested_at: Instant, store_id: u64) -> FetchOutput {
        let lifetime = effective_lifetime(token.expires_in(), self.config.default_lifetime);
        self.entry_for(token, requested_at, lifetime, store_id)
    }

    fn entry_for(
        &self,
        token: Token,
        start: Instant,
        lifetime: Duration,
        store_id: u64,
    ) -> FetchOutput {
        let mut header =
            HeaderValue::try_from(format!("Bearer {}", token.access_token().expose_secret()))
                .map_err(|_| {
                    TokenError::new(
                        TokenErrorKind::InvalidResponse,
                        "the access token has characters not allowed in an HTTP header",
                    )
                })?;
        header.set_sensitive(true);
        let refresh_at =
            start + lifetime - refresh_margin(lifetime, self.config.max_refresh_margin);
        let wake_at = if self.store.is_external() {
            refresh_at.min(Instant::now() + self.config.store_sync_interval)
        } else {
            refresh_at
        };
        Ok(Arc::new(Entry {
            header,
            generation: self.next_generation.fetch_add(1, Ordering::Relaxed),
            wake_at,
            refresh_at,
            expires_at: start + lifetime,
            token,
            store_id,
            timed: AtomicBool::new(false),
        }))
    }
}

/// Whether the clock moves on its own: a second reading differs from `now`.
///
/// Not when tokio's clock is paused (tests): `tokio::time::advance` can then
/// jump past a wake point, and a request right after it would run before the
/// timer's task; so service clones keep no copy then, and every request
/// checks the clock. (Nor, harmlessly, on a platform whose clock is too
/// coarse to move between two readings.)
fn clock_runs(now: Instant) -> bool {
    Instant::now() != now
}

/// Dropped at an entry's wake point by the task [`TokenCache::set_timer`]
/// spawns, or with that task: marks the entry as having no timer and bumps
/// the epoch, so that the next request of every service clone checks the
/// clock.
struct WakePoint {
    cache: Weak<TokenCache>,
    entry: Weak<Entry>,
}

impl Drop for WakePoint {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.upgrade() {
            entry.timed.store(false, Ordering::Release);
        }
        if let Some(cache) = self.cache.upgrade() {
            cache.epoch.0.fetch_add(1, Ordering::Release);
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

/// A copy of `header` in its own allocation, for one service clone: each
/// request's clone of the header then counts references on that clone's
/// copy, which stays in the cache of the core that clone runs on, instead of
/// on one count that every core's requests write.
fn own_copy(header: &HeaderValue) -> HeaderValue {
    let mut copy = HeaderValue::from_maybe_shared(Bytes::copy_from_slice(header.as_bytes()))
        .unwrap_or_else(|_| header.clone());
    copy.set_sensitive(header.is_sensitive());
    copy
}

/// The lifetime to plan with: the stated one clamped to
/// [`MIN_LIFETIME`]..=[`MAX_LIFETIME`], or `default` when none is stated.
pub(crate) fn effective_lifetime(stated: Option<Duration>, default: Duration) -> Duration {
    stated
        .filter(|d| !d.is_zero())
        .unwrap_or(default)
        .clamp(MIN_LIFETIME, MAX_LIFETIME)
}

/// How long before expiry to refresh: 10-20 % of the lifetime (jittered, so
/// that a fleet started together does not refresh together), at most `max`.
/// Always shorter than the lifetime.
pub(crate) fn refresh_margin(lifetime: Duration, max: Duration) -> Duration {
    lifetime.mul_f64(0.10 + fastrand::f64() * 0.10).min(max)
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.current.load();
        f.debug_struct("TokenCache")
            .field("source", &self.source.name())
            .field("has_token", &current.is_some())
            .field("generation", &current.as_ref().map(|e| e.generation))
            .field("fetching", &self.fetching.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> Arc<TokenCache> {
        Arc::new(TokenCache::new(
            Box::new(crate::StaticToken::new("t")),
            None,
            "key".into(),
            CacheConfig::default(),
        ))
    }

    fn has_copy(local: &Option<LocalToken>) -> bool {
        local.as_ref().is_some_and(|l| l.copy.is_some())
    }

    fn real_time_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn a_clone_keeps_a_copy_only_while_the_wake_timer_runs() {
        let cache = cache();
        let mut local = None;
        let runtime = real_time_runtime();
        runtime.block_on(async {
            cache.acquire(Reason::Missing).await.unwrap();
            let (header, _) = cache.current(&mut local).unwrap();
            assert_eq!(header, "Bearer t");
        });
        assert!(
            local.is_some(),
            "a running clock and a timer: the copy is kept"
        );

        // The runtime running the timer shuts down: the copy is dropped, and
        // without a runtime to set a new timer none is kept.
        drop(runtime);
        let (header, _) = cache.current(&mut local).unwrap();
        assert_eq!(header, "Bearer t");
        assert!(!has_copy(&local));
        cache.current(&mut local).unwrap();
        assert!(!has_copy(&local));

        // In a runtime again, a new timer is set and copies are kept again.
        real_time_runtime().block_on(async {
            cache.current(&mut local).unwrap();
            cache.current(&mut local).unwrap();
            cache.current(&mut local).unwrap();
            assert!(has_copy(&local));
        });
    }

    #[test]
    fn a_clone_copy_is_its_own_allocation_and_stays_sensitive() {
        let cache = cache();
        let mut local = None;
        real_time_runtime().block_on(async {
            cache.acquire(Reason::Missing).await.unwrap();
            cache.current(&mut local).unwrap();
            cache.current(&mut local).unwrap();
            assert!(has_copy(&local));
            // From the copy on.
            let (header, _) = cache.current(&mut local).unwrap();
            let shared = cache.current.load();
            let shared = &shared.as_ref().unwrap().header;
            assert_eq!(header, *shared);
            assert!(header.is_sensitive());
            assert_ne!(
                header.as_bytes().as_ptr(),
                shared.as_bytes().as_ptr(),
                "the clone's copy does not share the cached header's bytes"
            );
        });
    }

    #[test]
    fn an_invalidated_token_is_not_attached_from_a_copy() {
        let cache = cache();
        let mut local = None;
        real_time_runtime().block_on(async {
            cache.acquire(Reason::Missing).await.unwrap();
            cache.current(&mut local).unwrap();
            let (_, generation) = cache.current(&mut local).unwrap();
            assert!(has_copy(&local));
            assert!(cache.invalidate(generation));
            assert!(cache.current(&mut local).is_none());
            assert!(!has_copy(&local));
        });
    }

    #[test]
    fn a_new_token_cancels_the_previous_tokens_timer() {
        let cache = cache();
        let runtime = real_time_runtime();
        runtime.block_on(async {
            for _ in 0..20 {
                let entry = cache.acquire(Reason::Missing).await.unwrap();
                cache.invalidate(entry.generation);
            }
            cache.acquire(Reason::Missing).await.unwrap();
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        });
        // The fetch tasks have ended; of 21 timers, the last one is left.
        assert_eq!(runtime.metrics().num_alive_tasks(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn no_copy_is_kept_while_the_clock_is_paused() {
        let cache = cache();
        let mut local = None;
        cache.acquire(Reason::Missing).await.unwrap();
        for _ in 0..3 {
            cache.current(&mut local).unwrap();
        }
        assert!(!has_copy(&local));
    }

    #[test]
    fn lifetime_defaults_and_clamps() {
        let d = DEFAULT_LIFETIME;
        assert_eq!(effective_lifetime(None, d), d);
        assert_eq!(effective_lifetime(Some(Duration::ZERO), d), d);
        assert_eq!(
            effective_lifetime(Some(Duration::from_millis(10)), d),
            MIN_LIFETIME
        );
        assert_eq!(
            effective_lifetime(Some(Duration::from_secs(u64::MAX)), d),
            MAX_LIFETIME
        );
        assert_eq!(
            effective_lifetime(Some(Duration::from_secs(2)), d),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn margin_suits_short_and_long_lifetimes() {
        let max = CacheConfig::default().max_refresh_margin;
        for _ in 0..1000 {
            let short = refresh_margin(Duration::from_secs(2), max);
            assert!(
                short >= Duration::from_millis(200) && short <= Duration::from_millis(400),
                "{short:?}"
            );
            let long = refresh_margin(Duration::from_secs(2_628_288), max);
            assert_eq!(long, max);
        }
    }
}
