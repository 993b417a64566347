//! Operator actions behind the `ragq` command-line tool (and the test fixtures): tenants and API
//! keys, model settings (API keys encrypted at rest, listed masked, re-encrypted after a key
//! rotation), datasets loaded from a folder, chats.

use std::path::Path;
use std::sync::Arc;

use ragq_common::auth::{generate_key, hash_key};
use ragq_common::chat_defaults;
use ragq_common::db::new_id;
use sqlx::PgPool;

use ragq_common::model::{ModelKind, Provider, UnknownName, api_key_context};
use ragq_common::secret::{SecretError, SecretKeys, Stored, mask};

use ragq_common::indexing::{self as ingest, Format, IndexError as IngestError};
use ragq_common::models::{self, ModelError, StoredModel};
use ragq_common::providers::Providers;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Provider(#[from] ragq_common::providers::ProviderError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Model(#[from] ModelError),
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

/// Sets a tenant's fairness overrides (see [`ragq_common::tenant_limits`]); returns them as
/// stored.
pub async fn set_tenant_limits(
    db: &PgPool,
    tenant_id: &str,
    rate_per_minute: ragq_common::tenant_limits::Change,
    max_concurrent_jobs: ragq_common::tenant_limits::Change,
) -> Result<ragq_common::tenant_limits::Overrides, AdminError> {
    use ragq_common::tenant_limits::{LimitsError, set};
    set(db, tenant_id, rate_per_minute, max_concurrent_jobs)
        .await
        .map_err(|e| match e {
            LimitsError::Db(e) => AdminError::Db(e),
            e => AdminError::Invalid(e.to_string()),
        })
}

/// How the CLI prints a stored limit: `default` (the api's setting) or the number (0 =
/// unlimited).
pub fn limit_text(v: Option<i32>) -> String {
    v.map_or_else(|| "default".to_string(), |n| n.to_string())
}

/// A model setting as the operator gives it: kind and provider as text, the API key in plain.
pub struct NewModel<'a> {
    /// The name chats and datasets use to refer to it.
    pub name: &'a str,
    /// `chat`, `embedding` or `rerank`.
    pub kind: &'a str,
    /// One of [`Provider::ALL`], able to serve `kind`.
    pub provider: &'a str,
    pub base_url: &'a str,
    /// The model name sent upstream.
    pub model: &'a str,
    /// Empty = no key. Stored encrypted with `RAGQ_SECRET_KEY`.
    pub api_key: &'a str,
    pub max_tokens: i32,
}

/// Adds (or replaces) a model setting of a tenant. Rejects an unknown kind or provider, and a
/// provider that cannot serve the kind, with a message listing the valid values; encrypts a
/// non-empty API key (which needs `RAGQ_SECRET_KEY`).
pub async fn put_model(
    db: &PgPool,
    keys: &SecretKeys,
    tenant_id: &str,
    m: &NewModel<'_>,
) -> Result<(), AdminError> {
    let invalid = |e: UnknownName| AdminError::Invalid(e.to_string());
    let kind: ModelKind = m.kind.parse().map_err(invalid)?;
    let provider: Provider = m.provider.parse().map_err(invalid)?;
    if !provider.serves(kind) {
        return Err(AdminError::Invalid(format!(
            "provider `{provider}` does not serve {kind} models; {kind} providers: {}",
            Provider::serving(kind)
        )));
    }
    let api_key = keys.encrypt(
        m.api_key,
        &api_key_context(tenant_id, kind.as_str(), m.name),
    )?;
    sqlx::query(
        "INSERT INTO models (tenant_id, name, kind, provider, base_url, model, api_key, max_tokens)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (tenant_id, kind, name) DO UPDATE SET provider = EXCLUDED.provider,
           base_url = EXCLUDED.base_url, model = EXCLUDED.model, api_key = EXCLUDED.api_key,
           max_tokens = EXCLUDED.max_tokens",
    )
    .bind(tenant_id)
    .bind(m.name)
    .bind(kind.as_str())
    .bind(provider.as_str())
    .bind(m.base_url)
    .bind(m.model)
    .bind(&api_key)
    .bind(m.max_tokens.max(1))
    .execute(db)
    .await?;
    Ok(())
}

/// Fails unless the tenant has a model of this kind and name.
async fn require_model(
    db: &PgPool,
    tenant_id: &str,
    kind: ModelKind,
    name: &str,
) -> Result<StoredModel, AdminError> {
    models::find(db, tenant_id, kind, name)
        .await?
        .ok_or_else(|| {
            AdminError::Invalid(format!("no {kind} model named `{name}` for this tenant"))
        })
}

pub async fn create_dataset(
    db: &PgPool,
    tenant_id: &str,
    name: &str,
    embedding_model: &str,
) -> Result<String, AdminError> {
    require_model(db, tenant_id, ModelKind::Embedding, embedding_model).await?;
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
    keys: &SecretKeys,
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
    let spec = require_model(db, tenant_id, ModelKind::Embedding, &embedding_model)
        .await?
        .spec(keys)?;
    let embedder = providers.embedder(&spec)?;
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
    keys: &SecretKeys,
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
        total += add_document(db, providers, keys, tenant_id, dataset_id, &name, &content)
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
    require_model(db, tenant_id, ModelKind::Chat, chat.llm_model).await?;
    if !chat.rerank_model.is_empty() {
        require_model(db, tenant_id, ModelKind::Rerank, chat.rerank_model).await?;
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

/// One model as `ragq list-models` shows it: the API key masked, and how it is stored
/// (`none`, `plaintext`, `current`, `previous` key, or `undecryptable`).
pub struct ModelListing {
    pub row: StoredModel,
    pub masked_key: String,
    pub storage: &'static str,
}

impl std::fmt::Display for ModelListing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.row;
        write!(
            f,
            "kind={} name={} provider={} model={} base_url={} max_tokens={} api_key={} key_storage={}",
            r.kind,
            r.name,
            r.provider,
            r.model,
            r.base_url,
            r.max_tokens,
            self.masked_key,
            self.storage
        )
    }
}

/// The tenant's models, keys masked. A key that does not decrypt is listed as such.
pub async fn list_models(
    db: &PgPool,
    keys: &SecretKeys,
    tenant_id: &str,
) -> Result<Vec<ModelListing>, AdminError> {
    let rows = models::list(db, tenant_id).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let (masked_key, storage) = match keys.decrypt(&row.api_key, &row.context()) {
                Ok(opened) => (mask(&opened.plaintext), opened.stored.as_str()),
                Err(_) => ("?".to_string(), "undecryptable"),
            };
            ModelListing {
                row,
                masked_key,
                storage,
            }
        })
        .collect())
}

/// What `ragq reencrypt-secrets` did, counted by how each key was stored.
#[derive(Debug, Default)]
pub struct ReencryptReport {
    /// Legacy plaintext keys now encrypted.
    pub plaintext: usize,
    /// Keys moved from the previous key to the current one.
    pub previous: usize,
    /// Already encrypted with the current key (left alone).
    pub current: usize,
    /// Models without a key.
    pub empty: usize,
    /// Rows changed by someone else while this ran (left alone; run again).
    pub skipped: usize,
    /// `tenant/kind/name: reason` of each key that does not decrypt with either key.
    pub failed: Vec<String>,
}

/// Re-encrypts every model key of every tenant with the current key: legacy plaintext and
/// ciphertexts of the previous key. Each row is replaced only if it still holds what was read.
pub async fn reencrypt_secrets(
    db: &PgPool,
    keys: &SecretKeys,
) -> Result<ReencryptReport, AdminError> {
    if keys.current.is_none() {
        return Err(SecretError::NoKey.into());
    }
    let mut report = ReencryptReport::default();
    for row in models::all(db).await? {
        let context = row.context();
        let opened = match keys.decrypt(&row.api_key, &context) {
            Ok(opened) => opened,
            Err(e) => {
                let at = format!("{}/{}/{}", row.tenant_id, row.kind, row.name);
                report.failed.push(format!("{at}: {e}"));
                continue;
            }
        };
        let counter = match opened.stored {
            Stored::Empty => &mut report.empty,
            Stored::Current => &mut report.current,
            Stored::Plaintext => &mut report.plaintext,
            Stored::Previous => &mut report.previous,
        };
        if !opened.stored.needs_reencrypt() {
            *counter += 1;
            continue;
        }
        let sealed = keys.encrypt(&opened.plaintext, &context)?;
        if models::replace_key(db, &row, &row.api_key, &sealed).await? {
            *counter += 1;
        } else {
            report.skipped += 1;
        }
    }
    Ok(report)
}
