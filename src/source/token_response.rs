//! Reading the token endpoint's answers: the success body, `Retry-After`,
//! and which answers are failures (told apart in [`super::oauth_error`]).

use std::time::{Duration, SystemTime};

use http::{header::RETRY_AFTER, HeaderMap, StatusCode};
use serde_json::Value;

use super::{oauth_error, password_grant::Grant, scrub::Scrubber, MAX_RETRY_AFTER};
use crate::{Token, TokenError, TokenErrorKind};

/// What an answer of the token endpoint means: a token, or why there is none.
///
/// `scrubber` knows the secrets the request carried; the tokens in the
/// answer are added to it, so that no text quoted from the answer shows them.
///
/// # Errors
///
/// A non-success status, a success whose body is an OAuth error (some servers
/// answer `200 {"error": ...}`), or a success without a usable token; see
/// [`super::oauth_error`] for the kinds.
pub(crate) fn interpret(
    grant: Grant,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    mut scrubber: Scrubber,
) -> Result<Token, TokenError> {
    // A byte-order mark, as some .NET servers send, is not part of the JSON.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let json = serde_json::from_slice::<Value>(body);
    if let Ok(Value::Object(obj)) = &json {
        for key in ["access_token", "refresh_token", "id_token"] {
            if let Some(Value::String(secret)) = obj.get(key) {
                scrubber.add(secret);
            }
        }
    }
    let oauth_error = matches!(&json, Ok(Value::Object(obj)) if oauth_error::is_error_object(obj));
    let outcome = match json {
        _ if !status.is_success() || oauth_error => Err(oauth_error::failure(
            grant, status, headers, body, &scrubber,
        )),
        // No token: whatever the server said instead (`detail`, `message`)
        // goes with the error.
        Ok(value) => token_from_json(&value)
            .map_err(|e| e.with_body(oauth_error::parse_error_body(body, &scrubber))),
        Err(e) => Err(not_json(
            &e,
            &format!(
                "{}, {}",
                oauth_error::content_type(headers, &scrubber),
                oauth_error::body_excerpt(body, &scrubber)
            ),
        )),
    };
    outcome.map_err(|e| {
        let e = e.with_status(status);
        match parse_retry_after(headers) {
            Some(after) => e.with_retry_after(after),
            None => e,
        }
    })
}

/// Parses a success body into a [`Token`], as [`interpret`] does for a `200`
/// (without the content type and body excerpt): for the property tests.
///
/// # Errors
///
/// [`TokenErrorKind::InvalidResponse`] when the body is not a JSON object or
/// has no non-empty string `access_token`.
#[cfg(test)]
pub(crate) fn parse_token(body: &[u8]) -> Result<Token, TokenError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| not_json(&e, &format!("{} bytes", body.len())))?;
    token_from_json(&value)
}

fn invalid(why: &str) -> TokenError {
    TokenError::new(
        TokenErrorKind::InvalidResponse,
        format!("the token endpoint answered with success but {why}; check WOKELO_BASE_URL points at the Wokelo API"),
    )
}

/// `what` describes the body; the parser's complaint is added to it.
fn not_json(e: &serde_json::Error, what: &str) -> TokenError {
    invalid(&format!(
        "the body is not JSON ({what}; {:?} error at line {} column {})",
        e.classify(),
        e.line(),
        e.column()
    ))
}

fn token_from_json(value: &Value) -> Result<Token, TokenError> {
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

/// The fields of an error body, with no secrets to scrub: for the property
/// tests, which feed it arbitrary bytes.
#[cfg(test)]
pub(crate) fn parse_error_body(body: &[u8]) -> crate::OAuthErrorBody {
    oauth_error::parse_error_body(body, &Scrubber::default())
}

/// The fields of an API answer's error body (`error`, `error_description`,
/// `detail`, `message`), each on one line and cut short, with `secrets`
/// (the access token the request carried) scrubbed: for the ready client.
#[cfg(feature = "rustls")]
pub(crate) fn parse_api_error_body<'a>(
    body: &[u8],
    secrets: impl IntoIterator<Item = &'a str>,
) -> crate::OAuthErrorBody {
    let mut scrubber = Scrubber::default();
    for secret in secrets {
        scrubber.add(secret);
    }
    oauth_error::parse_error_body(body, &scrubber)
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
    // A positive lifetime too small to represent is the shortest one, not
    // "none" (which would mean the one-hour default).
    Some(
        Duration::from_secs_f64(secs.min(crate::MAX_LIFETIME.as_secs_f64()))
            .max(Duration::from_nanos(1)),
    )
}

/// `Retry-After` as a delay from now: either delay-seconds or an HTTP-date
/// (RFC 9110 section 10.2.3), at most [`MAX_RETRY_AFTER`]. A date in the past
/// is zero; anything else (negative, fractional, empty, garbage) is `None`.
pub(crate) fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    parse_retry_after_at(headers, SystemTime::now())
}

pub(crate) fn parse_retry_after_at(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    Some(parse_retry_after_unbounded_at(headers, now)?.min(MAX_RETRY_AFTER))
}

/// [`parse_retry_after`] without the [`MAX_RETRY_AFTER`] cap, saturating at
/// [`Duration::MAX`]: for [`WokeloRetryPolicy`](crate::WokeloRetryPolicy),
/// which returns an answer whose `Retry-After` is longer than it may wait
/// rather than waiting less than the server asked.
pub(crate) fn parse_retry_after_unbounded(headers: &HeaderMap) -> Option<Duration> {
    parse_retry_after_unbounded_at(headers, SystemTime::now())
}

fn parse_retry_after_unbounded_at(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let delay = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // delay-seconds is 1*DIGIT: more digits than a u64 holds is still a
        // (very long) delay, clamped below like any other.
        value
            .parse::<u64>()
            .map_or(Duration::MAX, Duration::from_secs)
    } else {
        // Subtracting two SystemTimes cannot overflow; adding to one can,
        // which is why the date is compared and never added.
        httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
    };
    Some(delay)
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

    fn retry_after(value: &str) -> Option<Duration> {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, value.parse().unwrap());
        parse_retry_after_at(&h, now)
    }

    #[test]
    fn retry_after_seconds_and_date() {
        assert_eq!(retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(" 5 "), Some(Duration::from_secs(5)));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(retry_after(&later), Some(Duration::from_secs(30)));
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(7)));
    }

    #[test]
    fn retry_after_is_bounded_and_junk_is_none() {
        for huge in [
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999999",
            "9999999999",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            assert_eq!(retry_after(huge), Some(MAX_RETRY_AFTER), "{huge}");
        }
        assert_eq!(
            retry_after("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("60"), Some(MAX_RETRY_AFTER));
        for junk in ["-1", "1.5", "", "+5", "5s", "garbage", "0x10"] {
            assert_eq!(retry_after(junk), None, "{junk:?}");
        }
        let mut h = HeaderMap::new();
        h.insert(
            RETRY_AFTER,
            http::HeaderValue::from_bytes(b"\xff5").unwrap(),
        );
        assert_eq!(parse_retry_after(&h), None);
    }

    #[test]
    fn a_success_without_a_token_keeps_what_the_server_said() {
        let e = interpret(
            Grant::Password,
            http::StatusCode::OK,
            &HeaderMap::new(),
            br#"{"detail":"Account locked until 12:00 UTC"}"#,
            Scrubber::default(),
        )
        .unwrap_err();
        assert_eq!(e.kind(), TokenErrorKind::InvalidResponse);
        assert!(
            e.to_string().contains("Account locked until 12:00 UTC"),
            "{e}"
        );
    }

    #[test]
    fn a_byte_order_mark_before_the_json_is_ignored() {
        let token = interpret(
            Grant::Password,
            http::StatusCode::OK,
            &HeaderMap::new(),
            b"\xEF\xBB\xBF{\"access_token\":\"a1\",\"expires_in\":60}",
            Scrubber::default(),
        )
        .unwrap();
        assert_eq!(token.access_token().expose_secret(), "a1");
    }

    #[test]
    fn an_unparsable_success_never_quotes_its_tokens() {
        for body in [
            "{\"access_token\":\"NewAcc3ssTok3n\",\"expires_in\":1e400}",
            ")]}'\n{\"access_token\":\"NewAcc3ssTok3n\",\"refresh_token\":\"R3fresh\"}",
        ] {
            let e = interpret(
                Grant::Password,
                http::StatusCode::OK,
                &HeaderMap::new(),
                body.as_bytes(),
                Scrubber::default(),
            )
            .unwrap_err();
            let text = format!("{e} {e:?}");
            assert!(
                !text.contains("NewAcc3ss") && !text.contains("R3fresh"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_tiny_positive_lifetime_is_not_taken_for_none() {
        assert!(lifetime_from_json(&json!(1e-300)).is_some());
    }
}
