//! The API base URL, and the origin check that keeps the token on that host.

use std::{fmt, str::FromStr};

use http::Uri;

use crate::error::ConfigError;

/// The default Wokelo API base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.wokelo.ai";

/// A validated API base URL: `http` or `https`, a host, an optional port and
/// an optional path prefix.
///
/// Its origin (scheme, host, port) decides which requests get the token: only
/// requests for exactly this origin carry it. Its path is the prefix of the
/// token endpoint, `{base}/auth/token/`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiBase {
    /// The base URL without a trailing slash.
    url: String,
    https: bool,
    /// Lowercase host, without brackets for IPv6.
    host: String,
    port: u16,
}

impl ApiBase {
    /// Parses and validates a base URL such as `https://api.wokelo.ai`.
    ///
    /// # Errors
    ///
    /// When the URL does not parse, its scheme is not `http` or `https`, it
    /// has no host, or it carries a query, a fragment or user info. The
    /// error quotes the URL without its user info, query and fragment (where
    /// passwords and API keys would be), cut to 100 characters.
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| {
            ConfigError::new(format!(
                "invalid Wokelo base URL {:?}: {why}; expected something like {DEFAULT_BASE_URL:?}",
                redacted(url)
            ))
        };
        let uri: Uri = url.trim().parse().map_err(|_| bad("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            Some(_) => return Err(bad("the scheme must be http or https")),
            None => return Err(bad("the scheme is missing")),
        };
        let authority = uri.authority().ok_or_else(|| bad("the host is missing"))?;
        if authority.as_str().contains('@') {
            return Err(bad(
                "user info is not allowed; give the username and password as WOKELO_USERNAME and WOKELO_PASSWORD (Credentials), not in the URL",
            ));
        }
        if uri.query().is_some() || url.contains('#') {
            return Err(bad(
                "a query or fragment is not allowed; remove everything from the `?` or `#` (the token endpoint takes the client credentials, not an API key)",
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if host.is_empty() {
            return Err(bad("the host is missing"));
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = uri.path().trim_end_matches('/');
        Ok(Self {
            url: format!(
                "{}://{}{}",
                if https { "https" } else { "http" },
                authority,
                path
            ),
            https,
            host,
            port,
        })
    }

    /// The base URL, without a trailing slash.
    #[inline]
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// Whether the scheme is `https`.
    #[inline]
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// Whether the host is this machine: `localhost` or a loopback address
    /// (`127.0.0.0/8`, `::1`). Plain `http` is accepted for these without
    /// opting in: nothing crosses a network. Names under `.localhost` are
    /// not counted (RFC 6761 asks resolvers to keep them local, but not
    /// every resolver does, and a secret would then go to whatever the DNS
    /// answers).
    pub fn is_loopback(&self) -> bool {
        let host = self.host.trim_end_matches('.');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// The URL of `path` (which starts with `/`) under this base.
    pub fn join(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    /// Whether `uri` is for this origin: same scheme, host (case-insensitive)
    /// and port (with the scheme's default port filled in). A relative URI has
    /// no origin and never matches.
    pub fn same_origin(&self, uri: &Uri) -> bool {
        let https = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => true,
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            _ => return false,
        };
        let Some(authority) = uri.authority() else {
            return false;
        };
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        https == self.https
            && authority.port_u16().unwrap_or(if https { 443 } else { 80 }) == self.port
            && host.eq_ignore_ascii_case(&self.host)
    }
}

/// `url` as it may be quoted in an error: everything before the last `@`
/// after the scheme (user info, or a password that broke the URL) and
/// everything from the first `?` or `#` replaced, on one line, at most 100
/// characters.
fn redacted(url: &str) -> String {
    let url = url.trim();
    // User info first: a password may itself hold `?`, `#` or `/`, so
    // everything up to the last `@` goes, wherever the query would start.
    let start = url.find("://").map_or(0, |i| i + 3);
    let url = match url[start..].rfind('@') {
        Some(at) => format!("{}[REDACTED]@{}", &url[..start], &url[start + at + 1..]),
        None => url.to_owned(),
    };
    let (rest, tail) = match url[start..].find(['?', '#']) {
        Some(i) => {
            let i = start + i;
            (&url[..i], format!("{}[REDACTED]", &url[i..=i]))
        }
        None => (url.as_str(), String::new()),
    };
    crate::source::scrub::one_line(&format!("{rest}{tail}"), 100)
}

impl Default for ApiBase {
    fn default() -> Self {
        Self::parse(DEFAULT_BASE_URL).expect("the default base URL is valid")
    }
}

impl FromStr for ApiBase {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Debug for ApiBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ApiBase").field(&self.url).finish()
    }
}

impl fmt::Display for ApiBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn default_is_wokelo() {
        let b = ApiBase::default();
        assert_eq!(b.as_str(), "https://api.wokelo.ai");
        assert_eq!(b.join("/auth/token/"), "https://api.wokelo.ai/auth/token/");
    }

    #[test]
    fn same_origin_requires_scheme_host_and_port() {
        let b = ApiBase::default();
        assert!(b.same_origin(&uri("https://api.wokelo.ai/api/x?y=1")));
        assert!(b.same_origin(&uri("https://API.Wokelo.AI:443/api/x")));
        assert!(!b.same_origin(&uri("http://api.wokelo.ai/api/x")));
        assert!(!b.same_origin(&uri("https://api.wokelo.ai:8443/api/x")));
        assert!(!b.same_origin(&uri("https://storage.example.com/report.pdf")));
        assert!(!b.same_origin(&uri("https://api.wokelo.ai.evil.com/")));
        assert!(!b.same_origin(&uri("/api/relative")));
    }

    #[test]
    fn explicit_port_and_path_prefix() {
        let b = ApiBase::parse("http://127.0.0.1:8080/prefix/").unwrap();
        assert_eq!(b.as_str(), "http://127.0.0.1:8080/prefix");
        assert!(b.same_origin(&uri("http://127.0.0.1:8080/api/echo")));
        assert!(!b.same_origin(&uri("http://127.0.0.1:8081/api/echo")));
        let v6 = ApiBase::parse("http://[::1]:9000").unwrap();
        assert!(v6.same_origin(&uri("http://[::1]:9000/api")));
    }

    #[test]
    fn errors_never_quote_user_info_or_query_values() {
        for (bad, shown, why) in [
            (
                "https://analyst:Sup3rS3cret@api.wokelo.ai",
                "https://[REDACTED]@api.wokelo.ai",
                "WOKELO_PASSWORD",
            ),
            (
                "https://api.wokelo.ai/?api_key=Sup3rS3cret",
                "https://api.wokelo.ai/?[REDACTED]",
                "not an API key",
            ),
            (
                "https://api.wokelo.ai#Sup3rS3cret",
                "https://api.wokelo.ai#[REDACTED]",
                "fragment",
            ),
            (
                "https://analyst:Sup3r@S3cret@api.wokelo.ai/x?k=Sup3rS3cret",
                "https://[REDACTED]@api.wokelo.ai/x?[REDACTED]",
                "is not allowed",
            ),
            ("analyst:Sup3rS3cret@host", "[REDACTED]@host", ""),
            (
                "https://analyst:Sup3rS3cret#1@api.wokelo.ai",
                "https://[REDACTED]@api.wokelo.ai",
                "",
            ),
            (
                "https://analyst:Sup3r?S3cret/x@api.wokelo.ai",
                "https://[REDACTED]@api.wokelo.ai",
                "",
            ),
        ] {
            let e = ApiBase::parse(bad).unwrap_err();
            let text = format!("{e} {e:?}");
            assert!(
                !text.contains("Sup3r") && !text.contains("analyst"),
                "{text}"
            );
            assert!(text.contains(&format!("{shown:?}")), "{text}");
            assert!(text.contains(why), "{text}");
        }
        let long = format!("ftp://{}\n", "x".repeat(500));
        let e = ApiBase::parse(&long).unwrap_err().to_string();
        assert!(e.len() < 300 && !e.contains('\n'), "{e}");
    }

    #[test]
    fn rejects_bad_urls_with_a_clear_message() {
        for bad in [
            "ftp://x",
            "api.wokelo.ai",
            "https://u:p@api.wokelo.ai",
            "https://a/?q=1",
            "",
        ] {
            let e = ApiBase::parse(bad).unwrap_err();
            assert!(e.to_string().contains("invalid Wokelo base URL"), "{e}");
        }
    }

    #[test]
    fn loopback_hosts() {
        for url in [
            "http://127.0.0.1:8080",
            "http://127.8.9.10",
            "http://[::1]:9000",
            "http://localhost:3000",
            "http://LOCALHOST",
            "http://localhost.",
        ] {
            assert!(ApiBase::parse(url).unwrap().is_loopback(), "{url}");
        }
        for url in [
            "http://api.wokelo.ai",
            "http://10.0.0.1",
            "http://localhost.example.com",
            "http://[::2]",
            "http://0.0.0.0",
            "http://mylocalhost",
            "http://api.localhost",
        ] {
            assert!(!ApiBase::parse(url).unwrap().is_loopback(), "{url}");
        }
    }
}
