//! Helpers shared by the integration tests: a layer and a hyper-util client
//! pointed at the embedded mock server.
#![allow(dead_code, unreachable_pub)]

#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "rustls")]
pub mod tls;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use sha2::{Digest, Sha256};
use tower::{Layer, ServiceExt};
use wokelo_auth::{
    testing::MockServer, BoxError, Credentials, Error, PasswordGrant, ReplayBody, WokeloAuth,
    WokeloAuthBuilder, WokeloAuthLayer,
};

/// The hyper-util client the layer wraps in these tests.
pub type HttpClient<B> = Client<HttpConnector, ReplayBody<B>>;

/// The mock server's valid credentials.
pub fn credentials(server: &MockServer) -> Credentials {
    let c = server.config();
    Credentials::new(&c.client_id, &c.client_secret, &c.username, &c.password)
        .with_base_url(server.base_url().parse().expect("the mock's URL is valid"))
}

/// The mock server's valid credentials for another base URL (a TLS front,
/// a name only a proxy reaches).
pub fn credentials_at(server: &MockServer, base: &str) -> Credentials {
    credentials(server).with_base_url(base.parse().expect("a valid base URL"))
}

/// A builder for the mock's credentials, with short retry backoff so that
/// transient-failure tests stay quick.
pub fn builder(server: &MockServer) -> WokeloAuthBuilder {
    WokeloAuthLayer::builder(PasswordGrant::new(credentials(server)))
        .token_retry_backoff(Duration::from_millis(5))
}

/// A service for `layer` over a fresh hyper-util client.
pub fn client<B>(layer: &WokeloAuthLayer) -> WokeloAuth<HttpClient<B>>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    layer.layer(Client::builder(TokioExecutor::new()).build_http())
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// Sends `request` through a clone of `service` and reads the whole answer.
pub async fn send<B>(
    service: &WokeloAuth<HttpClient<B>>,
    request: Request<B>,
) -> Result<Answer, Error>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let response = service.clone().oneshot(request).await?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| Error::Service(e.into()))?
        .to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// The status of `GET url` sent through `service`, which must answer.
pub async fn status_of(service: &WokeloAuth<HttpClient<Empty<Bytes>>>, url: String) -> StatusCode {
    send(service, get(url))
        .await
        .expect("the request is answered")
        .status
}

/// `GET url` with an empty body.
pub fn get(url: String) -> Request<Empty<Bytes>> {
    Request::get(url)
        .body(Empty::new())
        .expect("a valid request")
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u64) -> Bytes {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect::<Vec<u8>>().into()
}

/// A tracing subscriber that records everything, at TRACE, into a buffer.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    pub fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync {
        let sink = self.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
