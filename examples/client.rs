//! The ready client: the production stack in one line, and what it tells you.
//!
//! ```sh
//! cargo run --example client
//! ```
//!
//! With `WOKELO_CLIENT_ID`, `WOKELO_CLIENT_SECRET`, `WOKELO_USERNAME` and
//! `WOKELO_PASSWORD` set (and optionally `WOKELO_BASE_URL`) it talks to that
//! API; without them, to the embedded mock.

#[path = "support/mod.rs"]
mod support;

use serde_json::{json, Value};
use wokelo_auth::{testing::MockConfig, BoxError, Client, ClientErrorKind};

use support::Api;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    support::init_logging();
    let api = Api::from_env(MockConfig::default()).await?;
    println!("Using {}", api.describe());

    // In your code: `let client = Client::from_env()?;`
    let client = Client::new(api.credentials());

    // Fail at start-up, not on the first user request, if the credentials
    // are wrong.
    client.handle().login().await?;
    println!("1) logged in");

    let found: Value = client
        .get("/api/enterprise/company/search?query=stripe")
        .await?
        .json()
        .await?;
    println!("2) GET search -> {}", found["results"][0]["name"]);

    if api.mock().is_some() {
        let echoed: Value = client
            .post_json("/api/echo", &json!({"companies": ["stripe"]}))
            .await?
            .json()
            .await?;
        println!(
            "3) POST /api/echo -> {} {} bytes",
            echoed["method"], echoed["body_len"]
        );
        let error = client
            .get("/api/forbidden")
            .await?
            .error_for_status()
            .await
            .expect_err("the mock forbids this path");
        assert_eq!(error.kind(), ClientErrorKind::Status);
        println!("4) GET /api/forbidden -> {error}");
    }

    let snapshot = client.handle().snapshot();
    let grants = snapshot.grants.unwrap_or_default();
    println!(
        "token held: {}; token requests: {} (password {}, refresh {})",
        snapshot.token.is_some(),
        snapshot.fetches.started(),
        grants.password,
        grants.refresh_token
    );
    Ok(())
}
