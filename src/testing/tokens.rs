//! The token store: access and refresh tokens, their families, rotation,
//! reuse detection, expiry and revocation.
//!
//! A *family* is everything descending from one password grant: the first
//! access/refresh pair and every pair a refresh rotated it into. Reuse protection
//! revokes a family as a whole, like django-oauth-toolkit's
//! `REFRESH_TOKEN_REUSE_PROTECTION`.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// Length of minted tokens, in URL-safe characters.
const TOKEN_LEN: usize = 40;

const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A fresh random opaque token.
pub(crate) fn random_token() -> String {
    (0..TOKEN_LEN)
        .map(|_| char::from(URL_SAFE[fastrand::usize(..URL_SAFE.len())]))
        .collect()
}

#[derive(Debug, Default)]
pub(crate) struct TokenStore {
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshToken>,
    next_family: u64,
}

#[derive(Debug)]
struct AccessToken {
    family: u64,
    expires_at: Instant,
    revoked: bool,
}

#[derive(Debug)]
struct RefreshToken {
    family: u64,
    /// The access token issued together with this refresh token; a refresh
    /// revokes it, as django-oauth-toolkit does.
    access_token: String,
    state: RefreshState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RefreshState {
    Active,
    /// Rotated away by a successful refresh.
    Used,
    Revoked,
}

/// A freshly minted token pair.
#[derive(Debug)]
pub(crate) struct Issued {
    pub(crate) access_token: String,
    pub(crate) refresh_token: Option<String>,
}

/// What presenting an access token finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AccessCheck {
    Valid,
    Expired,
    /// Unknown or revoked.
    Invalid,
}

/// What presenting a refresh token finds.
#[derive(Debug)]
pub(crate) enum RefreshOutcome {
    Rotated(Issued),
    /// Unknown, revoked, or already used.
    Rejected,
}

impl TokenStore {
    /// Mints a pair for a new family (a password grant or a direct mint).
    pub(crate) fn login(&mut self, lifetime: Duration, with_refresh: bool) -> Issued {
        let family = self.next_family;
        self.next_family += 1;
        self.mint(family, lifetime, with_refresh)
    }

    /// Rotates `refresh_token`: on success the old refresh token is marked used
    /// and the access token issued with it is revoked.
    pub(crate) fn refresh(
        &mut self,
        refresh_token: &str,
        lifetime: Duration,
        reuse_protection: bool,
    ) -> RefreshOutcome {
        let Some(entry) = self.refresh.get_mut(refresh_token) else {
            return RefreshOutcome::Rejected;
        };
        match entry.state {
            RefreshState::Active => {
                entry.state = RefreshState::Used;
                let family = entry.family;
                let old_access = entry.access_token.clone();
                if let Some(access) = self.access.get_mut(&old_access) {
                    access.revoked = true;
                }
                RefreshOutcome::Rotated(self.mint(family, lifetime, true))
            }
            RefreshState::Used => {
                if reuse_protection {
                    let family = entry.family;
                    self.revoke_family(family);
                }
                RefreshOutcome::Rejected
            }
            RefreshState::Revoked => RefreshOutcome::Rejected,
        }
    }

    pub(crate) fn check(&self, access_token: &str, now: Instant) -> AccessCheck {
        match self.access.get(access_token) {
            None => AccessCheck::Invalid,
            Some(token) if token.revoked => AccessCheck::Invalid,
            Some(token) if now >= token.expires_at => AccessCheck::Expired,
            Some(_) => AccessCheck::Valid,
        }
    }

    /// Revokes every access and refresh token ever issued.
    pub(crate) fn revoke_all(&mut self) {
        for token in self.access.values_mut() {
            token.revoked = true;
        }
        for token in self.refresh.values_mut() {
            token.state = RefreshState::Revoked;
        }
    }

    fn revoke_family(&mut self, family: u64) {
        for token in self.access.values_mut().filter(|t| t.family == family) {
            token.revoked = true;
        }
        for token in self.refresh.values_mut().filter(|t| t.family == family) {
            token.state = RefreshState::Revoked;
        }
    }

    fn mint(&mut self, family: u64, lifetime: Duration, with_refresh: bool) -> Issued {
        let access_token = random_token();
        self.access.insert(
            access_token.clone(),
            AccessToken {
                family,
                expires_at: Instant::now() + lifetime,
                revoked: false,
            },
        );
        let refresh_token = with_refresh.then(|| {
            let refresh_token = random_token();
            self.refresh.insert(
                refresh_token.clone(),
                RefreshToken {
                    family,
                    access_token: access_token.clone(),
                    state: RefreshState::Active,
                },
            );
            refresh_token
        });
        Issued {
            access_token,
            refresh_token,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn rotate(store: &mut TokenStore, refresh: &str, protect: bool) -> Option<Issued> {
        match store.refresh(refresh, HOUR, protect) {
            RefreshOutcome::Rotated(issued) => Some(issued),
            RefreshOutcome::Rejected => None,
        }
    }

    #[test]
    fn tokens_are_url_safe_and_distinct() {
        let a = random_token();
        let b = random_token();
        assert_eq!(a.len(), TOKEN_LEN);
        assert!(a.bytes().all(|c| URL_SAFE.contains(&c)));
        assert_ne!(a, b);
    }

    #[test]
    fn refresh_rotates_and_revokes_the_old_pair() {
        let mut store = TokenStore::default();
        let first = store.login(HOUR, true);
        let r1 = first.refresh_token.clone().unwrap();
        let second = rotate(&mut store, &r1, false).expect("first refresh succeeds");
        let now = Instant::now();
        assert_eq!(store.check(&first.access_token, now), AccessCheck::Invalid);
        assert_eq!(store.check(&second.access_token, now), AccessCheck::Valid);
        assert!(
            rotate(&mut store, &r1, false).is_none(),
            "used token rejected"
        );
        // Without reuse protection the family survives the reuse attempt.
        assert_eq!(store.check(&second.access_token, now), AccessCheck::Valid);
        let r2 = second.refresh_token.unwrap();
        assert!(rotate(&mut store, &r2, false).is_some());
    }

    #[test]
    fn reuse_protection_revokes_the_family_only() {
        let mut store = TokenStore::default();
        let other = store.login(HOUR, true);
        let first = store.login(HOUR, true);
        let r1 = first.refresh_token.unwrap();
        let second = rotate(&mut store, &r1, true).unwrap();
        assert!(rotate(&mut store, &r1, true).is_none());
        let now = Instant::now();
        assert_eq!(store.check(&second.access_token, now), AccessCheck::Invalid);
        assert!(rotate(&mut store, &second.refresh_token.unwrap(), true).is_none());
        assert_eq!(store.check(&other.access_token, now), AccessCheck::Valid);
        assert!(rotate(&mut store, &other.refresh_token.unwrap(), true).is_some());
    }

    #[test]
    fn expiry_and_revoke_all() {
        let mut store = TokenStore::default();
        let issued = store.login(Duration::from_secs(1), true);
        let now = Instant::now();
        assert_eq!(store.check(&issued.access_token, now), AccessCheck::Valid);
        let later = now + Duration::from_secs(2);
        assert_eq!(
            store.check(&issued.access_token, later),
            AccessCheck::Expired
        );
        assert_eq!(store.check("nope", now), AccessCheck::Invalid);
        store.revoke_all();
        assert_eq!(store.check(&issued.access_token, now), AccessCheck::Invalid);
        assert!(rotate(&mut store, &issued.refresh_token.unwrap(), false).is_none());
    }
}
