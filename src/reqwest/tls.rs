//! [`tls_config`]: rustls settings for a reqwest client, on the crate's own
//! crypto provider.

use std::sync::Arc;

/// A rustls client configuration for a [`reqwest::Client`](::reqwest::Client):
/// the *ring* crypto provider (the one the token client uses), TLS 1.2 and
/// 1.3, the webpki root store, HTTP/1.1.
///
/// Pass it to `reqwest::ClientBuilder::tls_backend_preconfigured`, with
/// reqwest's `rustls-no-provider` feature instead of its default TLS: the
/// client then needs no process-level rustls `CryptoProvider`, and the
/// build has one crypto backend rather than *ring* and aws-lc-rs side by
/// side. (reqwest recognises the configuration only if both crates use the
/// same rustls release, 0.23.)
///
/// It announces no ALPN protocol, so connections speak HTTP/1.1; for HTTP/2
/// (reqwest's `http2` feature), set `alpn_protocols` to
/// `[b"h2".to_vec(), b"http/1.1".to_vec()]`.
///
/// ```
/// let http = reqwest::Client::builder()
///     .tls_backend_preconfigured(wokelo_auth::reqwest::tls_config())
///     .build()?;
/// # let _ = http;
/// # Ok::<(), reqwest::Error>(())
/// ```
pub fn tls_config() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}
