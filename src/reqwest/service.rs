//! [`ReqwestService`]: a [`reqwest::Client`](::reqwest::Client) as a tower
//! HTTP service.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use sync_wrapper::SyncWrapper;
use tower_service::Service;

use crate::BoxError;

/// A [`reqwest::Client`](::reqwest::Client) as a tower service of
/// `http::Request<B>` to `http::Response<reqwest::Body>`, so that the
/// client's settings (proxy, TLS, timeouts, connection pool) serve a tower
/// stack:
///
/// - under [`WokeloAuthLayer`](crate::WokeloAuthLayer), for the API calls;
/// - as the token endpoint's client, with
///   [`PasswordGrant::with_http_client`](crate::PasswordGrant::with_http_client),
///   so that token fetches go through the same proxy and trust settings.
///
/// Requests need an absolute URI (`https://host/path`), as with a
/// hyper-util client. The request body may be any [`http_body::Body`] that
/// is `Send` (it need not be `Sync`); it is streamed to reqwest as it is
/// read. Cloning is cheap: clones share the client's connection pool.
///
/// See the [module docs](crate::reqwest) for an example.
#[derive(Clone)]
pub struct ReqwestService {
    inner: ::reqwest::Client,
}

impl ReqwestService {
    /// Sends requests through `client`.
    pub fn new(client: ::reqwest::Client) -> Self {
        Self { inner: client }
    }

    /// The client.
    pub fn get_ref(&self) -> &::reqwest::Client {
        &self.inner
    }

    /// Unwraps the client.
    pub fn into_inner(self) -> ::reqwest::Client {
        self.inner
    }
}

impl From<::reqwest::Client> for ReqwestService {
    fn from(client: ::reqwest::Client) -> Self {
        Self::new(client)
    }
}

impl fmt::Debug for ReqwestService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ReqwestService").field(&self.inner).finish()
    }
}

impl<B> Service<Request<B>> for ReqwestService
where
    B: Body + Send + 'static,
    B::Data: Into<Bytes>,
    B::Error: Into<BoxError>,
{
    type Response = Response<::reqwest::Body>;
    type Error = ::reqwest::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // reqwest's client queues internally; it is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let request = request.map(|body| ::reqwest::Body::wrap(SyncBody::new(body)));
        let state = match ::reqwest::Request::try_from(request) {
            Ok(request) => State::Sending {
                future: self.inner.call(request),
            },
            // Not an absolute http(s) URI: reqwest says so.
            Err(error) => State::Failed { error: Some(error) },
        };
        ResponseFuture { state }
    }
}

/// The future of [`reqwest::Client`](::reqwest::Client)'s own tower service.
type Pending = <::reqwest::Client as Service<::reqwest::Request>>::Future;

pin_project! {
    /// The response future of [`ReqwestService`].
    pub struct ResponseFuture {
        #[pin]
        state: State,
    }
}

pin_project! {
    #[project = StateProj]
    enum State {
        Sending { #[pin] future: Pending },
        Failed { error: Option<::reqwest::Error> },
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<::reqwest::Body>, ::reqwest::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Sending { future } => Poll::Ready(ready!(future.poll(cx)).map(Into::into)),
            StateProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

pin_project! {
    /// A `Send` body made `Sync`, as reqwest requires, by allowing access
    /// only through `Pin<&mut Self>`. Its size hint is taken when wrapped
    /// and counted down as data is read, since `SyncWrapper` gives no
    /// shared access to the body.
    struct SyncBody<B> {
        #[pin]
        inner: SyncWrapper<B>,
        hint: SizeHint,
        ended: bool,
    }
}

impl<B: Body> SyncBody<B> {
    fn new(body: B) -> Self {
        Self {
            hint: body.size_hint(),
            ended: body.is_end_stream(),
            inner: SyncWrapper::new(body),
        }
    }
}

impl<B> Body for SyncBody<B>
where
    B: Body,
    B::Data: Into<Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        let frame = ready!(this.inner.get_pin_mut().poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let read = bytes::Buf::remaining(data) as u64;
                    let upper = this.hint.upper().map(|u| u.saturating_sub(read));
                    this.hint.set_lower(this.hint.lower().saturating_sub(read));
                    if let Some(upper) = upper {
                        this.hint.set_upper(upper);
                    }
                }
            }
            Some(Err(_)) | None => *this.ended = true,
        }
        Poll::Ready(frame.map(|frame| frame.map(|frame| frame.map_data(Into::into))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    #[tokio::test]
    async fn a_wrapped_body_keeps_its_bytes_and_size() {
        let body = SyncBody::new(Full::new(Bytes::from_static(b"hello")));
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
    }

    #[tokio::test]
    async fn a_streamed_body_counts_its_hint_down_and_ends() {
        let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Ok(Frame::data(Bytes::from_static(b"cde"))),
        ];
        let mut body = std::pin::pin!(SyncBody::new(StreamBody::new(futures_util::stream::iter(
            chunks
        ))));
        assert_eq!(body.size_hint().lower(), 0);
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "ab");
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "cde"
        );
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none(), "stays ended");
    }
}
