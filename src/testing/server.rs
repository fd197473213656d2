//! The listener, the accept loop and the top-level routing.

use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinSet;

use super::body::{self, MockResponse};
use super::state::Shared;
use super::{api, token_endpoint};

/// Large enough that thousands of simultaneous connects are not dropped
/// (the kernel caps it at `somaxconn`).
const BACKLOG: u32 = 8192;

pub(crate) fn bind() -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    socket.listen(BACKLOG)
}

/// Accepts connections until aborted. The connections live in a `JoinSet`
/// owned by this future, so aborting it closes every connection too.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No header-read timeout: it needs a timer, and with paused tokio time an
    // idle keep-alive connection would be cut whenever the clock jumps.
    builder
        .http1()
        .keep_alive(true)
        .header_read_timeout(None::<Duration>);
    // No cap on concurrent HTTP/2 streams, so load tests over one h2c
    // connection are limited by the client only.
    builder.http2().max_concurrent_streams(None::<u32>);
    let builder = Arc::new(builder);

    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let builder = Arc::clone(&builder);
                    let shared = Arc::clone(&shared);
                    connections.spawn(async move {
                        let service = service_fn(move |request| {
                            let shared = Arc::clone(&shared);
                            async move { Ok::<_, Infallible>(respond(&shared, request).await) }
                        });
                        if let Err(error) = builder.serve_connection(TokioIo::new(stream), service).await {
                            tracing::debug!(%error, "mock server connection failed");
                        }
                    });
                }
                Err(error) => {
                    // Out of file descriptors, most likely: back off briefly
                    // rather than spin or give up.
                    tracing::warn!(%error, "mock server failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn respond(shared: &Shared, request: Request<Incoming>) -> MockResponse {
    let (parts, incoming) = request.into_parts();
    // Read the whole body before answering, even to refuse the request, as the
    // buffering reverse proxy in front of the real API does.
    let body = match incoming.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            tracing::debug!(%error, "mock server failed to read a request body");
            return body::json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"detail": "Could not read the request body."}),
            );
        }
    };
    let path = parts.uri.path();
    let mut response = if path == "/auth/token/" || path == "/auth/token" {
        if parts.method == Method::POST {
            token_endpoint::handle(shared, &parts, &body).await
        } else {
            body::method_not_allowed(&parts.method, "POST")
        }
    } else if path == "/api" || path.starts_with("/api/") {
        api::handle(shared, &parts, &body)
    } else {
        body::not_found()
    };
    response
        .headers_mut()
        .insert("server", HeaderValue::from_static("wokelo-auth-mock"));
    response
}
