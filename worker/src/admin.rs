//! Operator actions behind the `ragq` command-line tool (and the test fixtures): tenants and API
//! keys, model settings, datasets loaded from a folder, chats.

use std::path::Path;
use std::sync::Arc;

use ragq_common::auth::{generate_key, hash_key};
use ragq_common::chat_defaults;
use ragq_common::db::new_id;
use sqlx::PgPool;

use crate::ingest::{self, Format, IngestError};
use crate::providers::{ModelSpec, Providers};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Provider(#[from] crate::providers::ProviderError),
    #[error("{0}")]
    Invalid(String),
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// A new tenant and its first API key (the only time the key is visible).
pub struct NewTenant {
    pub tenant_id: String,
    pub api_key: String,
}

pub async fn create_tenant(db: &PgPool, name: &str) -> Result<NewTenant, AdminError> {
    let tenant_id = new_id();
    let api_key = generate_key();
    let mut tx = db.begin().await?;
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, $2)")
        .bind(&tenant_id)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO api_keys (key_hash, tenant_id, label) VALUES ($1, $2, 'initial')")
        .bind(hash_key(&api_key))
        .bind(&tenant_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(NewTenant { tenant_id, api_key })
}

/// Adds (or replaces) a model setting of a tenant.
pub async fn put_model(db: &PgPool, tenant_id: &str, spec: &ModelSpec) -> Result<(), AdminError> {
    if !matches!(spec.kind.as_str(), "chat" | "embedding" | "rerank") {
        return Err(AdminError::Invalid(format!(
            "model kind must be chat, embedding or rerank, not `{}`",
            spec.kind
        )));
    }
    sqlx::query(
        "INSERT INTO models (tenant_id, name, kind, provider, base_url, model, api_key, max_tokens)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (tenant_id, kind, name) DO UPDATE SET provider = EXCLUDED.provider,
           base_url = EXCLUDED.base_url, model = EXCLUDED.model, api_key = EXCLUDED.api_key,
           max_tokens = EXCLUDED.max_tokens",
    )
    .bind(tenant_id)
    .bind(&spec.name)
    .bind(&spec.kind)
    .bind(&spec.provider)
    .bind(&spec.base_url)
    .bind(&spec.model)
    .bind(&spec.api_key)
    .bind(spec.max_tokens.max(1))
    .execute(db)
    .await?;
    Ok(())
}

pub async fn model(
    db: &PgPool,
    tenant_id: &str,
    kind: &str,
    name: &str,
) -> Result<ModelSpec, AdminError> {
    sqlx::query_as::<_, ModelSpec>(
        "SELECT name, kind, provider, base_url, model, api_key, max_tokens FROM models
         WHERE tenant_id = $1 AND kind = $2 AND name = $3",
    )
    .bind(tenant_id)
    .bind(kind)
    .bind(name)
    .fetch_optional(db)
    .await?
    .ok_or_else(|| AdminError::Invalid(format!("no {kind} model named `{name}` for this tenant")))
}

pub async fn create_dataset(
    db: &PgPool,
    tenant_id: &str,
    name: &str,
    embedding_model: &str,
) -> Result<String, AdminError> {
    model(db, tenant_id, "embedding", embedding_model).await?;
    let id = new_id();
    sqlx::query(
        "INSERT INTO datasets (id, tenant_id, name, embedding_model) VALUES ($1, $2, $3, $4)",
    )
    .bind(&id)
    .bind(tenant_id)
    .bind(name)
    .bind(embedding_model)
    .execute(db)
    .await?;
    Ok(id)
}

/// Stores a document and indexes it at once; returns (document id, chunk count).
pub async fn add_document(
    db: &PgPool,
    providers: &Providers,
    tenant_id: &str,
    dataset_id: &str,
    name: &str,
    content: &str,
) -> Result<(String, usize), AdminError> {
    let format = Format::from_name(name)?;
    let embedding_model: String =
        sqlx::query_scalar("SELECT embedding_model FROM datasets WHERE id = $1 AND tenant_id = $2")
            .bind(dataset_id)
            .bind(tenant_id)
            .fetch_optional(db)
            .await?
            .ok_or_else(|| AdminError::Invalid(format!("no dataset {dataset_id}")))?;
    let embedder =
        providers.embedder(&model(db, tenant_id, "embedding", &embedding_model).await?)?;
    let id = new_id();
    let suffix = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    sqlx::query(
        "INSERT INTO documents (id, dataset_id, tenant_id, name, suffix, size, content, run)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'RUNNING')",
    )
    .bind(&id)
    .bind(dataset_id)
    .bind(tenant_id)
    .bind(name)
    .bind(&suffix)
    .bind(content.len() as i64)
    .bind(content)
    .execute(db)
    .await?;
    let n = ingest::index_document(
        db,
        Arc::clone(&embedder),
        dataset_id,
        &id,
        content,
        format,
        128,
    )
    .await?;
    Ok((id, n))
}

/// Loads every supported file of `dir` (not recursive) into the dataset; returns the chunk count.
pub async fn load_folder(
    db: &PgPool,
    providers: &Providers,
    tenant_id: &str,
    dataset_id: &str,
    dir: &Path,
) -> Result<usize, AdminError> {
    let io = |source| AdminError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    let mut total = 0;
    for path in entries {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if !path.is_file() || Format::from_name(&name).is_err() {
            continue;
        }
        let content = std::fs::read_to_string(&path).map_err(|source| AdminError::Io {
            path: path.display().to_string(),
            source,
        })?;
        total += add_document(db, providers, tenant_id, dataset_id, &name, &content)
            .await?
            .1;
    }
    Ok(total)
}

/// What a new chat needs; the rest takes RAGFlow's defaults.
pub struct NewChat<'a> {
    pub name: &'a str,
    pub llm_model: &'a str,
    pub dataset_ids: &'a [String],
    pub rerank_model: &'a str,
    pub top_n: i32,
    pub similarity_threshold: f32,
    pub vector_similarity_weight: f32,
}

pub async fn create_chat(
    db: &PgPool,
    tenant_id: &str,
    chat: &NewChat<'_>,
) -> Result<String, AdminError> {
    model(db, tenant_id, "chat", chat.llm_model).await?;
    if !chat.rerank_model.is_empty() {
        model(db, tenant_id, "rerank", chat.rerank_model).await?;
    }
    let id = new_id();
    sqlx::query(
        "INSERT INTO chats (id, tenant_id, name, llm_model, llm_setting, prompt_config, dataset_ids,
                            rerank_model, top_n, similarity_threshold, vector_similarity_weight)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&id)
    .bind(tenant_id)
    .bind(chat.name)
    .bind(chat.llm_model)
    .bind(sqlx::types::Json(chat_defaults::llm_setting()))
    .bind(sqlx::types::Json(chat_defaults::prompt_config()))
    .bind(chat.dataset_ids)
    .bind(chat.rerank_model)
    .bind(chat.top_n)
    .bind(chat.similarity_threshold)
    .bind(chat.vector_similarity_weight)
    .execute(db)
    .await?;
    Ok(id)
}

/// Turns multi-turn question refinement (an extra LLM call before retrieval on follow-up
/// questions) on or off for a chat.
pub async fn set_refine_multiturn(db: &PgPool, chat_id: &str, on: bool) -> Result<(), AdminError> {
    sqlx::query("UPDATE chats SET prompt_config = prompt_config || jsonb_build_object('refine_multiturn', $2::boolean) WHERE id = $1")
        .bind(chat_id)
        .bind(on)
        .execute(db)
        .await?;
    Ok(())
}
