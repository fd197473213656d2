//! Where the token cache persists: [`TokenStore`] and the built-in stores.
//!
//! The cache always keeps its own in-process copy for the hot path; a store
//! is consulted only when a token is fetched (first use, refresh-ahead,
//! expiry, `401`) and, for shared stores, every
//! [`store_sync_interval`](crate::WokeloAuthBuilder::store_sync_interval).
//!
//! - [`MemoryStore`] (the default): nothing outside the process.
//! - [`FileStore`]: one login reused across runs of a command-line tool.
//! - `RedisStore` (feature `redis`): one token and one refresher for a fleet
//!   of processes.
//!
//! A fetch through a shared store goes: read the stored token and use it if
//! it is valid and not the one being replaced; otherwise take the store's
//! refresh lock, read again, and only then ask the token source, saving the
//! result under the lock (a fenced write: a holder whose lock expired cannot
//! overwrite a newer token). Processes that find the lock taken wait for the
//! new token. If the store fails, the process fetches on its own and says so
//! once per outage.
//!
//! A refresh token outlives its access token: a stored entry whose access
//! token has expired is still loaded when it has a refresh token, so that
//! the next fetch is a refresh grant rather than a new login. The cache never
//! attaches such an access token; it hands the entry to the token source
//! under the lock. Stores keep an entry for
//! [`DEFAULT_REFRESH_TOKEN_LIFETIME`] past its access token's expiry unless
//! configured otherwise (`with_refresh_token_lifetime`); past that, or
//! without a refresh token, an expired entry is ignored.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, SystemTime},
};

use crate::Token;

mod codec;
mod file;
mod memory;
#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::RedisStore;
#[cfg(feature = "encryption")]
#[cfg_attr(docsrs, doc(cfg(feature = "encryption")))]
pub use codec::EncryptionKey;
pub use file::FileStore;
pub use memory::MemoryStore;

/// How long a store keeps an entry after its access token expired, for its
/// refresh token: 30 days.
///
/// Wokelo does not publish a refresh-token lifetime (its access tokens live
/// about 30 days); a refresh token kept after the server dropped it costs one
/// refused refresh grant and then a login, while one dropped too early costs a
/// login (and logs out a source that can only refresh). Set another with
/// [`FileStore::with_refresh_token_lifetime`] or
/// `RedisStore::with_refresh_token_lifetime`.
pub const DEFAULT_REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// The future a [`TokenStore`] returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A token as stored: the token, when it expires (wall clock, so that other
/// processes can tell), and an id that tells one fetch's token from another's.
#[derive(Clone)]
pub struct StoredToken {
    pub(crate) id: u64,
    pub(crate) token: Token,
    pub(crate) expires_at: SystemTime,
}

impl StoredToken {
    /// A record of `token`, fetched under `id`, expiring at `expires_at`.
    pub fn new(id: u64, token: Token, expires_at: SystemTime) -> Self {
        Self {
            id,
            token,
            expires_at,
        }
    }

    /// The id of the fetch that produced it.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The token.
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// When it expires.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// How long the access token is still valid, measured now; zero once it
    /// has expired (the entry may still carry a usable refresh token).
    pub fn remaining(&self) -> Duration {
        self.expires_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }
}

impl fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredToken")
            .field("id", &self.id)
            .field("token", &self.token)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Proof of holding a store's refresh lock, for a fenced write.
///
/// Leases compare by value. A [`FileStore`]'s lease also holds the OS lock:
/// it is released by [`TokenStore::unlock`], or when the lease and its
/// clones are dropped, or when the process exits.
#[derive(Clone)]
pub struct Lease {
    value: String,
    /// The OS file lock a [`FileStore`] lease holds.
    pub(crate) file: Option<Arc<file::FileLock>>,
}

impl Lease {
    /// A new random lease value.
    pub fn random() -> Self {
        Self {
            value: format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
            file: None,
        }
    }

    /// The lease value.
    pub fn as_str(&self) -> &str {
        &self.value
    }
}

impl PartialEq for Lease {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl Eq for Lease {}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Lease").field(&self.value).finish()
    }
}

/// A store failed (unreachable, timed out, I/O error). The cache then
/// fetches on its own; the message never contains a secret.
#[derive(Debug)]
pub struct StoreError {
    message: String,
    source: Option<crate::BoxError>,
}

impl StoreError {
    /// A store error with a message saying what failed.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// Sets the underlying cause.
    pub fn with_source(mut self, source: impl Into<crate::BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Persistence for the token cache; see the [module docs](self).
///
/// `key` names one account (API origin, client id, user); a store keeps one
/// token per key. A store must ignore, with a logged reason, an entry it
/// cannot trust (corrupt, written for another key, not decryptable, expired
/// with no refresh token or past its refresh-token lifetime) and report it
/// as absent.
pub trait TokenStore: Send + Sync + 'static {
    /// The stored token for `key`, if there is one that is valid or whose
    /// refresh token may still be (then [`StoredToken::remaining`] is zero).
    fn load<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<StoredToken>>;

    /// Tries to take the refresh lock for `key` for at most `ttl`, without
    /// waiting. `None` when another holder has it (the cache polls).
    fn lock<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, Option<Lease>>;

    /// Stores `token` for `key` if `lease` still holds the lock. Returns
    /// whether it was written.
    fn save<'a>(
        &'a self,
        key: &'a str,
        token: &'a StoredToken,
        lease: &'a Lease,
    ) -> StoreFuture<'a, bool>;

    /// Releases the lock if `lease` still holds it.
    fn unlock<'a>(&'a self, key: &'a str, lease: &'a Lease) -> StoreFuture<'a, ()>;

    /// Whether other processes can see this store. The cache skips a store
    /// that is not shared and not persistent (the default [`MemoryStore`]).
    fn is_external(&self) -> bool {
        true
    }

    /// A short name for logs.
    fn name(&self) -> &'static str;
}
