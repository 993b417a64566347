//! The dataset routes: `POST`, `GET`, `PUT` and `DELETE /api/v1/datasets`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ragq_common::db::new_id;
use ragq_common::ids::DatasetId;
use serde_json::{Value, json};
use sqlx::types::Json;

use super::names::free_name;
use super::rows::{
    DatasetRow, SELECT_DATASET, fetch_dataset, lock_tenant_names, resolve_embedding,
};
use super::validate::{
    chunk_method, dataset_name, default_parser_config, invalid, merge_parser_config, opt_string,
    pagerank, permission, reject_unknown_keys,
};
use crate::auth::Tenant;
use crate::envelope::{ApiError, ApiResult, PyJson, code, ok};
use crate::request::{
    ErrorData, ListWording, body_object, dedup, desc_param, id_strings, int_param, paging,
    query_map,
};
use crate::state::AppState;

/// `POST /api/v1/datasets`.
pub async fn create(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let req = body_object(body, ErrorData::Absent)?;
    reject_unknown_keys(&req)?;
    let name = match req.get("name") {
        None => {
            return Err(invalid(
                "name",
                "Field required",
                &Value::Object(req.clone()),
            ));
        }
        Some(v) => dataset_name(v)?,
    };
    let avatar = opt_string(&req, "avatar", 65_535)?.unwrap_or_default();
    let description = opt_string(&req, "description", 65_535)?;
    let embedding = opt_string(&req, "embedding_model", 255)?;
    let permission = match req.get("permission") {
        None | Some(Value::Null) => "me".to_string(),
        Some(v) => permission(v)?,
    };
    let method = match req.get("chunk_method") {
        None | Some(Value::Null) => "naive".to_string(),
        Some(v) => chunk_method(v)?,
    };
    let parser_config = match req.get("parser_config") {
        None | Some(Value::Null) => default_parser_config(),
        Some(v) => merge_parser_config(default_parser_config(), v)?,
    };
    let pagerank = match req.get("pagerank") {
        None | Some(Value::Null) => 0,
        Some(v) => pagerank(v)?,
    };
    let embedding = resolve_embedding(
        &state.db,
        &tenant,
        embedding
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty()),
    )
    .await?;

    let id = new_id();
    let mut tx = state.db.begin().await?;
    lock_tenant_names(&mut tx, &tenant).await?;
    let taken: Vec<String> =
        sqlx::query_scalar("SELECT lower(name) FROM datasets WHERE tenant_id = $1")
            .bind(&tenant)
            .fetch_all(&mut *tx)
            .await?;
    let name = free_name(&name, &taken.into_iter().collect());
    sqlx::query(
        "INSERT INTO datasets (id, tenant_id, name, description, avatar, embedding_model, permission,
                               chunk_method, parser_config, pagerank)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&id)
    .bind(&tenant)
    .bind(&name)
    .bind(&description)
    .bind(&avatar)
    .bind(&embedding)
    .bind(&permission)
    .bind(&method)
    .bind(Json(&parser_config))
    .bind(pagerank)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let row = fetch_dataset(&state.db, &tenant, &DatasetId::from_db(id))
        .await?
        .ok_or_else(|| ApiError::data("Dataset created failed"))?;
    Ok(ok(row.json()))
}

/// `GET /api/v1/datasets?page,page_size,orderby,desc,id,name` →
/// `{"code": 0, "data": [...], "total_datasets": N}`.
pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query_map(q, ErrorData::Absent)?;
    let page = int_param(&q, "page", 1)?;
    let page_size = int_param(&q, "page_size", 30)?;
    for (key, v) in [("page", page), ("page_size", page_size)] {
        if v < 1 {
            return Err(invalid(
                key,
                "Input should be greater than or equal to 1",
                &json!(v),
            ));
        }
    }
    let order = match q.get("orderby").map(String::as_str) {
        None | Some("") | Some("create_time") => "d.created_at",
        Some("update_time") => "d.updated_at",
        Some(other) => {
            return Err(invalid(
                "orderby",
                "Input should be 'create_time' or 'update_time'",
                &json!(other),
            ));
        }
    };
    let dir = if desc_param(&q) { "DESC" } else { "ASC" };
    let id = q.get("id").filter(|s| !s.is_empty());
    let name = q.get("name").filter(|s| !s.is_empty());
    let (limit, offset) = paging(page, page_size)?;

    let filter = "d.tenant_id = $1 AND ($2::text IS NULL OR d.id = $2) AND ($3::text IS NULL OR d.name = $3)";
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM datasets d WHERE {filter}"
    )))
    .bind(&tenant)
    .bind(id)
    .bind(name)
    .fetch_one(&state.db)
    .await?;
    if total == 0 && (id.is_some() || name.is_some()) {
        let what = id.or(name).map(String::as_str).unwrap_or_default();
        return Err(ApiError::new(
            code::PERMISSION,
            format!("User '{tenant}' lacks permission for dataset '{what}'"),
        ));
    }
    // `order` and `dir` come from the whitelists above, never from the request text.
    let rows = sqlx::query_as::<_, DatasetRow>(sqlx::AssertSqlSafe(format!(
        "{SELECT_DATASET} WHERE {filter} ORDER BY {order} {dir}, d.id {dir} LIMIT $4 OFFSET $5"
    )))
    .bind(&tenant)
    .bind(id)
    .bind(name)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.db)
    .await?;
    let data: Vec<Value> = rows.iter().map(DatasetRow::json).collect();
    Ok(PyJson(
        StatusCode::OK,
        json!({"code": code::SUCCESS, "data": data, "total_datasets": total}),
    )
    .into_response())
}

/// `PUT /api/v1/datasets/{dataset_id}` with any of `name, avatar, description, embedding_model,
/// permission, chunk_method, pagerank, parser_config`. The embedding model can change only while
/// the dataset has no chunks. Answers the updated dataset.
pub async fn update(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(dataset_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let req = body_object(body, ErrorData::Absent)?;
    let current = match DatasetId::parse(&dataset_id) {
        Ok(id) => fetch_dataset(&state.db, &tenant, &id).await?,
        Err(_) => None,
    };
    let Some(current) = current else {
        return Err(ApiError::new(
            code::PERMISSION,
            format!("User '{tenant}' lacks permission for dataset '{dataset_id}'"),
        ));
    };
    let dataset_id = DatasetId::from_db(current.id.clone());
    if req.is_empty() {
        return Err(ApiError::new(code::ARGUMENT, "No properties were modified"));
    }
    reject_unknown_keys(&req)?;

    let name = req.get("name").map(dataset_name).transpose()?;
    let avatar = match req.get("avatar") {
        Some(Value::Null) => Some(String::new()),
        _ => opt_string(&req, "avatar", 65_535)?,
    };
    let description = match req.get("description") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(_) => Some(opt_string(&req, "description", 65_535)?),
    };
    let permission = match req.get("permission") {
        None | Some(Value::Null) => None,
        Some(v) => Some(permission(v)?),
    };
    let method = match req.get("chunk_method") {
        None | Some(Value::Null) => None,
        Some(v) => Some(chunk_method(v)?),
    };
    let pagerank = match req.get("pagerank") {
        None | Some(Value::Null) => None,
        Some(v) => Some(pagerank(v)?),
    };
    let parser_config = match (req.get("parser_config"), &method) {
        (Some(v), _) if !v.is_null() => {
            Some(merge_parser_config(current.parser_config.0.clone(), v)?)
        }
        // A new chunk method without a config gets that method's defaults, as in RAGFlow.
        (_, Some(m)) if *m != current.chunk_method => Some(default_parser_config()),
        _ => None,
    };
    let embedding = match req.get("embedding_model") {
        None => None,
        Some(Value::String(s)) if !s.trim().is_empty() => {
            let resolved = resolve_embedding(&state.db, &tenant, Some(s.trim())).await?;
            if resolved != current.embedding_model && current.chunk_count > 0 {
                return Err(ApiError::data(format!(
                    "When chunk_num ({}) > 0, embedding_model must remain {}",
                    current.chunk_count, current.embedding_model
                )));
            }
            Some(resolved)
        }
        Some(v) => {
            return Err(invalid(
                "embedding_model",
                "String should have at least 1 character",
                v,
            ));
        }
    };

    let mut tx = state.db.begin().await?;
    lock_tenant_names(&mut tx, &tenant).await?;
    if let Some(name) = &name
        && name.to_lowercase() != current.name.to_lowercase()
    {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM datasets WHERE tenant_id = $1 AND lower(name) = lower($2) AND id <> $3)",
        )
        .bind(&tenant)
        .bind(name)
        .bind(&dataset_id)
        .fetch_one(&mut *tx)
        .await?;
        if exists {
            return Err(ApiError::data(format!(
                "Dataset name '{name}' already exists"
            )));
        }
    }
    sqlx::query(
        "UPDATE datasets SET
            name = COALESCE($3, name),
            avatar = COALESCE($4, avatar),
            description = CASE WHEN $5 THEN $6 ELSE description END,
            permission = COALESCE($7, permission),
            chunk_method = COALESCE($8, chunk_method),
            pagerank = COALESCE($9, pagerank),
            parser_config = COALESCE($10, parser_config),
            embedding_model = COALESCE($11, embedding_model),
            updated_at = now()
         WHERE id = $1 AND tenant_id = $2",
    )
    .bind(&dataset_id)
    .bind(&tenant)
    .bind(&name)
    .bind(&avatar)
    .bind(description.is_some())
    .bind(description.flatten())
    .bind(&permission)
    .bind(&method)
    .bind(pagerank)
    .bind(parser_config.map(Json))
    .bind(&embedding)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let row = fetch_dataset(&state.db, &tenant, &dataset_id)
        .await?
        .ok_or_else(|| ApiError::data("The dataset was deleted meanwhile."))?;
    Ok(ok(row.json()))
}

/// `DELETE /api/v1/datasets` with `{"ids": [...]}`: deletes the datasets with their documents
/// and chunks, all or nothing. Deviation: RAGFlow deletes **every** dataset of the tenant when
/// `ids` is null or absent; ragq deletes nothing and answers 102, so a bare call cannot wipe a
/// tenant. An empty list deletes nothing (code 0).
pub async fn delete(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let req = body_object(body, ErrorData::Absent)?;
    let ids = match req.get("ids") {
        None | Some(Value::Null) => {
            return Err(ApiError::data(
                "`ids` is required: list the datasets to delete (ragq never deletes all datasets at once).",
            ));
        }
        Some(v) => dedup(id_strings(v, "ids", ListWording::Dataset, |m| {
            ApiError::new(code::ARGUMENT, m)
        })?),
    };
    if ids.is_empty() {
        return Ok(ok(Value::Null));
    }
    let mut tx = state.db.begin().await?;
    let owned: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM datasets WHERE id = ANY($1) AND tenant_id = $2 FOR UPDATE",
    )
    .bind(&ids)
    .bind(&tenant)
    .fetch_all(&mut *tx)
    .await?;
    let missing: Vec<String> = ids
        .iter()
        .filter(|id| !owned.contains(id))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::new(
            code::PERMISSION,
            format!(
                "User '{tenant}' lacks permission for datasets: '{}'",
                missing.join(", ")
            ),
        ));
    }
    sqlx::query("DELETE FROM datasets WHERE id = ANY($1) AND tenant_id = $2")
        .bind(&owned)
        .bind(&tenant)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(ok(Value::Null))
}
