//! How a [`StoredToken`] is written: JSON naming its key, optionally sealed
//! with XChaCha20-Poly1305 (the key name bound in as associated data), and
//! every reason a stored entry is not trusted.

use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::StoredToken;
use crate::Token;

/// Marks a sealed entry.
const SEALED: &[u8] = b"WKA1";

#[derive(Serialize, Deserialize)]
struct Record<'a> {
    v: u8,
    key: &'a str,
    id: u64,
    access_token: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    expires_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
}

/// A 256-bit key that seals stored tokens at rest (XChaCha20-Poly1305).
///
/// With a key set, a store writes only sealed entries and ignores entries
/// that are not sealed with this key.
#[cfg(feature = "encryption")]
#[derive(Clone)]
pub struct EncryptionKey {
    cipher: chacha20poly1305::XChaCha20Poly1305,
}

/// Without the `encryption` feature there is no key to have.
#[cfg(not(feature = "encryption"))]
#[derive(Clone, Debug)]
pub(crate) enum EncryptionKey {}

#[cfg(feature = "encryption")]
impl EncryptionKey {
    /// A key from 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        use chacha20poly1305::KeyInit;
        Self {
            cipher: chacha20poly1305::XChaCha20Poly1305::new(&bytes.into()),
        }
    }

    /// A key from 64 hex digits, e.g. the output of `openssl rand -hex 32`.
    ///
    /// # Errors
    ///
    /// When `hex` is not 64 hex digits (the message does not repeat it).
    pub fn from_hex(hex: &str) -> Result<Self, crate::ConfigError> {
        let hex = hex.trim();
        let bad = || crate::ConfigError::new("an encryption key must be 64 hex digits (32 bytes)");
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self::from_bytes(bytes))
    }
}

#[cfg(feature = "encryption")]
impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey([REDACTED])")
    }
}

/// Why a stored entry was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rejected {
    Corrupt(String),
    OtherKey,
    /// The access token expired and there is no refresh token to renew it.
    Expired,
    /// The access token expired longer ago than the refresh-token lifetime.
    Stale,
    Sealed,
    NotSealed,
    Undecryptable,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Corrupt(why) => write!(f, "the entry is corrupt ({why})"),
            Self::OtherKey => f.write_str("the entry was written for another key"),
            Self::Expired => f.write_str("the entry has expired and has no refresh token"),
            Self::Stale => f.write_str(
                "the entry's access token expired longer ago than the refresh-token lifetime",
            ),
            Self::Sealed => {
                f.write_str("the entry is encrypted but no encryption key is configured")
            }
            Self::NotSealed => {
                f.write_str("the entry is not encrypted but an encryption key is configured")
            }
            Self::Undecryptable => f.write_str(
                "the entry cannot be decrypted (another encryption key, or moved from another key)",
            ),
        }
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(u128::from(u64::MAX)) as u64)
}

/// Serializes (and seals, with a key) `stored` for `key`.
pub(crate) fn encode(
    stored: &StoredToken,
    key: &str,
    encryption: Option<&EncryptionKey>,
) -> Vec<u8> {
    let record = Record {
        v: 1,
        key,
        id: stored.id,
        access_token: stored.token.access_token().expose_secret(),
        refresh_token: stored
            .token
            .refresh_token()
            .map(ExposeSecret::expose_secret),
        expires_at_ms: millis(stored.expires_at),
        scope: stored.token.scope(),
    };
    let json = serde_json::to_vec(&record).expect("a record of strings and numbers serializes");
    match encryption {
        None => json,
        Some(k) => seal(k, key, &json),
    }
}

#[cfg(feature = "encryption")]
fn seal(k: &EncryptionKey, key: &str, plain: &[u8]) -> Vec<u8> {
    use chacha20poly1305::aead::{Aead, Payload};
    let nonce: [u8; 24] = std::array::from_fn(|_| fastrand::u8(..));
    let sealed = k
        .cipher
        .encrypt(
            &nonce.into(),
            Payload {
                msg: plain,
                aad: key.as_bytes(),
            },
        )
        .expect("XChaCha20-Poly1305 encrypts any message that fits in memory");
    [SEALED, &nonce, &sealed].concat()
}

#[cfg(not(feature = "encryption"))]
fn seal(k: &EncryptionKey, _key: &str, _plain: &[u8]) -> Vec<u8> {
    match *k {}
}

#[cfg(feature = "encryption")]
fn open(k: &EncryptionKey, key: &str, sealed: &[u8]) -> Option<Vec<u8>> {
    use chacha20poly1305::aead::{Aead, Payload};
    let (nonce, body) = sealed.split_at_checked(24)?;
    let nonce: [u8; 24] = nonce.try_into().ok()?;
    k.cipher
        .decrypt(
            &nonce.into(),
            Payload {
                msg: body,
                aad: key.as_bytes(),
            },
        )
        .ok()
}

#[cfg(not(feature = "encryption"))]
fn open(k: &EncryptionKey, _key: &str, _sealed: &[u8]) -> Option<Vec<u8>> {
    match *k {}
}

/// How far ahead of `now` a stored expiry may lie: the longest lifetime the
/// cache believes, plus a day for clocks that disagree between processes.
/// Anything later was not written by this crate.
const MAX_AHEAD: Duration = Duration::from_secs(crate::MAX_LIFETIME.as_secs() + 24 * 60 * 60);

/// Reads an entry for `key`, refusing anything that cannot be trusted. An
/// entry whose access token expired is kept while it has a refresh token and
/// expired less than `refresh_token_lifetime` ago.
pub(crate) fn decode(
    bytes: &[u8],
    key: &str,
    encryption: Option<&EncryptionKey>,
    now: SystemTime,
    refresh_token_lifetime: Duration,
) -> Result<StoredToken, Rejected> {
    let plain;
    let json = match (bytes.strip_prefix(SEALED), encryption) {
        (Some(_), None) => return Err(Rejected::Sealed),
        (None, Some(_)) => return Err(Rejected::NotSealed),
        (Some(sealed), Some(k)) => {
            plain = open(k, key, sealed).ok_or(Rejected::Undecryptable)?;
            &plain[..]
        }
        (None, None) => bytes,
    };
    let record: Record<'_> = serde_json::from_slice(json)
        .map_err(|e| Rejected::Corrupt(format!("{:?} error", e.classify())))?;
    if record.v != 1 {
        return Err(Rejected::Corrupt(format!("unknown version {}", record.v)));
    }
    if record.key != key {
        return Err(Rejected::OtherKey);
    }
    if record.access_token.is_empty() {
        return Err(Rejected::Corrupt("empty access token".into()));
    }
    let expires_at = expiry(record.expires_at_ms, now)?;
    if expires_at <= now {
        if record.refresh_token.is_none_or(str::is_empty) {
            return Err(Rejected::Expired);
        }
        // An end past the clock's range is no end.
        if expires_at
            .checked_add(refresh_token_lifetime)
            .is_some_and(|end| end <= now)
        {
            return Err(Rejected::Stale);
        }
    }
    let mut token = Token::new(record.access_token);
    if let Some(r) = record.refresh_token {
        token = token.with_refresh_token(r);
    }
    if let Some(s) = record.scope {
        token = token.with_scope(s);
    }
    Ok(StoredToken::new(record.id, token, expires_at))
}

/// The stored expiry, `ms` after the Unix epoch, refused when it is past the
/// clock's range (a corrupt or hostile entry may hold `u64::MAX`) or further
/// ahead of `now` than any token lives.
fn expiry(ms: u64, now: SystemTime) -> Result<SystemTime, Rejected> {
    let out_of_range = || Rejected::Corrupt(format!("expiry {ms} ms after 1970 is out of range"));
    let expires_at = UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .ok_or_else(out_of_range)?;
    match now.checked_add(MAX_AHEAD) {
        Some(limit) if expires_at > limit => Err(out_of_range()),
        _ => Ok(expires_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: Duration = Duration::from_secs(600);

    fn stored() -> StoredToken {
        StoredToken::new(
            7,
            Token::new("acc")
                .with_refresh_token("ref")
                .with_scope("read"),
            SystemTime::now() + Duration::from_secs(60),
        )
    }

    #[test]
    fn round_trips_plain() {
        let bytes = encode(&stored(), "k", None);
        let back = decode(&bytes, "k", None, SystemTime::now(), KEEP).unwrap();
        assert_eq!(back.id, 7);
        assert_eq!(back.token.access_token().expose_secret(), "acc");
        assert_eq!(back.token.refresh_token().unwrap().expose_secret(), "ref");
        assert_eq!(back.token.scope(), Some("read"));
    }

    #[test]
    fn refuses_other_key_and_corrupt() {
        let bytes = encode(&stored(), "k", None);
        assert_eq!(
            decode(&bytes, "other", None, SystemTime::now(), KEEP).err(),
            Some(Rejected::OtherKey)
        );
        assert!(matches!(
            decode(b"{not json", "k", None, SystemTime::now(), KEEP),
            Err(Rejected::Corrupt(_))
        ));
    }

    #[test]
    fn an_expired_access_token_keeps_its_refresh_token_for_the_refresh_token_lifetime() {
        let bytes = encode(&stored(), "k", None);
        let expired = SystemTime::now() + Duration::from_secs(120);
        let back = decode(&bytes, "k", None, expired, KEEP).unwrap();
        assert_eq!(back.token.refresh_token().unwrap().expose_secret(), "ref");
        assert!(back.expires_at() < expired);
        let past_lifetime = SystemTime::now() + Duration::from_secs(60 + 601);
        assert_eq!(
            decode(&bytes, "k", None, past_lifetime, KEEP).err(),
            Some(Rejected::Stale)
        );
        // A lifetime past the clock's range keeps the entry, without overflow.
        assert!(decode(&bytes, "k", None, past_lifetime, Duration::MAX).is_ok());

        let no_refresh = StoredToken::new(1, Token::new("acc"), SystemTime::now());
        let bytes = encode(&no_refresh, "k", None);
        assert_eq!(
            decode(&bytes, "k", None, expired, KEEP).err(),
            Some(Rejected::Expired)
        );
    }

    fn with_expiry(ms: u64) -> Vec<u8> {
        format!(r#"{{"v":1,"key":"k","id":1,"access_token":"a","refresh_token":"r","expires_at_ms":{ms}}}"#)
            .into_bytes()
    }

    #[test]
    fn an_expiry_past_the_clock_or_beyond_any_lifetime_is_corrupt_not_a_panic() {
        let now = SystemTime::now();
        for ms in [u64::MAX, u64::MAX / 2, millis(now + MAX_AHEAD) + 60_000] {
            let e = decode(&with_expiry(ms), "k", None, now, KEEP).unwrap_err();
            assert!(
                matches!(&e, Rejected::Corrupt(why) if why.contains("out of range")),
                "{ms}: {e}"
            );
        }
        let year = millis(now + crate::MAX_LIFETIME);
        assert!(decode(&with_expiry(year), "k", None, now, KEEP).is_ok());
        // Near the end of the clock's range nothing overflows either.
        let far = UNIX_EPOCH + Duration::from_secs(10_000 * 365 * 24 * 60 * 60);
        assert!(decode(&with_expiry(0), "k", None, far, Duration::MAX).is_ok());
        assert_eq!(
            decode(&with_expiry(0), "k", None, far, KEEP).err(),
            Some(Rejected::Stale)
        );
    }

    #[cfg(feature = "encryption")]
    #[test]
    fn sealed_entries_need_the_right_key_and_key_name() {
        let k1 = EncryptionKey::from_bytes([1; 32]);
        let k2 = EncryptionKey::from_bytes([2; 32]);
        let bytes = encode(&stored(), "k", Some(&k1));
        assert!(
            !bytes.windows(3).any(|w| w == b"acc"),
            "the token is not in the clear"
        );
        let now = SystemTime::now();
        assert_eq!(decode(&bytes, "k", Some(&k1), now, KEEP).unwrap().id, 7);
        assert_eq!(
            decode(&bytes, "k", Some(&k2), now, KEEP).err(),
            Some(Rejected::Undecryptable)
        );
        assert_eq!(
            decode(&bytes, "moved", Some(&k1), now, KEEP).err(),
            Some(Rejected::Undecryptable)
        );
        assert_eq!(
            decode(&bytes, "k", None, now, KEEP).err(),
            Some(Rejected::Sealed)
        );
        let plain = encode(&stored(), "k", None);
        assert_eq!(
            decode(&plain, "k", Some(&k1), now, KEEP).err(),
            Some(Rejected::NotSealed)
        );
    }

    #[cfg(feature = "encryption")]
    #[test]
    fn hex_keys() {
        assert!(EncryptionKey::from_hex(&"ab".repeat(32)).is_ok());
        let e = EncryptionKey::from_hex("abc").unwrap_err();
        assert!(e.to_string().contains("64 hex digits"));
        assert!(EncryptionKey::from_hex(&"zz".repeat(32)).is_err());
        assert_eq!(
            format!("{:?}", EncryptionKey::from_bytes([9; 32])),
            "EncryptionKey([REDACTED])"
        );
    }
}
