//! Figure 4: on the wire. A hyper-util client (HTTP/1.1, keep-alive) sends
//! requests to a minimal hyper server on 127.0.0.1 that answers `200` to
//! everything, 16 requests in flight; the figure is the request rate through
//! WokeloAuth relative to tower-http's `AddAuthorization::bearer`.
//!
//! The server runs on its own thread (a current-thread runtime), the
//! client on another, so each has a core. The server counts requests that
//! carry the expected token, and the bench checks every one did.
//!
//! One iteration is one request. `cargo bench --bench wire`.

mod common;

use std::sync::{atomic::Ordering, Arc};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use tokio::runtime::Runtime;
use tower::{Layer, Service};
use tower_http::auth::AddAuthorizationLayer;
use wokelo_auth::{ApiBase, ReplayBody};

use common::{get, start_server, Seen, SideBySide, Table, Target, Variant, TOKEN};

const IN_FLIGHT: u64 = 16;

fn client<B>() -> Client<HttpConnector, B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(IN_FLIGHT as usize)
        .build(connector)
}

/// `n` requests, [`IN_FLIGHT`] at a time (one task each, on the client's
/// current-thread runtime), bodies read to the end.
fn variant<S, R>(name: &'static str, rt: Arc<Runtime>, service: S, uri: Uri) -> Variant
where
    S: Service<Request<Empty<Bytes>>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
    R: Body + Send + 'static,
    R::Data: Send,
    R::Error: std::fmt::Debug,
{
    Variant::new(name, move |n| {
        common::time_lanes(&rt, IN_FLIGHT, n, |share| {
            let mut service = service.clone();
            let uri = uri.clone();
            async move {
                for _ in 0..share {
                    let response = common::send(&mut service, get(&uri)).await;
                    assert_eq!(response.status(), 200);
                    response.into_body().collect().await.unwrap();
                }
            }
        })
    })
}

fn main() {
    let seen = Arc::new(Seen::default());
    let addr = start_server(seen.clone());
    let base = format!("http://{addr}");
    let uri: Uri = format!("{base}/api/enterprise/company/search?query=stripe")
        .parse()
        .unwrap();
    let rt = Arc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    );
    let _guard = rt.enter();

    let floor = AddAuthorizationLayer::bearer(TOKEN)
        .as_sensitive(true)
        .layer(client::<Empty<Bytes>>());
    let wokelo = common::wokelo_builder()
        .api_base(ApiBase::parse(&base).unwrap())
        .build()
        .layer(client::<ReplayBody<Empty<Bytes>>>());

    let mut variants = vec![
        variant(
            "bare_client",
            rt.clone(),
            client::<Empty<Bytes>>(),
            uri.clone(),
        ),
        variant("add_authorization", rt.clone(), floor, uri.clone()),
        variant("wokelo_auth", rt.clone(), wokelo, uri),
    ];
    let group = "wire/http1_keepalive_16_in_flight";
    let mut c = common::criterion();
    common::criterion_group(&mut c, group, &mut variants);
    c.final_summary();
    if common::profiling() {
        return;
    }

    // Requests over loopback vary by 10-20 % from batch to batch on a
    // shared 2-core machine: many rounds, so that the median ratio holds
    // still to about 1 %.
    let (rounds, batch) = if common::quick() {
        (3, 320)
    } else {
        (61, 4_800)
    };
    let before = seen.without.load(Ordering::Relaxed);
    let s = SideBySide::run(&mut variants, rounds, batch);
    // Only the bare client's requests go without the token.
    let bare = (rounds as u64 + 1) * batch;
    assert_eq!(
        seen.without.load(Ordering::Relaxed) - before,
        bare,
        "every request through a layer carried the token"
    );
    let mut table = Table::default();
    let rps = |name| 1e9 / s.ns(name);
    table.row(
        "4. on the wire, HTTP/1.1 keep-alive, 16 in flight (req/s)",
        format!(
            "WokeloAuth {:.0} req/s (ratio of medians {:.3})",
            rps("wokelo_auth"),
            1.0 / s.ratio_of_medians("wokelo_auth", "add_authorization")
        ),
        format!(
            "AddAuthorization {:.0} req/s (bare client {:.0} req/s)",
            rps("add_authorization"),
            rps("bare_client")
        ),
        1.0 / s.ratio("wokelo_auth", "add_authorization"),
        Target::AtLeast(0.97),
    );
    println!(
        "server saw {} requests with the token, {} without",
        seen.with_token.load(Ordering::Relaxed),
        seen.without.load(Ordering::Relaxed)
    );
    table.finish(&format!(
        "on the wire: request rate, median of {rounds} interleaved rounds of {batch} requests"
    ));
}
