//! Sessions of a chat (RAGFlow v0.22.1 `api/apps/sdk/session.py`):
//! `POST`, `GET` and `DELETE /api/v1/chats/{chat_id}/sessions`, and
//! `PUT /api/v1/chats/{chat_id}/sessions/{session_id}`.
//!
//! RAGFlow keeps a session's messages as a JSON list in the session row. ragq keeps one
//! `turns` row per answered question (written by the worker) and builds RAGFlow's `messages`
//! when a session is listed: the prologue as the first assistant message, then for each saved
//! turn (`done` or `stopped`, in `seq` order) the user message and the assistant message with
//! that turn's reference chunks. Turns that failed (`error`) are not shown, as RAGFlow saves
//! nothing for a failed answer.
//!
//! Every query is filtered by the authenticated tenant and by a live chat (`status = '1'`).
//! Deleting is a hard delete; the session's turns go with it (`ON DELETE CASCADE`). As in
//! RAGFlow, `DELETE` with `ids` null, absent or empty deletes **every** session of the chat.
//!
//! Where this sits in the job path: beside it. A completion without a session opens one here
//! ([`insert`]); the worker saves each answered turn; these routes read and manage them.

use std::collections::{HashMap, HashSet};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use ragq_common::db::new_id;
use ragq_common::ids::{ChatId, SessionId};
use ragq_common::status::{TurnStatus, Validity};
use serde_json::{Map, Value, json};
use sqlx::PgPool;

use crate::auth::Tenant;
use crate::envelope::{ApiError, ApiResult, ok};
use crate::request::{ErrorData, IdList, ListParams, body_object, parse_ids, query_map};
use crate::response::{batch_result, rfc822};
use crate::state::AppState;

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
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let req = body_object(body, ErrorData::Null)?;
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
    let prologue = match ChatId::parse(&chat_id) {
        Ok(chat) => owned_chat_prologue(&state.db, &tenant, &chat).await?,
        Err(_) => None,
    }
    .ok_or_else(|| ApiError::data("You do not own the assistant."))?;
    let session = insert(&state.db, &tenant, &chat_id, &name, &user_id, &prologue).await?;
    Ok(ok(session.json))
}

/// Is the chat one of the tenant's live chats? (An id that does not parse is nobody's.)
async fn owns_chat(db: &PgPool, tenant_id: &str, chat_id: &str) -> Result<bool, sqlx::Error> {
    let Ok(chat_id) = ChatId::parse(chat_id) else {
        return Ok(false);
    };
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM chats WHERE id = $1 AND tenant_id = $2 AND status = '1')",
    )
    .bind(&chat_id)
    .bind(tenant_id)
    .fetch_one(db)
    .await
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: String,
    name: String,
    user_id: String,
    prologue: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct TurnRow {
    session_id: String,
    message_id: String,
    question: String,
    answer: String,
    reference: Value,
    created_at: f64,
}

/// A saved reference's chunks in the shape RAGFlow lists them under an assistant message.
fn reference_chunks(reference: &Value) -> Value {
    let chunks = reference.get("chunks").and_then(Value::as_array);
    let field = |c: &Value, k: &str| c.get(k).cloned().unwrap_or(Value::Null);
    Value::Array(
        chunks
            .into_iter()
            .flatten()
            .map(|c| {
                json!({
                    "id": field(c, "id"),
                    "content": field(c, "content"),
                    "document_id": field(c, "document_id"),
                    "document_name": field(c, "document_name"),
                    "dataset_id": field(c, "dataset_id"),
                    "image_id": field(c, "image_id"),
                    "positions": field(c, "positions"),
                })
            })
            .collect(),
    )
}

/// `GET /api/v1/chats/{chat_id}/sessions?page&page_size&orderby&desc&id&name&user_id`.
pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(chat_id): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Response> {
    let query = query_map(query, ErrorData::Null)?;
    let params = ListParams::parse(&query)?;
    let user_id = query.get("user_id").filter(|s| !s.is_empty());
    let db = &state.db;
    if !owns_chat(db, &tenant, &chat_id).await? {
        return Err(ApiError::data(format!(
            "You don't own the assistant {chat_id}."
        )));
    }
    let (limit, offset) = params.limit_offset()?;
    let sql = format!(
        "SELECT id, name, user_id, prologue, created_at, updated_at FROM sessions
         WHERE chat_id = $1 AND tenant_id = $2 AND ($3::text IS NULL OR id = $3)
           AND ($4::text IS NULL OR name = $4) AND ($5::text IS NULL OR user_id = $5)
         ORDER BY {} LIMIT $6 OFFSET $7",
        params.order_sql()
    );
    let sessions: Vec<SessionRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&chat_id)
        .bind(&tenant)
        .bind(&params.id)
        .bind(&params.name)
        .bind(user_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(db)
        .await?;
    if sessions.is_empty() {
        return Ok(ok(json!([])));
    }
    let ids: Vec<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
    let turns: Vec<TurnRow> = sqlx::query_as(
        "SELECT session_id, message_id, question, answer, reference,
                EXTRACT(EPOCH FROM created_at)::float8 AS created_at
         FROM turns WHERE session_id = ANY($1) AND status IN ($2, $3) ORDER BY seq",
    )
    .bind(&ids)
    .bind(TurnStatus::Done.as_str())
    .bind(TurnStatus::Stopped.as_str())
    .fetch_all(db)
    .await?;
    let mut messages: HashMap<String, Vec<Value>> = HashMap::new();
    for t in turns {
        let list = messages.entry(t.session_id).or_default();
        list.push(json!({"role": "user", "content": t.question, "id": t.message_id}));
        list.push(json!({
            "role": "assistant", "content": t.answer, "id": t.message_id,
            "created_at": t.created_at, "reference": reference_chunks(&t.reference),
        }));
    }
    let out: Vec<Value> = sessions
        .into_iter()
        .map(|s| {
            let mut msgs = vec![json!({"role": "assistant", "content": s.prologue})];
            msgs.extend(messages.remove(&s.id).unwrap_or_default());
            json!({
                "id": s.id, "chat_id": chat_id, "name": s.name, "user_id": s.user_id,
                "messages": msgs,
                "create_time": s.created_at.timestamp_millis(), "create_date": rfc822(s.created_at),
                "update_time": s.updated_at.timestamp_millis(), "update_date": rfc822(s.updated_at),
            })
        })
        .collect();
    Ok(ok(Value::Array(out)))
}

/// `PUT /api/v1/chats/{chat_id}/sessions/{session_id}` with `{name?, user_id?}` → `{"code": 0}`.
/// The messages are the saved turns and cannot be changed here.
pub async fn update(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path((chat_id, session_id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let req: Map<String, Value> = body_object(body, ErrorData::Null)?;
    let name = match req.get("name") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) => Some(String::new()),
        Some(_) => return Err(ApiError::argument("`name` must be a string.")),
    };
    let user_id = match req.get("user_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ApiError::argument("`user_id` must be a string.")),
    };
    let db = &state.db;
    // RAGFlow's order: the session, then the chat, then the body.
    let ids = ChatId::parse(&chat_id)
        .ok()
        .zip(SessionId::parse(&session_id).ok());
    let chat_status: Option<String> = match &ids {
        None => None,
        Some((chat, session)) => {
            sqlx::query_scalar(
                "SELECT c.status FROM sessions s JOIN chats c ON c.id = s.chat_id
                 WHERE s.id = $1 AND s.chat_id = $2 AND s.tenant_id = $3 AND c.tenant_id = $3",
            )
            .bind(session)
            .bind(chat)
            .bind(&tenant)
            .fetch_optional(db)
            .await?
        }
    };
    match chat_status.as_deref().map(str::parse::<Validity>) {
        None => return Err(ApiError::data("Session does not exist")),
        Some(Ok(Validity::Live)) => {}
        Some(_) => return Err(ApiError::data("You do not own the session")),
    }
    if req.contains_key("message") || req.contains_key("messages") {
        return Err(ApiError::data("`message` can not be change"));
    }
    if req.contains_key("reference") {
        return Err(ApiError::data("`reference` can not be change"));
    }
    if name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err(ApiError::data("`name` can not be empty."));
    }
    sqlx::query(
        "UPDATE sessions SET name = COALESCE($4, name), user_id = COALESCE($5, user_id), updated_at = now()
         WHERE id = $1 AND chat_id = $2 AND tenant_id = $3",
    )
    .bind(&session_id)
    .bind(&chat_id)
    .bind(&tenant)
    .bind(&name)
    .bind(&user_id)
    .execute(db)
    .await?;
    Ok(ok(Value::Null))
}

/// `DELETE /api/v1/chats/{chat_id}/sessions` with `{"ids": [...]}`; null, absent or empty
/// `ids` deletes every session of the chat (RAGFlow's documented behaviour).
pub async fn delete(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(chat_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let mut req = body_object(body, ErrorData::Null)?;
    let ids = parse_ids(req.remove("ids"), "session")?;
    let db = &state.db;
    if !owns_chat(db, &tenant, &chat_id).await? {
        return Err(ApiError::data("You don't own the chat"));
    }
    let Some(IdList { ids, duplicates }) = ids.filter(|l| !l.ids.is_empty()) else {
        sqlx::query("DELETE FROM sessions WHERE chat_id = $1 AND tenant_id = $2")
            .bind(&chat_id)
            .bind(&tenant)
            .execute(db)
            .await?;
        // Completions in this process stop trusting their earlier checks at once.
        state.access.forget_all();
        return Ok(ok(Value::Null));
    };
    let deleted: Vec<String> = sqlx::query_scalar(
        "DELETE FROM sessions WHERE chat_id = $1 AND tenant_id = $2 AND id = ANY($3) RETURNING id",
    )
    .bind(&chat_id)
    .bind(&tenant)
    .bind(&ids)
    .fetch_all(db)
    .await?;
    state.access.forget_all();
    let deleted: HashSet<String> = deleted.into_iter().collect();
    let errors = ids
        .iter()
        .filter(|id| !deleted.contains(*id))
        .map(|id| format!("The chat doesn't own the session {id}"))
        .collect();
    batch_result(deleted.len(), errors, duplicates)
}
