//! `401`s that a new token cannot fix do not churn tokens: a Bearer error
//! other than `invalid_token` is returned as it is, and an API that refuses
//! every token costs one token request per unauthorized backoff window.

mod common;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{header::WWW_AUTHENTICATE, Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
};
use tower::{service_fn, Layer, ServiceExt};
use wokelo_auth::{
    testing::{ApiFault, MockServer},
    token_source_fn, ApiBase, ReplayBody, Token, WokeloAuthBuilder, WokeloAuthLayer,
};

use common::{client, status_of};

/// A token source handing out `t1`, `t2`, ..., counting its calls.
fn counting_layer(base: Option<ApiBase>) -> (Arc<AtomicUsize>, WokeloAuthLayer) {
    counting_layer_with(|builder| match base {
        Some(base) => builder.api_base(base),
        None => builder,
    })
}

/// [`counting_layer`] with other settings.
fn counting_layer_with(
    configure: impl FnOnce(WokeloAuthBuilder) -> WokeloAuthBuilder,
) -> (Arc<AtomicUsize>, WokeloAuthLayer) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let source = token_source_fn(move |_current: Option<&Token>| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move { Ok(Token::new(format!("t{n}"))) }
    });
    (calls, configure(WokeloAuthLayer::builder(source)).build())
}

/// An API of its own on 127.0.0.1 (not the crate's mock) that answers every
/// request with `401` and this `WWW-Authenticate` challenge, counting them.
async fn challenging_api(challenge: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(StatusCode::UNAUTHORIZED)
                                .header(WWW_AUTHENTICATE, challenge)
                                .body(Full::new(Bytes::from_static(b"{\"detail\":\"no\"}")))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, hits)
}

#[tokio::test]
async fn insufficient_scope_is_returned_without_a_refresh_or_a_retry() {
    for challenge in [
        r#"Bearer realm="api", error="insufficient_scope", error_description="needs admin""#,
        r#"Bearer realm="api", error="invalid_request""#,
    ] {
        let (addr, hits) = challenging_api(challenge).await;
        let base: ApiBase = format!("http://{addr}").parse().unwrap();
        let (calls, layer) = counting_layer(Some(base));
        let service = layer.layer(Client::builder(TokioExecutor::new()).build_http());
        for _ in 0..5 {
            let response = service
                .clone()
                .oneshot(
                    Request::get(format!("http://{addr}/api/enterprise/company/search"))
                        .body(Empty::<Bytes>::new())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(response.status(), 401);
            assert_eq!(response.headers()[WWW_AUTHENTICATE], challenge);
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one token, never refreshed"
        );
        assert_eq!(hits.load(Ordering::SeqCst), 5, "no request retried");
    }
}

#[tokio::test]
async fn an_api_refusing_every_token_costs_two_token_requests_for_fifty_calls() {
    let server = MockServer::start().await;
    let layer = common::builder(&server).build();
    let service = client::<Empty<Bytes>>(&layer);
    server.fail_next_api_requests(1000, ApiFault::Unauthorized);
    for _ in 0..50 {
        assert_eq!(status_of(&service, server.url("/api/echo")).await, 401);
    }
    let stats = server.stats();
    assert_eq!(
        stats.token_requests, 2,
        "the first login and one refresh after the first 401: {stats:?}"
    );
    assert_eq!(
        stats.api_requests, 51,
        "only the first call was retried: {stats:?}"
    );
}

/// An inner service answering `401` with Wokelo's expired-token challenge to
/// every request whose token is not in `accepted`.
fn refusing(
    accepted: &'static [&'static str],
) -> impl tower::Service<
    Request<ReplayBody<Empty<Bytes>>>,
    Response = Response<Empty<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    service_fn(move |req: Request<ReplayBody<Empty<Bytes>>>| {
        let token = req.headers()[http::header::AUTHORIZATION]
            .to_str()
            .unwrap()
            .to_owned();
        async move {
            let mut response = Response::new(Empty::new());
            if !accepted.iter().any(|t| token == format!("Bearer {t}")) {
                *response.status_mut() = StatusCode::UNAUTHORIZED;
                response.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    r#"Bearer realm="api",error="invalid_token",error_description="The access token is invalid.""#
                        .parse()
                        .unwrap(),
                );
            }
            Ok(response)
        }
    })
}

async fn status(
    service: &(impl tower::Service<
        Request<Empty<Bytes>>,
        Response = Response<Empty<Bytes>>,
        Error = wokelo_auth::Error,
    > + Clone),
) -> StatusCode {
    service
        .clone()
        .oneshot(
            Request::get("https://api.wokelo.ai/api/echo")
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap()
        .status()
}

#[tokio::test(start_paused = true)]
async fn after_the_unauthorized_backoff_one_more_token_is_tried() {
    let (calls, layer) = counting_layer(None);
    let service = layer.layer(refusing(&[]));
    for _ in 0..10 {
        assert_eq!(status(&service).await, 401);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(status(&service).await, 401);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "still inside the window");

    tokio::time::advance(Duration::from_secs(2)).await;
    for _ in 0..10 {
        assert_eq!(status(&service).await, 401);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "one more token after the window, then quiet again"
    );
}

#[tokio::test(start_paused = true)]
async fn a_revoked_token_is_still_refreshed_and_retried() {
    // t1 is refused (revoked), t2 works: the ordinary 401 recovery.
    let (calls, layer) = counting_layer(None);
    let service = layer.layer(refusing(&["t2"]));
    assert_eq!(status(&service).await, 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn the_window_follows_the_setting() {
    let (calls, layer) = counting_layer_with(|b| b.unauthorized_backoff(Duration::ZERO));
    let service = layer.layer(refusing(&[]));
    for _ in 0..3 {
        assert_eq!(status(&service).await, 401);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "no window: each call refreshes once (1 + 3)"
    );
}

#[tokio::test(start_paused = true)]
async fn an_api_refusing_every_token_with_bodies_that_are_not_kept_costs_two_tokens() {
    // Bodies over the replay cap: no retry, so no retry can show that fresh
    // tokens do not help.
    let (calls, layer) = counting_layer_with(|b| b.max_replay_body_bytes(16));
    let service = layer.layer(service_fn(|_: Request<ReplayBody<Full<Bytes>>>| async {
        let mut response = Response::new(Empty::<Bytes>::new());
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        Ok::<_, Infallible>(response)
    }));
    for _ in 0..50 {
        let request = Request::post("https://api.wokelo.ai/api/enterprise/report")
            .body(Full::new(Bytes::from(vec![b'x'; 100])))
            .unwrap();
        let response = service.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), 401);
        tokio::task::yield_now().await;
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the first token, and one fetched for the first 401"
    );
}

#[tokio::test]
async fn a_token_seen_working_on_a_retry_is_refreshed_when_revoked_later() {
    // T2 is fetched for a 401 and works on the retry; a later revocation
    // answered on a request that cannot be retried still refreshes it.
    let server = MockServer::start().await;
    let layer = common::builder(&server).max_replay_body_bytes(16).build();
    let service = client::<http_body_util::Full<Bytes>>(&layer);
    let get = || {
        Request::get(server.url("/api/echo"))
            .body(http_body_util::Full::default())
            .unwrap()
    };
    assert_eq!(common::send(&service, get()).await.unwrap().status, 200);
    server.revoke_all();
    assert_eq!(common::send(&service, get()).await.unwrap().status, 200);
    server.revoke_all();
    let big = Request::post(server.url("/api/echo"))
        .body(http_body_util::Full::new(Bytes::from(vec![b'x'; 100])))
        .unwrap();
    assert_eq!(common::send(&service, big).await.unwrap().status, 401);
    assert_eq!(
        common::send(&service, get()).await.unwrap().status,
        200,
        "the revoked token was replaced, not kept"
    );
    assert_eq!(server.stats().tokens_issued, 3);
}
