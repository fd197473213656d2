//! The state every connection of one mock server shares: configuration, the
//! token and job stores, the fault queues and the counters.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

use super::jobs::JobStore;
use super::tokens::TokenStore;
use super::{ApiFault, MockConfig, MockStats, TokenFault};

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: MockConfig,
    inner: Mutex<Inner>,
    /// Closed when the server is dropped, to release hanging requests (on HTTP/2
    /// they run in tasks of their own that aborting the connection does not end).
    shutdown: watch::Receiver<()>,
}

/// Everything mutable. Locked briefly and never across an `.await`.
#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub(crate) tokens: TokenStore,
    pub(crate) jobs: JobStore,
    pub(crate) token_faults: VecDeque<TokenFault>,
    pub(crate) api_faults: VecDeque<ApiFault>,
    pub(crate) stats: MockStats,
}

impl Shared {
    pub(crate) fn new(config: MockConfig, shutdown: watch::Receiver<()>) -> Shared {
        Shared {
            config,
            inner: Mutex::new(Inner::default()),
            shutdown,
        }
    }

    /// Locks the state. A panic while holding the lock cannot leave it
    /// inconsistent in a way that matters to a test double, so poisoning is
    /// ignored rather than cascading into every later request.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves once the server is dropped.
    pub(crate) async fn shutdown(&self) {
        let mut shutdown = self.shutdown.clone();
        // Nothing is ever sent: this returns when the sender is dropped.
        while shutdown.changed().await.is_ok() {}
    }
}
