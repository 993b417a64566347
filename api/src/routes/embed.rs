//! Embedded chatbots and search pages, and the embed tokens that authorise them.
//!
//! An **embed token** (RAGFlow's `beta` token) is scoped to one tenant and is the only thing
//! these routes accept (`Authorization: Bearer <token>`, [`Embedded`]); the tenant's API key is
//! refused here, and an embed token is refused everywhere else (every other route takes
//! [`Tenant`], which looks only at API keys). Each token has its own rate limit (requests per
//! minute): over it, HTTP 429 with code 429 and `Retry-After`.
//!
//! | route | auth | what |
//! | --- | --- | --- |
//! | `POST /api/v1/embed_tokens` `{label?, rate_per_minute?}` | API key | create; the token is in the answer, once |
//! | `GET /api/v1/embed_tokens` | API key | list (no token, only ids) |
//! | `DELETE /api/v1/embed_tokens/{id}` | API key | revoke, effective on the next request |
//! | `POST /api/v1/chatbots/{chat_id}/completions` | embed token | RAGFlow completion of the tenant's chat (`quote` off unless given) |
//! | `GET /api/v1/chatbots/{chat_id}/info` | embed token | `{title, avatar, prologue}` |
//! | `POST /api/v1/searchbots/ask` `{question, kb_ids}` | embed token | as `/api/v1/sessions/ask` |
//! | `POST /api/v1/searchbots/related_questions` `{question, industry?}` | embed token | as `/api/v1/sessions/related_questions` |
//! | `POST /api/v1/searchbots/mindmap` `{question, kb_ids}` | embed token | as `/api/v1/sessions/mindmap` |
//! | `POST /api/v1/searchbots/retrieval_test` `{question, kb_id, doc_ids?, page?, size?, …}` | embed token | as `/api/v1/retrieval` |
//!
//! Where this sits in the job path: [`Embedded`] replaces [`Tenant`] as the first step; the
//! rest is the API-key route's path (the handlers here only map RAGFlow's names and call it).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use ragq_common::embed_token::{self, EmbedToken, EmbedTokenError};
use ragq_common::ids::ChatId;
use serde_json::{Value, json};

use super::{ask, completions, retrieval};
use crate::auth::{Embedded, Tenant};
use crate::envelope::{ApiError, ApiResult, ok};
use crate::request::{ErrorData, body_object};
use crate::response::rfc822;
use crate::state::AppState;

fn token_error(e: EmbedTokenError) -> ApiError {
    match e {
        EmbedTokenError::Db(e) => ApiError::from(e),
        EmbedTokenError::BadRate => ApiError::argument(e.to_string()),
        EmbedTokenError::NoTenant(_) => ApiError::data(e.to_string()),
    }
}

fn token_json(t: &EmbedToken) -> Value {
    json!({
        "id": t.id,
        "tenant_id": t.tenant_id,
        "label": t.label,
        "rate_per_minute": t.rate_per_minute,
        "create_time": t.created_at.timestamp_millis(),
        "create_date": rfc822(t.created_at),
        "revoked": t.revoked_at.is_some(),
        "revoke_time": t.revoked_at.map(|r| r.timestamp_millis()),
    })
}

/// `POST /api/v1/embed_tokens`.
pub async fn create_token(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let req = body_object(body, ErrorData::Absent)?;
    let label = match req.get("label") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(_) => return Err(ApiError::argument("`label` must be a string.")),
    };
    let rate = match req.get("rate_per_minute") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| token_error(EmbedTokenError::BadRate))?,
        ),
    };
    let created = embed_token::create(&state.db, &tenant, &label, rate)
        .await
        .map_err(token_error)?;
    let mut data = token_json(&created.row);
    data["token"] = Value::String(created.token);
    Ok(ok(data))
}

/// `GET /api/v1/embed_tokens`.
pub async fn list_tokens(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> ApiResult<Response> {
    let tokens = embed_token::list(&state.db, &tenant)
        .await
        .map_err(token_error)?;
    Ok(ok(Value::Array(tokens.iter().map(token_json).collect())))
}

/// `DELETE /api/v1/embed_tokens/{id}`.
pub async fn revoke_token(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    if embed_token::revoke(&state.db, &tenant, &id)
        .await
        .map_err(token_error)?
    {
        Ok(ok(Value::Null))
    } else {
        Err(ApiError::data(format!(
            "The embed token {id} doesn't exist or is already revoked."
        )))
    }
}

/// `POST /api/v1/chatbots/{chat_id}/completions`.
pub async fn chatbot_completions(
    State(state): State<AppState>,
    embedded: Embedded,
    Path(chat_id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    completions::complete(&state, embedded.tenant, chat_id, &body, true).await
}

/// `GET /api/v1/chatbots/{chat_id}/info`.
pub async fn chatbot_info(
    State(state): State<AppState>,
    embedded: Embedded,
    Path(chat_id): Path<String>,
) -> ApiResult<Response> {
    let row: Option<(String, String, String)> = match ChatId::parse(&chat_id) {
        Err(_) => None,
        Ok(chat) => {
            sqlx::query_as(
                "SELECT name, avatar, COALESCE(prompt_config->>'prologue', '')
                 FROM chats WHERE id = $1 AND tenant_id = $2 AND status = '1'",
            )
            .bind(&chat)
            .bind(&embedded.tenant)
            .fetch_optional(&state.db)
            .await?
        }
    };
    let Some((title, avatar, prologue)) = row else {
        return Err(ApiError::data(format!(
            "Can't find dialog by ID: {chat_id}"
        )));
    };
    Ok(ok(
        json!({"title": title, "avatar": avatar, "prologue": prologue}),
    ))
}

/// `POST /api/v1/searchbots/ask`.
pub async fn searchbot_ask(
    State(state): State<AppState>,
    embedded: Embedded,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    ask::ask_with(
        &state,
        &embedded.tenant,
        body_object(body, ErrorData::Absent)?,
        "kb_ids",
    )
    .await
}

/// `POST /api/v1/searchbots/related_questions`.
pub async fn searchbot_related(
    State(state): State<AppState>,
    embedded: Embedded,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    ask::related_with(
        &state,
        &embedded.tenant,
        body_object(body, ErrorData::Absent)?,
    )
    .await
}

/// `POST /api/v1/searchbots/mindmap`.
pub async fn searchbot_mindmap(
    State(state): State<AppState>,
    embedded: Embedded,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    ask::mindmap_with(
        &state,
        &embedded.tenant,
        body_object(body, ErrorData::Absent)?,
    )
    .await
}

/// `POST /api/v1/searchbots/retrieval_test`: RAGFlow's search-page names (`kb_id` a string or a
/// list, `doc_ids`, `size`) mapped onto `/api/v1/retrieval`'s.
pub async fn searchbot_retrieval(
    State(state): State<AppState>,
    embedded: Embedded,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let mut req = body_object(body, ErrorData::Absent)?;
    if let Some(kb) = req.remove("kb_id") {
        let ids = match kb {
            Value::String(s) => json!([s]),
            other => other,
        };
        req.insert("dataset_ids".into(), ids);
    }
    if let Some(docs) = req.remove("doc_ids") {
        req.insert("document_ids".into(), docs);
    }
    if let Some(size) = req.remove("size") {
        req.insert("page_size".into(), size);
    }
    retrieval::run(&state, &embedded.tenant, req).await
}

/// Agents, memory and other RAGFlow features ragq does not have: RAGFlow's envelope with a
/// clear message instead of a 404 page (newer SDKs call these).
pub async fn not_served(uri: axum::http::Uri) -> ApiError {
    let path = uri.path();
    let feature = path
        .strip_prefix("/api/v1/")
        .and_then(|p| p.split('/').next())
        .unwrap_or("");
    ApiError::data(format!(
        "`{feature}` is not supported by this server (ragq serves chats, sessions, completions, datasets, documents, chunks and retrieval): {path}"
    ))
}
