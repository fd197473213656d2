//! The token a [`TokenSource`](crate::TokenSource) hands to the layer.

use std::{fmt, time::Duration};

use secrecy::SecretString;

/// An access token, with the refresh token and lifetime that came with it.
///
/// Both tokens are held as [`SecretString`]s: `Debug` shows neither, and
/// nothing in this crate logs them.
///
/// ```
/// use std::time::Duration;
/// use wokelo_auth::Token;
///
/// let token = Token::new("eyJhbGciOi...")
///     .with_refresh_token("r-123")
///     .with_expires_in(Duration::from_secs(3600));
/// assert!(!format!("{token:?}").contains("eyJ"));
/// ```
#[derive(Clone)]
pub struct Token {
    access_token: SecretString,
    refresh_token: Option<SecretString>,
    expires_in: Option<Duration>,
    scope: Option<String>,
}

impl Token {
    /// A token with no refresh token and no stated lifetime (the layer then
    /// assumes [`DEFAULT_LIFETIME`](crate::DEFAULT_LIFETIME)).
    pub fn new(access_token: impl Into<String>) -> Self {
        Self {
            access_token: SecretString::from(access_token.into()),
            refresh_token: None,
            expires_in: None,
            scope: None,
        }
    }

    /// Sets the refresh token that came with the access token.
    pub fn with_refresh_token(mut self, refresh_token: impl Into<String>) -> Self {
        self.refresh_token = Some(SecretString::from(refresh_token.into()));
        self
    }

    /// Sets the lifetime, counted from when the token was requested.
    pub fn with_expires_in(mut self, expires_in: Duration) -> Self {
        self.expires_in = Some(expires_in);
        self
    }

    /// Sets the granted scope.
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// The same token without its refresh token: for a fetch after one
    /// whose refresh may have been presented but whose answer was lost.
    pub(crate) fn without_refresh_token(&self) -> Self {
        Self {
            refresh_token: None,
            ..self.clone()
        }
    }

    /// The access token.
    pub fn access_token(&self) -> &SecretString {
        &self.access_token
    }

    /// The refresh token, if the source issued one.
    pub fn refresh_token(&self) -> Option<&SecretString> {
        self.refresh_token.as_ref()
    }

    /// The lifetime the source stated, if any.
    pub fn expires_in(&self) -> Option<Duration> {
        self.expires_in
    }

    /// The granted scope, if the source stated one.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &"[REDACTED]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn debug_redacts_both_tokens() {
        let t = Token::new("access-secret-1").with_refresh_token("refresh-secret-2");
        let s = format!("{t:?}");
        assert!(!s.contains("access-secret-1"), "{s}");
        assert!(!s.contains("refresh-secret-2"), "{s}");
        assert!(s.contains("[REDACTED]"));
    }

    #[test]
    fn accessors_return_what_was_set() {
        let t = Token::new("a")
            .with_refresh_token("r")
            .with_expires_in(Duration::from_secs(5))
            .with_scope("read write");
        assert_eq!(t.access_token().expose_secret(), "a");
        assert_eq!(t.refresh_token().unwrap().expose_secret(), "r");
        assert_eq!(t.expires_in(), Some(Duration::from_secs(5)));
        assert_eq!(t.scope(), Some("read write"));
    }
}
