//! `RedisStore` against a Redis that asks for a password (`requirepass`):
//! with the password in its URL the store shares the token; with a wrong one
//! the layer goes on with tokens of its own and says why, and the password
//! appears in no log line, `Debug` output or error.
#![cfg(feature = "redis")]

mod common;

use std::error::Error as _;

use bytes::Bytes;
use http_body_util::Empty;
use wokelo_auth::{store::RedisStore, testing::MockServer};

use common::{
    client,
    redis::{free_port, Redis},
    status_of, Captured,
};

const PASSWORD: &str = "redis-pass-7d1c4e";

/// The error, its sources, and its `Debug`, as one text.
fn whole(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = format!("{error} / {error:?}");
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(&format!(" / {e} / {e:?}"));
        source = e.source();
    }
    text
}

/// Sends one request through each of `layers` fresh layers, each with its
/// own store from `store` (separate processes, as far as the store can
/// tell); returns how many token requests the mock saw.
async fn logins(server: &MockServer, layers: usize, store: impl Fn() -> RedisStore) -> u64 {
    server.reset_stats();
    for _ in 0..layers {
        let layer = common::builder(server).token_store(store()).build();
        let service = client::<Empty<Bytes>>(&layer);
        assert_eq!(status_of(&service, server.url("/api/echo")).await, 200);
    }
    server.stats().token_requests
}

#[tokio::test]
#[ignore = "needs redis-server on the PATH: run with `-- --ignored` (CI does)"]
async fn a_password_protected_redis_shares_the_token_and_never_shows_the_password() {
    let Some(redis) = Redis::start_with(free_port(), &["--requirepass", PASSWORD]) else {
        return;
    };
    let captured = Captured::default();
    let _guard = tracing::subscriber::set_default(captured.subscriber());
    let server = MockServer::start().await;
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/", redis.port);

    // Two layers on one Redis: one login between them.
    let shared = logins(&server, 2, || RedisStore::open(&url).unwrap()).await;
    assert_eq!(shared, 1, "one login, shared");
    let mut connection = ::redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("wokelo-auth:v1:*:token")
        .query(&mut connection)
        .unwrap();
    assert_eq!(keys.len(), 1, "the token is stored: {keys:?}");

    // A wrong password: the store cannot be used; the layer logs in on its
    // own at once, and says that the store is unavailable, and why.
    let wrong = format!("redis://:not-{PASSWORD}@127.0.0.1:{}/", redis.port);
    let own = logins(&server, 1, || RedisStore::open(&wrong).unwrap()).await;
    assert_eq!(own, 1, "a login of its own");
    let logs = captured.text();
    assert!(
        logs.contains("the token store is unavailable")
            && logs.contains("Redis refused the user or password in the store's URL"),
        "the outage and its cause are logged: {logs}"
    );

    // Nowhere the password: logs, the stores' Debug, a URL that does not
    // parse.
    let store = RedisStore::open(&url).unwrap();
    let debug = format!("{store:?} {:?}", RedisStore::open(&wrong).unwrap());
    assert!(debug.contains("127.0.0.1"), "{debug}");
    let unparsable = RedisStore::open(&format!("redis://:{PASSWORD}@127.0.0.1:notaport/"))
        .expect_err("not a Redis URL");
    let error = whole(&unparsable);
    assert!(error.contains("invalid Redis URL"), "{error}");
    assert!(unparsable.source().is_some());
    for (what, text) in [("logs", &logs), ("Debug", &debug), ("error", &error)] {
        assert!(
            !text.contains(PASSWORD),
            "the Redis password is in the {what}: {text}"
        );
    }
}

/// Over TLS (`rediss://`): a certificate no public authority issued is
/// refused (the store reports why, the layer logs in on its own); with the
/// private authority given (`RedisStore::open_with_ca`), the certificate is
/// verified and the token is shared over TLS; a CA that is not PEM is a
/// clear error.
#[tokio::test]
#[ignore = "needs redis-server on the PATH: run with `-- --ignored` (CI does)"]
async fn a_tls_redis_is_used_with_its_private_ca_and_refused_without_it() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let ca = certified.cert.pem();
    let dir = std::env::temp_dir().join(format!("wokelo-redis-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &ca).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let tls_port = free_port().to_string();
    let started = Redis::start_with(
        free_port(),
        &[
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
            "--tls-ca-cert-file",
            cert.to_str().unwrap(),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            PASSWORD,
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
    let Some(_redis) = started else { return };
    let captured = Captured::default();
    let _guard = tracing::subscriber::set_default(captured.subscriber());
    let server = MockServer::start().await;
    let url = format!("rediss://:{PASSWORD}@127.0.0.1:{tls_port}/");

    // The public roots only: the certificate is not trusted.
    let own = logins(&server, 1, || RedisStore::open(&url).unwrap()).await;
    assert_eq!(own, 1, "a login of its own");
    let logs = captured.text();
    assert!(
        logs.contains("the token store is unavailable; fetching tokens in this process")
            && logs.contains("cannot connect to Redis")
            && logs.to_lowercase().contains("certificate"),
        "the refused certificate is logged as the cause: {logs}"
    );

    // With its CA: verified, and two layers share one login over TLS.
    let shared = logins(&server, 2, || {
        RedisStore::open_with_ca(&url, ca.as_bytes()).unwrap()
    })
    .await;
    assert_eq!(shared, 1, "one login, shared over TLS");

    let error = RedisStore::open_with_ca(&url, b"not a certificate").expect_err("not PEM");
    let error = whole(&error);
    assert!(error.contains("no certificate in the CA PEM"), "{error}");
    for text in [captured.text(), error] {
        assert!(!text.contains(PASSWORD), "{text}");
    }
}
