//! The mock Wokelo server (`wokelo_auth::testing`) over real sockets, driven by a
//! plain hyper-util client rather than the crate's auth layer, so every status,
//! header, body and counter is checked as a client sees it.

use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderMap, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wokelo_auth::testing::{ApiFault, MockConfig, MockServer, MockStats, TokenFault};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

const EXPIRED: &str =
    r#"Bearer realm="api",error="invalid_token",error_description="The access token has expired.""#;
const INVALID: &str =
    r#"Bearer realm="api",error="invalid_token",error_description="The access token is invalid.""#;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!("body is not JSON ({error}): {:?}", self.body);
        })
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .unwrap()
    }
}

async fn send(client: &HttpClient, request: Request<Full<Bytes>>) -> Reply {
    let response = client.request(request).await.expect("request succeeds");
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("body reads").to_bytes(),
    }
}

#[derive(Clone, Copy, Debug)]
enum Encoding {
    Form,
    Json,
    Multipart,
}

const BOUNDARY: &str = "----mock-boundary-7MA4YWxkTrZu0gW";

fn encode(encoding: Encoding, params: &[(&str, &str)]) -> (String, String) {
    match encoding {
        Encoding::Form => (
            "application/x-www-form-urlencoded".to_owned(),
            serde_urlencoded::to_string(params).unwrap(),
        ),
        Encoding::Json => {
            let object: serde_json::Map<String, Value> = params
                .iter()
                .map(|(name, value)| ((*name).to_owned(), Value::from(*value)))
                .collect();
            (
                "application/json".to_owned(),
                Value::Object(object).to_string(),
            )
        }
        Encoding::Multipart => {
            let mut body = String::new();
            for (name, value) in params {
                body.push_str(&format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                ));
            }
            body.push_str(&format!("--{BOUNDARY}--\r\n"));
            (format!("multipart/form-data; boundary={BOUNDARY}"), body)
        }
    }
}

async fn token_request(
    client: &HttpClient,
    server: &MockServer,
    encoding: Encoding,
    params: &[(&str, &str)],
) -> Reply {
    let (content_type, body) = encode(encoding, params);
    let request = Request::post(server.url("/auth/token/"))
        .header(CONTENT_TYPE, content_type)
        .body(Full::from(body))
        .unwrap();
    send(client, request).await
}

fn password_params(config: &MockConfig) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", "password".to_owned()),
        ("client_id", config.client_id.clone()),
        ("client_secret", config.client_secret.clone()),
        ("username", config.username.clone()),
        ("password", config.password.clone()),
    ]
}

fn borrowed<'a>(params: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    params
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect()
}

async fn password_grant(client: &HttpClient, server: &MockServer, encoding: Encoding) -> Reply {
    let params = password_params(server.config());
    token_request(client, server, encoding, &borrowed(&params)).await
}

/// A successful password grant: (access token, refresh token).
async fn login(client: &HttpClient, server: &MockServer) -> (String, String) {
    let reply = password_grant(client, server, Encoding::Form).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let token = reply.json();
    (
        token["access_token"].as_str().unwrap().to_owned(),
        token["refresh_token"].as_str().unwrap().to_owned(),
    )
}

async fn refresh(client: &HttpClient, server: &MockServer, refresh_token: &str) -> Reply {
    let config = server.config();
    let params = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", config.client_id.as_str()),
        ("client_secret", config.client_secret.as_str()),
    ];
    token_request(client, server, Encoding::Form, &params).await
}

fn tokens_of(reply: &Reply) -> (String, String) {
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let token = reply.json();
    (
        token["access_token"].as_str().unwrap().to_owned(),
        token["refresh_token"].as_str().unwrap().to_owned(),
    )
}

async fn api(
    client: &HttpClient,
    server: &MockServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: impl Into<Bytes>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(server.url(path));
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    send(client, request.body(Full::new(body.into())).unwrap()).await
}

async fn echo(client: &HttpClient, server: &MockServer, token: Option<&str>) -> Reply {
    api(
        client,
        server,
        Method::GET,
        "/api/echo",
        token,
        Bytes::new(),
    )
    .await
}

fn counts<const N: usize>(pairs: [(&str, u64); N]) -> std::collections::BTreeMap<String, u64> {
    pairs
        .into_iter()
        .map(|(key, count)| (key.to_owned(), count))
        .collect()
}

#[tokio::test]
async fn password_grant_in_every_encoding() {
    let server = MockServer::start().await;
    let client = client();
    let mut access_tokens = Vec::new();
    for encoding in [Encoding::Form, Encoding::Json, Encoding::Multipart] {
        let reply = password_grant(&client, &server, encoding).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{encoding:?}: {:?}",
            reply.body
        );
        assert_eq!(reply.header("content-type"), "application/json");
        assert_eq!(reply.header("cache-control"), "no-store");
        let token = reply.json();
        assert_eq!(token["token_type"], "Bearer");
        assert_eq!(token["scope"], "read write");
        assert_eq!(token["expires_in"], 3600);
        let access = token["access_token"].as_str().unwrap();
        assert_eq!(access.len(), 40);
        assert!(access
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(token["refresh_token"].as_str().unwrap().len(), 40);
        access_tokens.push(access.to_owned());
    }
    access_tokens.sort();
    access_tokens.dedup();
    assert_eq!(access_tokens.len(), 3, "every grant mints a new token");
    for token in &access_tokens {
        assert_eq!(
            echo(&client, &server, Some(token)).await.status,
            StatusCode::OK
        );
    }

    // The path without its trailing slash works too.
    let params = password_params(server.config());
    let (content_type, body) = encode(Encoding::Form, &borrowed(&params));
    let request = Request::post(server.url("/auth/token"))
        .header(CONTENT_TYPE, content_type)
        .body(Full::from(body))
        .unwrap();
    assert_eq!(send(&client, request).await.status, StatusCode::OK);

    let stats = server.stats();
    assert_eq!(stats.token_requests, 4);
    assert_eq!(stats.password_grants, 4);
    assert_eq!(stats.refresh_grants, 0);
    assert_eq!(stats.tokens_issued, 4);
    assert_eq!(stats.token_errors, 0);
    assert_eq!(
        stats.token_encodings,
        counts([("form", 2), ("json", 1), ("multipart", 1)])
    );
    assert_eq!(stats.api_requests, 3);
    assert_eq!(stats.api_by_status, [(200, 3)].into());
    for token in &access_tokens {
        assert_eq!(stats.tokens_presented[token], 1);
    }
}

#[tokio::test]
async fn wrong_client_credentials_are_invalid_client() {
    let server = MockServer::start().await;
    let client = client();
    let mut params = password_params(server.config());
    params[2].1 = "wrong-secret".to_owned();
    for encoding in [Encoding::Form, Encoding::Json, Encoding::Multipart] {
        let reply = token_request(&client, &server, encoding, &borrowed(&params)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.json(), json!({"error": "invalid_client"}));
        assert_eq!(
            reply.header("www-authenticate"),
            r#"Bearer error="invalid_client""#
        );
    }
    // The client is checked before the refresh token.
    let (_, refresh_token) = login(&client, &server).await;
    let reply = token_request(
        &client,
        &server,
        Encoding::Form,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh_token),
            ("client_id", "someone-else"),
            ("client_secret", "mock-client-secret"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json(), json!({"error": "invalid_client"}));

    let stats = server.stats();
    assert_eq!(stats.invalid_client, 4);
    assert_eq!(stats.token_errors, 4);
    assert_eq!(stats.invalid_grant, 0);
    assert_eq!((stats.password_grants, stats.refresh_grants), (4, 1));
    assert_eq!(stats.tokens_issued, 1);
    // The refresh token survived the refused attempt.
    assert_eq!(
        refresh(&client, &server, &refresh_token).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn wrong_user_credentials_are_invalid_grant() {
    let server = MockServer::start().await;
    let client = client();
    for (field, value) in [(3, "nobody@example.com"), (4, "wrong-password")] {
        let mut params = password_params(server.config());
        params[field].1 = value.to_owned();
        let reply = token_request(&client, &server, Encoding::Form, &borrowed(&params)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            reply.json(),
            json!({"error": "invalid_grant", "error_description": "Invalid credentials given."})
        );
    }
    let stats = server.stats();
    assert_eq!(
        (stats.invalid_grant, stats.token_errors, stats.tokens_issued),
        (2, 2, 0)
    );
}

#[tokio::test]
async fn other_or_missing_grant_types_are_unsupported() {
    let server = MockServer::start().await;
    let client = client();
    let config = server.config();
    let base = [
        ("client_id", config.client_id.as_str()),
        ("client_secret", config.client_secret.as_str()),
    ];
    let client_credentials = [base[0], base[1], ("grant_type", "client_credentials")];
    for params in [&client_credentials[..], &base[..]] {
        let reply = token_request(&client, &server, Encoding::Json, params).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.json(), json!({"error": "unsupported_grant_type"}));
    }
    let stats = server.stats();
    assert_eq!((stats.token_requests, stats.token_errors), (2, 2));
    assert_eq!((stats.password_grants, stats.refresh_grants), (0, 0));
}

#[tokio::test]
async fn unknown_content_types_and_broken_bodies_are_invalid_request() {
    let server = MockServer::start().await;
    let client = client();
    let cases = [
        (Some("text/plain"), "grant_type=password"),
        (None, "grant_type=password"),
        (Some("application/json"), "{\"grant_type\":"),
        (Some("application/json"), "[\"grant_type\"]"),
        (Some("multipart/form-data"), "--x\r\n\r\n--x--"),
        (
            Some("multipart/form-data; boundary=abc"),
            "--abc\r\nContent-Disposition: form-data; name=\"grant_type\"\r\n\r\npassword",
        ),
    ];
    for (content_type, body) in cases {
        let mut request = Request::post(server.url("/auth/token/"));
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        let reply = send(&client, request.body(Full::from(body)).unwrap()).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{content_type:?} {body:?}"
        );
        assert_eq!(reply.json(), json!({"error": "invalid_request"}));
    }
    let stats = server.stats();
    assert_eq!((stats.token_requests, stats.token_errors), (6, 6));
    // Only recognised content types count as an encoding, parsable or not.
    assert_eq!(
        stats.token_encodings,
        counts([("json", 2), ("multipart", 1)])
    );
}

#[tokio::test]
async fn missing_user_credentials_are_invalid_request() {
    let server = MockServer::start().await;
    let client = client();
    let params = password_params(server.config());
    let without_password = &borrowed(&params)[..4];
    let reply = token_request(&client, &server, Encoding::Form, without_password).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.json(),
        json!({"error": "invalid_request", "error_description": "Request is missing password parameter."})
    );
}

#[tokio::test]
async fn refresh_rotates_both_tokens() {
    let server = MockServer::start().await;
    let client = client();
    let (access1, refresh1) = login(&client, &server).await;

    let reply = refresh(&client, &server, &refresh1).await;
    assert_eq!(reply.json()["token_type"], "Bearer");
    let (access2, refresh2) = tokens_of(&reply);
    assert_ne!(access2, access1);
    assert_ne!(refresh2, refresh1);

    // The old access token is revoked with its refresh token; the new one works.
    let reply = echo(&client, &server, Some(&access1)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.header("www-authenticate"), INVALID);
    assert_eq!(
        echo(&client, &server, Some(&access2)).await.status,
        StatusCode::OK
    );

    // The rotated-away refresh token is refused.
    let reply = refresh(&client, &server, &refresh1).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json(), json!({"error": "invalid_grant"}));

    // Without reuse protection the family survives; the new refresh token works.
    assert_eq!(
        echo(&client, &server, Some(&access2)).await.status,
        StatusCode::OK
    );
    let (access3, _) = tokens_of(&refresh(&client, &server, &refresh2).await);
    assert_eq!(
        echo(&client, &server, Some(&access3)).await.status,
        StatusCode::OK
    );

    // Unknown refresh tokens and a missing one.
    let reply = refresh(&client, &server, "never-issued").await;
    assert_eq!(reply.json(), json!({"error": "invalid_grant"}));
    let config = server.config();
    let reply = token_request(
        &client,
        &server,
        Encoding::Form,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &config.client_id),
            ("client_secret", &config.client_secret),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"], "invalid_request");

    let stats = server.stats();
    assert_eq!(stats.password_grants, 1);
    assert_eq!(stats.refresh_grants, 5);
    assert_eq!(stats.tokens_issued, 3);
    assert_eq!(stats.invalid_grant, 2);
    assert_eq!(stats.token_errors, 3);
    assert_eq!(stats.unauthorized, 1);
}

#[tokio::test]
async fn reuse_protection_revokes_the_whole_family() {
    let server = MockServer::start_with(MockConfig {
        reuse_protection: true,
        ..MockConfig::default()
    })
    .await;
    let client = client();
    let (bystander, bystander_refresh) = login(&client, &server).await;
    let (_, refresh1) = login(&client, &server).await;
    let (access2, refresh2) = tokens_of(&refresh(&client, &server, &refresh1).await);
    let (access3, refresh3) = tokens_of(&refresh(&client, &server, &refresh2).await);
    assert_eq!(
        echo(&client, &server, Some(&access3)).await.status,
        StatusCode::OK
    );

    // Replaying refresh1 (used) is refused and burns the family.
    let reply = refresh(&client, &server, &refresh1).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json(), json!({"error": "invalid_grant"}));
    for token in [&access2, &access3] {
        let reply = echo(&client, &server, Some(token)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.header("www-authenticate"), INVALID);
        assert_eq!(
            reply.json(),
            json!({"detail": "The access token is invalid."})
        );
    }
    let reply = refresh(&client, &server, &refresh3).await;
    assert_eq!(reply.json(), json!({"error": "invalid_grant"}));

    // Another login's family is untouched.
    assert_eq!(
        echo(&client, &server, Some(&bystander)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        refresh(&client, &server, &bystander_refresh).await.status,
        StatusCode::OK
    );
    let stats = server.stats();
    assert_eq!((stats.invalid_grant, stats.unauthorized), (2, 2));
}

#[tokio::test]
async fn refresh_tokens_can_be_switched_off() {
    let server = MockServer::start_with(MockConfig {
        issue_refresh_tokens: false,
        ..MockConfig::default()
    })
    .await;
    let reply = password_grant(&client(), &server, Encoding::Form).await;
    assert_eq!(reply.status, StatusCode::OK);
    let token = reply.json();
    assert!(token["access_token"].is_string());
    assert!(token.get("refresh_token").is_none(), "{token}");
}

#[tokio::test]
async fn expires_in_override_is_sent_verbatim_or_omitted() {
    let client = client();
    for (value, expected) in [
        (json!("3600"), Some(json!("3600"))),
        (json!(-5), Some(json!(-5))),
        (Value::Null, None),
    ] {
        let server = MockServer::start_with(MockConfig {
            expires_in_override: Some(value),
            ..MockConfig::default()
        })
        .await;
        let token = password_grant(&client, &server, Encoding::Form)
            .await
            .json();
        assert_eq!(token.get("expires_in").cloned(), expected);
        // The token itself still lives for token_lifetime.
        let access = token["access_token"].as_str().unwrap();
        assert_eq!(
            echo(&client, &server, Some(access)).await.status,
            StatusCode::OK
        );
    }
}

#[tokio::test(start_paused = true)]
async fn access_tokens_expire_on_the_tokio_clock() {
    let server = MockServer::start_with(MockConfig {
        token_lifetime: Duration::from_secs(1),
        ..MockConfig::default()
    })
    .await;
    let client = client();
    let reply = password_grant(&client, &server, Encoding::Form).await;
    assert_eq!(reply.json()["expires_in"], 1);
    let (access, refresh_token) = tokens_of(&reply);
    let minted = server.issue_token();

    tokio::time::advance(Duration::from_millis(900)).await;
    assert_eq!(
        echo(&client, &server, Some(&access)).await.status,
        StatusCode::OK
    );

    tokio::time::advance(Duration::from_millis(200)).await;
    for token in [&access, &minted] {
        let reply = echo(&client, &server, Some(token)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.header("www-authenticate"), EXPIRED);
        assert_eq!(
            reply.json(),
            json!({"detail": "The access token has expired."})
        );
    }

    // The refresh token outlives its access token.
    let (fresh, _) = tokens_of(&refresh(&client, &server, &refresh_token).await);
    assert_eq!(
        echo(&client, &server, Some(&fresh)).await.status,
        StatusCode::OK
    );
    let stats = server.stats();
    assert_eq!(stats.api_by_status, [(200, 2), (401, 2)].into());
    assert_eq!(stats.unauthorized, 2);
}

#[tokio::test]
async fn missing_credentials_get_the_bare_challenge() {
    let server = MockServer::start().await;
    let client = client();
    let basic = Request::get(server.url("/api/echo"))
        .header(AUTHORIZATION, "Basic dXNlcjpwYXNz")
        .body(Full::default())
        .unwrap();
    let empty_bearer = Request::get(server.url("/api/enterprise/company/search?query=x"))
        .header(AUTHORIZATION, "Bearer ")
        .body(Full::default())
        .unwrap();
    let replies = [
        echo(&client, &server, None).await,
        send(&client, basic).await,
        send(&client, empty_bearer).await,
    ];
    for reply in replies {
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.header("www-authenticate"), r#"Bearer realm="api""#);
        assert_eq!(
            reply.json(),
            json!({"detail": "Authentication credentials were not provided."})
        );
    }
    let stats = server.stats();
    assert_eq!(stats.api_requests, 3);
    assert_eq!(stats.unauthorized, 3);
    assert_eq!(stats.api_by_status, [(401, 3)].into());
    assert!(stats.tokens_presented.is_empty());
}

#[tokio::test]
async fn unknown_tokens_are_invalid_and_recorded() {
    let server = MockServer::start().await;
    let client = client();
    for _ in 0..2 {
        let reply = echo(&client, &server, Some("made-up-token")).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.header("www-authenticate"), INVALID);
        assert_eq!(
            reply.json(),
            json!({"detail": "The access token is invalid."})
        );
    }
    assert_eq!(
        server.stats().tokens_presented,
        counts([("made-up-token", 2)])
    );
}

/// Writes a request in two halves over a raw socket: no answer may come before
/// the whole body is in, and the connection stays usable afterwards.
#[tokio::test]
async fn the_whole_body_is_read_before_a_401() {
    let server = MockServer::start().await;
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    let body = vec![b'x'; 64 * 1024];
    let head = format!(
        "POST /api/echo HTTP/1.1\r\nhost: {}\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n",
        server.addr(),
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..body.len() / 2]).await.unwrap();
    let mut buf = vec![0; 4096];
    let early = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
    assert!(early.is_err(), "answered before the body was complete");
    stream.write_all(&body[body.len() / 2..]).await.unwrap();
    let first = read_response(&mut stream).await;
    assert!(first.starts_with("HTTP/1.1 401 "), "{first}");
    assert!(first.contains("Authentication credentials were not provided."));

    // Same connection, next request: the body was consumed, not left in the way.
    let token = server.issue_token();
    let next = format!(
        "GET /api/echo HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {token}\r\n\r\n",
        server.addr()
    );
    stream.write_all(next.as_bytes()).await.unwrap();
    let second = read_response(&mut stream).await;
    assert!(second.starts_with("HTTP/1.1 200 "), "{second}");
    assert_eq!(server.stats().api_by_status, [(200, 1), (401, 1)].into());
}

/// Reads one HTTP/1.1 response with a `content-length` from a raw socket.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert_ne!(n, 0, "connection closed mid-response");
        received.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().unwrap())
                })
                .expect("content-length");
            if received.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

#[tokio::test]
async fn revoke_all_invalidates_every_token() {
    let server = MockServer::start().await;
    let client = client();
    let (access, refresh_token) = login(&client, &server).await;
    let minted = server.issue_token();
    assert_eq!(
        echo(&client, &server, Some(&minted)).await.status,
        StatusCode::OK
    );

    server.revoke_all();
    for token in [&access, &minted] {
        let reply = echo(&client, &server, Some(token)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.header("www-authenticate"), INVALID);
    }
    let reply = refresh(&client, &server, &refresh_token).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json(), json!({"error": "invalid_grant"}));

    // Logging in again works.
    let (fresh, _) = login(&client, &server).await;
    assert_eq!(
        echo(&client, &server, Some(&fresh)).await.status,
        StatusCode::OK
    );
    // issue_token does not count as a token request.
    assert_eq!(server.stats().tokens_issued, 2);
}

#[tokio::test]
async fn token_faults_status_malformed_missing_and_throttled_in_fifo_order() {
    let server = MockServer::start().await;
    let client = client();
    server.fail_next_token_requests(
        1,
        TokenFault::Status {
            status: 503,
            body: r#"{"detail":"Service unavailable"}"#.to_owned(),
        },
    );
    server.fail_next_token_requests(
        1,
        TokenFault::Status {
            status: 400,
            body: r#"{"invalid_grant":"The access token of your Refresh Token does not exist."}"#
                .to_owned(),
        },
    );
    server.fail_next_token_requests(2, TokenFault::Malformed);
    server.fail_next_token_requests(1, TokenFault::MissingAccessToken);
    server.fail_next_token_requests(
        1,
        TokenFault::TooManyRequests {
            retry_after_secs: 7,
        },
    );

    let reply = password_grant(&client, &server, Encoding::Form).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("content-type"), "application/json");
    assert_eq!(reply.body, r#"{"detail":"Service unavailable"}"#);

    let reply = password_grant(&client, &server, Encoding::Form).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.json()["invalid_grant"],
        "The access token of your Refresh Token does not exist."
    );

    for _ in 0..2 {
        let reply = password_grant(&client, &server, Encoding::Json).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("content-type"), "text/html");
        assert_eq!(reply.body, "<html>oops</html>");
    }

    let reply = password_grant(&client, &server, Encoding::Multipart).await;
    assert_eq!(reply.status, StatusCode::OK);
    let token = reply.json();
    assert!(token.get("access_token").is_none(), "{token}");
    assert_eq!(token["token_type"], "Bearer");

    let reply = refresh(&client, &server, "whatever").await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.header("retry-after"), "7");
    assert_eq!(reply.json(), json!({"detail": "Request was throttled."}));

    // The queue is empty: back to normal.
    let reply = password_grant(&client, &server, Encoding::Form).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.json()["access_token"].is_string());

    let stats = server.stats();
    assert_eq!(stats.token_requests, 7);
    assert_eq!(stats.password_grants, 6);
    assert_eq!(stats.refresh_grants, 1);
    assert_eq!(stats.tokens_issued, 1);
    assert_eq!(stats.token_errors, 3);
    assert_eq!(stats.invalid_grant, 0, "that variant has no `error` field");
    assert_eq!(
        stats.token_encodings,
        counts([("form", 4), ("json", 2), ("multipart", 1)])
    );
}

#[tokio::test]
async fn injected_oauth_errors_are_counted_by_their_error_code() {
    let server = MockServer::start().await;
    server.fail_next_token_requests(
        1,
        TokenFault::Status {
            status: 400,
            body: r#"{"error":"invalid_grant"}"#.to_owned(),
        },
    );
    server.fail_next_token_requests(
        1,
        TokenFault::Status {
            status: 401,
            body: r#"{"error":"invalid_client"}"#.to_owned(),
        },
    );
    let client = client();
    for status in [StatusCode::BAD_REQUEST, StatusCode::UNAUTHORIZED] {
        assert_eq!(
            password_grant(&client, &server, Encoding::Form)
                .await
                .status,
            status
        );
    }
    let stats = server.stats();
    assert_eq!(
        (
            stats.invalid_grant,
            stats.invalid_client,
            stats.token_errors
        ),
        (1, 1, 2)
    );
}

#[tokio::test]
async fn oversized_token_response_has_exact_length() {
    let server = MockServer::start().await;
    let client = client();
    let len = 3 * 1024 * 1024 + 5;
    server.fail_next_token_requests(1, TokenFault::Oversized(len));
    let reply = password_grant(&client, &server, Encoding::Form).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), "application/json");
    assert_eq!(reply.header(CONTENT_LENGTH.as_str()), len.to_string());
    assert_eq!(reply.body.len(), len);
    assert!(reply.body.starts_with(br#"{"access_token":"AAAA"#));
    assert!(serde_json::from_slice::<Value>(&reply.body).is_err());
    let stats = server.stats();
    assert_eq!((stats.tokens_issued, stats.token_errors), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn delay_fault_and_token_latency_add_up_on_the_tokio_clock() {
    let server = MockServer::start_with(MockConfig {
        token_latency: Duration::from_secs(2),
        ..MockConfig::default()
    })
    .await;
    let client = client();
    let start = tokio::time::Instant::now();
    let reply = password_grant(&client, &server, Encoding::Form).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(start.elapsed().as_secs(), 2);

    server.fail_next_token_requests(1, TokenFault::Delay(Duration::from_secs(30)));
    let start = tokio::time::Instant::now();
    let reply = password_grant(&client, &server, Encoding::Form).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "a delayed request still succeeds"
    );
    assert_eq!(start.elapsed().as_secs(), 32);
    let stats = server.stats();
    assert_eq!((stats.token_requests, stats.tokens_issued), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn hang_holds_the_request_until_the_server_is_dropped() {
    let server = MockServer::start().await;
    server.fail_next_token_requests(1, TokenFault::Hang);
    let params = password_params(server.config());
    let (content_type, body) = encode(Encoding::Form, &borrowed(&params));
    let request = Request::post(server.url("/auth/token/"))
        .header(CONTENT_TYPE, content_type)
        .body(Full::from(body))
        .unwrap();
    let client = client();
    let mut pending = Box::pin(client.request(request));
    // Paused time may jump before the request reaches the server; wait for it.
    while server.stats().token_requests == 0 {
        let waited = tokio::time::timeout(Duration::from_secs(1), &mut pending).await;
        assert!(waited.is_err(), "answered before it was even counted");
    }
    let waited = tokio::time::timeout(Duration::from_secs(3600), &mut pending).await;
    assert!(waited.is_err(), "a hanging request must not be answered");
    assert_eq!(server.stats().token_requests, 1);

    drop(server);
    let outcome = tokio::time::timeout(Duration::from_secs(60), pending)
        .await
        .expect("dropping the server ends the hanging request");
    assert!(outcome.is_err(), "the connection closes without an answer");
}

#[tokio::test]
async fn api_faults_take_precedence_then_clear() {
    let server = MockServer::start().await;
    let client = client();
    let token = server.issue_token();
    server.fail_next_api_requests(
        1,
        ApiFault::Status {
            status: 503,
            body: r#"{"detail":"Service temporarily unavailable."}"#.to_owned(),
            retry_after_secs: Some(3),
        },
    );
    server.fail_next_api_requests(
        2,
        ApiFault::Status {
            status: 500,
            body: r#"{"message":"boom"}"#.to_owned(),
            retry_after_secs: None,
        },
    );
    server.fail_next_api_requests(1, ApiFault::Unauthorized);

    let reply = echo(&client, &server, Some(&token)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header(RETRY_AFTER.as_str()), "3");
    assert_eq!(
        reply.json(),
        json!({"detail": "Service temporarily unavailable."})
    );

    // Faults apply before the token check, so even a tokenless request gets one.
    for token in [Some(token.as_str()), None] {
        let reply = echo(&client, &server, token).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(reply.headers.get(RETRY_AFTER).is_none());
        assert_eq!(reply.json(), json!({"message": "boom"}));
    }

    let reply = echo(&client, &server, Some(&token)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.header(WWW_AUTHENTICATE.as_str()), INVALID);
    assert_eq!(
        reply.json(),
        json!({"detail": "The access token is invalid."})
    );

    // The token was never actually revoked.
    assert_eq!(
        echo(&client, &server, Some(&token)).await.status,
        StatusCode::OK
    );

    let stats = server.stats();
    assert_eq!(stats.api_requests, 5);
    assert_eq!(
        stats.api_by_status,
        [(200, 1), (401, 1), (500, 2), (503, 1)].into()
    );
    assert_eq!(stats.unauthorized, 1);
    assert_eq!(stats.tokens_presented, counts([(token.as_str(), 4)]));
    assert_eq!(stats.token_requests, 0);
}

#[test]
#[should_panic(expected = "not a valid HTTP status code")]
fn impossible_fault_statuses_panic_when_queued() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(MockServer::start());
    server.fail_next_api_requests(
        1,
        ApiFault::Status {
            status: 42,
            body: String::new(),
            retry_after_secs: None,
        },
    );
}

#[tokio::test]
async fn stats_count_and_reset() {
    let server = MockServer::start().await;
    let client = client();
    let (access, _) = login(&client, &server).await;
    let minted = server.issue_token();
    for _ in 0..3 {
        echo(&client, &server, Some(&access)).await;
    }
    echo(&client, &server, Some(&minted)).await;
    let reply = api(
        &client,
        &server,
        Method::GET,
        "/api/forbidden",
        Some(&minted),
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    let stats = server.stats();
    assert_eq!(
        stats,
        MockStats {
            token_requests: 1,
            password_grants: 1,
            tokens_issued: 1,
            api_requests: 5,
            api_by_status: [(200, 4), (403, 1)].into(),
            tokens_presented: counts([(access.as_str(), 3), (minted.as_str(), 2)]),
            token_encodings: counts([("form", 1)]),
            ..MockStats::default()
        }
    );

    server.reset_stats();
    assert_eq!(server.stats(), MockStats::default());
    // Tokens survive a reset of the counters.
    assert_eq!(
        echo(&client, &server, Some(&access)).await.status,
        StatusCode::OK
    );
    assert_eq!(server.stats().api_requests, 1);
}

#[tokio::test]
async fn echo_reports_the_request_and_its_sha256() {
    let server = MockServer::start().await;
    let client = client();
    let token = server.issue_token();
    let mut body = vec![0u8; 300 * 1024 + 17];
    for (i, byte) in body.iter_mut().enumerate() {
        *byte = (i * 31 % 251) as u8;
    }
    let expected: String = Sha256::digest(&body)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let request = Request::put(server.url("/api/echo/nested/path?a=1&b=two"))
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .header(CONTENT_TYPE, "application/octet-stream")
        .header("x-test", "yes")
        .body(Full::from(body.clone()))
        .unwrap();
    let reply = send(&client, request).await;
    assert_eq!(reply.status, StatusCode::OK);
    let echo = reply.json();
    assert_eq!(echo["user"], "analyst@example.com");
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["path"], "/api/echo/nested/path");
    assert_eq!(echo["query"], "a=1&b=two");
    assert_eq!(echo["body_len"], body.len());
    assert_eq!(echo["body_sha256"], expected);
    assert_eq!(echo["content_type"], "application/octet-stream");
    assert_eq!(echo["headers"]["x-test"], "yes");
    assert!(
        echo["headers"].get("authorization").is_none(),
        "tokens are not echoed"
    );

    let reply = echo_empty(&client, &server, &token).await;
    assert_eq!(reply["query"], Value::Null);
    assert_eq!(reply["content_type"], Value::Null);
    assert_eq!(reply["body_len"], 0);
    assert_eq!(
        reply["body_sha256"],
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

async fn echo_empty(client: &HttpClient, server: &MockServer, token: &str) -> Value {
    let reply = echo(client, server, Some(token)).await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.json()
}

async fn job_call(
    client: &HttpClient,
    server: &MockServer,
    token: &str,
    what: &str,
    id: &str,
) -> Reply {
    let path = format!("/api/enterprise/request/{what}/?request_id={id}");
    api(client, server, Method::GET, &path, Some(token), "").await
}

#[tokio::test]
async fn jobs_advance_per_poll_and_then_have_a_result() {
    let server = MockServer::start_with(MockConfig {
        job_steps: 3,
        ..MockConfig::default()
    })
    .await;
    let client = client();
    let token = server.issue_token();
    let input = json!({"company": "acme", "sections": ["overview"]});
    let reply = api(
        &client,
        &server,
        Method::POST,
        "/api/enterprise/report/",
        Some(&token),
        input.to_string(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let created = reply.json();
    assert_eq!(created["status"], "PENDING");
    let id = created["request_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 36);

    let reply = job_call(&client, &server, &token, "result", &id).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.json(), json!({"detail": "Result not ready."}));

    let mut seen = Vec::new();
    for _ in 0..5 {
        let reply = job_call(&client, &server, &token, "status", &id).await;
        assert_eq!(reply.status, StatusCode::OK);
        let status = reply.json();
        assert_eq!(status["request_id"], id.as_str());
        seen.push(status["status"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        seen,
        [
            "PENDING",
            "PROCESSING",
            "PROCESSING",
            "COMPLETED",
            "COMPLETED"
        ]
    );

    let reply = job_call(&client, &server, &token, "result", &id).await;
    assert_eq!(reply.status, StatusCode::OK);
    let result = reply.json();
    assert_eq!(result["status"], "COMPLETED");
    assert_eq!(result["request_id"], id.as_str());
    assert_eq!(result["result"]["input"], input);

    // Unknown and missing ids, and bodies that are not JSON.
    let reply = job_call(&client, &server, &token, "status", "no-such-job").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.json(), json!({"detail": "Not found."}));
    let reply = job_call(&client, &server, &token, "result", "no-such-job").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    for (method, path, body) in [
        (Method::GET, "/api/enterprise/request/status/", ""),
        (Method::POST, "/api/enterprise/report/", "{nope"),
    ] {
        let reply = api(&client, &server, method.clone(), path, Some(&token), body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{method} {path}");
    }
    let reply = api(
        &client,
        &server,
        Method::GET,
        "/api/enterprise/report/",
        Some(&token),
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), "POST");
}

#[tokio::test]
async fn jobs_asked_to_fail_end_failed() {
    let server = MockServer::start().await;
    let client = client();
    let token = server.issue_token();
    let reply = api(
        &client,
        &server,
        Method::POST,
        "/api/enterprise/report",
        Some(&token),
        r#"{"fail": true}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let id = reply.json()["request_id"].as_str().unwrap().to_owned();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let status = job_call(&client, &server, &token, "status", &id)
            .await
            .json();
        seen.push(status["status"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen, ["PENDING", "PROCESSING", "FAILED"]);
    let result = job_call(&client, &server, &token, "result", &id).await;
    assert_eq!(result.status, StatusCode::OK);
    assert_eq!(result.json()["status"], "FAILED");
    assert_eq!(result.json()["result"], Value::Null);
}

#[tokio::test]
async fn forbidden_search_and_unknown_paths() {
    let server = MockServer::start().await;
    let client = client();
    let token = server.issue_token();

    let reply = api(
        &client,
        &server,
        Method::GET,
        "/api/forbidden",
        Some(&token),
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.json(),
        json!({"message": "You do not have access to this resource."})
    );

    let reply = api(
        &client,
        &server,
        Method::GET,
        "/api/enterprise/company/search?query=acme%20robotics",
        Some(&token),
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let results = reply.json();
    assert_eq!(results["results"][0]["name"], "Acme robotics Inc.");
    assert_eq!(
        results["results"][0]["website"],
        "https://acmerobotics.example"
    );

    let reply = api(&client, &server, Method::GET, "/api/nope", Some(&token), "").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.json(), json!({"detail": "Not found."}));

    // Outside /api/ there is no authentication and nothing to find.
    let reply = api(&client, &server, Method::GET, "/elsewhere", None, "").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = api(&client, &server, Method::GET, "/auth/token/", None, "").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);

    let stats = server.stats();
    assert_eq!(stats.api_by_status, [(200, 1), (403, 1), (404, 1)].into());
    assert_eq!(stats.token_requests, 0);
}

#[tokio::test]
async fn addresses_and_debug() {
    let server = MockServer::start().await;
    let port = server.addr().port();
    assert!(server.addr().ip().is_loopback());
    assert_eq!(server.base_url(), format!("http://127.0.0.1:{port}"));
    assert_eq!(
        server.url("/api/echo?x=1"),
        format!("http://127.0.0.1:{port}/api/echo?x=1")
    );
    let credentials = server.credentials();
    assert_eq!(credentials.client_id(), "mock-client-id");
    assert_eq!(credentials.username(), "analyst@example.com");
    assert_eq!(credentials.base_url().as_str(), server.base_url());
    let debug = format!("{server:?}");
    assert!(
        debug.contains("MockServer") && debug.contains(&port.to_string()),
        "{debug}"
    );
}

#[tokio::test]
async fn dropping_the_server_closes_the_listener() {
    let server = MockServer::start().await;
    let addr = server.addr();
    assert!(TcpStream::connect(addr).await.is_ok());
    drop(server);
    // The accept task is cancelled the next time the runtime polls it.
    let mut closed = false;
    for _ in 0..100 {
        tokio::task::yield_now().await;
        if TcpStream::connect(addr).await.is_err() {
            closed = true;
            break;
        }
    }
    assert!(closed, "still accepting connections after drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_requests_over_h2c() {
    let server = MockServer::start().await;
    let token = server.issue_token();
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let url = server.url("/api/echo");
    let tasks: Vec<_> = (0..10_000)
        .map(|i| {
            let client = client.clone();
            let request = Request::post(url.as_str())
                .header(AUTHORIZATION, format!("Bearer {token}"))
                .body(Full::from(format!("request {i}")))
                .unwrap();
            tokio::spawn(async move { send(&client, request).await })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["body_len"], format!("request {i}").len());
    }
    let stats = server.stats();
    assert_eq!(stats.api_requests, 10_000);
    assert_eq!(stats.api_by_status, [(200, 10_000)].into());
    assert_eq!(stats.tokens_presented[&token], 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_http1_connections() {
    let server = MockServer::start().await;
    let client = client();
    let tasks: Vec<_> = (0..2_000)
        .map(|_| {
            let client = client.clone();
            let request = Request::post(server.url("/auth/token/"))
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Full::from(
                    serde_urlencoded::to_string(borrowed(&password_params(server.config())))
                        .unwrap(),
                ))
                .unwrap();
            tokio::spawn(async move { send(&client, request).await.status })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    let stats = server.stats();
    assert_eq!((stats.token_requests, stats.tokens_issued), (2_000, 2_000));
}
