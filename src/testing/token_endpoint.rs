//! `POST /auth/token/`: the password and refresh-token grants, with the
//! statuses and bodies of django-oauth-toolkit behind drf-social-oauth2.

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, PRAGMA, WWW_AUTHENTICATE};
use http::{request, StatusCode};
use serde_json::{json, Map, Value};

use super::body::{self, MockBody, MockResponse};
use super::form::{Encoding, Params};
use super::state::Shared;
use super::tokens::{Issued, RefreshOutcome};
use super::TokenFault;

/// A response plus what the counters need to know about it.
struct Answer {
    response: MockResponse,
    issued: bool,
    error: Option<String>,
}

impl Answer {
    fn new(response: MockResponse) -> Answer {
        Answer {
            response,
            issued: false,
            error: None,
        }
    }
}

pub(crate) async fn handle(shared: &Shared, parts: &request::Parts, body: &Bytes) -> MockResponse {
    let encoding = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(Encoding::from_content_type);
    let params = encoding.as_ref().and_then(|encoding| encoding.parse(body));

    let fault = {
        let mut inner = shared.lock();
        let stats = &mut inner.stats;
        stats.token_requests += 1;
        if let Some(encoding) = &encoding {
            *stats
                .token_encodings
                .entry(encoding.label().to_owned())
                .or_default() += 1;
        }
        match grant_type(params.as_ref()) {
            Some("password") => stats.password_grants += 1,
            Some("refresh_token") => stats.refresh_grants += 1,
            _ => {}
        }
        inner.token_faults.pop_front().or_else(|| {
            let rate = shared.config.token_failure_rate;
            (rate > 0.0 && fastrand::f64() < rate).then(|| TokenFault::Status {
                status: 503,
                body: r#"{"detail":"Service temporarily unavailable."}"#.to_owned(),
            })
        })
    };

    if !shared.config.token_latency.is_zero() {
        tokio::time::sleep(shared.config.token_latency).await;
    }
    let answer = match fault {
        None => grant(shared, params.as_ref()),
        Some(fault) => inject(shared, fault, params.as_ref()).await,
    };

    let mut inner = shared.lock();
    let stats = &mut inner.stats;
    if answer.issued {
        stats.tokens_issued += 1;
    }
    if answer.response.status().as_u16() >= 400 {
        stats.token_errors += 1;
    }
    match answer.error.as_deref() {
        Some("invalid_grant") => stats.invalid_grant += 1,
        Some("invalid_client") => stats.invalid_client += 1,
        _ => {}
    }
    answer.response
}

fn grant_type(params: Option<&Params>) -> Option<&str> {
    params?.get("grant_type").map(String::as_str)
}

async fn inject(shared: &Shared, fault: TokenFault, params: Option<&Params>) -> Answer {
    match fault {
        TokenFault::Status { status, body } => {
            // Count injected OAuth errors like real ones.
            let error = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|value| value.get("error")?.as_str().map(str::to_owned));
            Answer {
                response: body::raw_json(status, &body),
                issued: false,
                error,
            }
        }
        TokenFault::Delay(delay) => {
            tokio::time::sleep(delay).await;
            grant(shared, params)
        }
        TokenFault::Hang => {
            shared.shutdown().await;
            Answer::new(body::raw_json(
                503,
                r#"{"detail":"Mock server shut down."}"#,
            ))
        }
        TokenFault::Malformed => Answer::new(body::with_body(
            StatusCode::OK,
            "text/html",
            "<html>oops</html>",
        )),
        TokenFault::MissingAccessToken => {
            let mut token = Map::new();
            token.insert("token_type".into(), "Bearer".into());
            token.insert("scope".into(), "read write".into());
            if let Some(expires_in) = shared.config.expires_in() {
                token.insert("expires_in".into(), expires_in);
            }
            Answer::new(no_store(body::json(StatusCode::OK, &Value::Object(token))))
        }
        TokenFault::Oversized(len) => {
            let mut response = MockResponse::new(MockBody::oversized(len));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Answer::new(response)
        }
        TokenFault::TooManyRequests { retry_after_secs } => Answer::new(body::retry_after(
            body::json(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({"detail": "Request was throttled."}),
            ),
            retry_after_secs,
        )),
    }
}

/// Normal processing, in oauthlib's order: grant type, client, parameters, grant.
fn grant(shared: &Shared, params: Option<&Params>) -> Answer {
    let Some(params) = params else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", None);
    };
    let config = &shared.config;
    let grant_type = grant_type(Some(params));
    if !matches!(grant_type, Some("password" | "refresh_token")) {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", None);
    }
    let client_ok = params.get("client_id") == Some(&config.client_id)
        && params.get("client_secret") == Some(&config.client_secret);
    if !client_ok {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", None);
    }

    if grant_type == Some("password") {
        for field in ["username", "password"] {
            if params.get(field).is_none_or(String::is_empty) {
                let description = format!("Request is missing {field} parameter.");
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    Some(&description),
                );
            }
        }
        if params["username"] != config.username || params["password"] != config.password {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                Some("Invalid credentials given."),
            );
        }
        let issued = shared
            .lock()
            .tokens
            .login(config.token_lifetime, config.issue_refresh_tokens);
        return success(shared, issued);
    }

    let Some(refresh_token) = params.get("refresh_token").filter(|t| !t.is_empty()) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("Missing refresh token parameter."),
        );
    };
    let outcome = shared.lock().tokens.refresh(
        refresh_token,
        config.token_lifetime,
        config.reuse_protection,
    );
    match outcome {
        RefreshOutcome::Rotated(issued) => success(shared, issued),
        RefreshOutcome::Rejected => oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", None),
    }
}

fn success(shared: &Shared, issued: Issued) -> Answer {
    let mut token = Map::new();
    token.insert("access_token".into(), issued.access_token.into());
    if let Some(expires_in) = shared.config.expires_in() {
        token.insert("expires_in".into(), expires_in);
    }
    token.insert("token_type".into(), "Bearer".into());
    token.insert("scope".into(), "read write".into());
    if let Some(refresh_token) = issued.refresh_token {
        token.insert("refresh_token".into(), refresh_token.into());
    }
    Answer {
        response: no_store(body::json(StatusCode::OK, &Value::Object(token))),
        issued: true,
        error: None,
    }
}

/// An RFC 6749 §5.2 error; a 401 carries `WWW-Authenticate` as oauthlib sends it.
fn oauth_error(status: StatusCode, error: &str, description: Option<&str>) -> Answer {
    let mut body = Map::new();
    body.insert("error".into(), error.into());
    if let Some(description) = description {
        body.insert("error_description".into(), description.into());
    }
    let mut response = no_store(body::json(status, &Value::Object(body)));
    if status == StatusCode::UNAUTHORIZED {
        let challenge = format!("Bearer error=\"{error}\"");
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response.headers_mut().insert(WWW_AUTHENTICATE, value);
        }
    }
    Answer {
        response,
        issued: false,
        error: Some(error.to_owned()),
    }
}

/// RFC 6749 §5.1: token responses must not be cached.
fn no_store(mut response: MockResponse) -> MockResponse {
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}
