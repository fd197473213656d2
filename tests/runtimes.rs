//! The layer works from any Tokio runtime, for as long as it lives: a
//! client kept in a `static` and used by tests that each run their own
//! runtime, or by an application that builds a runtime per job.
//!
//! These build real runtimes and drop them, so they run on the real clock
//! (runtimes cannot share a paused one): tokens live 2 or 3 seconds and the
//! tests sleep to let them pass. The mock server runs on a multi-thread
//! runtime of its own that stays alive (and drives itself) for the whole
//! test. Every wait is bounded, so a regression fails rather than hangs.

use std::{
    future::Future,
    ops::RangeInclusive,
    pin::Pin,
    sync::LazyLock,
    task::{Context, Waker},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use tokio::runtime::{Builder, Runtime};
use tower::{Layer, Service, ServiceExt};
use wokelo_auth::{
    testing::{MockConfig, MockServer, MockStats, TokenFault},
    Error, PasswordGrant, ReplayBody, TokenErrorKind, WokeloAuth, WokeloAuthLayer,
};

/// The layer's fetch timeout in these tests.
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest any request may take: a token or a typed error comes within
/// the fetch timeout; a little more for the API call itself.
const WAIT: Duration = Duration::from_millis(FETCH_TIMEOUT.as_millis() as u64 + 1500);

/// `401`s a refresh-ahead may cost: a refresh revokes the access token it
/// replaces (on the mock as on Wokelo), so a request sent with that token
/// while the refresh is in flight is answered `401` and retried with the new
/// one. Requests here are sequential: at most one per refresh.
const REFUSED_PER_REFRESH: u64 = 1;

type Api = WokeloAuth<Client<HttpConnector, ReplayBody<Empty<Bytes>>>>;

/// The mock server on a multi-thread runtime of its own, alive (and driven
/// by its worker thread) until the test ends.
struct Mock {
    server: MockServer,
    /// Dropped after the server (fields drop in order).
    _runtime: Runtime,
}

impl Mock {
    fn start(token_lifetime: Duration) -> Self {
        let runtime = multi_thread();
        let server = runtime.block_on(MockServer::start_with(MockConfig {
            token_lifetime,
            ..MockConfig::default()
        }));
        Self {
            server,
            _runtime: runtime,
        }
    }

    /// A server, a layer using it and its echo endpoint's URL.
    fn setup(token_lifetime: Duration) -> (Self, WokeloAuthLayer, String) {
        let mock = Self::start(token_lifetime);
        let layer = mock.layer();
        let url = mock.echo();
        (mock, layer, url)
    }

    /// A layer over the default token client (`PasswordGrant::new`), which
    /// is what the pooled-connection failure was about.
    fn layer(&self) -> WokeloAuthLayer {
        WokeloAuthLayer::builder(PasswordGrant::new(self.server.credentials()))
            .token_timeout(FETCH_TIMEOUT)
            .build()
    }

    fn echo(&self) -> String {
        self.server.url("/api/echo")
    }

    fn stats(&self) -> MockStats {
        self.server.stats()
    }
}

fn current_thread() -> Runtime {
    Builder::new_current_thread().enable_all().build().unwrap()
}

fn multi_thread() -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// A service over its own hyper-util client, sharing `layer`'s token cache.
///
/// One client per runtime: the wrapped client's own pooled connections
/// belong to the runtime that opened them, which is the application's
/// business, not the layer's.
fn service(layer: &WokeloAuthLayer) -> Api {
    layer.layer(Client::builder(TokioExecutor::new()).build_http())
}

/// `GET url` through `service` itself (not a clone, so that the clone's
/// copy of the token is used), read whole, within [`WAIT`].
async fn get(service: &mut Api, url: &str) -> Result<StatusCode, Error> {
    let request = Request::get(url).body(Empty::new()).unwrap();
    let call = async {
        let response = service.ready().await?.call(request).await?;
        let status = response.status();
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::Service(e.into()))?;
        Ok(status)
    };
    tokio::time::timeout(WAIT, call)
        .await
        .unwrap_or_else(|_| panic!("a request waited more than {WAIT:?}"))
}

/// `GET url` through a new service on `runtime`, which must answer `200`
/// well within the fetch timeout.
fn ok_on(runtime: &Runtime, layer: &WokeloAuthLayer, url: &str) {
    let started = Instant::now();
    let status = runtime.block_on(get(&mut service(layer), url));
    assert_eq!(status.expect("the request is answered"), StatusCode::OK);
    assert!(
        started.elapsed() < FETCH_TIMEOUT,
        "answered after {:?}, not within the fetch timeout",
        started.elapsed()
    );
}

/// The first token, fetched on a new current-thread runtime A; returns A
/// (not driven any more) and a time after the fetch.
fn first_token(layer: &WokeloAuthLayer, url: &str) -> (Runtime, Instant) {
    let rt_a = current_thread();
    ok_on(&rt_a, layer, url);
    (rt_a, Instant::now())
}

/// Waits (driving the current runtime) until `done`, at most [`WAIT`].
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let poll = async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(WAIT, poll)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {WAIT:?}"));
}

type Pending = Pin<Box<dyn Future<Output = Result<StatusCode, Error>> + Send>>;

/// Starts `GET url` on `runtime` without driving it: the request is polled
/// once in the runtime's context (what it spawns goes to that runtime) and
/// left pending, as a current-thread runtime leaves its tasks between two
/// `block_on` calls. Returns the request, to be driven later.
fn start_undriven(runtime: &Runtime, layer: &WokeloAuthLayer, url: &str) -> Pending {
    let mut service = service(layer);
    let url = url.to_owned();
    let mut request: Pending = Box::pin(async move { get(&mut service, &url).await });
    let _context = runtime.enter();
    let polled = request
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()));
    assert!(polled.is_pending(), "the request needed no token fetch");
    request
}

/// Past the refresh point of a token fetched before `fetched` and before
/// its expiry: the refresh margin is 10-20 % of the lifetime.
fn sleep_past_refresh_point(fetched: Instant, lifetime: Duration) {
    let refresh_at = fetched + lifetime.mul_f64(0.9);
    std::thread::sleep(refresh_at.saturating_duration_since(Instant::now()) + ms(20));
}

/// Past the expiry of a token fetched before `fetched`.
fn sleep_past_expiry(fetched: Instant, lifetime: Duration) {
    std::thread::sleep((fetched + lifetime).saturating_duration_since(Instant::now()) + ms(50));
}

/// Checks that every request of a run was answered `200`, that the only
/// `401`s were those refreshes cost, and that the token requests stay in
/// `expected`.
fn check_run(
    statuses: &[Result<StatusCode, String>],
    stats: &MockStats,
    expected: RangeInclusive<u64>,
) {
    assert!(
        statuses.iter().all(|s| s == &Ok(StatusCode::OK)),
        "{statuses:?}"
    );
    assert!(
        stats.unauthorized <= stats.refresh_grants * REFUSED_PER_REFRESH,
        "{stats:?}"
    );
    assert!(
        expected.contains(&stats.token_requests),
        "token requests: {stats:?}"
    );
}

/// Password grants, refresh grants and tokens issued.
fn grants(stats: &MockStats) -> (u64, u64, u64) {
    (
        stats.password_grants,
        stats.refresh_grants,
        stats.tokens_issued,
    )
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// On a runtime A: fetches a token, then past its refresh point starts the
/// refresh-ahead with a request, and shuts A down while the refresh is in
/// flight (the server never answers it). Returns when the token was
/// fetched, at the latest.
fn lose_a_refresh(mock: &Mock, layer: &WokeloAuthLayer, lifetime: Duration) -> Instant {
    let url = mock.echo();
    let (rt_a, fetched) = first_token(layer, &url);
    sleep_past_refresh_point(fetched, lifetime);
    mock.server.fail_next_token_requests(1, TokenFault::Hang);
    rt_a.block_on(async {
        let status = get(&mut service(layer), &url).await;
        assert_eq!(status.expect("the still valid token"), StatusCode::OK);
        until("the refresh-ahead", || mock.stats().token_requests == 2).await;
    });
    drop(rt_a);
    fetched
}

#[test]
fn a_refresh_lost_with_its_runtime_does_not_fail_the_first_request_after_expiry() {
    let lifetime = Duration::from_secs(3);
    let (mock, layer, url) = Mock::setup(lifetime);

    let fetched = lose_a_refresh(&mock, &layer, lifetime);

    sleep_past_expiry(fetched, lifetime);
    ok_on(&current_thread(), &layer, &url);
    let stats = mock.stats();
    // The lost refresh presented the refresh token (the server may have
    // rotated it), so B logs in rather than present it again.
    assert_eq!(
        grants(&stats),
        (2, 1, 2),
        "the lost refresh is replaced by one login on B: {stats:?}"
    );
    assert_eq!(stats.unauthorized, 0);
}

#[test]
fn a_refresh_lost_with_its_runtime_is_started_again_before_expiry() {
    let lifetime = Duration::from_secs(3);
    let (mock, layer, url) = Mock::setup(lifetime);

    let fetched = lose_a_refresh(&mock, &layer, lifetime);

    // Still before expiry: a request on B is served the valid token and
    // starts the refresh again, which B (kept driven here) finishes.
    let rt_b = current_thread();
    rt_b.block_on(async {
        let status = get(&mut service(&layer), &url).await;
        assert_eq!(status.expect("the still valid token"), StatusCode::OK);
        assert!(fetched.elapsed() < lifetime, "the test ran too slowly");
        until("the refresh restarted on B", || {
            mock.stats().tokens_issued == 2
        })
        .await;
    });

    // After the first token's expiry, the refreshed one is used: no new
    // token request.
    sleep_past_expiry(fetched, lifetime);
    ok_on(&rt_b, &layer, &url);
    let stats = mock.stats();
    assert_eq!(
        (stats.token_requests, stats.tokens_issued),
        (3, 2),
        "{stats:?}"
    );
    assert_eq!(stats.tokens_presented.len(), 2, "{stats:?}");
    assert!(stats.unauthorized <= REFUSED_PER_REFRESH, "{stats:?}");
}

#[test]
fn a_fetch_started_on_an_idle_runtime_is_taken_over_by_a_live_one() {
    let (mock, layer, url) = Mock::setup(Duration::from_secs(60));

    // A starts the first fetch and is not driven again for now.
    let rt_a = current_thread();
    let waiting_on_a = start_undriven(&rt_a, &layer, &url);

    let rt_b = current_thread();
    ok_on(&rt_b, &layer, &url);
    assert_eq!(mock.stats().token_requests, 1);

    // When A is driven again, its request gets the token B fetched, and
    // A's worker, finding the fetch taken, fetches nothing.
    let status = rt_a.block_on(waiting_on_a);
    assert_eq!(status.expect("A's request is answered"), StatusCode::OK);
    rt_a.block_on(async {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    });
    let stats = mock.stats();
    assert_eq!(
        (
            stats.token_requests,
            stats.tokens_issued,
            stats.api_requests
        ),
        (1, 1, 2),
        "{stats:?}"
    );
}

#[test]
fn a_fetch_stalled_on_an_idle_runtime_costs_another_runtime_at_most_the_fetch_timeout() {
    let (mock, layer, url) = Mock::setup(Duration::from_secs(60));

    // A's worker sends the token request, then A is no longer driven: the
    // fetch is taken on, and stalled.
    mock.server.fail_next_token_requests(1, TokenFault::Hang);
    let rt_a = current_thread();
    let started = Instant::now();
    rt_a.block_on(async {
        let mut service = service(&layer);
        let url = url.clone();
        tokio::spawn(async move { get(&mut service, &url).await });
        until("the token request from A", || {
            mock.stats().token_requests == 1
        })
        .await;
    });

    let rt_b = current_thread();
    let error = rt_b
        .block_on(get(&mut service(&layer), &url))
        .expect_err("the fetch on A cannot finish");
    let waited = started.elapsed();
    let kind = error.token_error().map(|e| e.kind());
    assert_eq!(kind, Some(TokenErrorKind::TimedOut), "{error}");
    assert!(
        waited < FETCH_TIMEOUT + ms(500),
        "B waited {waited:?}, more than the fetch timeout"
    );

    // The stalled fetch is abandoned: the next request on B fetches its own.
    ok_on(&rt_b, &layer, &url);
    let stats = mock.stats();
    assert_eq!(
        (stats.token_requests, stats.tokens_issued),
        (2, 1),
        "{stats:?}"
    );
    drop(rt_a);
}

#[test]
fn three_runtimes_one_dropped_one_idle_one_live() {
    let lifetime = Duration::from_secs(2);
    let (mock, layer, url) = Mock::setup(lifetime);

    // A fetches the first token (its connection, its wake timer).
    let (rt_a, fetched) = first_token(&layer, &url);
    sleep_past_refresh_point(fetched, lifetime);

    // B starts the refresh and stays idle; then A shuts down.
    let rt_b = current_thread();
    let waiting_on_b = start_undriven(&rt_b, &layer, &url);
    drop(rt_a);

    // C, live, sends a request every 100 ms for two more token lifetimes.
    let rt_c = multi_thread();
    let statuses = rt_c.block_on(async {
        let mut service = service(&layer);
        let mut statuses = Vec::new();
        let end = tokio::time::Instant::now() + lifetime * 2;
        while tokio::time::Instant::now() < end {
            let started = Instant::now();
            let status = get(&mut service, &url).await;
            assert!(started.elapsed() < FETCH_TIMEOUT, "{:?}", started.elapsed());
            statuses.push(status.map_err(|e| e.to_string()));
            tokio::time::sleep(ms(100)).await;
        }
        statuses
    });
    drop(waiting_on_b);
    drop(rt_b);
    let stats = mock.stats();
    assert_eq!(stats.password_grants, 1, "{stats:?}");
    // The first token, and at most one per lifetime since (three lifetimes
    // started), with some slack for refreshes retried.
    check_run(&statuses, &stats, 2..=6);
}

#[test]
fn a_token_fetched_on_an_idle_runtime_is_refreshed_from_another() {
    let lifetime = Duration::from_secs(2);
    let (mock, layer, url) = Mock::setup(lifetime);

    // A fetches the first token through the default token client and stays
    // alive, idle: anything it opened (a pooled connection, the wake timer)
    // is never driven again.
    let (rt_a, fetched) = first_token(&layer, &url);
    sleep_past_expiry(fetched, lifetime);

    let rt_b = current_thread();
    ok_on(&rt_b, &layer, &url);
    let stats = mock.stats();
    assert_eq!(grants(&stats), (1, 1, 2), "{stats:?}");
    assert_eq!(stats.unauthorized, 0, "{stats:?}");
    drop(rt_a);
}

/// The token lifetime of the `static` client's server.
const STATIC_LIFETIME: Duration = Duration::from_secs(2);

/// A mock server for the `static` client, on a runtime of its own.
static STATIC_MOCK: LazyLock<Mock> = LazyLock::new(|| Mock::start(STATIC_LIFETIME));

/// A client kept in a `static`, as tests share one across `#[tokio::test]`s.
static STATIC_CLIENT: LazyLock<Api> = LazyLock::new(|| service(&STATIC_MOCK.layer()));

/// What `#[tokio::test]` does: a runtime per test (alternately
/// current-thread and multi-thread), dropped after it.
fn one_test(n: usize, url: &str) -> Result<StatusCode, String> {
    let runtime = if n % 2 == 0 {
        current_thread()
    } else {
        multi_thread()
    };
    let status = runtime.block_on(get(&mut STATIC_CLIENT.clone(), url));
    drop(runtime);
    status.map_err(|e| e.to_string())
}

#[test]
fn a_static_client_serves_a_runtime_per_test_across_token_expiry() {
    let url = STATIC_MOCK.echo();
    let mut statuses = vec![one_test(0, &url)];
    let fetched = Instant::now();

    // The second test's request starts the refresh-ahead, which cannot be
    // answered before that test's runtime shuts down.
    sleep_past_refresh_point(fetched, STATIC_LIFETIME);
    STATIC_MOCK
        .server
        .fail_next_token_requests(1, TokenFault::Hang);
    statuses.push(one_test(1, &url));
    assert!(
        fetched.elapsed() < STATIC_LIFETIME,
        "the test ran too slowly"
    );

    // After expiry, more tests, each on a new runtime.
    sleep_past_expiry(fetched, STATIC_LIFETIME);
    for n in 2..6 {
        statuses.push(one_test(n, &url));
        std::thread::sleep(ms(300));
    }
    let stats = STATIC_MOCK.stats();
    assert!(stats.refresh_grants >= 1, "{stats:?}");
    // The first token, the lost refresh, its replacement (a login: the lost
    // refresh may have spent the refresh token), and at most one
    // refresh-ahead of the second token.
    check_run(&statuses, &stats, 3..=4);
}

#[test]
fn a_service_kept_on_one_idle_runtime_sends_an_expired_copy_at_most_once_and_recovers() {
    let lifetime = Duration::from_secs(2);
    let (mock, layer, url) = Mock::setup(lifetime);

    // One service (a job runner's field) on one current-thread runtime,
    // driven only while a job runs: its wake timer cannot fire in between.
    let runtime = current_thread();
    let mut service = service(&layer);
    runtime.block_on(async {
        for _ in 0..3 {
            assert_eq!(get(&mut service, &url).await.unwrap(), StatusCode::OK);
        }
    });
    let fetched = Instant::now();
    sleep_past_expiry(fetched, lifetime);

    // The documented trade-off of a hot path that reads no clock (README,
    // "how expiry is noticed"): the service's copy of the expired token can
    // go out once; the API's `401` is then handled like any other, so the
    // caller still gets its answer, and one new token is fetched.
    let status = runtime.block_on(get(&mut service, &url));
    assert_eq!(status.unwrap(), StatusCode::OK);
    let stats = mock.stats();
    assert!(
        stats.unauthorized <= 1,
        "the expired copy goes out at most once: {stats:?}"
    );
    assert_eq!(stats.token_requests, 2, "{stats:?}");
}

/// A refresh taken on by a runtime that then sits idle is abandoned by
/// another runtime at the deadline; its refresh token may have been
/// presented, so the next fetch does not present it again (with rotation and
/// reuse protection, a second use would revoke the whole family).
#[test]
fn a_refresh_stalled_on_an_idle_runtime_does_not_present_its_refresh_token_twice() {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    };
    use wokelo_auth::{token_source_fn, Token};

    let presented: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let log = presented.clone();
    let calls = Arc::new(AtomicUsize::new(0));
    let source = token_source_fn(move |current: Option<&Token>| {
        use secrecy::ExposeSecret;
        let refresh = current
            .and_then(|t| t.refresh_token())
            .map(|r| r.expose_secret().to_owned());
        log.lock().unwrap().push(refresh);
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(Token::new(format!("t{n}"))
                .with_refresh_token(format!("r{n}"))
                .with_expires_in(Duration::from_secs(1)))
        }
    });
    let layer = WokeloAuthLayer::builder(source)
        .token_timeout(Duration::from_secs(1))
        .build();
    let service = layer.layer(tower::service_fn(
        |_: Request<ReplayBody<Empty<Bytes>>>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(Empty::<Bytes>::new()))
        },
    ));
    let request = || {
        Request::get("https://api.wokelo.ai/api/echo")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let b = multi_thread();
    let a = current_thread();
    b.block_on(service.clone().oneshot(request())).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    // A takes the refresh on, then its caller gives up: A is idle with the
    // refresh half done.
    let gave_up = a.block_on(async {
        tokio::time::timeout(
            Duration::from_millis(50),
            service.clone().oneshot(request()),
        )
        .await
    });
    assert!(gave_up.is_err());
    // B waits at most the fetch timeout, then fetches anew.
    let first = b.block_on(service.clone().oneshot(request()));
    assert!(
        matches!(&first, Err(Error::Token(e)) if e.kind() == TokenErrorKind::TimedOut),
        "{:?}",
        first.map(|r| r.status())
    );
    assert_eq!(
        b.block_on(service.clone().oneshot(request()))
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // A finishes its refresh late; its answer is not used.
    a.block_on(async { tokio::time::sleep(Duration::from_millis(500)).await });
    let presented = presented.lock().unwrap().clone();
    assert_eq!(
        presented,
        [None, Some("r1".to_owned()), None],
        "r1 once; the fetch after the lost one is a fresh login"
    );
}
