//! Runs the embedded mock Wokelo API until Ctrl-C, and prints what to set
//! to point a program at it: the base URL and the mock's credentials as
//! `WOKELO_*` variables.
//!
//! ```sh
//! cargo run --example mock_server
//! ```
//!
//! Used by CI to run the README's code, unchanged, in fresh projects.

use wokelo_auth::testing::MockServer;

#[tokio::main]
async fn main() {
    let server = MockServer::start().await;
    let c = server.config();
    println!("WOKELO_BASE_URL={}", server.base_url());
    println!("WOKELO_CLIENT_ID={}", c.client_id);
    println!("WOKELO_CLIENT_SECRET={}", c.client_secret);
    println!("WOKELO_USERNAME={}", c.username);
    println!("WOKELO_PASSWORD={}", c.password);
    println!("mock Wokelo API running; Ctrl-C stops it");
    let _ = tokio::signal::ctrl_c().await;
}
