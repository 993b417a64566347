//! The ingress's metrics and trace context.
//!
//! [`observe`] wraps every routed request: it counts it (`ragq_http_requests_total{route,status}`),
//! takes the request's W3C `traceparent` (or starts a trace), answers with this ingress's
//! `traceparent`, and makes both the trace and the time the request was accepted available to
//! the handler ([`traceparent`], [`accepted`]) — jobs carry the first, TTFC is measured from the
//! second. [`metrics_page`] serves `/metrics`.

use std::sync::LazyLock;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use ragq_common::job::{JobKind, Lane};
use ragq_common::metrics as m;
use ragq_common::trace::{self, TraceParent};
use tokio::time::Instant;

use crate::state::AppState;

/// Metric handles made once (after the recorder is installed).
pub struct ApiMetrics {
    pub ttfc: Histogram,
    pub events_relayed: Counter,
    open_streams: Gauge,
    published: [Counter; JobKind::ALL.len()],
    pub rejected_open_streams: Counter,
    pub rejected_queue_depth: Counter,
    pub rejected_tenant_rate: Counter,
    pub rejected_tenant_concurrency: Counter,
    queue_depth: [Gauge; 3],
    queue_consumers: [Gauge; 3],
}

/// The process's handles (the first use installs the recorder).
pub static METRICS: LazyLock<ApiMetrics> = LazyLock::new(|| {
    m::install();
    ApiMetrics {
        ttfc: histogram!(m::TTFC),
        events_relayed: counter!(m::EVENTS_RELAYED),
        open_streams: gauge!(m::OPEN_STREAMS),
        published: JobKind::ALL.map(|k| counter!(m::JOBS_PUBLISHED, "kind" => k.as_str())),
        rejected_open_streams: counter!(m::ADMISSION_REJECTIONS, "reason" => "open_streams"),
        rejected_queue_depth: counter!(m::ADMISSION_REJECTIONS, "reason" => "queue_depth"),
        rejected_tenant_rate: counter!(m::ADMISSION_REJECTIONS, "reason" => m::REASON_TENANT_RATE),
        rejected_tenant_concurrency: counter!(
            m::ADMISSION_REJECTIONS,
            "reason" => m::REASON_TENANT_CONCURRENCY
        ),
        queue_depth: Lane::ALL.map(|l| gauge!(m::QUEUE_DEPTH, "lane" => l.as_str())),
        queue_consumers: Lane::ALL.map(|l| gauge!(m::QUEUE_CONSUMERS, "lane" => l.as_str())),
    }
});

fn lane_index(lane: Lane) -> usize {
    match lane {
        Lane::Interactive => 0,
        Lane::Batch => 1,
        Lane::Ingest => 2,
    }
}

impl ApiMetrics {
    pub fn published(&self, kind: JobKind) {
        let i = JobKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.published[i].increment(1);
    }

    pub fn queue(&self, lane: Lane, stats: ragq_common::broker::QueueStats) {
        let i = lane_index(lane);
        self.queue_depth[i].set(f64::from(stats.messages));
        self.queue_consumers[i].set(f64::from(stats.consumers));
    }
}

/// What a request's handler may ask about the request.
#[derive(Clone, Copy)]
struct RequestCtx {
    /// This ingress's span of the request's trace (the parent of the worker's).
    trace: TraceParent,
    accepted: Instant,
}

tokio::task_local! {
    static REQUEST: RequestCtx;
}

/// The `traceparent` a job created by the current request carries (`None` outside a request).
pub fn traceparent() -> Option<String> {
    REQUEST.try_with(|r| r.trace.to_string()).ok()
}

/// When the current request was accepted (now, outside a request).
pub fn accepted() -> Instant {
    REQUEST
        .try_with(|r| r.accepted)
        .unwrap_or_else(|_| Instant::now())
}

/// The middleware: see the module docs.
pub async fn observe(req: Request, next: Next) -> Response {
    let accepted = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let parent = req
        .headers()
        .get(trace::HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| TraceParent::parse(v).ok());
    let trace = parent.map_or_else(TraceParent::generate, |p| p.child());
    let ctx = RequestCtx { trace, accepted };
    let mut resp = REQUEST.scope(ctx, next.run(req)).await;
    counter!(m::HTTP_REQUESTS, "route" => route, "status" => resp.status().as_str().to_string())
        .increment(1);
    if let Ok(v) = HeaderValue::from_str(&trace.to_string()) {
        resp.headers_mut().insert(trace::HEADER, v);
    }
    resp
}

/// `GET /metrics`: the process's metrics in Prometheus text format.
pub async fn metrics_page(State(state): State<AppState>) -> impl IntoResponse {
    METRICS.open_streams.set(state.events.open_streams() as f64);
    m::record_db_pool(m::ROLE_API, &state.db);
    (
        [(axum::http::header::CONTENT_TYPE, m::CONTENT_TYPE)],
        m::install().render(),
    )
}
