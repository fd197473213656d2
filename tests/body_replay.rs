//! The retry after a `401` resends the body byte for byte, within the cap.

mod common;

use std::convert::Infallible;

use bytes::Bytes;
use http::Request;
use http_body::Frame;
use http_body_util::{Empty, Full, StreamBody};
use wokelo_auth::testing::{ApiFault, MockServer};

use common::{bytes, client, get, send, sha256_hex};

type Chunked =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// A streaming body of unknown length, in `chunk`-byte frames.
fn chunked(data: &Bytes, chunk: usize) -> Chunked {
    let frames: Vec<_> = data
        .chunks(chunk)
        .map(|c| Ok(Frame::data(data.slice_ref(c))))
        .collect();
    StreamBody::new(futures_util::stream::iter(frames))
}

#[tokio::test]
async fn a_streaming_body_under_the_cap_is_replayed_byte_exact() {
    let server = MockServer::start().await;
    let service = client::<Chunked>(&common::builder(&server).build());
    // Well under the 64 KiB cap with the bookkeeping of its 49 chunks.
    let data = bytes(48 * 1024, 1);
    server.fail_next_api_requests(1, ApiFault::Unauthorized);

    let request = Request::post(server.url("/api/echo/upload"))
        .body(chunked(&data, 1000))
        .unwrap();
    let answer = send(&service, request).await.unwrap();
    assert_eq!(answer.status, 200);
    let echo = answer.json();
    assert_eq!(echo["body_len"], data.len());
    assert_eq!(echo["body_sha256"], sha256_hex(&data));
    assert_eq!(echo["method"], "POST");
    let stats = server.stats();
    assert_eq!(
        (stats.api_requests, stats.unauthorized, stats.tokens_issued),
        (2, 1, 2)
    );
}

#[tokio::test]
async fn a_full_body_and_headers_are_replayed() {
    let server = MockServer::start().await;
    let service = client::<Full<Bytes>>(&common::builder(&server).build());
    let data = bytes(1024, 2);
    server.fail_next_api_requests(1, ApiFault::Unauthorized);
    let request = Request::put(server.url("/api/echo?x=1"))
        .header("content-type", "application/octet-stream")
        .body(Full::new(data.clone()))
        .unwrap();
    let echo = send(&service, request).await.unwrap().json();
    assert_eq!(echo["body_sha256"], sha256_hex(&data));
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["query"], "x=1");
    assert_eq!(echo["content_type"], "application/octet-stream");
    assert_eq!(server.stats().api_requests, 2);
}

#[tokio::test]
async fn an_empty_body_is_replayed() {
    let server = MockServer::start().await;
    let service = client::<Empty<Bytes>>(&common::builder(&server).build());
    server.fail_next_api_requests(1, ApiFault::Unauthorized);
    let echo = send(&service, get(server.url("/api/echo")))
        .await
        .unwrap()
        .json();
    assert_eq!(echo["body_len"], 0);
    assert_eq!(server.stats().api_requests, 2);
}

#[tokio::test]
async fn a_body_over_the_cap_is_not_retried_but_the_token_is_refreshed() {
    let server = MockServer::start().await;
    let layer = common::builder(&server)
        .max_replay_body_bytes(16 * 1024)
        .build();
    let service = client::<Chunked>(&layer);
    let data = bytes(16 * 1024 + 1, 3);
    server.fail_next_api_requests(1, ApiFault::Unauthorized);

    let request = Request::post(server.url("/api/echo"))
        .body(chunked(&data, 4096))
        .unwrap();
    let answer = send(&service, request).await.unwrap();
    assert_eq!(answer.status, 401, "the 401 comes back unchanged");
    assert!(answer.headers.contains_key("www-authenticate"));
    assert_eq!(server.stats().api_requests, 1, "not retried");

    // The next request uses a fresh token, without another 401.
    let request = Request::post(server.url("/api/echo"))
        .body(chunked(&data, 4096))
        .unwrap();
    let answer = send(&service, request).await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["body_sha256"], sha256_hex(&data));
    let stats = server.stats();
    assert_eq!(stats.tokens_issued, 2, "{stats:?}");
    assert_eq!(stats.tokens_presented.len(), 2, "{stats:?}");
    assert_eq!(stats.unauthorized, 1);
}

#[tokio::test]
async fn a_body_of_known_size_over_the_cap_streams_through() {
    let server = MockServer::start().await;
    let service = client::<Full<Bytes>>(&common::builder(&server).build());
    let data = bytes(1024 * 1024, 4);
    let request = Request::post(server.url("/api/echo"))
        .body(Full::new(data.clone()))
        .unwrap();
    let answer = send(&service, request).await.unwrap();
    assert_eq!(answer.json()["body_sha256"], sha256_hex(&data));
}
