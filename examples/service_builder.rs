//! The layer in a production client stack, with tower's buffer, concurrency
//! limit and timeout, and how to tell their errors apart.
//!
//! ```sh
//! cargo run --example service_builder
//! ```
//!
//! Against the embedded mock (no `WOKELO_*` variables set) it also shows the
//! timeout covering a slow token fetch.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use tokio::task::JoinSet;
use tower::{timeout::error::Elapsed, Service, ServiceBuilder, ServiceExt};
use wokelo_auth::{
    testing::{MockConfig, TokenFault},
    BoxError, PasswordGrant, WokeloAuthLayer,
};

use support::Api;

const SEARCH: &str = "/api/enterprise/company/search?query=stripe";
/// The deadline of one call, token wait and retry included.
const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    support::init_logging();
    let api = Api::from_env(MockConfig::default()).await?;
    println!("Using {}\n", api.describe());

    // Outermost first; a request passes down through each layer in turn.
    let client = ServiceBuilder::new()
        // Buffer: the stack becomes a cheap `Clone + Send + Sync` handle to a
        // worker task, to share across tasks. Callers wait here for a slot
        // (64) when everything below is busy. It needs errors that convert
        // into `BoxError`; Timeout's already are.
        .buffer(64)
        // At most 8 calls in flight to the API. A call keeps its permit while
        // it waits for a token and through its retry after a 401, so retries
        // never exceed the limit.
        .concurrency_limit(8)
        // One deadline for the whole call: waiting for a token (perhaps a
        // login), the request, and its one retry after a 401. Inside the auth
        // layer it would bound each attempt but not the token wait. (Time
        // spent queueing in Buffer is not counted; put another Timeout above
        // Buffer if that matters.)
        .timeout(TIMEOUT)
        // Attaches the token, refreshes it, retries once on a 401.
        .layer(WokeloAuthLayer::new(PasswordGrant::new(api.credentials())))
        .service(support::http_client());

    // Twenty concurrent calls, eight at a time, one login.
    let mut calls = JoinSet::new();
    for _ in 0..20 {
        let (client, url) = (client.clone(), api.url(SEARCH));
        calls.spawn(async move { get(client, url).await });
    }
    let mut ok = 0;
    while let Some(result) = calls.join_next().await {
        match result? {
            Ok(StatusCode::OK) => ok += 1,
            Ok(status) => println!("  unexpected {status}"),
            Err(e) => println!("  failed: {}", describe(&e)),
        }
    }
    println!("20 concurrent calls: {ok} x 200 OK");
    if let Some(server) = api.mock() {
        println!("  token requests: {}", server.stats().token_requests);
    }

    let Some(server) = api.mock() else {
        return Ok(());
    };
    // A slow token endpoint: the token is revoked, and the refresh takes a
    // second longer than the deadline, which covers that wait, so the call
    // times out. The fetch goes on in the background; the next call uses its
    // token.
    server.revoke_all();
    server.fail_next_token_requests(1, TokenFault::Delay(TIMEOUT + Duration::from_secs(1)));
    match get(client.clone(), api.url(SEARCH)).await {
        Ok(status) => println!("revoked, slow refresh: GET -> {status} (expected a timeout)"),
        Err(e) => println!("revoked, slow refresh: GET -> {}", describe(&e)),
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = get(client.clone(), api.url(SEARCH)).await?;
    println!("after the background fetch finished: GET -> {status}");
    let stats = server.stats();
    println!(
        "  token requests: {} (password: {}, refresh_token: {}), API 401s: {}",
        stats.token_requests, stats.password_grants, stats.refresh_grants, stats.unauthorized
    );
    Ok(())
}

/// GETs `url` through the stack; returns the status.
async fn get<S, B>(client: S, url: String) -> Result<StatusCode, BoxError>
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>, Error = BoxError>,
{
    let request = Request::get(url).body(Empty::new())?;
    Ok(client.oneshot(request).await?.status())
}

/// Which layer failed. Errors come up boxed; downcast to find out.
fn describe(error: &BoxError) -> String {
    if error.is::<Elapsed>() {
        "timed out (tower Timeout)".to_owned()
    } else if let Some(wokelo_auth::Error::Token(e)) = error.downcast_ref() {
        format!("no token ({:?}): {e}", e.kind())
    } else {
        format!("failed: {error}")
    }
}
