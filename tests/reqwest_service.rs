//! `ReqwestService`: a reqwest client under `WokeloAuthLayer` (the tower
//! path) and as the token endpoint's client, against the mock Wokelo API.
#![cfg(feature = "reqwest")]

use bytes::Bytes;
use http::Request;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full, StreamBody};
use sha2::{Digest, Sha256};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use wokelo_auth::{
    reqwest::{tls_config, ReqwestService, WokeloAuthMiddleware},
    testing::MockServer,
    BoxError, Credentials, PasswordGrant, WokeloAuthLayer,
};

/// The name the reqwest client resolves to the mock: only a request sent
/// through that client can reach it.
const HOST: &str = "wokelo.test";

/// A reqwest client that finds the mock at [`HOST`].
fn http(server: &MockServer) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config())
        .resolve(HOST, server.addr())
        .build()
        .expect("a reqwest client")
}

/// The mock's credentials, with the base URL at [`HOST`].
fn credentials(server: &MockServer) -> Credentials {
    let c = server.config();
    let base = format!("http://{HOST}:{}", server.addr().port());
    Credentials::new(&c.client_id, &c.client_secret, &c.username, &c.password)
        .with_base_url(base.parse().unwrap())
        // Not a loopback name, though it leads to one.
        .allow_http(true)
}

fn url(server: &MockServer, path: &str) -> String {
    format!("http://{HOST}:{}{path}", server.addr().port())
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The echo endpoint's answer to `request`, read whole.
async fn echo<S, B>(service: &mut S, request: Request<B>) -> (u16, serde_json::Value)
where
    S: Service<Request<B>, Response = http::Response<reqwest::Body>>,
    S::Error: std::fmt::Debug,
{
    let response = service
        .ready()
        .await
        .unwrap()
        .call(request)
        .await
        .expect("answered");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

#[tokio::test]
async fn the_layer_over_a_reqwest_client_with_tokens_fetched_through_it() {
    let server = MockServer::start().await;
    let http = ReqwestService::new(http(&server));
    let source = PasswordGrant::new(credentials(&server)).with_http_client(http.clone());
    let mut client = ServiceBuilder::new()
        .layer(WokeloAuthLayer::new(source))
        .service(http);

    let get = Request::get(url(&server, "/api/echo"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, echo_body) = echo(&mut client, get).await;
    assert_eq!(status, 200);
    assert_eq!(echo_body["user"], server.config().username);

    server.revoke_all();
    let sent =
        Bytes::from(serde_json::to_vec(&serde_json::json!({"query": "stripe", "n": 1})).unwrap());
    let post = Request::post(url(&server, "/api/echo"))
        .header("content-type", "application/json")
        .body(Full::new(sent.clone()))
        .unwrap();
    let (status, echo_body) = echo(&mut client, post).await;
    assert_eq!(status, 200, "refreshed and replayed");
    assert_eq!(echo_body["body_len"], sent.len());
    assert_eq!(echo_body["body_sha256"], sha256_hex(&sent));
    assert_eq!(echo_body["content_type"], "application/json");

    let stats = server.stats();
    // Both token requests reached the mock through the reqwest client: no
    // other client can resolve `wokelo.test`.
    assert_eq!(stats.token_requests, 3, "{stats:?}");
    assert_eq!(
        stats.tokens_issued, 2,
        "the revoked refresh token refused, then a login"
    );
    assert_eq!(stats.unauthorized, 1);
    assert_eq!(stats.api_requests, 3);
}

#[tokio::test]
async fn the_middleware_with_tokens_fetched_through_the_same_reqwest_client() {
    let server = MockServer::start().await;
    let http = http(&server);
    let source = PasswordGrant::new(credentials(&server))
        .with_http_client(ReqwestService::new(http.clone()));
    let client = reqwest_middleware::ClientBuilder::new(http)
        .with(WokeloAuthMiddleware::new(source))
        .build();
    let response = client
        .get(url(&server, "/api/enterprise/company/search?query=stripe"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("Stripe Inc."));
    assert_eq!(server.stats().token_requests, 1);
}

#[tokio::test]
async fn a_streamed_body_that_is_not_sync_is_sent_and_replayed() {
    let server = MockServer::start().await;
    let http = ReqwestService::new(http(&server));
    let source = PasswordGrant::new(credentials(&server)).with_http_client(http.clone());
    let mut client = WokeloAuthLayer::new(source).layer(http);

    // Eight chunks, an UnsyncBoxBody (Send, not Sync), as axum's body is.
    let chunks: Vec<Bytes> = (0..8u8)
        .map(|i| Bytes::from(vec![b'a' + i; 1000]))
        .collect();
    let whole: Vec<u8> = chunks.concat();
    let body = || -> UnsyncBoxBody<Bytes, BoxError> {
        let frames = chunks
            .clone()
            .into_iter()
            .map(|c| Ok::<_, BoxError>(http_body::Frame::data(c)));
        StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    };
    let request = || {
        Request::post(url(&server, "/api/echo"))
            .body(body())
            .unwrap()
    };

    let (status, echo_body) = echo(&mut client, request()).await;
    assert_eq!(status, 200);
    assert_eq!(echo_body["body_len"], whole.len());
    assert_eq!(echo_body["body_sha256"], sha256_hex(&whole));

    server.revoke_all();
    let (status, echo_body) = echo(&mut client, request()).await;
    assert_eq!(
        status, 200,
        "the streamed body, copied within the cap, replayed"
    );
    assert_eq!(echo_body["body_sha256"], sha256_hex(&whole));
    assert_eq!(server.stats().unauthorized, 1);
}

#[tokio::test]
async fn a_relative_uri_is_a_reqwest_builder_error() {
    let server = MockServer::start().await;
    let mut http = ReqwestService::new(http(&server));
    let error = http
        .call(
            Request::get("/api/echo")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .expect_err("reqwest needs an absolute URL");
    assert!(error.is_builder(), "{error:?}");
}
