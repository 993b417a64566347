//! The chat routes: `POST`, `GET`, `PUT`/`PATCH` and `DELETE` (see the [module docs](super) for
//! names, validation, defaults and deviations).

use std::collections::{HashMap, HashSet};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use ragq_common::chat_defaults;
use ragq_common::db::new_id;
use ragq_common::ids::ChatId;
use serde_json::{Map, Value};
use sqlx::types::Json;

use super::checks::{
    check_datasets, check_models, check_parameters, default_chat_model, is_unique_violation,
    name_taken, valid_name,
};
use super::input::parse_input;
use super::output::{ChatRow, DatasetsOut, chat_columns, chat_json, datasets_by_id};
use crate::auth::Tenant;
use crate::config::RagflowCompat;
use crate::envelope::{ApiError, ApiResult, ok};
use crate::request::{ErrorData, IdList, ListParams, body_object, parse_ids, query_map};
use crate::response::batch_result;
use crate::state::AppState;

/// `POST /api/v1/chats` → the new chat (`dataset_ids`, no `top_k`).
pub async fn create(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let input = parse_input(body_object(body, ErrorData::Null)?)?;
    let db = &state.db;
    let dataset_ids = input.dataset_ids.clone().unwrap_or_default();
    check_datasets(db, &tenant, &dataset_ids).await?;
    check_models(db, &tenant, &input).await?;
    let llm_model = match input.llm_model.clone().flatten() {
        Some(name) => name,
        None => default_chat_model(db, &tenant).await?.ok_or_else(|| {
            ApiError::data("`llm.model_name` is required: the tenant has no chat model.")
        })?,
    };
    let name = valid_name(
        Some(input.name.as_deref().unwrap_or("")),
        "`name` is required.",
    )?
    .unwrap_or_default();
    if name_taken(db, &tenant, &name, "").await? {
        return Err(ApiError::data("Duplicated chat name in creating chat."));
    }
    if input.tenant_id_given {
        return Err(ApiError::data("`tenant_id` must not be provided."));
    }

    // Absent keys get defaults; present nulls stay null, except an empty system prompt.
    let mut prompt_config = input.prompt_config;
    if let Value::Object(defaults) = chat_defaults::prompt_config() {
        for (key, default) in defaults {
            let empty_system = key == "system"
                && prompt_config
                    .get("system")
                    .is_none_or(|v| v.as_str().is_none_or(str::is_empty));
            if empty_system || !prompt_config.contains_key(&key) {
                prompt_config.insert(key, default);
            }
        }
    }
    check_parameters(&prompt_config)?;
    let mut llm_setting = match chat_defaults::llm_setting() {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    llm_setting.extend(input.llm_setting);

    let row: Result<ChatRow, sqlx::Error> = sqlx::query_as(concat!(
        "INSERT INTO chats (id, tenant_id, name, description, avatar, language, llm_model, llm_setting,
                            prompt_config, similarity_threshold, vector_similarity_weight, top_n, top_k,
                            rerank_model, dataset_ids, do_refer, prompt_type)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
         RETURNING ",
        chat_columns!()
    ))
    .bind(new_id())
    .bind(&tenant)
    .bind(&name)
    .bind(input.description.as_deref().unwrap_or("A helpful Assistant"))
    .bind(input.avatar.as_deref().unwrap_or(""))
    .bind(input.language.as_deref().unwrap_or("English"))
    .bind(&llm_model)
    .bind(Json(Value::Object(llm_setting)))
    .bind(Json(Value::Object(prompt_config)))
    .bind(input.similarity_threshold.unwrap_or(0.2))
    .bind(input.vector_similarity_weight.unwrap_or(0.3))
    .bind(input.top_n.unwrap_or(6))
    .bind(input.top_k.unwrap_or(1024))
    .bind(input.rerank_model.as_deref().unwrap_or(""))
    .bind(&dataset_ids)
    .bind(input.do_refer.as_deref().unwrap_or("1"))
    .bind(input.prompt_type.as_deref().unwrap_or("simple"))
    .fetch_one(db)
    .await;
    match row {
        Ok(row) => Ok(ok(chat_json(row, DatasetsOut::Ids))),
        Err(e) if is_unique_violation(&e) => {
            Err(ApiError::data("Duplicated chat name in creating chat."))
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /api/v1/chats?page&page_size&orderby&desc&id&name` → the tenant's live chats.
pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    headers: axum::http::HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult {
    let params = ListParams::parse(&query_map(query, ErrorData::Null)?)?;
    let db = &state.db;
    if params.id.is_some() || params.name.is_some() {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM chats WHERE tenant_id = $1 AND status = '1'
                            AND ($2::text IS NULL OR id = $2) AND ($3::text IS NULL OR name = $3))",
        )
        .bind(&tenant)
        .bind(&params.id)
        .bind(&params.name)
        .fetch_one(db)
        .await?;
        if !exists {
            return Err(ApiError::data("The chat doesn't exist"));
        }
    }
    let (limit, offset) = params.limit_offset()?;
    let sql = format!(
        concat!(
            "SELECT ",
            chat_columns!(),
            " FROM chats WHERE tenant_id = $1 AND status = '1'
              AND ($2::text IS NULL OR id = $2) AND ($3::text IS NULL OR name = $3)
              ORDER BY {} LIMIT $4 OFFSET $5"
        ),
        params.order_sql()
    );
    let rows: Vec<ChatRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&tenant)
        .bind(&params.id)
        .bind(&params.name)
        .bind(limit)
        .bind(offset)
        .fetch_all(db)
        .await?;
    let all_ids: Vec<String> = rows
        .iter()
        .flat_map(|r| r.dataset_ids.iter().cloned())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let datasets = datasets_by_id(db, &tenant, &all_ids).await?;
    let chats: Vec<Value> = rows
        .into_iter()
        .map(|row| {
            // A dataset deleted since is left out, as RAGFlow does.
            let list = row
                .dataset_ids
                .iter()
                .filter_map(|id| datasets.get(id).cloned())
                .collect();
            chat_json(row, DatasetsOut::Full(list))
        })
        .collect();
    if state.cfg.ragflow_compat.for_request(&headers) == RagflowCompat::V0_22 {
        return Ok(ok(Value::Array(chats)));
    }
    // RAGFlow ≥ 0.25: the page with the number of matching chats.
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM chats WHERE tenant_id = $1 AND status = '1'
           AND ($2::text IS NULL OR id = $2) AND ($3::text IS NULL OR name = $3)",
    )
    .bind(&tenant)
    .bind(&params.id)
    .bind(&params.name)
    .fetch_one(db)
    .await?;
    Ok(ok(serde_json::json!({"chats": chats, "total": total})))
}

/// `PUT /api/v1/chats/{chat_id}`: any subset of the create fields; `llm` and `prompt` are merged
/// into the stored ones → `{"code": 0}`.
pub async fn update(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(chat_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let db = &state.db;
    let Ok(chat_id) = ChatId::parse(&chat_id) else {
        return Err(ApiError::data("You do not own the chat"));
    };
    let current: Option<(String, Value)> = sqlx::query_as(
        "SELECT name, prompt_config FROM chats WHERE id = $1 AND tenant_id = $2 AND status = '1'",
    )
    .bind(&chat_id)
    .bind(&tenant)
    .fetch_optional(db)
    .await?;
    let Some((_, stored_prompt)) = current else {
        return Err(ApiError::data("You do not own the chat"));
    };
    let input = parse_input(body_object(body, ErrorData::Null)?)?;
    if let Some(ids) = &input.dataset_ids {
        check_datasets(db, &tenant, ids).await?;
    }
    check_models(db, &tenant, &input).await?;
    let name = valid_name(input.name.as_deref(), "`name` cannot be empty.")?;
    if let Some(name) = &name
        && name_taken(db, &tenant, name, &chat_id).await?
    {
        return Err(ApiError::data("Duplicated chat name in updating chat."));
    }
    if input.tenant_id_given {
        return Err(ApiError::data("`tenant_id` must not be provided."));
    }
    if input.prompt_given {
        let mut merged = match stored_prompt {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        merged.extend(input.prompt_config.clone());
        check_parameters(&merged)?;
    }

    // `||` merges the sent keys into the stored objects (Python's dict.update), atomically.
    let res = sqlx::query(
        "UPDATE chats SET
            name = COALESCE($3, name),
            description = COALESCE($4, description),
            avatar = COALESCE($5, avatar),
            language = COALESCE($6, language),
            llm_model = COALESCE($7, llm_model),
            llm_setting = llm_setting || $8,
            prompt_config = prompt_config || $9,
            similarity_threshold = COALESCE($10, similarity_threshold),
            vector_similarity_weight = COALESCE($11, vector_similarity_weight),
            top_n = COALESCE($12, top_n),
            top_k = COALESCE($13, top_k),
            rerank_model = COALESCE($14, rerank_model),
            dataset_ids = COALESCE($15, dataset_ids),
            do_refer = COALESCE($16, do_refer),
            prompt_type = COALESCE($17, prompt_type),
            updated_at = now()
         WHERE id = $1 AND tenant_id = $2 AND status = '1'",
    )
    .bind(&chat_id)
    .bind(&tenant)
    .bind(&name)
    .bind(&input.description)
    .bind(&input.avatar)
    .bind(&input.language)
    .bind(input.llm_model.flatten())
    .bind(Json(Value::Object(input.llm_setting)))
    .bind(Json(Value::Object(input.prompt_config)))
    .bind(input.similarity_threshold)
    .bind(input.vector_similarity_weight)
    .bind(input.top_n)
    .bind(input.top_k)
    .bind(&input.rerank_model)
    .bind(&input.dataset_ids)
    .bind(&input.do_refer)
    .bind(&input.prompt_type)
    .execute(db)
    .await;
    match res {
        Ok(r) if r.rows_affected() == 0 => Err(ApiError::data("You do not own the chat")),
        Ok(_) => Ok(ok(Value::Null)),
        Err(e) if is_unique_violation(&e) => {
            Err(ApiError::data("Duplicated chat name in updating chat."))
        }
        Err(e) => Err(e.into()),
    }
}

/// `DELETE /api/v1/chats` with `{"ids": [...]}`: soft delete (`status = '0'`).
pub async fn delete(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let mut req = body_object(body, ErrorData::Null)?;
    let Some(IdList { ids, duplicates }) =
        parse_ids(req.remove("ids"), "assistant")?.filter(|l| !l.ids.is_empty())
    else {
        return Err(ApiError::data(
            "`ids` is required: list the ids of the chats to delete. \
             ragq does not delete every chat when `ids` is null or empty.",
        ));
    };
    let deleted: Vec<String> = sqlx::query_scalar(
        "UPDATE chats SET status = '0', updated_at = now()
         WHERE tenant_id = $1 AND status = '1' AND id = ANY($2) RETURNING id",
    )
    .bind(&tenant)
    .bind(&ids)
    .fetch_all(&state.db)
    .await?;
    // Completions in this process stop trusting their earlier checks at once.
    state.access.forget_all();
    let deleted: HashSet<String> = deleted.into_iter().collect();
    let errors = ids
        .iter()
        .filter(|id| !deleted.contains(*id))
        .map(|id| format!("Assistant({id}) not found."))
        .collect();
    batch_result(deleted.len(), errors, duplicates)
}
