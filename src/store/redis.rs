use std::{fmt, sync::Arc, time::Duration, time::SystemTime};

use ::redis::{aio::ConnectionManager, AsyncCommands, Script};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::{
    codec::{self, EncryptionKey},
    Lease, StoreError, StoreFuture, StoredToken, TokenStore, DEFAULT_REFRESH_TOKEN_LIFETIME,
};

/// The longest expiry given to a Redis key (`PX`), 100 years: far beyond
/// any token, and far inside what Redis accepts (it refuses an expiry
/// whose milliseconds overflow a signed 64-bit count from now).
const MAX_PX: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// Writes the token only while the lease still holds the lock.
const FENCED_SET: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"#;

/// Releases the lock only if the lease still holds it.
const FENCED_DEL: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Shares one token, and one refresher, between every process that uses the
/// same Redis and the same account.
///
/// - Keys are `wokelo-auth:v1:<hash>:token` and `...:lock`, where the hash
///   is SHA-256 of the API origin, client id and username: no secret, and no
///   e-mail address, in key names.
/// - The refresh lock is `SET NX PX` with a random lease; the token is
///   written by a Lua script only while that lease holds the lock (a fenced
///   write), so a process whose lock expired cannot overwrite a newer token.
/// - Entries expire (`PX`) when the access token does, or, when they have a
///   refresh token, [`DEFAULT_REFRESH_TOKEN_LIFETIME`] later (see
///   [`with_refresh_token_lifetime`](Self::with_refresh_token_lifetime)): a
///   refresh token outlives its access token, and the process that finds the
///   expired entry refreshes from it rather than logs in again.
/// - With [`with_encryption_key`](Self::with_encryption_key), entries are
///   sealed with XChaCha20-Poly1305, bound to their key name.
/// - The connection is made on first use and re-made after a failure; every
///   operation has a timeout. When Redis is down or slow, the layer fetches
///   tokens on its own and sharing resumes when Redis is back.
///
/// ```no_run
/// use wokelo_auth::{store::RedisStore, Credentials, PasswordGrant, WokeloAuthLayer};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::open("rediss://:password@redis.internal:6380/0")?;
/// let layer = WokeloAuthLayer::builder(PasswordGrant::new(Credentials::from_env()?))
///     .token_store(store)
///     .build();
/// # let _ = layer; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: ::redis::Client,
    connection: OnceCell<ConnectionManager>,
    encryption: Option<EncryptionKey>,
    timeout: Duration,
    prefix: String,
    refresh_token_lifetime: Duration,
    set: Script,
    del: Script,
}

impl RedisStore {
    /// A store for the Redis at `url`: `redis://[:password@]host[:port][/db]`,
    /// `rediss://` for TLS, `redis+unix:///path`. Does not connect yet.
    ///
    /// # Errors
    ///
    /// When the URL is not a Redis URL.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let client = ::redis::Client::open(url).map_err(|e| {
            StoreError::new("invalid Redis URL (expected redis://, rediss:// or redis+unix://)")
                .with_source(e)
        })?;
        Ok(Self::with_client(client))
    }

    /// A store for the Redis at `url` (`rediss://...`) whose TLS certificate
    /// is issued by a private certificate authority: the server's
    /// certificate must chain to one of the certificates in `ca_pem` (PEM),
    /// which replace the public roots [`open`](Self::open) trusts. Does not
    /// connect yet.
    ///
    /// # Errors
    ///
    /// When the URL is not a Redis URL, or `ca_pem` holds no certificate
    /// that can be used.
    pub fn open_with_ca(url: &str, ca_pem: &[u8]) -> Result<Self, StoreError> {
        use rustls_pki_types::{pem::PemObject, CertificateDer};
        let mut found = 0;
        for certificate in CertificateDer::pem_slice_iter(ca_pem) {
            certificate.map_err(|e| {
                StoreError::new("the CA certificate is not valid PEM").with_source(e)
            })?;
            found += 1;
        }
        if found == 0 {
            return Err(StoreError::new(
                "no certificate in the CA PEM (expected -----BEGIN CERTIFICATE-----)",
            ));
        }
        let certificates = ::redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca_pem.to_vec()),
        };
        let client = ::redis::Client::build_with_tls(url, certificates).map_err(|e| {
            StoreError::new(
                "invalid Redis URL (expected rediss://) or CA certificate (expected PEM)",
            )
            .with_source(e)
        })?;
        Ok(Self::with_client(client))
    }

    fn with_client(client: ::redis::Client) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                connection: OnceCell::new(),
                encryption: None,
                timeout: Duration::from_secs(1),
                prefix: "wokelo-auth:v1".to_owned(),
                refresh_token_lifetime: DEFAULT_REFRESH_TOKEN_LIFETIME,
                set: Script::new(FENCED_SET),
                del: Script::new(FENCED_DEL),
            }),
        }
    }

    fn rebuild(self, f: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            client: shared.client.clone(),
            connection: OnceCell::new(),
            encryption: shared.encryption.clone(),
            timeout: shared.timeout,
            prefix: shared.prefix.clone(),
            refresh_token_lifetime: shared.refresh_token_lifetime,
            set: Script::new(FENCED_SET),
            del: Script::new(FENCED_DEL),
        });
        f(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Seals stored tokens with `key`; entries not sealed with it are ignored.
    pub fn with_encryption_key(self, key: EncryptionKey) -> Self {
        self.rebuild(|i| i.encryption = Some(key))
    }

    /// The timeout of each Redis operation (default 1 s).
    pub fn with_timeout(self, timeout: Duration) -> Self {
        self.rebuild(|i| i.timeout = timeout)
    }

    /// How long an entry is kept after its access token expired, for its
    /// refresh token (default [`DEFAULT_REFRESH_TOKEN_LIFETIME`]); zero
    /// drops entries with their access token. Longer than the server keeps
    /// refresh tokens costs one refused refresh grant before a login.
    pub fn with_refresh_token_lifetime(self, lifetime: Duration) -> Self {
        self.rebuild(|i| i.refresh_token_lifetime = lifetime)
    }

    /// The key prefix (default `wokelo-auth:v1`).
    pub fn with_prefix(self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        self.rebuild(|i| i.prefix = prefix)
    }

    /// The Redis key of the token for the account `key`.
    pub fn token_key(&self, key: &str) -> String {
        format!("{}:token", self.inner.base(key))
    }

    /// The Redis key of the refresh lock for the account `key`.
    pub fn lock_key(&self, key: &str) -> String {
        format!("{}:lock", self.inner.base(key))
    }
}

impl Inner {
    fn base(&self, key: &str) -> String {
        let digest = Sha256::digest(key.as_bytes());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}:{hex}", self.prefix)
    }

    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let config = ::redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1);
        let connect = self.connection.get_or_try_init(|| async {
            // One plain connection first, made once per store: if it fails,
            // its error says why (a refused connection, a wrong password).
            // The connection manager retries after about a second, longer
            // than the timeout, which would hide the cause behind "timed out".
            let probe = ::redis::AsyncConnectionConfig::new()
                .set_connection_timeout(self.timeout)
                .set_response_timeout(self.timeout);
            self.client
                .get_multiplexed_async_connection_with_config(&probe)
                .await
                .map_err(connect_error)?;
            ConnectionManager::new_with_config(self.client.clone(), config)
                .await
                .map_err(connect_error)
        });
        match tokio::time::timeout(self.timeout, connect).await {
            Ok(connection) => connection.cloned(),
            Err(_) => Err(StoreError::new(format!(
                "cannot connect to Redis within {:?}",
                self.timeout
            ))),
        }
    }

    /// Runs one Redis operation with the timeout.
    async fn run<T>(
        &self,
        what: &'static str,
        op: impl AsyncFnOnce(&mut ConnectionManager) -> ::redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let mut connection = self.connection().await?;
        match tokio::time::timeout(self.timeout, op(&mut connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(StoreError::new(format!("Redis {what} failed")).with_source(e)),
            Err(_) => Err(StoreError::new(format!(
                "Redis {what} did not answer within {:?}",
                self.timeout
            ))),
        }
    }
}

impl TokenStore for RedisStore {
    fn load<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<StoredToken>> {
        Box::pin(async move {
            let token_key = self.token_key(key);
            let bytes: Option<Vec<u8>> = self
                .inner
                .run("GET", async |c| c.get(&token_key).await)
                .await?;
            let Some(bytes) = bytes else { return Ok(None) };
            match codec::decode(
                &bytes,
                key,
                self.inner.encryption.as_ref(),
                SystemTime::now(),
                self.inner.refresh_token_lifetime,
            ) {
                Ok(stored) => Ok(Some(stored)),
                Err(reason) => {
                    tracing::warn!(redis_key = %token_key, %reason, "ignoring the stored token");
                    Ok(None)
                }
            }
        })
    }

    fn lock<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, Option<Lease>> {
        Box::pin(async move {
            let lease = Lease::random();
            let lock_key = self.lock_key(key);
            let ttl_ms = px(ttl);
            let set: Option<String> = self
                .inner
                .run("SET NX", async |c| {
                    ::redis::cmd("SET")
                        .arg(&lock_key)
                        .arg(lease.as_str())
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl_ms)
                        .query_async(c)
                        .await
                })
                .await?;
            Ok(set.map(|_| lease))
        })
    }

    fn save<'a>(
        &'a self,
        key: &'a str,
        token: &'a StoredToken,
        lease: &'a Lease,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let value = codec::encode(token, key, self.inner.encryption.as_ref());
            let ttl_ms = px(keep_for(token, self.inner.refresh_token_lifetime));
            let (lock_key, token_key) = (self.lock_key(key), self.token_key(key));
            let written: i64 = self
                .inner
                .run("fenced SET", async |c| {
                    self.inner
                        .set
                        .key(&lock_key)
                        .key(&token_key)
                        .arg(lease.as_str())
                        .arg(value)
                        .arg(ttl_ms)
                        .invoke_async(c)
                        .await
                })
                .await?;
            Ok(written == 1)
        })
    }

    fn unlock<'a>(&'a self, key: &'a str, lease: &'a Lease) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let lock_key = self.lock_key(key);
            let _: i64 = self
                .inner
                .run("fenced DEL", async |c| {
                    self.inner
                        .del
                        .key(&lock_key)
                        .arg(lease.as_str())
                        .invoke_async(c)
                        .await
                })
                .await?;
            Ok(())
        })
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}

/// The time to live to give a store's entry for `stored`: until its access
/// token expires, and for `refresh_token_lifetime` more when it has a
/// refresh token. Saturates instead of overflowing.
fn keep_for(stored: &StoredToken, refresh_token_lifetime: Duration) -> Duration {
    let remaining = stored.remaining();
    if stored.token.refresh_token().is_some() {
        remaining.saturating_add(refresh_token_lifetime)
    } else {
        remaining
    }
}

/// `ttl` as a Redis `PX` argument: whole milliseconds, at least 1 (Redis
/// refuses 0), at most [`MAX_PX`] (Redis refuses an expiry past its clock's
/// range, so a huge lock TTL or refresh-token lifetime must not reach it).
fn px(ttl: Duration) -> u64 {
    ttl.min(MAX_PX).as_millis().max(1) as u64
}

/// A failed connection to Redis, saying which way it failed.
fn connect_error(e: ::redis::RedisError) -> StoreError {
    let message = if e.kind() == ::redis::ErrorKind::AuthenticationFailed {
        "Redis refused the user or password in the store's URL"
    } else {
        "cannot connect to Redis"
    };
    StoreError::new(message).with_source(e)
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The connection info may hold a password: show the address only.
        let addr = &self.inner.client.get_connection_info().addr;
        f.debug_struct("RedisStore")
            .field("addr", &addr.to_string())
            .field("prefix", &self.inner.prefix)
            .field("encrypted", &self.inner.encryption.is_some())
            .field("timeout", &self.inner.timeout)
            .field("refresh_token_lifetime", &self.inner.refresh_token_lifetime)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Token;

    #[test]
    fn px_is_whole_milliseconds_between_one_and_a_century() {
        assert_eq!(px(Duration::ZERO), 1);
        assert_eq!(px(Duration::from_micros(10)), 1);
        assert_eq!(px(Duration::from_millis(1500)), 1500);
        let century = MAX_PX.as_millis() as u64;
        assert_eq!(px(MAX_PX + Duration::from_secs(1)), century);
        assert_eq!(px(Duration::MAX), century);
        assert!(century < i64::MAX as u64 / 2);
    }

    #[test]
    fn an_entry_is_kept_for_its_access_token_and_then_its_refresh_token_lifetime() {
        let with_refresh = StoredToken::new(
            7,
            Token::new("acc").with_refresh_token("ref"),
            SystemTime::now() + Duration::from_secs(60),
        );
        let keep = keep_for(&with_refresh, Duration::from_secs(600));
        assert!(
            keep > Duration::from_secs(600)
                && keep <= Duration::from_secs(600) + Duration::from_secs(60),
            "{keep:?}"
        );
        assert_eq!(keep_for(&with_refresh, Duration::MAX), Duration::MAX);
        let access_only = StoredToken::new(
            1,
            Token::new("a"),
            SystemTime::now() + Duration::from_secs(60),
        );
        assert!(keep_for(&access_only, Duration::from_secs(600)) <= Duration::from_secs(60));
    }
}
