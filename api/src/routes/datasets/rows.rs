//! Dataset rows: reading them (with document counts summed when read), their RAGFlow shape, and
//! the ownership check the document and chunk routes share.
//!
//! Where this sits: every dataset, document and chunk route asks here whether the tenant owns
//! the dataset before it does anything else.

use chrono::{DateTime, Utc};
use ragq_common::ids::DatasetId;
use ragq_common::json::short_f32;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::types::Json;

use crate::envelope::{ApiError, code};
use crate::response::{ms, rfc822};

/// True when the tenant owns the dataset.
pub async fn owns_dataset(
    db: &PgPool,
    tenant: &str,
    dataset_id: &DatasetId,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM datasets WHERE id = $1 AND tenant_id = $2)",
    )
    .bind(dataset_id)
    .bind(tenant)
    .fetch_one(db)
    .await
}

/// The dataset of a route's path as a [`DatasetId`], if it parses and the tenant owns it.
/// `None` either way otherwise: an id that does not parse names nobody's dataset.
pub async fn owned_dataset(
    db: &PgPool,
    tenant: &str,
    raw: &str,
) -> Result<Option<DatasetId>, sqlx::Error> {
    let Ok(id) = DatasetId::parse(raw) else {
        return Ok(None);
    };
    Ok(owns_dataset(db, tenant, &id).await?.then_some(id))
}

/// RAGFlow's "not your dataset" answer on document and chunk routes (code 102).
pub fn not_your_dataset(dataset_id: &str) -> ApiError {
    ApiError::data(format!("You don't own the dataset {dataset_id}."))
}

#[derive(sqlx::FromRow)]
pub(super) struct DatasetRow {
    pub(super) id: String,
    pub(super) tenant_id: String,
    pub(super) name: String,
    pub(super) description: Option<String>,
    pub(super) avatar: String,
    pub(super) language: String,
    pub(super) embedding_model: String,
    pub(super) permission: String,
    pub(super) chunk_method: String,
    pub(super) parser_config: Json<Value>,
    pub(super) similarity_threshold: f32,
    pub(super) vector_similarity_weight: f32,
    pub(super) pagerank: i32,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
    pub(super) document_count: i64,
    pub(super) chunk_count: i64,
    pub(super) token_num: i64,
}

pub(super) const SELECT_DATASET: &str =
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
    pub(super) fn json(&self) -> Value {
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

pub(super) async fn fetch_dataset(
    db: &PgPool,
    tenant: &str,
    id: &DatasetId,
) -> Result<Option<DatasetRow>, sqlx::Error> {
    sqlx::query_as::<_, DatasetRow>(sqlx::AssertSqlSafe(format!(
        "{SELECT_DATASET} WHERE d.id = $1 AND d.tenant_id = $2"
    )))
    .bind(id)
    .bind(tenant)
    .fetch_optional(db)
    .await
}

/// The embedding model a dataset gets: `requested` (a model name, or RAGFlow's
/// `name@Factory`), or — when `None` — the tenant's default embedding model, else its first.
pub(super) async fn resolve_embedding(
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

/// Serialises dataset creation (and renames) per tenant, so de-duplicated names stay unique.
pub(super) async fn lock_tenant_names(
    tx: &mut sqlx::PgConnection,
    tenant: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('ragq.dataset-names.' || $1))")
        .bind(tenant)
        .execute(tx)
        .await?;
    Ok(())
}
