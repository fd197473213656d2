//! What the bench binaries share: quick mode, criterion settings, the table
//! of side-by-side ratios, the services under test and a poll-once executor.
#![allow(dead_code, unreachable_pub)]

use std::{
    collections::BTreeMap,
    convert::Infallible,
    fmt::{self, Debug},
    future::Future,
    hint::black_box,
    sync::Mutex,
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use criterion::Criterion;
use http::{Method, Request, Response, Uri};
use http_body_util::{Empty, Full};
use tokio::{runtime::Runtime, task::JoinSet};
use tower::Service;
use wokelo_auth::{Token, WokeloAuthBuilder, WokeloAuthLayer, MAX_LIFETIME};

/// On the layer's default origin, so the layer attaches its token.
pub const API_URL: &str = "https://api.wokelo.ai/api/enterprise/company/search?query=stripe";

/// The authority of [`API_URL`].
pub const API_AUTHORITY: &str = "api.wokelo.ai";

/// The token every bench attaches (the layer's and AddAuthorization's).
pub const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.bench-token.0123456789abcdefghijklmnopqrstuv";

/// A 1 KiB request body.
pub static KIB: [u8; 1024] = [b'x'; 1024];

/// `WOKELO_BENCH_QUICK=1`: a few iterations of everything, still asserting
/// the hard invariants. What CI runs so the benches keep working. Also when
/// the binary is not run by `cargo bench` (which passes `--bench`), as by
/// `cargo test --benches`, where criterion only checks that each benchmark
/// runs.
pub fn quick() -> bool {
    matches!(std::env::var("WOKELO_BENCH_QUICK").as_deref(), Ok(v) if !v.is_empty() && v != "0")
        || !std::env::args().any(|a| a == "--bench")
}

/// `WOKELO_BENCH_ENFORCE=1`: also fail when a timing target is missed
/// (timings are not asserted by default: a busy CI machine is not a
/// benchmark machine).
pub fn enforce() -> bool {
    matches!(std::env::var("WOKELO_BENCH_ENFORCE").as_deref(), Ok(v) if !v.is_empty() && v != "0")
}

/// Under `--profile-time` (criterion's mode for profilers) only criterion
/// runs.
pub fn profiling() -> bool {
    std::env::args().any(|a| a == "--profile-time")
}

/// Samples criterion takes per benchmark; the ratio table uses the last
/// this many (the measurement, after warm-up).
pub fn sample_size() -> usize {
    if quick() {
        10
    } else {
        30
    }
}

/// Modest settings: 2 cores, many benchmarks.
pub fn criterion() -> Criterion {
    let c = Criterion::default()
        .sample_size(sample_size())
        .without_plots();
    let c = if quick() {
        c.warm_up_time(Duration::from_millis(20))
            .measurement_time(Duration::from_millis(60))
            .nresamples(1_000)
    } else {
        c.warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .nresamples(20_000)
    };
    c.configure_from_args()
}

/// A layer whose token never needs a refresh while the bench runs: a
/// static token stated to live [`MAX_LIFETIME`].
pub fn wokelo_builder() -> WokeloAuthBuilder {
    WokeloAuthLayer::builder(wokelo_auth::StaticToken::from_token(
        Token::new(TOKEN).with_expires_in(MAX_LIFETIME),
    ))
}

/// The bearer value the layer sends, to check the header arrived.
pub fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

#[allow(clippy::type_complexity)]
/// The trivial inner service: hands back an empty `200` at once. It takes
/// the request by value and hides it from the optimiser, so nothing the
/// middleware did to it can be optimised away.
pub fn trivial<B>() -> impl Service<
    Request<B>,
    Response = Response<Empty<Bytes>>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<Empty<Bytes>>, Infallible>>,
> + Clone {
    tower::service_fn(|request: Request<B>| {
        black_box(request);
        std::future::ready(Ok(Response::new(Empty::new())))
    })
}

/// `GET uri`, empty body.
pub fn get(uri: &Uri) -> Request<Empty<Bytes>> {
    let mut request = Request::new(Empty::new());
    *request.uri_mut() = uri.clone();
    request
}

/// `POST uri` with a static 1 KiB body.
pub fn post(uri: &Uri) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(Bytes::from_static(&KIB)));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri.clone();
    request
}

/// Drives `service` ready and sends `request` through it; panics on error.
pub async fn send<S, B>(service: &mut S, request: Request<B>) -> S::Response
where
    S: Service<Request<B>>,
    S::Error: Debug,
{
    std::future::poll_fn(|cx| service.poll_ready(cx))
        .await
        .expect("the service is ready");
    service.call(request).await.expect("the request succeeds")
}

/// Times `n` requests sent by `lanes` spawned tasks, each running
/// `lane(its share)`, on `rt`; returns the time scaled to exactly `n`
/// requests (the shares are rounded up).
pub fn time_lanes<F, Fut>(rt: &Runtime, lanes: u64, n: u64, lane: F) -> Duration
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let share = n.div_ceil(lanes).max(1);
    let elapsed = rt.block_on(async {
        let start = std::time::Instant::now();
        let mut tasks = JoinSet::new();
        for _ in 0..lanes {
            tasks.spawn(lane(share));
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        start.elapsed()
    });
    Duration::from_secs_f64(elapsed.as_secs_f64() * n as f64 / (share * lanes) as f64)
}

/// The request line every hot-path request uses (cloning it does not
/// allocate: its bytes are static).
pub fn api_uri() -> Uri {
    Uri::from_static(API_URL)
}

/// Polls `future` once; it must be ready (every inner service here answers
/// at once and the token is warm).
#[inline(always)]
pub fn now<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the hot path was expected to complete without waiting"),
    }
}

/// One request through `service`, on the spot: `poll_ready`, `call`, and
/// the response future polled once.
#[inline(always)]
pub fn send_now<S, B>(service: &mut S, request: Request<B>) -> S::Response
where
    S: Service<Request<B>>,
    S::Error: Debug,
{
    match service.poll_ready(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(e)) => panic!("service failed: {e:?}"),
        Poll::Pending => panic!("service not ready"),
    }
    now(service.call(request)).expect("the request succeeds")
}

/// One of the services a figure compares, as a closure that sends `n`
/// requests through it and says how long they took.
pub struct Variant {
    pub name: &'static str,
    pub run: Box<dyn FnMut(u64) -> Duration>,
}

impl Variant {
    pub fn new(name: &'static str, run: impl FnMut(u64) -> Duration + 'static) -> Self {
        Self {
            name,
            run: Box::new(run),
        }
    }
}

/// What criterion measured, kept so the binary can print its figures too.
static SAMPLES: Mutex<BTreeMap<String, Vec<(u64, Duration)>>> = Mutex::new(BTreeMap::new());

/// Runs every variant as a criterion benchmark of `group`, one iteration
/// being one request.
pub fn criterion_group(c: &mut Criterion, group: &str, variants: &mut [Variant]) {
    let mut g = c.benchmark_group(group);
    for v in variants.iter_mut() {
        let key = format!("{group}/{}", v.name);
        g.bench_function(v.name, |b| {
            b.iter_custom(|iters| {
                let elapsed = (v.run)(iters);
                SAMPLES
                    .lock()
                    .unwrap()
                    .entry(key.clone())
                    .or_default()
                    .push((iters, elapsed));
                elapsed
            })
        });
    }
    g.finish();
}

/// The median time per iteration of criterion's measured samples of
/// `group/name`, in ns (`None` if criterion skipped it).
pub fn criterion_ns(group: &str, name: &str) -> Option<f64> {
    let samples = SAMPLES.lock().unwrap();
    let all = samples.get(&format!("{group}/{name}"))?;
    let n = sample_size().min(all.len());
    let mut per_iter: Vec<f64> = all[all.len() - n..]
        .iter()
        .map(|(iters, d)| d.as_nanos() as f64 / *iters as f64)
        .collect();
    Some(median(&mut per_iter))
}

/// Time per request of each variant, measured in interleaved rounds: each
/// round runs a batch of every variant (in a rotating order), so a change
/// in background load hits all of them alike and the per-round ratios stay
/// honest on a shared 2-core machine.
pub struct SideBySide {
    names: Vec<&'static str>,
    /// `per_iter[variant][round]`, ns per request.
    per_iter: Vec<Vec<f64>>,
}

impl SideBySide {
    pub fn run(variants: &mut [Variant], rounds: usize, batch: u64) -> Self {
        let n = variants.len();
        for v in variants.iter_mut() {
            (v.run)(batch);
        }
        let mut per_iter = vec![Vec::with_capacity(rounds); n];
        for round in 0..rounds {
            for k in 0..n {
                let i = (round + k) % n;
                let elapsed = (variants[i].run)(batch);
                per_iter[i].push(elapsed.as_nanos() as f64 / batch as f64);
            }
        }
        if std::env::var_os("WOKELO_BENCH_ROUNDS").is_some() {
            for (v, times) in variants.iter().zip(&per_iter) {
                let times: Vec<String> = times.iter().map(|t| format!("{t:.0}")).collect();
                println!("{}: ns/req per round: {}", v.name, times.join(" "));
            }
        }
        Self {
            names: variants.iter().map(|v| v.name).collect(),
            per_iter,
        }
    }

    fn index(&self, name: &str) -> usize {
        self.names
            .iter()
            .position(|n| *n == name)
            .unwrap_or_else(|| panic!("no variant {name}"))
    }

    /// Median ns per request of `name`.
    pub fn ns(&self, name: &str) -> f64 {
        median(&mut self.per_iter[self.index(name)].clone())
    }

    /// `ns(a) / ns(b)`: the ratio of the medians, shown next to the
    /// median of the per-round ratios.
    pub fn ratio_of_medians(&self, a: &str, b: &str) -> f64 {
        self.ns(a) / self.ns(b)
    }

    /// Median over rounds of `time(a) / time(b)`.
    pub fn ratio(&self, a: &str, b: &str) -> f64 {
        let (a, b) = (&self.per_iter[self.index(a)], &self.per_iter[self.index(b)]);
        median(&mut a.iter().zip(b).map(|(a, b)| a / b).collect::<Vec<_>>())
    }
}

pub fn median(values: &mut [f64]) -> f64 {
    assert!(!values.is_empty());
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// A bound a figure must meet.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    AtMost(f64),
    AtLeast(f64),
    /// Reported, no target.
    None,
}

impl Target {
    pub fn met(self, value: f64) -> Option<bool> {
        match self {
            Target::AtMost(t) => Some(value <= t),
            Target::AtLeast(t) => Some(value >= t),
            Target::None => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::AtMost(t) => write!(f, "<= {t}"),
            Target::AtLeast(t) => write!(f, ">= {t}"),
            Target::None => f.write_str("-"),
        }
    }
}

/// The figures a binary measured, printed as a Markdown table.
#[derive(Default)]
pub struct Table {
    rows: Vec<[String; 6]>,
    missed: Vec<String>,
}

impl Table {
    /// A row: what was measured, against what, their ratio and the target
    /// for the ratio (`met` says whether it was met, if there is one).
    pub fn row(
        &mut self,
        figure: &str,
        measured: impl Into<String>,
        baseline: impl Into<String>,
        ratio: f64,
        target: Target,
    ) {
        let met = target.met(ratio);
        if met == Some(false) {
            self.missed
                .push(format!("{figure}: {ratio:.3} (target {target})"));
        }
        self.rows.push([
            figure.to_owned(),
            measured.into(),
            baseline.into(),
            format!("{ratio:.3}"),
            target.to_string(),
            match met {
                Some(true) => "yes".into(),
                Some(false) => "**no**".into(),
                None => "-".into(),
            },
        ]);
    }

    /// Prints the table; with `WOKELO_BENCH_ENFORCE=1` a missed target
    /// fails the binary.
    pub fn finish(self, title: &str) {
        println!("\n## {title}\n");
        println!("| figure | measured | baseline | ratio (or difference) | target | met |");
        println!("|---|---|---|---|---|---|");
        for r in &self.rows {
            println!("| {} |", r.join(" | "));
        }
        println!();
        if !self.missed.is_empty() {
            println!("targets missed: {}", self.missed.join("; "));
            if enforce() {
                std::process::exit(1);
            }
        }
    }
}

/// A duration per request, for tables.
pub fn ns(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.2} us/req", v / 1000.0)
    } else {
        format!("{v:.1} ns/req")
    }
}

/// AddAuthorization plus the least a layer that retries must keep for the
/// retry: a copy of the method, path, version, extensions and body, held
/// until the response comes and then dropped. A floor for any retrying
/// layer, whatever its design.
#[derive(Clone)]
pub struct KeepCopy<S>(pub S);

type Copy<B> = (
    Method,
    Option<http::uri::PathAndQuery>,
    http::Version,
    http::Extensions,
    B,
);

/// What a retry needs of `request`: its method, path, version, extensions
/// and body. Always inlined, as the copy written out in each reference was
/// (without it the references count about 25 instructions more).
#[inline(always)]
fn retry_copy<B: Clone>(request: &Request<B>) -> Copy<B> {
    (
        request.method().clone(),
        request.uri().path_and_query().cloned(),
        request.version(),
        request.extensions().clone(),
        request.body().clone(),
    )
}

impl<S, B, R> Service<Request<B>> for KeepCopy<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    B: Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Held<S::Future, Copy<B>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let copy = retry_copy(&request);
        Held {
            future: self.0.call(request),
            copy: Some(copy),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`KeepCopy`]: holds the copy until the response.
    pub struct Held<F, C> {
        #[pin]
        future: F,
        copy: Option<C>,
    }
}

impl<F, C, R, E> Future for Held<F, C>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let output = std::task::ready!(this.future.poll(cx));
        // What a retry would look at.
        let unauthorized = matches!(&output, Ok(r) if r.status() == http::StatusCode::UNAUTHORIZED);
        black_box((unauthorized, this.copy.take()));
        Poll::Ready(output)
    }
}

/// Rebuilds each request around a body type that could also carry a
/// replay (`Either<B, Full<Bytes>>`), as a layer must that replays any body
/// type: with [`KeepCopy`], the least a layer meeting the crate's replay
/// requirement does per request.
#[derive(Clone)]
pub struct Rewrap<S>(pub S);

impl<S, B> Service<Request<B>> for Rewrap<S>
where
    S: Service<Request<http_body_util::Either<B, Full<Bytes>>>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        self.0.call(request.map(http_body_util::Either::Left))
    }
}

/// A sketch of the least any layer meeting the crate's requirements does
/// per request with a warm token, for reference: the origin check (scheme
/// and authority compared with the API base's), a token check (one atomic
/// load against the clone's last look), the retry copy with a shared handle
/// for the retry (one reference count) and the token's generation, the
/// request rebuilt around a body type that can carry a replay, the header
/// attached, and a look at the status for a `401`. It never retries: the
/// retry itself is off the hot path.
#[derive(Clone)]
pub struct Sketch<S> {
    pub inner: S,
    pub authority: &'static str,
    pub header: http::HeaderValue,
    pub epoch: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub handle: std::sync::Arc<()>,
}

impl<S> Sketch<S> {
    /// Over `inner`, for requests to [`API_URL`], attaching [`TOKEN`].
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            authority: API_AUTHORITY,
            header: http::HeaderValue::from_str(&bearer()).unwrap(),
            epoch: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(7)),
            handle: std::sync::Arc::new(()),
        }
    }
}

type SketchCopy<B> = (Copy<B>, std::sync::Arc<()>, u64);

impl<S, B, R> Service<Request<B>> for Sketch<S>
where
    S: Service<Request<http_body_util::Either<B, Full<Bytes>>>, Response = Response<R>>,
    B: Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Held<S::Future, SketchCopy<B>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let uri = request.uri();
        let ours = uri.scheme().is_some_and(|s| s.as_str() == "https")
            && uri
                .authority()
                .is_some_and(|a| a.as_str() == self.authority);
        let generation = self.epoch.load(std::sync::atomic::Ordering::Acquire);
        assert!(
            ours && generation == 7,
            "the sketch only models the hot path"
        );
        let copy = (retry_copy(&request), self.handle.clone(), generation);
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, self.header.clone());
        Held {
            future: self.inner.call(request.map(http_body_util::Either::Left)),
            copy: Some(copy),
        }
    }
}

/// Requests the server saw with and without the expected token.
#[derive(Default)]
pub struct Seen {
    pub with_token: std::sync::atomic::AtomicU64,
    pub without: std::sync::atomic::AtomicU64,
}

/// A minimal hyper HTTP/1.1 server answering `200` to everything, on its
/// own thread, counting the requests with and without [`bearer`]; returns
/// its address.
pub fn start_server(seen: std::sync::Arc<Seen>) -> std::net::SocketAddr {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let expected = bearer();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (seen, expected) = (seen.clone(), expected.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<_>| {
                        let counter = match request.headers().get(http::header::AUTHORIZATION) {
                            Some(v) if v == expected.as_str() => &seen.with_token,
                            _ => &seen.without,
                        };
                        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        async { Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    addr
}
