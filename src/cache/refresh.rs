//! Refresh-ahead, and what a failed fetch leaves behind.

use super::*;

impl TokenCache {
    /// Past the entry's wake point: refresh ahead, or compare with the store.
    #[cold]
    pub(super) fn wake(self: &Arc<Self>, entry: &Entry, now: Instant) {
        if now >= entry.refresh_at {
            if !self.fetching.load(Ordering::Acquire) {
                self.refresh_ahead();
            }
        } else if !self.syncing.swap(true, Ordering::AcqRel) {
            self.sync_with_store(entry.generation);
        }
    }

    #[cold]
    pub(super) fn refresh_ahead(self: &Arc<Self>) {
        let mut state = self.lock();
        let now = Instant::now();
        let due = self.valid_entry(now).is_some_and(|e| now >= e.refresh_at);
        if state.inflight.is_none() && due {
            if let Err(e) = self.start_fetch(&mut state, Reason::RefreshAhead) {
                tracing::warn!(error = %e, "cannot refresh the token ahead of expiry");
            }
        }
    }

    /// How long requests that need a token fail fast with `error` rather
    /// than start another fetch (`None`: not at all). `serving`: a valid
    /// token is still cached, so no request needs a fetch until it expires.
    ///
    /// - The server refused the credentials, or the configuration cannot
    ///   work: the failed-credentials backoff, at most [`MAX_FAILURE_WINDOW`].
    /// - Unavailable or timed out: only as long as the server asked
    ///   (`Retry-After`), at most the fetch timeout.
    /// - An unusable answer: [`INVALID_RESPONSE_WINDOW`] when no token is
    ///   left; none after a failed refresh, so that once the token expires
    ///   the next request tries again.
    pub(super) fn failure_window(&self, error: &TokenError, serving: bool) -> Option<Duration> {
        let window = match error.kind() {
            TokenErrorKind::CredentialsRejected | TokenErrorKind::Configuration => {
                Some(self.config.failure_backoff)
            }
            kind if kind.is_transient() => error
                .retry_after()
                .map(|after| after.min(self.config.fetch_timeout)),
            _ if serving => None,
            _ => Some(INVALID_RESPONSE_WINDOW.min(self.config.failure_backoff)),
        };
        window.map(|w| w.min(MAX_FAILURE_WINDOW))
    }

    /// A refresh failed while `entry` is still valid: serve it, and try
    /// again before it expires (after half the time left, at most 30 s;
    /// later if the server asked, but never past expiry).
    pub(super) fn retry_refresh_later(
        self: &Arc<Self>,
        entry: &Entry,
        error: &TokenError,
        now: Instant,
    ) {
        let remaining = entry.expires_at.saturating_duration_since(now);
        let mut retry_in = (remaining / 2).min(MAX_REFRESH_RETRY_DELAY);
        if let Some(asked) = error.retry_after() {
            retry_in = retry_in.max(asked).min(remaining);
        }
        tracing::warn!(
            error = %error,
            retry_in_ms = retry_in.as_millis() as u64,
            valid_for_ms = remaining.as_millis() as u64,
            "token refresh failed; serving the current token meanwhile"
        );
        let refresh_at = after(now, retry_in);
        let postponed = entry.rescheduled(refresh_at, entry.wake_at.min(refresh_at));
        self.publish(Some(Arc::new(postponed)));
    }
}

/// The longest a failed refresh waits before it is tried again while the
/// token is valid.
const MAX_REFRESH_RETRY_DELAY: Duration = Duration::from_secs(30);

/// How long requests fail fast after an unusable token-endpoint answer when
/// no valid token is left: long enough not to hammer a misconfigured
/// endpoint, short enough that one bad answer is soon forgotten.
pub(super) const INVALID_RESPONSE_WINDOW: Duration = Duration::from_secs(1);
