//! Handles on the token: read it, refresh it, drop it, log in eagerly, and a
//! snapshot of the cache's state and counters. Against the mock server.

mod common;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use wokelo_auth::{
    testing::{ApiFault, MockServer, TokenFault},
    Credentials, PasswordGrant, TokenErrorKind, WokeloAuthLayer,
};

use common::{client, get, send, status_of};

#[tokio::test]
async fn token_twice_is_one_token_request_and_the_token_requests_carry() {
    let server = MockServer::start().await;
    let layer = common::builder(&server).build();
    let auth = layer.handle();
    let first = auth.token().await.unwrap();
    let second = auth.token().await.unwrap();
    assert_eq!(first.expose_secret(), second.expose_secret());
    assert_eq!(first.generation(), second.generation());
    assert_eq!(server.stats().token_requests, 1);

    let service = client::<Empty<Bytes>>(&layer);
    assert_eq!(status_of(&service, server.url("/api/echo")).await, 200);
    let stats = server.stats();
    assert_eq!(stats.token_requests, 1, "the request used the same token");
    assert_eq!(stats.tokens_presented[first.expose_secret()], 1);
    assert_eq!(
        first.authorization(),
        format!("Bearer {}", first.expose_secret()).as_str()
    );
    assert!(first.authorization().is_sensitive());
    let left = first.expires_in();
    assert!(
        left > Duration::from_secs(3590) && left <= Duration::from_secs(3600),
        "{left:?}"
    );
}

#[tokio::test]
async fn the_service_hands_out_the_layers_handle() {
    let server = MockServer::start().await;
    let layer = common::builder(&server).build();
    let service = client::<Empty<Bytes>>(&layer);
    let from_service = service.handle().token().await.unwrap();
    let from_layer = layer.handle().token().await.unwrap();
    assert_eq!(from_service.expose_secret(), from_layer.expose_secret());
    assert_eq!(server.stats().token_requests, 1);
    assert_eq!(service.handle().api_base(), layer.api_base());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_stampede_of_token_calls_and_requests_is_one_token_request() {
    let server = MockServer::start().await;
    let layer = common::builder(&server).build();
    let service = client::<Empty<Bytes>>(&layer);
    let mut tokens = tokio::task::JoinSet::new();
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..100 {
        if i % 2 == 0 {
            let auth = layer.handle();
            tokens.spawn(async move { auth.token().await });
        } else {
            let service = service.clone();
            let url = server.url("/api/echo");
            requests.spawn(async move { send(&service, get(url)).await });
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    while let Some(token) = tokens.join_next().await {
        seen.insert(token.unwrap().unwrap().expose_secret().to_owned());
    }
    while let Some(answer) = requests.join_next().await {
        assert_eq!(answer.unwrap().unwrap().status, 200);
    }
    let stats = server.stats();
    assert_eq!(stats.token_requests, 1, "{stats:?}");
    assert_eq!(seen.len(), 1, "every token() call got the same token");
    let token = seen.into_iter().next().unwrap();
    assert_eq!(stats.tokens_presented[&token], 50);
    let snapshot = layer.handle().snapshot();
    assert_eq!(snapshot.fetches.started(), 1);
    assert_eq!(snapshot.fetches.missing, 1);
    assert_eq!(snapshot.fetches.attempts, 1);
}

#[tokio::test]
async fn refresh_gets_a_new_token_and_the_old_one_is_no_longer_attached() {
    let server = MockServer::start().await;
    let layer = common::builder(&server).build();
    let auth = layer.handle();
    let service = client::<Empty<Bytes>>(&layer);
    assert_eq!(status_of(&service, server.url("/api/echo")).await, 200);
    let old = auth.token().await.unwrap();

    let new = auth.refresh().await.unwrap();
    assert_ne!(new.expose_secret(), old.expose_secret());
    assert!(new.generation() > old.generation());
    let stats = server.stats();
    assert_eq!(
        (stats.token_requests, stats.refresh_grants),
        (2, 1),
        "renewed with the refresh token"
    );
    let grants = auth
        .snapshot()
        .grants
        .expect("PasswordGrant counts its grants");
    assert_eq!(
        (
            grants.password,
            grants.refresh_token,
            grants.refresh_refused
        ),
        (1, 1, 0),
        "the snapshot counts the grants the mock saw"
    );

    assert_eq!(status_of(&service, server.url("/api/echo")).await, 200);
    let stats = server.stats();
    assert_eq!(stats.tokens_presented[old.expose_secret()], 1);
    assert_eq!(stats.tokens_presented[new.expose_secret()], 1);
    assert_eq!(stats.unauthorized, 0, "the new token went out first time");
    assert_eq!(
        auth.token().await.unwrap().expose_secret(),
        new.expose_secret()
    );
}

#[tokio::test]
async fn two_concurrent_refreshes_make_one_token_request() {
    let server = MockServer::start_with(wokelo_auth::testing::MockConfig {
        token_latency: Duration::from_millis(50),
        ..Default::default()
    })
    .await;
    let layer = common::builder(&server).build();
    let auth = layer.handle();
    let before = auth.token().await.unwrap();
    server.reset_stats();

    let other = layer.handle();
    let (a, b) = tokio::join!(auth.refresh(), other.refresh());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.expose_secret(), b.expose_secret());
    assert_ne!(a.expose_secret(), before.expose_secret());
    assert_eq!(server.stats().token_requests, 1);
    assert_eq!(auth.snapshot().fetches.forced, 1);
}

#[tokio::test]
async fn invalidate_makes_the_next_request_fetch() {
    let server = MockServer::start().await;
    let layer = common::builder(&server).build();
    let auth = layer.handle();
    let service = client::<Empty<Bytes>>(&layer);
    assert_eq!(status_of(&service, server.url("/api/echo")).await, 200);
    assert!(auth.snapshot().token.is_some());

    auth.invalidate();
    assert!(auth.snapshot().token.is_none());
    assert_eq!(server.stats().token_requests, 1, "nothing fetched yet");
    assert_eq!(status_of(&service, server.url("/api/echo")).await, 200);
    let stats = server.stats();
    assert_eq!((stats.token_requests, stats.refresh_grants), (2, 1));
    assert_eq!(stats.tokens_presented.len(), 2);
    assert_eq!(auth.snapshot().fetches.missing, 2);
}

#[tokio::test(start_paused = true)]
async fn login_with_a_wrong_password_fails_fast_then_once_per_backoff_window() {
    let server = MockServer::start().await;
    let c = server.config();
    let credentials = Credentials::new(&c.client_id, &c.client_secret, &c.username, "wrong")
        .with_base_url(server.base_url().parse().unwrap());
    let layer = WokeloAuthLayer::builder(PasswordGrant::new(credentials))
        .credentials_backoff(Duration::from_secs(30))
        .build();
    let auth = layer.handle();

    let started = tokio::time::Instant::now();
    let error = auth.login().await.unwrap_err();
    assert_eq!(error.kind(), TokenErrorKind::CredentialsRejected);
    assert_eq!(started.elapsed(), Duration::ZERO, "no retry, no backoff");
    assert_eq!(server.stats().token_requests, 1);

    // Probes inside the window: the same error, no token request.
    for _ in 0..5 {
        tokio::time::advance(Duration::from_secs(5)).await;
        let again = auth.login().await.unwrap_err();
        assert_eq!(again.to_string(), error.to_string());
    }
    assert_eq!(server.stats().token_requests, 1);
    let snapshot = auth.snapshot();
    assert!(!snapshot.is_healthy());
    assert!(snapshot.token.is_none());
    let left = snapshot.failing_fast_for.expect("the window is open");
    assert_eq!(left, Duration::from_secs(5));
    let last = snapshot.last_error.expect("the rejection is kept");
    assert_eq!(last.error.kind(), TokenErrorKind::CredentialsRejected);
    assert_eq!(snapshot.fetches.failed.credentials_rejected, 1);

    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(auth.login().await.is_err());
    assert_eq!(server.stats().token_requests, 2, "one try per window");
}

#[tokio::test]
async fn login_warms_the_cache_for_the_requests() {
    let server = MockServer::start().await;
    let layer = common::builder(&server).build();
    assert!(layer.handle().snapshot().is_healthy(), "nothing asked yet");
    layer.handle().login().await.unwrap();
    assert_eq!(server.stats().token_requests, 1);
    let service = client::<Empty<Bytes>>(&layer);
    for _ in 0..3 {
        assert_eq!(status_of(&service, server.url("/api/echo")).await, 200);
    }
    layer.handle().login().await.unwrap();
    assert_eq!(server.stats().token_requests, 1);
}

#[tokio::test]
async fn the_snapshot_counts_a_scripted_sequence_exactly() {
    let server = MockServer::start().await;
    let layer = common::builder(&server).build();
    let auth = layer.handle();
    let service = client::<Empty<Bytes>>(&layer);

    // A cold fetch.
    assert_eq!(status_of(&service, server.url("/api/echo")).await, 200);
    // A revocation: 401, refresh (refused: revoked) and fallback login, retry.
    server.revoke_all();
    assert_eq!(status_of(&service, server.url("/api/echo")).await, 200);
    // A forced refresh.
    auth.refresh().await.unwrap();
    // 401 to a valid token, and 401 again to the fresh one: returned.
    server.fail_next_api_requests(2, ApiFault::Unauthorized);
    assert_eq!(status_of(&service, server.url("/api/echo")).await, 401);
    // A dropped token whose fetch gets an unusable answer.
    server.fail_next_token_requests(1, TokenFault::Malformed);
    auth.invalidate();
    let error = send(&service, get(server.url("/api/echo")))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("token"), "{error}");

    let s = auth.snapshot();
    let f = &s.fetches;
    assert_eq!(
        (f.missing, f.refresh_ahead, f.unauthorized, f.forced),
        (2, 0, 2, 1)
    );
    assert_eq!((f.succeeded, f.failed.total()), (4, 1));
    assert_eq!(f.failed.invalid_response, 1);
    assert_eq!(f.failed.get(TokenErrorKind::InvalidResponse), 1);
    assert_eq!(f.attempts, 5, "one source call per fetch");
    assert_eq!(
        server.stats().token_requests,
        6,
        "the fallback login after the refused refresh is the sixth"
    );
    let stats = server.stats();
    let g = s.grants.expect("PasswordGrant counts its grants");
    assert_eq!(
        (g.password, g.refresh_token),
        (stats.password_grants, stats.refresh_grants),
        "the snapshot's grants are the mock's"
    );
    assert_eq!(g.refresh_refused, 1, "the revoked refresh token");
    let u = &s.unauthorized;
    assert_eq!((u.tokens_dropped, u.retried, u.returned), (2, 2, 1));
    assert_eq!(u.received(), 3);
    assert_eq!(server.stats().unauthorized, 3);
    assert!(s.token.is_none());
    assert!(!s.fetching);
    let last = s.last_error.as_ref().expect("the failed fetch");
    assert_eq!(last.error.kind(), TokenErrorKind::InvalidResponse);
    assert!(s
        .failing_fast_for
        .is_some_and(|d| d <= Duration::from_secs(1)));
    assert!(last.at <= std::time::SystemTime::now());
}

#[tokio::test]
async fn nothing_a_handle_prints_contains_a_secret() {
    let server = MockServer::start().await;
    let layer = common::builder(&server).build();
    let auth = layer.handle();
    let service = client::<Empty<Bytes>>(&layer);
    assert_eq!(status_of(&service, server.url("/api/echo")).await, 200);
    let token = auth.refresh().await.unwrap();
    server.fail_next_token_requests(1, TokenFault::Malformed);
    assert!(auth.refresh().await.is_err());
    let snapshot = auth.snapshot();
    assert!(snapshot.token.is_some() && snapshot.last_error.is_some());

    let printed = format!("{snapshot:?} {snapshot:#?} {token:?} {auth:?} {layer:?}");
    let c = server.config();
    for secret in [
        token.expose_secret(),
        c.password.as_str(),
        c.client_secret.as_str(),
    ] {
        assert!(!printed.contains(secret), "{printed}");
    }
    for presented in server.stats().tokens_presented.keys() {
        assert!(!printed.contains(presented.as_str()), "{printed}");
    }
    assert!(printed.contains("[REDACTED]"));
}

#[tokio::test]
async fn refresh_through_a_shared_store_fetches_and_shares_the_new_token() {
    let server = MockServer::start().await;
    let path = std::env::temp_dir()
        .join(format!(
            "wokelo-auth-handles-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ))
        .join("token.json");
    let layer = |server: &MockServer| {
        common::builder(server)
            .token_store(wokelo_auth::store::FileStore::new(&path))
            .build()
    };
    // Two processes sharing the token file.
    let (a, b) = (layer(&server), layer(&server));
    let first = a.handle().token().await.unwrap();
    let adopted = b.handle().token().await.unwrap();
    assert_eq!(adopted.expose_secret(), first.expose_secret());
    assert_eq!(server.stats().token_requests, 1);

    // A forced refresh does not adopt the stored token: it renews it.
    let renewed = b.handle().refresh().await.unwrap();
    assert_ne!(renewed.expose_secret(), first.expose_secret());
    let stats = server.stats();
    assert_eq!((stats.token_requests, stats.refresh_grants), (2, 1));

    // The other process's token was revoked by the rotation; its 401
    // adopts the renewed token from the store, without a token request.
    let service = client::<Empty<Bytes>>(&a);
    assert_eq!(status_of(&service, server.url("/api/echo")).await, 200);
    let stats = server.stats();
    assert_eq!(stats.token_requests, 2);
    assert_eq!(stats.tokens_presented[renewed.expose_secret()], 1);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[tokio::test(start_paused = true)]
async fn token_past_the_refresh_point_refreshes_ahead_and_hands_out_the_valid_token() {
    let server = MockServer::start_with(wokelo_auth::testing::MockConfig {
        token_lifetime: Duration::from_secs(100),
        ..Default::default()
    })
    .await;
    let layer = common::builder(&server).build();
    let auth = layer.handle();
    let first = auth.token().await.unwrap();
    let refresh_in = auth.snapshot().token.unwrap().refresh_in;
    assert!(
        refresh_in >= Duration::from_secs(79) && refresh_in <= Duration::from_secs(90),
        "10-20 % before expiry: {refresh_in:?}"
    );

    tokio::time::advance(refresh_in + Duration::from_millis(1)).await;
    let still = auth.token().await.unwrap();
    assert_eq!(still.expose_secret(), first.expose_secret(), "no wait");
    // The refresh runs in the background; a forced refresh now joins it.
    assert!(auth.snapshot().fetching);
    let next = auth.refresh().await.unwrap();
    assert_ne!(next.expose_secret(), first.expose_secret());
    let snapshot = auth.snapshot();
    assert_eq!(
        (snapshot.fetches.refresh_ahead, snapshot.fetches.forced),
        (1, 0)
    );
    assert_eq!(snapshot.fetches.succeeded, 2);
    let stats = server.stats();
    assert_eq!((stats.token_requests, stats.refresh_grants), (2, 1));
    assert_eq!(
        auth.token().await.unwrap().expose_secret(),
        next.expose_secret()
    );
}
