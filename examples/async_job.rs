//! An SDK-style job flow over the authenticated client: submit a report,
//! poll its status until it finishes, fetch the result.
//!
//! ```sh
//! cargo run --example async_job
//! ```
//!
//! Wokelo runs reports as jobs: `POST /api/enterprise/report/` answers `202`
//! with a `request_id`; `GET /api/enterprise/request/status/?request_id=..`
//! reports `PENDING`, `PROCESSING`, then `COMPLETED` or `FAILED`;
//! `GET /api/enterprise/request/result/?request_id=..` has the result. Real jobs
//! take seconds to about 25 minutes; against the embedded mock (no `WOKELO_*`
//! variables set) they finish after a few polls, and a second job shows a
//! failure.

#[path = "support/mod.rs"]
mod support;

use std::{fmt, time::Duration};

use bytes::Bytes;
use http::{header::CONTENT_TYPE, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::{json, Value};
use tower::{ServiceBuilder, ServiceExt};
use wokelo_auth::{
    testing::MockConfig, BoxError, PasswordGrant, ReplayBody, WokeloAuth, WokeloAuthLayer,
};

use support::Api;

/// A job's state, as the status endpoint reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum JobState {
    Pending,
    Processing,
    Completed,
    Failed,
    /// A state this client does not know yet: keep polling.
    #[serde(other)]
    Other,
}

impl JobState {
    fn is_finished(self) -> bool {
        matches!(self, JobState::Completed | JobState::Failed)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JobState::Pending => "PENDING",
            JobState::Processing => "PROCESSING",
            JobState::Completed => "COMPLETED",
            JobState::Failed => "FAILED",
            JobState::Other => "(unknown state)",
        })
    }
}

/// `202` from the submit endpoint.
#[derive(Debug, Deserialize)]
struct Submitted {
    request_id: String,
    status: JobState,
}

/// `200` from the status endpoint.
#[derive(Debug, Deserialize)]
struct Status {
    status: JobState,
}

/// `200` from the result endpoint. The report's shape depends on its type,
/// so it stays JSON here.
#[derive(Debug, Deserialize)]
struct JobResult {
    status: JobState,
    result: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

/// A small Wokelo "SDK": the authenticated client and the base URL.
#[derive(Clone)]
struct Wokelo {
    client: WokeloAuth<Client<support::Connector, ReplayBody<Full<Bytes>>>>,
    base: String,
}

impl Wokelo {
    /// Sends a request, expects a 2xx, and parses the JSON body as `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, BoxError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let response = self
            .client
            .clone()
            .oneshot(request.body(Full::from(body))?)
            .await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            return Err(
                format!("{path}: HTTP {status}: {}", String::from_utf8_lossy(&body)).into(),
            );
        }
        Ok(serde_json::from_slice(&body)?)
    }

    async fn submit(&self, report: Value) -> Result<Submitted, BoxError> {
        self.call(Method::POST, "/api/enterprise/report/", Some(report))
            .await
    }

    async fn status(&self, request_id: &str) -> Result<JobState, BoxError> {
        let path = format!("/api/enterprise/request/status/?request_id={request_id}");
        Ok(self.call::<Status>(Method::GET, &path, None).await?.status)
    }

    async fn result(&self, request_id: &str) -> Result<JobResult, BoxError> {
        let path = format!("/api/enterprise/request/result/?request_id={request_id}");
        self.call(Method::GET, &path, None).await
    }

    /// Submit, poll every `interval` until finished (at most `timeout`), fetch
    /// the result.
    async fn run(
        &self,
        report: Value,
        interval: Duration,
        timeout: Duration,
    ) -> Result<JobResult, BoxError> {
        let job = self.submit(report).await?;
        println!("submitted: request_id={} ({})", job.request_id, job.status);
        let poll = async {
            loop {
                tokio::time::sleep(interval).await;
                let state = self.status(&job.request_id).await?;
                println!("  {}: {state}", job.request_id);
                if state.is_finished() {
                    return Ok::<_, BoxError>(());
                }
            }
        };
        tokio::time::timeout(timeout, poll)
            .await
            .map_err(|_| format!("job {} not finished after {timeout:?}", job.request_id))??;
        self.result(&job.request_id).await
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    support::init_logging();
    let api = Api::from_env(MockConfig {
        job_steps: 3,
        ..MockConfig::default()
    })
    .await?;
    println!("Using {}\n", api.describe());
    let wokelo = Wokelo {
        client: ServiceBuilder::new()
            .layer(WokeloAuthLayer::new(PasswordGrant::new(api.credentials())))
            .service(support::http_client()),
        base: api.url(""),
    };
    let (interval, timeout) = match api.mock() {
        Some(_) => (Duration::from_millis(200), Duration::from_secs(10)),
        None => (Duration::from_secs(5), Duration::from_secs(30 * 60)),
    };

    // An illustrative report request; see Wokelo's API reference for the
    // parameters of each report type.
    let report = json!({"company": "stripe", "report_type": "company_primer"});
    let done = wokelo.run(report, interval, timeout).await?;
    println!("result: {}", done.status);
    println!("  {}", done.result.unwrap_or_default());

    if api.mock().is_some() {
        // The mock fails a job whose request says so: FAILED comes with an error.
        let done = wokelo
            .run(json!({"company": "acme", "fail": true}), interval, timeout)
            .await?;
        println!("result: {}", done.status);
        println!("  error: {}", done.error.unwrap_or_default());
    }
    Ok(())
}
