//! Figure 3: contention. 64 tasks on a multi-threaded runtime with 2 worker
//! threads (the machine has 2 cores) share one service, each task holding
//! a clone; the figure is the total throughput of WokeloAuth relative to
//! tower-http's `AddAuthorization::bearer` over the same trivial inner
//! service, with a warm token.
//!
//! One iteration is one request; a run of `n` iterations spreads them over
//! the 64 tasks. `cargo bench --bench contention`.

mod common;

use std::{convert::Infallible, hint::black_box, sync::Arc};

use bytes::Bytes;
use http::{header::AUTHORIZATION, Request, Response};
use http_body_util::Empty;
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt};
use tower_http::auth::AddAuthorizationLayer;
use wokelo_auth::ReplayBody;

use common::{get, trivial, KeepCopy, SideBySide, Table, Target, Variant, TOKEN};

const TASKS: u64 = 64;

/// `n` requests through clones of `service`, spread over [`TASKS`] tasks;
/// the time is scaled to exactly `n` requests.
fn variant<S>(name: &'static str, rt: Arc<Runtime>, service: S) -> Variant
where
    S: Service<Request<Empty<Bytes>>, Response = Response<Empty<Bytes>>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
{
    let uri = common::api_uri();
    Variant::new(name, move |n| {
        common::time_lanes(&rt, TASKS, n, |share| {
            let mut service = service.clone();
            let uri = uri.clone();
            async move {
                for _ in 0..share {
                    black_box(common::send(&mut service, get(&uri)).await);
                }
            }
        })
    })
}

fn main() {
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    );
    let floor = AddAuthorizationLayer::bearer(TOKEN)
        .as_sensitive(true)
        .layer(trivial::<Empty<Bytes>>());
    let layer = common::wokelo_builder().build();
    let wokelo = layer.layer(trivial::<ReplayBody<Empty<Bytes>>>());
    // Warm the token, checking that it goes on.
    let check = layer.layer(tower::service_fn(|r: Request<ReplayBody<Empty<Bytes>>>| {
        assert_eq!(r.headers()[AUTHORIZATION], common::bearer().as_str());
        std::future::ready(Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())))
    }));
    rt.block_on(check.oneshot(get(&common::api_uri()))).unwrap();

    let mut variants = vec![
        variant("add_authorization", rt.clone(), floor.clone()),
        variant("wokelo_auth", rt.clone(), wokelo),
        variant("add_authorization_plus_copy", rt.clone(), KeepCopy(floor)),
    ];
    let group = "contention/64_tasks_2_workers";
    let mut c = common::criterion();
    common::criterion_group(&mut c, group, &mut variants);
    c.final_summary();
    if common::profiling() {
        return;
    }

    let (rounds, batch) = if common::quick() {
        (3, 6_400)
    } else {
        (31, 640_000)
    };
    let s = SideBySide::run(&mut variants, rounds, batch);
    let mut table = Table::default();
    table.row(
        "3. contention, 64 tasks, 2 workers (throughput)",
        format!(
            "WokeloAuth {:.2} M req/s (ratio of medians {:.3})",
            1e3 / s.ns("wokelo_auth"),
            1.0 / s.ratio_of_medians("wokelo_auth", "add_authorization")
        ),
        format!(
            "AddAuthorization {:.2} M req/s",
            1e3 / s.ns("add_authorization")
        ),
        1.0 / s.ratio("wokelo_auth", "add_authorization"),
        Target::AtLeast(0.9),
    );
    table.row(
        "3. reference: the least a retrying layer keeps (throughput)",
        format!(
            "AddAuthorization + a retry copy {:.2} M req/s",
            1e3 / s.ns("add_authorization_plus_copy")
        ),
        format!(
            "AddAuthorization {:.2} M req/s",
            1e3 / s.ns("add_authorization")
        ),
        1.0 / s.ratio("add_authorization_plus_copy", "add_authorization"),
        Target::None,
    );
    table.finish(&format!(
        "contention: total throughput, median of {rounds} interleaved rounds of {batch} requests"
    ));
}
