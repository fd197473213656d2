//! Two caches sharing one store (as two processes share Redis): the second
//! adopts the first's token, and picks up a replacement within the sync
//! interval. Paused time, in-process store and sources.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{header::AUTHORIZATION, Request, Response, StatusCode};
use http_body_util::Empty;
use tower::{service_fn, Layer, ServiceExt};
use wokelo_auth::{
    store::{Lease, StoreFuture, StoredToken, TokenStore},
    token_source_fn, ReplayBody, Token, WokeloAuthLayer,
};

/// A store shared by both caches, like Redis between processes.
#[derive(Clone, Default)]
struct Shared {
    tokens: Arc<Mutex<HashMap<String, StoredToken>>>,
    locks: Arc<Mutex<HashMap<String, Lease>>>,
}

impl TokenStore for Shared {
    fn load<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<StoredToken>> {
        let found = self.tokens.lock().unwrap().get(key).cloned();
        Box::pin(async move { Ok(found.filter(|t| t.remaining() > Duration::ZERO)) })
    }
    fn lock<'a>(&'a self, key: &'a str, _ttl: Duration) -> StoreFuture<'a, Option<Lease>> {
        let mut locks = self.locks.lock().unwrap();
        let lease = (!locks.contains_key(key)).then(Lease::random);
        if let Some(l) = &lease {
            locks.insert(key.to_owned(), l.clone());
        }
        Box::pin(async move { Ok(lease) })
    }
    fn save<'a>(
        &'a self,
        key: &'a str,
        token: &'a StoredToken,
        lease: &'a Lease,
    ) -> StoreFuture<'a, bool> {
        let holds = self.locks.lock().unwrap().get(key) == Some(lease);
        if holds {
            self.tokens
                .lock()
                .unwrap()
                .insert(key.to_owned(), token.clone());
        }
        Box::pin(async move { Ok(holds) })
    }
    fn unlock<'a>(&'a self, key: &'a str, lease: &'a Lease) -> StoreFuture<'a, ()> {
        let mut locks = self.locks.lock().unwrap();
        if locks.get(key) == Some(lease) {
            locks.remove(key);
        }
        Box::pin(async { Ok(()) })
    }
    fn name(&self) -> &'static str {
        "shared-test"
    }
}

/// A layer whose source mints `<name>1`, `<name>2`, ... (100 s tokens).
fn layer(name: &'static str, store: &Shared) -> (WokeloAuthLayer, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let source = token_source_fn(move |_: Option<&Token>| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move { Ok(Token::new(format!("{name}{n}")).with_expires_in(Duration::from_secs(100))) }
    });
    let layer = WokeloAuthLayer::builder(source)
        .token_store(store.clone())
        .store_sync_interval(Duration::from_secs(5))
        .build();
    (layer, calls)
}

/// Sends one request through `layer` to an API that refuses `refuse`;
/// returns the token the last attempt carried.
async fn call(layer: &WokeloAuthLayer, refuse: &'static str) -> String {
    let seen = Arc::new(Mutex::new(String::new()));
    let log = seen.clone();
    let api = service_fn(move |req: Request<ReplayBody<Empty<Bytes>>>| {
        let token = req.headers()[AUTHORIZATION].to_str().unwrap().to_owned();
        assert!(req.headers()[AUTHORIZATION].is_sensitive());
        let mut response = Response::new(Empty::<Bytes>::new());
        if token == format!("Bearer {refuse}") {
            *response.status_mut() = StatusCode::UNAUTHORIZED;
        }
        *log.lock().unwrap() = token;
        async move { Ok::<_, Infallible>(response) }
    });
    let request = Request::get("https://api.wokelo.ai/api/x")
        .body(Empty::new())
        .unwrap();
    let response = layer.layer(api).oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let token = seen.lock().unwrap().clone();
    token
}

async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_second_cache_adopts_and_follows_the_shared_token() {
    let store = Shared::default();
    let (a, a_calls) = layer("a", &store);
    let (b, b_calls) = layer("b", &store);

    assert_eq!(call(&a, "").await, "Bearer a1");
    assert_eq!(call(&b, "").await, "Bearer a1", "b adopts a's token");
    assert_eq!(
        (
            a_calls.load(Ordering::SeqCst),
            b_calls.load(Ordering::SeqCst)
        ),
        (1, 0)
    );

    // The API refuses a1 for a: a refreshes under the lock and stores a2.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(call(&a, "a1").await, "Bearer a2");
    assert_eq!(a_calls.load(Ordering::SeqCst), 2);

    // b still holds a1, valid for 99 s; within the sync interval it looks at
    // the store and adopts a2, without asking its own source.
    assert_eq!(call(&b, "").await, "Bearer a1");
    tokio::time::advance(Duration::from_secs(5)).await;
    call(&b, "").await;
    settle().await;
    assert_eq!(call(&b, "").await, "Bearer a2");
    assert_eq!(
        b_calls.load(Ordering::SeqCst),
        0,
        "b never fetched a token itself"
    );

    // A 401 for a2 in b: b refreshes (from the shared chain), and a then
    // adopts b's token on its own 401 without fetching.
    assert_eq!(call(&b, "a2").await, "Bearer b1");
    assert_eq!(call(&a, "a2").await, "Bearer b1");
    assert_eq!(
        (
            a_calls.load(Ordering::SeqCst),
            b_calls.load(Ordering::SeqCst)
        ),
        (2, 1)
    );
}
