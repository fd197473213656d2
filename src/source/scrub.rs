//! Keeping the secrets a token request carried out of the server's words.
//!
//! Token endpoints, proxies and firewalls quote what they were sent: an
//! `error_description` with the request body in it, an HTML page showing the
//! form, a header echoing a parameter. Everything the token source surfaces
//! from an answer (error fields, a start of the body, the content type) goes
//! through a [`Scrubber`] first, which knows every secret the request carried.

use std::ops::Range;

/// What a secret is replaced with.
pub(crate) const REDACTED: &str = "[REDACTED]";

/// Secrets at least this long (in characters) are replaced wherever they
/// occur. A shorter one is replaced only where it stands alone (between
/// characters that are not letters or digits, or at either end), so that a
/// two-letter password does not blank out every word containing those
/// letters while `password=pw&` is still caught.
pub(crate) const MIN_ANYWHERE_SECRET_CHARS: usize = 4;

/// The secrets a request carried, in every encoding a server may quote them in.
#[derive(Default)]
pub(crate) struct Scrubber {
    needles: Vec<Needle>,
}

struct Needle {
    text: String,
    standalone_only: bool,
}

impl Scrubber {
    /// Adds `secret` in each encoding it can come back in: raw (as sent in
    /// JSON values and multipart parts), urlencoded with `+` and with `%20`
    /// for spaces, JSON-escaped (also with non-ASCII as `\uXXXX`, as Python
    /// servers write it), Rust-`Debug`-escaped, and HTML-escaped forms of
    /// these. Empty secrets are ignored.
    pub(crate) fn add(&mut self, secret: &str) {
        if secret.is_empty() {
            return;
        }
        let standalone_only = secret.chars().count() < MIN_ANYWHERE_SECRET_CHARS;
        let form = serde_urlencoded::to_string([("", secret)])
            .map(|s| s[1..].to_owned())
            .unwrap_or_default();
        let json = serde_json::to_string(secret)
            .map(|s| s[1..s.len() - 1].to_owned())
            .unwrap_or_default();
        let debug = format!("{secret:?}");
        let mut encoded = vec![
            secret.to_owned(),
            // RFC 3986 section 2.1: percent-encoding's hex digits may come
            // back in either case.
            lowercase_hex(&form.replace('+', "%20")),
            lowercase_hex(&form),
            form.replace('+', "%20"),
            form,
            ascii_json(&json),
            json,
            debug[1..debug.len() - 1].to_owned(),
        ];
        let html: Vec<String> = encoded.iter().map(|s| html_escape(s)).collect();
        encoded.extend(html);
        for text in encoded {
            if !text.is_empty() && !self.needles.iter().any(|n| n.text == text) {
                self.needles.push(Needle {
                    text,
                    standalone_only,
                });
            }
        }
    }

    /// `text` with every occurrence of a secret replaced by [`REDACTED`].
    /// Overlapping occurrences of different secrets become one marker, so no
    /// piece of either is left.
    pub(crate) fn scrub(&self, text: &str) -> String {
        // The value of a secret field, whatever it holds: also a secret the
        // request did not carry (a new token) or one cut short by the server.
        let mut hits: Vec<Range<usize>> = keyed_values(text);
        for needle in &self.needles {
            for (at, found) in text.match_indices(needle.text.as_str()) {
                let range = at..at + found.len();
                if !needle.standalone_only || stands_alone(text, &range) {
                    hits.push(range);
                }
            }
        }
        if hits.is_empty() {
            return text.to_owned();
        }
        hits.sort_by_key(|r| r.start);
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        let mut hits = hits.into_iter().peekable();
        while let Some(mut hit) = hits.next() {
            while let Some(next) = hits.next_if(|n| n.start <= hit.end) {
                hit.end = hit.end.max(next.end);
            }
            out.push_str(&text[copied..hit.start]);
            out.push_str(REDACTED);
            copied = hit.end;
        }
        out.push_str(&text[copied..]);
        out
    }

    /// The start of `text` fit for a one-line message: scrubbed (before
    /// cutting, so that no piece of a secret survives at the cut), then
    /// [`one_line`].
    pub(crate) fn excerpt(&self, text: &str, max_chars: usize) -> String {
        one_line(&self.scrub(text), max_chars)
    }
}

/// Names of fields whose values are secrets, wherever they are quoted.
const SECRET_FIELDS: [&str; 5] = [
    "client_secret",
    "password",
    "refresh_token",
    "access_token",
    "id_token",
];

/// The ranges of values given to [`SECRET_FIELDS`] in `text`, in the forms a
/// request or answer is quoted in: `name=value` (urlencoded), `"name":
/// "value"` (JSON, also escaped inside another JSON string), and
/// `name="name"` followed by a blank line and the value (multipart). A value
/// ends at its closing quote, or, unquoted, at `&`, whitespace, a quote or
/// a delimiter of the text around it (`<`, `>`, `,`, `;`, a bracket);
/// so a cut-off value is covered to its end. Prose (`password: too short`)
/// is left alone: only these exact shapes count.
fn keyed_values(text: &str) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let lower = text.to_ascii_lowercase();
    let mut hits = Vec::new();
    for field in SECRET_FIELDS {
        for (at, _) in lower.match_indices(field) {
            let mut i = at + field.len();
            // The name's closing quote, if any (`"password"`, `\"password\"`).
            let mut quoted_name = false;
            while i < bytes.len() && matches!(bytes[i], b'"' | b'\\') {
                quoted_name = true;
                i += 1;
            }
            let start = if !quoted_name && bytes.get(i) == Some(&b'=') {
                // urlencoded: the value runs to `&`, whitespace or a quote.
                i + 1
            } else if quoted_name {
                let mut j = i;
                while j < bytes.len() && matches!(bytes[j], b' ' | b'\t') {
                    j += 1;
                }
                if bytes.get(j) == Some(&b':') {
                    // JSON: skip to the value's opening quote.
                    j += 1;
                    while j < bytes.len() && matches!(bytes[j], b' ' | b'\t' | b'\\') {
                        j += 1;
                    }
                    if bytes.get(j) != Some(&b'"') {
                        continue;
                    }
                    j + 1
                } else if text[j..].starts_with("\r\n\r\n") {
                    // multipart: the part's body after the blank line.
                    j + 4
                } else {
                    continue;
                }
            } else {
                continue;
            };
            let end = text[start..]
                .find(|c: char| {
                    matches!(
                        c,
                        '&' | '"' | '\\' | '\'' | '<' | '>' | ',' | ';' | ')' | ']' | '}'
                    ) || c.is_whitespace()
                })
                .map_or(text.len(), |n| start + n);
            if end > start {
                hits.push(start..end);
            }
        }
    }
    hits
}

/// `text` with the hex digits of its percent-escapes in lowercase.
fn lowercase_hex(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        out.push_str(&escape.to_ascii_lowercase());
        rest = &rest[at + escape.len()..];
    }
    out.push_str(rest);
    out
}

/// The start of outside text fit for a one-line message or log field: control
/// and bidirectional-formatting characters replaced by spaces, whitespace runs
/// collapsed, and at most `max_chars` characters, with `...` when cut.
pub(crate) fn one_line(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut chars = 0;
    let mut last_space = true;
    for c in text.chars() {
        let c = if c.is_whitespace() || is_unprintable(c) {
            ' '
        } else {
            c
        };
        if c == ' ' && last_space {
            continue;
        }
        if chars == max_chars {
            out.truncate(out.trim_end().len());
            out.push_str("...");
            return out;
        }
        last_space = c == ' ';
        out.push(c);
        chars += 1;
    }
    out.truncate(out.trim_end().len());
    out
}

/// Control characters and the invisible formatting characters that can
/// reorder or hide text in a terminal or log viewer.
fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

fn stands_alone(text: &str, range: &Range<usize>) -> bool {
    let before = text[..range.start].chars().next_back();
    let after = text[range.end..].chars().next();
    !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
}

/// JSON escaping with every non-ASCII character as `\uXXXX` (UTF-16), as
/// Python's `json.dumps` writes by default.
fn ascii_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// HTML escaping as Django's `escape` does it.
fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrubber(secrets: &[&str]) -> Scrubber {
        let mut s = Scrubber::default();
        for secret in secrets {
            s.add(secret);
        }
        s
    }

    #[test]
    fn every_encoding_of_a_secret_is_replaced() {
        let s = scrubber(&["p&ss word=\"é\"/+"]);
        for quoted in [
            "p&ss word=\"é\"/+",
            "p%26ss+word%3D%22%C3%A9%22%2F%2B",
            "p%26ss%20word%3D%22%C3%A9%22%2F%2B",
            r#"p&ss word=\"é\"/+"#,
            r#"p&ss word=\"\u00e9\"/+"#,
            "p&amp;ss word=&quot;é&quot;/+",
        ] {
            assert_eq!(
                s.scrub(&format!("x {quoted} y")),
                "x [REDACTED] y",
                "{quoted}"
            );
        }
    }

    #[test]
    fn the_rest_of_the_text_is_kept() {
        let s = scrubber(&["S3cr3t", "Hunter2"]);
        assert_eq!(
            s.scrub("body: client_secret=S3cr3t&password=Hunter2&x=1"),
            "body: client_secret=[REDACTED]&password=[REDACTED]&x=1"
        );
    }

    #[test]
    fn overlapping_secrets_leave_no_piece_of_either() {
        let s = scrubber(&["abcdef", "defghi"]);
        assert_eq!(s.scrub("1abcdefghi2"), "1[REDACTED]2");
        let s = scrubber(&["abcd", "xxabcdyy"]);
        assert_eq!(s.scrub("-xxabcdyy-"), "-[REDACTED]-");
    }

    #[test]
    fn short_secrets_are_replaced_only_where_they_stand_alone() {
        let s = scrubber(&["pw"]);
        assert_eq!(
            s.scrub("password=pw&username=upward"),
            "password=[REDACTED]&username=upward"
        );
        assert_eq!(s.scrub("pw"), "[REDACTED]");
        assert_eq!(scrubber(&[""]).scrub("anything"), "anything");
    }

    #[test]
    fn excerpts_are_scrubbed_before_they_are_cut_and_are_one_line() {
        let s = scrubber(&["Hunter2Hunter2"]);
        let text = format!("{}Hunter2Hunter2 tail", "a".repeat(10));
        assert_eq!(s.excerpt(&text, 14), "aaaaaaaaaa[RED...");
        assert_eq!(
            s.excerpt("<html>\r\n  <b>Denied</b>\u{202E}\x1b[31m\n</html>", 120),
            "<html> <b>Denied</b> [31m </html>"
        );
    }

    #[test]
    fn values_of_secret_fields_are_redacted_even_when_cut_or_unknown() {
        let s = Scrubber::default();
        // A server that cut the echo 24 characters into the secret.
        assert_eq!(
            s.scrub(
                "body: grant_type=password&client_id=id&client_secret=cl1ent-S3cret-Zq9xW7vB4n..."
            ),
            "body: grant_type=password&client_id=id&client_secret=[REDACTED]"
        );
        // A token the request did not carry, in a body that did not parse.
        assert_eq!(
            s.scrub("\u{feff}{\"access_token\" : \"NewAcc3ss\", \"expires_in\": 1e400}"),
            "\u{feff}{\"access_token\" : \"[REDACTED]\", \"expires_in\": 1e400}"
        );
        // JSON quoted inside a JSON string.
        assert_eq!(
            s.scrub(r#"{\"password\":\"Hunter2\"}"#),
            r#"{\"password\":\"[REDACTED]\"}"#
        );
        // A multipart part.
        assert_eq!(
            s.scrub("name=\"refresh_token\"\r\n\r\nr-123\r\n--b"),
            "name=\"refresh_token\"\r\n\r\n[REDACTED]\r\n--b"
        );
        // Prose about a field is kept.
        for prose in [
            "password: too short",
            "the password is wrong",
            "invalid password=",
            "\"password\" is required",
        ] {
            assert_eq!(s.scrub(prose), prose);
        }
    }

    #[test]
    fn percent_escapes_in_lowercase_are_caught() {
        let mut s = Scrubber::default();
        s.add("pässwörd/ü Hunter2");
        let echoed = "bad form: password=p%c3%a4ssw%c3%b6rd%2f%c3%bc+Hunter2 and p%C3%A4ssw%C3%B6rd%2F%C3%BC%20Hunter2";
        let scrubbed = s.scrub(&format!("x {echoed}"));
        assert!(!scrubbed.contains("Hunter2"), "{scrubbed}");
        assert_eq!(scrubbed, "x bad form: password=[REDACTED] and [REDACTED]");
    }
}
