use std::fmt;

use super::{TokenFuture, TokenSource};
use crate::Token;

/// A token you already have, handed out as it is.
///
/// After a `401` the layer asks it again and gets the same token, so the retry
/// fails the same way and the `401` reaches the caller: use this for tokens
/// that do not expire, or for tests.
#[derive(Clone)]
pub struct StaticToken {
    token: Token,
}

impl StaticToken {
    /// A source that always hands out `token`.
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: Token::new(token),
        }
    }

    /// A source that always hands out `token`, with its stated lifetime.
    pub fn from_token(token: Token) -> Self {
        Self { token }
    }
}

impl TokenSource for StaticToken {
    fn fetch(&self, _current: Option<&Token>) -> TokenFuture {
        let token = self.token.clone();
        Box::pin(async move { Ok(token) })
    }

    fn name(&self) -> &'static str {
        "static"
    }
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticToken")
            .field("token", &self.token)
            .finish()
    }
}
