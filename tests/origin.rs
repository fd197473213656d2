//! The token goes to the API origin and nowhere else.

mod common;

use bytes::Bytes;
use http::{header::AUTHORIZATION, Request};
use http_body_util::Empty;
use wokelo_auth::testing::MockServer;

use common::{client, get, send, status_of};

#[tokio::test]
async fn a_request_to_another_origin_carries_no_token() {
    let api = MockServer::start().await;
    let storage = MockServer::start().await; // another port: another origin
    let service = client::<Empty<Bytes>>(&common::builder(&api).build());

    let answer = send(&service, get(storage.url("/api/echo"))).await.unwrap();
    assert_eq!(answer.status, 401, "the other host saw no token");
    assert!(storage.stats().tokens_presented.is_empty());
    assert_eq!(
        storage.stats().api_requests,
        1,
        "and its 401 was not retried"
    );
    assert_eq!(api.stats().token_requests, 0, "no token was even fetched");

    assert_eq!(status_of(&service, api.url("/api/echo")).await, 200);
    let answer = send(&service, get(storage.url("/api/echo"))).await.unwrap();
    assert_eq!(answer.status, 401);
    assert!(
        storage.stats().tokens_presented.is_empty(),
        "not even once a token exists"
    );
}

#[tokio::test]
async fn same_host_other_scheme_or_port_is_another_origin() {
    let api = MockServer::start().await;
    let service = client::<Empty<Bytes>>(&common::builder(&api).build());
    let other_host = api.url("/api/echo").replace("127.0.0.1", "localhost");
    let answer = send(&service, get(other_host)).await.unwrap();
    assert_eq!(answer.status, 401);
    assert!(api.stats().tokens_presented.is_empty());
}

#[tokio::test]
async fn a_request_with_its_own_authorization_is_left_alone() {
    let api = MockServer::start().await;
    let service = client::<Empty<Bytes>>(&common::builder(&api).build());
    let request = Request::get(api.url("/api/echo"))
        .header(AUTHORIZATION, "Bearer callers-own-token")
        .body(Empty::new())
        .unwrap();
    let answer = send(&service, request).await.unwrap();
    assert_eq!(
        answer.status, 401,
        "the caller's token is unknown to the server"
    );
    let stats = api.stats();
    assert_eq!(stats.api_requests, 1, "not retried");
    assert_eq!(stats.token_requests, 0, "not replaced");
    assert_eq!(stats.tokens_presented.get("callers-own-token"), Some(&1));
}
