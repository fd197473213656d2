//! `WokeloRetryPolicy` composed outside the auth layer, against the mock API.

mod common;

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use tower::{retry::RetryLayer, service_fn, ServiceBuilder, ServiceExt};
use wokelo_auth::{
    testing::{ApiFault, MockServer},
    WokeloRetryPolicy,
};

use common::{bytes, client, sha256_hex};

fn fault(status: u16, n: usize, server: &MockServer) {
    server.fail_next_api_requests(
        n,
        ApiFault::Status {
            status,
            body: r#"{"detail":"try again"}"#.into(),
            // Retry-After: 0 keeps the wire tests fast; backoff timing is
            // tested under paused time below.
            retry_after_secs: Some(0),
        },
    );
}

async fn status_of<S>(service: S, request: Request<Full<Bytes>>) -> (StatusCode, Bytes)
where
    S: tower::Service<Request<Full<Bytes>>, Response = Response<hyper::body::Incoming>>,
    S::Error: std::fmt::Debug,
{
    let response = service.oneshot(request).await.unwrap();
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn retries_503_then_succeeds_with_the_body_replayed() {
    let server = MockServer::start().await;
    let auth = common::builder(&server).build();
    let service = ServiceBuilder::new()
        .layer(RetryLayer::new(WokeloRetryPolicy::new()))
        .service(client::<Full<Bytes>>(&auth));
    fault(503, 2, &server);
    let data = bytes(4096, 9);
    let request = Request::put(server.url("/api/echo"))
        .body(Full::new(data.clone()))
        .unwrap();
    let (status, body) = status_of(service, request).await;
    assert_eq!(status, 200);
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["body_sha256"], sha256_hex(&data));
    assert_eq!(server.stats().api_requests, 3);
}

#[tokio::test]
async fn gives_up_on_500_after_three_retries() {
    let server = MockServer::start().await;
    let auth = common::builder(&server).build();
    let service = ServiceBuilder::new()
        .layer(RetryLayer::new(WokeloRetryPolicy::new()))
        .service(client::<Full<Bytes>>(&auth));
    fault(500, 10, &server);
    let request = Request::get(server.url("/api/echo"))
        .body(Full::default())
        .unwrap();
    assert_eq!(status_of(service, request).await.0, 500);
    assert_eq!(server.stats().api_requests, 4, "one try and three retries");
}

#[tokio::test]
async fn post_is_not_retried_unless_opted_in_and_403_never() {
    let server = MockServer::start().await;
    let auth = common::builder(&server).build();
    let default = ServiceBuilder::new()
        .layer(RetryLayer::new(WokeloRetryPolicy::new()))
        .service(client::<Full<Bytes>>(&auth));
    fault(503, 1, &server);
    let post = || {
        Request::post(server.url("/api/echo"))
            .body(Full::from("job"))
            .unwrap()
    };
    assert_eq!(status_of(default.clone(), post()).await.0, 503);
    assert_eq!(server.stats().api_requests, 1);

    let opted_in = ServiceBuilder::new()
        .layer(RetryLayer::new(
            WokeloRetryPolicy::new().retry_non_idempotent(true),
        ))
        .service(client::<Full<Bytes>>(&auth));
    fault(503, 1, &server);
    assert_eq!(status_of(opted_in, post()).await.0, 200);
    assert_eq!(server.stats().api_requests, 3);

    let forbidden = Request::get(server.url("/api/forbidden"))
        .body(Full::default())
        .unwrap();
    assert_eq!(status_of(default, forbidden).await.0, 403);
    assert_eq!(server.stats().api_requests, 4);
}

#[tokio::test(start_paused = true)]
async fn backs_off_exponentially_and_honours_retry_after() {
    // 429 without Retry-After twice, then 429 with Retry-After: 5, then 200.
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let inner = service_fn(move |_req: Request<Empty<Bytes>>| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut response = Response::new(Empty::<Bytes>::new());
            *response.status_mut() = if n < 3 {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::OK
            };
            if n == 2 {
                response
                    .headers_mut()
                    .insert("retry-after", "5".parse().unwrap());
            }
            Ok::<_, Infallible>(response)
        }
    });
    let service = ServiceBuilder::new()
        .layer(RetryLayer::new(WokeloRetryPolicy::new()))
        .service(inner);
    let started = tokio::time::Instant::now();
    let response = service
        .oneshot(
            Request::get("https://api.wokelo.ai/api/x")
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    // Backoff 1 s then 2 s (each jittered into [0.5, 1.0) of that), then 5 s.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(6500) && waited < Duration::from_secs(8),
        "waited {waited:?}"
    );
}

#[tokio::test]
async fn a_streaming_body_is_resent_byte_exact_and_one_past_the_cap_is_not() {
    use http_body::Frame;
    use http_body_util::StreamBody;
    use wokelo_auth::RetryBody;

    let server = MockServer::start().await;
    let auth = common::builder(&server).build();
    let chunked = |data: &Bytes| {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = data
            .chunks(1000)
            .map(|c| Ok(Frame::data(data.slice_ref(c))))
            .collect();
        RetryBody::with_max_bytes(
            StreamBody::new(futures_util::stream::iter(frames)),
            16 * 1024,
        )
    };
    let service = ServiceBuilder::new()
        .layer(RetryLayer::new(WokeloRetryPolicy::new()))
        .service(client(&auth));

    let data = bytes(12 * 1024, 5);
    fault(503, 2, &server);
    let request = Request::put(server.url("/api/echo"))
        .body(chunked(&data))
        .unwrap();
    let response = service.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let echo: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(echo["body_sha256"], sha256_hex(&data));
    assert_eq!(
        server.stats().api_requests,
        3,
        "two retries, each with the whole body"
    );

    let big = bytes(16 * 1024 + 1, 6);
    fault(503, 1, &server);
    let request = Request::put(server.url("/api/echo"))
        .body(chunked(&big))
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 503, "over the cap: not retried");
    assert_eq!(server.stats().api_requests, 4);
}

#[tokio::test]
async fn a_retry_after_of_any_size_returns_the_429_at_once() {
    let server = MockServer::start().await;
    let auth = common::builder(&server).build();
    let bounded = [
        WokeloRetryPolicy::new(),
        WokeloRetryPolicy::new().with_budget(Duration::MAX),
    ];
    // 2^64 - 1 seconds, ten digits, one second past the max wait; and with
    // no bounds at all, a wait that cannot be added to the clock.
    let cases = bounded
        .iter()
        .flat_map(|p| [u64::MAX, 9_999_999_999, 61].map(|asked| (p.clone(), asked)))
        .chain([(
            WokeloRetryPolicy::new()
                .with_budget(Duration::MAX)
                .with_max_wait(Duration::MAX),
            u64::MAX,
        )]);
    let mut sent = 0;
    for (policy, asked) in cases {
        let service = ServiceBuilder::new()
            .layer(RetryLayer::new(policy.clone()))
            .service(client::<Full<Bytes>>(&auth));
        server.fail_next_api_requests(
            1,
            ApiFault::Status {
                status: 429,
                body: r#"{"detail":"slow down"}"#.into(),
                retry_after_secs: Some(asked),
            },
        );
        let request = Request::get(server.url("/api/echo"))
            .body(Full::default())
            .unwrap();
        let started = std::time::Instant::now();
        let (status, _) =
            tokio::time::timeout(Duration::from_secs(10), status_of(service, request))
                .await
                .expect("answered, not waited for");
        sent += 1;
        assert_eq!(status, 429, "{policy:?}, Retry-After: {asked}");
        assert!(started.elapsed() < Duration::from_secs(5), "at once");
        assert_eq!(server.stats().api_requests, sent, "not retried");
    }
}
