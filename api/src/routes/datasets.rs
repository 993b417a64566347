//! Datasets (`/api/v1/datasets`): create, list, update, delete — RAGFlow's knowledge bases.
//!
//! Storage ↔ API names follow RAGFlow's renaming (`chunk_num → chunk_count`,
//! `doc_num → document_count`, `parser_id → chunk_method`, `embd_id → embedding_model`). The
//! counts are not stored on the dataset: they are summed from its documents when read, so they
//! can never drift. `embedding_model` is the name of one of the tenant's embedding models; a
//! RAGFlow-style `name@Factory` is accepted and resolved to `name`.
//!
//! Validation errors answer code 101 in pydantic's wording
//! (`Field: <name> - Message: <…> - Value: <…>`), as RAGFlow's `CreateDatasetReq` does.
//!
//! Also here: the small request helpers shared by [`super::documents`], [`super::chunks`] and
//! [`super::retrieval`] (body and query parsing, paging, RAGFlow-style name de-duplication).

use std::collections::{HashMap, HashSet};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use ragq_common::db::new_id;
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use sqlx::types::Json;

use super::json_object;
use super::sessions::rfc822;
use crate::auth::Tenant;
use crate::envelope::{ApiError, ApiResult, PyJson, code, ok};
use crate::state::AppState;

/// RAGFlow's `DATASET_NAME_LIMIT`.
pub const NAME_LIMIT: usize = 128;

/// RAGFlow's chunking methods (`chunk_method`). ragq stores the name; every method is parsed as
/// plain text, markdown or HTML.
pub const CHUNK_METHODS: &[&str] = &[
    "naive",
    "book",
    "email",
    "laws",
    "manual",
    "one",
    "paper",
    "picture",
    "presentation",
    "qa",
    "table",
    "tag",
];

/// RAGFlow's code 108 (PERMISSION_ERROR).
pub const PERMISSION: i32 = 108;

const WRITABLE: &[&str] = &[
    "name",
    "avatar",
    "description",
    "embedding_model",
    "permission",
    "chunk_method",
    "pagerank",
    "parser_config",
];

// ---------------------------------------------------------------------------------------------
// Shared request helpers.

/// A JSON-object body (empty = `{}`); an unreadable or too large body is an argument error.
pub fn body_object(body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, ApiError> {
    match body {
        Ok(bytes) => json_object(&bytes),
        Err(e) => Err(ApiError::new(
            code::ARGUMENT,
            format!("The request body could not be read: {}", e.body_text()),
        )),
    }
}

/// The query string as a map (the last value wins when a key repeats).
pub fn query_map(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(m)| m).map_err(|e| {
        ApiError::new(
            code::ARGUMENT,
            format!("Bad query string: {}", e.body_text()),
        )
    })
}

/// An integer query parameter; absent or empty = `default`.
pub fn int_param(q: &HashMap<String, String>, key: &str, default: i64) -> Result<i64, ApiError> {
    match q.get(key).map(|s| s.trim()) {
        None | Some("") => Ok(default),
        Some(s) => s.parse::<i64>().map_err(|_| {
            ApiError::new(
                code::ARGUMENT,
                format!("`{key}` must be an integer, not `{s}`."),
            )
        }),
    }
}

/// `desc`: false only for `false`/`False`/`0` (RAGFlow reads everything else as true).
pub fn desc_param(q: &HashMap<String, String>) -> bool {
    !matches!(
        q.get("desc")
            .map(|s| s.trim().to_ascii_lowercase())
            .as_deref(),
        Some("false" | "0")
    )
}

/// `(LIMIT, OFFSET)` for 1-based `page` and `page_size`; a page or size of 0 means "no paging"
/// (RAGFlow skips `paginate` then). Negative values are argument errors.
pub fn paging(page: i64, page_size: i64) -> Result<(Option<i64>, i64), ApiError> {
    if page < 0 || page_size < 0 {
        return Err(ApiError::new(
            code::ARGUMENT,
            "`page` and `page_size` must not be negative.",
        ));
    }
    if page == 0 || page_size == 0 {
        return Ok((None, 0));
    }
    let offset = (page - 1).saturating_mul(page_size);
    Ok((Some(page_size), offset))
}

/// A pydantic-style validation error (code 101), as RAGFlow's request models report them.
pub fn invalid(field: &str, message: &str, value: &Value) -> ApiError {
    let shown = match value {
        Value::String(s) => s.clone(),
        Value::Null => "None".to_string(),
        other => other.to_string(),
    };
    ApiError::new(
        code::ARGUMENT,
        format!("Field: <{field}> - Message: <{message}> - Value: <{shown}>"),
    )
}

/// A list of strings, or an error naming `field`.
pub fn string_list(
    value: &Value,
    field: &str,
    err: fn(String) -> ApiError,
) -> Result<Vec<String>, ApiError> {
    let Value::Array(items) = value else {
        return Err(err(format!("`{field}` should be a list")));
    };
    items
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.clone()),
            _ => Err(err(format!("`{field}` must be a list of strings"))),
        })
        .collect()
}

/// Removes repeated ids, keeping the first occurrence.
pub fn dedup(ids: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    ids.into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

/// Python's `repr` of a list of strings: `['a', 'b']` (RAGFlow puts it in messages).
pub fn py_list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| format!("'{s}'")).collect();
    format!("[{}]", inner.join(", "))
}

/// RAGFlow's `duplicate_name`: `name` if free, else `stem(1).ext`, `stem(2).ext` … (an existing
/// `(n)` counter is incremented). `taken` holds the names in use, compared case-insensitively.
pub fn free_name(name: &str, taken: &HashSet<String>) -> String {
    let mut current = name.to_string();
    for _ in 0..10_000 {
        if !taken.contains(&current.to_lowercase()) {
            return current;
        }
        // pathlib's suffix: the last ".ext" unless the name starts with its only dot.
        let (stem, ext) = match current.rfind('.') {
            Some(i) if i > 0 && i + 1 < current.len() => (&current[..i], &current[i..]),
            _ => (current.as_str(), ""),
        };
        let (base, n) = match stem.strip_suffix(')').and_then(|s| s.rsplit_once('(')) {
            Some((base, digits))
                if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) =>
            {
                (base, digits.parse::<u64>().unwrap_or(0))
            }
            _ => (stem, 0),
        };
        current = format!("{base}({}){ext}", n.saturating_add(1));
    }
    format!("{name}({})", new_id())
}

/// An f32 column as the shortest decimal that reads back as it (0.2, not 0.20000000298…).
pub fn short_f32(x: f32) -> Value {
    format!("{x}")
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// Epoch milliseconds.
pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// True when the tenant owns the dataset.
pub async fn owns_dataset(
    db: &PgPool,
    tenant: &str,
    dataset_id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM datasets WHERE id = $1 AND tenant_id = $2)",
    )
    .bind(dataset_id)
    .bind(tenant)
    .fetch_one(db)
    .await
}

/// RAGFlow's "not your dataset" answer on document and chunk routes (code 102).
pub fn not_your_dataset(dataset_id: &str) -> ApiError {
    ApiError::data(format!("You don't own the dataset {dataset_id}."))
}

// ---------------------------------------------------------------------------------------------
// Rows and their RAGFlow shape.

#[derive(sqlx::FromRow)]
struct DatasetRow {
    id: String,
    tenant_id: String,
    name: String,
    description: Option<String>,
    avatar: String,
    language: String,
    embedding_model: String,
    permission: String,
    chunk_method: String,
    parser_config: Json<Value>,
    similarity_threshold: f32,
    vector_similarity_weight: f32,
    pagerank: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    document_count: i64,
    chunk_count: i64,
    token_num: i64,
}

const SELECT_DATASET: &str =
    "SELECT d.id, d.tenant_id, d.name, d.description, d.avatar, d.language,
        d.embedding_model, d.permission, d.chunk_method, d.parser_config, d.similarity_threshold,
        d.vector_similarity_weight, d.pagerank, d.created_at, d.updated_at,
        s.document_count, s.chunk_count, s.token_num
    FROM datasets d
    LEFT JOIN LATERAL (
        SELECT count(*) AS document_count, COALESCE(sum(x.chunk_count), 0)::bigint AS chunk_count,
               COALESCE(sum(x.token_count), 0)::bigint AS token_num
        FROM documents x WHERE x.dataset_id = d.id) s ON true";

impl DatasetRow {
    /// RAGFlow's dataset dict (its `Knowledgebase.to_dict()` order, renamed keys).
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "avatar": self.avatar,
            "tenant_id": self.tenant_id,
            "name": self.name,
            "language": self.language,
            "description": self.description,
            "embedding_model": self.embedding_model,
            "permission": self.permission,
            "created_by": self.tenant_id,
            "document_count": self.document_count,
            "token_num": self.token_num,
            "chunk_count": self.chunk_count,
            "similarity_threshold": short_f32(self.similarity_threshold),
            "vector_similarity_weight": short_f32(self.vector_similarity_weight),
            "chunk_method": self.chunk_method,
            "parser_config": self.parser_config.0,
            "pagerank": self.pagerank,
            "status": "1",
            "create_time": ms(self.created_at),
            "create_date": rfc822(self.created_at),
            "update_time": ms(self.updated_at),
            "update_date": rfc822(self.updated_at),
        })
    }
}

async fn fetch_dataset(
    db: &PgPool,
    tenant: &str,
    id: &str,
) -> Result<Option<DatasetRow>, sqlx::Error> {
    sqlx::query_as::<_, DatasetRow>(sqlx::AssertSqlSafe(format!(
        "{SELECT_DATASET} WHERE d.id = $1 AND d.tenant_id = $2"
    )))
    .bind(id)
    .bind(tenant)
    .fetch_optional(db)
    .await
}

/// RAGFlow's default `parser_config` for the `naive` method (the subset ragq uses or echoes).
pub fn default_parser_config() -> Value {
    json!({
        "chunk_token_num": 512,
        "delimiter": "\n",
        "html4excel": false,
        "layout_recognize": "DeepDOC",
        "auto_keywords": 0,
        "auto_questions": 0,
        "topn_tags": 3,
        "raptor": {"use_raptor": false},
        "graphrag": {"use_graphrag": false},
    })
}

/// Checks a `parser_config` and merges it over `base` (one level deep, like RAGFlow's
/// `deep_merge` for the nested `raptor`/`graphrag` objects).
fn merge_parser_config(base: Value, given: &Value) -> Result<Value, ApiError> {
    let Value::Object(given_map) = given else {
        return Err(invalid(
            "parser_config",
            "Input should be a valid dictionary or instance of ParserConfig",
            given,
        ));
    };
    if let Some(n) = given_map.get("chunk_token_num")
        && !n.as_u64().is_some_and(|n| (1..=2048).contains(&n))
    {
        return Err(invalid(
            "chunk_token_num",
            "Input should be an integer between 1 and 2048",
            n,
        ));
    }
    if given.to_string().len() > 65_535 {
        return Err(invalid(
            "parser_config",
            "Parser config exceeds size limit (max 65,535 characters).",
            &Value::Null,
        ));
    }
    let mut merged = match base {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for (k, v) in given_map {
        match (merged.get_mut(k), v) {
            (Some(Value::Object(old)), Value::Object(new)) => {
                for (k2, v2) in new {
                    old.insert(k2.clone(), v2.clone());
                }
            }
            _ => {
                merged.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(Value::Object(merged))
}

/// The embedding model a dataset gets: `requested` (a model name, or RAGFlow's
/// `name@Factory`), or — when `None` — the tenant's default embedding model, else its first.
async fn resolve_embedding(
    db: &PgPool,
    tenant: &str,
    requested: Option<&str>,
) -> Result<String, ApiError> {
    match requested {
        None => {
            let name: Option<String> = sqlx::query_scalar(
                "SELECT name FROM models WHERE tenant_id = $1 AND kind = 'embedding'
                 ORDER BY is_default DESC, created_at, name LIMIT 1",
            )
            .bind(tenant)
            .fetch_optional(db)
            .await?;
            name.ok_or_else(|| {
                ApiError::data(
                    "The tenant has no embedding model: add one before creating a dataset.",
                )
            })
        }
        Some(requested) => {
            let short = requested
                .rsplit_once('@')
                .map_or(requested, |(name, _factory)| name);
            let candidates = [requested.to_string(), short.to_string()];
            let name: Option<String> = sqlx::query_scalar(
                "SELECT name FROM models WHERE tenant_id = $1 AND kind = 'embedding' AND name = ANY($2)
                 ORDER BY (name = $3) DESC LIMIT 1",
            )
            .bind(tenant)
            .bind(&candidates[..])
            .bind(requested)
            .fetch_optional(db)
            .await?;
            name.ok_or_else(|| {
                ApiError::new(code::ARGUMENT, format!("Unsupported model: <{requested}>"))
            })
        }
    }
}

/// An optional string field of at most `max` characters; `None` when absent or null.
fn opt_string(
    req: &Map<String, Value>,
    field: &str,
    max: usize,
) -> Result<Option<String>, ApiError> {
    match req.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s.clone())),
        Some(v @ Value::String(_)) => Err(invalid(
            field,
            &format!("String should have at most {max} characters"),
            v,
        )),
        Some(v) => Err(invalid(field, "Input should be a valid string", v)),
    }
}

/// The dataset name: stripped, 1..=128 characters.
fn dataset_name(v: &Value) -> Result<String, ApiError> {
    let Value::String(s) = v else {
        return Err(invalid("name", "Input should be a valid string", v));
    };
    let name = s.trim();
    if name.is_empty() {
        return Err(invalid(
            "name",
            "String should have at least 1 character",
            v,
        ));
    }
    if name.chars().count() > NAME_LIMIT {
        return Err(invalid(
            "name",
            &format!("String should have at most {NAME_LIMIT} characters"),
            v,
        ));
    }
    Ok(name.to_string())
}

fn permission(v: &Value) -> Result<String, ApiError> {
    match v.as_str().map(|s| s.trim().to_ascii_lowercase()) {
        Some(p) if p == "me" || p == "team" => Ok(p),
        _ => Err(invalid("permission", "Input should be 'me' or 'team'", v)),
    }
}

fn chunk_method(v: &Value) -> Result<String, ApiError> {
    match v.as_str() {
        Some(m) if CHUNK_METHODS.contains(&m) => Ok(m.to_string()),
        _ => Err(invalid(
            "chunk_method",
            "Input should be 'naive', 'book', 'email', 'laws', 'manual', 'one', 'paper', 'picture', 'presentation', 'qa', 'table' or 'tag'",
            v,
        )),
    }
}

fn pagerank(v: &Value) -> Result<i32, ApiError> {
    match v.as_i64() {
        Some(n) if (0..=100).contains(&n) => Ok(n as i32),
        _ => Err(invalid(
            "pagerank",
            "Input should be an integer between 0 and 100",
            v,
        )),
    }
}

fn reject_unknown_keys(req: &Map<String, Value>) -> Result<(), ApiError> {
    match req.iter().find(|(k, _)| !WRITABLE.contains(&k.as_str())) {
        Some((k, v)) => Err(invalid(k, "Extra inputs are not permitted", v)),
        None => Ok(()),
    }
}

/// Serialises dataset creation (and renames) per tenant, so de-duplicated names stay unique.
async fn lock_tenant_names(tx: &mut sqlx::PgConnection, tenant: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('ragq.dataset-names.' || $1))")
        .bind(tenant)
        .execute(tx)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Handlers.

/// `POST /api/v1/datasets`.
pub async fn create(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let req = body_object(body)?;
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
    let row = fetch_dataset(&state.db, &tenant, &id)
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
    let q = query_map(q)?;
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
            PERMISSION,
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
    let req = body_object(body)?;
    let Some(current) = fetch_dataset(&state.db, &tenant, &dataset_id).await? else {
        return Err(ApiError::new(
            PERMISSION,
            format!("User '{tenant}' lacks permission for dataset '{dataset_id}'"),
        ));
    };
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
    let req = body_object(body)?;
    let ids = match req.get("ids") {
        None | Some(Value::Null) => {
            return Err(ApiError::data(
                "`ids` is required: list the datasets to delete (ragq never deletes all datasets at once).",
            ));
        }
        Some(v) => dedup(string_list(v, "ids", |m| ApiError::new(code::ARGUMENT, m))?),
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
            PERMISSION,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(names: &[&str]) -> HashSet<String> {
        names.iter().map(|s| s.to_lowercase()).collect()
    }

    #[test]
    fn free_names_follow_ragflow() {
        assert_eq!(free_name("kb", &taken(&[])), "kb");
        assert_eq!(free_name("kb", &taken(&["KB"])), "kb(1)");
        assert_eq!(free_name("kb", &taken(&["kb", "kb(1)"])), "kb(2)");
        assert_eq!(free_name("a.md", &taken(&["a.md"])), "a(1).md");
        assert_eq!(free_name("a(3).md", &taken(&["a(3).md"])), "a(4).md");
        assert_eq!(free_name(".env", &taken(&[".env"])), ".env(1)");
    }

    #[test]
    fn parser_config_merges_and_validates() {
        let merged = merge_parser_config(
            default_parser_config(),
            &json!({"chunk_token_num": 64, "raptor": {"max_token": 9}}),
        )
        .unwrap();
        assert_eq!(merged["chunk_token_num"], 64);
        assert_eq!(
            merged["raptor"],
            json!({"use_raptor": false, "max_token": 9})
        );
        assert_eq!(merged["delimiter"], "\n");
        let err = merge_parser_config(default_parser_config(), &json!({"chunk_token_num": 0}))
            .unwrap_err();
        assert_eq!(err.code, code::ARGUMENT);
        assert!(err.message.contains("chunk_token_num"), "{}", err.message);
        assert!(merge_parser_config(default_parser_config(), &json!([1])).is_err());
    }

    #[test]
    fn small_helpers() {
        assert_eq!(paging(2, 10).unwrap(), (Some(10), 10));
        assert_eq!(paging(0, 10).unwrap(), (None, 0));
        assert!(paging(-1, 10).is_err());
        assert_eq!(py_list(&["a".into(), "b".into()]), "['a', 'b']");
        assert_eq!(short_f32(0.2), json!(0.2));
        assert_eq!(
            dedup(vec!["a".into(), "b".into(), "a".into()]),
            vec!["a", "b"]
        );
        let e = invalid("name", "Field required", &Value::Null);
        assert_eq!(
            e.message,
            "Field: <name> - Message: <Field required> - Value: <None>"
        );
    }
}
