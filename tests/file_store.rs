//! A command-line tool logs in once and reuses the token across runs.

mod common;

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

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

/// A token file in a folder of its own.
fn token_path() -> PathBuf {
    std::env::temp_dir()
        .join(format!(
            "wokelo-auth-cli-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ))
        .join("token.json")
}

/// Rewrites the stored entry's `expires_at_ms`, as a later run (or a
/// corrupt file) finds it.
fn set_expiry(path: &Path, expires_at_ms: u64) {
    let mut entry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert!(entry["refresh_token"].is_string(), "{entry}");
    entry["expires_at_ms"] = expires_at_ms.into();
    std::fs::write(path, serde_json::to_vec(&entry).unwrap()).unwrap();
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test]
async fn a_second_run_reuses_the_stored_token() {
    let server = MockServer::start().await;
    let path = token_path();

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

#[tokio::test]
async fn a_run_after_the_access_token_expired_refreshes_instead_of_logging_in() {
    let server = MockServer::start().await;
    let path = token_path();
    assert_eq!(run(&server, &path).await, 200);
    assert_eq!(server.stats().password_grants, 1);

    // A week later: the access token has expired, its refresh token has not.
    set_expiry(
        &path,
        unix_ms(SystemTime::now() - Duration::from_secs(7 * 24 * 60 * 60)),
    );
    server.reset_stats();
    assert_eq!(run(&server, &path).await, 200);
    let stats = server.stats();
    assert_eq!(
        (
            stats.refresh_grants,
            stats.password_grants,
            stats.invalid_grant
        ),
        (1, 0, 0),
        "a refresh grant from the stored refresh token, not a login: {stats:?}"
    );

    // The refreshed token was stored: the next run fetches nothing.
    server.reset_stats();
    assert_eq!(run(&server, &path).await, 200);
    assert_eq!(server.stats().token_requests, 0);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[tokio::test]
async fn a_stored_expiry_out_of_range_is_ignored_and_the_run_logs_in() {
    let server = MockServer::start().await;
    let path = token_path();
    assert_eq!(run(&server, &path).await, 200);
    // u64::MAX ms is past what SystemTime holds on some platforms; ten years
    // ahead is longer than any token lives. Neither may panic or be believed.
    let ten_years = unix_ms(SystemTime::now() + Duration::from_secs(10 * 365 * 24 * 60 * 60));
    for (round, expires_at_ms) in [u64::MAX, ten_years].into_iter().enumerate() {
        set_expiry(&path, expires_at_ms);
        server.reset_stats();
        assert_eq!(run(&server, &path).await, 200);
        let stats = server.stats();
        assert_eq!(
            (stats.password_grants, stats.refresh_grants),
            (1, 0),
            "round {round}: the entry is ignored, the run logs in: {stats:?}"
        );
    }
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
