//! Figures 5 and 6, against the embedded mock Wokelo server on 127.0.0.1,
//! on a multi-threaded runtime with 2 worker threads.
//!
//! - Figure 5, cold stampede: 10,000 concurrent first requests (a task
//!   each) through a fresh layer whose token endpoint takes 50 ms
//!   (`MockConfig::token_latency`). The inner service answers at once, so
//!   the time is the layer's: one token fetch plus waking 10,000 waiters.
//!   Must make exactly 1 token request; target (issue 11): all done within
//!   1.1 times the floor below (the time tokio itself needs to wake that
//!   many waiters of one 50 ms timer on 2 cores; the ratio to the token
//!   latency is reported too). Also at 1,000 requests; and with the 10,000 requests
//!   driven as concurrent futures in one task per worker instead (a client's
//!   batch rather than a server's tasks); and, in alternate rounds, the
//!   floor: as many tasks (or futures) waiting on one shared 50 ms timer, no
//!   layer.
//! - Figure 6, 401 storm: 10,000 concurrent requests over HTTP/2 (h2c, one
//!   connection) to the mock API, all sent with a token the server revoked
//!   (`revoke_all`). Must issue exactly 1 new token and retry all 10,000;
//!   the time is set against the same 10,000 requests with a valid token.
//!
//! `cargo bench --bench stampede`; `WOKELO_BENCH_QUICK=1` for fewer rounds
//! (the invariants are asserted in both).

mod common;

use std::{
    convert::Infallible,
    future::Future,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{stream::FuturesUnordered, FutureExt, StreamExt};
use http::{header::AUTHORIZATION, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::task::JoinSet;
use tower::{Layer, Service, ServiceExt};
use wokelo_auth::{
    testing::{MockConfig, MockServer},
    Credentials, PasswordGrant, ReplayBody, WokeloAuthLayer,
};

use common::{get, median, Table, Target};

const TOKEN_LATENCY: Duration = Duration::from_millis(50);

fn credentials(server: &MockServer) -> Credentials {
    let c = server.config();
    Credentials::new(&c.client_id, &c.client_secret, &c.username, &c.password)
        .with_base_url(server.base_url().parse().unwrap())
}

/// How the concurrent requests of a stampede are driven.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// A task per request, as a server's requests are.
    TaskEach,
    /// All requests in flight at once in one task per worker thread (a
    /// `FuturesUnordered` each), as a client's batch is.
    Lanes,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::TaskEach => "a task each",
            Shape::Lanes => "2 tasks of concurrent futures",
        }
    }
}

/// Runs the futures `make` gives, `n` of them at once in `shape`, and
/// returns when all completed: the time it took.
///
/// Run it in a task on the runtime: spawning from a worker thread is what a
/// server does, and is cheap. Completions are counted with an atomic rather
/// than joined, so that the harness adds as little as possible to the time.
async fn all_at_once<F, Fut>(n: usize, shape: Shape, make: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let all_done = Arc::new(tokio::sync::Notify::new());
    let completed = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    match shape {
        Shape::TaskEach => {
            for _ in 0..n {
                let future = make();
                let (completed, all_done) = (completed.clone(), all_done.clone());
                tokio::spawn(async move {
                    future.await;
                    if completed.fetch_add(1, Ordering::AcqRel) + 1 == n {
                        all_done.notify_one();
                    }
                });
            }
        }
        Shape::Lanes => {
            const LANES: usize = 2;
            for lane in 0..LANES {
                let share = n / LANES + usize::from(lane < n % LANES);
                let mut futures: FuturesUnordered<Fut> = (0..share).map(|_| make()).collect();
                let (completed, all_done) = (completed.clone(), all_done.clone());
                tokio::spawn(async move {
                    while futures.next().await.is_some() {}
                    if completed.fetch_add(1, Ordering::AcqRel) + 1 == LANES {
                        all_done.notify_one();
                    }
                });
            }
        }
    }
    all_done.notified().await;
    start.elapsed()
}

/// One cold stampede: `n` concurrent first requests through clones of a
/// fresh layer's service. Returns the time until all completed, and when
/// the first request reached the inner service (the token's arrival).
async fn cold_stampede(server: &MockServer, n: usize, shape: Shape) -> (Duration, Duration) {
    server.reset_stats();
    let layer = WokeloAuthLayer::new(PasswordGrant::new(credentials(server)));
    let first_token = Arc::new(std::sync::OnceLock::new());
    let authorized = Arc::new(AtomicUsize::new(0));
    let inner = {
        let (authorized, first_token) = (authorized.clone(), first_token.clone());
        tower::service_fn(move |r: Request<ReplayBody<Empty<Bytes>>>| {
            if r.headers().contains_key(AUTHORIZATION) {
                first_token.get_or_init(Instant::now);
                authorized.fetch_add(1, Ordering::Relaxed);
            }
            std::future::ready(Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())))
        })
    };
    let service = layer.layer(inner);
    let uri: Uri = server.url("/api/echo").parse().unwrap();

    let start = Instant::now();
    let elapsed = all_at_once(n, shape, || {
        let service = service.clone();
        let request = get(&uri);
        async move {
            let response = service.oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }
    })
    .await;

    let stats = server.stats();
    assert_eq!(
        stats.token_requests, 1,
        "one token request for the stampede: {stats:?}"
    );
    assert_eq!(
        authorized.load(Ordering::Relaxed),
        n,
        "every request got the token"
    );
    let first = first_token.get().unwrap().duration_since(start);
    (elapsed, first)
}

/// The floor for a stampede: `n` futures driven the same way, each waiting
/// for one shared 50 ms timer (a `Shared` future, as the layer's waiters
/// share the token fetch) and then building a response. What tokio needs to
/// start, park, wake and finish them on 2 workers, with no layer, no HTTP
/// and no token endpoint.
async fn floor_stampede(n: usize, shape: Shape) -> Duration {
    let event = async { tokio::time::sleep(TOKEN_LATENCY).await }
        .boxed()
        .shared();
    all_at_once(n, shape, || {
        let event = event.clone();
        async move {
            event.await;
            std::hint::black_box(Response::new(Empty::<Bytes>::new()));
        }
    })
    .await
}

/// Figure 5 for `n` requests: `rounds` cold stampedes interleaved with as
/// many floor stampedes. Returns (stampede ms, floor ms, token arrival ms)
/// per round.
fn figure_5(
    rt: &tokio::runtime::Runtime,
    n: usize,
    shape: Shape,
    rounds: usize,
) -> Vec<(f64, f64, f64)> {
    rt.block_on(async {
        tokio::spawn(async move {
            let server = MockServer::start_with(MockConfig {
                token_latency: TOKEN_LATENCY,
                ..MockConfig::default()
            })
            .await;
            // One unmeasured round of each: connection pools, allocator.
            cold_stampede(&server, n, shape).await;
            floor_stampede(n, shape).await;
            let mut out = Vec::new();
            for _ in 0..rounds {
                let (stampede, token) = cold_stampede(&server, n, shape).await;
                let floor = floor_stampede(n, shape).await;
                let ms = |d: Duration| d.as_secs_f64() * 1e3;
                out.push((ms(stampede), ms(floor), ms(token)));
            }
            out
        })
        .await
        .unwrap()
    })
}

/// What one burst over the wire did.
struct Burst {
    elapsed: Duration,
    api_requests: u64,
    unauthorized: u64,
    tokens_issued: u64,
    token_requests: u64,
}

/// `n` requests over h2c, all `call`ed before any is polled (so the first
/// attempts all carry the token cached at that moment), then run as a task
/// each. Returns once all completed.
async fn burst<S>(server: &MockServer, service: &S, n: usize) -> Burst
where
    S: Service<Request<Empty<Bytes>>, Response = Response<hyper::body::Incoming>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: std::fmt::Debug + Send,
{
    server.reset_stats();
    let uri: Uri = server.url("/api/echo").parse().unwrap();
    let start = Instant::now();
    let mut futures = Vec::with_capacity(n);
    for _ in 0..n {
        let mut service = service.clone();
        futures.push(service.ready().await.unwrap().call(get(&uri)));
    }
    let mut tasks = JoinSet::new();
    for future in futures {
        tasks.spawn(async move {
            let response = future.await.unwrap();
            let status = response.status();
            response.into_body().collect().await.unwrap();
            status
        });
    }
    while let Some(done) = tasks.join_next().await {
        assert_eq!(done.unwrap(), StatusCode::OK, "every request ends in 200");
    }
    let elapsed = start.elapsed();
    let stats = server.stats();
    Burst {
        elapsed,
        api_requests: stats.api_requests,
        unauthorized: stats.unauthorized,
        tokens_issued: stats.tokens_issued,
        token_requests: stats.token_requests,
    }
}

/// One 401 storm on a fresh server and layer: a warm burst first (the
/// baseline), then revoke every token and send the storm.
async fn storm(n: usize) -> (Burst, Burst) {
    let server = MockServer::start().await;
    let layer = WokeloAuthLayer::new(PasswordGrant::new(credentials(&server)));
    // The layer drops each 401 response to retry; over HTTP/2, dropping a
    // response whose body has not fully arrived resets its stream, and
    // hyper's client gives the whole connection up (GOAWAY
    // ENHANCE_YOUR_CALM, "too_many_internal_resets") after 1024 such
    // resets, failing every request in flight. A storm of 10,000 401s on
    // one connection hits that now and then, so the limit is lifted here
    // to measure the layer; see BENCHMARKS.md.
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .http2_max_local_error_reset_streams(None)
        .build_http::<ReplayBody<Empty<Bytes>>>();
    let service = layer.layer(client);
    // Log in and open the connection.
    let uri: Uri = server.url("/api/echo").parse().unwrap();
    let response = service.clone().oneshot(get(&uri)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let warm = burst(&server, &service, n).await;
    assert_eq!(warm.api_requests, n as u64);
    assert_eq!(warm.unauthorized, 0);

    server.revoke_all();
    let storm = burst(&server, &service, n).await;
    assert_eq!(
        storm.tokens_issued, 1,
        "exactly one new token for the storm"
    );
    assert_eq!(
        storm.unauthorized, n as u64,
        "every first attempt got a 401"
    );
    assert_eq!(
        storm.api_requests - n as u64,
        n as u64,
        "every request was retried, once"
    );
    (warm, storm)
}

fn main() {
    let quick = common::quick();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut table = Table::default();

    // Figure 5, at the size asked for and at a tenth of it.
    let latency = TOKEN_LATENCY.as_secs_f64() * 1e3;
    let rounds = if quick { 2 } else { 9 };
    for (n, shape) in [
        (10_000, Shape::TaskEach),
        (10_000, Shape::Lanes),
        (1_000, Shape::TaskEach),
    ] {
        let out = figure_5(&rt, n, shape, rounds);
        let how = shape.name();
        println!(
            "cold stampede of {n}, {how}, ms per round (token arrived, all done; floor): {}",
            out.iter()
                .map(|(s, f, t)| format!("({t:.1}, {s:.1}; {f:.1})"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let stampede = median(&mut out.iter().map(|o| o.0).collect::<Vec<_>>());
        let floor = median(&mut out.iter().map(|o| o.1).collect::<Vec<_>>());
        let worst = out.iter().map(|o| o.0).fold(0.0, f64::max);
        table.row(
            &format!("5. cold stampede, {n} first requests, {how} (time / token latency)"),
            format!(
                "1 token request; all done in {stampede:.1} ms (median of {rounds}; worst {worst:.1} ms)"
            ),
            format!("token latency {latency:.0} ms (floor: the same {n} waiting on one 50 ms timer, {floor:.1} ms)"),
            stampede / latency,
            Target::None,
        );
        table.row(
            &format!("5. cold stampede, {n} first requests, {how} (time / floor)"),
            format!("{stampede:.1} ms"),
            format!("floor {floor:.1} ms"),
            stampede / floor,
            Target::AtMost(1.1),
        );
    }

    // Figure 6.
    let (n, rounds) = if quick { (10_000, 1) } else { (10_000, 5) };
    let (mut warm, mut storms) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (w, s) = rt.block_on(storm(n));
        println!(
            "401 storm of {n}: warm {:.1} ms; storm {:.1} ms, {} API requests, {} 401s, {} token requests, {} token issued",
            w.elapsed.as_secs_f64() * 1e3,
            s.elapsed.as_secs_f64() * 1e3,
            s.api_requests,
            s.unauthorized,
            s.token_requests,
            s.tokens_issued
        );
        warm.push(w.elapsed.as_secs_f64() * 1e3);
        storms.push(s.elapsed.as_secs_f64() * 1e3);
    }
    let (w, s) = (median(&mut warm), median(&mut storms));
    table.row(
        &format!("6. 401 storm, {n} requests, h2c (time / warm burst)"),
        format!("1 new token, {n} retries; all done in {s:.1} ms (median of {rounds})"),
        format!("the same {n} requests with a valid token: {w:.1} ms"),
        s / w,
        Target::None,
    );
    table.finish("stampede and 401 storm (mock server on 127.0.0.1, 2 worker threads)");
}
