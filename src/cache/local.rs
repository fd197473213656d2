//! The hot path: each service clone's copy of the token.

use super::*;

/// What one service clone keeps of the cached token, valid while the cache's
/// epoch is still `epoch`: the header to attach, or only that the clone
/// looked once (see [`TokenCache::current_slow`]).
#[derive(Clone)]
pub(crate) struct LocalToken {
    epoch: u64,
    copy: Option<(HeaderValue, u64)>,
}

impl TokenCache {
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
    pub(super) fn current_slow(
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
        } else if let Some(timer) = entry.timer_runtime() {
            // A copy from the second request of a clone on: a clone used
            // once (a clone per request) does not pay for checking the
            // clock twice. None on another runtime than the timer's: that
            // one may sit idle past the wake point, so every request here
            // checks the clock.
            let copy = (looked_before && current_runtime() == Some(timer) && clock_runs(now))
                .then(|| (own_copy(&entry.header), entry.generation));
            *local = Some(LocalToken { epoch, copy });
        } else {
            // Stored outside a runtime, or the runtime running its timer shut
            // down: set one from this runtime, if there is one.
            self.set_timer(entry);
        }
        Some((entry.header.clone(), entry.generation))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::test_support::{cache, real_time_runtime};

    fn has_copy(local: &Option<LocalToken>) -> bool {
        local.as_ref().is_some_and(|l| l.copy.is_some())
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
            assert_eq!(cache.invalidate(generation, true), Invalidation::Dropped);
            assert!(cache.current(&mut local).is_none());
            assert!(!has_copy(&local));
        });
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
}
