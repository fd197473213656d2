//! Sharing the token with other processes through a [`TokenStore`].

use super::*;

impl TokenCache {
    /// Adopts a newer token another process stored, if there is one, and
    /// sets the next comparison.
    pub(super) fn sync_with_store(self: &Arc<Self>, generation: u64) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.syncing.store(false, Ordering::Release);
            return;
        };
        let syncing = Syncing(self.clone());
        runtime.spawn(async move {
            let cache = &syncing.0;
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
                                .min(after(now, cache.config.store_sync_interval)),
                        ),
                    ),
                };
                cache.publish(Some(next));
            }
        });
    }

    /// A fetch through a shared store: adopt what another process stored,
    /// else refresh under the store's lock (waiting while another process
    /// holds it); on a store failure, fetch in this process.
    pub(super) async fn fetch_shared(
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
        // A forced refresh wants a token from the source, not one stored
        // before it was asked for; the stored refresh token still feeds it.
        let forced = reason == Reason::Forced;
        let usable = |s: &StoredToken| !forced && Some(s.id) != avoid && s.remaining() > outlive;
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
                    if after(Instant::now(), poll) >= deadline {
                        return Err(self.timed_out("no token appeared in the token store while another process held its refresh lock"));
                    }
                    tokio::time::sleep(poll).await;
                }
                Err(()) => return self.fetch_alone(deadline, attempts).await,
            }
        }
    }

    pub(super) async fn fetch_under_lease(
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
            system_time_after(entry.expires_at.saturating_duration_since(Instant::now())),
        );
        if let Ok(false) = self.store_op(self.store.save(key, &record, lease)).await {
            tracing::warn!("the token store's refresh lock expired before the token was saved; this process alone uses it");
        }
        Ok(entry)
    }

    /// The store is failing: log in in this process alone. A fresh login, not
    /// a refresh, since a refresh token from the store may have been rotated
    /// by another process in the meantime.
    pub(super) async fn fetch_alone(&self, deadline: Instant, attempts: &mut u32) -> FetchOutput {
        let (token, requested_at) = self.fetch_from_source(None, deadline, attempts).await?;
        self.entry(token, requested_at, fastrand::u64(..))
    }

    /// Runs a store operation, logging once when the store starts failing and
    /// once when it recovers.
    pub(super) async fn store_op<T>(&self, op: crate::store::StoreFuture<'_, T>) -> Result<T, ()> {
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
    pub(super) fn adopt(&self, stored: StoredToken) -> FetchOutput {
        let remaining = stored.remaining();
        self.entry_for(
            stored.token,
            Instant::now(),
            remaining.clamp(Duration::from_millis(1), MAX_LIFETIME),
            stored.id,
        )
    }
}

/// Marks the comparison with the store as ended when dropped: when it
/// completes, and also when its task is dropped with its runtime, so that a
/// request on another runtime can start the next one.
struct Syncing(Arc<TokenCache>);

impl Drop for Syncing {
    fn drop(&mut self) {
        self.0.syncing.store(false, Ordering::Release);
    }
}
