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
}
