//! HTTP routes, one module per resource.

pub mod completions;
pub mod health;
pub mod sessions;

use axum::Router;
use axum::routing::{get, post};

use crate::envelope::ApiError;
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route(
            "/api/v1/chats/{chat_id}/completions",
            post(completions::completions),
        )
        .route("/api/v1/chats/{chat_id}/sessions", post(sessions::create))
        .fallback(|| async { ApiError::new(404, "Not Found") })
        .with_state(state)
}

/// Parses a JSON object body; anything else is RAGFlow's argument error.
pub fn json_object(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::argument(
            "The request body must be a JSON object.",
        )),
        Err(e) => Err(ApiError::argument(format!(
            "The request body is not valid JSON: {e}"
        ))),
    }
}
