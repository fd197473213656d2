//! The mock's response body: a buffered body, or a long known-length body
//! streamed in chunks without being allocated whole.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};

/// Size of each frame of a streamed body.
const CHUNK: usize = 16 * 1024;

#[derive(Debug)]
pub(crate) struct MockBody {
    /// Sent first (buffered bodies are only a head).
    head: Option<Bytes>,
    /// Repeated until `remaining` bytes followed the head.
    filler: Bytes,
    remaining: u64,
}

impl MockBody {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> MockBody {
        let bytes = bytes.into();
        MockBody {
            head: (!bytes.is_empty()).then_some(bytes),
            filler: Bytes::new(),
            remaining: 0,
        }
    }

    /// Exactly `len` bytes of unterminated JSON: `{"access_token":"AAAA…`.
    pub(crate) fn oversized(len: usize) -> MockBody {
        const PREFIX: &[u8] = br#"{"access_token":""#;
        let head = Bytes::from_static(&PREFIX[..PREFIX.len().min(len)]);
        MockBody {
            remaining: (len - head.len()) as u64,
            head: (!head.is_empty()).then_some(head),
            filler: Bytes::from(vec![b'A'; CHUNK]),
        }
    }

    fn len(&self) -> u64 {
        self.head.as_ref().map_or(0, |head| head.len() as u64) + self.remaining
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(head) = this.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = this
            .filler
            .len()
            .min(usize::try_from(this.remaining).unwrap_or(usize::MAX));
        this.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(this.filler.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.len() == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len())
    }
}

pub(crate) type MockResponse = Response<MockBody>;

/// A response with a `Content-Type` and a buffered body.
pub(crate) fn with_body(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> MockResponse {
    let mut response = Response::new(MockBody::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> MockResponse {
    with_body(status, "application/json", value.to_string())
}

/// A JSON response from a caller-supplied (possibly invalid) body.
pub(crate) fn raw_json(status: u16, body: &str) -> MockResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    with_body(status, "application/json", body.to_owned())
}

/// Adds `Retry-After: <secs>`.
pub(crate) fn retry_after(mut response: MockResponse, secs: u64) -> MockResponse {
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// `{"detail": "Not found."}`, the API's 404.
pub(crate) fn not_found() -> MockResponse {
    json(
        StatusCode::NOT_FOUND,
        &serde_json::json!({"detail": "Not found."}),
    )
}

/// The API's 405, as Django REST framework words it.
pub(crate) fn method_not_allowed(method: &http::Method, allow: &'static str) -> MockResponse {
    let mut response = json(
        StatusCode::METHOD_NOT_ALLOWED,
        &serde_json::json!({"detail": format!("Method \"{method}\" not allowed.")}),
    );
    response
        .headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn oversized_body_has_exact_length_and_prefix() {
        for len in [0, 5, 17, 18, CHUNK * 3 + 7] {
            let body = MockBody::oversized(len);
            assert_eq!(body.size_hint().exact(), Some(len as u64));
            let bytes = body.collect().await.unwrap().to_bytes();
            assert_eq!(bytes.len(), len);
            assert!(br#"{"access_token":""#.starts_with(&bytes[..len.min(17)]));
            assert!(serde_json::from_slice::<serde_json::Value>(&bytes).is_err());
        }
    }

    #[test]
    fn full_body_is_one_frame() {
        let body = MockBody::full("abc");
        assert_eq!(body.size_hint().exact(), Some(3));
        assert!(!body.is_end_stream());
        assert!(MockBody::full(Bytes::new()).is_end_stream());
    }
}
