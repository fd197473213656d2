//! Token-request body parsing: `application/x-www-form-urlencoded`,
//! `application/json` and `multipart/form-data`, chosen by `Content-Type`.
//!
//! The multipart parser is deliberately small: bodies are a handful of text
//! fields, so it works on the whole buffered body.

use std::collections::HashMap;

use serde_json::Value;

/// A token-request body encoding, with what parsing it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    Form,
    Json,
    Multipart { boundary: String },
}

/// The fields of a token request; for repeated names the first one wins.
pub(crate) type Params = HashMap<String, String>;

impl Encoding {
    /// The encoding a `Content-Type` header value names, `None` if unsupported
    /// (or multipart without a boundary).
    pub(crate) fn from_content_type(content_type: &str) -> Option<Encoding> {
        let mut pieces = content_type.split(';');
        let media_type = pieces.next()?.trim().to_ascii_lowercase();
        match media_type.as_str() {
            "application/x-www-form-urlencoded" => Some(Encoding::Form),
            "application/json" => Some(Encoding::Json),
            "multipart/form-data" => {
                let boundary = parameters(pieces)
                    .find(|(name, _)| name.eq_ignore_ascii_case("boundary"))
                    .map(|(_, value)| value)?;
                if boundary.is_empty() || boundary.len() > 70 {
                    return None;
                }
                Some(Encoding::Multipart { boundary })
            }
            _ => None,
        }
    }

    /// The name [`MockStats::token_encodings`](super::MockStats::token_encodings) counts.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Encoding::Form => "form",
            Encoding::Json => "json",
            Encoding::Multipart { .. } => "multipart",
        }
    }

    /// The body's fields, `None` if it does not parse.
    pub(crate) fn parse(&self, body: &[u8]) -> Option<Params> {
        match self {
            Encoding::Form => parse_form(body),
            Encoding::Json => parse_json(body),
            Encoding::Multipart { boundary } => parse_multipart(boundary, body),
        }
    }
}

fn collect(fields: impl IntoIterator<Item = (String, String)>) -> Params {
    let mut params = Params::new();
    for (name, value) in fields {
        params.entry(name).or_insert(value);
    }
    params
}

fn parse_form(body: &[u8]) -> Option<Params> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .ok()
        .map(collect)
}

/// A JSON object; scalar values are taken as their text (`1` -> `"1"`), nested
/// values and nulls are ignored.
fn parse_json(body: &[u8]) -> Option<Params> {
    let Value::Object(object) = serde_json::from_slice(body).ok()? else {
        return None;
    };
    let fields = object.into_iter().filter_map(|(name, value)| match value {
        Value::String(text) => Some((name, text)),
        Value::Number(number) => Some((name, number.to_string())),
        Value::Bool(flag) => Some((name, flag.to_string())),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    });
    Some(collect(fields))
}

/// `; name=value; name="quoted \" value"` parameters of a header value.
fn parameters<'a>(pieces: impl Iterator<Item = &'a str>) -> impl Iterator<Item = (String, String)> {
    // Re-join and re-split so a `;` inside a quoted value survives.
    let rest: Vec<&str> = pieces.collect();
    split_parameters(&rest.join(";")).into_iter()
}

fn split_parameters(text: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        // Skip separators and whitespace before a name.
        while chars.next_if(|c| *c == ';' || c.is_whitespace()).is_some() {}
        let mut name = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && *c != ';') {
            name.push(c);
        }
        if name.is_empty() && chars.peek().is_none() {
            return params;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'=').is_some() {
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            if chars.next_if_eq(&'"').is_some() {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
                while chars.next_if(|c| *c != ';').is_some() {}
            } else {
                while let Some(c) = chars.next_if(|c| *c != ';') {
                    value.push(c);
                }
                value.truncate(value.trim_end().len());
            }
        }
        params.push((name.trim().to_owned(), value));
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|at| at + from)
}

/// Skips one line ending (`\r\n` or a bare `\n`) at `at`.
fn skip_newline(body: &[u8], at: usize) -> Option<usize> {
    match body.get(at..)? {
        [b'\r', b'\n', ..] => Some(at + 2),
        [b'\n', ..] => Some(at + 1),
        _ => None,
    }
}

/// RFC 7578 `multipart/form-data`: the preamble before the first delimiter and
/// the epilogue after the closing one are ignored; a missing closing delimiter
/// is an error.
fn parse_multipart(boundary: &str, body: &[u8]) -> Option<Params> {
    let delimiter = format!("--{boundary}").into_bytes();
    let mut fields = Vec::new();
    let mut at = find(body, &delimiter, 0)? + delimiter.len();
    loop {
        if body.get(at..at + 2) == Some(b"--") {
            return Some(collect(fields));
        }
        // Transport padding (spaces, tabs) may follow a delimiter.
        while matches!(body.get(at), Some(b' ' | b'\t')) {
            at += 1;
        }
        let headers_start = skip_newline(body, at)?;
        let (headers_end, content_start) = find_blank_line(body, headers_start)?;
        let headers = std::str::from_utf8(&body[headers_start..headers_end]).ok()?;
        // A delimiter only counts at the start of a line.
        let mut search = content_start;
        let next = loop {
            let candidate = find(body, &delimiter, search)?;
            if candidate == content_start || body[candidate - 1] == b'\n' {
                break candidate;
            }
            search = candidate + 1;
        };
        // The line ending before the delimiter belongs to the delimiter.
        let mut content_end = next;
        if content_end > content_start {
            content_end -= 1;
            if content_end > content_start && body[content_end - 1] == b'\r' {
                content_end -= 1;
            }
        }
        let name = field_name(headers)?;
        let value = String::from_utf8_lossy(&body[content_start..content_end]).into_owned();
        fields.push((name, value));
        at = next + delimiter.len();
    }
}

/// Finds the empty line ending a part's headers (which may be none at all):
/// returns where the headers end and where the content starts.
fn find_blank_line(body: &[u8], from: usize) -> Option<(usize, usize)> {
    if let Some(start) = skip_newline(body, from) {
        return Some((from, start));
    }
    let crlf = find(body, b"\r\n\r\n", from).map(|at| (at, at + 4));
    let lf = find(body, b"\n\n", from).map(|at| (at, at + 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// The `name` of a part's `Content-Disposition: form-data; name="..."`.
fn field_name(headers: &str) -> Option<String> {
    headers.lines().find_map(|line| {
        let (header, value) = line.split_once(':')?;
        if !header.trim().eq_ignore_ascii_case("content-disposition") {
            return None;
        }
        let mut pieces = value.split(';');
        if !pieces.next()?.trim().eq_ignore_ascii_case("form-data") {
            return None;
        }
        parameters(pieces)
            .find(|(param, _)| param.eq_ignore_ascii_case("name"))
            .map(|(_, name)| name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn multipart(boundary: &str, body: &str) -> Option<Params> {
        Encoding::from_content_type(&format!("multipart/form-data; boundary={boundary}"))
            .unwrap()
            .parse(body.as_bytes())
    }

    #[test]
    fn content_types() {
        assert_eq!(
            Encoding::from_content_type("application/x-www-form-urlencoded; charset=UTF-8"),
            Some(Encoding::Form)
        );
        assert_eq!(
            Encoding::from_content_type("Application/JSON"),
            Some(Encoding::Json)
        );
        assert_eq!(
            Encoding::from_content_type("multipart/form-data; boundary=\"a;b c\""),
            Some(Encoding::Multipart {
                boundary: "a;b c".to_owned()
            })
        );
        assert_eq!(Encoding::from_content_type("multipart/form-data"), None);
        assert_eq!(Encoding::from_content_type("text/plain"), None);
    }

    #[test]
    fn form_and_json() {
        let form = Encoding::Form
            .parse(b"grant_type=password&username=a%40b.c&password=p+w&password=x")
            .unwrap();
        assert_eq!(form["username"], "a@b.c");
        assert_eq!(form["password"], "p w");
        let json = Encoding::Json
            .parse(br#"{"grant_type":"password","n":1,"flag":true,"nested":{}}"#)
            .unwrap();
        assert_eq!(json["grant_type"], "password");
        assert_eq!(json["n"], "1");
        assert_eq!(json["flag"], "true");
        assert!(!json.contains_key("nested"));
        assert!(Encoding::Json.parse(b"[1,2]").is_none());
        assert!(Encoding::Json.parse(b"{").is_none());
    }

    #[test]
    fn multipart_fields() {
        let body = "preamble\r\n--XyZ\r\n\
            Content-Disposition: form-data; name=\"grant_type\"\r\n\r\n\
            password\r\n--XyZ\r\n\
            content-disposition: form-data; name=username; filename=\"u.txt\"\r\n\
            Content-Type: text/plain\r\n\r\n\
            a@b.c\r\n--XyZ\r\n\
            Content-Disposition: form-data; name=\"multi\"\r\n\r\n\
            line one\r\nline two\r\n--XyZ--\r\nepilogue";
        let params = multipart("XyZ", body).unwrap();
        assert_eq!(params["grant_type"], "password");
        assert_eq!(params["username"], "a@b.c");
        assert_eq!(params["multi"], "line one\r\nline two");
        assert_eq!(params.len(), 3);
    }

    #[test]
    fn multipart_bare_newlines_and_empty_values() {
        let body = "--b\nContent-Disposition: form-data; name=\"x\"\n\n\n--b\n\
            Content-Disposition: form-data; name=\"y\"\n\nvalue\n--b--";
        let params = multipart("b", body).unwrap();
        assert_eq!(params["x"], "");
        assert_eq!(params["y"], "value");
    }

    #[test]
    fn multipart_delimiter_mid_line_is_content() {
        let body = "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\na--b c\r\n--b--";
        assert_eq!(multipart("b", body).unwrap()["x"], "a--b c");
    }

    #[test]
    fn multipart_errors() {
        // No closing delimiter.
        assert!(multipart(
            "b",
            "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nv\r\n"
        )
        .is_none());
        // Part without a name.
        assert!(multipart("b", "--b\r\nContent-Type: text/plain\r\n\r\nv\r\n--b--").is_none());
        // Wrong boundary.
        assert!(multipart("other", "--b\r\n\r\nv\r\n--b--").is_none());
        assert!(multipart("b", "").is_none());
    }

    #[test]
    fn quoted_parameters() {
        assert_eq!(
            split_parameters(r#" name="a \"q\"; b" ; filename=f.txt"#),
            [
                ("name".to_owned(), "a \"q\"; b".to_owned()),
                ("filename".to_owned(), "f.txt".to_owned())
            ]
        );
    }
}
