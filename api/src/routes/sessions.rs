//! Sessions of a chat (`/api/v1/chats/{chat_id}/sessions`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use ragq_common::db::new_id;
use serde_json::{Value, json};
use sqlx::PgPool;

use super::json_object;
use crate::auth::Tenant;
use crate::envelope::{ApiError, ApiResult, ok};
use crate::state::AppState;

/// RAGFlow's date style: `Mon, 28 Apr 2025 18:40:41 GMT`.
pub fn rfc822(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// A created session, in RAGFlow's response shape.
pub struct NewSession {
    pub id: String,
    pub json: Value,
}

/// Stores a new session whose first message is the chat's prologue.
pub async fn insert(
    db: &PgPool,
    tenant_id: &str,
    chat_id: &str,
    name: &str,
    user_id: &str,
    prologue: &str,
) -> Result<NewSession, sqlx::Error> {
    let id = new_id();
    let now: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO sessions (id, chat_id, tenant_id, name, user_id, prologue) VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING created_at",
    )
    .bind(&id)
    .bind(chat_id)
    .bind(tenant_id)
    .bind(name)
    .bind(user_id)
    .bind(prologue)
    .fetch_one(db)
    .await?;
    let ms = now.timestamp_millis();
    let json = json!({
        "id": id, "chat_id": chat_id, "name": name, "user_id": user_id,
        "messages": [{"role": "assistant", "content": prologue}],
        "create_time": ms, "create_date": rfc822(now), "update_time": ms, "update_date": rfc822(now),
    });
    Ok(NewSession { id, json })
}

/// The chat's prologue, if the tenant owns the chat.
pub async fn owned_chat_prologue(
    db: &PgPool,
    tenant_id: &str,
    chat_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(prompt_config->>'prologue', '') FROM chats WHERE id = $1 AND tenant_id = $2 AND status = '1'",
    )
    .bind(chat_id)
    .bind(tenant_id)
    .fetch_optional(db)
    .await
}

/// `POST /api/v1/chats/{chat_id}/sessions` with `{name?, user_id?}`.
pub async fn create(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(chat_id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let req = json_object(&body)?;
    let name = match req.get("name") {
        None | Some(Value::Null) => "New session".to_string(),
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) => return Err(ApiError::data("`name` can not be empty.")),
        Some(_) => return Err(ApiError::data("`name` must be a string.")),
    };
    let user_id = req
        .get("user_id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let prologue = owned_chat_prologue(&state.db, &tenant, &chat_id)
        .await?
        .ok_or_else(|| ApiError::data("You do not own the assistant."))?;
    let session = insert(&state.db, &tenant, &chat_id, &name, &user_id, &prologue).await?;
    Ok(ok(session.json))
}
