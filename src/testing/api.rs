//! The protected endpoints under `/api/`: bearer-token checks with the API's
//! 401 challenges, and a few endpoints to call once authenticated.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{request, Method, StatusCode};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::body::{self, MockResponse};
use super::jobs::{JobResult, JobStatus};
use super::state::Shared;
use super::tokens::AccessCheck;
use super::ApiFault;

pub(crate) fn handle(shared: &Shared, parts: &request::Parts, body: &Bytes) -> MockResponse {
    let bearer = bearer_token(&parts.headers);
    let (fault, check) = {
        let mut inner = shared.lock();
        inner.stats.api_requests += 1;
        if let Some(token) = bearer {
            *inner
                .stats
                .tokens_presented
                .entry(token.to_owned())
                .or_default() += 1;
        }
        let fault = inner.api_faults.pop_front().or_else(|| {
            let rate = shared.config.api_throttle_rate;
            (rate > 0.0 && fastrand::f64() < rate).then(|| ApiFault::Status {
                status: 429,
                body: r#"{"detail":"Request was throttled."}"#.to_owned(),
                retry_after_secs: Some(0),
            })
        });
        let check = bearer.map(|token| inner.tokens.check(token, Instant::now()));
        (fault, check)
    };

    let response = match (fault, check) {
        (
            Some(ApiFault::Status {
                status,
                body,
                retry_after_secs,
            }),
            _,
        ) => {
            let response = body::raw_json(status, &body);
            match retry_after_secs {
                Some(secs) => body::retry_after(response, secs),
                None => response,
            }
        }
        (Some(ApiFault::Unauthorized), _) | (None, Some(AccessCheck::Invalid)) => {
            invalid_token("The access token is invalid.")
        }
        (None, Some(AccessCheck::Expired)) => invalid_token("The access token has expired."),
        (None, None) => not_provided(),
        (None, Some(AccessCheck::Valid)) => route(shared, parts, body),
    };

    let status = response.status().as_u16();
    let mut inner = shared.lock();
    *inner.stats.api_by_status.entry(status).or_default() += 1;
    if status == 401 {
        inner.stats.unauthorized += 1;
    }
    response
}

/// The token of `Authorization: Bearer <token>`; any other scheme, or an empty
/// token, counts as no credentials, as Django REST framework treats them.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn not_provided() -> MockResponse {
    let mut response = body::json(
        StatusCode::UNAUTHORIZED,
        &json!({"detail": "Authentication credentials were not provided."}),
    );
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"Bearer realm="api""#),
    );
    response
}

fn invalid_token(description: &'static str) -> MockResponse {
    let mut response = body::json(StatusCode::UNAUTHORIZED, &json!({"detail": description}));
    let challenge =
        format!(r#"Bearer realm="api",error="invalid_token",error_description="{description}""#);
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_str(&challenge).expect("challenge is visible ASCII"),
    );
    response
}

/// Dispatches an authenticated request. Paths match with or without a
/// trailing slash.
fn route(shared: &Shared, parts: &request::Parts, body: &Bytes) -> MockResponse {
    let path = parts.uri.path();
    let method = &parts.method;
    if path.starts_with("/api/echo") {
        return echo(shared, parts, body);
    }
    match path.trim_end_matches('/') {
        "/api/forbidden" => body::json(
            StatusCode::FORBIDDEN,
            &json!({"message": "You do not have access to this resource."}),
        ),
        "/api/enterprise/company/search" if method == Method::GET => {
            company_search(query_param(parts, "query"))
        }
        "/api/enterprise/report" if method == Method::POST => create_job(shared, body),
        "/api/enterprise/request/status" if method == Method::GET => {
            job_status(shared, query_param(parts, "request_id"))
        }
        "/api/enterprise/request/result" if method == Method::GET => {
            job_result(shared, query_param(parts, "request_id"))
        }
        "/api/enterprise/company/search"
        | "/api/enterprise/request/status"
        | "/api/enterprise/request/result" => body::method_not_allowed(method, "GET"),
        "/api/enterprise/report" => body::method_not_allowed(method, "POST"),
        _ => body::not_found(),
    }
}

fn query_param(parts: &request::Parts, name: &str) -> Option<String> {
    let query = parts.uri.query()?;
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find(|(key, value)| key == name && !value.is_empty())
        .map(|(_, value)| value)
}

/// Describes the request as received: the tests of body replay compare its
/// length and SHA-256 with what they sent.
fn echo(shared: &Shared, parts: &request::Parts, body: &Bytes) -> MockResponse {
    let mut headers = Map::new();
    for name in parts.headers.keys() {
        // The token is a secret; `tokens_presented` already records it.
        if name == AUTHORIZATION {
            continue;
        }
        let values: Vec<_> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect();
        headers.insert(name.as_str().to_owned(), values.join(", ").into());
    }
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    let sha256: String = Sha256::digest(body)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    body::json(
        StatusCode::OK,
        &json!({
            "user": shared.config.username,
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "body_len": body.len(),
            "body_sha256": sha256,
            "content_type": content_type,
            "headers": headers,
        }),
    )
}

fn company_search(query: Option<String>) -> MockResponse {
    let Some(query) = query else {
        return body::json(
            StatusCode::BAD_REQUEST,
            &json!({"detail": "The query parameter is required."}),
        );
    };
    let mut chars = query.trim().chars();
    let name: String = chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default();
    let mut slug: String = query
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if slug.is_empty() {
        slug.push_str("company");
    }
    body::json(
        StatusCode::OK,
        &json!({
            "query": query,
            "count": 1,
            "results": [{"name": format!("{name} Inc."), "website": format!("https://{slug}.example")}],
        }),
    )
}

fn create_job(shared: &Shared, body: &Bytes) -> MockResponse {
    let input = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        match serde_json::from_slice(body) {
            Ok(input) => input,
            Err(error) => {
                return body::json(
                    StatusCode::BAD_REQUEST,
                    &json!({"detail": format!("JSON parse error - {error}")}),
                )
            }
        }
    };
    let request_id = shared.lock().jobs.create(input);
    body::json(
        StatusCode::ACCEPTED,
        &json!({"request_id": request_id, "status": "PENDING"}),
    )
}

fn missing_request_id() -> MockResponse {
    body::json(
        StatusCode::BAD_REQUEST,
        &json!({"detail": "The request_id parameter is required."}),
    )
}

fn job_status(shared: &Shared, request_id: Option<String>) -> MockResponse {
    let Some(request_id) = request_id else {
        return missing_request_id();
    };
    let status = shared
        .lock()
        .jobs
        .poll(&request_id, shared.config.job_steps);
    match status {
        Some(status) => body::json(
            StatusCode::OK,
            &json!({"request_id": request_id, "status": status.as_str()}),
        ),
        None => body::not_found(),
    }
}

fn job_result(shared: &Shared, request_id: Option<String>) -> MockResponse {
    let Some(request_id) = request_id else {
        return missing_request_id();
    };
    let inner = shared.lock();
    match inner.jobs.result(&request_id, shared.config.job_steps) {
        None => body::not_found(),
        Some(JobResult::NotReady) => body::json(
            StatusCode::CONFLICT,
            &json!({"detail": "Result not ready."}),
        ),
        Some(JobResult::Done {
            status: JobStatus::Failed,
            input,
        }) => body::json(
            StatusCode::OK,
            &json!({
                "request_id": request_id,
                "status": JobStatus::Failed.as_str(),
                "result": null,
                "error": {"message": "Report generation failed.", "input": input},
            }),
        ),
        Some(JobResult::Done { status, input }) => body::json(
            StatusCode::OK,
            &json!({
                "request_id": request_id,
                "status": status.as_str(),
                "result": {"title": "Mock report", "sections": ["Overview", "Financials"], "input": input},
            }),
        ),
    }
}
