//! Parsing the token endpoint's answers: the success body, the error bodies
//! and `Retry-After`.

use std::time::{Duration, SystemTime};

use http::{header::RETRY_AFTER, HeaderMap};
use serde_json::Value;

use crate::{error::OAuthErrorBody, Token, TokenError, TokenErrorKind};

/// Parses a `200` body into a [`Token`].
///
/// # Errors
///
/// [`TokenErrorKind::InvalidResponse`] when the body is not a JSON object or
/// has no non-empty string `access_token`.
pub(crate) fn parse_token(body: &[u8]) -> Result<Token, TokenError> {
    let invalid = |why: &str| {
        TokenError::new(
            TokenErrorKind::InvalidResponse,
            format!("the token endpoint answered 200 but {why}; check the base URL points at the Wokelo API"),
        )
    };
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        invalid(&format!(
            "the body is not JSON ({} bytes, {:?} error at line {} column {})",
            body.len(),
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    let obj = value
        .as_object()
        .ok_or_else(|| invalid("the body is not a JSON object"))?;
    let access = match obj.get("access_token") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(invalid("`access_token` is not a non-empty string")),
        None => return Err(invalid("the body has no `access_token`")),
    };
    let mut token = Token::new(access);
    if let Some(Value::String(r)) = obj.get("refresh_token") {
        if !r.is_empty() {
            token = token.with_refresh_token(r.clone());
        }
    }
    if let Some(lifetime) = obj.get("expires_in").and_then(lifetime_from_json) {
        token = token.with_expires_in(lifetime);
    }
    if let Some(Value::String(scope)) = obj.get("scope") {
        token = token.with_scope(scope.clone());
    }
    Ok(token)
}

/// `expires_in` as a duration: a positive, finite number of seconds (integer,
/// float or numeric string), saturated at [`crate::MAX_LIFETIME`]. Zero,
/// negative, non-finite and non-numeric values give `None`: the layer then
/// uses [`crate::DEFAULT_LIFETIME`].
pub(crate) fn lifetime_from_json(value: &Value) -> Option<Duration> {
    let secs = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if !secs.is_finite() || secs <= 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(
        secs.min(crate::MAX_LIFETIME.as_secs_f64()),
    ))
}

/// Reads whichever of `error`, `error_description`, `detail` and `message`
/// an error body carries. Also understands the variant
/// `{"invalid_grant": "The access token of your Refresh Token does not exist."}`.
pub(crate) fn parse_error_body(body: &[u8]) -> OAuthErrorBody {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
        return OAuthErrorBody::default();
    };
    let text = |k: &str| match obj.get(k) {
        Some(Value::String(s)) => Some(truncate(s)),
        Some(Value::Array(a)) => a.first().and_then(Value::as_str).map(truncate),
        _ => None,
    };
    let mut parsed = OAuthErrorBody {
        error: text("error"),
        error_description: text("error_description"),
        detail: text("detail"),
        message: text("message"),
    };
    if parsed.is_empty() {
        if let Some((k, Value::String(v))) = obj.iter().next() {
            parsed.error = Some(truncate(k));
            parsed.error_description = Some(truncate(v));
        }
    }
    parsed
}

/// Server text ends up in error messages: keep it short.
fn truncate(s: &str) -> String {
    const MAX: usize = 200;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

/// `Retry-After` as a delay from now: either delay-seconds or an HTTP-date.
pub(crate) fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    parse_retry_after_at(headers, SystemTime::now())
}

pub(crate) fn parse_retry_after_at(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use serde_json::json;

    #[test]
    fn parses_the_documented_success_body() {
        let t = parse_token(
            br#"{"access_token":"a.b.c","expires_in":2628288,"token_type":"Bearer","scope":"read write","refresh_token":"r1","extra":1}"#,
        )
        .unwrap();
        assert_eq!(t.access_token().expose_secret(), "a.b.c");
        assert_eq!(t.refresh_token().unwrap().expose_secret(), "r1");
        assert_eq!(t.expires_in(), Some(Duration::from_secs(2628288)));
        assert_eq!(t.scope(), Some("read write"));
    }

    #[test]
    fn optional_fields_may_be_missing() {
        let t = parse_token(br#"{"access_token":"x"}"#).unwrap();
        assert!(t.refresh_token().is_none());
        assert_eq!(t.expires_in(), None);
    }

    #[test]
    fn names_the_problem_with_a_bad_body() {
        let e = parse_token(b"<html>oops</html>").unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::InvalidResponse);
        assert!(e.to_string().contains("not JSON"), "{e}");
        let e = parse_token(br#"{"token":"x"}"#).unwrap_err();
        assert!(e.to_string().contains("no `access_token`"), "{e}");
        let e = parse_token(br#"{"access_token":""}"#).unwrap_err();
        assert!(e.to_string().contains("non-empty string"), "{e}");
        let e = parse_token(b"[1]").unwrap_err();
        assert!(e.to_string().contains("not a JSON object"), "{e}");
    }

    #[test]
    fn expires_in_is_clamped_or_dropped() {
        assert_eq!(lifetime_from_json(&json!(2)), Some(Duration::from_secs(2)));
        assert_eq!(
            lifetime_from_json(&json!(1.5)),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            lifetime_from_json(&json!("30")),
            Some(Duration::from_secs(30))
        );
        assert_eq!(lifetime_from_json(&json!(0)), None);
        assert_eq!(lifetime_from_json(&json!(-5)), None);
        assert_eq!(lifetime_from_json(&json!("soon")), None);
        assert_eq!(lifetime_from_json(&json!(null)), None);
        assert_eq!(lifetime_from_json(&json!(1e300)), Some(crate::MAX_LIFETIME));
        assert_eq!(
            lifetime_from_json(&json!(u64::MAX)),
            Some(crate::MAX_LIFETIME)
        );
    }

    #[test]
    fn error_bodies_in_every_shape() {
        let b = parse_error_body(
            br#"{"error":"invalid_grant","error_description":"Invalid credentials given."}"#,
        );
        assert_eq!(b.to_string(), "invalid_grant: Invalid credentials given.");
        let b = parse_error_body(
            br#"{"invalid_grant": "The access token of your Refresh Token does not exist."}"#,
        );
        assert_eq!(b.error.as_deref(), Some("invalid_grant"));
        let b = parse_error_body(br#"{"detail":"Authentication credentials were not provided."}"#);
        assert_eq!(
            b.detail.as_deref(),
            Some("Authentication credentials were not provided.")
        );
        let b = parse_error_body(br#"{"message":"nope"}"#);
        assert_eq!(b.message.as_deref(), Some("nope"));
        assert!(parse_error_body(b"not json").is_empty());
        let long = format!(r#"{{"error":"{}"}}"#, "x".repeat(1000));
        assert!(parse_error_body(long.as_bytes()).error.unwrap().len() < 210);
    }

    #[test]
    fn retry_after_seconds_and_date() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(7)));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        h.insert(RETRY_AFTER, later.parse().unwrap());
        assert_eq!(parse_retry_after_at(&h, now), Some(Duration::from_secs(30)));
        h.insert(RETRY_AFTER, "garbage".parse().unwrap());
        assert_eq!(parse_retry_after(&h), None);
    }
}
