//! A `401` refreshes the token and retries once; nothing else does.

mod common;

use bytes::Bytes;
use http_body_util::Empty;
use wokelo_auth::testing::{ApiFault, MockServer};

use common::{client, get, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_401s_for_one_token_cause_one_refresh() {
    let server = MockServer::start().await;
    let layer = common::builder(&server).build();
    let service = client::<Empty<Bytes>>(&layer);
    assert_eq!(
        send(&service, get(server.url("/api/echo")))
            .await
            .unwrap()
            .status,
        200
    );
    let old_token = server.stats().tokens_presented.into_keys().next().unwrap();

    // Server-side revocation: every request with the old token gets a 401,
    // and the old refresh token is refused too (so the layer logs in again).
    server.revoke_all();
    server.reset_stats();

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let service = service.clone();
        let url = server.url(&format!("/api/echo?i={i}"));
        tasks.spawn(async move { send(&service, get(url)).await });
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(
            result.unwrap().unwrap().status,
            200,
            "every request recovers"
        );
    }

    let stats = server.stats();
    assert_eq!(stats.tokens_issued, 1, "exactly one new token: {stats:?}");
    assert_eq!(stats.refresh_grants, 1, "one refresh attempt: {stats:?}");
    assert_eq!(stats.password_grants, 1, "one fallback login: {stats:?}");
    assert!(
        stats.api_requests <= 2000,
        "no request sent more than twice: {stats:?}"
    );
    assert_eq!(
        stats.api_requests,
        1000 + stats.unauthorized,
        "only 401s were resent: {stats:?}"
    );
    assert_eq!(
        stats.tokens_presented.get(&old_token).copied(),
        Some(stats.unauthorized)
    );
    let new_token_uses: u64 = stats
        .tokens_presented
        .iter()
        .filter(|(t, _)| **t != old_token)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(new_token_uses, 1000);
}

#[tokio::test]
async fn a_second_401_is_returned_as_it_is() {
    let server = MockServer::start().await;
    let service = client::<Empty<Bytes>>(&common::builder(&server).build());
    server.fail_next_api_requests(2, ApiFault::Unauthorized);

    let answer = send(&service, get(server.url("/api/echo"))).await.unwrap();
    assert_eq!(answer.status, 401);
    assert!(answer.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("invalid_token"));
    assert!(!answer.body.is_empty(), "the server's body comes through");

    let stats = server.stats();
    assert_eq!(stats.api_requests, 2, "sent twice, never more: {stats:?}");
    assert_eq!(stats.tokens_issued, 2, "one refresh: {stats:?}");
    assert_eq!(stats.refresh_grants, 1);
}

#[tokio::test]
async fn a_403_does_not_refresh() {
    let server = MockServer::start().await;
    let service = client::<Empty<Bytes>>(&common::builder(&server).build());
    let answer = send(&service, get(server.url("/api/forbidden")))
        .await
        .unwrap();
    assert_eq!(answer.status, 403);
    assert!(answer.json()["message"].is_string());
    let stats = server.stats();
    assert_eq!(
        (stats.token_requests, stats.api_requests),
        (1, 1),
        "{stats:?}"
    );
}

#[tokio::test]
async fn a_late_401_does_not_discard_a_fresh_token() {
    let server = MockServer::start().await;
    let service = client::<Empty<Bytes>>(&common::builder(&server).build());
    // Two requests fail with the first token; the first 401 refreshes, the
    // second finds the token already replaced and reuses the fresh one.
    server.fail_next_api_requests(1, ApiFault::Unauthorized);
    assert_eq!(
        send(&service, get(server.url("/api/echo")))
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(server.stats().tokens_issued, 2);
    assert_eq!(
        send(&service, get(server.url("/api/echo")))
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(server.stats().tokens_issued, 2, "no refresh without a 401");
}

#[tokio::test]
async fn clones_share_one_token() {
    let server = MockServer::start().await;
    let layer = common::builder(&server).build();
    let a = client::<Empty<Bytes>>(&layer);
    let b = a.clone();
    let c = client::<Empty<Bytes>>(&layer);
    for service in [&a, &b, &c] {
        assert_eq!(
            send(service, get(server.url("/api/echo")))
                .await
                .unwrap()
                .status,
            200
        );
    }
    let stats = server.stats();
    assert_eq!(stats.token_requests, 1);
    assert_eq!(stats.tokens_presented.len(), 1);
}
