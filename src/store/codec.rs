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
    Expired,
    Sealed,
    NotSealed,
    Undecryptable,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Corrupt(why) => write!(f, "the entry is corrupt ({why})"),
            Self::OtherKey => f.write_str("the entry was written for another key"),
            Self::Expired => f.write_str("the entry has expired"),
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

/// Reads an entry for `key`, refusing anything that cannot be trusted.
pub(crate) fn decode(
    bytes: &[u8],
    key: &str,
    encryption: Option<&EncryptionKey>,
    now: SystemTime,
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
    let expires_at = UNIX_EPOCH + Duration::from_millis(record.expires_at_ms);
    if expires_at <= now {
        return Err(Rejected::Expired);
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let back = decode(&bytes, "k", None, SystemTime::now()).unwrap();
        assert_eq!(back.id, 7);
        assert_eq!(back.token.access_token().expose_secret(), "acc");
        assert_eq!(back.token.refresh_token().unwrap().expose_secret(), "ref");
        assert_eq!(back.token.scope(), Some("read"));
    }

    #[test]
    fn refuses_other_key_expired_and_corrupt() {
        let bytes = encode(&stored(), "k", None);
        assert_eq!(
            decode(&bytes, "other", None, SystemTime::now()).err(),
            Some(Rejected::OtherKey)
        );
        let later = SystemTime::now() + Duration::from_secs(120);
        assert_eq!(
            decode(&bytes, "k", None, later).err(),
            Some(Rejected::Expired)
        );
        assert!(matches!(
            decode(b"{not json", "k", None, SystemTime::now()),
            Err(Rejected::Corrupt(_))
        ));
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
        assert_eq!(decode(&bytes, "k", Some(&k1), now).unwrap().id, 7);
        assert_eq!(
            decode(&bytes, "k", Some(&k2), now).err(),
            Some(Rejected::Undecryptable)
        );
        assert_eq!(
            decode(&bytes, "moved", Some(&k1), now).err(),
            Some(Rejected::Undecryptable)
        );
        assert_eq!(decode(&bytes, "k", None, now).err(), Some(Rejected::Sealed));
        let plain = encode(&stored(), "k", None);
        assert_eq!(
            decode(&plain, "k", Some(&k1), now).err(),
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
