//! Output and error files, composed from a batch's line rows when read (nothing is written at
//! finalization but the two file rows). Output: completed lines in input order,
//! `{id, custom_id, response: {status_code: 200, request_id, body: chat.completion}, error: null}`
//! where `body` is the same non-stream body as `POST …/chat/completions` (with `reference` when
//! the line asked for it). Error file: failed lines, `response.status_code` and `body` the
//! OpenAI error the same request would have got.

use ragq_common::client_error::ErrorReason;
use ragq_common::event::{Done, Reference};
use ragq_common::status::LineStatus;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::relay::Failure;
use crate::state::AppState;
use crate::wire::openai::{self, OpenAiError};

#[derive(sqlx::FromRow)]
struct LineRow {
    id: Uuid,
    custom_id: String,
    model: String,
    reference: bool,
    prompt_chars: i64,
    result: Option<sqlx::types::Json<Value>>,
    chat_id: String,
}

/// The JSONL of file `purpose` (`batch_output` or `batch_error`) of `batch_id`.
pub async fn compose(
    state: &AppState,
    batch_id: &str,
    purpose: &str,
) -> Result<Vec<u8>, OpenAiError> {
    let status = if purpose == "batch_error" {
        LineStatus::Failed
    } else {
        LineStatus::Completed
    };
    let rows: Vec<LineRow> = sqlx::query_as(
        "SELECT l.id, l.custom_id, l.model, l.reference, l.prompt_chars, l.result, b.chat_id
         FROM batch_lines l JOIN batches b ON b.id = l.batch_id
         WHERE l.batch_id = $1 AND l.status = $2 ORDER BY l.line_no",
    )
    .bind(batch_id)
    .bind(status.as_str())
    .fetch_all(&state.db)
    .await?;
    let mut out = Vec::new();
    for r in rows {
        let result = r
            .result
            .as_ref()
            .map(|j| j.0.clone())
            .unwrap_or(Value::Null);
        let (status_code, body) = if status == LineStatus::Completed {
            (200, completion(&r, &result))
        } else {
            let e = OpenAiError::from_failure(&failure(&result));
            (e.status.as_u16(), e.body())
        };
        let line = json!({
            "id": format!("batch_req_{}", r.id.simple()),
            "custom_id": r.custom_id,
            "response": {"status_code": status_code, "request_id": r.id.to_string(), "body": body},
            "error": null,
        });
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
    }
    Ok(out)
}

fn completion(r: &LineRow, result: &Value) -> Value {
    let done: Option<Done> = result
        .get("done")
        .and_then(|d| serde_json::from_value(d.clone()).ok());
    let reference: Option<Reference> = result
        .get("reference")
        .and_then(|d| serde_json::from_value(d.clone()).ok());
    let Some(done) = done else {
        return json!({});
    };
    let c = openai::Completion {
        chat_id: &r.chat_id,
        model: &r.model,
        created: done.created_at as i64,
        prompt_chars: r.prompt_chars.max(0) as u64,
        with_reference: r.reference,
    };
    openai::completion_json(&c, &done, reference.as_ref())
}

/// A failed line's stored `{reason, error_id, message}`.
fn failure(result: &Value) -> Failure {
    let text = |k: &str| {
        result
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let reason_name = text("reason");
    let reason = ErrorReason::ALL
        .into_iter()
        .find(|r| r.as_str() == reason_name)
        .unwrap_or(ErrorReason::Internal);
    Failure {
        reason,
        error_id: text("error_id"),
        message: text("message"),
    }
}
