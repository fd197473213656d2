use std::{
    fmt,
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use super::{
    codec::{self, EncryptionKey},
    Lease, StoreError, StoreFuture, StoredToken, TokenStore,
};

/// Keeps the token in a file, so that a command-line tool logs in once and
/// reuses the token across runs.
///
/// The file is created with mode `0600` (owner only) and replaced atomically
/// (written beside it, then renamed). A file that is corrupt, expired, or
/// written for another account is ignored with a logged reason. It holds
/// one account; meant for one process at a time, it has no lock.
///
/// ```no_run
/// use wokelo_auth::{store::FileStore, Credentials, PasswordGrant, WokeloAuthLayer};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = WokeloAuthLayer::builder(PasswordGrant::new(Credentials::from_env()?))
///     .token_store(FileStore::new(FileStore::default_path().ok_or("no home directory")?))
///     .build();
/// # let _ = layer; Ok(()) }
/// ```
#[derive(Clone)]
pub struct FileStore {
    path: Arc<PathBuf>,
    encryption: Option<EncryptionKey>,
}

impl FileStore {
    /// A store in the file at `path` (created on first save).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: Arc::new(path.into()),
            encryption: None,
        }
    }

    /// `$XDG_CACHE_HOME/wokelo-auth/token.json`, or
    /// `$HOME/.cache/wokelo-auth/token.json`.
    pub fn default_path() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
        Some(base.join("wokelo-auth").join("token.json"))
    }

    /// Seals the file's contents with `key`.
    #[cfg(feature = "encryption")]
    #[cfg_attr(docsrs, doc(cfg(feature = "encryption")))]
    pub fn with_encryption_key(mut self, key: EncryptionKey) -> Self {
        self.encryption = Some(key);
        self
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self, key: &str) -> Result<Option<StoredToken>, StoreError> {
        let bytes = match std::fs::read(&*self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(
                    StoreError::new(format!("cannot read {}", self.path.display())).with_source(e),
                )
            }
        };
        match codec::decode(&bytes, key, self.encryption.as_ref(), SystemTime::now()) {
            Ok(stored) => Ok(Some(stored)),
            Err(reason) => {
                tracing::info!(path = %self.path.display(), %reason, "ignoring the stored token");
                Ok(None)
            }
        }
    }

    fn write(&self, key: &str, stored: &StoredToken) -> Result<(), StoreError> {
        let fail = |what: &str, e: std::io::Error| {
            StoreError::new(format!("cannot {what} {}", self.path.display())).with_source(e)
        };
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| fail("create the folder of", e))?;
        let tmp = dir.join(format!(
            ".{}.{:016x}.tmp",
            self.path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("token"),
            fastrand::u64(..)
        ));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let result = (|| {
            let mut file = options.open(&tmp)?;
            file.write_all(&codec::encode(stored, key, self.encryption.as_ref()))?;
            file.sync_all()?;
            std::fs::rename(&tmp, &*self.path)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(fail("write", e));
        }
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::new("the file store's task failed").with_source(e))?
}

impl TokenStore for FileStore {
    fn load<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<StoredToken>> {
        let (this, key) = (self.clone(), key.to_owned());
        Box::pin(blocking(move || this.read(&key)))
    }

    fn lock<'a>(&'a self, _key: &'a str, _ttl: Duration) -> StoreFuture<'a, Option<Lease>> {
        Box::pin(async { Ok(Some(Lease::random())) })
    }

    fn save<'a>(
        &'a self,
        key: &'a str,
        token: &'a StoredToken,
        _lease: &'a Lease,
    ) -> StoreFuture<'a, bool> {
        let (this, key, token) = (self.clone(), key.to_owned(), token.clone());
        Box::pin(blocking(move || this.write(&key, &token).map(|()| true)))
    }

    fn unlock<'a>(&'a self, _key: &'a str, _lease: &'a Lease) -> StoreFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    fn name(&self) -> &'static str {
        "file"
    }
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .field("encrypted", &self.encryption.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Token;
    use secrecy::ExposeSecret;

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir()
            .join(format!(
                "wokelo-auth-test-{}-{:x}",
                std::process::id(),
                fastrand::u64(..)
            ))
            .join(name)
    }

    fn stored(id: u64) -> StoredToken {
        StoredToken::new(
            id,
            Token::new(format!("a{id}")),
            SystemTime::now() + Duration::from_secs(60),
        )
    }

    #[tokio::test]
    async fn saves_with_owner_only_permissions_and_loads_back() {
        let store = FileStore::new(temp_path("token.json"));
        assert!(store.load("k").await.unwrap().is_none());
        let lease = store
            .lock("k", Duration::from_secs(1))
            .await
            .unwrap()
            .unwrap();
        assert!(store.save("k", &stored(1), &lease).await.unwrap());
        assert!(store.save("k", &stored(2), &lease).await.unwrap());
        let back = store.load("k").await.unwrap().unwrap();
        assert_eq!(
            (back.id(), back.token().access_token().expose_secret()),
            (2, "a2")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(store.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers = std::fs::read_dir(store.path().parent().unwrap())
            .unwrap()
            .count();
        assert_eq!(leftovers, 1, "no temporary files left behind");
        assert!(store.load("another-account").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_corrupt_file_is_ignored() {
        let store = FileStore::new(temp_path("token.json"));
        std::fs::create_dir_all(store.path().parent().unwrap()).unwrap();
        std::fs::write(store.path(), b"\x00garbage").unwrap();
        assert!(store.load("k").await.unwrap().is_none());
    }
}
