//! A command-line tool logs in once and reuses the token across runs, and
//! processes sharing the token file refresh once between them.
//!
//! The process tests re-execute this test binary as workers, each a layer
//! over a `FileStore` on the same file, against one mock server (with
//! refresh-token rotation and reuse protection) in the parent: presenting
//! one refresh token twice would revoke the token family.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Empty;
use wokelo_auth::{
    store::FileStore,
    testing::{MockConfig, MockServer},
    Credentials, PasswordGrant, WokeloAuthLayer,
};

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

/// Both workers' token requests take this long, so that the one refreshing
/// holds the lock while the other looks.
const TOKEN_LATENCY: Duration = Duration::from_secs(1);

/// One worker process: a layer over the `FileStore` at `WORKER_TOKEN_PATH`.
/// Prints `READY`, waits for a line on stdin (so that both workers start
/// together), makes one request and prints `WORKER status=N`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_worker() {
    let (Ok(base), Ok(path)) = (
        std::env::var("WORKER_MOCK_URL"),
        std::env::var("WORKER_TOKEN_PATH"),
    ) else {
        return; // Not started as a worker: nothing to do.
    };
    tracing_subscriber::fmt()
        .with_env_filter("wokelo_auth=debug")
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let config = MockConfig::default();
    let credentials = Credentials::new(
        &config.client_id,
        &config.client_secret,
        &config.username,
        &config.password,
    )
    .with_base_url(base.parse().unwrap());
    let layer = WokeloAuthLayer::builder(PasswordGrant::new(credentials))
        .token_store(FileStore::new(path))
        .build();
    let service = client::<Empty<Bytes>>(&layer);
    println!("READY");
    tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new()))
        .await
        .unwrap()
        .unwrap();
    let status = status_of(&service, format!("{base}/api/echo")).await;
    println!("WORKER status={}", status.as_u16());
}

/// A worker waiting for its go, and its output so far.
struct Worker {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

fn spawn_worker(mock: &MockServer, path: &Path) -> Worker {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "file_worker",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("WORKER_MOCK_URL", mock.base_url())
        .env("WORKER_TOKEN_PATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // libtest prints `test file_worker ... ` before the worker's own output.
    while !line.trim_end().ends_with("READY") {
        line.clear();
        let read = stdout.read_line(&mut line).unwrap();
        assert!(read > 0, "the worker ended before it was ready");
    }
    Worker { child, stdout }
}

/// Starts both workers together and returns each one's status line and log.
fn run_workers(mock: &MockServer, path: &Path) -> Vec<(String, String)> {
    let mut workers = [spawn_worker(mock, path), spawn_worker(mock, path)];
    for worker in &mut workers {
        writeln!(worker.child.stdin.as_mut().unwrap(), "go").unwrap();
    }
    workers
        .into_iter()
        .map(|mut worker| {
            let mut rest = String::new();
            std::io::Read::read_to_string(&mut worker.stdout, &mut rest).unwrap();
            let output = worker.child.wait_with_output().unwrap();
            let log = String::from_utf8_lossy(&output.stderr).into_owned();
            assert!(output.status.success(), "worker failed:\n{rest}\n{log}");
            let status = rest
                .lines()
                .find_map(|l| l.split_once("WORKER ").map(|(_, status)| status))
                .unwrap_or_else(|| panic!("no status from a worker:\n{rest}\n{log}"))
                .to_owned();
            (status, log)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_past_expiry_refresh_once_and_share_the_token() {
    let mock = MockServer::start_with(MockConfig {
        reuse_protection: true,
        token_latency: TOKEN_LATENCY,
        ..MockConfig::default()
    })
    .await;
    let path = token_path();
    // The first run of the tool logs in and stores the token.
    assert_eq!(run(&mock, &path).await, 200);
    assert_eq!(mock.stats().password_grants, 1);

    // Twice: the second round refreshes from the token the first rotated in.
    for round in 1..=2 {
        set_expiry(
            &path,
            unix_ms(SystemTime::now() - Duration::from_secs(3600)),
        );
        mock.reset_stats();
        // Blocking on the children here; the mock serves from the runtime's
        // other worker thread.
        let workers = tokio::task::block_in_place(|| run_workers(&mock, &path));
        let stats = mock.stats();
        let logs: Vec<&str> = workers.iter().map(|(_, log)| log.as_str()).collect();
        for (status, _) in &workers {
            assert_eq!(status, "status=200", "round {round}: {logs:#?}");
        }
        assert_eq!(
            (stats.refresh_grants, stats.password_grants, stats.invalid_grant),
            (1, 0, 0),
            "round {round}: one refresh across both processes, no reuse, no login: {stats:?}\n{logs:#?}"
        );
        assert_eq!(
            stats.tokens_presented.values().copied().collect::<Vec<_>>(),
            [2],
            "round {round}: both processes sent the one refreshed token: {stats:?}"
        );
        assert_eq!(
            logs.iter()
                .filter(|l| l.contains("another process is refreshing the token"))
                .count(),
            1,
            "round {round}: one process waited for the other: {logs:#?}"
        );
    }
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
