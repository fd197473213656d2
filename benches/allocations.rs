//! Figures 2 and 7, counted by a global allocator that tracks allocations,
//! live bytes and the peak of live bytes.
//!
//! - Figure 2: allocations per request on the hot path (warm token, trivial
//!   inner service), WokeloAuth vs tower-http's `AddAuthorization::bearer`.
//!   Target: no more than the floor plus one.
//! - Figure 7: a 10 MiB streaming upload (a body of unknown size, 16 KiB
//!   chunks, each its own allocation) through the layer to an inner service
//!   that drains it: the extra peak of live bytes over the same upload
//!   through AddAuthorization. Target: no more than the replay cap, 64 KiB.
//!
//! Both are exact counts, not timings, so quick mode asserts them too.
//! `cargo bench --bench allocations`.

mod common;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    convert::Infallible,
    hint::black_box,
    pin::Pin,
    sync::atomic::{AtomicUsize, Ordering},
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{
    header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE},
    HeaderValue, Method, Request, Response, Uri,
};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, Full};
use tower::{Layer, Service, ServiceExt};
use tower_http::auth::AddAuthorizationLayer;
use wokelo_auth::{ReplayBody, DEFAULT_MAX_REPLAY_BODY_BYTES};

use common::{get, post, send_now, trivial, Table, Target, TOKEN};

/// The system allocator, counting.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Live bytes, and their peak, in allocations of exactly `CHUNK` bytes:
/// the upload's chunks (no other allocation in the upload has that size),
/// to tell body bytes held from bookkeeping.
static CHUNK: AtomicUsize = AtomicUsize::new(usize::MAX);
static LIVE_CHUNKS: AtomicUsize = AtomicUsize::new(0);
static PEAK_CHUNKS: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
    if bytes == CHUNK.load(Ordering::Relaxed) {
        let live = LIVE_CHUNKS.fetch_add(bytes, Ordering::Relaxed) + bytes;
        PEAK_CHUNKS.fetch_max(live, Ordering::Relaxed);
    }
}

fn shrank(bytes: usize) {
    LIVE.fetch_sub(bytes, Ordering::Relaxed);
    if bytes == CHUNK.load(Ordering::Relaxed) {
        LIVE_CHUNKS.fetch_sub(bytes, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments and
// only adds bookkeeping in atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        grew(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        grew(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout.size());
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        shrank(layout.size());
        grew(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations per request over `n` requests made by `make`.
fn allocations_per_request<S, B>(service: &mut S, n: usize, make: impl Fn() -> Request<B>) -> f64
where
    S: Service<Request<B>, Response = Response<Empty<Bytes>>>,
    S::Error: std::fmt::Debug,
{
    // One request first: lazily built state (thread locals, promoted
    // shared buffers) is not per request.
    black_box(send_now(service, make()));
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..n {
        black_box(send_now(service, make()));
    }
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / n as f64
}

/// A JSON POST as an SDK builds it: two headers made from `&str` (so each
/// value is its own buffer, which a clone must share), 1 KiB body.
fn post_json(uri: &Uri) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::POST)
        .uri(uri.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(ACCEPT, "application/json")
        .body(Full::new(Bytes::from_static(&common::KIB)))
        .unwrap()
}

/// The same with `HeaderValue::from_static` values.
fn post_json_static(uri: &Uri) -> Request<Full<Bytes>> {
    let mut request = post(uri);
    let headers = request.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    request
}

/// Allocations per request through the bare service, AddAuthorization and
/// WokeloAuth.
fn count<B>(rt: &tokio::runtime::Runtime, n: usize, make: fn(&Uri) -> Request<B>) -> [f64; 3]
where
    B: Body<Data = Bytes> + Send + 'static,
{
    let uri = common::api_uri();
    let mut bare = trivial::<B>();
    let mut floor = AddAuthorizationLayer::bearer(TOKEN)
        .as_sensitive(true)
        .layer(trivial::<B>());
    let layer = common::wokelo_builder().build();
    let mut wokelo = layer.layer(trivial::<ReplayBody<B>>());
    let check = layer.layer(tower::service_fn(|r: Request<ReplayBody<B>>| {
        assert_eq!(r.headers()[AUTHORIZATION], common::bearer().as_str());
        std::future::ready(Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())))
    }));
    rt.block_on(check.oneshot(make(&uri))).unwrap();
    [
        allocations_per_request(&mut bare, n, || make(&uri)),
        allocations_per_request(&mut floor, n, || make(&uri)),
        allocations_per_request(&mut wokelo, n, || make(&uri)),
    ]
}

/// A streaming upload of `len` bytes in `chunk`-byte frames, each a fresh
/// allocation, of unknown size.
struct Upload {
    remaining: usize,
    chunk: usize,
}

impl Body for Upload {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.chunk.min(self.remaining);
        self.remaining -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![0x5a; n])))))
    }
}

/// An inner service that reads the body to the end, dropping each frame,
/// and counts the bytes.
fn drain<B>(
) -> impl Service<Request<B>, Response = Response<Empty<Bytes>>, Error = Infallible> + Clone
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Debug,
{
    tower::service_fn(|request: Request<B>| async move {
        let mut body = request.into_body();
        let mut total = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                total += data.len();
            }
        }
        black_box(total);
        Ok(Response::new(Empty::new()))
    })
}

/// What one upload held at its peak, above what was live before it.
#[derive(Clone, Copy)]
struct Peak {
    /// All live bytes.
    total: usize,
    /// Bytes in the upload's chunks.
    chunks: usize,
}

/// The peaks of live bytes while `service` takes one upload.
fn upload_peak<S>(rt: &tokio::runtime::Runtime, service: S, len: usize, chunk: usize) -> Peak
where
    S: Service<Request<Upload>, Response = Response<Empty<Bytes>>>,
    S::Error: std::fmt::Debug,
{
    let mut request = Request::new(Upload {
        remaining: len,
        chunk,
    });
    *request.method_mut() = Method::POST;
    *request.uri_mut() = common::api_uri();
    CHUNK.store(chunk, Ordering::Relaxed);
    let (before, chunks_before) = (
        LIVE.load(Ordering::Relaxed),
        LIVE_CHUNKS.load(Ordering::Relaxed),
    );
    PEAK.store(before, Ordering::Relaxed);
    PEAK_CHUNKS.store(chunks_before, Ordering::Relaxed);
    rt.block_on(service.oneshot(request)).unwrap();
    CHUNK.store(usize::MAX, Ordering::Relaxed);
    Peak {
        total: PEAK.load(Ordering::Relaxed) - before,
        chunks: PEAK_CHUNKS.load(Ordering::Relaxed) - chunks_before,
    }
}

/// The peaks of an upload through the bare service, AddAuthorization and
/// WokeloAuth, each measured `rounds` times, minimum kept (the counts are
/// exact; the minimum drops one-off runtime allocations).
fn memory(rt: &tokio::runtime::Runtime, len: usize, chunk: usize, rounds: usize) -> [Peak; 3] {
    let floor = AddAuthorizationLayer::bearer(TOKEN)
        .as_sensitive(true)
        .layer(drain::<Upload>());
    let layer = common::wokelo_builder().build();
    let wokelo = layer.layer(drain::<ReplayBody<Upload>>());
    // Warm everything: the token, the runtime.
    for _ in 0..2 {
        upload_peak(rt, drain::<Upload>(), chunk, chunk);
        upload_peak(rt, floor.clone(), chunk, chunk);
        upload_peak(rt, wokelo.clone(), chunk, chunk);
    }
    let min = |a: Peak, b: Peak| Peak {
        total: a.total.min(b.total),
        chunks: a.chunks.min(b.chunks),
    };
    let mut peaks = [Peak {
        total: usize::MAX,
        chunks: usize::MAX,
    }; 3];
    for _ in 0..rounds {
        peaks[0] = min(peaks[0], upload_peak(rt, drain::<Upload>(), len, chunk));
        peaks[1] = min(peaks[1], upload_peak(rt, floor.clone(), len, chunk));
        peaks[2] = min(peaks[2], upload_peak(rt, wokelo.clone(), len, chunk));
    }
    peaks
}

fn main() {
    // Only the figures; criterion does not time anything here.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let n = if common::quick() { 200 } else { 10_000 };
    let mut table = Table::default();
    let mut failures = Vec::new();

    println!("allocations per request ({n} requests each):");
    println!("| request | bare | AddAuthorization | WokeloAuth |");
    println!("|---|---|---|---|");
    let rows: [(&str, [f64; 3], bool); 4] = [
        ("empty GET", count(&rt, n, get), true),
        ("1 KiB POST", count(&rt, n, post), true),
        (
            "1 KiB JSON POST, 2 headers from &str",
            count(&rt, n, post_json),
            false,
        ),
        (
            "1 KiB JSON POST, 2 static headers",
            count(&rt, n, post_json_static),
            false,
        ),
    ];
    for (name, [bare, floor, wokelo], figure) in rows {
        println!("| {name} | {bare} | {floor} | {wokelo} |");
        let target = if figure {
            Target::AtMost(1.0)
        } else {
            Target::None
        };
        table.row(
            &format!("2. allocations per request, {name} (WokeloAuth - floor)"),
            format!("WokeloAuth {wokelo}"),
            format!("AddAuthorization {floor} (bare {bare})"),
            wokelo - floor,
            target,
        );
        if figure && wokelo > floor + 1.0 {
            failures.push(format!("{name}: {wokelo} allocations > floor {floor} + 1"));
        }
    }

    let len = 10 * 1024 * 1024;
    let cap = DEFAULT_MAX_REPLAY_BODY_BYTES;
    let rounds = if common::quick() { 1 } else { 5 };
    println!("\npeak live bytes above the start during a 10 MiB streaming upload:");
    println!("| chunk | bare | AddAuthorization | WokeloAuth | extra | of which body | of which bookkeeping |");
    println!("|---|---|---|---|---|---|---|");
    for (chunk, figure) in [(16 * 1024, true), (10_000, false), (64 * 1024, false)] {
        let [bare, floor, wokelo] = memory(&rt, len, chunk, rounds);
        let extra = wokelo.total as f64 - floor.total as f64;
        let body = wokelo.chunks as f64 - floor.chunks as f64;
        let bookkeeping = extra - body;
        println!(
            "| {chunk} B | {} B | {} B | {} B | {extra} B | {body} B | {bookkeeping} B |",
            bare.total, floor.total, wokelo.total
        );
        table.row(
            &format!("7. replay memory, 10 MiB upload in {chunk} B chunks (extra peak bytes)"),
            format!("WokeloAuth {} B", wokelo.total),
            format!("AddAuthorization {} B (bare {} B)", floor.total, bare.total),
            extra,
            Target::AtMost(cap as f64),
        );
        table.row(
            &format!("7. ... of which request-body bytes held for replay ({chunk} B chunks)"),
            format!("{body} B of body, {bookkeeping} B of bookkeeping"),
            format!("the replay cap, {cap} B"),
            body,
            Target::AtMost(cap as f64),
        );
        // Hard invariants: the layer never holds more than the cap, body
        // and bookkeeping together (the buffer, its list of chunks, and a
        // shared-ownership record per chunk kept).
        if extra > cap as f64 {
            failures.push(format!(
                "{chunk} B chunks: {extra} bytes held (body and bookkeeping) > the cap {cap}"
            ));
        }
        if figure && bookkeeping > 1024.0 {
            failures.push(format!(
                "{chunk} B chunks: {bookkeeping} B of bookkeeping > 1 KiB"
            ));
        }
    }
    table.finish("allocations and replay memory (exact counts; ratio column = difference)");
    assert!(failures.is_empty(), "hard invariants failed: {failures:#?}");
}
