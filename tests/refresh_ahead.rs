//! Refresh-ahead, expiry and failure backoff, under paused time.
//!
//! These drive the cache with an in-process token source and inner service,
//! so that virtual time is the only clock.

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{header::AUTHORIZATION, Request, Response};
use http_body_util::Empty;
use tower::{service_fn, Layer, Service, ServiceExt};
use wokelo_auth::{
    token_source_fn, Error, ReplayBody, Token, TokenError, TokenErrorKind, WokeloAuthLayer,
};

const URL: &str = "https://api.wokelo.ai/api/echo";

/// A token source that hands out `t1`, `t2`, ... with a lifetime, failing the
/// calls whose number (1-based) is in `fail`.
struct Source {
    calls: Arc<AtomicUsize>,
}

impl Source {
    fn layer(
        lifetime: Duration,
        fail: &'static [usize],
        kind: TokenErrorKind,
    ) -> (Self, WokeloAuthLayer) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let source = token_source_fn(move |_current: Option<&Token>| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if fail.contains(&n) {
                    Err(TokenError::new(kind, format!("fetch {n} fails")))
                } else {
                    Ok(Token::new(format!("t{n}")).with_expires_in(lifetime))
                }
            }
        });
        let layer = WokeloAuthLayer::builder(source)
            .credentials_backoff(Duration::from_secs(30))
            .token_retries(0)
            .build();
        (Self { calls }, layer)
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

type Seen = Arc<Mutex<Vec<String>>>;

/// An inner service that records the token each request carried.
fn recorder(
    layer: &WokeloAuthLayer,
) -> (
    impl Service<Request<Empty<Bytes>>, Response = Response<Empty<Bytes>>, Error = Error> + Clone,
    Seen,
) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let inner = service_fn(move |req: Request<ReplayBody<Empty<Bytes>>>| {
        let token = req.headers()[AUTHORIZATION].to_str().unwrap().to_owned();
        log.lock().unwrap().push(token);
        async move { Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())) }
    });
    (layer.layer(inner), seen)
}

async fn call<S>(service: &S) -> Result<(), Error>
where
    S: Service<Request<Empty<Bytes>>, Response = Response<Empty<Bytes>>, Error = Error> + Clone,
{
    service
        .clone()
        .oneshot(Request::get(URL).body(Empty::new()).unwrap())
        .await
        .map(drop)
}

/// Lets spawned background fetches run.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

fn last(seen: &Seen) -> String {
    seen.lock().unwrap().last().cloned().unwrap()
}

#[tokio::test(start_paused = true)]
async fn refreshes_ahead_of_expiry_without_making_requests_wait() {
    let (source, layer) = Source::layer(Duration::from_secs(100), &[], TokenErrorKind::Unavailable);
    let (service, seen) = recorder(&layer);
    call(&service).await.unwrap();
    assert_eq!((source.calls(), last(&seen)), (1, "Bearer t1".into()));

    // Before the margin (10-20 % of the lifetime): nothing happens.
    tokio::time::advance(Duration::from_secs(79)).await;
    call(&service).await.unwrap();
    settle().await;
    assert_eq!(source.calls(), 1);

    // Inside the margin: the request goes out with the still-valid token and
    // a refresh runs in the background.
    tokio::time::advance(Duration::from_secs(11)).await;
    call(&service).await.unwrap();
    assert_eq!(last(&seen), "Bearer t1");
    settle().await;
    assert_eq!(source.calls(), 2);
    call(&service).await.unwrap();
    assert_eq!(last(&seen), "Bearer t2");
}

/// Sends a request through `service` itself rather than a clone, so that
/// the token copy the service keeps between requests is what attaches it.
async fn call_same<S>(service: &mut S) -> Result<(), Error>
where
    S: Service<Request<Empty<Bytes>>, Response = Response<Empty<Bytes>>, Error = Error>,
{
    let request = Request::get(URL).body(Empty::new()).unwrap();
    service.ready().await?.call(request).await.map(drop)
}

#[tokio::test(start_paused = true)]
async fn a_service_reused_without_cloning_notices_the_refresh_point_and_expiry() {
    let (source, layer) = Source::layer(Duration::from_secs(100), &[], TokenErrorKind::Unavailable);
    let (mut service, seen) = recorder(&layer);
    for _ in 0..3 {
        call_same(&mut service).await.unwrap();
    }
    tokio::time::advance(Duration::from_secs(79)).await;
    call_same(&mut service).await.unwrap();
    settle().await;
    assert_eq!((source.calls(), last(&seen)), (1, "Bearer t1".into()));

    // Past the refresh point the kept copy is not used blindly: this request
    // starts the refresh, and the next one carries the new token.
    tokio::time::advance(Duration::from_secs(11)).await;
    call_same(&mut service).await.unwrap();
    settle().await;
    assert_eq!(source.calls(), 2);
    call_same(&mut service).await.unwrap();
    assert_eq!(last(&seen), "Bearer t2");

    // Long past t2's expiry (it was fetched at 90 s, for 100 s): a new token
    // before anything is sent.
    tokio::time::advance(Duration::from_secs(150)).await;
    call_same(&mut service).await.unwrap();
    assert_eq!(source.calls(), 3);
    assert_eq!(last(&seen), "Bearer t3");
}

#[test]
fn the_refresh_point_is_still_noticed_after_the_runtime_that_fetched_the_token_shut_down() {
    let paused = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    };
    let (source, layer) = Source::layer(Duration::from_secs(100), &[], TokenErrorKind::Unavailable);
    let (mut service, seen) = recorder(&layer);
    // The token, and the timer marking its refresh point, on a runtime that
    // then shuts down (dropping the timer).
    let first = paused();
    first.block_on(call_same(&mut service)).unwrap();
    drop(first);

    let second = paused();
    second.block_on(async {
        for _ in 0..3 {
            call_same(&mut service).await.unwrap();
        }
        assert_eq!((source.calls(), last(&seen)), (1, "Bearer t1".into()));
        tokio::time::advance(Duration::from_secs(91)).await;
        call_same(&mut service).await.unwrap();
        settle().await;
        assert_eq!(source.calls(), 2, "the refresh point was noticed");
        call_same(&mut service).await.unwrap();
        assert_eq!(last(&seen), "Bearer t2");
    });
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_is_never_sent() {
    let (source, layer) = Source::layer(Duration::from_secs(2), &[], TokenErrorKind::Unavailable);
    let (service, seen) = recorder(&layer);
    call(&service).await.unwrap();
    tokio::time::advance(Duration::from_millis(2001)).await;
    call(&service).await.unwrap();
    assert_eq!(source.calls(), 2);
    assert_eq!(*seen.lock().unwrap(), ["Bearer t1", "Bearer t2"]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_ahead_keeps_serving_the_old_token_and_tries_later() {
    let (source, layer) =
        Source::layer(Duration::from_secs(100), &[2], TokenErrorKind::Unavailable);
    let (service, seen) = recorder(&layer);
    call(&service).await.unwrap();
    tokio::time::advance(Duration::from_secs(91)).await;
    call(&service).await.unwrap();
    settle().await;
    assert_eq!(source.calls(), 2, "the refresh ran and failed");

    // Still valid: served, and no new attempt on every request.
    for _ in 0..5 {
        call(&service).await.unwrap();
        settle().await;
    }
    assert_eq!(source.calls(), 2);
    assert_eq!(last(&seen), "Bearer t1");

    // Later (half the remaining 9 s), one more attempt succeeds.
    tokio::time::advance(Duration::from_secs(5)).await;
    call(&service).await.unwrap();
    settle().await;
    assert_eq!(source.calls(), 3);
    call(&service).await.unwrap();
    assert_eq!(last(&seen), "Bearer t3");
}

#[tokio::test(start_paused = true)]
async fn rejected_credentials_are_retried_once_per_backoff_window() {
    let (source, layer) = Source::layer(
        Duration::from_secs(100),
        &[1, 2],
        TokenErrorKind::CredentialsRejected,
    );
    let (service, _seen) = recorder(&layer);
    let e = call(&service).await.unwrap_err();
    assert!(e.token_error().unwrap().is_credentials_rejected());
    tokio::time::advance(Duration::from_secs(29)).await;
    let e = call(&service).await.unwrap_err();
    assert_eq!(
        e.token_error().unwrap().message(),
        "fetch 1 fails",
        "the cached error"
    );
    assert_eq!(source.calls(), 1);

    tokio::time::advance(Duration::from_secs(2)).await;
    let e = call(&service).await.unwrap_err();
    assert_eq!(e.token_error().unwrap().message(), "fetch 2 fails");
    assert_eq!(source.calls(), 2);

    tokio::time::advance(Duration::from_secs(31)).await;
    call(&service).await.unwrap();
    assert_eq!(source.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn transient_failures_back_off_and_honour_retry_after() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let source = token_source_fn(move |_current: Option<&Token>| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            match n {
                0 => Err(TokenError::new(TokenErrorKind::Unavailable, "429")
                    .with_retry_after(Duration::from_secs(7))),
                _ => Ok(Token::new("ok")),
            }
        }
    });
    let layer = WokeloAuthLayer::builder(source).build();
    let (service, seen) = recorder(&layer);
    let started = tokio::time::Instant::now();
    call(&service).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(7),
        "waited exactly Retry-After"
    );
    assert_eq!(last(&seen), "Bearer ok");
}

#[tokio::test(start_paused = true)]
async fn a_malformed_answer_to_the_refresh_does_not_outlive_the_token() {
    // 3 s tokens; the refresh (at 2.4-2.7 s) gets an unusable answer.
    let (source, layer) = Source::layer(
        Duration::from_secs(3),
        &[2],
        TokenErrorKind::InvalidResponse,
    );
    let (service, seen) = recorder(&layer);
    call(&service).await.unwrap();
    tokio::time::advance(Duration::from_millis(2800)).await;
    call(&service).await.unwrap();
    settle().await;
    assert_eq!(source.calls(), 2, "the refresh ran and failed");
    assert_eq!(last(&seen), "Bearer t1", "the valid token is served");

    // Tried again before expiry (half the 200 ms left), not 30 s later.
    tokio::time::advance(Duration::from_millis(150)).await;
    call(&service).await.unwrap();
    settle().await;
    assert_eq!(source.calls(), 3);
    call(&service).await.unwrap();
    assert_eq!(last(&seen), "Bearer t3");
}

#[tokio::test(start_paused = true)]
async fn once_the_token_expired_after_failed_refreshes_the_next_request_tries_again() {
    let (source, layer) = Source::layer(
        Duration::from_secs(3),
        &[2, 3],
        TokenErrorKind::InvalidResponse,
    );
    let (service, seen) = recorder(&layer);
    call(&service).await.unwrap();
    tokio::time::advance(Duration::from_millis(2800)).await;
    call(&service).await.unwrap();
    settle().await;
    tokio::time::advance(Duration::from_millis(150)).await;
    call(&service).await.unwrap();
    settle().await;
    assert_eq!(source.calls(), 3, "both refreshes failed");

    // Expired: no cached error, a new fetch, and it works.
    tokio::time::advance(Duration::from_millis(100)).await;
    call(&service).await.unwrap();
    assert_eq!(source.calls(), 4);
    assert_eq!(last(&seen), "Bearer t4");
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_with_rejected_credentials_fails_fast_after_expiry() {
    let (source, layer) = Source::layer(
        Duration::from_secs(3),
        &[2, 3, 4],
        TokenErrorKind::CredentialsRejected,
    );
    let (service, _seen) = recorder(&layer);
    call(&service).await.unwrap();
    tokio::time::advance(Duration::from_millis(2800)).await;
    call(&service).await.unwrap();
    settle().await;
    assert_eq!(source.calls(), 2);
    tokio::time::advance(Duration::from_millis(300)).await;
    let e = call(&service).await.unwrap_err();
    assert!(e.token_error().unwrap().is_credentials_rejected(), "{e}");
    assert_eq!(
        source.calls(),
        2,
        "the server's refusal is kept, not retried"
    );
}

/// A source that fails its first call with `Unavailable` and this
/// `Retry-After`, then hands out tokens.
fn throttled_once(retry_after: Duration) -> (Arc<AtomicUsize>, WokeloAuthLayer) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let source = token_source_fn(move |_current: Option<&Token>| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            match n {
                0 => Err(TokenError::new(TokenErrorKind::Unavailable, "503")
                    .with_retry_after(retry_after)),
                _ => Ok(Token::new("ok")),
            }
        }
    });
    (calls, WokeloAuthLayer::builder(source).build())
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_of_any_size_neither_panics_nor_locks_the_client_out() {
    for retry_after in [
        Duration::from_secs(u64::MAX),
        Duration::MAX,
        Duration::from_secs(9_999_999_999),
    ] {
        let (calls, layer) = throttled_once(retry_after);
        let (service, seen) = recorder(&layer);
        let started = tokio::time::Instant::now();
        let e = call(&service).await.unwrap_err();
        assert_eq!(e.token_error().unwrap().kind(), TokenErrorKind::Unavailable);
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "no wait past the fetch timeout"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // The server's wish is honoured up to the fetch timeout (30 s) only.
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(call(&service).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        call(&service).await.unwrap();
        assert_eq!(last(&seen), "Bearer ok");
    }
}

#[tokio::test(start_paused = true)]
async fn configuration_values_of_any_size_do_not_panic() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let source = token_source_fn(move |_current: Option<&Token>| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if n == 1 {
                Err(TokenError::new(TokenErrorKind::CredentialsRejected, "no"))
            } else {
                Ok(Token::new(format!("t{n}")).with_expires_in(Duration::MAX))
            }
        }
    });
    let layer = WokeloAuthLayer::builder(source)
        .token_timeout(Duration::MAX)
        .token_retry_backoff(Duration::MAX)
        .credentials_backoff(Duration::MAX)
        .unauthorized_backoff(Duration::MAX)
        .max_refresh_margin(Duration::MAX)
        .default_lifetime(Duration::MAX)
        .store_sync_interval(Duration::MAX)
        .build();
    let (service, seen) = recorder(&layer);
    let e = call(&service).await.unwrap_err();
    assert!(e.token_error().unwrap().is_credentials_rejected());

    // The credentials backoff is cut to MAX_FAILURE_WINDOW.
    tokio::time::advance(wokelo_auth::MAX_FAILURE_WINDOW - Duration::from_secs(1)).await;
    assert!(call(&service).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    call(&service).await.unwrap();
    assert_eq!(last(&seen), "Bearer t2");

    // A year on (the longest lifetime believed), the token is renewed.
    tokio::time::advance(wokelo_auth::MAX_LIFETIME).await;
    call(&service).await.unwrap();
    settle().await;
    call(&service).await.unwrap();
    assert_eq!(last(&seen), "Bearer t3");
}
