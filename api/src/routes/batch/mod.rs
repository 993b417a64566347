//! OpenAI Batch API under a chat's OpenAI base URL (`/api/v1/chats_openai/{chat_id}`), so
//! `OpenAI(base_url=…/chats_openai/{chat_id})` uploads with `files.create(purpose="batch")` and
//! runs `batches.create(…)` unchanged:
//!
//! | route | module |
//! | --- | --- |
//! | `POST /files` (multipart `file`, `purpose=batch`), `GET /files`, `GET /files/{id}`, `GET /files/{id}/content`, `DELETE /files/{id}` | [`files`] |
//! | `POST /batches`, `GET /batches`, `GET /batches/{id}`, `POST /batches/{id}/cancel` | [`batches`] |
//!
//! Files and batches belong to the tenant of the API key; another tenant gets 404. Each line of
//! a batch becomes a `batch_line` job on the batch lane (`ragq_common::batch`); output and error
//! files are composed from the line rows when read ([`output`]). Errors are OpenAI error bodies
//! with real statuses (400 bad input, 401 key, 404 unknown or another tenant's, 503 broker or
//! database down).

pub mod batches;
pub mod files;
pub mod output;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

use serde_json::Value;

use crate::wire::openai::OpenAiError;

/// Epoch seconds of an optional timestamp (`null` when unset).
pub(crate) fn ts(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| Value::from(t.timestamp()))
}

/// 404 `not_found` for a file or batch that is missing or another tenant's.
pub(crate) fn not_found(what: &str, id: &str) -> OpenAiError {
    OpenAiError::invalid(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("No such {what}: '{id}'"),
    )
}

/// `after` and `limit` of a list request (`limit` 1..=100, default 20).
pub(crate) fn paging(q: &HashMap<String, String>) -> Result<(Option<String>, i64), OpenAiError> {
    let after = q.get("after").cloned();
    let limit = match q.get("limit") {
        None => 20,
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                return Err(OpenAiError::bad_param(
                    "limit",
                    "invalid_value",
                    "`limit` must be an integer between 1 and 100.",
                ));
            }
        },
    };
    Ok((after, limit))
}

/// An OpenAI list object over `data` (one more row than `limit` was read to know `has_more`).
pub(crate) fn list(mut data: Vec<Value>, limit: i64) -> Value {
    let has_more = data.len() as i64 > limit;
    data.truncate(limit.max(0) as usize);
    let id = |v: Option<&Value>| v.and_then(|v| v.get("id")).cloned().unwrap_or(Value::Null);
    serde_json::json!({
        "object": "list",
        "first_id": id(data.first()),
        "last_id": id(data.last()),
        "has_more": has_more,
        "data": data,
    })
}
