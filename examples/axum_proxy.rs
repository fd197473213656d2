//! An axum server that forwards `/wokelo/*path` to the Wokelo API with the
//! token attached: request bodies stream through the layer (kept for a
//! replay up to the 64 KiB cap), responses stream back.
//!
//! ```sh
//! cargo run --example axum_proxy                 # serves until Ctrl-C
//! curl 'http://127.0.0.1:PORT/wokelo/api/enterprise/company/search?query=stripe'
//! curl 'http://127.0.0.1:PORT/healthz'           # the token cache, as JSON
//! cargo run --example axum_proxy -- --self-test  # mock + proxy + checks, then exits
//! ```
//!
//! `/healthz` answers `200` when a token is held or can be had, `503` with
//! the last error otherwise (wrong credentials, token endpoint down), with
//! the layer's [`AuthSnapshot`] as JSON: for a readiness probe and metrics.
//!
//! It binds `PROXY_ADDR` (default `127.0.0.1:0`, a free port) and forwards to
//! the API of the `WOKELO_*` credentials, or to the embedded mock when they
//! are not set. `--self-test` always uses the mock.
//!
//! The proxy has no access control of its own: whoever reaches it calls the
//! API as you. Keep it on 127.0.0.1, or put your own authentication in front.

#[path = "support/mod.rs"]
mod support;

use std::{net::SocketAddr, process::ExitCode};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{header, HeaderMap, StatusCode, Uri, Version},
    response::{IntoResponse, Response},
    routing::{any, get},
    Json, Router,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tower::{ServiceBuilder, ServiceExt};
use wokelo_auth::{
    testing::MockConfig, ApiBase, AuthSnapshot, BoxError, Credentials, Error, PasswordGrant,
    ReplayBody, TokenHandle, WokeloAuth, WokeloAuthLayer,
};

use support::Api;

/// The outbound client: the layer over a hyper-util client, taking axum's
/// request body as it streams in.
type Upstream = WokeloAuth<Client<support::Connector, ReplayBody<Body>>>;

#[derive(Clone)]
struct Proxy {
    client: Upstream,
    base: ApiBase,
    /// The layer's token cache, for `/healthz`.
    auth: TokenHandle,
}

#[tokio::main]
async fn main() -> ExitCode {
    support::init_logging();
    let self_test = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--self-test") => true,
        Some(other) => {
            eprintln!("error: unknown argument {other:?}\nusage: axum_proxy [--self-test]");
            return ExitCode::from(2);
        }
    };
    let result = if self_test {
        self_test_run().await
    } else {
        serve().await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The proxy's router, forwarding to the API of `api`.
fn router(api: &Api) -> Router {
    let credentials = api.credentials();
    let base = credentials.base_url().clone();
    let client: Upstream = ServiceBuilder::new()
        .layer(WokeloAuthLayer::new(PasswordGrant::new(credentials)))
        .service(support::http_client());
    let auth = client.handle();
    Router::new()
        .route("/wokelo/{*path}", any(forward))
        .route("/healthz", get(healthz))
        .with_state(Proxy { client, base, auth })
}

/// `200` with the token cache's state when a token is held or can be had,
/// `503` with the last error otherwise.
///
/// `login` fetches a token only if none is held, through the layer's single
/// flight; after wrong credentials it fails fast for the backoff window
/// (30 s) without a token request, so a probe every few seconds costs one
/// token request per window.
async fn healthz(State(proxy): State<Proxy>) -> Response {
    let login = proxy.auth.login().await;
    let status = match login {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(snapshot_json(&proxy.auth.snapshot()))).into_response()
}

/// The snapshot as JSON: times in seconds (since the Unix epoch for
/// points in time), never a token.
fn snapshot_json(s: &AuthSnapshot) -> Value {
    let unix = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    let f = &s.fetches;
    let u = &s.unauthorized;
    json!({
        "token": s.token.as_ref().map(|t| json!({
            "generation": t.generation,
            "expires_at": unix(t.expires_at),
            "expires_in_s": t.expires_in.as_secs(),
            "refresh_in_s": t.refresh_in.as_secs(),
        })),
        "fetching": s.fetching,
        "failing_fast_for_s": s.failing_fast_for.map(|d| d.as_secs_f64()),
        "fetches": {
            "started": f.started(),
            "missing": f.missing,
            "refresh_ahead": f.refresh_ahead,
            "unauthorized": f.unauthorized,
            "forced": f.forced,
            "succeeded": f.succeeded,
            "failed": {
                "credentials_rejected": f.failed.credentials_rejected,
                "unavailable": f.failed.unavailable,
                "timed_out": f.failed.timed_out,
                "invalid_response": f.failed.invalid_response,
                "configuration": f.failed.configuration,
            },
            "attempts": f.attempts,
        },
        "unauthorized": {
            "tokens_dropped": u.tokens_dropped,
            "retried": u.retried,
            "returned": u.returned,
        },
        "last_error": s.last_error.as_ref().map(|e| json!({
            "kind": format!("{:?}", e.error.kind()),
            "message": e.error.to_string(),
            "at": unix(e.at),
        })),
    })
}

/// `/wokelo/<rest>` -> `<base>/<rest>`, method, headers and body as they came.
async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    // The raw path, not axum's percent-decoded `Path`, so it goes on unchanged.
    let rest = parts.uri.path().strip_prefix("/wokelo").unwrap_or("/");
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let Ok(uri) = proxy.base.join(&format!("{rest}{query}")).parse::<Uri>() else {
        return (StatusCode::BAD_REQUEST, "invalid path").into_response();
    };
    let (method, path) = (parts.method.clone(), uri.path().to_owned());
    parts.uri = uri;
    // The client picks the protocol to the API and sets `Host` from the URI.
    parts.version = Version::default();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    // The proxy authenticates; a caller's own `Authorization` is not passed on
    // (the layer would forward such a request untouched, without its token).
    parts.headers.remove(header::AUTHORIZATION);

    match proxy.client.oneshot(Request::from_parts(parts, body)).await {
        Ok(response) => {
            tracing::info!(%method, path, status = response.status().as_u16(), "forwarded");
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Err(e) => {
            tracing::warn!(%method, path, error = %e, "not forwarded");
            let status = match e {
                Error::Token(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            };
            (status, e.to_string()).into_response()
        }
    }
}

/// Removes the headers that belong to one connection, not to the message.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
}

/// Binds `addr` and serves the proxy on a task of its own.
async fn start(api: &Api, addr: &str) -> Result<SocketAddr, BoxError> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(api);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the proxy stopped");
        }
    });
    Ok(local)
}

async fn serve() -> Result<(), BoxError> {
    let api = Api::from_env(MockConfig::default()).await?;
    let addr = std::env::var("PROXY_ADDR").unwrap_or_else(|_| "127.0.0.1:0".to_owned());
    let local = start(&api, &addr).await?;
    println!("Forwarding http://{local}/wokelo/* to {}", api.describe());
    println!("Try: curl 'http://{local}/wokelo/api/enterprise/company/search?query=stripe'");
    println!("Health: curl 'http://{local}/healthz'");
    println!("Ctrl-C to stop.");
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// Mock + proxy + a plain client sending requests through the proxy.
async fn self_test_run() -> Result<(), BoxError> {
    let api = Api::Mock(wokelo_auth::testing::MockServer::start().await);
    let server = api.mock().expect("the self-test uses the mock");
    let proxy = start(&api, "127.0.0.1:0").await?;
    println!(
        "proxy on http://{proxy}, mock Wokelo API at {}",
        server.base_url()
    );
    let client: PlainClient = Client::builder(TokioExecutor::new()).build_http();
    let url = |path: &str| format!("http://{proxy}/wokelo{path}");
    let mut failures = 0;
    let mut check = |ok: bool, what: String| {
        println!("{} {what}", if ok { "ok  " } else { "FAIL" });
        failures += usize::from(!ok);
    };

    // 1. A GET.
    let (status, body) = send(
        &client,
        "GET",
        url("/api/enterprise/company/search?query=stripe"),
        Bytes::new(),
    )
    .await?;
    check(
        status == StatusCode::OK && body.contains("Stripe Inc."),
        format!("GET company search -> {status}"),
    );

    // 2. A 100 KiB body streams through (over the replay cap, so not kept).
    let big = pattern(100 * 1024);
    let (status, body) = send(&client, "POST", url("/api/echo"), big.clone()).await?;
    check(
        status == StatusCode::OK && echoed(&body, &big),
        format!("POST 100 KiB -> {status}, echoed length and sha256 match"),
    );

    // 3. After a revocation a small body is replayed on the retry.
    server.revoke_all();
    let unauthorized = server.stats().unauthorized;
    let small = Bytes::from_static(b"{\"note\": \"replayed after a 401\"}");
    let (status, body) = send(&client, "POST", url("/api/echo"), small.clone()).await?;
    check(
        status == StatusCode::OK
            && echoed(&body, &small)
            && server.stats().unauthorized == unauthorized + 1,
        format!(
            "revoke_all, POST {} bytes -> 401, refresh, replay -> {status}, echo matches",
            small.len()
        ),
    );

    // 4. After a revocation a body over the cap cannot be replayed: the 401
    // comes back, and the token is refreshed for the next request.
    server.revoke_all();
    let (status, _) = send(&client, "POST", url("/api/echo"), big).await?;
    check(
        status == StatusCode::UNAUTHORIZED,
        format!("revoke_all, POST 100 KiB -> {status} (over the replay cap: not retried)"),
    );
    let (status, _) = send(&client, "GET", url("/api/echo"), Bytes::new()).await?;
    check(status == StatusCode::OK, format!("next GET -> {status}"));

    // 5. The token cache as /healthz shows it: one fetch on first use, one
    // after each revocation; one 401 retried, one returned.
    let (status, body) = send(
        &client,
        "GET",
        format!("http://{proxy}/healthz"),
        Bytes::new(),
    )
    .await?;
    let health: Value = serde_json::from_str(&body)?;
    let (f, u) = (&health["fetches"], &health["unauthorized"]);
    check(
        status == StatusCode::OK
            && health["token"]["expires_in_s"].as_u64() > Some(3500)
            && health["last_error"].is_null()
            && (&f["missing"], &f["unauthorized"], &f["succeeded"]) == (&json!(1), &json!(2), &json!(3))
            && (&u["retried"], &u["returned"]) == (&json!(1), &json!(1)),
        format!(
            "GET /healthz -> {status}: token held, fetches missing {} + unauthorized {}, 401s retried {}, returned {}",
            f["missing"], f["unauthorized"], u["retried"], u["returned"]
        ),
    );

    // 6. A proxy with a wrong password fails its health check, not a user's
    // request first.
    let c = server.config();
    let wrong = Credentials::new(
        &c.client_id,
        &c.client_secret,
        &c.username,
        "not-the-password",
    )
    .with_base_url(server.base_url().parse()?);
    let failing = start(&Api::Real(wrong), "127.0.0.1:0").await?;
    let (status, body) = send(
        &client,
        "GET",
        format!("http://{failing}/healthz"),
        Bytes::new(),
    )
    .await?;
    let health: Value = serde_json::from_str(&body)?;
    check(
        status == StatusCode::SERVICE_UNAVAILABLE
            && health["token"].is_null()
            && health["last_error"]["kind"] == "CredentialsRejected"
            && !body.contains("not-the-password"),
        format!(
            "wrong password: GET /healthz -> {status}, last error {}: {}",
            health["last_error"]["kind"], health["last_error"]["message"]
        ),
    );

    let stats = server.stats();
    println!(
        "mock: {} token requests, {} API requests, {} answered 401",
        stats.token_requests, stats.api_requests, stats.unauthorized
    );
    match failures {
        0 => {
            println!("self-test passed");
            Ok(())
        }
        n => Err(format!("self-test failed: {n} check(s)").into()),
    }
}

/// A plain hyper client, as any caller of the proxy.
type PlainClient = Client<HttpConnector, Full<Bytes>>;

/// Sends a request through the proxy; returns status and body text.
async fn send(
    client: &PlainClient,
    method: &str,
    url: String,
    body: Bytes,
) -> Result<(StatusCode, String), BoxError> {
    let request = http::Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(body))?;
    let response = client.request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Whether the mock's echo of a request matches `sent`.
fn echoed(echo: &str, sent: &[u8]) -> bool {
    let Ok(echo) = serde_json::from_str::<serde_json::Value>(echo) else {
        return false;
    };
    let sha256: String = Sha256::digest(sent)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    echo["body_len"] == sent.len() && echo["body_sha256"] == sha256
}

/// `len` bytes of a repeating pattern.
fn pattern(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}
