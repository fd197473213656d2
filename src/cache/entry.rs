//! A cached token and its timing: lifetime, refresh point, wake point.

use super::*;

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
    pub(super) timer: AtomicU64,
}

impl Entry {
    /// The same token with another refresh point and wake point.
    pub(super) fn rescheduled(&self, refresh_at: Instant, wake_at: Instant) -> Self {
        Self {
            header: self.header.clone(),
            generation: self.generation,
            wake_at,
            refresh_at,
            expires_at: self.expires_at,
            token: self.token.clone(),
            store_id: self.store_id,
            timer: AtomicU64::new(NO_TIMER),
        }
    }
}

impl TokenCache {
    /// The access token cached now, valid or not: for scrubbing text that an
    /// API may quote back.
    #[cfg(feature = "rustls")]
    pub(crate) fn cached_access_token(&self) -> Option<secrecy::SecretString> {
        self.current
            .load()
            .as_ref()
            .map(|e| e.token.access_token().clone())
    }

    pub(super) fn entry(&self, token: Token, requested_at: Instant, store_id: u64) -> FetchOutput {
        let lifetime = effective_lifetime(token.expires_in(), self.config.default_lifetime);
        self.entry_for(token, requested_at, lifetime, store_id)
    }

    pub(super) fn entry_for(
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
        let refresh_at = after(
            start,
            lifetime - refresh_margin(lifetime, self.config.max_refresh_margin),
        );
        let wake_at = if self.store.is_external() {
            refresh_at.min(after(Instant::now(), self.config.store_sync_interval))
        } else {
            refresh_at
        };
        Ok(Arc::new(Entry {
            header,
            generation: self.next_generation.fetch_add(1, Ordering::Relaxed),
            wake_at,
            refresh_at,
            expires_at: after(start, lifetime),
            token,
            store_id,
            timer: AtomicU64::new(NO_TIMER),
        }))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
