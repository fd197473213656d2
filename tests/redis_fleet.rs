//! A fleet of OS processes sharing one token through Redis.
//!
//! Needs `redis-server` on the PATH (`.ci/run` installs it): ignored by
//! default, run with `cargo test --all-features --test redis_fleet --
//! --ignored` (see tests/common/redis.rs).
#![cfg(feature = "redis")]

mod common;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Empty;
use wokelo_auth::{
    store::{RedisStore, TokenStore},
    testing::{MockConfig, MockServer},
    WokeloAuthLayer,
};

use common::{client, get, redis::Redis, send, status_of};

const WORKERS: usize = 4;
const CONCURRENCY: usize = 100;
const LIFETIME: Duration = Duration::from_secs(2);
const RUN: Duration = Duration::from_secs(6); // three lifetimes

/// The fleet tests measure timing-dependent counts: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One worker process: `CONCURRENCY` callers in a loop for `WORKER_RUN_MS`,
/// sharing the token through Redis. Prints `WORKER ok=N failed=M`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_worker() {
    let (Ok(base), Ok(redis)) = (
        std::env::var("WORKER_MOCK_URL"),
        std::env::var("WORKER_REDIS_URL"),
    ) else {
        return; // Not started as a worker: nothing to do.
    };
    let run = Duration::from_millis(std::env::var("WORKER_RUN_MS").unwrap().parse().unwrap());
    tracing_subscriber::fmt()
        .with_env_filter("wokelo_auth=info")
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let config = MockConfig::default();
    let credentials = wokelo_auth::Credentials::new(
        &config.client_id,
        &config.client_secret,
        &config.username,
        &config.password,
    )
    .with_base_url(base.parse().unwrap());
    let layer = WokeloAuthLayer::builder(wokelo_auth::PasswordGrant::new(credentials))
        .token_store(
            RedisStore::open(&redis)
                .unwrap()
                .with_timeout(Duration::from_millis(300)),
        )
        .build();
    let service = client::<Empty<Bytes>>(&layer);
    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (service, base) = (service.clone(), base.clone());
        callers.spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            while started.elapsed() < run {
                match send(&service, get(format!("{base}/api/echo"))).await {
                    Ok(answer) if answer.status == 200 => ok += 1,
                    Ok(answer) => {
                        eprintln!("WORKER failure: HTTP {}", answer.status);
                        failed += 1
                    }
                    Err(e) => {
                        eprintln!("WORKER failure: {e}");
                        failed += 1
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, failed)
        });
    }
    let (mut ok, mut failed) = (0, 0);
    while let Some(r) = callers.join_next().await {
        let (o, f) = r.unwrap();
        ok += o;
        failed += f;
    }
    println!("WORKER ok={ok} failed={failed}");
}

fn spawn_workers(mock: &MockServer, redis_url: &str, run: Duration) -> Vec<Child> {
    (0..WORKERS)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "fleet_worker",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env("WORKER_MOCK_URL", mock.base_url())
                .env("WORKER_REDIS_URL", redis_url)
                .env("WORKER_RUN_MS", run.as_millis().to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect()
}

/// What the workers did: requests that succeeded and failed, and each
/// worker's log.
struct Fleet {
    ok: u64,
    failed: u64,
    logs: Vec<String>,
}

/// Waits for the workers, failing on a crash.
async fn collect(workers: Vec<Child>) -> Fleet {
    let mut fleet = Fleet {
        ok: 0,
        failed: 0,
        logs: Vec::new(),
    };
    for worker in workers {
        let output = tokio::task::spawn_blocking(move || worker.wait_with_output().unwrap())
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "worker failed:\n{stdout}\n{stderr}"
        );
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("WORKER ok=").map(|(_, rest)| rest))
            .unwrap_or_else(|| panic!("no summary from a worker:\n{stdout}\n{stderr}"));
        let (ok, failed) = line.split_once(" failed=").unwrap();
        fleet.ok += ok.parse::<u64>().unwrap();
        fleet.failed += failed.parse::<u64>().unwrap();
        fleet.logs.push(stderr.into_owned());
    }
    fleet
}

async fn mock() -> MockServer {
    MockServer::start_with(MockConfig {
        token_lifetime: LIFETIME,
        reuse_protection: true,
        ..MockConfig::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server on the PATH: run with `-- --ignored` (CI does)"]
async fn a_fleet_shares_one_login_and_one_refresh_per_lifetime() {
    let _serial = SERIAL.lock().await;
    let Some(redis) = Redis::start() else { return };
    let mock = mock().await;
    let Fleet { ok, failed, .. } = collect(spawn_workers(&mock, &redis.url(), RUN)).await;
    let stats = mock.stats();
    let lifetimes = (RUN.as_secs_f64() / LIFETIME.as_secs_f64()).ceil() as u64;
    println!(
        "fleet: {WORKERS} processes x {CONCURRENCY} callers for {RUN:?}: {ok} requests ok, {failed} failed; \
         token requests {} (password {}, refresh {}), invalid_grant {}",
        stats.token_requests, stats.password_grants, stats.refresh_grants, stats.invalid_grant
    );
    assert_eq!(failed, 0);
    assert!(ok > 1000, "the fleet made requests: {ok}");
    assert_eq!(stats.invalid_grant, 0, "{stats:?}");
    assert_eq!(
        stats.password_grants, 1,
        "one login for the fleet: {stats:?}"
    );
    assert!(
        stats.refresh_grants <= lifetimes,
        "at most one refresh per lifetime ({lifetimes}): {stats:?}"
    );
    assert_eq!(
        stats.token_requests,
        stats.password_grants + stats.refresh_grants
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server on the PATH: run with `-- --ignored` (CI does)"]
async fn a_redis_outage_loses_no_request_and_sharing_resumes() {
    let _serial = SERIAL.lock().await;
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let mock = mock().await;
    // Redis dies at 2 s and is back at 4 s; the workers run for 9 s.
    let workers = spawn_workers(&mock, &redis.url(), Duration::from_secs(9));
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = Redis::start_on(redis.port).expect("redis-server restarts");
    // Give the fleet a token lifetime to find Redis again, then count what
    // it does from there on.
    tokio::time::sleep(LIFETIME + Duration::from_millis(500)).await;
    mock.reset_stats();
    let Fleet { ok, failed, logs } = collect(workers).await;
    let after = mock.stats();
    println!(
        "outage: {ok} requests ok, {failed} failed; in the last 2.5 s: token requests {} \
         (password {}, refresh {}), distinct tokens presented {}",
        after.token_requests,
        after.password_grants,
        after.refresh_grants,
        after.tokens_presented.len()
    );
    assert_eq!(failed, 0, "no request lost to the outage");
    assert_eq!(after.invalid_grant, 0, "{after:?}");
    assert!(
        after.token_requests <= 2 && after.password_grants == 0,
        "the fleet shares again: at most one refresh per lifetime, no logins: {after:?}"
    );
    assert!(
        after.tokens_presented.len() as u64 <= after.token_requests + 1,
        "every process used the shared token (the one current when counting began, then each refresh): {after:?}"
    );
    for log in &logs {
        assert_eq!(
            log.matches("the token store is unavailable").count(),
            1,
            "the outage is logged once per process:\n{log}"
        );
        assert_eq!(
            log.matches("the token store is reachable again").count(),
            1,
            "{log}"
        );
    }
    drop(restarted);
}

#[tokio::test]
#[ignore = "needs redis-server on the PATH: run with `-- --ignored` (CI does)"]
async fn entries_that_cannot_be_trusted_are_ignored() {
    let Some(redis) = Redis::start() else { return };
    let mock = mock().await;
    let scope = format!(
        "{}|{}|{}",
        mock.base_url(),
        mock.config().client_id,
        mock.config().username
    );
    let key = wokelo_auth::store::EncryptionKey::from_bytes([7; 32]);
    let store = RedisStore::open(&redis.url()).unwrap();
    let sealed = RedisStore::open(&redis.url())
        .unwrap()
        .with_encryption_key(key.clone());
    let other_key = RedisStore::open(&redis.url())
        .unwrap()
        .with_encryption_key(wokelo_auth::store::EncryptionKey::from_bytes([8; 32]));
    let raw = ::redis::Client::open(redis.url()).unwrap();
    let mut conn = raw.get_multiplexed_async_connection().await.unwrap();
    let token_key = store.token_key(&scope);
    let valid = wokelo_auth::store::StoredToken::new(
        1,
        wokelo_auth::Token::new(mock.issue_token()),
        std::time::SystemTime::now() + Duration::from_secs(60),
    );
    let lease = store
        .lock(&scope, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();

    // Written for another account, then moved under this key.
    assert!(store
        .save(
            "another|account|x",
            &valid,
            &lease_for(&store, "another|account|x").await
        )
        .await
        .unwrap());
    let foreign: Vec<u8> = ::redis::cmd("GET")
        .arg(store.token_key("another|account|x"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = ::redis::cmd("SET")
        .arg(&token_key)
        .arg(foreign)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        store.load(&scope).await.unwrap().is_none(),
        "another key's entry is ignored"
    );

    // Corrupt.
    let _: () = ::redis::cmd("SET")
        .arg(&token_key)
        .arg("{garbage")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        store.load(&scope).await.unwrap().is_none(),
        "a corrupt entry is ignored"
    );

    // Expired (the entry claims an expiry in the past).
    let expired = wokelo_auth::store::StoredToken::new(
        2,
        wokelo_auth::Token::new("old"),
        std::time::SystemTime::now() - Duration::from_secs(1),
    );
    let _ = store.save(&scope, &expired, &lease).await.unwrap();
    assert!(
        store.load(&scope).await.unwrap().is_none(),
        "an expired entry is ignored"
    );

    // Sealed with one key, read with another or with none.
    assert!(sealed.save(&scope, &valid, &lease).await.unwrap());
    assert_eq!(sealed.load(&scope).await.unwrap().map(|s| s.id()), Some(1));
    assert!(
        other_key.load(&scope).await.unwrap().is_none(),
        "wrong encryption key"
    );
    assert!(
        store.load(&scope).await.unwrap().is_none(),
        "sealed but no key"
    );

    // A fenced write by a lease that does not hold the lock is refused.
    assert!(!store
        .save(&scope, &valid, &wokelo_auth::store::Lease::random())
        .await
        .unwrap());

    // And a layer facing only untrusted entries logs in itself.
    let _: () = ::redis::cmd("SET")
        .arg(&token_key)
        .arg("{garbage")
        .query_async(&mut conn)
        .await
        .unwrap();
    store.unlock(&scope, &lease).await.unwrap();
    let layer = common::builder(&mock).token_store(store.clone()).build();
    let service = client::<Empty<Bytes>>(&layer);
    assert_eq!(status_of(&service, mock.url("/api/echo")).await, 200);
    assert_eq!(mock.stats().password_grants, 1);
    assert!(
        store.load(&scope).await.unwrap().is_some(),
        "the fresh token was shared"
    );
}

async fn lease_for(store: &RedisStore, scope: &str) -> wokelo_auth::store::Lease {
    store
        .lock(scope, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap()
}

/// The account key the mock's credentials are stored under.
fn scope_of(mock: &MockServer) -> String {
    format!(
        "{}|{}|{}",
        mock.base_url(),
        mock.config().client_id,
        mock.config().username
    )
}

async fn pttl(conn: &mut ::redis::aio::MultiplexedConnection, key: &str) -> i64 {
    ::redis::cmd("PTTL")
        .arg(key)
        .query_async(conn)
        .await
        .unwrap()
}

#[tokio::test]
#[ignore = "needs redis-server on the PATH: run with `-- --ignored` (CI does)"]
async fn entries_outlive_their_access_token_by_the_refresh_token_lifetime() {
    let Some(redis) = Redis::start() else { return };
    let lifetime = Duration::from_secs(60);
    let store = RedisStore::open(&redis.url())
        .unwrap()
        .with_refresh_token_lifetime(lifetime);
    let raw = ::redis::Client::open(redis.url()).unwrap();
    let mut conn = raw.get_multiplexed_async_connection().await.unwrap();
    let in_a_second = std::time::SystemTime::now() + Duration::from_secs(1);
    let lease = lease_for(&store, "k").await;

    // With a refresh token: kept for the access token's second and the
    // refresh-token lifetime after it.
    let refreshable = wokelo_auth::store::StoredToken::new(
        1,
        wokelo_auth::Token::new("a").with_refresh_token("r"),
        in_a_second,
    );
    assert!(store.save("k", &refreshable, &lease).await.unwrap());
    let ttl = pttl(&mut conn, &store.token_key("k")).await;
    assert!((59_000..=61_000).contains(&ttl), "PTTL {ttl}");

    // Without one: gone with the access token.
    let access_only =
        wokelo_auth::store::StoredToken::new(2, wokelo_auth::Token::new("a"), in_a_second);
    assert!(store.save("k", &access_only, &lease).await.unwrap());
    let ttl = pttl(&mut conn, &store.token_key("k")).await;
    assert!((1..=1_000).contains(&ttl), "PTTL {ttl}");

    // A refresh-token lifetime and a lock TTL past anything Redis accepts
    // are clamped, not refused.
    let forever = RedisStore::open(&redis.url())
        .unwrap()
        .with_refresh_token_lifetime(Duration::MAX);
    store.unlock("k", &lease).await.unwrap();
    let lease = forever
        .lock("k", Duration::MAX)
        .await
        .expect("a huge lock TTL is clamped")
        .expect("the lock is free");
    let century_ms = 100 * 365 * 24 * 60 * 60 * 1000_i64;
    let ttl = pttl(&mut conn, &forever.lock_key("k")).await;
    assert!(ttl > century_ms - 60_000 && ttl <= century_ms, "PTTL {ttl}");
    assert!(forever.save("k", &refreshable, &lease).await.unwrap());
    let ttl = pttl(&mut conn, &forever.token_key("k")).await;
    assert!(ttl > century_ms - 60_000 && ttl <= century_ms, "PTTL {ttl}");
}

#[tokio::test]
#[ignore = "needs redis-server on the PATH: run with `-- --ignored` (CI does)"]
async fn an_expired_shared_access_token_is_refreshed_not_logged_in_again() {
    let Some(redis) = Redis::start() else { return };
    let mock = MockServer::start_with(MockConfig {
        reuse_protection: true,
        ..MockConfig::default()
    })
    .await;
    let store = RedisStore::open(&redis.url()).unwrap();
    let run = || async {
        let layer = common::builder(&mock).token_store(store.clone()).build();
        status_of(&client::<Empty<Bytes>>(&layer), mock.url("/api/echo")).await
    };
    assert_eq!(run().await, 200);
    assert_eq!(mock.stats().password_grants, 1);

    // The entry as another process finds it an hour after the access token
    // expired (written plain, so the test can change it).
    let raw = ::redis::Client::open(redis.url()).unwrap();
    let mut conn = raw.get_multiplexed_async_connection().await.unwrap();
    let token_key = store.token_key(&scope_of(&mock));
    let stored: Vec<u8> = ::redis::cmd("GET")
        .arg(&token_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut entry: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    assert!(entry["refresh_token"].is_string(), "{entry}");
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    entry["expires_at_ms"] = (hour_ago
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64)
        .into();
    let _: () = ::redis::cmd("SET")
        .arg(&token_key)
        .arg(serde_json::to_vec(&entry).unwrap())
        .query_async(&mut conn)
        .await
        .unwrap();

    mock.reset_stats();
    assert_eq!(run().await, 200);
    let stats = mock.stats();
    assert_eq!(
        (
            stats.refresh_grants,
            stats.password_grants,
            stats.invalid_grant
        ),
        (1, 0, 0),
        "a refresh grant from the shared refresh token: {stats:?}"
    );
}
