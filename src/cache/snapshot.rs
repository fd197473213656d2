//! [`AuthSnapshot`]: the cache's state and counters at one moment, for
//! health endpoints and metrics.

use super::*;

/// The token cache's state and counters at one moment, from
/// [`TokenHandle::snapshot`](crate::TokenHandle::snapshot): for a health
/// endpoint (is a token held, until when, what failed last) and for metrics
/// (token fetches by reason and outcome, what `401`s led to).
///
/// It never holds a secret: not the access or refresh token, nor anything
/// from which to rebuild one. The counters count from the layer's creation
/// and only go up; the state is read without stopping requests, so two
/// fields may be a moment apart.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AuthSnapshot {
    /// The cached token, if one is held and has not expired.
    pub token: Option<CachedToken>,
    /// Whether a token fetch is in flight.
    pub fetching: bool,
    /// While the failure backoff after a fetch failure is open: how long
    /// requests that need a token still fail fast with
    /// [`last_error`](Self::last_error) rather than start a fetch (see
    /// [`WokeloAuthBuilder::credentials_backoff`](crate::WokeloAuthBuilder::credentials_backoff)).
    /// A cached valid token is attached meanwhile.
    pub failing_fast_for: Option<Duration>,
    /// Token fetches: why they started, how they ended.
    pub fetches: FetchCounts,
    /// What `401`s from the API to the layer's token led to.
    pub unauthorized: UnauthorizedCounts,
    /// The last failed fetch, kept after later successes.
    pub last_error: Option<LastTokenError>,
    /// Token requests by grant, if the source counts them
    /// ([`PasswordGrant`](crate::PasswordGrant) does).
    pub grants: Option<crate::source::GrantCounts>,
}

impl AuthSnapshot {
    /// Whether a valid token is held, or none was asked for and no failure
    /// backoff is open: what a readiness probe wants to know without
    /// waiting for a fetch. [`TokenHandle::login`](crate::TokenHandle::login)
    /// answers for certain, by fetching one.
    pub fn is_healthy(&self) -> bool {
        self.token.is_some() || self.failing_fast_for.is_none()
    }
}

/// The token a [`AuthSnapshot`] found cached, without the token itself.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CachedToken {
    /// The cache's number for this token, one higher for each token
    /// fetched (or adopted from a shared store) by this layer. A `401`
    /// invalidates the token only if it is still this one.
    pub generation: u64,
    /// When it expires, on the system clock: the token endpoint's
    /// `expires_in` counted from when the token was requested (clamped to
    /// [`MIN_LIFETIME`]..=[`MAX_LIFETIME`], or
    /// [`DEFAULT_LIFETIME`] when none was stated).
    pub expires_at: SystemTime,
    /// How long it is still valid, when the snapshot was taken.
    pub expires_in: Duration,
    /// How long until the layer refreshes it ahead of expiry (zero: a
    /// refresh is due or running).
    pub refresh_in: Duration,
}

/// Token fetches by why they started and how they ended.
///
/// A fetch is one single-flight acquisition of a token, shared by every
/// request and handle call that needed it; it makes one or more
/// [`attempts`](Self::attempts) on the token source. Fetches started but
/// neither succeeded nor failed are in flight, or were lost with the
/// runtime running them and started again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FetchCounts {
    /// Started because no valid token was cached (the first request, or
    /// after expiry or [`TokenHandle::invalidate`](crate::TokenHandle::invalidate)).
    pub missing: u64,
    /// Started ahead of expiry, in the background.
    pub refresh_ahead: u64,
    /// Started after the API answered `401` to the cached token: the
    /// 401-driven refreshes.
    pub unauthorized: u64,
    /// Started by [`TokenHandle::refresh`](crate::TokenHandle::refresh).
    pub forced: u64,
    /// Ended with a token (from the source, or adopted from a shared store).
    pub succeeded: u64,
    /// Ended with an error, by its kind.
    pub failed: ErrorKindCounts,
    /// Calls to [`TokenSource::fetch`], retries of transient failures
    /// included. For [`PasswordGrant`](crate::PasswordGrant) each call is
    /// one token request, or two when a refused refresh token falls back to
    /// the password grant. A fetch that adopts a token from a shared store
    /// makes none.
    pub attempts: u64,
}

impl FetchCounts {
    /// Fetches started, for any reason.
    pub fn started(&self) -> u64 {
        self.missing + self.refresh_ahead + self.unauthorized + self.forced
    }
}

/// Failed fetches by [`TokenErrorKind`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ErrorKindCounts {
    /// [`TokenErrorKind::CredentialsRejected`].
    pub credentials_rejected: u64,
    /// [`TokenErrorKind::Unavailable`].
    pub unavailable: u64,
    /// [`TokenErrorKind::TimedOut`].
    pub timed_out: u64,
    /// [`TokenErrorKind::InvalidResponse`].
    pub invalid_response: u64,
    /// [`TokenErrorKind::Configuration`].
    pub configuration: u64,
}

impl ErrorKindCounts {
    /// The count for `kind`.
    pub fn get(&self, kind: TokenErrorKind) -> u64 {
        match kind {
            TokenErrorKind::CredentialsRejected => self.credentials_rejected,
            TokenErrorKind::Unavailable => self.unavailable,
            TokenErrorKind::TimedOut => self.timed_out,
            TokenErrorKind::InvalidResponse => self.invalid_response,
            TokenErrorKind::Configuration => self.configuration,
        }
    }

    /// Failed fetches of every kind.
    pub fn total(&self) -> u64 {
        self.credentials_rejected
            + self.unavailable
            + self.timed_out
            + self.invalid_response
            + self.configuration
    }
}

/// What `401`s from the API to requests carrying the layer's token led to.
/// Requests the layer passes through untouched (another origin, their own
/// `Authorization`) are not counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnauthorizedCounts {
    /// `401`s that dropped the cached token (it was still the one the
    /// request carried); the next request, or the retry, fetches another
    /// (counted in [`FetchCounts::unauthorized`]).
    pub tokens_dropped: u64,
    /// Requests sent once more, with a new token, body replayed.
    pub retried: u64,
    /// `401`s handed to the caller as they are: the retry's own `401`, a
    /// body that could not be replayed, a Bearer challenge a new token
    /// cannot fix, a token the API refused right after it was fetched.
    pub returned: u64,
}

impl UnauthorizedCounts {
    /// Every `401` answered to the layer's token: first attempts and
    /// retries.
    pub fn received(&self) -> u64 {
        self.retried + self.returned
    }
}

/// The last failed token fetch, from [`AuthSnapshot::last_error`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LastTokenError {
    /// The error, as the requests that waited for the fetch got it. Its
    /// message and body are free of secrets.
    pub error: TokenError,
    /// When the fetch failed, on the system clock.
    pub at: SystemTime,
}

impl TokenCache {
    /// The state and counters now.
    pub(crate) fn snapshot(&self) -> AuthSnapshot {
        let state = self.lock();
        let now = Instant::now();
        let token = self.valid_entry(now).map(|entry| {
            let expires_in = entry.expires_at.saturating_duration_since(now);
            CachedToken {
                generation: entry.generation,
                expires_at: system_time_after(expires_in),
                expires_in,
                refresh_in: entry.refresh_at.saturating_duration_since(now),
            }
        });
        AuthSnapshot {
            token,
            fetching: state.inflight.is_some(),
            failing_fast_for: state
                .failure
                .as_ref()
                .filter(|f| now < f.until)
                .map(|f| f.until - now),
            fetches: self.counters.0.fetches(),
            unauthorized: self.counters.0.unauthorized_counts(),
            last_error: state.last_error.clone(),
            grants: self.source.grant_counts(),
        }
    }
}
