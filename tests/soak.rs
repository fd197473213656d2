//! A soak under faults: 64 concurrent callers against the mock API with 1 s
//! tokens, random server-side revocations, 5 % of token requests failing with
//! 503, some 429s from the API and random client-side cancellations.
//!
//! CI runs 20,000 requests. The long run takes a count:
//! `SOAK_REQUESTS=2000000 cargo test --release --all-features --test soak -- --nocapture`.
//!
//! The test keeps nothing per request once it is done (each request carries
//! its own count of sends), so the RSS check measures the layer.

mod common;

use std::{
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tower::{util::MapRequestLayer, Layer, ServiceExt};
use wokelo_auth::{
    testing::{MockConfig, MockServer},
    Error, ReplayBody,
};

const CALLERS: u64 = 64;
/// No request may take longer than this; one that does is a hang.
const DEADLINE: Duration = Duration::from_secs(20);

/// How often the auth layer sent one request to the wire: carried by the
/// request itself (and its retry's copy of the extensions), so that counting
/// keeps nothing per request once the request is done and the memory check
/// measures the layer, not the test.
#[derive(Clone)]
struct Sends(Arc<AtomicU32>);

#[derive(Default, Debug)]
struct Tally {
    ok: AtomicU64,
    throttled: AtomicU64,
    unauthorized: AtomicU64,
    token_errors: AtomicU64,
    cancelled: AtomicU64,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_under_faults() {
    let total: u64 = std::env::var("SOAK_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let server = Arc::new(
        MockServer::start_with(MockConfig {
            token_lifetime: Duration::from_secs(1),
            reuse_protection: true,
            token_failure_rate: 0.05,
            api_throttle_rate: 0.02,
            ..MockConfig::default()
        })
        .await,
    );
    let layer = common::builder(&server)
        .token_timeout(Duration::from_secs(5))
        .build();

    // Count how often the auth layer sends each request to the wire.
    let counting = MapRequestLayer::new(|req: Request<ReplayBody<Empty<Bytes>>>| {
        req.extensions()
            .get::<Sends>()
            .expect("every request carries its count")
            .0
            .fetch_add(1, Ordering::Relaxed);
        req
    });
    let service = layer.layer(counting.layer(Client::builder(TokioExecutor::new()).build_http()));

    // Chaos: revoke every token now and then.
    let revocations = Arc::new(AtomicU64::new(0));
    let chaos = {
        let (server, revocations) = (server.clone(), revocations.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(150)).await;
                if fastrand::u8(..4) == 0 {
                    server.revoke_all();
                    revocations.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    let tally = Arc::new(Tally::default());
    let max_sends = Arc::new(AtomicU32::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..CALLERS {
        let (service, tally, next, server, max_sends) = (
            service.clone(),
            tally.clone(),
            next.clone(),
            server.clone(),
            max_sends.clone(),
        );
        callers.spawn(async move {
            loop {
                let id = next.fetch_add(1, Ordering::Relaxed);
                if id >= total {
                    return;
                }
                let mut request = Request::get(server.url(&format!("/api/echo?id={id}")))
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let sends = Arc::new(AtomicU32::new(0));
                request.extensions_mut().insert(Sends(sends.clone()));
                let call = async {
                    let response = service.clone().oneshot(request).await?;
                    let status = response.status();
                    response
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| Error::Service(e.into()))?;
                    Ok::<_, Error>(status)
                };
                // 2 % of callers give up early, at a random point.
                if fastrand::u8(..50) == 0 {
                    let patience = Duration::from_micros(fastrand::u64(0..3000));
                    if tokio::time::timeout(patience, call).await.is_err() {
                        tally.cancelled.fetch_add(1, Ordering::Relaxed);
                    } else {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    // A cancelled request's sends are all made by now: the
                    // layer's future, which alone sends, is dropped.
                    max_sends.fetch_max(sends.load(Ordering::Relaxed), Ordering::Relaxed);
                    continue;
                }
                match tokio::time::timeout(DEADLINE, call).await {
                    Err(_) => panic!("request {id} hung past {DEADLINE:?}"),
                    Ok(Ok(status)) if status == 200 => tally.ok.fetch_add(1, Ordering::Relaxed),
                    Ok(Ok(status)) if status == 429 => {
                        tally.throttled.fetch_add(1, Ordering::Relaxed)
                    }
                    Ok(Ok(status)) if status == 401 => {
                        tally.unauthorized.fetch_add(1, Ordering::Relaxed)
                    }
                    Ok(Ok(status)) => panic!("request {id}: unexpected status {status}"),
                    Ok(Err(Error::Token(e))) => {
                        assert!(e.kind().is_transient(), "request {id}: {e}");
                        tally.token_errors.fetch_add(1, Ordering::Relaxed)
                    }
                    Ok(Err(e)) => panic!("request {id}: {e:?}"),
                };
                let sent = sends.load(Ordering::Relaxed);
                assert!(sent <= 2, "request {id} sent {sent} times");
                max_sends.fetch_max(sent, Ordering::Relaxed);
            }
        });
    }
    // Sample memory once the run has warmed up.
    while next.load(Ordering::Relaxed) < total / 5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rss_early = rss_kib();
    while let Some(result) = callers.join_next().await {
        result.expect("no caller panicked");
    }
    let elapsed = started.elapsed();
    chaos.abort();
    let rss_end = rss_kib();

    let stats = server.stats();
    let max_sends = max_sends.load(Ordering::Relaxed);
    let revocations = revocations.load(Ordering::Relaxed);
    let t = &*tally;
    let handled = t.ok.load(Ordering::Relaxed)
        + t.throttled.load(Ordering::Relaxed)
        + t.unauthorized.load(Ordering::Relaxed)
        + t.token_errors.load(Ordering::Relaxed)
        + t.cancelled.load(Ordering::Relaxed);
    // Tokens: one per lifetime (refreshed at 80-90 % of 1 s), one per
    // revocation, and the first login.
    let token_bound = 2 + (elapsed.as_secs_f64() / 0.8).ceil() as u64 + revocations;
    println!(
        "soak: {total} requests in {elapsed:.1?} ({:.0}/s), 64 callers\n\
         outcomes: {t:?}\n\
         revocations: {revocations}; tokens issued: {} (bound {token_bound}); token requests: {} \
         (password {}, refresh {}, errors {}); API 401s: {}\n\
         max sends of one request by the auth layer: {max_sends}\n\
         RSS: {rss_early} KiB at 20 %, {rss_end} KiB at the end",
        total as f64 / elapsed.as_secs_f64(),
        stats.tokens_issued,
        stats.token_requests,
        stats.password_grants,
        stats.refresh_grants,
        stats.token_errors,
        stats.unauthorized,
    );
    assert_eq!(handled, total, "every request got an outcome");
    assert!(max_sends <= 2, "no request sent more than twice");
    assert!(
        stats.tokens_issued <= token_bound,
        "token fetches within the bound"
    );
    assert!(
        t.ok.load(Ordering::Relaxed) >= total * 9 / 10,
        "most requests succeed under these faults"
    );
    // Nothing in the test grows per request: what grows is the layer's.
    assert!(
        rss_end <= rss_early + 8 * 1024,
        "memory flat: {rss_early} KiB -> {rss_end} KiB"
    );
}
