use std::{fmt, sync::Arc};

use bytes::{Bytes, BytesMut};
use http::{header, Method, Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use secrecy::{ExposeSecret, SecretString};
use tower::ServiceExt;

#[cfg(feature = "rustls")]
use crate::Trust;

use super::{scrub::Scrubber, token_response::interpret, Credentials, TokenFuture, TokenSource};
use crate::{
    token_client::{self, Network, TokenHttpClient, TokenResponseBody},
    ApiBase, BoxError, Proxy, Token, TokenError, TokenErrorKind,
};

/// The largest token endpoint response body read, in bytes (64 KiB). A larger
/// one is a [`TokenErrorKind::InvalidResponse`].
pub const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;

/// How the token request body is encoded.
///
/// Wokelo's server parses all three; RFC 6749 prescribes urlencoded, which is
/// the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenRequestEncoding {
    /// `application/x-www-form-urlencoded` (the default).
    #[default]
    Form,
    /// `application/json`.
    Json,
    /// `multipart/form-data`, as Wokelo's published spec declares.
    Multipart,
}

impl std::str::FromStr for TokenRequestEncoding {
    type Err = crate::ConfigError;

    /// Parses `form`, `json` or `multipart`, naming the accepted values in
    /// the error.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_name(s).ok_or_else(|| {
            crate::ConfigError::new(format!(
                "unknown token request encoding {:?}: use form, json or multipart",
                super::scrub::one_line(s, 40)
            ))
        })
    }
}

impl TokenRequestEncoding {
    /// Parses `form`, `json` or `multipart` (as in `WOKELO_TOKEN_ENCODING`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "form" | "urlencoded" | "x-www-form-urlencoded" => Some(Self::Form),
            "json" => Some(Self::Json),
            "multipart" | "form-data" | "multipart/form-data" => Some(Self::Multipart),
            _ => None,
        }
    }
}

/// Wokelo's token endpoint: `POST {base}/auth/token/`.
///
/// The first token comes from the password grant (`client_id`,
/// `client_secret`, `username`, `password`, `grant_type=password`). When the
/// current token has a refresh token, it is renewed with
/// `grant_type=refresh_token` instead; the rotated refresh token that comes
/// back is kept in the new token, since the old one stops working. When the
/// server refuses a refresh (any `4xx` but `408`/`429`), the source falls back
/// to the password grant.
///
/// Requests go through their own HTTP client, never through the wrapped
/// service: by default hyper-util's client over an
/// [`HttpsConnector`](crate::HttpsConnector), with the environment's proxies
/// and trust (see [`with_proxy`](Self::with_proxy), `with_ca_file`), or any
/// tower service ([`with_http_client`](Self::with_http_client)).
///
/// A token request that gets no answer fails with a
/// [`TokenErrorKind::Unavailable`] error (retried) whose message ends in the
/// cause: `DNS lookup failed (...)`, `connection refused`, `the proxy refused
/// the CONNECT tunnel`, `TLS handshake failed: ...`. A server certificate the
/// client does not trust, or a proxy refusing its credentials, is a
/// [`TokenErrorKind::Configuration`] error instead: not retried, and its
/// message says what to do.
///
/// ```no_run
/// use wokelo_auth::{Credentials, PasswordGrant, TokenRequestEncoding, WokeloAuthLayer};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let source = PasswordGrant::new(Credentials::from_env()?)
///     .with_encoding(TokenRequestEncoding::Multipart);
/// let layer = WokeloAuthLayer::new(source);
/// # let _ = layer; Ok(()) }
/// ```
#[derive(Clone)]
pub struct PasswordGrant {
    inner: Arc<Inner>,
}

struct Inner {
    credentials: Credentials,
    encoding: TokenRequestEncoding,
    token_url: String,
    client: TokenHttpClient,
    network: Network,
    /// Requests sent: password grants, refresh grants, refreshes refused.
    counts: [std::sync::atomic::AtomicU64; 3],
}

/// The grant a token request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Grant {
    Password,
    Refresh,
}

impl Grant {
    /// The `grant_type` value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::Refresh => "refresh_token",
        }
    }
}

impl PasswordGrant {
    /// The password grant for these credentials, through the default client:
    /// the environment's proxies and trust, read now (see [`Proxy`] and
    /// `Trust`).
    pub fn new(credentials: Credentials) -> Self {
        let network = Network::from_env();
        Self::with_client(
            credentials,
            TokenRequestEncoding::default(),
            network.client(),
            network,
        )
    }

    fn with_client(
        credentials: Credentials,
        encoding: TokenRequestEncoding,
        client: TokenHttpClient,
        network: Network,
    ) -> Self {
        let token_url = credentials.base.join("/auth/token/");
        Self {
            inner: Arc::new(Inner {
                credentials,
                encoding,
                token_url,
                client,
                network,
                counts: Default::default(),
            }),
        }
    }

    fn rebuild(
        self,
        f: impl FnOnce(&mut TokenRequestEncoding, &mut TokenHttpClient, &mut Network),
    ) -> Self {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            credentials: shared.credentials.clone(),
            encoding: shared.encoding,
            token_url: shared.token_url.clone(),
            client: shared.client.clone(),
            network: shared.network.clone(),
            counts: Default::default(),
        });
        let (mut encoding, mut client, mut network) = (inner.encoding, inner.client, inner.network);
        f(&mut encoding, &mut client, &mut network);
        Self::with_client(inner.credentials, encoding, client, network)
    }

    /// Changes the network settings and rebuilds the default client on them.
    fn with_network(self, f: impl FnOnce(&mut Network)) -> Self {
        self.rebuild(|_, client, network| {
            f(network);
            *client = network.client();
        })
    }

    /// Selects the request body encoding (default: urlencoded).
    pub fn with_encoding(self, encoding: TokenRequestEncoding) -> Self {
        self.rebuild(|e, _, _| *e = encoding)
    }

    /// Sends token requests through `proxy` instead of the environment's
    /// (`HTTPS_PROXY`, `NO_PROXY`, ...), e.g. [`Proxy::all`]. Configures the
    /// default client: it replaces a client given with
    /// [`with_http_client`](Self::with_http_client).
    pub fn with_proxy(self, proxy: Proxy) -> Self {
        self.with_network(|n| n.proxy = proxy)
    }

    /// Sends token requests direct, whatever the environment's proxy
    /// variables say: [`with_proxy`](Self::with_proxy)`(Proxy::none())`.
    pub fn without_proxy(self) -> Self {
        self.with_proxy(Proxy::none())
    }

    /// Trusts `trust`'s certificate authorities instead of the default ones
    /// (the operating system's store, or `SSL_CERT_FILE`, and the webpki
    /// roots). Configures the default client: it replaces a client given with
    /// [`with_http_client`](Self::with_http_client).
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn with_trust(self, trust: Trust) -> Self {
        self.with_network(|n| n.trust = Ok(trust))
    }

    /// Also trusts the CA certificates of the PEM file at `path`: a private
    /// CA, or the one of a TLS-inspecting proxy. Read now. Configures the
    /// default client: it replaces a client given with
    /// [`with_http_client`](Self::with_http_client).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`](crate::ConfigError) naming the file if it cannot be
    /// read or holds no usable CA certificate, or naming `SSL_CERT_FILE` if
    /// that is set but unusable.
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn with_ca_file(
        self,
        path: impl AsRef<std::path::Path>,
    ) -> Result<Self, crate::ConfigError> {
        let trust = self.inner.network.trust.clone()?.with_pem_file(path)?;
        Ok(self.with_trust(trust))
    }

    /// Sends token requests through `client` instead of the default one, e.g.
    /// an SDK's own hyper client with its proxy and TLS settings. The service
    /// gets absolute-URI requests, like a hyper-util client.
    pub fn with_http_client<S, B>(self, client: S) -> Self
    where
        S: tower::Service<Request<Full<Bytes>>, Response = Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let client = token_client::boxed(client);
        self.rebuild(|_, c, _| *c = client)
    }

    /// The credentials this source uses.
    pub fn credentials(&self) -> &Credentials {
        &self.inner.credentials
    }
}

/// The secrets of the token a fetch renews, which a token endpoint may quote.
struct Current {
    access_token: Option<SecretString>,
    refresh_token: Option<SecretString>,
}

impl Inner {
    async fn fetch(&self, current: Current) -> Result<Token, TokenError> {
        if let Some(refresh_token) = &current.refresh_token {
            match self.request(Grant::Refresh, &current).await {
                // RFC 6749 section 6: an answer without a refresh token means
                // the one just used stays valid.
                Ok(token) if token.refresh_token().is_none() => {
                    return Ok(token.with_refresh_token(refresh_token.expose_secret()))
                }
                Ok(token) => return Ok(token),
                Err(e) if is_refusal(&e) => {
                    self.count(2);
                    // The body's fields were scrubbed of every secret the
                    // request carried, and are one line each.
                    tracing::info!(
                        status = e.status().map(|s| s.as_u16()),
                        error = %e.body().map(ToString::to_string).unwrap_or_default(),
                        "refresh token refused; falling back to the password grant"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        self.request(Grant::Password, &current).await
    }

    /// Every secret a request of this source may carry, and the access token
    /// it renews (which a server may echo back).
    fn scrubber(&self, current: &Current) -> Scrubber {
        let mut scrubber = Scrubber::default();
        scrubber.add(self.credentials.client_secret.expose_secret());
        scrubber.add(self.credentials.password.expose_secret());
        for token in [&current.refresh_token, &current.access_token]
            .into_iter()
            .flatten()
        {
            scrubber.add(token.expose_secret());
        }
        scrubber
    }

    fn count(&self, which: usize) {
        self.counts[which].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    async fn request(&self, grant: Grant, current: &Current) -> Result<Token, TokenError> {
        self.count(match grant {
            Grant::Password => 0,
            Grant::Refresh => 1,
        });
        let c = &self.credentials;
        c.check_transport()?;
        if c.base.is_https() && !cfg!(feature = "rustls") {
            return Err(TokenError::new(
                TokenErrorKind::Configuration,
                format!(
                    "the base URL {} is https but wokelo-auth was built without the `rustls` feature; enable it or pass your own client with PasswordGrant::with_http_client",
                    c.base
                ),
            ));
        }
        let mut fields: Vec<(&str, &str)> = vec![
            ("grant_type", grant.as_str()),
            ("client_id", &c.client_id),
            ("client_secret", c.client_secret.expose_secret()),
        ];
        match grant {
            Grant::Password => {
                fields.push(("username", &c.username));
                fields.push(("password", c.password.expose_secret()));
            }
            Grant::Refresh => {
                let rt = current
                    .refresh_token
                    .as_ref()
                    .map(ExposeSecret::expose_secret)
                    .unwrap_or_default();
                fields.push(("refresh_token", rt));
            }
        }
        let (content_type, body) = encode(self.encoding, &fields);
        let request = Request::builder()
            .method(Method::POST)
            .uri(&self.token_url)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("wokelo-auth/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body))
            .map_err(|e| {
                TokenError::new(
                    TokenErrorKind::Configuration,
                    format!("cannot build a request to {}", self.token_url),
                )
                .with_source(e)
            })?;
        let response = self
            .client
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| token_client::unreachable(&self.token_url, e))?;
        let outcome = self.read(grant, response, self.scrubber(current)).await;
        tracing::debug!(
            grant = grant.as_str(),
            ok = outcome.is_ok(),
            "token endpoint answered"
        );
        outcome
    }

    async fn read(
        &self,
        grant: Grant,
        response: Response<TokenResponseBody>,
        scrubber: Scrubber,
    ) -> Result<Token, TokenError> {
        let (parts, body) = response.into_parts();
        let status = parts.status;
        let body = match read_limited(body).await {
            Ok(Some(body)) => body,
            Ok(None) => {
                return Err(TokenError::new(
                    TokenErrorKind::InvalidResponse,
                    format!(
                        "the token endpoint's response body exceeds {} KiB; check WOKELO_BASE_URL points at the Wokelo API",
                        MAX_TOKEN_RESPONSE_BYTES / 1024
                    ),
                )
                .with_status(status));
            }
            Err(e) => {
                return Err(TokenError::new(
                    TokenErrorKind::Unavailable,
                    "the connection to the token endpoint failed while reading its response",
                )
                .with_status(status)
                .with_boxed_source(e));
            }
        };
        interpret(grant, status, &parts.headers, &body, scrubber)
    }
}

/// Reads at most [`MAX_TOKEN_RESPONSE_BYTES`]; `None` when the body is larger
/// (reading stops there).
async fn read_limited(mut body: TokenResponseBody) -> Result<Option<Bytes>, BoxError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if buf.len() + data.len() > MAX_TOKEN_RESPONSE_BYTES {
                return Ok(None);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Some(buf.freeze()))
}

/// A refused refresh, after which the password grant is tried: the OAuth
/// server itself answered with an error code that is not transient (a
/// stale or revoked refresh token is `invalid_grant`; a server that does not
/// support the refresh grant says `unsupported_grant_type`, ...).
///
/// Anything else is not a refusal. A transient failure is retried by the
/// layer with the same refresh token. An answer that is not an OAuth error,
/// such as a proxy's or firewall's HTML page, comes from something between
/// the client and the OAuth server: the password grant would meet it just
/// the same, so the password is not sent into it and the error is returned.
fn is_refusal(e: &TokenError) -> bool {
    e.status().is_some()
        && matches!(
            e.kind(),
            TokenErrorKind::CredentialsRejected | TokenErrorKind::Configuration
        )
}

fn encode(encoding: TokenRequestEncoding, fields: &[(&str, &str)]) -> (String, Bytes) {
    match encoding {
        TokenRequestEncoding::Form => (
            "application/x-www-form-urlencoded".to_owned(),
            serde_urlencoded::to_string(fields)
                .expect("string pairs always urlencode")
                .into(),
        ),
        TokenRequestEncoding::Json => {
            let map: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
                .collect();
            (
                "application/json".to_owned(),
                serde_json::to_vec(&map)
                    .expect("a map of strings always serializes")
                    .into(),
            )
        }
        TokenRequestEncoding::Multipart => {
            let boundary = format!(
                "wokelo-auth-{:016x}{:016x}",
                fastrand::u64(..),
                fastrand::u64(..)
            );
            let mut body = String::new();
            for (name, value) in fields {
                body.push_str("--");
                body.push_str(&boundary);
                body.push_str("\r\nContent-Disposition: form-data; name=\"");
                body.push_str(name);
                body.push_str("\"\r\n\r\n");
                body.push_str(value);
                body.push_str("\r\n");
            }
            body.push_str("--");
            body.push_str(&boundary);
            body.push_str("--\r\n");
            (
                format!("multipart/form-data; boundary={boundary}"),
                body.into(),
            )
        }
    }
}

impl TokenSource for PasswordGrant {
    fn fetch(&self, current: Option<&Token>) -> TokenFuture {
        let inner = self.inner.clone();
        let current = Current {
            access_token: current.map(|t| t.access_token().clone()),
            refresh_token: current.and_then(|t| t.refresh_token().cloned()),
        };
        Box::pin(async move { inner.fetch(current).await })
    }

    fn api_base(&self) -> Option<&ApiBase> {
        Some(&self.inner.credentials.base)
    }

    fn store_key(&self) -> Option<String> {
        let c = &self.inner.credentials;
        Some(format!("{}|{}|{}", c.base, c.client_id, c.username))
    }

    fn grant_counts(&self) -> Option<super::GrantCounts> {
        let [password, refresh_token, refresh_refused] = self
            .inner
            .counts
            .each_ref()
            .map(|c| c.load(std::sync::atomic::Ordering::Relaxed));
        Some(super::GrantCounts {
            password,
            refresh_token,
            refresh_refused,
        })
    }

    fn name(&self) -> &'static str {
        "password_grant"
    }
}

impl fmt::Debug for PasswordGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordGrant")
            .field("credentials", &self.inner.credentials)
            .field("encoding", &self.inner.encoding)
            .field("token_url", &self.inner.token_url)
            .field("network", &self.inner.network)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &[(&str, &str)] = &[("grant_type", "password"), ("password", "p&ss word=")];

    #[test]
    fn form_encoding_escapes_values() {
        let (ct, body) = encode(TokenRequestEncoding::Form, FIELDS);
        assert_eq!(ct, "application/x-www-form-urlencoded");
        assert_eq!(&body[..], b"grant_type=password&password=p%26ss+word%3D");
    }

    #[test]
    fn json_encoding() {
        let (ct, body) = encode(TokenRequestEncoding::Json, FIELDS);
        assert_eq!(ct, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["password"], "p&ss word=");
    }

    #[test]
    fn multipart_encoding_has_one_part_per_field() {
        let (ct, body) = encode(TokenRequestEncoding::Multipart, FIELDS);
        let boundary = ct.strip_prefix("multipart/form-data; boundary=").unwrap();
        let body = std::str::from_utf8(&body).unwrap();
        assert_eq!(body.matches(&format!("--{boundary}\r\n")).count(), 2);
        assert!(body.ends_with(&format!("--{boundary}--\r\n")));
        assert!(body.contains("name=\"password\"\r\n\r\np&ss word=\r\n"));
    }

    #[test]
    fn encoding_parse_error_names_the_choices() {
        let e = "xml".parse::<TokenRequestEncoding>().unwrap_err();
        assert!(e.to_string().contains("form, json or multipart"), "{e}");
        assert_eq!(
            "json".parse::<TokenRequestEncoding>().unwrap(),
            TokenRequestEncoding::Json
        );
    }

    #[test]
    fn encoding_names() {
        assert_eq!(
            TokenRequestEncoding::from_name("JSON"),
            Some(TokenRequestEncoding::Json)
        );
        assert_eq!(
            TokenRequestEncoding::from_name("multipart"),
            Some(TokenRequestEncoding::Multipart)
        );
        assert_eq!(
            TokenRequestEncoding::from_name("form"),
            Some(TokenRequestEncoding::Form)
        );
        assert_eq!(TokenRequestEncoding::from_name("xml"), None);
    }

    #[test]
    fn debug_hides_secrets() {
        let g = PasswordGrant::new(Credentials::new("id", "client-s3cret", "u@x", "pa55word"));
        let s = format!("{g:?}");
        assert!(
            !s.contains("client-s3cret") && !s.contains("pa55word"),
            "{s}"
        );
    }
}
