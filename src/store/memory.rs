use std::time::Duration;

use super::{Lease, StoreFuture, StoredToken, TokenStore};

/// The default store: nothing outside the process. The cache's own copy is
/// the only one.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryStore;

impl TokenStore for MemoryStore {
    fn load<'a>(&'a self, _key: &'a str) -> StoreFuture<'a, Option<StoredToken>> {
        Box::pin(async { Ok(None) })
    }

    fn lock<'a>(&'a self, _key: &'a str, _ttl: Duration) -> StoreFuture<'a, Option<Lease>> {
        Box::pin(async { Ok(Some(Lease::random())) })
    }

    fn save<'a>(
        &'a self,
        _key: &'a str,
        _token: &'a StoredToken,
        _lease: &'a Lease,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async { Ok(true) })
    }

    fn unlock<'a>(&'a self, _key: &'a str, _lease: &'a Lease) -> StoreFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    fn is_external(&self) -> bool {
        false
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
