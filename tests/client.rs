//! The ready `Client`: the production stack in one line, against the mock.

mod common;

use std::time::Duration;

use serde_json::{json, Value};
use wokelo_auth::{
    testing::{ApiFault, MockServer},
    Client, ClientErrorKind, Credentials, TokenErrorKind,
};

#[tokio::test]
async fn get_and_json_with_one_login_shared_by_every_clone() {
    let server = MockServer::start().await;
    let client = Client::new(server.credentials());
    let found: Value = client
        .get("/api/enterprise/company/search?query=stripe")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found["results"][0]["name"], "Stripe Inc.");

    let clones: Vec<Client> = (0..10).map(|_| client.clone()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for clone in clones {
        tasks.spawn(async move { clone.get("/api/echo").await.unwrap().status() });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    assert_eq!(server.stats().token_requests, 1, "one token for all clones");
}

#[tokio::test]
async fn post_json_is_replayed_byte_for_byte_after_a_revocation() {
    let server = MockServer::start().await;
    let client = Client::new(server.credentials());
    assert_eq!(client.get("/api/echo").await.unwrap().status(), 200);
    server.revoke_all();
    let payload = json!({"companies": ["stripe", "adyen"], "note": "é ✓"});
    let expected = serde_json::to_vec(&payload).unwrap();
    let echoed: Value = client
        .post_json("/api/echo", &payload)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["content_type"], "application/json");
    assert_eq!(echoed["body_len"], expected.len());
    assert_eq!(echoed["body_sha256"], common::sha256_hex(&expected));
    let stats = server.stats();
    assert_eq!(stats.unauthorized, 1, "{stats:?}");
}

#[tokio::test]
async fn a_throttled_get_is_retried_by_the_policy_and_a_post_is_not() {
    let server = MockServer::start().await;
    let client = Client::new(server.credentials());
    let throttled = ApiFault::Status {
        status: 429,
        body: r#"{"detail":"Request was throttled."}"#.into(),
        retry_after_secs: Some(0),
    };
    server.fail_next_api_requests(1, throttled.clone());
    assert_eq!(client.get("/api/echo").await.unwrap().status(), 200);

    server.fail_next_api_requests(1, throttled);
    let response = client.post_json("/api/echo", &json!({})).await.unwrap();
    assert_eq!(response.status(), 429, "a POST is not retried by default");
    let e = response.json::<Value>().await.unwrap_err();
    assert_eq!(e.kind(), ClientErrorKind::Status);
    assert_eq!(e.status(), Some(http::StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(
        e.api_error().unwrap().detail.as_deref(),
        Some("Request was throttled.")
    );
}

#[tokio::test]
async fn errors_say_which_part_failed() {
    let server = MockServer::start().await;
    let client = Client::new(server.credentials());

    // The API's status, with its error body.
    let e = client
        .get("/api/forbidden")
        .await
        .unwrap()
        .error_for_status()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ClientErrorKind::Status);
    assert_eq!(e.status(), Some(http::StatusCode::FORBIDDEN));
    assert!(e.to_string().contains("403"), "{e}");
    assert!(e.api_error().unwrap().message.is_some(), "{e:?}");

    // Not JSON of the expected shape.
    let e = client
        .get("/api/echo")
        .await
        .unwrap()
        .json::<Vec<u8>>()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ClientErrorKind::Decode, "{e}");

    // Neither a path nor a URL.
    let e = client.get("api/echo").await.unwrap_err();
    assert_eq!(e.kind(), ClientErrorKind::Request, "{e}");

    // Another origin that does not answer: a transport error, no token.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/x", dead.local_addr().unwrap());
    drop(dead);
    let e = client.get(&url).await.unwrap_err();
    assert_eq!(e.kind(), ClientErrorKind::Transport, "{e}");
    assert!(e.to_string().contains("could not be sent"), "{e}");

    // Wrong password: a token error, the request never sent.
    let c = server.config();
    let wrong = Credentials::new(&c.client_id, &c.client_secret, &c.username, "not-it")
        .with_base_url(server.base_url().parse().unwrap());
    let before = server.stats().api_requests;
    let e = Client::new(wrong).get("/api/echo").await.unwrap_err();
    assert_eq!(e.kind(), ClientErrorKind::Token, "{e}");
    assert_eq!(
        e.token_error().unwrap().kind(),
        TokenErrorKind::CredentialsRejected
    );
    assert!(!format!("{e:?}").contains("not-it"));
    assert_eq!(server.stats().api_requests, before);
}

#[tokio::test]
async fn a_call_that_outlives_its_timeout_is_a_timeout_error() {
    // An API that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let _held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let server = MockServer::start().await;
    let client = Client::builder(server.credentials())
        .timeout(Duration::from_millis(300))
        .build();
    let started = std::time::Instant::now();
    let e = client
        .get(&format!("http://{addr}/slow"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ClientErrorKind::Timeout, "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn the_client_hands_out_its_token_and_logs_in_eagerly() {
    let server = MockServer::start().await;
    let client = Client::new(server.credentials());
    client.handle().login().await.unwrap();
    let token = client.handle().token().await.unwrap();
    assert_eq!(client.get("/api/echo").await.unwrap().status(), 200);
    let stats = server.stats();
    assert_eq!(stats.token_requests, 1, "{stats:?}");
    assert_eq!(
        stats.tokens_presented.get(token.expose_secret()).copied(),
        Some(1),
        "the request carried the token the handle gave: {stats:?}"
    );
    assert!(client.handle().snapshot().token.is_some());
}

#[tokio::test]
async fn send_joins_a_path_and_odd_urls_are_handled() {
    let server = MockServer::start().await;
    let client = Client::new(server.credentials());
    let request = http::Request::get("/api/echo")
        .body(bytes::Bytes::new())
        .unwrap();
    assert_eq!(client.send(request).await.unwrap().status(), 200);
    // Schemes are case-insensitive.
    let upper = server.url("/api/echo").replacen("http://", "HTTP://", 1);
    assert_eq!(client.get(&upper).await.unwrap().status(), 200);
    // User info is refused, not silently dropped.
    let with_user = server
        .url("/api/echo")
        .replacen("http://", "http://u:p@", 1);
    let e = client.get(&with_user).await.unwrap_err();
    assert_eq!(e.kind(), ClientErrorKind::Request, "{e}");
    assert!(!e.to_string().contains("u:p"), "{e}");
}

#[test]
fn a_call_outside_a_tokio_runtime_is_an_error_not_a_panic() {
    let client = Client::new(Credentials::new("id", "s", "u", "p"));
    let e = futures_executor_block_on(client.get("/api/echo")).unwrap_err();
    assert_eq!(e.kind(), ClientErrorKind::Request);
    assert!(e.to_string().contains("Tokio runtime"), "{e}");
}

/// Polls `future` to completion on this thread, outside any runtime.
fn futures_executor_block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
}

#[tokio::test]
async fn a_huge_error_body_is_read_only_to_its_start() {
    // A server of its own answering 500 with an 8 MiB body.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    let mut body = br#"{"detail":"Something broke."}"#.to_vec();
                    body.resize(8 * 1024 * 1024, b' ');
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .status(500)
                            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let server = MockServer::start().await;
    let client = Client::new(server.credentials());
    let e = client
        .get(&format!("http://{addr}/x"))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ClientErrorKind::Status);
    assert_eq!(
        e.api_error().unwrap().detail.as_deref(),
        Some("Something broke.")
    );
}
