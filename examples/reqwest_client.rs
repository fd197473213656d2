//! The crate for reqwest users: `WokeloAuthMiddleware` in a reqwest-middleware
//! chain, token fetches through the same reqwest client, and that client
//! under `WokeloAuthLayer` as a tower service.
//!
//! ```sh
//! cargo run --example reqwest_client --features reqwest
//! ```
//!
//! With no `WOKELO_*` variables set it starts the embedded mock Wokelo API and
//! runs all steps, printing the mock's counters. With `WOKELO_CLIENT_ID`,
//! `WOKELO_CLIENT_SECRET`, `WOKELO_USERNAME` and `WOKELO_PASSWORD` (and
//! optionally `WOKELO_BASE_URL`) set, it runs steps 1 to 3 and 5 against that
//! API.

#[path = "support/mod.rs"]
mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use reqwest_middleware::ClientBuilder;
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;
use tower::{Layer, ServiceExt};
use wokelo_auth::{
    reqwest::{tls_config, ReqwestService, WokeloAuthMiddleware},
    testing::MockConfig,
    BoxError, PasswordGrant, WokeloAuthLayer,
};

use support::Api;

const SEARCH: &str = "/api/enterprise/company/search?query=stripe";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    support::init_logging();
    let api = Api::from_env(MockConfig::default()).await?;
    println!("Using {}\n", api.describe());

    // 1) One reqwest client for everything: its TLS runs on the crate's ring
    // provider (no process-level rustls provider needed); token requests go
    // through it too, so its proxy and trust settings apply to them.
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config())
        .build()?;
    let source =
        PasswordGrant::new(api.credentials()).with_http_client(ReqwestService::new(http.clone()));
    let layer = WokeloAuthLayer::new(source);
    let client = ClientBuilder::new(http.clone())
        .with(WokeloAuthMiddleware::from_layer(&layer))
        .build();
    println!("1) client built; {}", token_requests(&api));

    // 2) The first call logs in.
    let response = client.get(api.url(SEARCH)).send().await?;
    let status = response.status();
    let body = response.text().await?;
    println!("2) GET {SEARCH} -> {status}; {}", token_requests(&api));
    println!("   {}", body.chars().take(120).collect::<String>());

    // 3) Concurrent calls, through clones, share the token.
    let mut calls = JoinSet::new();
    for _ in 0..100 {
        let (client, url) = (client.clone(), api.url(SEARCH));
        calls.spawn(async move { client.get(url).send().await.map(|r| r.status()) });
    }
    let mut ok = 0;
    while let Some(status) = calls.join_next().await {
        ok += usize::from(status?? == reqwest::StatusCode::OK);
    }
    println!(
        "3) 100 concurrent calls: {ok} x 200 OK; {}",
        token_requests(&api)
    );

    // 4) A revoked token: the 401 is answered by a refresh and the JSON body
    // sent again, byte for byte.
    if let Some(server) = api.mock() {
        server.revoke_all();
        let payload = serde_json::json!({"query": "payments", "countries": ["US", "GB"]});
        let sent = serde_json::to_vec(&payload)?;
        let echo: serde_json::Value = client
            .post(api.url("/api/echo"))
            .json(&payload)
            .send()
            .await?
            .json()
            .await?;
        let matches = echo["body_sha256"] == hex(&Sha256::digest(&sent));
        let stats = server.stats();
        println!(
            "4) all tokens revoked; POST /api/echo ({} JSON bytes) -> echoed sha256 {}; API 401s: {}, tokens issued: {}",
            sent.len(),
            if matches { "matches" } else { "DIFFERS" },
            stats.unauthorized,
            stats.tokens_issued,
        );
    } else {
        println!("4) revoking tokens runs against the embedded mock only.");
    }

    // 5) The tower path: the same reqwest client under the same layer (so
    // the same token), for code written against tower services.
    let tower_client = layer.layer(ReqwestService::new(http));
    let request = http::Request::get(api.url(SEARCH)).body(Empty::<Bytes>::new())?;
    let response = tower_client.oneshot(request).await?;
    let status = response.status();
    let read = response.into_body().collect().await?.to_bytes().len();
    println!(
        "5) tower: WokeloAuthLayer over ReqwestService: GET -> {status} ({read} bytes); {}",
        token_requests(&api)
    );
    Ok(())
}

fn token_requests(api: &Api) -> String {
    match api.mock() {
        Some(server) => format!("token requests: {}", server.stats().token_requests),
        None => "token requests: see the `token acquired` log lines".to_owned(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
