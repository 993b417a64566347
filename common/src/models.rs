//! The tenant's model settings as stored in `models`, and the one place that turns a stored row
//! into a usable [`ModelSpec`]: kind and provider parsed, API key decrypted.
//!
//! Every reader goes through here — [`find`] (one model), [`list`] (a tenant's), [`all`]
//! (`reencrypt-secrets`) and the chat pipeline's context query, which aggregates the same
//! columns as JSON and decodes them into [`StoredModel`] — so the column list, the parsing and
//! the decryption exist once. A key is decrypted only for the models a job actually uses.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::model::{ModelKind, UnknownName, api_key_context};
use crate::secret::{SecretError, SecretKeys, Stored, mask};
use sqlx::PgPool;

use crate::providers::ModelSpec;

/// A `models` row as stored: kind and provider as text, `api_key` as stored (`enc:v1:…`,
/// legacy plaintext, or empty). `Debug` masks the key.
#[derive(Clone, sqlx::FromRow, serde::Deserialize)]
pub struct StoredModel {
    pub tenant_id: String,
    pub name: String,
    pub kind: String,
    pub provider: String,
    pub base_url: String,
    pub model: String,
    pub api_key: String,
    pub max_tokens: i32,
}

impl std::fmt::Debug for StoredModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredModel")
            .field("tenant_id", &self.tenant_id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("provider", &self.provider)
            .field("api_key", &mask(&self.api_key))
            .finish_non_exhaustive()
    }
}

/// A stored model that cannot be used. Messages name the model, never its key.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("model `{name}`: {source}")]
    Invalid { name: String, source: UnknownName },
    #[error("model `{name}`: {source}")]
    Secret { name: String, source: SecretError },
}

/// `SELECT <the columns of [`StoredModel`]> FROM models` followed by the rest of a statement,
/// as one static string.
macro_rules! select_models {
    ($rest:literal) => {
        concat!(
            "SELECT tenant_id, name, kind, provider, base_url, model, api_key, max_tokens
             FROM models ",
            $rest
        )
    };
}

/// Legacy plaintext keys are reported once per process, not once per job.
static PLAINTEXT_REPORTED: AtomicBool = AtomicBool::new(false);

impl StoredModel {
    /// The associated data binding this row's encrypted key to the row.
    pub fn context(&self) -> Vec<u8> {
        api_key_context(&self.tenant_id, &self.kind, &self.name)
    }

    /// Parses kind and provider and decrypts the key; also says how the key was stored.
    pub fn open(&self, keys: &SecretKeys) -> Result<(ModelSpec, Stored), ModelError> {
        let invalid = |source| ModelError::Invalid {
            name: self.name.clone(),
            source,
        };
        let kind = self.kind.parse().map_err(invalid)?;
        let provider = self.provider.parse().map_err(invalid)?;
        let opened = keys
            .decrypt(&self.api_key, &self.context())
            .map_err(|source| ModelError::Secret {
                name: self.name.clone(),
                source,
            })?;
        if opened.stored == Stored::Plaintext && !PLAINTEXT_REPORTED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                model = %self.name,
                "a model API key is stored in plaintext; run `ragq reencrypt-secrets`"
            );
        }
        let spec = ModelSpec {
            name: self.name.clone(),
            kind,
            provider,
            base_url: self.base_url.clone(),
            model: self.model.clone(),
            api_key: opened.plaintext,
            max_tokens: self.max_tokens,
        };
        Ok((spec, opened.stored))
    }

    /// [`StoredModel::open`] without the storage state.
    pub fn spec(&self, keys: &SecretKeys) -> Result<ModelSpec, ModelError> {
        self.open(keys).map(|(spec, _)| spec)
    }
}

/// The tenant's model of this kind and name, as stored.
pub async fn find(
    db: &PgPool,
    tenant_id: &str,
    kind: ModelKind,
    name: &str,
) -> Result<Option<StoredModel>, sqlx::Error> {
    sqlx::query_as::<_, StoredModel>(select_models!(
        "WHERE tenant_id = $1 AND kind = $2 AND name = $3"
    ))
    .bind(tenant_id)
    .bind(kind.as_str())
    .bind(name)
    .fetch_optional(db)
    .await
}

/// The tenant's model of this kind and name, ready to use (`None` if there is none).
pub async fn load(
    db: &PgPool,
    keys: &SecretKeys,
    tenant_id: &str,
    kind: ModelKind,
    name: &str,
) -> Result<Option<ModelSpec>, ModelError> {
    match find(db, tenant_id, kind, name).await? {
        Some(stored) => stored.spec(keys).map(Some),
        None => Ok(None),
    }
}

/// The tenant's default chat model, ready to use: the one marked `is_default`, else the first
/// by name (what a chat created without `llm.model_name` gets). `None` if it has no chat model.
pub async fn default_chat(
    db: &PgPool,
    keys: &SecretKeys,
    tenant_id: &str,
) -> Result<Option<ModelSpec>, ModelError> {
    let stored = sqlx::query_as::<_, StoredModel>(select_models!(
        "WHERE tenant_id = $1 AND kind = 'chat' ORDER BY is_default DESC, name LIMIT 1"
    ))
    .bind(tenant_id)
    .fetch_optional(db)
    .await?;
    match stored {
        Some(stored) => stored.spec(keys).map(Some),
        None => Ok(None),
    }
}

/// The tenant's models, by kind then name.
pub async fn list(db: &PgPool, tenant_id: &str) -> Result<Vec<StoredModel>, sqlx::Error> {
    sqlx::query_as::<_, StoredModel>(select_models!("WHERE tenant_id = $1 ORDER BY kind, name"))
        .bind(tenant_id)
        .fetch_all(db)
        .await
}

/// Every tenant's models.
pub async fn all(db: &PgPool) -> Result<Vec<StoredModel>, sqlx::Error> {
    sqlx::query_as::<_, StoredModel>(select_models!("ORDER BY tenant_id, kind, name"))
        .fetch_all(db)
        .await
}

/// Replaces a row's stored key, only if it still holds `previous` (a concurrent `add-model`
/// wins). Returns whether the row was changed.
pub async fn replace_key(
    db: &PgPool,
    row: &StoredModel,
    previous: &str,
    stored: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE models SET api_key = $5
         WHERE tenant_id = $1 AND kind = $2 AND name = $3 AND api_key = $4",
    )
    .bind(&row.tenant_id)
    .bind(&row.kind)
    .bind(&row.name)
    .bind(previous)
    .bind(stored)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}
