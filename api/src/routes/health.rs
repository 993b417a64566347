//! `/healthz`: the process is alive. `/readyz`: PostgreSQL, RabbitMQ and Redis are reachable.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use crate::envelope::PyJson;
use crate::state::AppState;

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let db = sqlx::query("SELECT 1").execute(&state.db).await.is_ok();
    let broker = (state.broker_connected)();
    let bus = state.events.is_connected();
    let status = if db && broker && bus {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    PyJson(
        status,
        json!({"database": db, "broker": broker, "bus": bus}),
    )
}
