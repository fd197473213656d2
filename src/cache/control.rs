//! What a [`TokenHandle`](crate::TokenHandle) asks of the cache: the token
//! now, a forced refresh, dropping the token.

use super::*;

impl TokenCache {
    /// A valid token, through the same single flight as requests: the cached
    /// one, else the fetch in flight, else a new fetch. Past the token's
    /// refresh point this also starts the refresh ahead of expiry, as a
    /// request would.
    pub(crate) async fn token(self: &Arc<Self>) -> FetchOutput {
        let entry = self.acquire(Reason::Missing).await?;
        if Instant::now() >= entry.refresh_at && !self.fetching.load(Ordering::Acquire) {
            self.refresh_ahead();
        }
        Ok(entry)
    }

    /// A token fetched now, even if the cached one is valid: joins the
    /// fetch in flight if there is one (its token is newer than the one
    /// cached when it started), else starts one. Inside the failure backoff
    /// window it fails fast, as requests do.
    pub(crate) fn refresh(self: &Arc<Self>) -> Acquire {
        self.acquire(Reason::Forced)
    }

    /// Drops the cached token, whatever its generation: every service clone
    /// sees it gone at its next request, which fetches another. The token
    /// stays the source's `current` one, so the next fetch can renew it
    /// with its refresh token.
    pub(crate) fn drop_token(self: &Arc<Self>) {
        let _state = self.lock();
        if self.current.load().is_some() {
            self.publish(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cache::test_support::cache;

    #[tokio::test]
    async fn a_forced_fetch_replaces_a_valid_token_and_a_dropped_one_is_fetched_again() {
        let cache = cache();
        let first = cache.token().await.unwrap();
        assert_eq!(cache.token().await.unwrap().generation, first.generation);
        let forced = cache.refresh().await.unwrap();
        assert!(forced.generation > first.generation);
        cache.drop_token();
        assert!(cache.current(&mut None).is_none());
        let next = cache.token().await.unwrap();
        assert!(next.generation > forced.generation);
        let fetches = cache.snapshot().fetches;
        assert_eq!((fetches.missing, fetches.forced), (2, 1));
        assert_eq!((fetches.succeeded, fetches.attempts), (3, 3));
    }
}
