//! Every way a request body can end, replayed after a `401` (and after a
//! `503` by [`RetryBody`]), over HTTP/1.1 and HTTP/2 to a real server on
//! 127.0.0.1 that records what each attempt's body carried: data bytes and
//! trailers.

use std::{
    collections::VecDeque,
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;
use tower::{retry::RetryLayer, Layer, ServiceBuilder, ServiceExt};
use wokelo_auth::{
    ApiBase, BoxError, Error, ReplayBody, RetryBody, StaticToken, WokeloAuthLayer,
    WokeloRetryPolicy,
};

/// What one attempt's body carried, as the server read it.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    data: Bytes,
    trailers: Option<HeaderMap>,
    /// The body could not be read to its end (the client gave up on it).
    failed: bool,
}

/// A server answering the first `fail` requests with `status` (and
/// `Retry-After: 0`), the others with `200`, recording every body.
struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    async fn start(status: StatusCode, fail: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let record = record.clone();
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let record = record.clone();
                        async move {
                            let mut body = req.into_body();
                            let mut seen = Seen {
                                data: Bytes::new(),
                                trailers: None,
                                failed: false,
                            };
                            let mut data = Vec::new();
                            while let Some(frame) = body.frame().await {
                                match frame {
                                    Ok(frame) => match frame.into_data() {
                                        Ok(chunk) => data.extend_from_slice(&chunk),
                                        Err(frame) => seen.trailers = frame.into_trailers().ok(),
                                    },
                                    Err(_) => {
                                        seen.failed = true;
                                        break;
                                    }
                                }
                            }
                            seen.data = data.into();
                            let n = {
                                let mut record = record.lock().unwrap();
                                record.push(seen);
                                record.len()
                            };
                            let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
                            if n <= fail {
                                *response.status_mut() = status;
                                response
                                    .headers_mut()
                                    .insert("retry-after", HeaderValue::from_static("0"));
                                if status == StatusCode::UNAUTHORIZED {
                                    response.headers_mut().insert(
                                        "www-authenticate",
                                        HeaderValue::from_static(
                                            r#"Bearer realm="api",error="invalid_token""#,
                                        ),
                                    );
                                }
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}/api/echo", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

#[derive(Clone, Copy, Debug)]
enum Wire {
    Http1,
    Http2,
}

const WIRES: [Wire; 2] = [Wire::Http1, Wire::Http2];

fn http_client<B>(wire: Wire) -> Client<HttpConnector, B>
where
    B: Body + Send + 'static,
    B::Data: Send,
{
    Client::builder(TokioExecutor::new())
        .http2_only(matches!(wire, Wire::Http2))
        .build_http()
}

/// A body that yields `frames` in order, with the size hint and the end of
/// stream a test picks: the shapes a caller's body may take.
struct Scripted {
    frames: VecDeque<Result<Frame<Bytes>, &'static str>>,
    /// The size hint's exact length, if any.
    exact: Option<u64>,
    /// `is_end_stream` is true once the last frame is out; otherwise only a
    /// `None` poll says so (the end flagged late).
    ends_with_last_frame: bool,
}

impl Scripted {
    fn new(frames: Vec<Result<Frame<Bytes>, &'static str>>) -> Self {
        Self {
            frames: frames.into(),
            exact: None,
            ends_with_last_frame: false,
        }
    }

    fn data(chunks: &[&'static [u8]]) -> Self {
        Self::new(
            chunks
                .iter()
                .map(|c| Ok(Frame::data(Bytes::from_static(c))))
                .collect(),
        )
    }

    fn with_trailers(mut self, trailers: HeaderMap) -> Self {
        self.frames.push_back(Ok(Frame::trailers(trailers)));
        self
    }

    fn exact(mut self) -> Self {
        self.exact = Some(
            self.frames
                .iter()
                .filter_map(|f| f.as_ref().ok()?.data_ref())
                .map(|d| d.len() as u64)
                .sum(),
        );
        self
    }

    fn ending_with_last_frame(mut self) -> Self {
        self.ends_with_last_frame = true;
        self
    }
}

impl Body for Scripted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.frames.pop_front().map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.ends_with_last_frame && self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact {
            // What is left of the exact size.
            Some(_) => SizeHint::with_exact(
                self.frames
                    .iter()
                    .filter_map(|f| f.as_ref().ok()?.data_ref())
                    .map(|d| d.len() as u64)
                    .sum(),
            ),
            None => SizeHint::default(),
        }
    }
}

fn trailers(value: &str) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", value.parse().unwrap());
    trailers.insert("x-parts", HeaderValue::from_static("2"));
    trailers
}

/// The auth layer over `wire` to `server`, with a replay cap of `cap`.
fn layer(server: &Server, cap: usize) -> WokeloAuthLayer {
    WokeloAuthLayer::builder(StaticToken::new("t"))
        .api_base(ApiBase::parse(&format!("http://{}/", server.addr)).unwrap())
        .max_replay_body_bytes(cap)
        .build()
}

/// A `POST` of `body` through the auth layer to a server answering `401`
/// once: the status that comes back and every body the server read.
async fn post_after_401(
    wire: Wire,
    body: Scripted,
    cap: usize,
) -> (Result<StatusCode, Error>, Vec<Seen>) {
    let server = Server::start(StatusCode::UNAUTHORIZED, 1).await;
    let service = layer(&server, cap).layer(http_client::<ReplayBody<Scripted>>(wire));
    let has_trailers = body
        .frames
        .iter()
        .any(|f| matches!(f, Ok(f) if f.is_trailers()));
    let mut request = Request::post(server.url());
    if has_trailers {
        // HTTP/1.1 sends only the trailers the head announces.
        request = request.header("trailer", "x-checksum, x-parts");
    }
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        service.oneshot(request.body(body).unwrap()),
    )
    .await
    .expect("no hang");
    let status = outcome.map(|response| response.status());
    (status, server.seen())
}

/// The body goes out whole twice: the `401` is retried and the retry
/// carries the same data bytes and the same trailers.
async fn assert_replayed(body: impl Fn() -> Scripted, data: &[u8], trailers: Option<HeaderMap>) {
    for wire in WIRES {
        let (status, seen) = post_after_401(wire, body(), 64 * 1024).await;
        assert_eq!(status.unwrap(), 200, "{wire:?}: retried");
        let expected = Seen {
            data: Bytes::copy_from_slice(data),
            trailers: trailers.clone(),
            failed: false,
        };
        assert_eq!(seen, vec![expected.clone(), expected], "{wire:?}");
    }
}

#[tokio::test]
async fn trailers_are_replayed_with_the_data() {
    let body = || Scripted::data(&[b"first ", b"second"]).with_trailers(trailers("abc"));
    assert_replayed(body, b"first second", Some(trailers("abc"))).await;
}

#[tokio::test]
async fn trailers_after_no_data_are_replayed() {
    let body = || Scripted::new(vec![]).with_trailers(trailers("none"));
    assert_replayed(body, b"", Some(trailers("none"))).await;
}

#[tokio::test]
async fn an_end_flagged_late_is_replayed() {
    assert_replayed(|| Scripted::data(&[b"ab", b"cd"]), b"abcd", None).await;
}

#[tokio::test]
async fn an_end_flagged_with_the_last_frame_is_replayed() {
    let body = || Scripted::data(&[b"ab", b"cd"]).ending_with_last_frame();
    assert_replayed(body, b"abcd", None).await;
}

#[tokio::test]
async fn an_exact_size_with_the_end_flagged_late_is_replayed() {
    // HTTP/1.1 sends a content-length and stops reading at its last byte:
    // the `None` that would flag the end is never polled.
    assert_replayed(|| Scripted::data(&[b"ab", b"cd"]).exact(), b"abcd", None).await;
}

#[tokio::test]
async fn an_exact_size_ending_with_the_last_frame_is_replayed() {
    let body = || {
        Scripted::data(&[b"ab", b"cd"])
            .exact()
            .ending_with_last_frame()
    };
    assert_replayed(body, b"abcd", None).await;
}

#[tokio::test]
async fn an_empty_last_frame_is_replayed() {
    assert_replayed(|| Scripted::data(&[b"ab", b"cd", b""]), b"abcd", None).await;
    let body = || Scripted::data(&[b"ab", b"cd", b""]).ending_with_last_frame();
    assert_replayed(body, b"abcd", None).await;
}

#[tokio::test]
async fn empty_frames_in_the_middle_are_replayed() {
    assert_replayed(|| Scripted::data(&[b"ab", b"", b"", b"cd"]), b"abcd", None).await;
    let body = || {
        Scripted::data(&[b"ab", b"", b"cd"])
            .exact()
            .ending_with_last_frame()
    };
    assert_replayed(body, b"abcd", None).await;
}

#[tokio::test]
async fn a_body_at_its_end_before_any_poll_is_replayed_empty() {
    let body = || Scripted::new(vec![]).ending_with_last_frame();
    assert_replayed(body, b"", None).await;
    assert_replayed(|| Scripted::new(vec![]).exact(), b"", None).await;
}

#[tokio::test]
async fn a_body_that_fails_midway_is_not_retried() {
    for wire in WIRES {
        let body = Scripted::new(vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Err("the upload broke"),
        ]);
        let (outcome, seen) = post_after_401(wire, body, 64 * 1024).await;
        // The client gives up on the request when its body fails; the server
        // may or may not have answered first: never a second attempt.
        assert!(
            matches!(
                outcome,
                Err(Error::Service(_)) | Ok(StatusCode::UNAUTHORIZED)
            ),
            "{wire:?}: {outcome:?}"
        );
        assert!(seen.len() <= 1, "{wire:?}: not retried: {seen:?}");
    }
}

#[tokio::test]
async fn a_body_that_fails_midway_gets_its_401_back() {
    // In process, a service that reads the body to its error and answers
    // `401`: the `401` comes back, once.
    let calls = Arc::new(Mutex::new(0));
    let counter = calls.clone();
    let inner = tower::service_fn(move |req: Request<ReplayBody<Scripted>>| {
        *counter.lock().unwrap() += 1;
        async move {
            let read = req.into_body().collect().await;
            assert!(read.is_err(), "the body fails");
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            Ok::<_, Infallible>(response)
        }
    });
    let layer = WokeloAuthLayer::builder(StaticToken::new("t"))
        .api_base(ApiBase::parse("http://127.0.0.1:9/").unwrap())
        .build();
    let body = Scripted::new(vec![
        Ok(Frame::data(Bytes::from_static(b"ab"))),
        Err("the upload broke"),
    ]);
    let response = layer
        .layer(inner)
        .oneshot(Request::post("http://127.0.0.1:9/api").body(body).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(*calls.lock().unwrap(), 1, "not retried");
}

#[tokio::test]
async fn a_body_over_the_cap_gets_its_401_back() {
    const KIB: &[u8] = &[b'k'; 1024];
    for wire in WIRES {
        let (status, seen) = post_after_401(wire, Scripted::data(&[KIB; 8]), 4 * 1024).await;
        assert_eq!(status.unwrap(), 401, "{wire:?}");
        assert_eq!(seen.len(), 1, "{wire:?}: not retried");
        assert_eq!(
            seen[0].data.len(),
            8 * 1024,
            "{wire:?}: the first attempt went out whole"
        );
    }
}

#[tokio::test]
async fn trailers_count_against_the_cap() {
    let big = "t".repeat(2048);
    for wire in WIRES {
        // The data fits a 2 KiB cap; the data and the trailers do not.
        let body = Scripted::data(&[b"ab"]).with_trailers(trailers(&big));
        let (status, seen) = post_after_401(wire, body, 2 * 1024).await;
        assert_eq!(status.unwrap(), 401, "{wire:?}");
        assert_eq!(seen.len(), 1, "{wire:?}: not retried");
        assert_eq!(
            seen[0].trailers,
            Some(trailers(&big)),
            "{wire:?}: sent once"
        );
        // With room for them, the same body is replayed.
        let body = Scripted::data(&[b"ab"]).with_trailers(trailers(&big));
        let (status, seen) = post_after_401(wire, body, 4 * 1024).await;
        assert_eq!(status.unwrap(), 200, "{wire:?}");
        assert_eq!(seen.len(), 2, "{wire:?}");
        assert_eq!(seen[0], seen[1], "{wire:?}");
    }
}

#[tokio::test]
async fn retry_body_replays_trailers_after_a_503() {
    for wire in WIRES {
        let server = Server::start(StatusCode::SERVICE_UNAVAILABLE, 2).await;
        let client = http_client::<ReplayBody<RetryBody<Scripted>>>(wire);
        let service = ServiceBuilder::new()
            .layer(RetryLayer::new(
                WokeloRetryPolicy::new().retry_non_idempotent(true),
            ))
            .layer(layer(&server, 64 * 1024))
            .service(client);
        let body = Scripted::data(&[b"job ", b"spec"]).with_trailers(trailers("xyz"));
        let request = Request::post(server.url())
            .header("trailer", "x-checksum, x-parts")
            .body(RetryBody::new(body))
            .unwrap();
        let response = service.oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200, "{wire:?}");
        let expected = Seen {
            data: Bytes::from_static(b"job spec"),
            trailers: Some(trailers("xyz")),
            failed: false,
        };
        assert_eq!(server.seen(), vec![expected; 3], "{wire:?}: two retries");
    }
}

#[tokio::test]
async fn retry_body_replays_an_exact_size_ending_late() {
    for wire in WIRES {
        let server = Server::start(StatusCode::SERVICE_UNAVAILABLE, 1).await;
        let client = http_client::<ReplayBody<RetryBody<Scripted>>>(wire);
        let service = ServiceBuilder::new()
            .layer(RetryLayer::new(WokeloRetryPolicy::new()))
            .layer(layer(&server, 64 * 1024))
            .service(client);
        let body = Scripted::data(&[b"ab", b"", b"cd"]).exact();
        let request = Request::put(server.url())
            .body(RetryBody::new(body))
            .unwrap();
        let response = service.oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200, "{wire:?}");
        let data: Vec<Bytes> = server.seen().into_iter().map(|s| s.data).collect();
        assert_eq!(data, vec![Bytes::from_static(b"abcd"); 2], "{wire:?}");
    }
}
