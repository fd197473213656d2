//! A hyper-util connector with the token client's proxy and trust settings,
//! for the API client too.

use std::{
    error::Error as StdError,
    fmt,
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
};

use http::{HeaderValue, Uri};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::{
    client::legacy::connect::{proxy::Tunnel, Connected, Connection, HttpConnector},
    rt::TokioIo,
};
use tokio::net::TcpStream;
use tower::Service;

use super::proxy::{self, Proxy, Route};
#[cfg(feature = "rustls")]
use super::tls::Trust;
use crate::{BoxError, ConfigError};

/// The connection to the next hop: the destination or the proxy, which an
/// `https://` proxy URL reaches over TLS.
#[cfg(feature = "rustls")]
type HopStream = hyper_rustls::MaybeHttpsStream<TokioIo<TcpStream>>;
#[cfg(not(feature = "rustls"))]
type HopStream = TokioIo<TcpStream>;

/// The connection to the destination, TLS included.
#[cfg(feature = "rustls")]
type Inner = hyper_rustls::MaybeHttpsStream<HopStream>;
#[cfg(not(feature = "rustls"))]
type Inner = HopStream;

type Connecting = Pin<Box<dyn Future<Output = Result<HttpsStream, BoxError>> + Send>>;

/// A hyper-util connector with the settings of the token client: proxies
/// ([`Proxy`]) and, with the `rustls` feature, HTTPS trusting [`Trust`]'s
/// roots through the crate's ring provider. HTTP/1.1, and HTTP/2 where the
/// server offers it over TLS.
///
/// Give it to `hyper_util::client::legacy::Client::builder(..).build(connector)`
/// for the API calls, so they take the same route as the token requests.
/// One thing a connector cannot do: a plain-`http` request through a proxy
/// that needs credentials must carry `Proxy-Authorization` itself
/// ([`proxy_authorization`](Self::proxy_authorization) gives the value);
/// `https` requests carry it in their `CONNECT`.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Empty;
/// use hyper_util::{client::legacy::Client, rt::TokioExecutor};
/// use wokelo_auth::HttpsConnector;
///
/// # fn main() -> Result<(), wokelo_auth::ConfigError> {
/// let client: Client<_, Empty<Bytes>> =
///     Client::builder(TokioExecutor::new()).build(HttpsConnector::from_env()?);
/// # let _ = client; Ok(()) }
/// ```
#[derive(Clone)]
pub struct HttpsConnector {
    proxy: Proxy,
    #[cfg(feature = "rustls")]
    trust: Trust,
    #[cfg(feature = "rustls")]
    tls: hyper_rustls::HttpsConnector<Hop>,
    #[cfg(not(feature = "rustls"))]
    hop: Hop,
}

impl HttpsConnector {
    /// The proxies of the environment and, with the `rustls` feature, the
    /// default trust: [`Proxy::from_env`] and `Trust::from_env`, read now.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if `SSL_CERT_FILE` or `SSL_CERT_DIR` is set but
    /// unusable (see `Trust::from_env`).
    pub fn from_env() -> Result<Self, ConfigError> {
        #[cfg(feature = "rustls")]
        return Ok(Self::new(Proxy::from_env(), Trust::from_env()?));
        #[cfg(not(feature = "rustls"))]
        Ok(Self::new(Proxy::from_env()))
    }

    /// A connector through `proxy`, trusting `trust`.
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn new(proxy: Proxy, trust: Trust) -> Self {
        let config = trust.client_config();
        let hop = Hop::new(proxy.clone(), config.clone());
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(hop);
        Self { proxy, trust, tls }
    }

    /// A connector through `proxy`, for plain `http` only (the `rustls`
    /// feature is off).
    #[cfg(not(feature = "rustls"))]
    pub fn new(proxy: Proxy) -> Self {
        Self {
            hop: Hop::new(proxy.clone()),
            proxy,
        }
    }

    /// The same connector through `proxy` instead.
    pub fn with_proxy(self, proxy: Proxy) -> Self {
        #[cfg(feature = "rustls")]
        return Self::new(proxy, self.trust);
        #[cfg(not(feature = "rustls"))]
        Self::new(proxy)
    }

    /// The same connector trusting `trust` instead.
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn with_trust(self, trust: Trust) -> Self {
        Self::new(self.proxy, trust)
    }

    /// The `Proxy-Authorization` header value a plain-`http` request to
    /// `uri` needs: `Some` when it goes through a proxy whose URL has
    /// credentials. Marked sensitive.
    pub fn proxy_authorization(&self, uri: &Uri) -> Option<HeaderValue> {
        self.proxy.authorization_for(uri)
    }
}

impl fmt::Debug for HttpsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("HttpsConnector");
        d.field("proxy", &self.proxy);
        #[cfg(feature = "rustls")]
        d.field("trust", &self.trust);
        d.finish()
    }
}

impl Service<Uri> for HttpsConnector {
    type Response = HttpsStream;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        #[cfg(feature = "rustls")]
        return self.tls.poll_ready(cx);
        #[cfg(not(feature = "rustls"))]
        self.hop.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        // hyper-util's client sends a request in absolute form when its
        // connection says it goes to a proxy.
        let proxied = matches!(self.proxy.route(&dst), Route::Forward(_));
        #[cfg(feature = "rustls")]
        let connecting = self.tls.call(dst);
        #[cfg(not(feature = "rustls"))]
        let connecting: Pin<Box<dyn Future<Output = Result<Inner, BoxError>> + Send>> =
            if dst.scheme_str() == Some("https") {
                Box::pin(async {
                    Err(io::Error::other("https needs the `rustls` feature of wokelo-auth").into())
                })
            } else {
                self.hop.call(dst)
            };
        Box::pin(async move {
            Ok(HttpsStream {
                inner: connecting.await?,
                proxied,
            })
        })
    }
}

/// A connection made by [`HttpsConnector`]: TCP, through a proxy or not,
/// with TLS for `https`.
pub struct HttpsStream {
    inner: Inner,
    proxied: bool,
}

impl fmt::Debug for HttpsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpsStream")
            .field("proxied", &self.proxied)
            .finish_non_exhaustive()
    }
}

impl Connection for HttpsStream {
    fn connected(&self) -> Connected {
        self.inner.connected().proxy(self.proxied)
    }
}

impl Read for HttpsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl Write for HttpsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
}

/// Connects to the next hop: the destination itself, a `CONNECT` tunnel
/// through the proxy, or the proxy (for a plain-`http` request).
#[derive(Clone)]
struct Hop {
    proxy: Proxy,
    tcp: HttpConnector,
    /// Reaches the proxy itself, over TLS for an `https://` proxy URL.
    #[cfg(feature = "rustls")]
    to_proxy: hyper_rustls::HttpsConnector<HttpConnector>,
}

impl Hop {
    #[cfg(feature = "rustls")]
    fn new(proxy: Proxy, config: rustls::ClientConfig) -> Self {
        let tcp = tcp();
        let to_proxy = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp.clone());
        Self {
            proxy,
            tcp,
            to_proxy,
        }
    }

    #[cfg(not(feature = "rustls"))]
    fn new(proxy: Proxy) -> Self {
        Self { proxy, tcp: tcp() }
    }

    /// The connector to the proxy at `uri`.
    #[cfg(feature = "rustls")]
    fn to_proxy(
        &self,
        _uri: &Uri,
    ) -> Result<hyper_rustls::HttpsConnector<HttpConnector>, BoxError> {
        Ok(self.to_proxy.clone())
    }

    /// The connector to the proxy at `uri`.
    #[cfg(not(feature = "rustls"))]
    fn to_proxy(&self, uri: &Uri) -> Result<HttpConnector, BoxError> {
        if uri.scheme_str() == Some("https") {
            return Err(io::Error::other("an https:// proxy needs the `rustls` feature").into());
        }
        Ok(self.tcp.clone())
    }
}

fn tcp() -> HttpConnector {
    let mut tcp = HttpConnector::new();
    // The destination may be https: TLS is layered on by the caller.
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp
}

#[cfg(feature = "rustls")]
fn plain(tcp: TokioIo<TcpStream>) -> HopStream {
    hyper_rustls::MaybeHttpsStream::Http(tcp)
}

#[cfg(not(feature = "rustls"))]
fn plain(tcp: TokioIo<TcpStream>) -> HopStream {
    tcp
}

impl Service<Uri> for Hop {
    type Response = HopStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<HopStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let (proxy, tunnel) = match self.proxy.route(&dst) {
            Route::Direct => {
                let connecting = self.tcp.call(dst);
                return Box::pin(async move { Ok(plain(connecting.await?)) });
            }
            Route::Tunnel(proxy) => (proxy, true),
            Route::Forward(proxy) => (proxy, false),
        };
        let address = proxy::address(&proxy);
        let to_proxy = match self.to_proxy(proxy.uri()) {
            Ok(to_proxy) => to_proxy,
            Err(e) => return Box::pin(async move { Err(ViaProxy::boxed(address, e)) }),
        };
        if tunnel {
            let mut tunnel = Tunnel::new(proxy.uri().clone(), to_proxy);
            if let Some(auth) = proxy.basic_auth() {
                tunnel = tunnel.with_auth(auth.clone());
            }
            let connecting = tunnel.call(dst);
            Box::pin(async move { connecting.await.map_err(|e| ViaProxy::boxed(address, e)) })
        } else {
            let mut to_proxy = to_proxy;
            let connecting = to_proxy.call(proxy.uri().clone());
            Box::pin(async move { connecting.await.map_err(|e| ViaProxy::boxed(address, e)) })
        }
    }
}

/// A connection through a proxy failed: names the proxy (its address,
/// never its credentials) above the cause.
#[derive(Debug)]
pub(crate) struct ViaProxy {
    pub(crate) proxy: String,
    source: BoxError,
}

impl ViaProxy {
    fn boxed(proxy: String, source: impl Into<BoxError>) -> BoxError {
        Box::new(ViaProxy {
            proxy,
            source: source.into(),
        })
    }
}

impl fmt::Display for ViaProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "through the proxy {}", self.proxy)
    }
}

impl StdError for ViaProxy {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}
