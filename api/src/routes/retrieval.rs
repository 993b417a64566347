//! `POST /api/v1/retrieval` — search datasets without a chat (RAGFlow's `retrieval_test`).
//!
//! The ingress checks the request against the database only (the datasets are the tenant's and
//! share one embedding model, the documents belong to them, the rerank model exists), then hands
//! the search to a worker as a `retrieval` job on the interactive lane and waits for its
//! `result` event ([`crate::dispatch::await_result`]). Embedding the question and reranking happen in the worker.
//!
//! Parameters and defaults are RAGFlow's: `page=1`, `page_size=30`, `similarity_threshold=0.2`,
//! `vector_similarity_weight=0.3`, `top_k=1024`; a JSON `null` (the ragflow-sdk sends all twelve
//! keys, nulls included) means the default. `highlight` is on unless given as the string
//! `"False"`/`"false"` (RAGFlow v0.22.1's quirk): each chunk then carries `highlight`, its content
//! with the matching words in `<em>…</em>`. Not supported, and ignored: `keyword` (LLM keyword
//! extraction), `cross_languages` (LLM translation) and `use_kg`. Documents have no metadata in
//! ragq, so a `metadata_condition` with conditions matches nothing (an empty result).

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::Response;
use ragq_common::job::{JobKind, Lane};
use ragq_common::ownership;
use ragq_common::retrieval::{DEFAULT_TOP_K, MAX_PAGE_SIZE, MAX_TOP_K_PARAM};
use serde_json::{Map, Value, json};

use crate::auth::Tenant;
use crate::dispatch::{await_result, new_job};
use crate::envelope::{ApiError, ApiResult, code, ok};
use crate::request::{ErrorData, ListWording, body_object, dedup, id_strings};
use crate::state::AppState;

fn data_err(m: String) -> ApiError {
    ApiError::data(m)
}

/// An integer parameter within `range`; null or absent = `default`.
fn int_field(
    req: &Map<String, Value>,
    key: &str,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, ApiError> {
    let v = match req.get(key) {
        None | Some(Value::Null) => return Ok(default),
        Some(Value::Number(n)) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                .map(|f| f as i64)
        }),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        Some(_) => None,
    };
    match v {
        Some(n) if range.contains(&n) => Ok(n),
        _ => Err(ApiError::new(
            code::ARGUMENT,
            format!(
                "`{key}` should be an integer between {} and {}.",
                range.start(),
                range.end()
            ),
        )),
    }
}

/// A number in 0..=1; null or absent = `default`.
fn unit_field(req: &Map<String, Value>, key: &str, default: f64) -> Result<f64, ApiError> {
    let v = match req.get(key) {
        None | Some(Value::Null) => return Ok(default),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    match v {
        Some(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(ApiError::new(
            code::ARGUMENT,
            format!("`{key}` should be a number between 0 and 1."),
        )),
    }
}

fn empty_result() -> Response {
    ok(json!({"total": 0, "chunks": [], "doc_aggs": []}))
}

/// `POST /api/v1/retrieval`.
pub async fn retrieval(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    run(&state, &tenant, body_object(body, ErrorData::Absent)?).await
}

/// A retrieval request of `tenant` (also `POST /api/v1/searchbots/retrieval_test`).
pub async fn run(state: &AppState, tenant: &str, req: Map<String, Value>) -> ApiResult<Response> {
    let dataset_ids = match req.get("dataset_ids") {
        None | Some(Value::Null) => return Err(ApiError::data("`dataset_ids` is required.")),
        Some(v) => dedup(id_strings(
            v,
            "dataset_ids",
            ListWording::Dataset,
            data_err,
        )?),
    };
    if dataset_ids.is_empty() {
        return Err(ApiError::data("`dataset_ids` is required."));
    }
    let question = match req.get("question") {
        None | Some(Value::Null) => return Err(ApiError::data("`question` is required.")),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(_) => return Err(ApiError::data("`question` should be a string.")),
    };
    let document_ids = match req.get("document_ids") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => dedup(id_strings(v, "documents", ListWording::Dataset, data_err)?),
    };
    let page = int_field(&req, "page", 1, 1..=1_000_000)?;
    let page_size = int_field(&req, "page_size", 30, 1..=MAX_PAGE_SIZE)?;
    let top_k = int_field(&req, "top_k", DEFAULT_TOP_K, 1..=MAX_TOP_K_PARAM)?;
    let similarity_threshold = unit_field(&req, "similarity_threshold", 0.2)?;
    let vector_similarity_weight = unit_field(&req, "vector_similarity_weight", 0.3)?;
    let rerank_id = match req.get("rerank_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.trim().to_string()),
        Some(_) => return Err(ApiError::data("`rerank_id` should be a string.")),
    };
    let highlight =
        !matches!(req.get("highlight"), Some(Value::String(s)) if s.eq_ignore_ascii_case("false"));
    let metadata_filters = match req.get("metadata_condition") {
        None | Some(Value::Null) => false,
        Some(Value::Object(m)) => match m.get("conditions") {
            None | Some(Value::Null) => false,
            Some(Value::Array(c)) => !c.is_empty(),
            Some(_) => {
                return Err(ApiError::data(
                    "`metadata_condition.conditions` should be a list.",
                ));
            }
        },
        Some(_) => return Err(ApiError::data("`metadata_condition` should be an object.")),
    };

    // Ownership and consistency, from the database alone (the check the worker repeats).
    ownership::search_datasets(&state.db, tenant, &dataset_ids).await?;
    ownership::documents_in_datasets(&state.db, &document_ids, &dataset_ids).await?;
    if let Some(rerank) = &rerank_id {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM models WHERE tenant_id = $1 AND kind = 'rerank' AND name = $2)",
        )
        .bind(tenant)
        .bind(rerank)
        .fetch_one(&state.db)
        .await?;
        if !exists {
            return Err(ApiError::data(format!(
                "`rerank_id` {rerank} doesn't exist"
            )));
        }
    }
    if question.is_empty() || metadata_filters {
        return Ok(empty_result());
    }

    let params = json!({
        "dataset_ids": dataset_ids,
        "document_ids": document_ids,
        "page": page,
        "page_size": page_size,
        "similarity_threshold": similarity_threshold,
        "vector_similarity_weight": vector_similarity_weight,
        "top_k": top_k,
        "rerank_id": rerank_id,
        "highlight": highlight,
    });
    let job = new_job(state, JobKind::Retrieval, tenant, question, params);
    let data = await_result(state, &job, Lane::Interactive).await?;
    Ok(ok(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn numbers_take_defaults_and_bounds() {
        let r =
            req(json!({"page": null, "page_size": 10, "top_k": "5", "similarity_threshold": 0.5}));
        assert_eq!(int_field(&r, "page", 1, 1..=9).unwrap(), 1);
        assert_eq!(int_field(&r, "page_size", 30, 1..=1024).unwrap(), 10);
        assert_eq!(int_field(&r, "top_k", 1024, 1..=4096).unwrap(), 5);
        assert_eq!(unit_field(&r, "similarity_threshold", 0.2).unwrap(), 0.5);
        assert_eq!(
            unit_field(&r, "vector_similarity_weight", 0.3).unwrap(),
            0.3
        );
        let bad = req(json!({"page": 0, "page_size": "x", "similarity_threshold": 2}));
        assert_eq!(
            int_field(&bad, "page", 1, 1..=9).unwrap_err().code,
            code::ARGUMENT
        );
        assert!(int_field(&bad, "page_size", 30, 1..=1024).is_err());
        assert!(unit_field(&bad, "similarity_threshold", 0.2).is_err());
    }
}
