//! Chat assistants (RAGFlow v0.22.1 `api/apps/sdk/chat.py`):
//! `POST /api/v1/chats`, `GET /api/v1/chats`, `PUT /api/v1/chats/{chat_id}` and
//! `DELETE /api/v1/chats`.
//!
//! # Request names and storage names
//!
//! RAGFlow renames a chat's fields on the way in and renames them back on the way out. The
//! `chats` table keeps RAGFlow's storage names, which are also what the worker reads:
//!
//! | request / response | `chats` |
//! | --- | --- |
//! | `avatar` | `avatar` (RAGFlow `icon`) |
//! | `dataset_ids` (list: full `datasets` objects) | `dataset_ids` (RAGFlow `kb_ids`) |
//! | `llm.model_name` | `llm_model` (RAGFlow `llm_id`) |
//! | other `llm.*` (`temperature`, `top_p`, …) | `llm_setting` |
//! | `prompt.prompt`, `opener`, `variables`, `show_quote` | `prompt_config.system`, `prologue`, `parameters`, `quote` |
//! | `prompt.empty_response`, `tts`, `refine_multiturn`, unknown keys | `prompt_config` under the same name |
//! | `prompt.similarity_threshold`, `top_n`, `top_k`, `rerank_model` | columns `similarity_threshold`, `top_n`, `top_k`, `rerank_model` |
//! | `prompt.keywords_similarity_weight` | `vector_similarity_weight` = 1 − value (see below) |
//! | `show_quotation` (or `do_refer`) | `do_refer` (`"1"`/`"0"`) |
//!
//! As in RAGFlow, `prompt` also accepts the storage names (`prompt.system`, `prompt.prologue`,
//! `prompt.rerank_id`, `prompt.vector_similarity_weight`, …); when a request sends both names,
//! the request name wins.
//!
//! # `keywords_similarity_weight`
//!
//! The worker scores a chunk as `(1 − vsw)·term + vsw·vector`, so the keyword weight is
//! `1 − vsw`. RAGFlow writes `keywords_similarity_weight` unchanged into
//! `vector_similarity_weight` and reads it back as `1 − vsw`, so 0.7 comes back as
//! 0.30000000000000004 and the meaning flips. ragq does not copy that bug: it stores
//! `vector_similarity_weight = 1 − keywords_similarity_weight` and answers
//! `keywords_similarity_weight = 1 − vector_similarity_weight`, rounded to 6 decimals (the
//! column is a `real`). What a client sends is what it reads back, and the SDK default 0.7
//! gives the server default `vector_similarity_weight` 0.3. A `prompt.vector_similarity_weight`
//! (storage name) is stored as given.
//!
//! # Validation
//!
//! Types and ranges are checked first (code 101: not JSON, `name` not a string, `dataset_ids`
//! not a list, `llm`/`prompt` not objects, numbers out of range, …). Then RAGFlow's checks run in
//! RAGFlow's order, with its code 102 messages: every dataset is the tenant's (`You don't own
//! the dataset {id}`) and has chunks (`The dataset {id} doesn't own parsed file`); all datasets
//! share one embedding model (code **109**, as RAGFlow); `llm.model_name` is one of the
//! tenant's chat models; `rerank_model` is one of its rerank models; `name` is given and not
//! taken by another live chat; `tenant_id` is not sent; every non-optional variable appears as
//! `{key}` in the system prompt.
//!
//! # Defaults (create)
//!
//! `chat_defaults` supplies the `prompt_config` and `llm_setting` defaults. A key that is
//! **absent** gets its default; a key sent as `null` stays `null` (the SDK sends
//! `empty_response: null`, which turns the empty-retrieval answer off). An empty or null system
//! prompt is replaced by the default, as in RAGFlow. With no `llm.model_name`, the chat uses the
//! tenant's chat model marked `is_default`, or else its first chat model by name.
//!
//! # Deviations from RAGFlow v0.22.1
//!
//! - `keywords_similarity_weight` round-trips (above).
//! - Absent `llm` keys get the default `llm_setting` values on create (RAGFlow stores only the
//!   keys sent). `null` keeps `null`.
//! - PUT without `dataset_ids` (or with `null`) keeps the chat's datasets; RAGFlow's PUT unlinks
//!   them. `dataset_ids: []` unlinks them on purpose. PUT with `llm.model_name: null` keeps the
//!   model.
//! - DELETE with `ids` null, absent or empty deletes **nothing** and answers code 102; RAGFlow
//!   soft-deletes every chat of the tenant, which one missing argument should not do.
//! - `tenant_id` in a PUT body is rejected like in POST (RAGFlow would move the chat).
//! - A rerank model must be one of the tenant's `rerank` models; RAGFlow also accepts two
//!   built-in names that ragq cannot run.
//! - The 109 message has no stray quote (RAGFlow: `Datasets use different embedding models."`).
//! - `meta_data_filter` is always `{}`; ragq has no metadata filtering.

use crate::config::RagflowCompat;
use std::collections::{HashMap, HashSet};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use ragq_common::chat_defaults;
use ragq_common::db::new_id;
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use sqlx::types::Json;

use super::json_object;
use super::sessions::rfc822;
use crate::auth::Tenant;
use crate::envelope::{ApiError, ApiResult, code, ok};
use crate::state::AppState;

/// Longest accepted chat name, in characters.
const MAX_NAME_CHARS: usize = 255;

// ---------------------------------------------------------------------------------------------
// Request helpers shared with `sessions`.

/// The body as a JSON object. A body the server could not read (larger than
/// `RAGQ_MAX_BODY_BYTES`, or cut off) is an argument error in RAGFlow's envelope, not a bare 4xx.
pub fn body_object(body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, ApiError> {
    match body {
        Ok(bytes) => json_object(&bytes),
        Err(e) => Err(ApiError::argument(format!(
            "The request body could not be read: {}",
            e.body_text()
        ))),
    }
}

/// The query string as a map (the last value wins when a key repeats).
pub fn query_map(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(m)| m)
        .map_err(|e| ApiError::argument(format!("Bad query string: {}", e.body_text())))
}

/// `page`, `page_size`, `orderby`, `desc`, `id` and `name` of a list request, parsed the way
/// RAGFlow reads them: `desc` is false only for `False`/`false`; `page` or `page_size` 0 means
/// no paging (RAGFlow's `get_list` skips `paginate` then); empty `id`/`name` mean no filter.
#[derive(Debug, Clone)]
pub struct ListParams {
    pub page: i64,
    pub page_size: i64,
    /// `created_at` or `updated_at`.
    pub order_column: &'static str,
    pub desc: bool,
    pub id: Option<String>,
    pub name: Option<String>,
}

impl ListParams {
    pub fn parse(q: &HashMap<String, String>) -> Result<ListParams, ApiError> {
        let int = |key: &str, default: i64| -> Result<i64, ApiError> {
            match q.get(key).map(|s| s.trim()) {
                None | Some("") => Ok(default),
                Some(s) => match s.parse::<i64>() {
                    Ok(n) if n >= 0 => Ok(n),
                    _ => Err(ApiError::argument(format!(
                        "`{key}` must be a non-negative integer."
                    ))),
                },
            }
        };
        let order_column = match q.get("orderby").map(String::as_str) {
            None | Some("") | Some("create_time") => "created_at",
            Some("update_time") => "updated_at",
            Some(_) => {
                return Err(ApiError::argument(
                    "`orderby` must be `create_time` or `update_time`.",
                ));
            }
        };
        let filter = |key: &str| q.get(key).filter(|s| !s.is_empty()).cloned();
        Ok(ListParams {
            page: int("page", 1)?,
            page_size: int("page_size", 30)?,
            order_column,
            desc: !matches!(q.get("desc").map(String::as_str), Some("False" | "false")),
            id: filter("id"),
            name: filter("name"),
        })
    }

    /// `(LIMIT, OFFSET)`; a `None` limit is PostgreSQL's `LIMIT NULL` (no limit).
    pub fn limit_offset(&self) -> Result<(Option<i64>, i64), ApiError> {
        if self.page == 0 || self.page_size == 0 {
            return Ok((None, 0));
        }
        let offset = (self.page - 1)
            .checked_mul(self.page_size)
            .ok_or_else(|| ApiError::argument("`page` × `page_size` is too large."))?;
        Ok((Some(self.page_size), offset))
    }

    /// A whitelisted `ORDER BY` clause (never built from input text); `id` breaks ties.
    pub fn order_sql(&self) -> &'static str {
        match (self.order_column, self.desc) {
            ("updated_at", true) => "updated_at DESC, id DESC",
            ("updated_at", false) => "updated_at ASC, id ASC",
            (_, true) => "created_at DESC, id DESC",
            (_, false) => "created_at ASC, id ASC",
        }
    }
}

/// The `ids` of a delete request.
#[derive(Debug)]
pub struct IdList {
    /// Deduplicated, in first-seen order.
    pub ids: Vec<String>,
    /// RAGFlow's `check_duplicate_ids` messages: `Duplicate {kind} ids: {id}`.
    pub duplicates: Vec<String>,
}

/// Parses `ids` (a list of strings); `None` = null or absent.
pub fn parse_ids(v: Option<Value>, kind: &str) -> Result<Option<IdList>, ApiError> {
    let items = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ApiError::argument("`ids` should be a list.")),
    };
    let mut unique: Vec<String> = Vec::with_capacity(items.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for item in items {
        let Value::String(id) = item else {
            return Err(ApiError::argument("`ids` must be a list of strings."));
        };
        let n = seen.entry(id.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            unique.push(id);
        }
    }
    let duplicates = unique
        .iter()
        .filter(|id| seen.get(*id).is_some_and(|n| *n > 1))
        .map(|id| format!("Duplicate {kind} ids: {id}"))
        .collect();
    Ok(Some(IdList {
        ids: unique,
        duplicates,
    }))
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

/// `real` columns read back as `f32`; this gives the shortest decimal that round-trips (0.2,
/// not 0.20000000298023224), as RAGFlow's float columns would print.
fn real(x: f32) -> f64 {
    format!("{x}").parse().unwrap_or(f64::from(x))
}

/// Rounds to 6 decimals, the precision a `real` keeps.
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

// ---------------------------------------------------------------------------------------------
// Parsing a chat body.

/// What a POST or PUT body sets. `None` = not sent.
#[derive(Debug, Default)]
struct ChatInput {
    /// `null` is read as the empty name.
    name: Option<String>,
    avatar: Option<String>,
    description: Option<String>,
    language: Option<String>,
    dataset_ids: Option<Vec<String>>,
    /// `Some(None)`: `llm.model_name` sent as null.
    llm_model: Option<Option<String>>,
    /// `llm` keys other than `model_name`.
    llm_setting: Map<String, Value>,
    /// `prompt_config` keys (storage names).
    prompt_config: Map<String, Value>,
    prompt_given: bool,
    similarity_threshold: Option<f32>,
    vector_similarity_weight: Option<f32>,
    top_n: Option<i32>,
    top_k: Option<i32>,
    rerank_model: Option<String>,
    do_refer: Option<String>,
    prompt_type: Option<String>,
    tenant_id_given: bool,
}

fn type_error(field: &str, what: &str) -> ApiError {
    ApiError::argument(format!("`{field}` must be {what}."))
}

/// A string, or `None` for null.
fn opt_string(v: Value, field: &str) -> Result<Option<String>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        _ => Err(type_error(field, "a string")),
    }
}

/// A boolean or null (kept as JSON).
fn opt_bool(v: Value, field: &str) -> Result<Value, ApiError> {
    match v {
        Value::Null | Value::Bool(_) => Ok(v),
        _ => Err(type_error(field, "a boolean")),
    }
}

/// A number in [0, 1], or `None` for null.
fn unit_number(v: Value, field: &str) -> Result<Option<f64>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_f64() {
            Some(x) if (0.0..=1.0).contains(&x) => Ok(Some(x)),
            _ => Err(type_error(field, "a number between 0 and 1")),
        },
        _ => Err(type_error(field, "a number between 0 and 1")),
    }
}

/// A non-negative integer that fits a PostgreSQL `integer`, or `None` for null. `8.0` counts.
fn count(v: Value, field: &str) -> Result<Option<i32>, ApiError> {
    let n = match &v {
        Value::Null => return Ok(None),
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .map(|f| f as u64)
        }),
        _ => None,
    };
    n.and_then(|n| i32::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| type_error(field, "a non-negative integer"))
}

/// `show_quotation` / `do_refer`: booleans, `1`/`0` and `"1"`/`"0"` become `"1"`/`"0"`.
fn do_refer(v: Value, field: &str) -> Result<Option<String>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(if b { "1" } else { "0" }.into())),
        Value::Number(n) if n.as_u64() == Some(1) => Ok(Some("1".into())),
        Value::Number(n) if n.as_u64() == Some(0) => Ok(Some("0".into())),
        Value::String(s) if s == "1" || s == "0" => Ok(Some(s)),
        _ => Err(type_error(field, "a boolean")),
    }
}

/// Removes a renamed `prompt` key: the request name wins over the storage name. Returns the
/// name that was used (for messages) and the value.
fn take(
    p: &mut Map<String, Value>,
    api: &'static str,
    storage: &'static str,
) -> Option<(&'static str, Value)> {
    let stored = p.remove(storage);
    match p.remove(api) {
        Some(v) => Some((api, v)),
        None => stored.map(|v| (storage, v)),
    }
}

/// `prompt.variables`: null, or a list of `{key, optional}` (optional defaults to false).
fn parameters(v: Value, field: &str) -> Result<Value, ApiError> {
    let items = match v {
        Value::Null => return Ok(Value::Null),
        Value::Array(items) => items,
        _ => {
            return Err(type_error(
                field,
                "a list of {\"key\", \"optional\"} objects",
            ));
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let key = item
            .get("key")
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty());
        let optional = match item.get("optional") {
            None | Some(Value::Null) => Some(false),
            Some(v) => v.as_bool(),
        };
        match (key, optional) {
            (Some(key), Some(optional)) => out.push(json!({"key": key, "optional": optional})),
            _ => {
                return Err(type_error(
                    field,
                    "a list of {\"key\": string, \"optional\": boolean} objects",
                ));
            }
        }
    }
    Ok(Value::Array(out))
}

fn parse_llm(v: Value, input: &mut ChatInput) -> Result<(), ApiError> {
    let mut m = match v {
        Value::Null => return Ok(()),
        Value::Object(m) => m,
        _ => return Err(type_error("llm", "an object")),
    };
    if let Some(name) = m.remove("model_name") {
        input.llm_model = Some(opt_string(name, "llm.model_name")?);
    }
    for key in [
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
    ] {
        if let Some(v) = m.get(key)
            && !(v.is_null() || v.is_number())
        {
            return Err(type_error(&format!("llm.{key}"), "a number"));
        }
    }
    if let Some(v) = m.get("max_tokens")
        && !(v.is_null() || v.is_u64())
    {
        return Err(type_error("llm.max_tokens", "a non-negative integer"));
    }
    input.llm_setting = m;
    Ok(())
}

fn parse_prompt(v: Value, input: &mut ChatInput) -> Result<(), ApiError> {
    let mut p = match v {
        Value::Null => return Ok(()),
        Value::Object(m) => m,
        _ => return Err(type_error("prompt", "an object")),
    };
    input.prompt_given = true;
    let field = |name: &str| format!("prompt.{name}");
    // Keys that live in columns.
    if let Some(v) = p.remove("similarity_threshold") {
        input.similarity_threshold =
            unit_number(v, "prompt.similarity_threshold")?.map(|x| x as f32);
    }
    if let Some((name, v)) = take(
        &mut p,
        "keywords_similarity_weight",
        "vector_similarity_weight",
    ) {
        let x = unit_number(v, &field(name))?;
        input.vector_similarity_weight = x.map(|x| {
            if name == "keywords_similarity_weight" {
                (1.0 - x) as f32
            } else {
                x as f32
            }
        });
    }
    if let Some(v) = p.remove("top_n") {
        input.top_n = count(v, "prompt.top_n")?;
    }
    if let Some(v) = p.remove("top_k") {
        input.top_k = count(v, "prompt.top_k")?;
    }
    if let Some((name, v)) = take(&mut p, "rerank_model", "rerank_id") {
        input.rerank_model = Some(opt_string(v, &field(name))?.unwrap_or_default());
    }
    // Keys that live in `prompt_config`.
    let cfg = &mut input.prompt_config;
    if let Some((name, v)) = take(&mut p, "prompt", "system") {
        cfg.insert("system".into(), opt_string(v, &field(name))?.into());
    }
    if let Some((name, v)) = take(&mut p, "opener", "prologue") {
        cfg.insert("prologue".into(), opt_string(v, &field(name))?.into());
    }
    if let Some((name, v)) = take(&mut p, "variables", "parameters") {
        cfg.insert("parameters".into(), parameters(v, &field(name))?);
    }
    if let Some((name, v)) = take(&mut p, "show_quote", "quote") {
        cfg.insert("quote".into(), opt_bool(v, &field(name))?);
    }
    if let Some(v) = p.remove("empty_response") {
        cfg.insert(
            "empty_response".into(),
            opt_string(v, "prompt.empty_response")?.into(),
        );
    }
    for key in ["tts", "refine_multiturn"] {
        if let Some(v) = p.remove(key) {
            cfg.insert(key.into(), opt_bool(v, &field(key))?);
        }
    }
    // Anything else is kept as sent, as RAGFlow does.
    cfg.extend(p);
    Ok(())
}

fn parse_input(mut req: Map<String, Value>) -> Result<ChatInput, ApiError> {
    let mut input = ChatInput {
        tenant_id_given: req.get("tenant_id").is_some_and(|v| !v.is_null()),
        ..ChatInput::default()
    };
    if let Some(v) = req.remove("name") {
        input.name = Some(opt_string(v, "name")?.unwrap_or_default());
    }
    for (key, slot) in [
        ("avatar", &mut input.avatar),
        ("description", &mut input.description),
        ("language", &mut input.language),
    ] {
        if let Some(v) = req.remove(key) {
            *slot = opt_string(v, key)?;
        }
    }
    if let Some(v) = req.remove("prompt_type") {
        input.prompt_type = opt_string(v, "prompt_type")?;
        if let Some(t) = &input.prompt_type
            && t != "simple"
            && t != "advanced"
        {
            return Err(type_error("prompt_type", "`simple` or `advanced`"));
        }
    }
    match req.remove("dataset_ids") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            let mut ids: Vec<String> = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    // RAGFlow drops empty ids.
                    Value::Null => {}
                    Value::String(s) if s.is_empty() => {}
                    Value::String(s) => {
                        if !ids.contains(&s) {
                            ids.push(s);
                        }
                    }
                    _ => return Err(type_error("dataset_ids", "a list of strings")),
                }
            }
            input.dataset_ids = Some(ids);
        }
        Some(_) => return Err(ApiError::argument("`dataset_ids` should be a list.")),
    }
    if let Some(v) = req.remove("llm") {
        parse_llm(v, &mut input)?;
    }
    if let Some(v) = req.remove("prompt") {
        parse_prompt(v, &mut input)?;
    }
    if let Some(v) = req.remove("do_refer") {
        input.do_refer = do_refer(v, "do_refer")?;
    }
    if let Some(v) = req.remove("show_quotation") {
        input.do_refer = do_refer(v, "show_quotation")?;
    }
    Ok(input)
}

// ---------------------------------------------------------------------------------------------
// Checks against the database.

/// RAGFlow's dataset checks, in its order: each dataset is the tenant's and has chunks; then all
/// of them share one embedding model (code 109).
async fn check_datasets(db: &PgPool, tenant: &str, ids: &[String]) -> Result<(), ApiError> {
    if ids.is_empty() {
        return Ok(());
    }
    let rows: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT d.id, d.embedding_model, EXISTS (SELECT 1 FROM chunks c WHERE c.dataset_id = d.id)
         FROM datasets d WHERE d.tenant_id = $1 AND d.id = ANY($2)",
    )
    .bind(tenant)
    .bind(ids)
    .fetch_all(db)
    .await?;
    let found: HashMap<&str, (&str, bool)> = rows
        .iter()
        .map(|(id, embd, has)| (id.as_str(), (embd.as_str(), *has)))
        .collect();
    for id in ids {
        match found.get(id.as_str()) {
            None => return Err(ApiError::data(format!("You don't own the dataset {id}"))),
            Some((_, false)) => {
                return Err(ApiError::data(format!(
                    "The dataset {id} doesn't own parsed file"
                )));
            }
            Some(_) => {}
        }
    }
    let models: HashSet<&str> = found.values().map(|(embd, _)| *embd).collect();
    if models.len() > 1 {
        return Err(ApiError::new(
            code::AUTHENTICATION,
            "Datasets use different embedding models.",
        ));
    }
    Ok(())
}

async fn model_exists(db: &PgPool, tenant: &str, kind: &str, name: &str) -> Result<bool, ApiError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM models WHERE tenant_id = $1 AND kind = $2 AND name = $3)",
    )
    .bind(tenant)
    .bind(kind)
    .bind(name)
    .fetch_one(db)
    .await?)
}

/// `llm.model_name` and `rerank_model`, when sent, must name the tenant's models.
async fn check_models(db: &PgPool, tenant: &str, input: &ChatInput) -> Result<(), ApiError> {
    if let Some(Some(name)) = &input.llm_model
        && !model_exists(db, tenant, "chat", name).await?
    {
        return Err(ApiError::data(format!("`model_name` {name} doesn't exist")));
    }
    if let Some(name) = input.rerank_model.as_deref().filter(|n| !n.is_empty())
        && !model_exists(db, tenant, "rerank", name).await?
    {
        return Err(ApiError::data(format!(
            "`rerank_model` {name} doesn't exist"
        )));
    }
    Ok(())
}

/// The tenant's default chat model: the one marked `is_default`, else the first by name.
async fn default_chat_model(db: &PgPool, tenant: &str) -> Result<Option<String>, ApiError> {
    Ok(sqlx::query_scalar(
        "SELECT name FROM models WHERE tenant_id = $1 AND kind = 'chat'
         ORDER BY is_default DESC, name LIMIT 1",
    )
    .bind(tenant)
    .fetch_optional(db)
    .await?)
}

/// Another live chat of the tenant already has this name.
async fn name_taken(
    db: &PgPool,
    tenant: &str,
    name: &str,
    except_id: &str,
) -> Result<bool, ApiError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM chats WHERE tenant_id = $1 AND name = $2 AND status = '1' AND id <> $3)",
    )
    .bind(tenant)
    .bind(name)
    .bind(except_id)
    .fetch_one(db)
    .await?)
}

/// Every non-optional variable must appear as `{key}` in the system prompt.
fn check_parameters(cfg: &Map<String, Value>) -> Result<(), ApiError> {
    let system = cfg.get("system").and_then(Value::as_str).unwrap_or("");
    let params = cfg.get("parameters").and_then(Value::as_array);
    for p in params.into_iter().flatten() {
        if p.get("optional").and_then(Value::as_bool).unwrap_or(false) {
            continue;
        }
        let key = p.get("key").and_then(Value::as_str).unwrap_or("");
        if !system.contains(&format!("{{{key}}}")) {
            return Err(ApiError::data(format!("Parameter '{key}' is not used")));
        }
    }
    Ok(())
}

/// A valid, non-empty chat name (RAGFlow treats an empty string like a missing one).
fn valid_name(name: Option<&str>, missing: &str) -> Result<Option<String>, ApiError> {
    match name {
        None => Ok(None),
        Some(n) if n.trim().is_empty() => Err(ApiError::data(missing)),
        Some(n) if n.chars().count() > MAX_NAME_CHARS => Err(ApiError::data(format!(
            "`name` is longer than {MAX_NAME_CHARS} characters."
        ))),
        Some(n) => Ok(Some(n.to_string())),
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

// ---------------------------------------------------------------------------------------------
// Rows and responses.

/// The `chats` columns a response needs.
macro_rules! chat_columns {
    () => {
        "id, tenant_id, name, description, avatar, language, llm_model, llm_setting, prompt_config,
         similarity_threshold, vector_similarity_weight, top_n, top_k, rerank_model, dataset_ids,
         do_refer, prompt_type, status, created_at, updated_at"
    };
}

#[derive(Debug, sqlx::FromRow)]
struct ChatRow {
    id: String,
    tenant_id: String,
    name: String,
    description: String,
    avatar: String,
    language: String,
    llm_model: String,
    llm_setting: Value,
    prompt_config: Value,
    similarity_threshold: f32,
    vector_similarity_weight: f32,
    top_n: i32,
    top_k: i32,
    rerank_model: String,
    dataset_ids: Vec<String>,
    do_refer: String,
    prompt_type: String,
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// How a response names the chat's datasets.
enum DatasetsOut {
    /// Create: `dataset_ids`, and no `top_k` (RAGFlow deletes it from the create answer).
    Ids,
    /// List: `top_k` and `datasets` (full dataset objects).
    Full(Vec<Value>),
}

/// Copies `keys` of `from` (those present) into `to`, in that order, under their new names.
fn copy_keys(from: &mut Map<String, Value>, to: &mut Map<String, Value>, keys: &[(&str, &str)]) {
    for (src, dst) in keys {
        if let Some(v) = from.remove(*src) {
            to.insert((*dst).to_string(), v);
        }
    }
}

/// A chat in RAGFlow's response shape.
fn chat_json(row: ChatRow, datasets: DatasetsOut) -> Value {
    let mut setting = match row.llm_setting {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let mut llm = Map::new();
    copy_keys(
        &mut setting,
        &mut llm,
        &[
            ("temperature", "temperature"),
            ("top_p", "top_p"),
            ("presence_penalty", "presence_penalty"),
            ("frequency_penalty", "frequency_penalty"),
            ("max_tokens", "max_tokens"),
        ],
    );
    llm.extend(setting);
    llm.insert("model_name".into(), row.llm_model.into());

    let mut config = match row.prompt_config {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let mut prompt = Map::new();
    copy_keys(
        &mut config,
        &mut prompt,
        &[
            ("parameters", "variables"),
            ("prologue", "opener"),
            ("quote", "show_quote"),
            ("system", "prompt"),
            ("empty_response", "empty_response"),
            ("tts", "tts"),
            ("refine_multiturn", "refine_multiturn"),
        ],
    );
    prompt.extend(config);
    prompt.insert(
        "similarity_threshold".into(),
        real(row.similarity_threshold).into(),
    );
    prompt.insert(
        "keywords_similarity_weight".into(),
        round6(1.0 - real(row.vector_similarity_weight)).into(),
    );
    prompt.insert("top_n".into(), row.top_n.into());
    prompt.insert("rerank_model".into(), row.rerank_model.into());

    let mut out = json!({
        "id": row.id,
        "tenant_id": row.tenant_id,
        "name": row.name,
        "description": row.description,
        "avatar": row.avatar,
        "language": row.language,
        "llm": llm,
        "prompt": prompt,
        "prompt_type": row.prompt_type,
        "meta_data_filter": {},
        "do_refer": row.do_refer,
        "status": row.status,
    });
    match datasets {
        DatasetsOut::Ids => out["dataset_ids"] = json!(row.dataset_ids),
        DatasetsOut::Full(list) => {
            out["top_k"] = row.top_k.into();
            out["datasets"] = Value::Array(list);
        }
    }
    let (c, u) = (row.created_at, row.updated_at);
    out["create_time"] = c.timestamp_millis().into();
    out["create_date"] = rfc822(c).into();
    out["update_time"] = u.timestamp_millis().into();
    out["update_date"] = rfc822(u).into();
    out
}

#[derive(Debug, sqlx::FromRow)]
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
    parser_config: Value,
    similarity_threshold: f32,
    vector_similarity_weight: f32,
    document_count: i64,
    chunk_count: i64,
    token_num: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// The tenant's datasets among `ids`, as RAGFlow's dataset objects (API names), by id.
async fn datasets_by_id(
    db: &PgPool,
    tenant: &str,
    ids: &[String],
) -> Result<HashMap<String, Value>, ApiError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<DatasetRow> = sqlx::query_as(
        "SELECT d.id, d.tenant_id, d.name, d.description, d.avatar, d.language, d.embedding_model,
                d.permission, d.chunk_method, d.parser_config, d.similarity_threshold,
                d.vector_similarity_weight, d.created_at, d.updated_at,
                (SELECT count(*) FROM documents x WHERE x.dataset_id = d.id) AS document_count,
                (SELECT COALESCE(sum(x.chunk_count), 0) FROM documents x WHERE x.dataset_id = d.id)::bigint AS chunk_count,
                (SELECT COALESCE(sum(x.token_count), 0) FROM documents x WHERE x.dataset_id = d.id)::bigint AS token_num
         FROM datasets d WHERE d.tenant_id = $1 AND d.id = ANY($2)",
    )
    .bind(tenant)
    .bind(ids)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|d| {
            let v = json!({
                "id": d.id,
                "tenant_id": d.tenant_id,
                "name": d.name,
                "avatar": d.avatar,
                "description": d.description,
                "language": d.language,
                "embedding_model": d.embedding_model,
                "permission": d.permission,
                "chunk_method": d.chunk_method,
                "parser_config": d.parser_config,
                "similarity_threshold": real(d.similarity_threshold),
                "vector_similarity_weight": real(d.vector_similarity_weight),
                "document_count": d.document_count,
                "chunk_count": d.chunk_count,
                "token_num": d.token_num,
                "status": "1",
                "create_time": d.created_at.timestamp_millis(),
                "create_date": rfc822(d.created_at),
                "update_time": d.updated_at.timestamp_millis(),
                "update_date": rfc822(d.updated_at),
            });
            (d.id, v)
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Handlers.

/// `POST /api/v1/chats` → the new chat (`dataset_ids`, no `top_k`).
pub async fn create(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let input = parse_input(body_object(body)?)?;
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
    let params = ListParams::parse(&query_map(query)?)?;
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
    let input = parse_input(body_object(body)?)?;
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
    let mut req = body_object(body)?;
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
    let deleted: HashSet<String> = deleted.into_iter().collect();
    let errors = ids
        .iter()
        .filter(|id| !deleted.contains(*id))
        .map(|id| format!("Assistant({id}) not found."))
        .collect();
    batch_result(deleted.len(), errors, duplicates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(v: Value) -> Result<ChatInput, ApiError> {
        match v {
            Value::Object(m) => parse_input(m),
            _ => unreachable!(),
        }
    }

    #[test]
    fn renames_prompt_keys_and_request_name_wins() {
        let i = input(json!({"prompt": {
            "system": "old {knowledge}", "prompt": "new {knowledge}", "opener": "hi",
            "variables": [{"key": "knowledge"}], "show_quote": false, "empty_response": null,
            "keywords_similarity_weight": 0.7, "top_n": 8, "top_k": 1024.0, "rerank_model": "",
            "custom": 1
        }}))
        .unwrap();
        assert_eq!(i.prompt_config["system"], "new {knowledge}");
        assert_eq!(i.prompt_config["prologue"], "hi");
        assert_eq!(
            i.prompt_config["parameters"],
            json!([{"key": "knowledge", "optional": false}])
        );
        assert_eq!(i.prompt_config["quote"], false);
        assert_eq!(i.prompt_config["empty_response"], Value::Null);
        assert_eq!(i.prompt_config["custom"], 1);
        assert!(!i.prompt_config.contains_key("top_n"));
        assert!((i.vector_similarity_weight.unwrap() - 0.3).abs() < 1e-6);
        assert_eq!((i.top_n, i.top_k), (Some(8), Some(1024)));
        assert_eq!(i.rerank_model.as_deref(), Some(""));
    }

    #[test]
    fn storage_weight_name_is_stored_as_given() {
        let i = input(json!({"prompt": {"vector_similarity_weight": 0.25}})).unwrap();
        assert_eq!(i.vector_similarity_weight, Some(0.25));
    }

    #[test]
    fn wrong_types_are_argument_errors() {
        for body in [
            json!({"name": 5}),
            json!({"dataset_ids": "abc"}),
            json!({"dataset_ids": [1]}),
            json!({"llm": "sim"}),
            json!({"llm": {"temperature": "hot"}}),
            json!({"llm": {"model_name": 3}}),
            json!({"prompt": []}),
            json!({"prompt": {"top_n": -1}}),
            json!({"prompt": {"top_n": 1.5}}),
            json!({"prompt": {"top_k": 1e12}}),
            json!({"prompt": {"similarity_threshold": 2}}),
            json!({"prompt": {"keywords_similarity_weight": "x"}}),
            json!({"prompt": {"variables": [{"optional": true}]}}),
            json!({"prompt": {"show_quote": "yes"}}),
            json!({"show_quotation": "maybe"}),
        ] {
            let e = input(body.clone()).unwrap_err();
            assert_eq!(e.code, code::ARGUMENT, "{body}");
        }
    }

    #[test]
    fn weights_round_trip() {
        for kw in [0.0, 0.3, 0.7, 0.123456, 1.0] {
            let stored = (1.0 - kw) as f32;
            assert_eq!(round6(1.0 - real(stored)), kw);
        }
        assert_eq!(real(0.2f32), 0.2);
    }

    #[test]
    fn parameters_must_be_used() {
        let cfg = json!({"system": "a {knowledge} b", "parameters": [
            {"key": "knowledge", "optional": false}, {"key": "lang", "optional": true}]});
        assert!(check_parameters(cfg.as_object().unwrap()).is_ok());
        let cfg = json!({"system": "no placeholder", "parameters": [{"key": "knowledge", "optional": false}]});
        let e = check_parameters(cfg.as_object().unwrap()).unwrap_err();
        assert_eq!(e.message, "Parameter 'knowledge' is not used");
    }

    #[test]
    fn ids_are_deduplicated_with_messages() {
        let l = parse_ids(Some(json!(["a", "b", "a"])), "assistant")
            .unwrap()
            .unwrap();
        assert_eq!(l.ids, ["a", "b"]);
        assert_eq!(l.duplicates, ["Duplicate assistant ids: a"]);
        assert!(parse_ids(None, "x").unwrap().is_none());
        assert!(parse_ids(Some(json!("a")), "x").is_err());
    }

    #[test]
    fn list_params() {
        let q: HashMap<String, String> = [("page", "2"), ("page_size", "10"), ("desc", "false")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let p = ListParams::parse(&q).unwrap();
        assert_eq!(p.limit_offset().unwrap(), (Some(10), 10));
        assert_eq!(p.order_sql(), "created_at ASC, id ASC");
        let bad: HashMap<String, String> = [("page".to_string(), "x".to_string())].into();
        assert_eq!(ListParams::parse(&bad).unwrap_err().code, code::ARGUMENT);
        let bad: HashMap<String, String> = [("orderby".to_string(), "id; drop".to_string())].into();
        assert!(ListParams::parse(&bad).is_err());
    }
}
