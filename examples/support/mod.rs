//! What the examples share: which API to talk to (the embedded mock unless
//! credentials are set), the HTTP client, and logging.
//!
//! Used from an example with `#[path = "support/mod.rs"] mod support;`.
#![allow(dead_code)]

use bytes::Bytes;
use http_body::Body;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tracing_subscriber::EnvFilter;
use wokelo_auth::{
    testing::{MockConfig, MockServer},
    BoxError, Credentials,
};

/// The Wokelo API an example talks to.
pub enum Api {
    /// No credentials in the environment: an embedded mock on 127.0.0.1.
    Mock(MockServer),
    /// `WOKELO_CLIENT_ID`, `WOKELO_CLIENT_SECRET`, `WOKELO_USERNAME`,
    /// `WOKELO_PASSWORD` (and optionally `WOKELO_BASE_URL`) are set.
    Real(Credentials),
}

impl Api {
    /// The real API if all four credentials are set, else a mock started with
    /// `config`. A bad `WOKELO_BASE_URL` is an error.
    pub async fn from_env(config: MockConfig) -> Result<Api, BoxError> {
        match Credentials::from_env() {
            Ok(credentials) => Ok(Api::Real(credentials)),
            Err(e) if !e.missing_variables().is_empty() => {
                let missing = e.missing_variables();
                if missing.len() < Credentials::ENV_VARS.len() {
                    eprintln!(
                        "note: {} not set, so the embedded mock is used",
                        missing.join(", ")
                    );
                }
                Ok(Api::Mock(MockServer::start_with(config).await))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The credentials for the password grant, base URL included.
    pub fn credentials(&self) -> Credentials {
        match self {
            Api::Mock(server) => server.credentials(),
            Api::Real(credentials) => credentials.clone(),
        }
    }

    /// The mock server, if this is the mock.
    pub fn mock(&self) -> Option<&MockServer> {
        match self {
            Api::Mock(server) => Some(server),
            Api::Real(_) => None,
        }
    }

    /// The URL of `path_and_query` (starting with `/`) on this API.
    pub fn url(&self, path_and_query: &str) -> String {
        match self {
            Api::Mock(server) => server.url(path_and_query),
            Api::Real(credentials) => credentials.base_url().join(path_and_query),
        }
    }

    /// One line saying which API this is.
    pub fn describe(&self) -> String {
        match self {
            Api::Mock(server) => format!(
                "the embedded mock Wokelo API at {} (set WOKELO_CLIENT_ID, WOKELO_CLIENT_SECRET, WOKELO_USERNAME and WOKELO_PASSWORD to use the real one)",
                server.base_url()
            ),
            Api::Real(credentials) => format!(
                "the Wokelo API at {} as {}",
                credentials.base_url(),
                credentials.username()
            ),
        }
    }
}

/// The connector of [`http_client`]: the token client's own, so API calls
/// take the same route (the environment's proxies) and trust the same CAs
/// (the operating system's store or `SSL_CERT_FILE`, and the webpki roots).
pub type Connector = wokelo_auth::HttpsConnector;

/// A pooled hyper-util client for the API calls, with the proxy and trust
/// settings of the token client inside `PasswordGrant` (both read the
/// environment: `HTTPS_PROXY`, `NO_PROXY`, `SSL_CERT_FILE`, ...). An unusable
/// `SSL_CERT_FILE` is reported and the process exits.
pub fn http_client<B>() -> Client<Connector, B>
where
    B: Body<Data = Bytes> + Send,
{
    let connector = Connector::from_env().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    });
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Logs to stderr, compact, without timestamps or targets. `RUST_LOG`
/// overrides the default `info,wokelo_auth=info` (try `wokelo_auth=debug` to
/// see the 401 retries).
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,wokelo_auth=info"));
    tracing_subscriber::fmt()
        .compact()
        .without_time()
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .init();
}
