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

/// A source that wraps the password grant to read its tokens, and forgets
/// to forward `api_base` unless told to.
struct Wrapper {
    inner: wokelo_auth::PasswordGrant,
    forward_base: bool,
}

impl wokelo_auth::TokenSource for Wrapper {
    fn fetch(&self, current: Option<&wokelo_auth::Token>) -> wokelo_auth::TokenFuture {
        self.inner.fetch(current)
    }

    fn api_base(&self) -> Option<&wokelo_auth::ApiBase> {
        self.forward_base.then(|| self.inner.api_base()).flatten()
    }
}

fn wrapped(api: &MockServer, forward_base: bool) -> wokelo_auth::WokeloAuthLayer {
    wokelo_auth::WokeloAuthLayer::new(Wrapper {
        inner: wokelo_auth::PasswordGrant::new(common::credentials(api)),
        forward_base,
    })
}

const MISMATCH: &str = "does not match the API origin";

#[tokio::test]
async fn a_wrapper_that_hides_its_base_is_warned_about_once_naming_the_fix() {
    let captured = common::Captured::default();
    let _guard = tracing::subscriber::set_default(captured.subscriber());
    let api = MockServer::start().await;
    let layer = wrapped(&api, false);
    assert_eq!(layer.api_base().as_str(), wokelo_auth::DEFAULT_BASE_URL);
    let service = client::<Empty<Bytes>>(&layer);
    let other = client::<Empty<Bytes>>(&layer);

    for service in [&service, &other, &service] {
        let answer = send(service, get(api.url("/api/echo?key=s3cr3t-query")))
            .await
            .unwrap();
        assert_eq!(answer.status, 401, "passed through untouched, no token");
    }
    let stats = api.stats();
    assert_eq!(stats.api_requests, 3, "none retried");
    assert_eq!((stats.token_requests, stats.tokens_presented.len()), (0, 0));

    let logs = captured.text();
    assert_eq!(logs.matches(MISMATCH).count(), 1, "once per layer: {logs}");
    let line = logs.lines().find(|l| l.contains(MISMATCH)).unwrap();
    assert!(line.contains(" WARN "), "{line}");
    assert!(
        line.contains(&api.base_url()),
        "names the request's origin: {line}"
    );
    assert!(
        line.contains("https://api.wokelo.ai"),
        "and the one in use: {line}"
    );
    assert!(line.contains("WokeloAuthBuilder::api_base"), "{line}");
    assert!(line.contains("TokenSource::api_base"), "{line}");
    assert!(!line.contains("s3cr3t-query"), "no path or query: {line}");

    // Another layer warns once too.
    let second = client::<Empty<Bytes>>(&wrapped(&api, false));
    assert_eq!(status_of(&second, api.url("/api/echo")).await, 401);
    assert_eq!(captured.text().matches(MISMATCH).count(), 2);
}

#[tokio::test]
async fn a_named_base_is_never_warned_about() {
    let captured = common::Captured::default();
    let _guard = tracing::subscriber::set_default(captured.subscriber());
    let api = MockServer::start().await;
    let storage = MockServer::start().await;

    // Forwarded by the wrapper: the token goes to the mock.
    let forwarded = client::<Empty<Bytes>>(&wrapped(&api, true));
    assert_eq!(status_of(&forwarded, api.url("/api/echo")).await, 200);
    // Named by the source; a request elsewhere (a report on another host).
    let named = client::<Empty<Bytes>>(&common::builder(&api).build());
    assert_eq!(status_of(&named, storage.url("/api/echo")).await, 401);
    // The default, named on the builder.
    let builder = wokelo_auth::WokeloAuthLayer::builder(Wrapper {
        inner: wokelo_auth::PasswordGrant::new(common::credentials(&api)),
        forward_base: false,
    })
    .api_base(wokelo_auth::ApiBase::default())
    .build();
    let defaulted_by_choice = client::<Empty<Bytes>>(&builder);
    assert_eq!(
        status_of(&defaulted_by_choice, storage.url("/api/echo")).await,
        401
    );
    let logs = captured.text();
    assert!(!logs.contains(MISMATCH), "{logs}");
}
