//! `WokeloAuthMiddleware` in a reqwest-middleware chain, against the mock
//! Wokelo API and servers of the tests' own: one token for a stampede and
//! for every clone, the body replayed byte for byte after a revocation, the
//! token kept to the API origin, and the `401`s that are not retried.
#![cfg(feature = "reqwest")]

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{header::AUTHORIZATION, Extensions, HeaderValue, StatusCode};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use serde_json::json;
use sha2::{Digest, Sha256};
use wokelo_auth::{
    reqwest::{tls_config, WokeloAuthMiddleware},
    testing::MockServer,
    token_source_fn, Error, PasswordGrant, Token, TokenErrorKind, WokeloAuthBuilder,
    WokeloAuthLayer,
};

/// A reqwest client needing no process-level rustls provider.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config())
        .build()
        .expect("a reqwest client")
}

/// A middleware chain with `middleware` alone.
fn chain(middleware: impl Middleware) -> ClientWithMiddleware {
    ClientBuilder::new(http()).with(middleware).build()
}

fn builder(server: &MockServer) -> WokeloAuthBuilder {
    WokeloAuthLayer::builder(PasswordGrant::new(server.credentials()))
        .token_retry_backoff(Duration::from_millis(5))
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_stampede_of_1000_requests_makes_one_token_request() {
    let server = MockServer::start().await;
    let client = chain(WokeloAuthMiddleware::from(builder(&server).build()));
    assert_eq!(server.stats().token_requests, 0, "nothing fetched up front");

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let client = client.clone();
        let url = server.url(&format!("/api/echo?i={i}"));
        tasks.spawn(async move { client.get(url).send().await });
    }
    let mut ok = 0;
    while let Some(result) = tasks.join_next().await {
        let response = result.unwrap().expect("every request is answered");
        assert_eq!(response.status(), 200);
        ok += 1;
    }
    assert_eq!(ok, 1000);

    let stats = server.stats();
    assert_eq!(stats.token_requests, 1, "one token request: {stats:?}");
    assert_eq!(stats.tokens_presented.len(), 1);
    assert_eq!(stats.tokens_presented.values().sum::<u64>(), 1000);
    assert_eq!(stats.unauthorized, 0);
}

#[tokio::test]
async fn a_revoked_token_is_refreshed_and_the_json_body_replayed_byte_for_byte() {
    let server = MockServer::start().await;
    let client = chain(WokeloAuthMiddleware::new(PasswordGrant::new(
        server.credentials(),
    )));
    let warm = client.get(server.url("/api/echo")).send().await.unwrap();
    assert_eq!(warm.status(), 200);

    server.revoke_all();
    let payload = json!({
        "query": "payments",
        "filters": {"country": ["US", "GB"], "founded_after": 2010},
        "note": "ünïcödé and \"quotes\"",
        "padding": "x".repeat(5_000),
    });
    let sent = serde_json::to_vec(&payload).unwrap();
    let response = client
        .post(server.url("/api/echo?replay=1"))
        .json(&payload)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the retry succeeded");
    let echo: serde_json::Value = response.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["query"], "replay=1");
    assert_eq!(echo["content_type"], "application/json");
    assert_eq!(echo["body_len"], sent.len());
    assert_eq!(echo["body_sha256"], sha256_hex(&sent));

    let stats = server.stats();
    assert_eq!(stats.unauthorized, 1, "one 401, then the replay: {stats:?}");
    // One new token after the 401: the revoked refresh token is refused,
    // then the password grant.
    assert_eq!(stats.tokens_issued, 2, "{stats:?}");
    assert_eq!((stats.refresh_grants, stats.password_grants), (1, 2));
    assert_eq!(stats.tokens_presented.len(), 2);
    assert_eq!(stats.api_requests, 3);
}

#[tokio::test]
async fn another_origin_gets_no_token() {
    let server = MockServer::start().await;
    let other = Recorder::start(StatusCode::OK, None).await;
    let client = chain(WokeloAuthMiddleware::new(PasswordGrant::new(
        server.credentials(),
    )));
    // A token is cached: it is the origin, not its absence, that decides.
    let warm = client.get(server.url("/api/echo")).send().await.unwrap();
    assert_eq!(warm.status(), 200);

    let api = server.addr();
    let urls = [
        other.url("/api/echo"),
        // The API's host on another port is another origin.
        format!("http://{}:{}/api/echo", api.ip(), other.addr.port()),
        // So is `localhost` for 127.0.0.1.
        format!("http://localhost:{}/api/echo", other.addr.port()),
    ];
    for url in urls {
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
    }
    assert_eq!(other.authorization(), vec![None, None, None]);
    assert_eq!(other.requests(), 3);
    assert_eq!(server.stats().token_requests, 1);
}

#[tokio::test]
async fn a_request_with_its_own_authorization_is_untouched_and_not_retried() {
    let server = MockServer::start().await;
    let client = chain(WokeloAuthMiddleware::new(PasswordGrant::new(
        server.credentials(),
    )));
    let response = client
        .get(server.url("/api/echo"))
        .header(AUTHORIZATION, "Bearer the-callers-own")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "the mock does not know that token");

    let stats = server.stats();
    assert_eq!(stats.token_requests, 0, "no token fetched: {stats:?}");
    assert_eq!(stats.api_requests, 1, "not retried");
    assert_eq!(
        stats.tokens_presented.keys().collect::<Vec<_>>(),
        ["the-callers-own"]
    );
}

#[tokio::test]
async fn clones_and_a_tower_stack_from_the_same_layer_share_one_token() {
    let server = MockServer::start().await;
    let layer = builder(&server).build();
    let middleware = WokeloAuthMiddleware::from_layer(&layer);
    let first = chain(middleware.clone());
    let debug = middleware.clone();
    let second = chain(middleware);
    let third = chain(WokeloAuthMiddleware::from(layer.clone()));
    for client in [&first, &second, &third, &first] {
        let response = client.get(server.url("/api/echo")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    // The tower path over the same layer.
    let tower = tower::Layer::layer(&layer, wokelo_auth::reqwest::ReqwestService::new(http()));
    let request = http::Request::get(server.url("/api/echo"))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = tower::ServiceExt::oneshot(tower, request).await.unwrap();
    assert_eq!(response.status(), 200);

    let stats = server.stats();
    assert_eq!(stats.token_requests, 1, "{stats:?}");
    assert_eq!(stats.tokens_presented.len(), 1);
    assert_eq!(stats.tokens_presented.values().sum::<u64>(), 5);
    let shown = format!("{debug:?}");
    assert!(shown.contains("WokeloAuthMiddleware"), "{shown}");
    for token in stats.tokens_presented.keys() {
        assert!(!shown.contains(token.as_str()), "the token in {shown}");
    }
}

#[tokio::test]
async fn a_streamed_body_is_not_replayed_its_401_returned_and_the_next_request_has_a_new_token() {
    let server = MockServer::start().await;
    let client = chain(WokeloAuthMiddleware::from(builder(&server).build()));
    let warm = client.get(server.url("/api/echo")).send().await.unwrap();
    assert_eq!(warm.status(), 200);

    server.revoke_all();
    let stream = reqwest::Body::wrap(http_body_util::Full::new(Bytes::from_static(b"{}")));
    let response = client
        .post(server.url("/api/echo"))
        .body(stream)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "a stream cannot be sent twice");

    let next = client.get(server.url("/api/echo")).send().await.unwrap();
    assert_eq!(next.status(), 200);
    let stats = server.stats();
    assert_eq!(stats.unauthorized, 1, "{stats:?}");
    assert_eq!(stats.tokens_issued, 2, "one new token: {stats:?}");
    assert_eq!(stats.tokens_presented.len(), 2);
    assert_eq!(stats.api_requests, 3);
}

#[tokio::test]
async fn a_body_over_the_replay_cap_is_not_retried() {
    let server = MockServer::start().await;
    let client = chain(WokeloAuthMiddleware::from(
        builder(&server).max_replay_body_bytes(64).build(),
    ));
    let warm = client.get(server.url("/api/echo")).send().await.unwrap();
    assert_eq!(warm.status(), 200);

    server.revoke_all();
    let within = client
        .post(server.url("/api/echo"))
        .body(vec![b'a'; 64])
        .send()
        .await
        .unwrap();
    assert_eq!(within.status(), 200, "64 bytes: replayed");
    server.revoke_all();
    let over = client
        .post(server.url("/api/echo"))
        .body(vec![b'a'; 65])
        .send()
        .await
        .unwrap();
    assert_eq!(over.status(), 401, "65 bytes: over the cap, returned");
    assert_eq!(server.stats().unauthorized, 2);
}

#[tokio::test]
async fn a_401_a_new_token_cannot_fix_is_returned_as_it_is() {
    let api = Recorder::start(
        StatusCode::UNAUTHORIZED,
        Some(r#"Bearer realm="api", error="insufficient_scope", scope="reports""#),
    )
    .await;
    let (source, fetches) = counting_source();
    let client = chain(WokeloAuthMiddleware::from(
        WokeloAuthLayer::builder(source)
            .api_base(api.base())
            .build(),
    ));
    let response = client.get(api.url("/api/x")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("insufficient_scope"));
    assert_eq!(api.requests(), 1, "not retried");
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "the token is kept");
    assert_eq!(api.authorization(), vec![Some("Bearer t1".to_owned())]);
}

#[tokio::test]
async fn a_second_401_is_returned_and_the_refused_token_costs_no_more_fetches() {
    let api = Recorder::start(
        StatusCode::UNAUTHORIZED,
        Some(r#"Bearer error="invalid_token""#),
    )
    .await;
    let (source, fetches) = counting_source();
    let client = chain(WokeloAuthMiddleware::from(
        WokeloAuthLayer::builder(source)
            .api_base(api.base())
            .unauthorized_backoff(Duration::from_secs(60))
            .build(),
    ));
    let response = client.get(api.url("/api/x")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(api.requests(), 2, "sent, refreshed, sent once more");
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    assert_eq!(
        api.authorization(),
        vec![Some("Bearer t1".to_owned()), Some("Bearer t2".to_owned())]
    );

    // Within the unauthorized backoff, the refused token's 401 stands.
    let again = client.get(api.url("/api/x")).send().await.unwrap();
    assert_eq!(again.status(), 401);
    assert_eq!(api.requests(), 3, "not retried");
    assert_eq!(fetches.load(Ordering::SeqCst), 2, "no new token");
}

#[tokio::test]
async fn rejected_credentials_fail_the_request_with_a_token_error() {
    let server = MockServer::start().await;
    let c = server.config();
    let credentials =
        wokelo_auth::Credentials::new(&c.client_id, &c.client_secret, &c.username, "wrong-pass")
            .with_base_url(server.base_url().parse().unwrap());
    let client = chain(WokeloAuthMiddleware::new(PasswordGrant::new(credentials)));
    let error = client
        .get(server.url("/api/echo"))
        .send()
        .await
        .expect_err("no token, no request");
    let reqwest_middleware::Error::Middleware(error) = &error else {
        panic!("a middleware error, not {error:?}");
    };
    let error = error.downcast_ref::<Error>().expect("a wokelo_auth::Error");
    assert_eq!(
        error.token_error().map(|e| e.kind()),
        Some(TokenErrorKind::CredentialsRejected)
    );
    assert!(!format!("{error} {error:?}").contains("wrong-pass"));
    assert_eq!(server.stats().api_requests, 0);
}

/// The last middleware of a chain, standing in for the network: records the
/// `Authorization` each request carried and answers `200`.
#[derive(Clone, Default)]
struct Terminal {
    seen: Arc<Mutex<Vec<String>>>,
}

#[async_trait::async_trait]
impl Middleware for Terminal {
    async fn handle(
        &self,
        request: reqwest::Request,
        _extensions: &mut Extensions,
        _next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let token = request.headers()[AUTHORIZATION]
            .to_str()
            .unwrap()
            .to_owned();
        self.seen.lock().unwrap().push(token);
        Ok(http::Response::new(Bytes::new()).into())
    }
}

#[tokio::test(start_paused = true)]
async fn the_token_is_refreshed_ahead_of_expiry_in_the_background() {
    let (source, fetches) = counting_source();
    let terminal = Terminal::default();
    let client = ClientBuilder::new(http())
        .with(WokeloAuthMiddleware::from(
            WokeloAuthLayer::builder(source)
                .max_refresh_margin(Duration::from_secs(60))
                .build(),
        ))
        .with(terminal.clone())
        .build();
    let url = "https://api.wokelo.ai/api/x";
    client.get(url).send().await.unwrap();
    // The margin is 10-20 % of the 1 h lifetime, capped at 60 s: at 59m30s
    // the token is in it, and still valid.
    tokio::time::advance(Duration::from_secs(59 * 60 + 30)).await;
    client.get(url).send().await.unwrap();
    assert_eq!(
        terminal.seen.lock().unwrap().last().unwrap(),
        "Bearer t1",
        "the valid token is used while the refresh runs"
    );
    // Let the background fetch finish.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 2, "refreshed ahead");
    client.get(url).send().await.unwrap();
    assert_eq!(
        *terminal.seen.lock().unwrap(),
        ["Bearer t1", "Bearer t1", "Bearer t2"]
    );
}

/// A token source handing out `t1`, `t2`, ... (one hour each), counting its
/// fetches.
fn counting_source() -> (impl wokelo_auth::TokenSource, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let source = token_source_fn(move |_: Option<&Token>| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move { Ok(Token::new(format!("t{n}")).with_expires_in(Duration::from_secs(3600))) }
    });
    (source, fetches)
}

/// A server of the test's own on 127.0.0.1: answers every request with one
/// status (and `WWW-Authenticate` value), recording each request's
/// `Authorization` header.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

impl Recorder {
    async fn start(status: StatusCode, challenge: Option<&'static str>) -> Self {
        let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let log = seen.clone();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let log = log.clone();
            async move {
                let token = request
                    .headers()
                    .get(AUTHORIZATION)
                    .map(|v| v.to_str().unwrap().to_owned());
                log.lock().unwrap().push(token);
                let mut response = http::Response::new(axum::body::Body::from("{}"));
                *response.status_mut() = status;
                if let Some(challenge) = challenge {
                    response
                        .headers_mut()
                        .insert("www-authenticate", HeaderValue::from_static(challenge));
                }
                Ok::<_, Infallible>(response)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, seen }
    }

    fn base(&self) -> wokelo_auth::ApiBase {
        format!("http://{}", self.addr).parse().unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn authorization(&self) -> Vec<Option<String>> {
        self.seen.lock().unwrap().clone()
    }

    fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}
