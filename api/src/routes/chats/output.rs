//! A chat row and its RAGFlow response shape (storage names renamed back to request names), and
//! the dataset objects a chat list embeds.
//!
//! Where this sits: last step of `create` and `list`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ragq_common::json::short_f64 as real;
use serde_json::{Map, Value, json};
use sqlx::PgPool;

use crate::envelope::ApiError;
use crate::response::rfc822;

/// Rounds to 6 decimals, the precision a `real` keeps.
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// The `chats` columns a response needs.
macro_rules! chat_columns {
    () => {
        "id, tenant_id, name, description, avatar, language, llm_model, llm_setting, prompt_config,
         similarity_threshold, vector_similarity_weight, top_n, top_k, rerank_model, dataset_ids,
         do_refer, prompt_type, status, created_at, updated_at"
    };
}
pub(super) use chat_columns;

#[derive(Debug, sqlx::FromRow)]
pub(super) struct ChatRow {
    pub(super) id: String,
    pub(super) tenant_id: String,
    pub(super) name: String,
    pub(super) description: String,
    pub(super) avatar: String,
    pub(super) language: String,
    pub(super) llm_model: String,
    pub(super) llm_setting: Value,
    pub(super) prompt_config: Value,
    pub(super) similarity_threshold: f32,
    pub(super) vector_similarity_weight: f32,
    pub(super) top_n: i32,
    pub(super) top_k: i32,
    pub(super) rerank_model: String,
    pub(super) dataset_ids: Vec<String>,
    pub(super) do_refer: String,
    pub(super) prompt_type: String,
    pub(super) status: String,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
}

/// How a response names the chat's datasets.
pub(super) enum DatasetsOut {
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
pub(super) fn chat_json(row: ChatRow, datasets: DatasetsOut) -> Value {
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
pub(super) async fn datasets_by_id(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_round_trip() {
        for kw in [0.0, 0.3, 0.7, 0.123456, 1.0] {
            let stored = (1.0 - kw) as f32;
            assert_eq!(round6(1.0 - real(stored)), kw);
        }
        assert_eq!(real(0.2f32), 0.2);
    }
}
