//! Writing an answer: the small formatting every route shares.
//!
//! Where this sits in the job path: last, for the routes that answer in RAGFlow's envelope
//! without streaming (lists, deletes, results awaited from a worker). Streamed answers are
//! written by [`crate::wire`]; the envelope itself is [`crate::envelope`].

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::envelope::{ApiError, ApiResult, PyJson, code, ok};

/// RAGFlow's date style: `Mon, 28 Apr 2025 18:40:41 GMT`.
pub fn rfc822(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Epoch milliseconds.
pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Python's `repr` of a list of strings: `['a', 'b']` (RAGFlow puts it in messages).
pub fn py_list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| format!("'{s}'")).collect();
    format!("[{}]", inner.join(", "))
}

/// RAGFlow's answer to a batch delete: all deleted → `{"code": 0}`; some failed → code 0 with
/// `data: {success_count, errors}`; none deleted → 102 with the errors joined.
pub fn batch_result(
    success_count: usize,
    errors: Vec<String>,
    duplicates: Vec<String>,
) -> ApiResult {
    for (list, sep) in [(errors, "; "), (duplicates, ";")] {
        if list.is_empty() {
            continue;
        }
        if success_count > 0 {
            return Ok(ok(json!({"success_count": success_count, "errors": list})));
        }
        return Err(ApiError::data(list.join(sep)));
    }
    Ok(ok(Value::Null))
}

/// RAGFlow's `get_json_result(data=…)`: code, message "success" and data.
pub fn json_result(data: Value) -> Response {
    PyJson(
        StatusCode::OK,
        json!({"code": code::SUCCESS, "message": "success", "data": data}),
    )
    .into_response()
}

/// `X-Ragq-Job-Id`: lets a client stop the job or resume its stream (see `routes::jobs`).
pub const JOB_ID_HEADER: &str = "x-ragq-job-id";

/// Names the job that answers in [`JOB_ID_HEADER`].
pub fn set_job_header(resp: &mut Response, job_id: Uuid) {
    if let Ok(v) = axum::http::HeaderValue::from_str(&job_id.to_string()) {
        resp.headers_mut().insert(JOB_ID_HEADER, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_formats() {
        assert_eq!(py_list(&["a".into(), "b".into()]), "['a', 'b']");
        let t = DateTime::from_timestamp(1_745_865_641, 0).unwrap();
        assert_eq!(rfc822(t), "Mon, 28 Apr 2025 18:40:41 GMT");
    }
}
