//! The layer at work: lazy login, one token shared by concurrent calls,
//! recovery from a revoked token, and refresh ahead of expiry.
//!
//! ```sh
//! cargo run --example quickstart
//! ```
//!
//! With no `WOKELO_*` variables set it starts the embedded mock Wokelo API and
//! runs all five steps, printing the mock's counters. With `WOKELO_CLIENT_ID`,
//! `WOKELO_CLIENT_SECRET`, `WOKELO_USERNAME` and `WOKELO_PASSWORD` (and
//! optionally `WOKELO_BASE_URL`) set, it runs steps 1 to 3 against that API.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use tokio::{task::JoinSet, time::Instant};
use tower::{ServiceBuilder, ServiceExt};
use wokelo_auth::{
    testing::MockConfig, BoxError, PasswordGrant, ReplayBody, WokeloAuth, WokeloAuthLayer,
};

use support::Api;

/// The authenticated client: the layer over a hyper-util client.
type Wokelo = WokeloAuth<Client<support::Connector, ReplayBody<Empty<Bytes>>>>;

const SEARCH: &str = "/api/enterprise/company/search?query=stripe";
const LIFETIME: Duration = Duration::from_secs(5);
const TOKEN_LATENCY: Duration = Duration::from_millis(200);

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    support::init_logging();
    // Tokens live 5 s, so that step 5 can wait into the refresh margin. The
    // token endpoint takes 200 ms, as a real one may: step 5's call is
    // answered before the refresh completes. (The mock, like Wokelo's server,
    // revokes the old access token when a refresh succeeds; a call still in
    // flight at that moment gets a 401 and is retried, as in step 4.)
    let api = Api::from_env(MockConfig {
        token_lifetime: LIFETIME,
        token_latency: TOKEN_LATENCY,
        ..MockConfig::default()
    })
    .await?;
    println!("Using {}\n", api.describe());

    // 1) Build the stack. Nothing is fetched yet.
    let client: Wokelo = ServiceBuilder::new()
        .layer(WokeloAuthLayer::new(PasswordGrant::new(api.credentials())))
        .service(support::http_client());
    println!("1) client built; {}", token_requests(&api));

    // 2) The first call logs in, then goes out with the token.
    let (status, body, took) = get(&client, api.url(SEARCH)).await?;
    println!("2) GET {SEARCH} -> {status} in {took} ms (login included)");
    println!("   {}", String::from_utf8_lossy(&body));
    println!("   {}", token_requests(&api));

    // 3) Concurrent calls from clones of the client share the one token.
    let mut calls = JoinSet::new();
    for _ in 0..100 {
        let (client, url) = (client.clone(), api.url(SEARCH));
        calls.spawn(async move { get(&client, url).await });
    }
    let mut ok = 0;
    while let Some(result) = calls.join_next().await {
        ok += usize::from(result??.0 == StatusCode::OK);
    }
    println!(
        "3) 100 concurrent calls: {ok} x 200 OK; {}",
        token_requests(&api)
    );

    let Some(server) = api.mock() else {
        println!(
            "\nSteps 4 and 5 revoke and expire tokens: they run against the embedded mock only."
        );
        return Ok(());
    };

    // 4) The server revokes the token: the call gets a 401, the layer
    // refreshes (the refresh token was revoked too, so it logs in again) and
    // sends the call once more.
    let before = server.stats();
    server.revoke_all();
    let (status, _, took) = get(&client, api.url(SEARCH)).await?;
    // The new token was requested before the two token requests (refresh,
    // then login) that each took TOKEN_LATENCY.
    let token_requested = Instant::now() - TOKEN_LATENCY * 2;
    let after = server.stats();
    println!("4) all tokens revoked; GET -> {status} in {took} ms");
    println!(
        "   refresh attempted: {}, fallback login: {}, API 401s: {}",
        after.refresh_grants - before.refresh_grants,
        after.password_grants - before.password_grants,
        after.unauthorized - before.unauthorized,
    );

    // 5) Wait (for real: this is a demo) into the refresh margin: the layer
    // refreshes 10-20 % of the lifetime before expiry, so at 92 % the call
    // goes out at once with the still-valid token and starts one refresh in
    // the background.
    tokio::time::sleep_until(token_requested + LIFETIME.mul_f64(0.92)).await;
    let before = server.stats();
    let (status, _, took) = get(&client, api.url(SEARCH)).await?;
    println!(
        "5) {:.1} s into a {} s token: GET -> {status} in {took} ms, with the still-valid token",
        token_requested.elapsed().as_secs_f64(),
        LIFETIME.as_secs()
    );
    tokio::time::sleep(TOKEN_LATENCY * 2).await; // let the refresh finish
    let (status, _, _) = get(&client, api.url(SEARCH)).await?;
    let after = server.stats();
    println!(
        "   background refresh: token requests {} -> {} (refresh grants +{}), API 401s +{}",
        before.token_requests,
        after.token_requests,
        after.refresh_grants - before.refresh_grants,
        after.unauthorized - before.unauthorized,
    );
    println!(
        "   next GET -> {status} with the new token (distinct tokens seen: {})",
        after.tokens_presented.len()
    );

    let stats = server.stats();
    let by_status: Vec<String> = stats
        .api_by_status
        .iter()
        .map(|(status, n)| format!("{status}: {n}"))
        .collect();
    println!("\nSummary (the mock's counters):");
    println!(
        "  token requests: {} (password: {}, refresh_token: {})",
        stats.token_requests, stats.password_grants, stats.refresh_grants
    );
    println!(
        "  API requests: {} ({})",
        stats.api_requests,
        by_status.join(", ")
    );
    println!("  distinct tokens seen: {}", stats.tokens_presented.len());
    Ok(())
}

/// GETs `url` through a clone of the client: status, body and time taken
/// in whole milliseconds.
async fn get(client: &Wokelo, url: String) -> Result<(StatusCode, Bytes, u128), BoxError> {
    let started = Instant::now();
    let request = Request::get(url).body(Empty::new())?;
    let response = client.clone().oneshot(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body, started.elapsed().as_millis()))
}

/// The mock counts token requests; the real API does not say.
fn token_requests(api: &Api) -> String {
    match api.mock() {
        Some(server) => format!("token requests: {}", server.stats().token_requests),
        None => "token requests: see the `token acquired` log lines".to_owned(),
    }
}
