//! curl for Wokelo: one authenticated request, its status line and body.
//!
//! ```sh
//! cargo run --example request -- /api/enterprise/company/search?query=stripe
//! cargo run --example request -- -X POST -d '{"company": "stripe"}' /api/enterprise/report/
//! cargo run --example request -- -d @body.json -H 'X-Trace: 1' https://api.wokelo.ai/api/echo
//! ```
//!
//! Credentials come from `WOKELO_CLIENT_ID`, `WOKELO_CLIENT_SECRET`,
//! `WOKELO_USERNAME`, `WOKELO_PASSWORD` and optionally `WOKELO_BASE_URL`;
//! `WOKELO_TOKEN_ENCODING=form|json|multipart` picks the token request body
//! encoding. Without credentials it talks to the embedded mock. A path is
//! joined to the base URL. `-d` sends `Content-Type: application/json` unless
//! a `-H` sets another, and makes the default method `POST`; `-d @FILE` reads
//! the body from a file (`@-`: standard input).
//!
//! Exit status: 0 for a response below 400; 1 for a response of 400 or more
//! or when no request could be sent (e.g. no token); 2 for a usage error.

#[path = "support/mod.rs"]
mod support;

use std::process::ExitCode;

use bytes::Bytes;
use http::{header::CONTENT_TYPE, HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use tokio::io::AsyncWriteExt;
use tower::{ServiceBuilder, ServiceExt};
use wokelo_auth::{testing::MockConfig, PasswordGrant, TokenRequestEncoding, WokeloAuthLayer};

use support::Api;

const USAGE: &str = "usage: request [-X METHOD] [-d BODY|@FILE] [-H 'Name: value']... PATH_OR_URL";

/// A failure, and the exit status it maps to.
enum Failure {
    Usage(String),
    Other(String),
}

#[tokio::main]
async fn main() -> ExitCode {
    support::init_logging();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Other(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The parsed command line.
struct Args {
    method: Option<Method>,
    body: Option<Bytes>,
    headers: Vec<(HeaderName, HeaderValue)>,
    target: String,
}

async fn run() -> Result<(), Failure> {
    let args = parse_args(std::env::args().skip(1))?;
    let encoding = match std::env::var("WOKELO_TOKEN_ENCODING") {
        Ok(name) => TokenRequestEncoding::from_name(&name).ok_or_else(|| {
            Failure::Other(format!(
                "WOKELO_TOKEN_ENCODING must be form, json or multipart, not {name:?}"
            ))
        })?,
        Err(_) => TokenRequestEncoding::default(),
    };
    let is_url = args.target.starts_with("http://") || args.target.starts_with("https://");
    if !is_url && !args.target.starts_with('/') {
        return Err(Failure::Usage(format!(
            "{:?} is neither a path (starting with /) nor an http(s) URL",
            args.target
        )));
    }
    let api = Api::from_env(MockConfig::default())
        .await
        .map_err(|e| Failure::Other(e.to_string()))?;
    if let Some(server) = api.mock() {
        eprintln!(
            "note: WOKELO_* credentials not set; using the embedded mock at {}",
            server.base_url()
        );
    }
    let url = if is_url {
        args.target
    } else {
        api.url(&args.target)
    };

    let method = args.method.unwrap_or(match args.body {
        Some(_) => Method::POST,
        None => Method::GET,
    });
    let mut request = Request::builder().method(method).uri(&url);
    if args.body.is_some() && !args.headers.iter().any(|(name, _)| name == CONTENT_TYPE) {
        request = request.header(CONTENT_TYPE, "application/json");
    }
    for (name, value) in args.headers {
        request = request.header(name, value);
    }
    let request = request
        .body(Full::new(args.body.unwrap_or_default()))
        .map_err(|e| Failure::Usage(format!("invalid request to {url:?}: {e}")))?;

    let source = PasswordGrant::new(api.credentials()).with_encoding(encoding);
    let client = ServiceBuilder::new()
        .layer(WokeloAuthLayer::new(source))
        .service(support::http_client());

    // A token error reads "could not obtain a Wokelo access token: ...".
    let response = client
        .oneshot(request)
        .await
        .map_err(|e| Failure::Other(chain(&e)))?;
    let status = response.status();
    println!("{:?} {status}", response.version());
    // The body streams to stdout as it arrives.
    let mut body = response.into_body();
    let mut stdout = tokio::io::stdout();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Failure::Other(chain(&e)))?;
        if let Some(data) = frame.data_ref() {
            stdout
                .write_all(data)
                .await
                .map_err(|e| Failure::Other(e.to_string()))?;
        }
    }
    let _ = stdout.write_all(b"\n").await;
    let _ = stdout.flush().await;

    if let Some(server) = api.mock() {
        let stats = server.stats();
        let encodings: Vec<&str> = stats.token_encodings.keys().map(String::as_str).collect();
        eprintln!(
            "note: the mock answered {} token request(s), encoded as {}",
            stats.token_requests,
            encodings.join(", ")
        );
    }
    if status.as_u16() >= 400 {
        return Err(Failure::Other(format!("HTTP {status}")));
    }
    Ok(())
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, Failure> {
    let mut parsed = Args {
        method: None,
        body: None,
        headers: Vec::new(),
        target: String::new(),
    };
    let mut target = None;
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .ok_or_else(|| Failure::Usage(format!("{flag} needs a value")))
        };
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "-X" | "--request" => {
                let method = value(&arg)?;
                parsed.method = Some(
                    Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                        .map_err(|_| Failure::Usage(format!("invalid method {method:?}")))?,
                );
            }
            "-d" | "--data" => parsed.body = Some(read_body(&value(&arg)?)?),
            "-H" | "--header" => {
                let header = value(&arg)?;
                let (name, val) = header
                    .split_once(':')
                    .and_then(|(n, v)| {
                        Some((
                            HeaderName::try_from(n.trim()).ok()?,
                            HeaderValue::try_from(v.trim()).ok()?,
                        ))
                    })
                    .ok_or_else(|| {
                        Failure::Usage(format!("invalid header {header:?}, expected 'Name: value'"))
                    })?;
                parsed.headers.push((name, val));
            }
            flag if flag.starts_with('-') && flag.len() > 1 => {
                return Err(Failure::Usage(format!("unknown option {flag}")))
            }
            _ if target.is_some() => {
                return Err(Failure::Usage(format!("unexpected argument {arg:?}")))
            }
            _ => target = Some(arg),
        }
    }
    parsed.target = target.ok_or_else(|| Failure::Usage("missing PATH_OR_URL".to_owned()))?;
    Ok(parsed)
}

/// `-d` data: the text itself, or `@FILE`, or `@-` for standard input.
fn read_body(data: &str) -> Result<Bytes, Failure> {
    let Some(path) = data.strip_prefix('@') else {
        return Ok(Bytes::copy_from_slice(data.as_bytes()));
    };
    let read = if path == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).map(|_| buf)
    } else {
        std::fs::read(path)
    };
    read.map(Bytes::from)
        .map_err(|e| Failure::Usage(format!("cannot read {path}: {e}")))
}

/// An error and its causes on one line: `a: b: c`.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        message.push_str(": ");
        message.push_str(&e.to_string());
        source = e.source();
    }
    message
}
