//! A command-line tool logs in once and reuses the token across runs.

mod common;

use std::path::Path;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Empty;
use wokelo_auth::{store::FileStore, testing::MockServer};

use common::{client, status_of};

/// One run of the tool: a fresh layer (as a fresh process would have) with
/// the file store at `path`, making one request.
async fn run(server: &MockServer, path: &Path) -> StatusCode {
    let layer = common::builder(server)
        .token_store(FileStore::new(path))
        .build();
    let service = client::<Empty<Bytes>>(&layer);
    status_of(&service, server.url("/api/echo")).await
}

#[tokio::test]
async fn a_second_run_reuses_the_stored_token() {
    let server = MockServer::start().await;
    let path = std::env::temp_dir()
        .join(format!(
            "wokelo-auth-cli-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ))
        .join("token.json");

    for _ in 0..3 {
        assert_eq!(run(&server, &path).await, 200);
    }
    let stats = server.stats();
    assert_eq!(
        stats.token_requests, 1,
        "one login for three runs: {stats:?}"
    );
    assert_eq!(stats.tokens_presented.len(), 1);

    // A revoked stored token: the run gets a 401, refreshes (from the stored
    // refresh token, refused after revocation), logs in and stores the new one.
    server.revoke_all();
    assert_eq!(run(&server, &path).await, 200);
    assert_eq!(run(&server, &path).await, 200);
    let stats = server.stats();
    assert_eq!(
        stats.tokens_issued, 2,
        "the new token was stored and reused: {stats:?}"
    );

    // A corrupt file is ignored: the run logs in again.
    std::fs::write(&path, b"not a token").unwrap();
    assert_eq!(run(&server, &path).await, 200);
    assert_eq!(server.stats().tokens_issued, 3);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
