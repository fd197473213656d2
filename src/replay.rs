//! Replaying a request body for the retry after a `401`.
//!
//! A `Full<Bytes>` body (what most clients send) is known whole up front:
//! its bytes are taken out at once and both attempts send them, one
//! [`Bytes`] clone apart, with nothing shared. Any other body streams on the
//! first attempt as it comes (nothing waits for the whole body) while a copy
//! of each chunk, a cheap [`Bytes`] clone, is kept in a buffer shared with
//! the response future. If the API answers `401` and the
//! whole body went out within the cap, the retry sends the kept chunks. A body
//! that outgrows the cap drops what was kept at once and is not retried, so
//! the layer never holds more than the cap.
//!
//! How a body ends decides whether it went out whole, and every ending a
//! [`Body`] may use counts:
//!
//! | the body ends with | went out whole when | the retry sends |
//! |---|---|---|
//! | a data frame after which `is_end_stream` is true | that frame is read | the data, exact size |
//! | a `None` poll (end flagged late) | the `None` is read | the data, exact size |
//! | its exact size hint's last byte (HTTP/1.1 with `content-length` reads no further) | that byte is read | the data, exact size |
//! | a trailers frame | the trailers are read | the data, then the same trailers; the size is a lower bound only, so that HTTP/1.1 sends it chunked, the only framing that carries trailers |
//! | `is_end_stream` before any poll (`Empty`) | at once | an empty body |
//! | an error | never: not replayed, the `401` goes back | |
//! | past the cap (bytes, trailers and bookkeeping) | never: not replayed, the `401` goes back | |
//!
//! Empty data frames carry nothing and are not kept: the retry sends the
//! same bytes without them.

use std::{
    any::Any,
    collections::VecDeque,
    fmt,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{ready, Context, Poll, Waker},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

/// The default cap on the memory kept to replay one request's body: 64 KiB.
///
/// The cap counts what the layer holds for the replay: the body's bytes and
/// trailers plus its own bookkeeping (about 120 bytes per request, 64 to 160
/// per chunk, and for trailers about 140 bytes per field and 4 per slot of
/// their map; see
/// [`max_replay_body_bytes`](crate::WokeloAuthBuilder::max_replay_body_bytes)),
/// so the largest body replayed under it is a little under 64 KiB.
pub const DEFAULT_MAX_REPLAY_BODY_BYTES: usize = 64 * 1024;

/// What each chunk kept costs beyond its bytes: the record `Bytes`
/// allocates the first time a chunk is shared (24 bytes on 64-bit targets;
/// counted as 32), and its `Bytes` in the list (`Chunks`).
const CHUNK_OVERHEAD: usize = 32;

/// What the buffer itself costs: its shared allocation (counts included).
const BUFFER_OVERHEAD: usize =
    std::mem::size_of::<Mutex<Buffer>>() + 2 * std::mem::size_of::<usize>();

/// What the layer holds to replay a body known whole (one `Bytes`).
fn whole_cost(len: usize) -> usize {
    len.saturating_add(CHUNK_OVERHEAD)
}

pin_project! {
    /// The request body the wrapped service receives.
    ///
    /// On the first attempt it is the caller's body, streamed as it is (and
    /// copied for a possible retry, up to the cap); on the retry after a `401`
    /// it is the copy. A `Full<Bytes>` body within the cap is taken whole
    /// when the request is called, and both attempts send its bytes. Its
    /// error type is the caller's body's error type.
    pub struct ReplayBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Passthrough { #[pin] body: B },
        Capture { #[pin] body: B, buffer: Arc<Mutex<Buffer>> },
        // A body known whole, sent from a copy (first attempt and retry).
        Whole { data: Option<Bytes> },
        // Trailers are rare: boxed, so that every `ReplayBody` (and the
        // request holding it) stays small on the hot path.
        Replay { chunks: VecDeque<Bytes>, trailers: Option<Box<HeaderMap>> },
    }
}

/// What the first attempt's body left for a retry.
#[derive(Debug)]
pub(crate) struct Buffer {
    chunks: Chunks,
    /// Body bytes kept.
    len: usize,
    /// Chunks kept.
    count: usize,
    /// The most memory to hold: body bytes and bookkeeping together.
    cap: usize,
    /// The body's exact size, if its size hint gave one: once that many
    /// bytes are read the data is whole, even if the end is never polled
    /// (HTTP/1.1 with a `content-length` stops reading there).
    exact: Option<u64>,
    trailers: Option<Box<HeaderMap>>,
    /// What the kept trailers cost against the cap.
    trailers_cost: usize,
    complete: bool,
    /// Over the cap, or the body failed: cannot be replayed.
    abandoned: bool,
}

/// A list of chunks that does not allocate for the first one (the common
/// single-frame body, such as `Full<Bytes>`).
#[derive(Debug, Default)]
struct Chunks {
    first: Option<Bytes>,
    rest: Vec<Bytes>,
}

impl Chunks {
    fn push(&mut self, chunk: Bytes) {
        if self.first.is_none() {
            self.first = Some(chunk);
        } else {
            self.rest.push(chunk);
        }
    }

    fn clear(&mut self) {
        self.first = None;
        self.rest = Vec::new();
    }

    fn to_deque(&self) -> VecDeque<Bytes> {
        self.first.iter().chain(&self.rest).cloned().collect()
    }
}

/// The response future's side of the replay: how to rebuild the body.
#[derive(Debug)]
pub(crate) enum ReplayHandle {
    /// The body was empty: the retry sends an empty body.
    Empty,
    /// The body was known whole up front: the retry sends these bytes.
    Whole(Bytes),
    /// The body is being copied.
    Buffered(Arc<Mutex<Buffer>>),
    /// The body is known to be over the cap.
    TooLarge,
}

impl<B> ReplayBody<B> {
    /// Wraps `body` for a request that will not be retried.
    pub(crate) fn passthrough(body: B) -> Self {
        Self {
            kind: Kind::Passthrough { body },
        }
    }

    fn replay(chunks: VecDeque<Bytes>, trailers: Option<Box<HeaderMap>>) -> Self {
        Self {
            kind: Kind::Replay { chunks, trailers },
        }
    }

    fn whole(data: Bytes) -> Self {
        Self {
            kind: Kind::Whole { data: Some(data) },
        }
    }
}

impl ReplayHandle {
    /// Prepares the replay of `body`, before its first attempt; the body to
    /// send is then [`ReplayBody::attach`]. A `Full<Bytes>` body's bytes are
    /// taken out at once (the body is left empty, and `attach` sends them):
    /// no buffer to share, no lock per frame, and a retry possible even if
    /// the first attempt's body was never read. Other bodies are copied up
    /// to `cap` bytes as they stream (see [`ReplayHandle::for_stream`]).
    #[inline]
    pub(crate) fn prepare<B: Body<Data = Bytes> + 'static>(body: &mut B, cap: usize) -> Self {
        let lower = usize::try_from(body.size_hint().lower()).unwrap_or(usize::MAX);
        if !body.is_end_stream() && whole_cost(lower) <= cap {
            if let Some(full) = (body as &mut dyn Any).downcast_mut::<Full<Bytes>>() {
                // `Full` yields all its data as one frame, at once.
                let mut cx = Context::from_waker(Waker::noop());
                match Pin::new(full).poll_frame(&mut cx) {
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        // (The size hint of `Full` is exact: within the cap.)
                        Ok(data) => return Self::Whole(data),
                        // `Full` has no trailers: never taken.
                        Err(_) => return Self::Empty,
                    },
                    Poll::Ready(None) => return Self::Empty,
                    Poll::Ready(Some(Err(never))) => match never {},
                    // Never for `Full`; nothing was taken, so capture as usual.
                    Poll::Pending => {}
                }
            }
        }
        Self::for_stream(body, cap)
    }

    /// Prepares the replay of a body copied up to `cap` bytes as it streams.
    fn for_stream<B: Body>(body: &B, cap: usize) -> Self {
        if body.is_end_stream() {
            return Self::Empty;
        }
        if body
            .size_hint()
            .lower()
            .saturating_add(BUFFER_OVERHEAD as u64)
            > cap as u64
        {
            return Self::TooLarge;
        }
        let exact = body.size_hint().exact();
        Self::Buffered(Arc::new(Mutex::new(Buffer {
            chunks: Chunks::default(),
            len: 0,
            count: 0,
            cap,
            exact,
            trailers: None,
            trailers_cost: 0,
            // No data to come: HTTP/1.1 sends `content-length: 0` and never
            // polls the body.
            complete: exact == Some(0),
            abandoned: false,
        })))
    }
}

impl<B> ReplayBody<B> {
    /// The body to send for a first attempt whose replay `handle` prepared
    /// (see [`ReplayHandle::prepare`]).
    #[inline]
    pub(crate) fn attach(body: B, handle: &ReplayHandle) -> Self {
        match handle {
            // The bytes were taken out of `body`, which is left empty.
            ReplayHandle::Whole(data) => Self::whole(data.clone()),
            ReplayHandle::Buffered(buffer) => Self {
                kind: Kind::Capture {
                    body,
                    buffer: buffer.clone(),
                },
            },
            ReplayHandle::Empty | ReplayHandle::TooLarge => Self::passthrough(body),
        }
    }

    /// Wraps `body` for a first attempt that may be retried, copying up to
    /// `cap` bytes as they stream.
    pub(crate) fn capture(body: B, cap: usize) -> (Self, ReplayHandle)
    where
        B: Body,
    {
        let handle = ReplayHandle::for_stream(&body, cap);
        (Self::attach(body, &handle), handle)
    }
}

impl ReplayHandle {
    /// The body for the retry, if the first attempt's body was sent whole and
    /// within the cap.
    pub(crate) fn replay<B>(&self) -> Option<ReplayBody<B>> {
        match self {
            Self::Empty => Some(ReplayBody::replay(VecDeque::new(), None)),
            Self::Whole(data) => Some(ReplayBody::whole(data.clone())),
            Self::TooLarge => None,
            Self::Buffered(buffer) => {
                let buffer = buffer.lock().unwrap_or_else(PoisonError::into_inner);
                (buffer.complete && !buffer.abandoned)
                    .then(|| ReplayBody::replay(buffer.chunks.to_deque(), buffer.trailers.clone()))
            }
        }
    }
}

/// What keeping a copy of `trailers` costs: the map (boxed), its index
/// (a copy keeps the original's size: 4 bytes a slot, counted at the map's
/// capacity), an entry for every value, and the bytes of every name and
/// value (each value its own `Bytes`, with a record like a chunk's).
fn trailers_cost(trailers: &HeaderMap) -> usize {
    let entry = std::mem::size_of::<(http::HeaderName, http::HeaderValue)>()
        // An entry's hash and links.
        + 4 * std::mem::size_of::<usize>();
    let map = std::mem::size_of::<HeaderMap>()
        .saturating_add(trailers.capacity().saturating_mul(4))
        .saturating_add(trailers.len().saturating_mul(entry));
    trailers.iter().fold(map, |cost, (name, value)| {
        cost.saturating_add(name.as_str().len())
            .saturating_add(value.len())
            .saturating_add(CHUNK_OVERHEAD)
    })
}

impl ReplayHandle {
    /// The size hint and `is_end_stream` of the body [`replay`](Self::replay)
    /// would give now, without building it; `None` if it would give none.
    pub(crate) fn replay_hint(&self) -> Option<(SizeHint, bool)> {
        match self {
            Self::Empty => Some((SizeHint::with_exact(0), true)),
            Self::Whole(data) => Some((SizeHint::with_exact(data.len() as u64), data.is_empty())),
            Self::TooLarge => None,
            Self::Buffered(buffer) => {
                let buffer = buffer.lock().unwrap_or_else(PoisonError::into_inner);
                let trailers = buffer.trailers.is_some();
                (buffer.complete && !buffer.abandoned).then(|| {
                    (
                        replay_size_hint(buffer.len as u64, trailers),
                        buffer.len == 0 && !trailers,
                    )
                })
            }
        }
    }
}

impl Buffer {
    /// What is held now: the bytes and records of every chunk, the
    /// trailers, the buffer and the list of chunks.
    fn held(&self) -> usize {
        (BUFFER_OVERHEAD + self.chunks.rest.capacity() * std::mem::size_of::<Bytes>())
            .saturating_add(self.count.saturating_mul(CHUNK_OVERHEAD))
            .saturating_add(self.trailers_cost)
            .saturating_add(self.len)
    }

    /// What keeping one more chunk of `len` bytes would hold at its peak,
    /// counting both lists while the list grows, and the capacity to grow
    /// it to.
    fn cost_with(&self, len: usize) -> (usize, Option<usize>) {
        let rest = &self.chunks.rest;
        let grow_to = (self.chunks.first.is_some() && rest.len() == rest.capacity())
            .then(|| (rest.capacity() * 2).max(4));
        let growth = grow_to.map_or(0, |c| c * std::mem::size_of::<Bytes>());
        let cost = self
            .held()
            .saturating_add(growth + CHUNK_OVERHEAD)
            .saturating_add(len);
        (cost, grow_to)
    }

    /// Lets go of everything kept: the body cannot be replayed.
    fn abandon(&mut self) {
        self.abandoned = true;
        self.chunks.clear();
        self.trailers = None;
        self.trailers_cost = 0;
    }

    fn record<E>(&mut self, frame: &Option<Result<Frame<Bytes>, E>>, ended: bool) {
        match frame {
            Some(Ok(frame)) if !self.abandoned => {
                if let Some(data) = frame.data_ref() {
                    if !data.is_empty() {
                        let (cost, grow_to) = self.cost_with(data.len());
                        if cost > self.cap {
                            // Over the cap: let go of the copy now.
                            self.abandon();
                            return;
                        }
                        if let Some(capacity) = grow_to {
                            let rest = &mut self.chunks.rest;
                            rest.reserve_exact(capacity - rest.len());
                        }
                        self.len += data.len();
                        self.count += 1;
                        self.chunks.push(data.clone());
                    }
                    // The last byte of a body of known size: nothing else
                    // may be read (a sender that trusts the size stops here).
                    self.complete |= self.exact == Some(self.len as u64);
                } else if let Some(trailers) = frame.trailers_ref() {
                    let cost = trailers_cost(trailers);
                    if self.held().saturating_add(cost) > self.cap {
                        self.abandon();
                        return;
                    }
                    self.trailers_cost = cost;
                    self.trailers = Some(Box::new(trailers.clone()));
                    // Trailers are a body's last frame.
                    self.complete = true;
                }
                self.complete |= ended;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) => self.abandon(),
            None => self.complete = true,
        }
    }
}

/// The size hint of a replayed body of `len` data bytes: exact, unless
/// trailers follow. Then only a lower bound: HTTP/1.1 carries trailers in
/// chunked encoding alone, which an exact size (a `content-length`) rules
/// out.
fn replay_size_hint(len: u64, trailers: bool) -> SizeHint {
    if trailers {
        let mut hint = SizeHint::new();
        hint.set_lower(len);
        hint
    } else {
        SizeHint::with_exact(len)
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Passthrough { body } => body.poll_frame(cx),
            KindProj::Capture { mut body, buffer } => {
                let frame = ready!(body.as_mut().poll_frame(cx));
                let ended = body.is_end_stream();
                buffer
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .record(&frame, ended);
                Poll::Ready(frame)
            }
            KindProj::Whole { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Replay { chunks, trailers } => Poll::Ready(
                chunks
                    .pop_front()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(|t| Frame::trailers(*t)))
                    .map(Ok),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Passthrough { body } | Kind::Capture { body, .. } => body.is_end_stream(),
            Kind::Whole { data } => data.is_none(),
            Kind::Replay { chunks, trailers } => chunks.is_empty() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Passthrough { body } | Kind::Capture { body, .. } => body.size_hint(),
            Kind::Whole { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Replay { chunks, trailers } => replay_size_hint(
                chunks.iter().map(|c| c.len() as u64).sum(),
                trailers.is_some(),
            ),
        }
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Passthrough { .. } => "passthrough",
            Kind::Capture { .. } => "capture",
            Kind::Whole { .. } => "whole",
            Kind::Replay { .. } => "replay",
        };
        f.debug_struct("ReplayBody").field("kind", &kind).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body to send and the replay handle, as the service prepares them.
    fn capture_known<B: Body<Data = Bytes> + 'static>(
        mut body: B,
        cap: usize,
    ) -> (ReplayBody<B>, ReplayHandle) {
        let handle = ReplayHandle::prepare(&mut body, cap);
        (ReplayBody::attach(body, &handle), handle)
    }
    use http_body_util::{BodyExt, Empty, Full, StreamBody};
    use std::convert::Infallible;

    fn stream(chunks: &[&'static [u8]]) -> impl Body<Data = Bytes, Error = Infallible> {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    async fn drain<B: Body<Data = Bytes>>(body: B) -> Bytes
    where
        B::Error: fmt::Debug,
    {
        body.collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn empty_body_replays_empty() {
        let (first, handle) = ReplayBody::capture(Empty::<Bytes>::new(), 10);
        assert!(matches!(handle, ReplayHandle::Empty));
        assert!(drain(first).await.is_empty());
        let again: ReplayBody<Empty<Bytes>> = handle.replay().unwrap();
        assert!(again.is_end_stream());
    }

    #[tokio::test]
    async fn full_body_replays_byte_for_byte() {
        let (first, handle) = ReplayBody::capture(Full::new(Bytes::from_static(b"hello")), 1024);
        assert_eq!(drain(first).await, "hello");
        let again: ReplayBody<Full<Bytes>> = handle.replay().unwrap();
        assert_eq!(again.size_hint().exact(), Some(5));
        assert_eq!(drain(again).await, "hello");
    }

    #[tokio::test]
    async fn full_body_is_taken_whole_and_replays_unread() {
        let (first, handle) = capture_known(Full::new(Bytes::from_static(b"hello")), 1024);
        assert!(matches!(handle, ReplayHandle::Whole(_)));
        assert_eq!(first.size_hint().exact(), Some(5));
        // Dropped unread: the retry still has every byte.
        drop(first);
        let again: ReplayBody<Full<Bytes>> = handle.replay().unwrap();
        assert_eq!(drain(again).await, "hello");
        let (first, handle) = capture_known(Full::new(Bytes::from_static(b"hi")), 1024);
        assert_eq!(drain(first).await, "hi");
        assert_eq!(drain(handle.replay::<Full<Bytes>>().unwrap()).await, "hi");
    }

    #[tokio::test]
    async fn full_body_over_the_cap_is_never_taken() {
        let (first, handle) = capture_known(Full::new(Bytes::from(vec![7u8; 11])), 10);
        assert!(matches!(handle, ReplayHandle::TooLarge));
        assert_eq!(drain(first).await.len(), 11);
        let (first, handle) = capture_known(Full::new(Bytes::new()), 1024);
        assert!(matches!(handle, ReplayHandle::Empty));
        assert!(first.is_end_stream());
    }

    #[tokio::test]
    async fn other_bodies_known_to_capture_stream_as_usual() {
        let (first, handle) = capture_known(stream(&[b"ab", b"cd"]), 1024);
        assert!(matches!(handle, ReplayHandle::Buffered(_)));
        assert_eq!(drain(first).await, "abcd");
        assert_eq!(
            drain(handle.replay::<Empty<Bytes>>().unwrap()).await,
            "abcd"
        );
    }

    #[tokio::test]
    async fn streamed_chunks_replay_in_order() {
        let (first, handle) = ReplayBody::capture(stream(&[b"ab", b"", b"cd", b"e"]), 1024);
        assert_eq!(drain(first).await, "abcde");
        let again = handle.replay::<Empty<Bytes>>().unwrap();
        assert_eq!(drain(again).await, "abcde");
    }

    #[tokio::test]
    async fn over_the_cap_is_not_replayable_and_keeps_nothing() {
        const HUNDRED: &[u8] = &[b'h'; 100];
        // Room for exactly one chunk and its bookkeeping.
        let cap = BUFFER_OVERHEAD + CHUNK_OVERHEAD + 100;
        let (first, handle) = ReplayBody::capture(stream(&[HUNDRED, HUNDRED]), cap);
        assert_eq!(drain(first).await.len(), 200);
        assert!(handle.replay::<Empty<Bytes>>().is_none());
        let ReplayHandle::Buffered(buffer) = &handle else {
            panic!("expected a buffer")
        };
        let buffer = buffer.lock().unwrap();
        assert!(buffer.abandoned && buffer.chunks.first.is_none() && buffer.chunks.rest.is_empty());
    }

    #[tokio::test]
    async fn bookkeeping_counts_against_the_cap() {
        const QUARTER: &[u8] = &[b'q'; 256];
        // Half the cap and its bookkeeping fit; the whole cap in bytes does
        // not, once the bookkeeping is added.
        let (first, handle) = ReplayBody::capture(stream(&[QUARTER; 2]), 1024);
        assert_eq!(drain(first).await.len(), 512);
        assert_eq!(
            drain(handle.replay::<Empty<Bytes>>().unwrap()).await.len(),
            512
        );
        let (first, handle) = ReplayBody::capture(stream(&[QUARTER; 4]), 1024);
        assert_eq!(
            drain(first).await.len(),
            1024,
            "the first attempt streams it all"
        );
        assert!(handle.replay::<Empty<Bytes>>().is_none());
        // The same for a body known whole.
        let (_, handle) = capture_known(Full::new(Bytes::from_static(&[0; 1024])), 1024);
        assert!(matches!(handle, ReplayHandle::TooLarge));
    }

    #[tokio::test]
    async fn known_large_body_is_never_buffered() {
        let (_first, handle) = ReplayBody::capture(Full::new(Bytes::from(vec![0u8; 11])), 10);
        assert!(matches!(handle, ReplayHandle::TooLarge));
    }

    #[tokio::test]
    async fn unfinished_body_is_not_replayable() {
        let (mut first, handle) = ReplayBody::capture(stream(&[b"ab", b"cd"]), 1024);
        let _ = first.frame().await;
        assert!(handle.replay::<Empty<Bytes>>().is_none());
    }

    fn trailers() -> HeaderMap {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", "abc".parse().unwrap());
        trailers
    }

    #[tokio::test]
    async fn trailers_end_the_body_without_a_last_poll() {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Ok(Frame::data(Bytes::from_static(b"cd"))),
            Ok(Frame::trailers(trailers())),
        ];
        let body = StreamBody::new(futures_util::stream::iter(frames));
        let (mut first, handle) = ReplayBody::capture(body, 1024);
        // As HTTP/1.1 sends it: up to the trailers, and no further.
        for _ in 0..3 {
            first.frame().await.unwrap().unwrap();
        }
        let (hint, end) = handle.replay_hint().expect("went out whole");
        assert_eq!((hint.lower(), hint.upper(), end), (4, None, false));
        let mut again = handle.replay::<Empty<Bytes>>().unwrap();
        assert_eq!(
            again.size_hint().exact(),
            None,
            "chunked, to carry trailers"
        );
        let mut data = Vec::new();
        let mut got = None;
        while let Some(frame) = again.frame().await {
            match frame.unwrap().into_data() {
                Ok(chunk) => data.extend_from_slice(&chunk),
                Err(frame) => got = frame.into_trailers().ok(),
            }
        }
        assert_eq!((&data[..], got), (&b"abcd"[..], Some(trailers())));
        assert!(again.is_end_stream());
    }

    /// A body of exact size that flags its end only with a `None` poll.
    struct Exact(VecDeque<Bytes>);

    impl Body for Exact {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(|d| Ok(Frame::data(d))))
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.0.iter().map(|c| c.len() as u64).sum())
        }
    }

    #[tokio::test]
    async fn an_exact_size_is_whole_at_its_last_byte() {
        let body = Exact([&b"ab"[..], b"", b"cd"].map(Bytes::from_static).into());
        let (mut first, handle) = ReplayBody::capture(body, 1024);
        first.frame().await.unwrap().unwrap();
        assert!(handle.replay::<Empty<Bytes>>().is_none(), "two bytes to go");
        first.frame().await.unwrap().unwrap();
        first.frame().await.unwrap().unwrap();
        let again = handle
            .replay::<Empty<Bytes>>()
            .expect("whole at its last byte");
        assert_eq!(again.size_hint().exact(), Some(4));
        assert_eq!(drain(again).await, "abcd");
        // Nothing to send at all: whole before any poll.
        let (_, handle) = ReplayBody::capture(Exact(VecDeque::new()), 1024);
        assert_eq!(drain(handle.replay::<Empty<Bytes>>().unwrap()).await, "");
    }

    #[tokio::test]
    async fn trailers_count_against_the_cap() {
        let mut big = HeaderMap::new();
        big.insert("x-big", "b".repeat(600).parse().unwrap());
        let body = |t: HeaderMap| {
            let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
                Ok(Frame::data(Bytes::from_static(b"ab"))),
                Ok(Frame::trailers(t)),
            ];
            StreamBody::new(futures_util::stream::iter(frames))
        };
        let cost = trailers_cost(&big);
        assert!(cost > 600 + std::mem::size_of::<HeaderMap>(), "{cost}");
        assert!(cost < 2 * 1024, "{cost}");
        let held = BUFFER_OVERHEAD + CHUNK_OVERHEAD + 2;
        // One byte short of room for the trailers: nothing kept.
        let (first, handle) = ReplayBody::capture(body(big.clone()), held + cost - 1);
        drain(first).await;
        assert!(handle.replay::<Empty<Bytes>>().is_none());
        let ReplayHandle::Buffered(buffer) = &handle else {
            panic!("expected a buffer")
        };
        {
            let buffer = buffer.lock().unwrap();
            assert!(buffer.abandoned && buffer.trailers.is_none() && buffer.chunks.first.is_none());
        }
        // Room for them: replayed.
        let (first, handle) = ReplayBody::capture(body(big.clone()), held + cost);
        drain(first).await;
        assert!(handle.replay::<Empty<Bytes>>().is_some());
    }
}
