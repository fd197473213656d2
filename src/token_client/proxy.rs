//! Which proxy, if any, a connection goes through.
//!
//! The rules are curl's, as hyper-util's [`Matcher`] implements them; this
//! file only picks where they come from (the environment, explicit values or
//! none) and keeps loopback destinations direct.

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
    sync::Arc,
};

use http::{HeaderValue, Uri};
use hyper_util::client::proxy::matcher::{Intercept, Matcher};

use crate::ConfigError;

/// The proxy settings of the token client and of [`HttpsConnector`](crate::HttpsConnector).
///
/// By default ([`Proxy::from_env`]) they come from the environment, read once
/// when the client is built, as curl reads them:
///
/// | variable | used for |
/// |---|---|
/// | `HTTPS_PROXY` / `https_proxy` | `https` destinations, through an HTTP `CONNECT` tunnel |
/// | `HTTP_PROXY` / `http_proxy` | `http` destinations, sent to the proxy in absolute form |
/// | `ALL_PROXY` / `all_proxy` | both, where the one above is not set |
/// | `NO_PROXY` / `no_proxy` | comma-separated hosts, domains (and their subdomains), IPs or CIDR ranges that go direct; `*` for all |
///
/// A proxy URL may carry credentials (`http://user:password@proxy:3128`):
/// they are sent as `Proxy-Authorization: Basic`, and never appear in `Debug`,
/// errors or logs. The proxy itself is reached over plain `http://` or, with
/// the `rustls` feature, `https://`; SOCKS proxies are not supported.
///
/// Loopback destinations (`localhost`, `127.0.0.0/8`, `[::1]`) always go
/// direct, as Go's `net/http` does: a proxy cannot reach this machine's
/// loopback interface. While a CGI request is served (`REQUEST_METHOD` set),
/// the environment's proxies are ignored (`httpoxy`).
///
/// ```
/// use wokelo_auth::{Credentials, PasswordGrant, Proxy};
///
/// # fn main() -> Result<(), wokelo_auth::ConfigError> {
/// let proxy = Proxy::all("http://user:pa55@proxy.internal:3128")?.no_proxy("wokelo.internal");
/// let source = PasswordGrant::new(Credentials::new("id", "secret", "me@example.com", "pw"))
///     .with_proxy(proxy);
/// # let _ = source; Ok(()) }
/// ```
#[derive(Clone)]
pub struct Proxy {
    rules: Rules,
}

#[derive(Clone)]
enum Rules {
    None,
    Matcher {
        matcher: Arc<Matcher>,
        /// The explicit proxy URL (with its credentials), kept to rebuild the
        /// matcher in [`Proxy::no_proxy`]; `None` for the environment's.
        url: Option<Arc<str>>,
        origin: &'static str,
    },
}

/// How one destination is reached.
pub(crate) enum Route {
    /// A TCP connection to the destination itself.
    Direct,
    /// A `CONNECT` tunnel through the proxy (for `https`).
    Tunnel(Intercept),
    /// The request goes to the proxy, in absolute form (for `http`).
    Forward(Intercept),
}

impl Proxy {
    /// The proxies of the environment variables (see the [type docs](Proxy)),
    /// read now.
    pub fn from_env() -> Self {
        Self {
            rules: Rules::Matcher {
                matcher: Arc::new(env_matcher(None)),
                url: None,
                origin: "environment",
            },
        }
    }

    /// No proxy: every connection goes direct, whatever the environment says.
    pub fn none() -> Self {
        Self { rules: Rules::None }
    }

    /// One proxy for `http` and `https` destinations, ignoring the
    /// environment. `url` is `http://[user:password@]host[:port]` (port 80 by
    /// default) or, with the `rustls` feature, `https://...`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if `url` is not an `http` or `https` URL with a host
    /// (the message shows the URL without its credentials).
    pub fn all(url: &str) -> Result<Self, ConfigError> {
        check_url(url)?;
        let url: Arc<str> = Arc::from(url);
        Ok(Self {
            rules: Rules::Matcher {
                matcher: Arc::new(Matcher::builder().all(url.to_string()).build()),
                url: Some(url),
                origin: "explicit",
            },
        })
    }

    /// Destinations that go direct instead, in `NO_PROXY`'s syntax:
    /// comma-separated hosts, domains (matching their subdomains too), IP
    /// addresses or CIDR ranges, or `*` for all. Replaces the environment's
    /// `NO_PROXY` for a [`Proxy::from_env`]; no effect on [`Proxy::none`].
    pub fn no_proxy(self, list: &str) -> Self {
        let rules = match self.rules {
            Rules::None => Rules::None,
            Rules::Matcher {
                url: Some(url),
                origin,
                ..
            } => Rules::Matcher {
                matcher: Arc::new(Matcher::builder().all(url.to_string()).no(list).build()),
                url: Some(url),
                origin,
            },
            Rules::Matcher { url: None, .. } => Rules::Matcher {
                matcher: Arc::new(env_matcher(Some(list))),
                url: None,
                origin: "environment",
            },
        };
        Self { rules }
    }

    /// How a connection to `dst` is made.
    pub(crate) fn route(&self, dst: &Uri) -> Route {
        let Rules::Matcher { matcher, .. } = &self.rules else {
            return Route::Direct;
        };
        if dst.host().is_none_or(is_loopback) {
            return Route::Direct;
        }
        match (matcher.intercept(dst), dst.scheme_str()) {
            (Some(proxy), Some("https")) => Route::Tunnel(proxy),
            (Some(proxy), _) => Route::Forward(proxy),
            (None, _) => Route::Direct,
        }
    }

    /// The `Proxy-Authorization` value for a plain-`http` request to `dst`
    /// sent through a proxy with credentials (an `https` request carries it
    /// in its `CONNECT` instead).
    pub(crate) fn authorization_for(&self, dst: &Uri) -> Option<HeaderValue> {
        match self.route(dst) {
            Route::Forward(proxy) => proxy.basic_auth().cloned(),
            Route::Direct | Route::Tunnel(_) => None,
        }
    }
}

impl Default for Proxy {
    /// [`Proxy::from_env`].
    fn default() -> Self {
        Self::from_env()
    }
}

impl fmt::Debug for Proxy {
    /// The proxies' addresses and the `NO_PROXY` rules; never credentials
    /// (hyper-util's `Matcher` leaves them out).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rules {
            Rules::None => f.write_str("Proxy::none()"),
            Rules::Matcher {
                matcher, origin, ..
            } => f
                .debug_struct("Proxy")
                .field("from", origin)
                .field("rules", matcher)
                .finish(),
        }
    }
}

/// `host[:port]` of a proxy, for messages: never its credentials.
pub(crate) fn address(proxy: &Intercept) -> String {
    proxy
        .uri()
        .authority()
        .map_or_else(|| "?".to_owned(), |a| a.to_string())
}

/// The proxies of the environment, each URL checked as [`Proxy::all`] checks
/// one: a value that is not a usable proxy URL (a bare `http://`, spaces, a
/// SOCKS URL, a password with an unencoded `@`, which hyper-util would split
/// at the wrong `@`, sending the wrong credentials and showing the rest in
/// messages) is left out with a warning naming the variable, never the
/// value. `no` replaces `NO_PROXY`. Under CGI (`REQUEST_METHOD` set),
/// `HTTP_PROXY` may come from a request header, so it is ignored, as curl
/// and hyper-util do.
fn env_matcher(no: Option<&str>) -> Matcher {
    let var = |names: [&'static str; 2]| {
        names.into_iter().find_map(|name| {
            let value = std::env::var(name).ok()?;
            if value.trim().is_empty() {
                return None;
            }
            match check_url(&value) {
                Ok(()) => Some(value),
                Err(e) => {
                    tracing::warn!(
                        variable = name,
                        "ignoring the proxy in {name}: {}",
                        e.to_string()
                            .replace(&without_credentials(&value), "its value")
                    );
                    None
                }
            }
        })
    };
    let cgi = std::env::var_os("REQUEST_METHOD").is_some();
    let no = no.map(str::to_owned).unwrap_or_else(|| {
        ["NO_PROXY", "no_proxy"]
            .into_iter()
            .find_map(|n| std::env::var(n).ok())
            .unwrap_or_default()
    });
    let mut builder = Matcher::builder()
        .all(var(["ALL_PROXY", "all_proxy"]).unwrap_or_default())
        .https(var(["HTTPS_PROXY", "https_proxy"]).unwrap_or_default())
        .no(no);
    if !cgi {
        builder = builder.http(var(["HTTP_PROXY", "http_proxy"]).unwrap_or_default());
    }
    builder.build()
}

fn check_url(url: &str) -> Result<(), ConfigError> {
    let shown = without_credentials(url);
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    if url[authority_start..authority_end].matches('@').count() > 1 {
        return Err(ConfigError::new(format!(
            "the proxy URL {shown:?} has more than one `@` before its host: percent-encode an `@` in the user name or password as %40"
        )));
    }
    let uri: Uri = url.parse().map_err(|_| {
        ConfigError::new(format!(
            "invalid proxy URL {shown:?}: expected http://[user:password@]host[:port]"
        ))
    })?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") if cfg!(feature = "rustls") => {}
        Some("https") => {
            return Err(ConfigError::new(format!(
                "the proxy URL {shown:?} is https, which needs the `rustls` feature"
            )))
        }
        _ => {
            return Err(ConfigError::new(format!(
                "unsupported proxy URL {shown:?}: use an http:// (or https://) proxy; SOCKS is not supported"
            )))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(ConfigError::new(format!(
            "the proxy URL {shown:?} has no host"
        )));
    }
    // `http::Uri` keeps a port it cannot read as a number (`:99999`) and
    // reports no port, which would mean the default one.
    let host_port = uri.authority().map_or("", |a| a.as_str());
    let host_port = host_port.rsplit_once('@').map_or(host_port, |(_, hp)| hp);
    let after_host = host_port.rsplit_once(']').map_or(host_port, |(_, p)| p);
    if after_host.contains(':') && uri.port_u16().is_none() {
        return Err(ConfigError::new(format!(
            "the proxy URL {shown:?} has an invalid port"
        )));
    }
    Ok(())
}

/// `url` with any `user:password@` replaced, for error messages.
fn without_credentials(url: &str) -> String {
    let shown = crate::source::scrub::one_line(url, 200);
    let start = shown.find("://").map_or(0, |i| i + 3);
    let end = shown[start..]
        .find(['/', '?', '#'])
        .map_or(shown.len(), |i| start + i);
    match shown[start..end].rfind('@') {
        Some(at) => format!("{}[REDACTED]@{}", &shown[..start], &shown[start + at + 1..]),
        None => shown,
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => ip == Ipv6Addr::LOCALHOST,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn explicit_proxy_routes_https_through_connect_and_http_in_absolute_form() {
        let proxy = Proxy::all("http://u:p@proxy.test:3128").unwrap();
        assert!(matches!(
            proxy.route(&uri("https://api.wokelo.ai/auth/token/")),
            Route::Tunnel(_)
        ));
        assert!(matches!(
            proxy.route(&uri("http://api.wokelo.ai/")),
            Route::Forward(_)
        ));
        let auth = proxy.authorization_for(&uri("http://api.wokelo.ai/"));
        assert_eq!(auth.unwrap(), "Basic dTpw");
        assert!(proxy
            .authorization_for(&uri("https://api.wokelo.ai/"))
            .is_none());
    }

    #[test]
    fn loopback_and_no_proxy_go_direct() {
        let proxy = Proxy::all("http://proxy.test:3128")
            .unwrap()
            .no_proxy("wokelo.ai, 10.0.0.0/8");
        for dst in [
            "http://127.0.0.1:8080/",
            "http://localhost/",
            "http://[::1]:80/",
            "https://api.wokelo.ai/",
            "https://10.1.2.3/",
        ] {
            assert!(matches!(proxy.route(&uri(dst)), Route::Direct), "{dst}");
        }
        assert!(matches!(
            proxy.route(&uri("https://notwokelo.ai/")),
            Route::Tunnel(_)
        ));
        assert!(matches!(
            Proxy::none().route(&uri("https://api.wokelo.ai/")),
            Route::Direct
        ));
    }

    #[test]
    fn bad_urls_are_refused_without_their_credentials() {
        for url in [
            "socks5://user:s3cret@proxy:1080",
            "ftp://user:s3cret@proxy",
            "http://user:s3cret@",
            "http://user:s3cret@proxy:99999",
        ] {
            let e = Proxy::all(url).unwrap_err().to_string();
            assert!(!e.contains("s3cret"), "{e}");
            assert!(e.contains("proxy"), "{e}");
        }
    }

    #[test]
    fn debug_shows_the_proxy_but_not_its_credentials() {
        let proxy = Proxy::all("http://user:s3cret@proxy.test:3128").unwrap();
        let s = format!("{proxy:?}");
        assert!(s.contains("proxy.test:3128"), "{s}");
        assert!(!s.contains("s3cret") && !s.contains("user"), "{s}");
    }

    #[test]
    fn a_password_with_an_unencoded_at_is_refused_without_showing_it() {
        for url in [
            "http://user:abc@S3CRETPART@127.0.0.1:9",
            "http://user:p@ss@127.0.0.1:9/",
        ] {
            let e = Proxy::all(url).unwrap_err().to_string();
            assert!(e.contains("%40"), "{e}");
            assert!(
                !e.contains("S3CRETPART") && !e.contains("abc") && !e.contains("ss@"),
                "{e}"
            );
        }
        assert!(Proxy::all("http://user:p%40ss@127.0.0.1:9").is_ok());
    }
}
