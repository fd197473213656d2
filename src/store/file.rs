use std::{
    ffi::OsString,
    fmt,
    fs::File,
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use super::{
    codec::{self, EncryptionKey},
    Lease, StoreError, StoreFuture, StoredToken, TokenStore, DEFAULT_REFRESH_TOKEN_LIFETIME,
};

/// Keeps the token in a file, so that a command-line tool logs in once and
/// reuses the token across runs, and processes on one machine share it.
///
/// - The file is created with mode `0600` (owner only) and replaced
///   atomically (written beside it, then renamed): a reader sees the old
///   token or the new one, never part of one.
/// - The refresh lock is an exclusive OS lock (`flock` on Unix, `LockFileEx`
///   on Windows) on the file `<path>.lock` beside it, taken without waiting.
///   It is held until [`unlock`](TokenStore::unlock), until the
///   [`Lease`] is dropped, or until the process exits or dies, whichever
///   comes first; the lock's `ttl` is not needed for that. The token is
///   written only under it, so processes that share the file refresh one at
///   a time (with rotating refresh tokens, two refreshes with one refresh
///   token would get `invalid_grant`) and none overwrites another's newer
///   token. The lock file stays (removing it would let two processes lock
///   two different files).
/// - An entry whose access token expired is still loaded while it has a
///   refresh token, for [`DEFAULT_REFRESH_TOKEN_LIFETIME`] by default (see
///   [`with_refresh_token_lifetime`](Self::with_refresh_token_lifetime)),
///   so that the next fetch refreshes rather than logs in.
/// - A file that is corrupt, written for another account, or expired with
///   no refresh token is ignored with a logged reason. It holds one account.
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
    lock_path: Arc<PathBuf>,
    encryption: Option<EncryptionKey>,
    refresh_token_lifetime: Duration,
}

/// A [`FileStore`]'s refresh lock, held while `file` is `Some` (see
/// [`Lease`]).
pub(crate) struct FileLock {
    lock_path: Arc<PathBuf>,
    file: Mutex<Option<File>>,
}

impl FileLock {
    /// Releases the OS lock now, even if clones of the lease live on.
    fn release(&self) {
        let file = self
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(file) = file {
            // Closing the file releases the lock too; unlocking first makes
            // it prompt on Windows. Called as a trait function: std's
            // `File::unlock` (Rust 1.89) is newer than this crate's MSRV.
            if let Err(e) = fs4::FileExt::unlock(&file) {
                tracing::debug!(path = %self.lock_path.display(), error = %e, "unlocking the token file lock failed; closing it releases it");
            }
        }
    }
}

impl FileStore {
    /// A store in the file at `path` (created on first save), locked
    /// through `<path>.lock`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let mut lock_path = OsString::from(path.as_os_str());
        lock_path.push(".lock");
        Self {
            path: Arc::new(path),
            lock_path: Arc::new(lock_path.into()),
            encryption: None,
            refresh_token_lifetime: DEFAULT_REFRESH_TOKEN_LIFETIME,
        }
    }

    /// How long an entry whose access token expired is still loaded for its
    /// refresh token (default [`DEFAULT_REFRESH_TOKEN_LIFETIME`]); zero
    /// ignores expired entries. Longer than the server keeps refresh tokens
    /// costs one refused refresh grant before a login.
    pub fn with_refresh_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.refresh_token_lifetime = lifetime;
        self
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

    /// The path of the refresh lock's file, `<path>.lock`.
    pub fn lock_path(&self) -> &Path {
        &self.lock_path
    }

    /// The folder the file is in, created if missing.
    fn folder(&self) -> Result<&Path, StoreError> {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::new(format!(
                "cannot create the folder of {}",
                self.path.display()
            ))
            .with_source(e)
        })?;
        Ok(dir)
    }

    /// Takes the OS lock on `<path>.lock` if no one holds it.
    fn try_lock(&self) -> Result<Option<Lease>, StoreError> {
        let fail = |e: std::io::Error| {
            StoreError::new(format!("cannot lock {}", self.lock_path.display())).with_source(e)
        };
        self.folder()?;
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&*self.lock_path).map_err(fail)?;
        // A trait function, not a method: std's `File::try_lock` (Rust 1.89)
        // would be picked first and is newer than this crate's MSRV.
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => return Ok(None),
            Err(fs4::TryLockError::Error(e)) => return Err(fail(e)),
        }
        let mut lease = Lease::random();
        lease.file = Some(Arc::new(FileLock {
            lock_path: self.lock_path.clone(),
            file: Mutex::new(Some(file)),
        }));
        Ok(Some(lease))
    }

    /// Writes `stored` if `lease` holds this file's lock; the lock stays
    /// held (not released by another thread) while the file is written.
    fn save_locked(
        &self,
        key: &str,
        stored: &StoredToken,
        lease: &Lease,
    ) -> Result<bool, StoreError> {
        let Some(lock) = lease
            .file
            .as_ref()
            .filter(|l| l.lock_path == self.lock_path)
        else {
            return Ok(false);
        };
        let held = lock.file.lock().unwrap_or_else(PoisonError::into_inner);
        if held.is_none() {
            return Ok(false);
        }
        self.write(key, stored)?;
        Ok(true)
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
        match codec::decode(
            &bytes,
            key,
            self.encryption.as_ref(),
            SystemTime::now(),
            self.refresh_token_lifetime,
        ) {
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
        let dir = self.folder()?;
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
        // The rename itself survives a crash once the folder is synced.
        #[cfg(unix)]
        if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
            tracing::debug!(path = %self.path.display(), error = %e, "cannot sync the token file's folder");
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

    /// Takes the OS lock on `<path>.lock`; `ttl` is not used: the OS
    /// releases the lock of a process that exits.
    fn lock<'a>(&'a self, _key: &'a str, _ttl: Duration) -> StoreFuture<'a, Option<Lease>> {
        let this = self.clone();
        Box::pin(blocking(move || this.try_lock()))
    }

    fn save<'a>(
        &'a self,
        key: &'a str,
        token: &'a StoredToken,
        lease: &'a Lease,
    ) -> StoreFuture<'a, bool> {
        let (this, key, token, lease) =
            (self.clone(), key.to_owned(), token.clone(), lease.clone());
        Box::pin(blocking(move || this.save_locked(&key, &token, &lease)))
    }

    fn unlock<'a>(&'a self, _key: &'a str, lease: &'a Lease) -> StoreFuture<'a, ()> {
        let lock = lease.file.clone().filter(|l| l.lock_path == self.lock_path);
        // Blocking: it waits for a write under the lock to finish.
        Box::pin(blocking(move || {
            if let Some(lock) = lock {
                lock.release();
            }
            Ok(())
        }))
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
            .field("refresh_token_lifetime", &self.refresh_token_lifetime)
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
        let mut files: Vec<_> = std::fs::read_dir(store.path().parent().unwrap())
            .unwrap()
            .map(|f| f.unwrap().file_name())
            .collect();
        files.sort();
        assert_eq!(
            files,
            ["token.json", "token.json.lock"],
            "no temporary files left behind"
        );
        assert!(store.load("another-account").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_corrupt_file_is_ignored() {
        let store = FileStore::new(temp_path("token.json"));
        std::fs::create_dir_all(store.path().parent().unwrap()).unwrap();
        std::fs::write(store.path(), b"\x00garbage").unwrap();
        assert!(store.load("k").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn the_lock_is_exclusive_until_unlocked_or_dropped_and_fences_saves() {
        let path = temp_path("token.json");
        // Two stores on one file, as two processes have: each opens the lock
        // file itself, and OS locks on two open files exclude each other.
        let (a, b) = (FileStore::new(&path), FileStore::new(&path));
        let ttl = Duration::from_secs(1);
        let lease = a.lock("k", ttl).await.unwrap().expect("free");
        assert!(b.lock("k", ttl).await.unwrap().is_none(), "held by a");
        assert!(a.lock("k", ttl).await.unwrap().is_none(), "not reentrant");

        // Only the holder's lease writes.
        assert!(!b.save("k", &stored(1), &Lease::random()).await.unwrap());
        assert!(b.load("k").await.unwrap().is_none());
        assert!(b.save("k", &stored(2), &lease).await.unwrap());
        assert_eq!(b.load("k").await.unwrap().unwrap().id(), 2);

        // Unlocked while a clone of the lease lives on: released all the same,
        // and the lease no longer writes.
        let clone = lease.clone();
        a.unlock("k", &lease).await.unwrap();
        assert!(!a.save("k", &stored(3), &clone).await.unwrap());
        let lease_b = b.lock("k", ttl).await.unwrap().expect("released");

        // A lease for another file does not unlock or write this one.
        let other = FileStore::new(temp_path("token.json"));
        let other_lease = other.lock("k", ttl).await.unwrap().unwrap();
        assert!(!a.save("k", &stored(4), &other_lease).await.unwrap());
        a.unlock("k", &other_lease).await.unwrap();
        assert!(a.lock("k", ttl).await.unwrap().is_none());

        // A dropped lease releases the lock.
        drop(lease_b);
        assert!(a.lock("k", ttl).await.unwrap().is_some());
        assert_eq!(a.load("k").await.unwrap().unwrap().id(), 2);
    }

    #[tokio::test]
    async fn an_expired_access_token_is_loaded_for_its_refresh_token_until_its_lifetime() {
        let store = FileStore::new(temp_path("token.json"));
        let lease = store.lock("k", Duration::ZERO).await.unwrap().unwrap();
        let expired = StoredToken::new(
            1,
            Token::new("a").with_refresh_token("r"),
            SystemTime::now() - Duration::from_secs(3600),
        );
        assert!(store.save("k", &expired, &lease).await.unwrap());
        let back = store
            .load("k")
            .await
            .unwrap()
            .expect("kept for the refresh token");
        assert_eq!(back.remaining(), Duration::ZERO);
        assert_eq!(back.token().refresh_token().unwrap().expose_secret(), "r");

        let shorter = store
            .clone()
            .with_refresh_token_lifetime(Duration::from_secs(60));
        assert!(
            shorter.load("k").await.unwrap().is_none(),
            "past its lifetime"
        );
    }

    #[tokio::test]
    async fn an_expiry_out_of_range_is_ignored_not_a_panic() {
        let store = FileStore::new(temp_path("token.json"));
        std::fs::create_dir_all(store.path().parent().unwrap()).unwrap();
        for ms in [u64::MAX, u64::MAX / 1000] {
            std::fs::write(
                store.path(),
                format!(r#"{{"v":1,"key":"k","id":1,"access_token":"a","refresh_token":"r","expires_at_ms":{ms}}}"#),
            )
            .unwrap();
            assert!(store.load("k").await.unwrap().is_none(), "{ms}");
        }
    }
}
