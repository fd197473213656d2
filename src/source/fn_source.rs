use std::{fmt, future::Future};

use super::{TokenFuture, TokenSource};
use crate::{ApiBase, Token, TokenError};

/// Makes a [`TokenSource`] from a closure returning a future.
///
/// The closure gets the current token (see [`TokenSource::fetch`]) and must
/// return a `'static` future, so clone out of it what the future needs.
///
/// The layer attaches the token only to requests for the API origin, which
/// for this source is `https://api.wokelo.ai` unless you set another with
/// [`TokenSourceFn::with_api_base`] (or the layer builder's `api_base`):
/// requests to any other host pass through without a token.
///
/// ```
/// use wokelo_auth::{token_source_fn, Token, TokenError, TokenErrorKind};
///
/// let source = token_source_fn(|_current: Option<&Token>| async {
///     let token = std::env::var("MY_WOKELO_TOKEN").map_err(|_| {
///         TokenError::new(TokenErrorKind::Configuration, "set MY_WOKELO_TOKEN")
///     })?;
///     Ok(Token::new(token))
/// });
/// # let _ = source;
/// ```
pub fn token_source_fn<F, Fut>(f: F) -> TokenSourceFn<F>
where
    F: Fn(Option<&Token>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Token, TokenError>> + Send + 'static,
{
    TokenSourceFn { f, api_base: None }
}

/// A [`TokenSource`] made from a closure by [`token_source_fn`].
#[derive(Clone)]
pub struct TokenSourceFn<F> {
    f: F,
    api_base: Option<ApiBase>,
}

impl<F> TokenSourceFn<F> {
    /// Sets the API base URL the tokens are for (see [`TokenSource::api_base`]).
    pub fn with_api_base(mut self, base: ApiBase) -> Self {
        self.api_base = Some(base);
        self
    }
}

impl<F, Fut> TokenSource for TokenSourceFn<F>
where
    F: Fn(Option<&Token>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Token, TokenError>> + Send + 'static,
{
    fn fetch(&self, current: Option<&Token>) -> TokenFuture {
        Box::pin((self.f)(current))
    }

    fn api_base(&self) -> Option<&ApiBase> {
        self.api_base.as_ref()
    }

    fn name(&self) -> &'static str {
        "fn"
    }
}

impl<F> fmt::Debug for TokenSourceFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSourceFn")
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}
