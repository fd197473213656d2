//! Reading a `401`'s `WWW-Authenticate` challenge: can a new token fix it?
//!
//! RFC 6750 section 3.1 names three errors a resource server puts in its
//! Bearer challenge: `invalid_token` (expired, revoked, malformed: a new
//! token fixes it), `insufficient_scope` and `invalid_request` (a new token
//! of the same grant does not). A challenge without an `error` (Wokelo's
//! answer to a request without a token, or a server that says nothing) and
//! a `401` without any challenge are taken as a stale token.

use http::{header::WWW_AUTHENTICATE, HeaderMap};

/// Whether a new token may fix the `401` with these headers: `false` only
/// when a Bearer challenge names an error other than `invalid_token`.
pub(crate) fn new_token_may_help(headers: &HeaderMap) -> bool {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(bearer_error)
        .all(|error| error.eq_ignore_ascii_case("invalid_token"))
}

/// The `error` parameter of a Bearer challenge in this header value, if the
/// value holds a Bearer challenge with one.
///
/// A header value may list several challenges (`Basic realm="x", Bearer
/// error="invalid_token"`); parameters belong to the challenge whose scheme
/// came last before them. Quoted values may contain commas and escaped
/// quotes.
fn bearer_error(value: &str) -> Option<String> {
    let mut in_bearer = false;
    for item in split_items(value) {
        let item = item.trim();
        let param = match item.split_once(char::is_whitespace) {
            // `Scheme param=value`: a new challenge with its first parameter.
            Some((scheme, rest)) if !scheme.contains('=') => {
                in_bearer = scheme.eq_ignore_ascii_case("bearer");
                rest.trim()
            }
            _ if !item.contains('=') => {
                // A scheme alone (`Bearer`).
                in_bearer = item.eq_ignore_ascii_case("bearer");
                continue;
            }
            _ => item,
        };
        if !in_bearer {
            continue;
        }
        if let Some((name, value)) = param.split_once('=') {
            if name.trim().eq_ignore_ascii_case("error") {
                return Some(unquote(value.trim()));
            }
        }
    }
    None
}

/// Splits at commas outside quoted strings.
fn split_items(value: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                items.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&value[start..]);
    items
}

fn unquote(value: &str) -> String {
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(WWW_AUTHENTICATE, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn wokelo_challenges_are_fixed_by_a_new_token() {
        for v in [
            r#"Bearer realm="api",error="invalid_token",error_description="The access token has expired.""#,
            r#"Bearer realm="api",error="invalid_token",error_description="The access token is invalid.""#,
            r#"Bearer realm="api""#,
            "Bearer",
            r#"bearer ERROR=invalid_token"#,
        ] {
            assert!(new_token_may_help(&headers(&[v])), "{v}");
        }
        assert!(new_token_may_help(&HeaderMap::new()));
    }

    #[test]
    fn scope_and_request_errors_are_not() {
        for v in [
            r#"Bearer error="insufficient_scope", scope="admin""#,
            r#"Bearer realm="api", error="invalid_request", error_description="a, b""#,
            r#"Basic realm="x", Bearer error="insufficient_scope""#,
            r#"Bearer realm="say \"hi\", ok", error=insufficient_scope"#,
        ] {
            assert!(!new_token_may_help(&headers(&[v])), "{v}");
        }
        assert!(!new_token_may_help(&headers(&[
            r#"Basic realm="x""#,
            r#"Bearer error="insufficient_scope""#
        ])));
    }

    #[test]
    fn errors_of_other_schemes_do_not_count() {
        assert!(new_token_may_help(&headers(&[
            r#"Basic error="insufficient_scope", Bearer realm="api""#
        ])));
        assert_eq!(
            bearer_error(r#"Bearer realm="a,b", error="insufficient_scope""#).as_deref(),
            Some("insufficient_scope")
        );
    }
}
