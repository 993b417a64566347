//! `/healthz`: the process is alive. `/readyz`: PostgreSQL, RabbitMQ and Redis are reachable
//! (the check shared with the worker, [`ragq_common::health::Readiness`]).
//!
//! Where this sits: outside the job path; orchestrators' probes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use ragq_common::health::Readiness;

use crate::envelope::PyJson;
use crate::state::AppState;

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let ready = Readiness::check(
        &state.db,
        state.jobs.is_connected(),
        state.events.is_connected(),
    )
    .await;
    let status = if ready.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    PyJson(status, ready.json())
}
