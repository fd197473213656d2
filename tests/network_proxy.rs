//! Proxies: the token client through a forward proxy on 127.0.0.1 that this
//! file starts, for a base URL on `wokelo.test`, a name only the proxy can
//! reach (it maps every `*.test` host to 127.0.0.1). And what an error says
//! when nothing is reached: DNS failure, connection refused, proxy refusal.
#![cfg(feature = "rustls")]

mod common;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex as StdMutex,
    },
};

use common::{credentials_at, tls::TlsFront, Captured};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::Mutex,
};
use tower::{Layer, ServiceExt};
use wokelo_auth::{
    testing::MockServer, HttpsConnector, PasswordGrant, Proxy, TokenError, TokenErrorKind,
    TokenSource, Trust, WokeloAuthLayer,
};

/// The proxy variables and the resolver are process-wide: the test that
/// sets variables runs alone, and so do the tests that resolve names.
static ENV: Mutex<()> = Mutex::const_new(());

const PROXY_USER: &str = "proxy-user";
const PROXY_PASSWORD: &str = "pr0xy-s3cret-pa55";
/// `Basic base64("proxy-user:pr0xy-s3cret-pa55")`.
const PROXY_BASIC: &str = "Basic cHJveHktdXNlcjpwcjB4eS1zM2NyZXQtcGE1NQ==";

/// A request line and its `Proxy-Authorization` value, as the proxy saw them.
type Seen = (String, Option<String>);

/// What the forward proxy does with a request.
#[derive(Clone, Copy)]
enum Answer {
    /// Forwards it (after checking the credentials, if `require_auth`).
    Forward { require_auth: bool },
    /// Refuses every request with this status.
    Refuse(u16),
}

/// A forward proxy: `CONNECT host:port` tunnels, absolute-form requests
/// forwarded in origin form; `*.test` hosts are 127.0.0.1.
struct ForwardProxy {
    addr: SocketAddr,
    connects: Arc<AtomicUsize>,
    forwards: Arc<AtomicUsize>,
    /// Request lines and `Proxy-Authorization` values seen.
    seen: Arc<StdMutex<Vec<Seen>>>,
}

impl ForwardProxy {
    async fn start(answer: Answer) -> ForwardProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = ForwardProxy {
            addr: listener.local_addr().unwrap(),
            connects: Arc::default(),
            forwards: Arc::default(),
            seen: Arc::default(),
        };
        let (connects, forwards, seen) = (
            proxy.connects.clone(),
            proxy.forwards.clone(),
            proxy.seen.clone(),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (connects, forwards, seen) = (connects.clone(), forwards.clone(), seen.clone());
                tokio::spawn(async move {
                    let _ = serve(client, answer, &connects, &forwards, &seen).await;
                });
            }
        });
        proxy
    }

    fn url(&self, with_credentials: bool) -> String {
        if with_credentials {
            format!("http://{PROXY_USER}:{PROXY_PASSWORD}@{}", self.addr)
        } else {
            format!("http://{}", self.addr)
        }
    }

    fn connects(&self) -> usize {
        self.connects.load(Ordering::SeqCst)
    }

    fn forwards(&self) -> usize {
        self.forwards.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(
    client: TcpStream,
    answer: Answer,
    connects: &AtomicUsize,
    forwards: &AtomicUsize,
    seen: &StdMutex<Vec<Seen>>,
) -> std::io::Result<()> {
    let mut client = BufReader::new(client);
    let mut request_line = String::new();
    client.read_line(&mut request_line).await?;
    let mut headers = Vec::new();
    let mut auth = None;
    loop {
        let mut line = String::new();
        client.read_line(&mut line).await?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        match line.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("proxy-authorization") => {
                auth = Some(value.trim().to_owned());
            }
            _ => headers.push(line),
        }
    }
    let request_line = request_line.trim_end().to_owned();
    seen.lock()
        .unwrap()
        .push((request_line.clone(), auth.clone()));
    let refuse = match answer {
        Answer::Refuse(status) => Some(status),
        Answer::Forward { require_auth: true } if auth.as_deref() != Some(PROXY_BASIC) => Some(407),
        Answer::Forward { .. } => None,
    };
    if let Some(status) = refuse {
        let head = format!(
            "HTTP/1.1 {status} Refused\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return client.get_mut().write_all(head.as_bytes()).await;
    }
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut upstream;
    if method == "CONNECT" {
        connects.fetch_add(1, Ordering::SeqCst);
        upstream = TcpStream::connect(map(target)).await?;
        client
            .get_mut()
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
    } else {
        forwards.fetch_add(1, Ordering::SeqCst);
        let rest = target.strip_prefix("http://").expect("absolute form");
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        upstream = TcpStream::connect(map(authority)).await?;
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        head.extend(headers);
        head.push_str("\r\n");
        upstream.write_all(head.as_bytes()).await?;
    }
    // Bytes the client sent after the head (a request body) are in the
    // reader's buffer: copy_bidirectional on the BufReader passes them on.
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// `host:port` with `*.test` hosts on 127.0.0.1.
fn map(authority: &str) -> String {
    let (host, port) = authority.rsplit_once(':').expect("a port");
    assert!(
        host.ends_with(".test"),
        "the proxy only reaches *.test: {host}"
    );
    format!("127.0.0.1:{port}")
}

fn trusting(front: &TlsFront) -> Trust {
    Trust::webpki_roots()
        .with_pem(front.ca_pem.as_bytes())
        .unwrap()
}

fn assert_no_proxy_secret(text: &str) {
    for secret in [
        PROXY_PASSWORD,
        PROXY_BASIC,
        "cHJveHktdXNlcjpwcjB4eS1zM2NyZXQ",
    ] {
        assert!(!text.contains(secret), "a proxy secret leaked: {text}");
    }
}

#[tokio::test]
async fn https_goes_through_a_connect_tunnel_with_the_proxy_credentials() {
    let server = MockServer::start().await;
    let front = TlsFront::start(server.addr()).await;
    let proxy = ForwardProxy::start(Answer::Forward { require_auth: true }).await;
    let base = format!("https://wokelo.test:{}", front.addr.port());
    let settings = Proxy::all(&proxy.url(true)).unwrap();
    let grant = PasswordGrant::new(credentials_at(&server, &base))
        .with_proxy(settings.clone())
        .with_trust(trusting(&front));
    let debug = format!("{grant:?}");
    let layer = WokeloAuthLayer::new(grant);
    let connector = HttpsConnector::new(settings, trusting(&front));
    let client = layer.layer(Client::builder(TokioExecutor::new()).build(connector));

    let captured = Captured::default();
    let _guard = tracing::subscriber::set_default(captured.subscriber());
    let request = http::Request::get(format!("{base}/api/enterprise/company/search?query=stripe"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = client.oneshot(request).await.unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(server.stats().token_requests, 1);
    assert_eq!(proxy.connects(), 2, "the token request and the API call");
    assert_eq!(proxy.forwards(), 0);
    let target = format!("CONNECT wokelo.test:{} HTTP/1.1", front.addr.port());
    for (line, auth) in proxy.seen() {
        assert_eq!(line, target);
        assert_eq!(auth.as_deref(), Some(PROXY_BASIC));
    }
    let logs = captured.text();
    assert!(logs.contains("token acquired"), "{logs}");
    assert_no_proxy_secret(&logs);
    assert_no_proxy_secret(&debug);
}

#[tokio::test]
async fn plain_http_goes_to_the_proxy_in_absolute_form() {
    let server = MockServer::start().await;
    let proxy = ForwardProxy::start(Answer::Forward { require_auth: true }).await;
    let base = format!("http://wokelo.test:{}", server.addr().port());
    // Plain http to a host that is not loopback needs the opt-in.
    let grant = PasswordGrant::new(credentials_at(&server, &base).allow_http(true))
        .with_proxy(Proxy::all(&proxy.url(true)).unwrap());

    let token = grant.fetch(None).await.expect("a token through the proxy");

    assert!(token.expires_in().is_some());
    assert_eq!(server.stats().token_requests, 1);
    assert_eq!((proxy.forwards(), proxy.connects()), (1, 0));
    let seen = proxy.seen();
    assert_eq!(
        seen[0].0,
        format!("POST {base}/auth/token/ HTTP/1.1"),
        "absolute form"
    );
    assert_eq!(seen[0].1.as_deref(), Some(PROXY_BASIC));
}

#[tokio::test]
async fn no_proxy_sends_the_token_request_direct() {
    let _env = ENV.lock().await;
    let server = MockServer::start().await;
    let proxy = ForwardProxy::start(Answer::Forward {
        require_auth: false,
    })
    .await;
    let base = format!("https://wokelo.test:{}", server.addr().port());
    let grant = PasswordGrant::new(credentials_at(&server, &base)).with_proxy(
        Proxy::all(&proxy.url(true))
            .unwrap()
            .no_proxy("example.com, wokelo.test"),
    );

    let e = grant.fetch(None).await.unwrap_err();

    assert_eq!(e.kind(), TokenErrorKind::Unavailable, "{e}");
    assert!(
        e.to_string().starts_with(&format!(
            "could not reach the token endpoint {base}/auth/token/: DNS lookup failed ("
        )),
        "{e}"
    );
    assert_eq!((proxy.connects(), proxy.forwards()), (0, 0));
    assert_no_proxy_secret(&format!("{e} {e:?}"));
}

/// Fetches a token for `https://wokelo.test` through a proxy that answers
/// `CONNECT` with `answer`.
async fn refused_by(answer: Answer, with_credentials: bool) -> (TokenError, ForwardProxy) {
    let server = MockServer::start().await;
    let proxy = ForwardProxy::start(answer).await;
    let grant = PasswordGrant::new(credentials_at(&server, "https://wokelo.test:443"))
        .with_proxy(Proxy::all(&proxy.url(with_credentials)).unwrap());
    let e = grant.fetch(None).await.unwrap_err();
    assert_eq!(server.stats().token_requests, 0);
    assert_no_proxy_secret(&format!("{e} {e:?}"));
    (e, proxy)
}

#[tokio::test]
async fn a_proxy_asking_for_credentials_is_a_configuration_error() {
    let (e, proxy) = refused_by(Answer::Forward { require_auth: true }, false).await;
    assert_eq!(e.kind(), TokenErrorKind::Configuration, "{e}");
    assert!(
        e.to_string().contains(&format!(
            ": the proxy requires credentials or refused them (407 Proxy Authentication Required): put them in the proxy URL, http://user:password@host:port (proxy {})",
            proxy.addr
        )),
        "{e}"
    );
}

#[tokio::test]
async fn a_proxy_refusing_its_credentials_says_so_without_them() {
    let (e, _) = refused_by(Answer::Refuse(407), true).await;
    assert_eq!(e.kind(), TokenErrorKind::Configuration, "{e}");
    assert!(
        e.to_string()
            .contains("(407 Proxy Authentication Required)"),
        "{e}"
    );
}

#[tokio::test]
async fn a_proxy_refusing_the_tunnel_is_named() {
    let (e, proxy) = refused_by(Answer::Refuse(403), true).await;
    assert_eq!(e.kind(), TokenErrorKind::Unavailable, "{e}");
    assert!(
        e.to_string().ends_with(&format!(
            ": the proxy refused the CONNECT tunnel (proxy {})",
            proxy.addr
        )),
        "{e}"
    );
}

#[tokio::test]
async fn a_connection_refused_is_named() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let server = MockServer::start().await;
    let base = format!("http://127.0.0.1:{port}");
    let grant = PasswordGrant::new(credentials_at(&server, &base));

    let e = grant.fetch(None).await.unwrap_err();

    assert_eq!(e.kind(), TokenErrorKind::Unavailable);
    assert_eq!(
        e.to_string(),
        format!("could not reach the token endpoint {base}/auth/token/: connection refused")
    );
}

#[tokio::test]
async fn a_proxy_refusing_connections_is_named() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let server = MockServer::start().await;
    let grant = PasswordGrant::new(credentials_at(&server, "https://wokelo.test"))
        .with_proxy(Proxy::all(&format!("http://{PROXY_USER}:{PROXY_PASSWORD}@{addr}")).unwrap());

    let e = grant.fetch(None).await.unwrap_err();

    assert_eq!(e.kind(), TokenErrorKind::Unavailable);
    assert!(
        e.to_string()
            .ends_with(&format!(": connection refused (proxy {addr})")),
        "{e}"
    );
    assert_no_proxy_secret(&format!("{e} {e:?}"));
}

#[tokio::test]
async fn an_unknown_host_is_a_dns_failure() {
    let _env = ENV.lock().await;
    let server = MockServer::start().await;
    let grant =
        PasswordGrant::new(credentials_at(&server, "https://wokelo.invalid")).without_proxy();

    let e = grant.fetch(None).await.unwrap_err();

    assert_eq!(e.kind(), TokenErrorKind::Unavailable);
    assert!(
        e.to_string().starts_with(
            "could not reach the token endpoint https://wokelo.invalid/auth/token/: DNS lookup failed ("
        ),
        "{e}"
    );
}

#[tokio::test]
async fn the_environment_is_read_when_the_client_is_built() {
    let _env = ENV.lock().await;
    let server = MockServer::start().await;
    let front = TlsFront::start(server.addr()).await;
    let proxy = ForwardProxy::start(Answer::Forward { require_auth: true }).await;
    let base = format!("https://wokelo.test:{}", front.addr.port());
    let build = || {
        PasswordGrant::new(credentials_at(&server, &base))
            .with_trust(trusting(&front))
            .with_encoding(Default::default())
    };

    // Lower case, as curl also reads it; unset before the fetch.
    std::env::set_var("https_proxy", proxy.url(true));
    let through_proxy = build();
    std::env::set_var("NO_PROXY", "wokelo.test");
    let direct = build();
    std::env::remove_var("https_proxy");
    std::env::remove_var("NO_PROXY");
    std::env::set_var("HTTPS_PROXY", proxy.url(true));
    let explicit_none = build().without_proxy();
    std::env::remove_var("HTTPS_PROXY");

    through_proxy
        .fetch(None)
        .await
        .expect("a token through the environment's proxy");
    assert_eq!((proxy.connects(), server.stats().token_requests), (1, 1));

    for grant in [direct, explicit_none] {
        let e = grant.fetch(None).await.unwrap_err();
        assert!(e.to_string().contains(": DNS lookup failed ("), "{e}");
    }
    assert_eq!(proxy.connects(), 1, "NO_PROXY and without_proxy go direct");
}
