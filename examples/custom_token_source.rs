//! A token source of your own: a token read from a file, re-read on every
//! fetch, so that a token another process rotates (a sidecar, a cron job) is
//! picked up at the first `401`.
//!
//! ```sh
//! cargo run --example custom_token_source
//! WOKELO_TOKEN_FILE=/run/secrets/wokelo-token cargo run --example custom_token_source
//! ```
//!
//! With `WOKELO_TOKEN_FILE` set it calls the API at `WOKELO_BASE_URL` (default
//! `https://api.wokelo.ai`) with the token in that file. Without it, it starts
//! the embedded mock, writes a token the mock minted into a temporary file, and
//! shows a revocation: `401`, the file re-read, the call retried.
//!
//! Two ways to write the source: a closure with [`token_source_fn`], and the
//! [`TokenSource`] trait implemented on a type.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use tower::{ServiceBuilder, ServiceExt};
use wokelo_auth::{
    testing::MockServer, token_source_fn, ApiBase, BoxError, Token, TokenError, TokenErrorKind,
    TokenFuture, TokenSource, WokeloAuthLayer,
};

const SEARCH: &str = "/api/enterprise/company/search?query=stripe";

/// Reads the token in `path` (surrounding whitespace ignored).
async fn read_token_file(path: &Path) -> Result<Token, TokenError> {
    let text = tokio::fs::read_to_string(path).await.map_err(|e| {
        let message = format!("cannot read the token file {}", path.display());
        TokenError::new(TokenErrorKind::Configuration, message).with_source(e)
    })?;
    match text.trim() {
        "" => Err(TokenError::new(
            TokenErrorKind::InvalidResponse,
            format!("the token file {} is empty", path.display()),
        )),
        token => Ok(Token::new(token)),
    }
}

/// The same source as a type: a name of its own in the logs, and its API
/// base URL built in.
struct TokenFile {
    path: PathBuf,
    base: ApiBase,
}

impl TokenSource for TokenFile {
    fn fetch(&self, _current: Option<&Token>) -> TokenFuture {
        let path = self.path.clone();
        Box::pin(async move { read_token_file(&path).await })
    }

    fn api_base(&self) -> Option<&ApiBase> {
        Some(&self.base)
    }

    fn name(&self) -> &'static str {
        "token_file"
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    support::init_logging();
    let (path, base, server) = match std::env::var_os("WOKELO_TOKEN_FILE") {
        Some(path) => {
            let base = std::env::var("WOKELO_BASE_URL").unwrap_or_default();
            let base = match base.trim() {
                "" => ApiBase::default(),
                url => ApiBase::parse(url)?,
            };
            (PathBuf::from(path), base, None)
        }
        None => {
            let server = MockServer::start().await;
            let path = std::env::temp_dir().join(format!("wokelo-token-{}", std::process::id()));
            std::fs::write(&path, server.issue_token())?;
            println!(
                "Mock API at {}, token in {}",
                server.base_url(),
                path.display()
            );
            (path, server.base_url().parse()?, Some(server))
        }
    };

    // The source in a few lines: the closure is called for every fetch and
    // returns a `'static` future, so it hands the future its own copy of the
    // path. `with_api_base` says which origin gets the token.
    let source = {
        let path = path.clone();
        token_source_fn(move |_current: Option<&Token>| {
            let path = path.clone();
            async move { read_token_file(&path).await }
        })
        .with_api_base(base.clone())
    };
    let client = ServiceBuilder::new()
        .layer(WokeloAuthLayer::new(source))
        .service(support::http_client());
    let search = || Request::get(base.join(SEARCH)).body(Empty::<Bytes>::new());

    let response = client.clone().oneshot(search()?).await?;
    println!("1) GET {SEARCH} -> {}", response.status());

    if let Some(server) = &server {
        // Another process rotates the token: the server revokes the old one
        // and the file gets the new one.
        server.revoke_all();
        std::fs::write(&path, server.issue_token())?;
        let response = client.clone().oneshot(search()?).await?;
        let stats = server.stats();
        println!(
            "2) token revoked, file rewritten: GET -> {} after {} x 401 (file re-read, call retried; distinct tokens: {})",
            response.status(),
            stats.unauthorized,
            stats.tokens_presented.len()
        );
    }

    // The type implementing `TokenSource`, used the same way.
    let source = TokenFile {
        path: path.clone(),
        base: base.clone(),
    };
    let client = ServiceBuilder::new()
        .layer(WokeloAuthLayer::new(source))
        .service(support::http_client());
    let response = client.oneshot(search()?).await?;
    println!("3) with the TokenFile type: GET -> {}", response.status());

    if server.is_some() {
        std::fs::remove_file(&path)?;
    }
    Ok(())
}
