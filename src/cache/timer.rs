//! Publishing a new entry, and the timer that marks its wake point.

use super::*;

impl TokenCache {
    /// Makes `entry` the current one (or none), then bumps the epoch so that
    /// every service clone looks at it.
    pub(super) fn publish(self: &Arc<Self>, entry: Option<Arc<Entry>>) {
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
    pub(super) fn set_timer(self: &Arc<Self>, entry: &Arc<Entry>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if entry
            .timer
            .compare_exchange(
                NO_TIMER,
                runtime_key(runtime.id()),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
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
}

/// [`Entry::timer`] when no timer is set.
pub(super) const NO_TIMER: u64 = 0;

/// A runtime as a number for [`Entry::timer`] (never [`NO_TIMER`]).
fn runtime_key(id: tokio::runtime::Id) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish() | 1
}

/// The current runtime as [`runtime_key`] gives it, if there is one.
pub(super) fn current_runtime() -> Option<u64> {
    tokio::runtime::Handle::try_current()
        .ok()
        .map(|runtime| runtime_key(runtime.id()))
}

impl Entry {
    /// The runtime whose task marks this entry's wake point, if one does.
    pub(super) fn timer_runtime(&self) -> Option<u64> {
        Some(self.timer.load(Ordering::Acquire)).filter(|&key| key != NO_TIMER)
    }
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
            entry.timer.store(NO_TIMER, Ordering::Release);
        }
        if let Some(cache) = self.cache.upgrade() {
            cache.epoch.0.fetch_add(1, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::test_support::{cache, real_time_runtime};

    #[test]
    fn a_new_token_cancels_the_previous_tokens_timer() {
        let cache = cache();
        let runtime = real_time_runtime();
        runtime.block_on(async {
            for _ in 0..20 {
                let entry = cache.acquire(Reason::Missing).await.unwrap();
                cache.invalidate(entry.generation, true);
            }
            cache.acquire(Reason::Missing).await.unwrap();
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        });
        // The fetch tasks have ended; of 21 timers, the last one is left.
        assert_eq!(runtime.metrics().num_alive_tasks(), 1);
    }
}
