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
        // Quoted strings may hold text that is not ASCII (RFC 9110 allows
        // obs-text): read the value lossily rather than skip it.
        .flat_map(|value| bearer_errors(&String::from_utf8_lossy(value.as_bytes())))
        .all(|error| error.eq_ignore_ascii_case("invalid_token"))
}

/// The `error` parameters of the Bearer challenges in this header value.
///
/// A header value may list several challenges (`Basic realm="x", Bearer
/// error="invalid_token"`); parameters belong to the challenge whose scheme
/// came last before them. An item is a new challenge when it starts with a
/// word not followed by `=` (RFC 9110 section 11.6.1 allows spaces around
/// `=`); empty items (`, ,`) are skipped. Quoted values may contain commas
/// and escaped quotes.
fn bearer_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let mut in_bearer = false;
    for item in split_items(value) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let word_end = item
            .find(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or(item.len());
        let after_word = item[word_end..].trim_start();
        let param = if after_word.starts_with('=') {
            item
        } else {
            // `Scheme` or `Scheme param=value`.
            in_bearer = item[..word_end].eq_ignore_ascii_case("bearer");
            after_word
        };
        if !in_bearer || param.is_empty() {
            continue;
        }
        if let Some((name, value)) = param.split_once('=') {
            if name.trim().eq_ignore_ascii_case("error") {
                errors.push(unquote(value.trim()));
            }
        }
    }
    errors
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
            bearer_errors(r#"Bearer realm="a,b", error="insufficient_scope""#),
            ["insufficient_scope"]
        );
    }

    #[test]
    fn odd_spacing_empty_items_text_and_several_challenges() {
        for v in [
            r#"Bearer realm="api", error = "insufficient_scope""#,
            r#"Bearer realm="api", , error="insufficient_scope""#,
            r#"Bearer error="invalid_token", Bearer error="insufficient_scope""#,
            "Bearer   error=insufficient_scope",
        ] {
            assert!(!new_token_may_help(&headers(&[v])), "{v}");
        }
        let mut h = HeaderMap::new();
        h.insert(
            WWW_AUTHENTICATE,
            http::HeaderValue::from_bytes(
                "Bearer error=\"insufficient_scope\", error_description=\"Zugriff f\u{fc}r Admins\""
                    .as_bytes(),
            )
            .unwrap(),
        );
        assert!(!new_token_may_help(&h));
    }
}
