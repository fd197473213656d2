//! Concurrent requests share one token fetch.

mod common;

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::Empty;
use tokio::sync::Notify;
use tower::ServiceExt;
use wokelo_auth::{testing::MockServer, token_source_fn, Token, WokeloAuthLayer};

use common::{client, get, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_stampede_of_1000_requests_makes_one_token_request() {
    let server = MockServer::start().await;
    let layer = common::builder(&server).build();
    let service = client::<Empty<Bytes>>(&layer);
    assert_eq!(
        server.stats().token_requests,
        0,
        "nothing is fetched before the first request"
    );

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let service = service.clone();
        let url = server.url(&format!("/api/echo?i={i}"));
        tasks.spawn(async move { send(&service, get(url)).await });
    }
    let mut ok = 0;
    while let Some(result) = tasks.join_next().await {
        let answer = result.unwrap().expect("every request succeeds");
        assert_eq!(answer.status, 200);
        ok += 1;
    }
    assert_eq!(ok, 1000);

    let stats = server.stats();
    assert_eq!(
        stats.token_requests, 1,
        "exactly one token request: {stats:?}"
    );
    assert_eq!(stats.tokens_presented.len(), 1);
    assert_eq!(stats.tokens_presented.values().sum::<u64>(), 1000);
}

#[tokio::test]
async fn dropping_the_request_that_started_the_fetch_does_not_cancel_it() {
    let server = Arc::new(MockServer::start().await);
    let release = Arc::new(Notify::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let base = server.base_url().parse().unwrap();
    let source = {
        let (server, release, calls) = (server.clone(), release.clone(), calls.clone());
        token_source_fn(move |_current: Option<&Token>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let (server, release) = (server.clone(), release.clone());
            async move {
                release.notified().await;
                Ok(Token::new(server.issue_token()))
            }
        })
        .with_api_base(base)
    };
    let layer = WokeloAuthLayer::new(source);
    let service = client::<Empty<Bytes>>(&layer);

    // The leader starts the fetch, then its caller gives up on it.
    let leader = service.clone().oneshot(get(server.url("/api/echo")));
    assert!(
        leader.now_or_never().is_none(),
        "the leader waits for the token"
    );
    tokio::task::yield_now().await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the fetch started");

    let followers: Vec<_> = (0..10)
        .map(|_| {
            let service = service.clone();
            let url = server.url("/api/echo");
            tokio::spawn(async move { send(&service, get(url)).await })
        })
        .collect();
    tokio::task::yield_now().await;
    release.notify_one();
    for follower in followers {
        assert_eq!(follower.await.unwrap().unwrap().status, 200);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the followers joined the leader's fetch"
    );
    assert_eq!(server.stats().api_requests, 10);
}
