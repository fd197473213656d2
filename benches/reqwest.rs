//! Figure 8: `WokeloAuthMiddleware`'s per-request cost in a reqwest-middleware
//! chain, against the same chain without it and with a trivial middleware
//! that inserts a fixed `Authorization` header (the floor for any
//! middleware that attaches a token).
//!
//! - 8a, in-process: the chain ends in a middleware that answers `200` at
//!   once (no network), one request at a time: the middleware's own cost in
//!   ns, with reqwest's request building and reqwest-middleware's boxing
//!   common to all variants.
//! - 8b, on the wire: one reqwest client (HTTP/1.1 keep-alive) to a minimal
//!   hyper server on 127.0.0.1, 16 requests in flight, as figure 4; also
//!   the tower path (`WokeloAuthLayer` over `ReqwestService`). The server
//!   checks that every authenticated request carried the token.
//!
//! One iteration is one request. `cargo bench --bench reqwest --features reqwest`.

mod common;

use std::sync::{atomic::Ordering, Arc};

use bytes::Bytes;
use http::{header::AUTHORIZATION, Extensions, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Empty};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use tokio::runtime::Runtime;
use tower::{Layer, ServiceExt};
use wokelo_auth::{
    reqwest::{tls_config, ReqwestService, WokeloAuthMiddleware},
    ApiBase,
};

use common::{start_server, Seen, SideBySide, Table, Target, Variant, API_URL};

const IN_FLIGHT: u64 = 16;

/// Inserts a fixed bearer header: what any token middleware does at least.
struct FixedHeader(HeaderValue);

#[async_trait::async_trait]
impl Middleware for FixedHeader {
    async fn handle(
        &self,
        mut request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        request.headers_mut().insert(AUTHORIZATION, self.0.clone());
        next.run(request, extensions).await
    }
}

/// Ends the chain with an empty `200`, without the network.
struct Answer;

#[async_trait::async_trait]
impl Middleware for Answer {
    async fn handle(
        &self,
        request: reqwest::Request,
        _extensions: &mut Extensions,
        _next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        std::hint::black_box(request);
        Ok(Response::new(Bytes::new()).into())
    }
}

fn fixed_header() -> FixedHeader {
    let mut value = HeaderValue::try_from(common::bearer()).unwrap();
    value.set_sensitive(true);
    FixedHeader(value)
}

fn wokelo(base: &str) -> WokeloAuthMiddleware {
    common::wokelo_builder()
        .api_base(ApiBase::parse(base).unwrap())
        .build()
        .into()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config())
        .pool_max_idle_per_host(IN_FLIGHT as usize)
        .tcp_nodelay(true)
        .build()
        .unwrap()
}

/// A chain over `client`: `middleware` (if any), then `last` (if any).
fn chain(
    client: &reqwest::Client,
    middleware: Option<Arc<dyn Middleware>>,
    last: Option<Arc<dyn Middleware>>,
) -> ClientWithMiddleware {
    let mut builder = ClientBuilder::new(client.clone());
    for m in [middleware, last].into_iter().flatten() {
        builder = builder.with_arc(m);
    }
    builder.build()
}

/// `n` requests through `client`, one at a time, on `rt`.
fn in_process(name: &'static str, rt: Arc<Runtime>, client: ClientWithMiddleware) -> Variant {
    Variant::new(name, move |n| {
        rt.block_on(async {
            let start = std::time::Instant::now();
            for _ in 0..n {
                let response = client.get(API_URL).send().await.unwrap();
                assert_eq!(response.status(), 200);
            }
            start.elapsed()
        })
    })
}

/// `n` requests through `client` to `url`, [`IN_FLIGHT`] at a time, bodies
/// read to the end.
fn on_wire(
    name: &'static str,
    rt: Arc<Runtime>,
    client: ClientWithMiddleware,
    url: String,
) -> Variant {
    Variant::new(name, move |n| {
        common::time_lanes(&rt, IN_FLIGHT, n, |share| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                for _ in 0..share {
                    let response = client.get(&url).send().await.unwrap();
                    assert_eq!(response.status(), 200);
                    response.bytes().await.unwrap();
                }
            }
        })
    })
}

/// As [`on_wire`], through the tower path: the layer over `ReqwestService`.
fn on_wire_tower(
    name: &'static str,
    rt: Arc<Runtime>,
    base: &str,
    client: reqwest::Client,
    url: String,
) -> Variant {
    let service = common::wokelo_builder()
        .api_base(ApiBase::parse(base).unwrap())
        .build()
        .layer(ReqwestService::new(client));
    Variant::new(name, move |n| {
        common::time_lanes(&rt, IN_FLIGHT, n, |share| {
            let (service, url) = (service.clone(), url.clone());
            async move {
                for _ in 0..share {
                    let request = Request::get(&url).body(Empty::<Bytes>::new()).unwrap();
                    let response = service.clone().oneshot(request).await.unwrap();
                    assert_eq!(response.status(), 200);
                    response.into_body().collect().await.unwrap();
                }
            }
        })
    })
}

fn main() {
    let rt = Arc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    );
    let _guard = rt.enter();
    let client = http();
    let (rounds, batch, wire_rounds, wire_batch) = if common::quick() {
        (3, 2_000, 3, 320)
    } else {
        (61, 20_000, 61, 4_800)
    };
    let mut table = Table::default();
    let mut c = common::criterion();

    // 8a: in-process.
    let answer: Arc<dyn Middleware> = Arc::new(Answer);
    let mut variants = vec![
        in_process(
            "bare_chain",
            rt.clone(),
            chain(&client, None, Some(answer.clone())),
        ),
        in_process(
            "fixed_header",
            rt.clone(),
            chain(
                &client,
                Some(Arc::new(fixed_header())),
                Some(answer.clone()),
            ),
        ),
        in_process(
            "wokelo_middleware",
            rt.clone(),
            chain(
                &client,
                Some(Arc::new(wokelo("https://api.wokelo.ai"))),
                Some(answer),
            ),
        ),
    ];
    let group = "reqwest/in_process";
    common::criterion_group(&mut c, group, &mut variants);
    let profiling = common::profiling();
    if !profiling {
        let s = SideBySide::run(&mut variants, rounds, batch);
        table.row(
            "8a. reqwest-middleware chain, in-process (ns/req)",
            format!(
                "WokeloAuthMiddleware {} (+{:.0} ns over the fixed header)",
                common::ns(s.ns("wokelo_middleware")),
                s.ns("wokelo_middleware") - s.ns("fixed_header")
            ),
            format!(
                "fixed header {}, bare chain {}",
                common::ns(s.ns("fixed_header")),
                common::ns(s.ns("bare_chain"))
            ),
            s.ratio("wokelo_middleware", "fixed_header"),
            Target::AtMost(1.5),
        );
    }

    // 8b: on the wire.
    let seen = Arc::new(Seen::default());
    let addr = start_server(seen.clone());
    let base = format!("http://{addr}");
    let url = format!("{base}/api/enterprise/company/search?query=stripe");
    let mut variants = vec![
        on_wire(
            "bare_chain",
            rt.clone(),
            chain(&client, None, None),
            url.clone(),
        ),
        on_wire(
            "fixed_header",
            rt.clone(),
            chain(&client, Some(Arc::new(fixed_header())), None),
            url.clone(),
        ),
        on_wire(
            "wokelo_middleware",
            rt.clone(),
            chain(&client, Some(Arc::new(wokelo(&base))), None),
            url.clone(),
        ),
        on_wire_tower(
            "wokelo_layer_over_reqwest",
            rt.clone(),
            &base,
            client.clone(),
            url,
        ),
    ];
    let group = "reqwest/http1_keepalive_16_in_flight";
    common::criterion_group(&mut c, group, &mut variants);
    c.final_summary();
    if profiling {
        return;
    }
    let before = seen.without.load(Ordering::Relaxed);
    let s = SideBySide::run(&mut variants, wire_rounds, wire_batch);
    assert_eq!(
        seen.without.load(Ordering::Relaxed) - before,
        (wire_rounds as u64 + 1) * wire_batch,
        "only the bare chain's requests went without the token"
    );
    let rps = |name| 1e9 / s.ns(name);
    table.row(
        "8b. reqwest on the wire, HTTP/1.1 keep-alive, 16 in flight (req/s)",
        format!(
            "WokeloAuthMiddleware {:.0} req/s (ratio of medians {:.3})",
            rps("wokelo_middleware"),
            s.ratio_of_medians("fixed_header", "wokelo_middleware")
        ),
        format!(
            "fixed header {:.0} req/s (bare chain {:.0} req/s)",
            rps("fixed_header"),
            rps("bare_chain")
        ),
        1.0 / s.ratio("wokelo_middleware", "fixed_header"),
        Target::AtLeast(0.97),
    );
    table.row(
        "8c. WokeloAuthLayer over ReqwestService, same setup (req/s)",
        format!("{:.0} req/s", rps("wokelo_layer_over_reqwest")),
        format!("bare chain {:.0} req/s", rps("bare_chain")),
        1.0 / s.ratio("wokelo_layer_over_reqwest", "bare_chain"),
        Target::None,
    );
    println!(
        "server saw {} requests with the token, {} without",
        seen.with_token.load(Ordering::Relaxed),
        seen.without.load(Ordering::Relaxed)
    );
    table.finish(&format!(
        "reqwest: 8a median of {rounds} interleaved rounds of {batch} requests; 8b/8c {wire_rounds} rounds of {wire_batch}"
    ));
}
