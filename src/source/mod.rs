//! Where tokens come from: the [`TokenSource`] trait and the built-in sources.
//!
//! - [`PasswordGrant`]: Wokelo's `POST /auth/token/` password grant, with
//!   refresh-token rotation and fallback to the password grant.
//! - [`StaticToken`]: a token you already have.
//! - [`token_source_fn`]: any async closure, for a token from a file, a secrets
//!   manager or another service.

use std::{future::Future, pin::Pin, time::Duration};

use crate::{ApiBase, Token, TokenError};

mod credentials;
mod fn_source;
mod oauth_error;
mod password_grant;
pub(crate) mod scrub;
mod static_token;
pub(crate) mod token_response;

pub use credentials::Credentials;
pub use fn_source::{token_source_fn, TokenSourceFn};
pub use password_grant::{PasswordGrant, TokenRequestEncoding, MAX_TOKEN_RESPONSE_BYTES};
pub use static_token::StaticToken;

/// The longest wait a `Retry-After` header can ask for (60 s): longer values,
/// in seconds or as an HTTP-date, count as this long.
///
/// A server, or a proxy in front of it, may send any value, up to
/// `18446744073709551615` seconds or a date in the year 9999; honoured as
/// sent, one such header would stop all token fetches for good. 60 s is the
/// top of the backoff range Wokelo publishes (1 s to 60 s).
/// [`TokenError::retry_after`](crate::TokenError::retry_after) never exceeds it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The future a [`TokenSource`] returns: boxed, `Send` and `'static`, so that
/// implementations are a plain `Box::pin(async move { .. })` and the layer can
/// drive the fetch on its own task.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<Token, TokenError>> + Send + 'static>>;

/// A source of access tokens for [`WokeloAuthLayer`](crate::WokeloAuthLayer).
///
/// The layer calls [`fetch`](TokenSource::fetch) when it has no valid token:
/// on first use, before expiry (refresh-ahead) and after a `401`. It never
/// calls it twice at the same time, so a source that rotates refresh tokens
/// need not guard against concurrent refreshes. Transient failures
/// ([`TokenErrorKind::is_transient`](crate::TokenErrorKind::is_transient)) are
/// retried by the layer with backoff; the fetch is bounded by the layer's
/// timeout, so a source need not add one.
///
/// ```
/// use wokelo_auth::{Token, TokenError, TokenFuture, TokenSource};
///
/// struct FromVault;
///
/// impl TokenSource for FromVault {
///     fn fetch(&self, _current: Option<&Token>) -> TokenFuture {
///         Box::pin(async move { Ok(Token::new("token-from-vault")) })
///     }
/// }
/// ```
pub trait TokenSource: Send + Sync + 'static {
    /// Obtains a new token.
    ///
    /// `current` is the last token this source handed out, if any, even if it
    /// has expired or was refused with a `401`: a source uses its refresh
    /// token to renew it. The token it returns replaces `current` entirely, so
    /// a rotated refresh token must be part of it.
    fn fetch(&self, current: Option<&Token>) -> TokenFuture;

    /// The API base URL this source's tokens are for; the layer attaches the
    /// token only to requests for its origin. `None` (the default) leaves the
    /// choice to the layer, which falls back to
    /// [`DEFAULT_BASE_URL`](crate::DEFAULT_BASE_URL).
    fn api_base(&self) -> Option<&ApiBase> {
        None
    }

    /// The account these tokens belong to, for a shared
    /// [`TokenStore`](crate::store::TokenStore): sources with the same key
    /// share one stored token. `None` (the default) makes the layer use the
    /// API base URL and [`name`](TokenSource::name).
    fn store_key(&self) -> Option<String> {
        None
    }

    /// How many token requests this source sent, by grant, for
    /// [`AuthSnapshot::grants`](crate::AuthSnapshot::grants). `None` (the
    /// default) for a source that does not count them.
    fn grant_counts(&self) -> Option<GrantCounts> {
        None
    }

    /// A short name for logs and tracing, e.g. `"password_grant"`.
    fn name(&self) -> &'static str {
        "custom"
    }
}

/// How many token requests a source sent, by grant: the password grant (RFC
/// 6749 section 4.3) and the refresh-token grant (section 6), and how many
/// refresh tokens the server refused (each followed by a password grant).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GrantCounts {
    /// `grant_type=password` requests sent.
    pub password: u64,
    /// `grant_type=refresh_token` requests sent.
    pub refresh_token: u64,
    /// Refresh tokens the token endpoint refused.
    pub refresh_refused: u64,
}
