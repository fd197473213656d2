//! Secrets never show: not in `Debug`, not in errors, not in TRACE-level logs.

mod common;

use bytes::Bytes;
use http_body_util::Empty;
use wokelo_auth::{
    testing::{ApiFault, MockServer, TokenFault},
    token_source_fn, ApiBase, Credentials, PasswordGrant, Token, TokenErrorKind, WokeloAuthLayer,
};

use common::{client, get, send, status_of, Captured};

fn assert_absent(haystack: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !haystack.contains(secret.as_str()),
            "secret {secret:?} leaked into:\n{haystack}"
        );
    }
}

#[tokio::test]
async fn secrets_are_absent_from_trace_output_debug_and_errors() {
    let captured = Captured::default();
    let _guard = tracing::subscriber::set_default(captured.subscriber());

    let server = MockServer::start().await;
    let layer = common::builder(&server).build();
    let service = client::<Empty<Bytes>>(&layer);

    // Login, a 401 with a refresh (rotation), a revocation with a refused
    // refresh and a fallback login.
    assert_eq!(status_of(&service, server.url("/api/echo")).await, 200);
    server.fail_next_api_requests(1, ApiFault::Unauthorized);
    assert_eq!(status_of(&service, server.url("/api/echo")).await, 200);
    server.revoke_all();
    assert_eq!(status_of(&service, server.url("/api/echo")).await, 200);

    // Wrong credentials.
    let c = server.config();
    let wrong = Credentials::new(
        &c.client_id,
        "wrong-client-secret-77",
        &c.username,
        "wrong-password-88",
    )
    .with_base_url(server.base_url().parse().unwrap());
    let bad_grant = PasswordGrant::new(wrong.clone());
    let bad = client::<Empty<Bytes>>(&WokeloAuthLayer::new(bad_grant.clone()));
    let error = send(&bad, get(server.url("/api/echo"))).await.unwrap_err();

    let stats = server.stats();
    assert_eq!(stats.tokens_issued, 3);
    let mut secrets: Vec<String> = stats.tokens_presented.into_keys().collect();
    assert_eq!(secrets.len(), 3, "three access tokens were used");
    secrets.extend([
        c.client_secret.clone(),
        c.password.clone(),
        "wrong-client-secret-77".into(),
        "wrong-password-88".into(),
    ]);

    let log = captured.text();
    assert!(
        log.contains("wokelo_auth.token_fetch"),
        "fetches are traced:\n{log}"
    );
    assert!(
        log.contains("retrying once with a fresh token"),
        "401 retries are traced"
    );
    assert!(
        log.contains("falling back to the password grant"),
        "fallback is traced"
    );
    assert_absent(&log, &secrets);

    let shown = format!(
        "{error}\n{error:?}\n{wrong:?}\n{bad_grant:?}\n{layer:?}\n{service:?}\n{:?}",
        common::credentials(&server)
    );
    assert_absent(&shown, &secrets);
}

#[tokio::test]
async fn refresh_tokens_from_any_source_stay_out_of_logs() {
    let captured = Captured::default();
    let _guard = tracing::subscriber::set_default(captured.subscriber());

    let server = MockServer::start().await;
    let base = server.base_url().parse().unwrap();
    let issued = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = issued.clone();
    let mint = std::sync::Arc::new(server);
    let server = mint.clone();
    let source = token_source_fn(move |current: Option<&Token>| {
        let token = mint.issue_token();
        let refresh = format!("refresh-secret-{}", current.is_some());
        log.lock().unwrap().extend([token.clone(), refresh.clone()]);
        async move { Ok(Token::new(token).with_refresh_token(refresh)) }
    })
    .with_api_base(base);
    let layer = WokeloAuthLayer::new(source);
    let service = client::<Empty<Bytes>>(&layer);
    assert_eq!(status_of(&service, server.url("/api/echo")).await, 200);
    server.fail_next_api_requests(1, ApiFault::Unauthorized);
    assert_eq!(status_of(&service, server.url("/api/echo")).await, 200);

    let secrets = issued.lock().unwrap().clone();
    assert_eq!(secrets.len(), 4);
    assert_absent(&captured.text(), &secrets);
    assert_absent(&format!("{layer:?}"), &secrets);
}

/// The token endpoint quotes the request body, secrets and all: the error and
/// the WARN log keep its words with the client secret and the password
/// replaced.
#[tokio::test]
async fn an_error_description_quoting_the_request_body_is_scrubbed() {
    let captured = Captured::default();
    let _guard = tracing::subscriber::set_default(captured.subscriber());
    let server = MockServer::start().await;
    server.fail_next_token_requests(
        1,
        TokenFault::Status {
            status: 400,
            body: r#"{"error":"invalid_request","error_description":"Could not process request body: grant_type=password&client_id=id&client_secret=S3cr3t&username=u%40example.com&password=Hunter2"}"#.into(),
        },
    );
    let credentials = Credentials::new("id", "S3cr3t", "u@example.com", "Hunter2")
        .with_base_url(server.base_url().parse().unwrap());
    let service = client::<Empty<Bytes>>(&WokeloAuthLayer::new(PasswordGrant::new(credentials)));
    let error = send(&service, get(server.url("/api/echo")))
        .await
        .unwrap_err();
    let token_error = error.token_error().expect("a token error");
    assert_eq!(token_error.kind(), TokenErrorKind::Configuration);
    let expected = "Could not process request body: grant_type=password&client_id=id&client_secret=[REDACTED]&username=u%40example.com&password=[REDACTED]";
    assert_eq!(
        token_error.body().unwrap().error_description.as_deref(),
        Some(expected)
    );
    let shown = format!("{error}\n{error:?}");
    assert!(shown.contains(expected), "{shown}");
    let log = captured.text();
    assert!(
        log.contains("token fetch failed") && log.contains(expected),
        "{log}"
    );
    let secrets = ["S3cr3t".to_owned(), "Hunter2".to_owned()];
    assert_absent(&shown, &secrets);
    assert_absent(&log, &secrets);
}

#[test]
fn a_base_url_with_a_password_or_an_api_key_is_refused_without_quoting_them() {
    for (url, hint) in [
        (
            "https://analyst:Sup3rS3cret@api.wokelo.ai",
            "WOKELO_USERNAME and WOKELO_PASSWORD",
        ),
        (
            "https://api.wokelo.ai/?api_key=Sup3rS3cret",
            "not an API key",
        ),
    ] {
        let e = url.parse::<ApiBase>().unwrap_err();
        let shown = format!("{e}\n{e:?}");
        assert!(shown.contains("invalid Wokelo base URL"), "{shown}");
        assert!(shown.contains(hint), "says what to do: {shown}");
        assert!(shown.contains("api.wokelo.ai"), "says which URL: {shown}");
        assert_absent(&shown, &["Sup3rS3cret".to_owned(), "analyst".to_owned()]);
    }
}

#[tokio::test]
async fn plain_http_to_a_host_that_is_not_loopback_is_refused_before_anything_is_sent() {
    // Every test in this file that logs holds a subscriber: tracing caches a
    // call site's interest, and a call site first hit with no subscriber
    // would stay silent for the tests that capture.
    let captured = Captured::default();
    let _guard = tracing::subscriber::set_default(captured.subscriber());
    // A host that does not resolve: had the layer tried to connect, the
    // error would be Unavailable (DNS), not Configuration.
    let credentials = Credentials::new("id", "client-s3cret", "u@example.com", "pa55word")
        .with_base_url("http://wokelo-test.invalid:8080".parse().unwrap());
    // The token error of one request to the unresolvable host.
    let token_error = |credentials: Credentials| async move {
        let layer = WokeloAuthLayer::builder(PasswordGrant::new(credentials))
            .token_retries(0)
            .build();
        let service = client::<Empty<Bytes>>(&layer);
        let e = send(
            &service,
            get("http://wokelo-test.invalid:8080/api/echo".into()),
        )
        .await
        .unwrap_err();
        e.token_error().expect("a token error").clone()
    };
    let e = token_error(credentials.clone()).await;
    assert_eq!(e.kind(), TokenErrorKind::Configuration, "{e}");
    assert!(e.to_string().contains("WOKELO_ALLOW_HTTP=1"), "{e}");

    // Opted in, the token request goes out (and fails on DNS here).
    let e = token_error(credentials.allow_http(true)).await;
    assert_eq!(e.kind(), TokenErrorKind::Unavailable, "{e}");
    assert_absent(
        &captured.text(),
        &["client-s3cret".into(), "pa55word".into()],
    );
}

#[tokio::test]
async fn plain_http_to_localhost_needs_no_opt_in() {
    let captured = Captured::default();
    let _guard = tracing::subscriber::set_default(captured.subscriber());
    let server = MockServer::start().await;
    let c = server.config();
    let base = format!("http://localhost:{}", server.addr().port());
    let credentials = Credentials::new(&c.client_id, &c.client_secret, &c.username, &c.password)
        .with_base_url(base.parse().unwrap());
    let layer = WokeloAuthLayer::new(PasswordGrant::new(credentials));
    let service = client::<Empty<Bytes>>(&layer);
    assert_eq!(status_of(&service, format!("{base}/api/echo")).await, 200);
}
