//! What a failed token request means: the OAuth error body (RFC 6749
//! section 5.2) when the OAuth server answered, and what else may answer
//! instead (a proxy, a firewall, a wrong base URL).
//!
//! The rule, by status and body:
//!
//! | answer | kind |
//! |---|---|
//! | `408`, `429`, `5xx` (any body, an HTML page from a proxy too) | [`Unavailable`](TokenErrorKind::Unavailable) |
//! | `invalid_grant`, `invalid_client`, `unauthorized_client` | [`CredentialsRejected`](TokenErrorKind::CredentialsRejected): the client id, secret, username, password or refresh token is wrong or not allowed |
//! | `invalid_request`, `unsupported_grant_type`, `invalid_scope` | [`Configuration`](TokenErrorKind::Configuration): the request's shape does not suit the server (encoding, grant, scope), which new credentials would not fix |
//! | `server_error`, `temporarily_unavailable` | [`Unavailable`](TokenErrorKind::Unavailable) |
//! | another `error` code | [`InvalidResponse`](TokenErrorKind::InvalidResponse), naming the code |
//! | any other `4xx`, or a `200` without a token | [`InvalidResponse`](TokenErrorKind::InvalidResponse), naming the content type and the start of the body |
//!
//! An OAuth code counts in a `4xx` and also in a `200` (some servers answer
//! every request with `200`). Everything quoted from the answer is scrubbed
//! of the request's secrets first.

use http::{header::CONTENT_TYPE, HeaderMap, StatusCode};
use serde_json::{Map, Value};

use super::{password_grant::Grant, scrub::Scrubber};
use crate::{error::OAuthErrorBody, TokenError, TokenErrorKind};

/// The longest server field kept, in characters.
const MAX_FIELD_CHARS: usize = 200;
/// The longest start of a body quoted in a message, in characters.
pub(super) const MAX_EXCERPT_CHARS: usize = 120;
/// The longest content type quoted in a message, in characters.
const MAX_CONTENT_TYPE_CHARS: usize = 60;

/// The error codes of RFC 6749 section 5.2, plus the two of section 4.1.2.1
/// that some servers also send from the token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Code {
    InvalidGrant,
    InvalidClient,
    UnauthorizedClient,
    InvalidRequest,
    UnsupportedGrantType,
    InvalidScope,
    ServerError,
    TemporarilyUnavailable,
}

impl Code {
    fn parse(code: &str) -> Option<Self> {
        Some(match code {
            "invalid_grant" => Self::InvalidGrant,
            "invalid_client" => Self::InvalidClient,
            "unauthorized_client" => Self::UnauthorizedClient,
            "invalid_request" => Self::InvalidRequest,
            "unsupported_grant_type" => Self::UnsupportedGrantType,
            "invalid_scope" => Self::InvalidScope,
            "server_error" => Self::ServerError,
            "temporarily_unavailable" => Self::TemporarilyUnavailable,
            _ => return None,
        })
    }
}

/// Whether a `200` body is an OAuth error rather than a token: it has a
/// string `error` field.
pub(super) fn is_error_object(obj: &Map<String, Value>) -> bool {
    matches!(obj.get("error"), Some(Value::String(s)) if !s.is_empty())
}

/// The error for an answer that brought no token: `status` is not a success,
/// or is a success whose body is an OAuth error.
pub(super) fn failure(
    grant: Grant,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    scrubber: &Scrubber,
) -> TokenError {
    let fields = parse_error_body(body, scrubber);
    let code = fields.error.as_deref().and_then(Code::parse);
    let transient = status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error();
    let from_oauth_server = status.is_client_error() || status.is_success();
    let (kind, message) = match code {
        _ if transient => (
            TokenErrorKind::Unavailable,
            format!(
                "the token endpoint is {}{}",
                if status.is_server_error() { "failing" } else { "busy" },
                unless_oauth(&fields, headers, body, scrubber),
            ),
        ),
        Some(code) if from_oauth_server => oauth_failure(grant, code),
        None if from_oauth_server && fields.error.is_some() => (
            TokenErrorKind::InvalidResponse,
            format!(
                "the token endpoint answered with the unknown OAuth error code `{}`; check WOKELO_BASE_URL points at the Wokelo API",
                fields.error.as_deref().unwrap_or_default()
            ),
        ),
        _ => (
            TokenErrorKind::InvalidResponse,
            format!(
                "the token endpoint answered{}; check WOKELO_BASE_URL points at the Wokelo API and any proxy or firewall in between",
                unless_oauth(&fields, headers, body, scrubber)
            ),
        ),
    };
    TokenError::new(kind, message)
        .with_status(status)
        .with_body(fields)
}

/// Names what came instead of an OAuth error, unless the body's fields say
/// it (then [`TokenError`]'s `Display` shows them).
fn unless_oauth(
    fields: &OAuthErrorBody,
    headers: &HeaderMap,
    body: &[u8],
    scrubber: &Scrubber,
) -> String {
    if !fields.is_empty() {
        return String::new();
    }
    format!(
        " with {}, not an OAuth error: {}",
        content_type(headers, scrubber),
        body_excerpt(body, scrubber)
    )
}

/// The content type, quoted, or `no content type`.
pub(super) fn content_type(headers: &HeaderMap, scrubber: &Scrubber) -> String {
    match headers.get(CONTENT_TYPE) {
        Some(value) => format!(
            "{:?}",
            scrubber.excerpt(
                &String::from_utf8_lossy(value.as_bytes()),
                MAX_CONTENT_TYPE_CHARS
            )
        ),
        None => "no content type".to_owned(),
    }
}

/// The start of the body, scrubbed and quoted, or `an empty body`.
pub(super) fn body_excerpt(body: &[u8], scrubber: &Scrubber) -> String {
    let text = scrubber.excerpt(&String::from_utf8_lossy(body), MAX_EXCERPT_CHARS);
    if text.is_empty() {
        "an empty body".to_owned()
    } else {
        format!("{} bytes starting {text:?}", body.len())
    }
}

fn oauth_failure(grant: Grant, code: Code) -> (TokenErrorKind, String) {
    use TokenErrorKind::{Configuration, CredentialsRejected, Unavailable};
    let grant = grant.as_str();
    let (kind, message) = match code {
        Code::InvalidClient => (
            CredentialsRejected,
            "the token endpoint rejected the client credentials; check WOKELO_CLIENT_ID and WOKELO_CLIENT_SECRET",
        ),
        Code::UnauthorizedClient => (
            CredentialsRejected,
            "the token endpoint does not allow this client the grant; check WOKELO_CLIENT_ID and WOKELO_CLIENT_SECRET",
        ),
        Code::InvalidGrant if grant == "refresh_token" => (
            CredentialsRejected,
            "the token endpoint refused the refresh token",
        ),
        Code::InvalidGrant => (
            CredentialsRejected,
            "the token endpoint rejected the credentials; check WOKELO_USERNAME and WOKELO_PASSWORD",
        ),
        Code::InvalidRequest => (
            Configuration,
            "the token endpoint could not use the request; check WOKELO_BASE_URL points at the Wokelo API and try another token request encoding (PasswordGrant::with_encoding)",
        ),
        Code::UnsupportedGrantType => (
            Configuration,
            "the token endpoint does not support the grant; check WOKELO_BASE_URL points at the Wokelo API",
        ),
        Code::InvalidScope => (
            Configuration,
            "the token endpoint refused the scope; ask Wokelo which scopes the client may use",
        ),
        Code::ServerError | Code::TemporarilyUnavailable => {
            (Unavailable, "the token endpoint reported a temporary failure")
        }
    };
    // The grant goes with what happened, before what to do about it.
    let message = match message.split_once("; ") {
        Some((what, todo)) => format!("{what} ({grant} grant); {todo}"),
        None => format!("{message} ({grant} grant)"),
    };
    (kind, message)
}

/// Reads whichever of `error`, `error_description`, `detail` and `message`
/// an error body carries, each scrubbed, on one line and at most
/// [`MAX_FIELD_CHARS`] long. Also understands the variant
/// `{"invalid_grant": "The access token of your Refresh Token does not exist."}`
/// (an object whose only key is an OAuth error code).
pub(super) fn parse_error_body(body: &[u8], scrubber: &Scrubber) -> OAuthErrorBody {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
        return OAuthErrorBody::default();
    };
    let clean = |s: &str| scrubber.excerpt(s, MAX_FIELD_CHARS);
    let text = |k: &str| match obj.get(k) {
        Some(Value::String(s)) => Some(clean(s)),
        Some(Value::Array(a)) => a.first().and_then(Value::as_str).map(clean),
        _ => None,
    };
    let mut parsed = OAuthErrorBody {
        error: text("error"),
        error_description: text("error_description"),
        detail: text("detail"),
        message: text("message"),
    };
    if parsed.is_empty() && obj.len() == 1 {
        if let Some((k, Value::String(v))) = obj.iter().next() {
            if Code::parse(k).is_some() {
                parsed.error = Some(k.clone());
                parsed.error_description = Some(clean(v));
            }
        }
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrubber() -> Scrubber {
        let mut s = Scrubber::default();
        s.add("S3cr3t");
        s.add("Hunter2");
        s
    }

    fn fail(status: u16, content_type: &str, body: &str) -> TokenError {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, content_type.parse().unwrap());
        failure(
            Grant::Password,
            StatusCode::from_u16(status).unwrap(),
            &headers,
            body.as_bytes(),
            &scrubber(),
        )
    }

    #[test]
    fn an_echoed_request_body_is_scrubbed_and_the_rest_kept() {
        let e = fail(
            400,
            "application/json",
            r#"{"error":"invalid_request","error_description":"Could not process request body: grant_type=password&client_id=id&client_secret=S3cr3t&username=u%40example.com&password=Hunter2"}"#,
        );
        assert_eq!(e.kind(), TokenErrorKind::Configuration);
        assert_eq!(
            e.body().unwrap().error_description.as_deref(),
            Some("Could not process request body: grant_type=password&client_id=id&client_secret=[REDACTED]&username=u%40example.com&password=[REDACTED]")
        );
        let shown = format!("{e} {e:?}");
        assert!(
            !shown.contains("S3cr3t") && !shown.contains("Hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn credential_codes_are_rejections_and_protocol_codes_configuration() {
        for (code, kind) in [
            ("invalid_grant", TokenErrorKind::CredentialsRejected),
            ("invalid_client", TokenErrorKind::CredentialsRejected),
            ("unauthorized_client", TokenErrorKind::CredentialsRejected),
            ("invalid_request", TokenErrorKind::Configuration),
            ("unsupported_grant_type", TokenErrorKind::Configuration),
            ("invalid_scope", TokenErrorKind::Configuration),
            ("temporarily_unavailable", TokenErrorKind::Unavailable),
            ("server_error", TokenErrorKind::Unavailable),
            ("access_denied", TokenErrorKind::InvalidResponse),
        ] {
            for status in [200, 400, 401] {
                let e = fail(
                    status,
                    "application/json",
                    &format!(r#"{{"error":"{code}"}}"#),
                );
                assert_eq!(e.kind(), kind, "{code} with {status}");
                assert!(e.to_string().contains(code), "{e}");
            }
        }
    }

    #[test]
    fn the_error_code_as_key_variant_is_an_oauth_error() {
        let e = fail(
            400,
            "application/json",
            r#"{"invalid_grant": "The access token of your Refresh Token does not exist."}"#,
        );
        assert_eq!(e.kind(), TokenErrorKind::CredentialsRejected);
        assert_eq!(
            e.body().unwrap().to_string(),
            "invalid_grant: The access token of your Refresh Token does not exist."
        );
        let other = parse_error_body(br#"{"foo":"bar"}"#, &scrubber());
        assert!(other.is_empty(), "{other:?}");
    }

    #[test]
    fn an_html_page_is_named_not_taken_for_a_credentials_rejection() {
        let page = "<html>\n<title>403 Forbidden</title>\n<p>Request blocked: client_secret=S3cr3t</p></html>";
        let e = fail(403, "text/html; charset=utf-8", page);
        assert_eq!(e.kind(), TokenErrorKind::InvalidResponse);
        let shown = e.to_string();
        assert!(
            shown.contains(r#"with "text/html; charset=utf-8", not an OAuth error: 87 bytes starting "<html> <title>403 Forbidden</title> <p>Request blocked: client_secret=[REDACTED]</p></html>""#),
            "{shown}"
        );
        assert!(shown.contains("(HTTP 403)"), "{shown}");
        for status in [502, 503, 504] {
            let e = fail(status, "text/html", page);
            assert_eq!(e.kind(), TokenErrorKind::Unavailable, "{status}");
            assert!(e.to_string().contains("403 Forbidden"), "{e}");
        }
    }

    #[test]
    fn json_without_a_code_is_shown_but_is_no_rejection() {
        let e = fail(
            401,
            "application/json",
            r#"{"detail":"Authentication credentials were not provided."}"#,
        );
        assert_eq!(e.kind(), TokenErrorKind::InvalidResponse);
        assert!(
            e.to_string()
                .contains("Authentication credentials were not provided."),
            "{e}"
        );
        let e = fail(400, "text/plain", "");
        assert!(e.to_string().contains("an empty body"), "{e}");
    }

    #[test]
    fn long_fields_and_control_characters_are_tamed() {
        let long = format!(
            r#"{{"error":"invalid_grant","error_description":"{}\nINFO forged"}}"#,
            "x".repeat(1000)
        );
        let b = parse_error_body(long.as_bytes(), &scrubber());
        let description = b.error_description.unwrap();
        assert!(
            description.chars().count() <= MAX_FIELD_CHARS + 3,
            "{description}"
        );
        assert!(!description.contains('\n'));
    }
}
