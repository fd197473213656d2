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

mod control;
mod counters;
mod entry;
mod fetch;
mod flight;
mod local;
mod refresh;
mod snapshot;
mod store_sync;
mod timer;
mod unauthorized;

use counters::Counters;
pub(crate) use counters::Unauthorized;
#[cfg(test)]
pub(crate) use entry::effective_lifetime;
pub(crate) use entry::Entry;
pub(crate) use flight::{Acquire, Invalidation};
pub(crate) use local::LocalToken;
pub use snapshot::{
    AuthSnapshot, CachedToken, ErrorKindCounts, FetchCounts, LastTokenError, UnauthorizedCounts,
};
use timer::{current_runtime, NO_TIMER};
pub(crate) use unauthorized::After401;

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, PoisonError, Weak,
    },
    task::{ready, Context, Poll},
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

/// The longest time requests fail fast with a token error before another
/// fetch is tried (5 minutes), whatever the configuration or the server's
/// `Retry-After` says: no answer can lock the client out for longer.
pub const MAX_FAILURE_WINDOW: Duration = Duration::from_secs(5 * 60);

/// How far ahead a time that cannot be represented is put (30 years):
/// never reached while the process runs.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

/// `at + duration`, saturating: configuration values and numbers from the
/// network can be anything, and `Instant + Duration` panics on overflow.
pub(crate) fn after(at: Instant, duration: Duration) -> Instant {
    at.checked_add(duration)
        .or_else(|| at.checked_add(FAR_FUTURE))
        .unwrap_or(at)
}

/// `SystemTime::now() + duration`, saturating (see [`after`]).
pub(crate) fn system_time_after(duration: Duration) -> SystemTime {
    let now = SystemTime::now();
    now.checked_add(duration)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

/// Tuning of the cache; the layer's builder sets it.
#[derive(Clone, Debug)]
pub(crate) struct CacheConfig {
    pub(crate) fetch_timeout: Duration,
    pub(crate) max_retries: u32,
    pub(crate) retry_backoff: Duration,
    pub(crate) max_retry_backoff: Duration,
    pub(crate) failure_backoff: Duration,
    /// How long `401`s to a token the API refused right after it was
    /// fetched are returned without fetching another.
    pub(crate) unauthorized_backoff: Duration,
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
            unauthorized_backoff: Duration::from_secs(30),
            max_refresh_margin: Duration::from_secs(5 * 60),
            default_lifetime: DEFAULT_LIFETIME,
            store_sync_interval: Duration::from_secs(60),
            store_poll_interval: Duration::from_millis(50),
        }
    }
}

/// Keeps a value on its own cache line, so that writes to its neighbours do
/// not evict it from the other cores' caches.
#[repr(align(128))]
struct CachePadded<T>(T);

pub(crate) type FetchOutput = Result<Arc<Entry>, TokenError>;

/// The fetch's outcome, shared by every request waiting for it; `None` when
/// the fetch was lost (see [`flight::Flight`]).
pub(crate) type FetchFuture = BoxFuture<'static, Option<FetchOutput>>;

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
    /// Fetches by reason and outcome, and what `401`s led to; written on
    /// slow paths only.
    counters: CachePadded<Counters>,
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
    /// A token the API refused on the retry after a `401`, and until when
    /// its `401`s are not worth another token.
    refused: Option<(u64, Instant)>,
    /// The newest token fetched because of a `401`, and when.
    fetched_for_401: Option<(u64, Instant)>,
    /// A fetch that took `last`'s refresh token on was lost (its runtime
    /// shut down, or stalled past the deadline): the refresh token may have
    /// been presented and rotated, so the next fetch does not present it
    /// again (with reuse protection, that would revoke the family).
    refresh_spent: bool,
    next_fetch_id: u64,
    /// The last fetch that failed, for [`AuthSnapshot::last_error`].
    last_error: Option<LastTokenError>,
}

struct Inflight {
    flight: Arc<flight::Flight>,
    fetch: Shared<FetchFuture>,
}

struct Failure {
    error: TokenError,
    until: Instant,
}

/// Why a fetch started, for tracing and [`FetchCounts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// No token yet, or the cached one expired.
    Missing,
    /// The cached token is close to expiry.
    RefreshAhead,
    /// The API answered `401` to the cached token.
    Unauthorized,
    /// [`TokenHandle::refresh`](crate::TokenHandle::refresh): a new token
    /// even though the cached one is valid.
    Forced,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::RefreshAhead => "refresh_ahead",
            Self::Unauthorized => "unauthorized",
            Self::Forced => "forced",
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
            counters: CachePadded(Counters::default()),
            timer: Mutex::new(None),
            config,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn valid_entry(&self, now: Instant) -> Option<Arc<Entry>> {
        self.current.load_full().filter(|e| now < e.expires_at)
    }
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
pub(super) mod test_support {
    use super::*;

    pub(crate) fn cache() -> Arc<TokenCache> {
        Arc::new(TokenCache::new(
            Box::new(crate::StaticToken::new("t")),
            None,
            "key".into(),
            CacheConfig::default(),
        ))
    }

    pub(crate) fn real_time_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }
}
