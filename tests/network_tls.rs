//! Trust: the token client over TLS to a server whose certificate a private
//! CA issued. Untrusted, it fails once with a typed error naming the problem
//! and the fix; with the CA (builder or `SSL_CERT_FILE`), it gets a token.
#![cfg(feature = "rustls")]

mod common;

use std::time::Duration;

use common::{credentials_at, tls::TlsFront};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::sync::Mutex;
use tower::{Layer, ServiceExt};
use wokelo_auth::{
    testing::MockServer, Error, HttpsConnector, PasswordGrant, Proxy, TokenErrorKind, TokenSource,
    Trust, WokeloAuthLayer,
};

/// `SSL_CERT_FILE` is process-wide: the one test that sets it runs alone.
static ENV: Mutex<()> = Mutex::const_new(());

/// GET a search through the layer; the API client trusts `api_trust`.
async fn search(layer: &WokeloAuthLayer, base: &str, api_trust: Trust) -> Result<u16, Error> {
    let connector = HttpsConnector::new(Proxy::none(), api_trust);
    let client = layer.layer(Client::builder(TokioExecutor::new()).build(connector));
    let request = http::Request::get(format!("{base}/api/enterprise/company/search?query=stripe"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    Ok(client.oneshot(request).await?.status().as_u16())
}

fn layer(grant: PasswordGrant) -> WokeloAuthLayer {
    WokeloAuthLayer::builder(grant)
        .token_retry_backoff(Duration::from_millis(5))
        .build()
}

#[tokio::test]
async fn an_untrusted_certificate_fails_once_naming_the_issuer_problem() {
    let _env = ENV.lock().await;
    let server = MockServer::start().await;
    let front = TlsFront::start(server.addr()).await;
    let base = format!("https://127.0.0.1:{}", front.addr.port());
    let grant = PasswordGrant::new(credentials_at(&server, &base)).without_proxy();

    let e = search(&layer(grant), &base, Trust::webpki_roots())
        .await
        .unwrap_err();
    let e = e.token_error().expect("a token error");
    assert_eq!(e.kind(), TokenErrorKind::Configuration, "{e}");
    let shown = e.to_string();
    assert!(
        shown.contains("could not reach the token endpoint")
            && shown.contains("unknown issuer")
            && shown.contains("PasswordGrant::with_ca_file or SSL_CERT_FILE"),
        "{shown}"
    );
    assert_eq!(front.connections(), 1, "a certificate error is not retried");
    assert_eq!(server.stats().token_requests, 0);
}

#[tokio::test]
async fn a_ca_file_given_to_the_builder_is_trusted() {
    let _env = ENV.lock().await;
    let server = MockServer::start().await;
    let front = TlsFront::start(server.addr()).await;
    let base = format!("https://127.0.0.1:{}", front.addr.port());
    let grant = PasswordGrant::new(credentials_at(&server, &base))
        .without_proxy()
        .with_ca_file(front.ca_file())
        .unwrap();
    let api_trust = Trust::webpki_roots()
        .with_pem(front.ca_pem.as_bytes())
        .unwrap();

    assert_eq!(search(&layer(grant), &base, api_trust).await.unwrap(), 200);
    assert_eq!(server.stats().token_requests, 1);
    assert_eq!(front.connections(), 2, "one token request, one API call");
}

#[tokio::test]
async fn a_certificate_for_another_name_says_so() {
    let _env = ENV.lock().await;
    let server = MockServer::start().await;
    let front = TlsFront::start_for(server.addr(), &["other.test"]).await;
    let base = format!("https://127.0.0.1:{}", front.addr.port());
    let grant = PasswordGrant::new(credentials_at(&server, &base))
        .without_proxy()
        .with_trust(
            Trust::webpki_roots()
                .with_pem(front.ca_pem.as_bytes())
                .unwrap(),
        );

    let e = grant.fetch(None).await.unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::Configuration, "{e}");
    assert!(e.to_string().contains("for another host name"), "{e}");
}

#[tokio::test]
async fn tls_to_a_plain_http_port_names_the_handshake_failure() {
    let _env = ENV.lock().await;
    let server = MockServer::start().await;
    let base = format!("https://127.0.0.1:{}", server.addr().port());
    let grant = PasswordGrant::new(credentials_at(&server, &base)).without_proxy();

    let e = grant.fetch(None).await.unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains(": TLS handshake failed: "), "{e}");
}

#[tokio::test]
async fn ssl_cert_file_is_read_when_the_client_is_built() {
    let _env = ENV.lock().await;
    let server = MockServer::start().await;
    let front = TlsFront::start(server.addr()).await;
    let base = format!("https://127.0.0.1:{}", front.addr.port());

    std::env::set_var("SSL_CERT_FILE", front.ca_file());
    let grant = PasswordGrant::new(credentials_at(&server, &base)).without_proxy();
    std::env::set_var("SSL_CERT_FILE", "/nonexistent/wokelo-ca.pem");
    let broken = PasswordGrant::new(credentials_at(&server, &base)).without_proxy();
    std::env::remove_var("SSL_CERT_FILE");

    let token = grant
        .fetch(None)
        .await
        .expect("the CA of SSL_CERT_FILE is trusted");
    assert!(token.expires_in().is_some());
    assert_eq!(server.stats().token_requests, 1);

    let e = broken.fetch(None).await.unwrap_err();
    assert_eq!(e.kind(), TokenErrorKind::Configuration, "{e}");
    assert!(
        e.to_string()
            .contains("SSL_CERT_FILE=/nonexistent/wokelo-ca.pem"),
        "{e}"
    );
    assert_eq!(
        front.connections(),
        1,
        "nothing is sent with a broken trust"
    );

    // A bundle whose only certificate does not parse is refused too, rather
    // than silently leaving the webpki roots alone.
    let dir = std::env::temp_dir().join(format!("wokelo-bad-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.pem");
    std::fs::write(
        &bad,
        "-----BEGIN CERTIFICATE-----\nTm90IGEgY2VydGlmaWNhdGUu\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let dir_var = std::env::var_os("SSL_CERT_DIR");
    std::env::remove_var("SSL_CERT_DIR");
    std::env::set_var("SSL_CERT_FILE", &bad);
    let result = wokelo_auth::Trust::from_env();
    std::env::remove_var("SSL_CERT_FILE");
    if let Some(value) = dir_var {
        std::env::set_var("SSL_CERT_DIR", value);
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let e = result.unwrap_err();
    assert!(e.to_string().contains("SSL_CERT_FILE="), "{e}");
}
