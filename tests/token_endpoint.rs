//! The Wokelo token source against the mock token endpoint: rotation,
//! fallback, credential errors, transient failures, bad answers.

mod common;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use wokelo_auth::{
    testing::{ApiFault, MockConfig, MockServer, TokenFault},
    Credentials, Error, PasswordGrant, TokenErrorKind, TokenRequestEncoding, WokeloAuthLayer,
};

use common::{client, get, send, status_of};

fn token_error(result: Result<common::Answer, Error>) -> wokelo_auth::TokenError {
    match result {
        Err(Error::Token(e)) => e,
        other => panic!("expected a token error, got {other:?}"),
    }
}

#[tokio::test]
async fn rotated_refresh_tokens_are_stored_and_used() {
    let server = MockServer::start_with(MockConfig {
        reuse_protection: true,
        ..MockConfig::default()
    })
    .await;
    let service = client::<Empty<Bytes>>(&common::builder(&server).build());
    for _ in 0..3 {
        server.fail_next_api_requests(1, ApiFault::Unauthorized);
        assert_eq!(status_of(&service, server.url("/api/echo")).await, 200);
    }
    let stats = server.stats();
    // A reused refresh token would be refused (and revoke the family).
    assert_eq!(stats.password_grants, 1, "{stats:?}");
    assert_eq!(stats.refresh_grants, 3, "{stats:?}");
    assert_eq!(stats.invalid_grant, 0, "{stats:?}");
    assert_eq!(stats.tokens_issued, 4);
}

#[tokio::test]
async fn a_refused_refresh_falls_back_to_the_password_grant() {
    let server = MockServer::start().await;
    let service = client::<Empty<Bytes>>(&common::builder(&server).build());
    assert_eq!(status_of(&service, server.url("/api/echo")).await, 200);
    server.revoke_all();
    assert_eq!(status_of(&service, server.url("/api/echo")).await, 200);
    let stats = server.stats();
    assert_eq!(stats.refresh_grants, 1, "{stats:?}");
    assert_eq!(stats.invalid_grant, 1, "{stats:?}");
    assert_eq!(stats.password_grants, 2, "{stats:?}");
}

#[tokio::test]
async fn wrong_password_is_a_typed_error_and_the_endpoint_is_not_hammered() {
    let server = MockServer::start().await;
    let c = server.config();
    let credentials = Credentials::new(
        &c.client_id,
        &c.client_secret,
        &c.username,
        "wrong-password-123",
    )
    .with_base_url(server.base_url().parse().unwrap());
    let service = client::<Empty<Bytes>>(&WokeloAuthLayer::new(PasswordGrant::new(credentials)));

    let e = token_error(send(&service, get(server.url("/api/echo"))).await);
    assert_eq!(e.kind(), TokenErrorKind::CredentialsRejected);
    assert_eq!(e.status().map(|s| s.as_u16()), Some(400));
    let message = e.to_string();
    assert!(
        message.contains("invalid_grant: Invalid credentials given."),
        "{message}"
    );
    assert!(
        message.contains("WOKELO_PASSWORD"),
        "says what to check: {message}"
    );
    assert!(!message.contains("wrong-password-123"));

    for _ in 0..5 {
        let again = token_error(send(&service, get(server.url("/api/echo"))).await);
        assert_eq!(again.kind(), TokenErrorKind::CredentialsRejected);
    }
    let stats = server.stats();
    assert_eq!(
        stats.token_requests, 1,
        "one attempt inside the backoff window: {stats:?}"
    );
    assert_eq!(stats.api_requests, 0, "nothing sent without a token");
}

#[tokio::test]
async fn wrong_client_secret_is_invalid_client_and_not_retried() {
    let server = MockServer::start().await;
    let c = server.config();
    let credentials = Credentials::new(&c.client_id, "nope", &c.username, &c.password)
        .with_base_url(server.base_url().parse().unwrap());
    let service = client::<Empty<Bytes>>(&WokeloAuthLayer::new(PasswordGrant::new(credentials)));
    let e = token_error(send(&service, get(server.url("/api/echo"))).await);
    assert!(e.is_credentials_rejected());
    assert_eq!(e.status().map(|s| s.as_u16()), Some(401));
    assert_eq!(
        e.body().and_then(|b| b.error.as_deref()),
        Some("invalid_client")
    );
    assert!(e.to_string().contains("WOKELO_CLIENT_SECRET"), "{e}");
    assert_eq!(server.stats().token_requests, 1);
}

#[tokio::test]
async fn two_503s_then_success_recovers() {
    let server = MockServer::start().await;
    let service = client::<Empty<Bytes>>(&common::builder(&server).build());
    server.fail_next_token_requests(
        2,
        TokenFault::Status {
            status: 503,
            body: r#"{"detail":"Service unavailable"}"#.into(),
        },
    );
    assert_eq!(status_of(&service, server.url("/api/echo")).await, 200);
    let stats = server.stats();
    assert_eq!(
        (stats.token_requests, stats.tokens_issued),
        (3, 1),
        "{stats:?}"
    );
}

#[tokio::test]
async fn persistent_5xx_gives_up_after_the_retries() {
    let server = MockServer::start().await;
    let layer = common::builder(&server).token_retries(2).build();
    let service = client::<Empty<Bytes>>(&layer);
    server.fail_next_token_requests(
        10,
        TokenFault::Status {
            status: 502,
            body: "{}".into(),
        },
    );
    let e = token_error(send(&service, get(server.url("/api/echo"))).await);
    assert_eq!(e.kind(), TokenErrorKind::Unavailable);
    assert_eq!(e.status().map(|s| s.as_u16()), Some(502));
    assert_eq!(server.stats().token_requests, 3, "one try and two retries");
}

#[tokio::test(start_paused = true)]
async fn a_hanging_endpoint_times_out_within_the_configured_time() {
    let server = MockServer::start().await;
    let layer = common::builder(&server)
        .token_timeout(Duration::from_secs(5))
        .build();
    let service = client::<Empty<Bytes>>(&layer);
    server.fail_next_token_requests(1, TokenFault::Hang);
    let started = tokio::time::Instant::now();
    let e = token_error(send(&service, get(server.url("/api/echo"))).await);
    let elapsed = started.elapsed();
    assert_eq!(e.kind(), TokenErrorKind::TimedOut);
    assert!(e.to_string().contains("5s"), "{e}");
    assert!(
        elapsed >= Duration::from_secs(5) && elapsed < Duration::from_secs(6),
        "timed out after {elapsed:?}"
    );
}

#[tokio::test]
async fn unusable_answers_are_typed_errors_naming_the_problem() {
    let cases: [(TokenFault, &str); 3] = [
        (TokenFault::Malformed, "not JSON"),
        (TokenFault::MissingAccessToken, "no `access_token`"),
        (TokenFault::Oversized(10 * 1024 * 1024), "exceeds 64 KiB"),
    ];
    for (fault, expected) in cases {
        let server = MockServer::start().await;
        let service = client::<Empty<Bytes>>(&common::builder(&server).build());
        server.fail_next_token_requests(1, fault.clone());
        let e = token_error(send(&service, get(server.url("/api/echo"))).await);
        assert_eq!(e.kind(), TokenErrorKind::InvalidResponse, "{fault:?}");
        assert!(e.to_string().contains(expected), "{fault:?}: {e}");
        assert_eq!(server.stats().token_requests, 1, "not retried: {fault:?}");
    }
}

#[tokio::test]
async fn every_body_encoding_logs_in() {
    for (encoding, name) in [
        (TokenRequestEncoding::Form, "form"),
        (TokenRequestEncoding::Json, "json"),
        (TokenRequestEncoding::Multipart, "multipart"),
    ] {
        let server = MockServer::start().await;
        let source = PasswordGrant::new(common::credentials(&server)).with_encoding(encoding);
        let service = client::<Empty<Bytes>>(&WokeloAuthLayer::new(source));
        assert_eq!(status_of(&service, server.url("/api/echo")).await, 200);
        assert_eq!(server.stats().token_encodings.get(name), Some(&1), "{name}");
    }
}

#[tokio::test]
async fn odd_expires_in_values_still_give_a_usable_token() {
    for value in [
        serde_json::Value::Null,
        serde_json::json!(0),
        serde_json::json!(-10),
        serde_json::json!(1e300),
        serde_json::json!("3600"),
    ] {
        let server = MockServer::start_with(MockConfig {
            expires_in_override: Some(value.clone()),
            ..MockConfig::default()
        })
        .await;
        let service = client::<Empty<Bytes>>(&common::builder(&server).build());
        for _ in 0..3 {
            assert_eq!(status_of(&service, server.url("/api/echo")).await, 200);
        }
        assert_eq!(server.stats().token_requests, 1, "expires_in {value}");
    }
}

/// Makes the next token request get `status` with `body` (as JSON).
fn answer_next(server: &MockServer, status: u16, body: impl Into<String>) {
    server.fail_next_token_requests(
        1,
        TokenFault::Status {
            status,
            body: body.into(),
        },
    );
}

#[tokio::test]
async fn a_200_with_an_oauth_error_is_that_error() {
    let server = MockServer::start().await;
    let service = client::<Empty<Bytes>>(&common::builder(&server).build());
    answer_next(
        &server,
        200,
        r#"{"error":"invalid_grant","error_description":"Invalid credentials given."}"#,
    );
    let e = token_error(send(&service, get(server.url("/api/echo"))).await);
    assert_eq!(e.kind(), TokenErrorKind::CredentialsRejected, "{e}");
    assert_eq!(e.status().map(|s| s.as_u16()), Some(200));
    let message = e.to_string();
    assert!(
        message.contains("invalid_grant: Invalid credentials given.")
            && message.contains("WOKELO_PASSWORD"),
        "{message}"
    );
    assert_eq!(server.stats().token_requests, 1, "not retried");
}

#[tokio::test]
async fn an_unknown_error_code_in_a_200_is_an_invalid_response_naming_it() {
    let server = MockServer::start().await;
    let service = client::<Empty<Bytes>>(&common::builder(&server).build());
    answer_next(&server, 200, r#"{"error":"account_locked"}"#);
    let e = token_error(send(&service, get(server.url("/api/echo"))).await);
    assert_eq!(e.kind(), TokenErrorKind::InvalidResponse, "{e}");
    assert!(e.to_string().contains("`account_locked`"), "{e}");
}

#[tokio::test]
async fn protocol_errors_are_configuration_not_credentials() {
    for (status, code) in [
        (400, "invalid_request"),
        (400, "unsupported_grant_type"),
        (400, "invalid_scope"),
    ] {
        let server = MockServer::start().await;
        let service = client::<Empty<Bytes>>(&common::builder(&server).build());
        answer_next(&server, status, format!(r#"{{"error":"{code}"}}"#));
        let e = token_error(send(&service, get(server.url("/api/echo"))).await);
        assert_eq!(e.kind(), TokenErrorKind::Configuration, "{code}: {e}");
        assert!(e.to_string().contains(code), "{e}");
        assert!(!e.to_string().contains("WOKELO_PASSWORD"), "{e}");
    }
}

#[tokio::test]
async fn an_html_page_from_a_proxy_is_not_a_credentials_rejection() {
    let page =
        "<html><head><title>403 Forbidden</title></head><body>Blocked by policy</body></html>";
    for (status, kind) in [
        (403, TokenErrorKind::InvalidResponse),
        (401, TokenErrorKind::InvalidResponse),
        (400, TokenErrorKind::InvalidResponse),
        (503, TokenErrorKind::Unavailable),
    ] {
        let server = MockServer::start().await;
        let layer = common::builder(&server).token_retries(0).build();
        let service = client::<Empty<Bytes>>(&layer);
        answer_next(&server, status, page);
        let e = token_error(send(&service, get(server.url("/api/echo"))).await);
        assert_eq!(e.kind(), kind, "{status}: {e}");
        let message = e.to_string();
        assert!(
            message.contains("not an OAuth error")
                && message.contains("<title>403 Forbidden</title>")
                && message.contains(&format!("(HTTP {status})"))
                && !message.contains("WOKELO_PASSWORD"),
            "{message}"
        );
    }
}

/// RFC 6749 section 6: a refresh answer may omit `refresh_token`; the one
/// just used then stays valid, and the next renewal uses it again.
#[tokio::test]
async fn a_refresh_answer_without_a_refresh_token_keeps_the_old_one() {
    let server = MockServer::start().await;
    let service = client::<Empty<Bytes>>(&common::builder(&server).build());
    assert_eq!(status_of(&service, server.url("/api/echo")).await, 200);

    // A 401 makes the layer refresh; the answer has a new access token only.
    let access = server.issue_token();
    answer_next(
        &server,
        200,
        serde_json::json!({"access_token": access, "expires_in": 3600, "token_type": "Bearer"})
            .to_string(),
    );
    server.fail_next_api_requests(1, ApiFault::Unauthorized);
    assert_eq!(status_of(&service, server.url("/api/echo")).await, 200);

    // The next renewal is a refresh with the first refresh token, which the
    // mock still accepts (the injected answer did not rotate it).
    server.fail_next_api_requests(1, ApiFault::Unauthorized);
    assert_eq!(status_of(&service, server.url("/api/echo")).await, 200);
    let stats = server.stats();
    assert_eq!(stats.password_grants, 1, "{stats:?}");
    assert_eq!(stats.refresh_grants, 2, "{stats:?}");
    assert_eq!(stats.invalid_grant, 0, "{stats:?}");
}
