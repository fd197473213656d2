//! A token endpoint (or a proxy in front of it) that quotes what it was sent:
//! request bodies echoed in error descriptions, HTML pages and headers, in
//! every body encoding, on the password and the refresh grant. Whatever the
//! crate shows (errors with their `source()` chain, `Debug`, TRACE logs)
//! carries none of the secrets in any encoding, and keeps the rest of the
//! server's words.

mod common;

use std::{
    error::Error as _,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, Response},
    routing::post,
    Router,
};
use bytes::Bytes;
use http_body_util::Empty;
use wokelo_auth::{
    source::MAX_RETRY_AFTER, Credentials, Error, PasswordGrant, TokenErrorKind,
    TokenRequestEncoding, WokeloAuthLayer,
};

use common::{client, get, send, Captured};

const CLIENT_SECRET: &str = "S3cr3t+ \"x&y\"/é";
const PASSWORD: &str = "Hunter2 <b>'ü'";
/// The refresh token of the first login; its access token the API refuses.
const REFRESH_TOKEN: &str = "r1-Ref/resh+Tok=en";
const STALE_ACCESS_TOKEN: &str = "stale-Acc/ess+Tok=en1";
const FRESH_ACCESS_TOKEN: &str = "fresh-At/ok=2";
const SECRETS: [&str; 5] = [
    CLIENT_SECRET,
    PASSWORD,
    REFRESH_TOKEN,
    STALE_ACCESS_TOKEN,
    FRESH_ACCESS_TOKEN,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Grant {
    Password,
    Refresh,
}

/// An answer of the hostile endpoint.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Vec<u8>,
}

impl Reply {
    fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: vec![("content-type", content_type.as_bytes().to_vec())],
            body: body.into(),
        }
    }

    fn json(status: u16, value: serde_json::Value) -> Self {
        Self::new(status, "application/json", value.to_string())
    }

    fn header(mut self, name: &'static str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn token(access: &str, refresh: &str) -> Self {
        Self::json(
            200,
            serde_json::json!({"access_token": access, "refresh_token": refresh, "expires_in": 3600}),
        )
    }
}

type Script = Arc<dyn Fn(Grant, &str) -> Reply + Send + Sync>;

#[derive(Clone)]
struct Hostile {
    script: Script,
    grants: Arc<Mutex<Vec<Grant>>>,
}

impl Hostile {
    /// Serves `script` on `127.0.0.1`: `POST /auth/token/` answers what the
    /// script says for the request body (read as text); every other path is
    /// the API, which refuses the stale access token with `401`.
    async fn start(
        script: impl Fn(Grant, &str) -> Reply + Send + Sync + 'static,
    ) -> (Self, String) {
        let hostile = Self {
            script: Arc::new(script),
            grants: Arc::default(),
        };
        let app = Router::new()
            .route("/auth/token/", post(token))
            .fallback(api)
            .with_state(hostile.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (hostile, base)
    }

    fn grants(&self) -> Vec<Grant> {
        self.grants.lock().unwrap().clone()
    }
}

async fn token(State(hostile): State<Hostile>, body: Bytes) -> Response<Body> {
    let body = String::from_utf8_lossy(&body).into_owned();
    let grant = if body.contains("refresh_token") {
        Grant::Refresh
    } else {
        Grant::Password
    };
    hostile.grants.lock().unwrap().push(grant);
    let reply = (hostile.script)(grant, &body);
    let mut response = Response::builder().status(reply.status);
    for (name, value) in reply.headers {
        response = response.header(name, value);
    }
    response.body(Body::from(reply.body)).unwrap()
}

async fn api(headers: HeaderMap) -> Response<Body> {
    let stale = format!("Bearer {STALE_ACCESS_TOKEN}");
    let status = if headers
        .get("authorization")
        .is_some_and(|v| v == stale.as_str())
    {
        401
    } else {
        200
    };
    Response::builder()
        .status(status)
        .body(Body::empty())
        .unwrap()
}

/// Every form in which a secret may be quoted back: raw (JSON values,
/// multipart parts), urlencoded with `+` and `%20`, JSON-escaped (also
/// ASCII-only, as Python writes it), `Debug`-escaped, HTML-escaped.
fn encodings(secret: &str) -> Vec<String> {
    let form = serde_urlencoded::to_string([("k", secret)]).unwrap()[2..].to_owned();
    let json = serde_json::to_string(secret).unwrap();
    let json = json[1..json.len() - 1].to_owned();
    let debug = format!("{secret:?}");
    vec![
        secret.to_owned(),
        form.replace('+', "%20"),
        form,
        ascii_json(&json),
        html(secret),
        html(&json),
        json,
        debug[1..debug.len() - 1].to_owned(),
    ]
}

fn ascii_json(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii() {
                c.to_string()
            } else {
                let mut units = [0u16; 2];
                c.encode_utf16(&mut units)
                    .iter()
                    .map(|u| format!("\\u{u:04x}"))
                    .collect()
            }
        })
        .collect()
}

/// The end of a request body, where the password is in every encoding
/// (the server's fields are cut to 200 characters in errors).
fn tail(body: &str) -> &str {
    let start = body.char_indices().rev().nth(150).map_or(0, |(i, _)| i);
    &body[start..]
}

fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
}

fn assert_clean(case: &str, what: &str, text: &str) {
    for secret in SECRETS {
        for encoded in encodings(secret) {
            assert!(
                !text.contains(&encoded),
                "{case}: {secret:?} as {encoded:?} leaked into {what}:\n{text}"
            );
        }
    }
}

/// Display and Debug of an error and of every error in its `source()` chain.
fn shown(e: &Error) -> String {
    let mut text = format!("{e}\n{e:?}\n");
    if let Some(token_error) = e.token_error() {
        text.push_str(&format!(
            "{token_error}\n{token_error:?}\n{:?}\n",
            token_error.body()
        ));
    }
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!("{s}\n{s:?}\n"));
        source = s.source();
    }
    text
}

fn layer(base: &str, encoding: TokenRequestEncoding) -> WokeloAuthLayer {
    let credentials = Credentials::new("id", CLIENT_SECRET, "u@example.com", PASSWORD)
        .with_base_url(base.parse().unwrap());
    WokeloAuthLayer::builder(PasswordGrant::new(credentials).with_encoding(encoding))
        .token_retries(0)
        .token_timeout(Duration::from_secs(5))
        .build()
}

/// Sends a request that must fail for want of a token of `kind`.
async fn fails(
    service: &wokelo_auth::WokeloAuth<common::HttpClient<Empty<Bytes>>>,
    base: &str,
    kind: TokenErrorKind,
) -> Error {
    let e = send(service, get(format!("{base}/api/echo")))
        .await
        .unwrap_err();
    let token_error = e.token_error().expect("a token error");
    assert_eq!(token_error.kind(), kind, "{e}");
    e
}

const ENCODINGS: [TokenRequestEncoding; 3] = [
    TokenRequestEncoding::Form,
    TokenRequestEncoding::Json,
    TokenRequestEncoding::Multipart,
];

/// What one hostile answer to the password grant must give.
struct Case {
    name: &'static str,
    answer: fn(&str) -> Reply,
    /// `None`: a token, and the API request is answered.
    kind: Option<TokenErrorKind>,
    /// Text of the server's that the error keeps.
    kept: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "400 invalid_request quoting the body",
        answer: |body| {
            Reply::json(
                400,
                serde_json::json!({"error": "invalid_request", "error_description": format!("Could not process request body: {body}")}),
            )
        },
        kind: Some(TokenErrorKind::Configuration),
        kept: &["Could not process request body: ", "grant_type"],
    },
    Case {
        name: "400 quoting the body re-encoded with %20 for spaces",
        answer: |body| {
            Reply::json(
                400,
                serde_json::json!({"error": "invalid_grant", "error_description": tail(body).replace('+', "%20")}),
            )
        },
        kind: Some(TokenErrorKind::CredentialsRejected),
        kept: &["[REDACTED]"],
    },
    Case {
        name: "400 quoting the body as a Python server escapes it",
        answer: |body| {
            Reply::json(
                400,
                serde_json::json!({"error": "invalid_grant", "error_description": ascii_json(tail(body))}),
            )
        },
        kind: Some(TokenErrorKind::CredentialsRejected),
        kept: &["[REDACTED]"],
    },
    Case {
        name: "403 HTML page from a firewall quoting the body and the secret in its headers",
        answer: |body| {
            Reply::new(
                403,
                &format!(
                    "text/html; note={}",
                    serde_urlencoded::to_string([("s", CLIENT_SECRET)]).unwrap()
                ),
                format!(
                    "<html><h1>Request blocked</h1><pre>{}</pre></html>",
                    html(body)
                ),
            )
            .header(
                "x-echo",
                serde_urlencoded::to_string([("p", PASSWORD)]).unwrap(),
            )
            .header(
                "www-authenticate",
                format!("Basic realm=\"{}\"", html(PASSWORD)),
            )
        },
        kind: Some(TokenErrorKind::InvalidResponse),
        kept: &[
            "text/html",
            "<html><h1>Request blocked</h1><pre>",
            "[REDACTED]",
        ],
    },
    Case {
        name: "502 HTML page from a proxy quoting the body",
        answer: |body| Reply::new(502, "text/html", format!("<p>Bad gateway for {body}</p>")),
        kind: Some(TokenErrorKind::Unavailable),
        kept: &["<p>Bad gateway for "],
    },
    Case {
        name: "503 with a Retry-After of 2^64-1 seconds",
        answer: |body| {
            Reply::json(503, serde_json::json!({"detail": tail(body)}))
                .header("retry-after", "18446744073709551615")
        },
        kind: Some(TokenErrorKind::Unavailable),
        kept: &["[REDACTED]"],
    },
    Case {
        name: "401 invalid_client naming the secret",
        answer: |_| {
            Reply::json(
                401,
                serde_json::json!({"error": "invalid_client", "error_description": format!("unknown client secret {CLIENT_SECRET}")}),
            )
            .header("www-authenticate", "Bearer error=\"invalid_client\"")
        },
        kind: Some(TokenErrorKind::CredentialsRejected),
        kept: &["unknown client secret [REDACTED]"],
    },
    Case {
        name: "200 with an OAuth error quoting the body",
        answer: |body| {
            Reply::json(
                200,
                serde_json::json!({"error": "invalid_grant", "error_description": tail(body)}),
            )
        },
        kind: Some(TokenErrorKind::CredentialsRejected),
        kept: &["invalid_grant", "[REDACTED]"],
    },
    Case {
        name: "200 with an error quoting its own access token",
        answer: |_| {
            Reply::json(
                200,
                serde_json::json!({"error": "server_error", "access_token": FRESH_ACCESS_TOKEN, "error_description": format!("could not store {FRESH_ACCESS_TOKEN}")}),
            )
        },
        kind: Some(TokenErrorKind::Unavailable),
        kept: &["could not store [REDACTED]"],
    },
    Case {
        name: "200 token echoing the password in an unknown field",
        answer: |body| {
            Reply::json(
                200,
                serde_json::json!({"access_token": FRESH_ACCESS_TOKEN, "expires_in": 3600, "debug": body, "password": PASSWORD}),
            )
        },
        kind: None,
        kept: &[],
    },
    Case {
        name: "200 HTML quoting the body",
        answer: |body| Reply::new(200, "text/html", format!("<html>{body}</html>")),
        kind: Some(TokenErrorKind::InvalidResponse),
        kept: &["not JSON", "text/html", "<html>"],
    },
    Case {
        name: "a secret cut by the 120-character excerpt",
        answer: |_| {
            Reply::new(
                418,
                "text/plain",
                format!("{}{PASSWORD}{PASSWORD}", "x".repeat(115)),
            )
        },
        kind: Some(TokenErrorKind::InvalidResponse),
        kept: &["xxxxx[REDA...\""],
    },
    Case {
        name: "a 10 MiB page repeating the body",
        answer: |body| Reply::new(400, "text/html", body.repeat(10 * 1024 * 1024 / body.len())),
        kind: Some(TokenErrorKind::InvalidResponse),
        kept: &["exceeds 64 KiB"],
    },
    Case {
        name: "a 60 KiB page with the body at its end",
        answer: |body| Reply::new(400, "text/html", format!("{}{body}", " ".repeat(60 * 1024))),
        kind: Some(TokenErrorKind::InvalidResponse),
        kept: &["not an OAuth error: 6"],
    },
];

#[tokio::test]
async fn hostile_answers_to_the_password_grant_show_no_secret() {
    let captured = Captured::default();
    let _guard = tracing::subscriber::set_default(captured.subscriber());
    for case in CASES {
        for encoding in ENCODINGS {
            let name = format!("{} ({encoding:?})", case.name);
            let answer = case.answer;
            let (hostile, base) = Hostile::start(move |_, body| answer(body)).await;
            let layer = layer(&base, encoding);
            let service = client::<Empty<Bytes>>(&layer);
            let outcome = send(&service, get(format!("{base}/api/echo"))).await;
            match (case.kind, &outcome) {
                (None, Ok(answer)) => assert_eq!(answer.status, 200, "{name}"),
                (Some(kind), Err(e)) => {
                    let token_error = e.token_error().unwrap_or_else(|| panic!("{name}: {e}"));
                    assert_eq!(token_error.kind(), kind, "{name}: {e}");
                    let text = shown(e);
                    for kept in case.kept {
                        assert!(text.contains(kept), "{name}: {kept:?} missing from\n{text}");
                    }
                    assert_clean(&name, "the error", &text);
                }
                (kind, outcome) => panic!("{name}: expected {kind:?}, got {outcome:?}"),
            }
            assert_eq!(hostile.grants(), [Grant::Password], "{name}");
            assert_clean(
                &name,
                "Debug of the layer",
                &format!("{layer:?} {service:?}"),
            );
        }
    }
    let log = captured.text();
    assert!(
        log.contains("token fetch failed"),
        "failures are logged:\n{log}"
    );
    assert_clean("all cases", "the TRACE log", &log);
}

/// The refresh grant's answers quote the refresh token; a refused refresh
/// falls back to the password grant, whose answer quotes the password.
#[tokio::test]
async fn hostile_answers_to_the_refresh_grant_show_no_secret() {
    let captured = Captured::default();
    let _guard = tracing::subscriber::set_default(captured.subscriber());
    for encoding in ENCODINGS {
        let (hostile, base) = Hostile::start(|grant, body| match grant {
            Grant::Refresh => Reply::json(
                400,
                serde_json::json!({"error": "invalid_grant", "error_description": format!("stale refresh token in {body}")}),
            ),
            Grant::Password => Reply::token(STALE_ACCESS_TOKEN, REFRESH_TOKEN),
        })
        .await;
        let layer = layer(&base, encoding);
        let service = client::<Empty<Bytes>>(&layer);
        // Login, a 401 for the stale token, a refused refresh, a fallback
        // login that gets the stale token again: the retried request's 401
        // comes back.
        let answer = send(&service, get(format!("{base}/api/echo")))
            .await
            .unwrap();
        assert_eq!(answer.status, 401, "{encoding:?}");
        assert_eq!(
            hostile.grants(),
            [Grant::Password, Grant::Refresh, Grant::Password],
            "{encoding:?}"
        );
    }
    let log = captured.text();
    assert!(
        log.contains("refresh token refused; falling back to the password grant")
            && log.contains("stale refresh token in ")
            && log.contains("[REDACTED]"),
        "the fallback is logged with the server's words:\n{log}"
    );
    assert_clean("refresh", "the TRACE log", &log);
}

/// A proxy's HTML page on a refresh is not a refused refresh token: the
/// password is not sent through the proxy that blocked the refresh, and the
/// error names the page.
#[tokio::test]
async fn an_html_403_on_a_refresh_does_not_fall_back_to_the_password_grant() {
    let (hostile, base) = Hostile::start(|grant, body| match grant {
        Grant::Refresh => Reply::new(
            403,
            "text/html",
            format!("<html>Forbidden by policy: {}</html>", html(body)),
        ),
        Grant::Password => Reply::token(STALE_ACCESS_TOKEN, REFRESH_TOKEN),
    })
    .await;
    let service = client::<Empty<Bytes>>(&layer(&base, TokenRequestEncoding::Form));
    let e = fails(&service, &base, TokenErrorKind::InvalidResponse).await;
    assert_eq!(
        e.token_error().unwrap().status().map(|s| s.as_u16()),
        Some(403)
    );
    let text = shown(&e);
    assert!(text.contains("<html>Forbidden by policy: grant_type=refresh_token&amp;client_id=id&amp;client_secret=[REDACTED]"), "{text}");
    assert_clean("refresh 403", "the error", &text);
    assert_eq!(hostile.grants(), [Grant::Password, Grant::Refresh]);
}

/// `Retry-After: 18446744073709551615` (or `9999999999`) on a 503 is cut to
/// [`MAX_RETRY_AFTER`]: nothing panics, and the token endpoint is asked
/// again once that has passed.
#[tokio::test]
async fn a_huge_retry_after_neither_panics_nor_locks_the_client_out() {
    for retry_after in [
        "18446744073709551615",
        "9999999999",
        "Fri, 31 Dec 9999 23:59:59 GMT",
    ] {
        let calls = Mutex::new(0);
        let (hostile, base) = Hostile::start(move |_, _| {
            let mut calls = calls.lock().unwrap();
            *calls += 1;
            if *calls == 1 {
                Reply::json(503, serde_json::json!({"detail": "down"}))
                    .header("retry-after", retry_after)
            } else {
                Reply::token(FRESH_ACCESS_TOKEN, REFRESH_TOKEN)
            }
        })
        .await;
        let service = client::<Empty<Bytes>>(&layer(&base, TokenRequestEncoding::Form));
        let e = fails(&service, &base, TokenErrorKind::Unavailable).await;
        assert_eq!(
            e.token_error().unwrap().retry_after(),
            Some(MAX_RETRY_AFTER),
            "{retry_after}"
        );

        tokio::time::pause();
        tokio::time::advance(MAX_RETRY_AFTER + Duration::from_secs(1)).await;
        tokio::time::resume();
        let answer = send(&service, get(format!("{base}/api/echo")))
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "{retry_after}");
        assert_eq!(hostile.grants().len(), 2, "{retry_after}");
    }
}
