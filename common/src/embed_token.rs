//! Embed tokens (RAGFlow's `beta` token): what an embedded chatbot or search page carries. A
//! token belongs to one tenant and authorises only the `/api/v1/chatbots/*` and
//! `/api/v1/searchbots/*` routes, never the tenant's API (and the tenant's API key is refused on
//! those routes). Like API keys it is generated once, shown once and stored only as its SHA-256
//! hash; it can be revoked at once, and each token has its own rate limit (requests per minute).
//!
//! Created, listed and revoked over HTTP with the tenant's API key (`/api/v1/embed_tokens`) or
//! with `ragq embed-token create|list|revoke --tenant ID`; both go through this module.

use chrono::{DateTime, Utc};
use rand::RngCore;
use sqlx::PgPool;

use crate::auth::hash_key;

/// Requests per minute a token may make unless told otherwise.
pub const DEFAULT_RATE_PER_MINUTE: i32 = 60;
/// Largest rate limit a token may be given.
pub const MAX_RATE_PER_MINUTE: i32 = 1_000_000;
/// Every embed token starts with this (API keys start with `ragq-` + hex).
pub const PREFIX: &str = "ragq-embed-";

#[derive(Debug, thiserror::Error)]
pub enum EmbedTokenError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("the tenant {0} does not exist")]
    NoTenant(String),
    #[error("rate_per_minute must be between 1 and {MAX_RATE_PER_MINUTE}")]
    BadRate,
}

/// A new token (`ragq-embed-` + 64 hex characters of randomness).
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{PREFIX}{}", hex::encode(bytes))
}

/// A stored token (never the token itself).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct EmbedToken {
    pub id: String,
    pub tenant_id: String,
    pub label: String,
    pub rate_per_minute: i32,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token just created: the stored row and the token, shown this once.
#[derive(Clone, Debug)]
pub struct Created {
    pub row: EmbedToken,
    pub token: String,
}

/// What an embed token authorises (see [`authenticate`]).
#[derive(Clone, Debug)]
pub struct Grant {
    pub token_id: String,
    pub tenant_id: String,
    pub rate_per_minute: i32,
}

const COLUMNS: &str = "id, tenant_id, label, rate_per_minute, created_at, revoked_at";

/// Creates a token for `tenant_id`.
pub async fn create(
    db: &PgPool,
    tenant_id: &str,
    label: &str,
    rate_per_minute: Option<i32>,
) -> Result<Created, EmbedTokenError> {
    let rate = rate_per_minute.unwrap_or(DEFAULT_RATE_PER_MINUTE);
    if !(1..=MAX_RATE_PER_MINUTE).contains(&rate) {
        return Err(EmbedTokenError::BadRate);
    }
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)")
        .bind(tenant_id)
        .fetch_one(db)
        .await?;
    if !exists {
        return Err(EmbedTokenError::NoTenant(tenant_id.to_string()));
    }
    let token = generate();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let row = sqlx::query_as::<_, EmbedToken>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO embed_tokens (id, token_hash, tenant_id, label, rate_per_minute)
         VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    )))
    .bind(&id)
    .bind(hash_key(&token))
    .bind(tenant_id)
    .bind(label)
    .bind(rate)
    .fetch_one(db)
    .await?;
    Ok(Created { row, token })
}

/// The tenant's tokens, newest first (revoked ones included, with `revoked_at`).
pub async fn list(db: &PgPool, tenant_id: &str) -> Result<Vec<EmbedToken>, EmbedTokenError> {
    Ok(sqlx::query_as::<_, EmbedToken>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM embed_tokens WHERE tenant_id = $1 ORDER BY created_at DESC, id"
    )))
    .bind(tenant_id)
    .fetch_all(db)
    .await?)
}

/// Revokes the tenant's token `id`. Returns false when the tenant has no such live token.
pub async fn revoke(db: &PgPool, tenant_id: &str, id: &str) -> Result<bool, EmbedTokenError> {
    let done = sqlx::query(
        "UPDATE embed_tokens SET revoked_at = now()
         WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL",
    )
    .bind(id)
    .bind(tenant_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What the live token `token` authorises, if anything. Not cached: a revoke takes effect on
/// the next request.
pub async fn authenticate(db: &PgPool, token: &str) -> Result<Option<Grant>, EmbedTokenError> {
    let row: Option<(String, String, i32)> = sqlx::query_as(
        "SELECT id, tenant_id, rate_per_minute FROM embed_tokens
         WHERE token_hash = $1 AND revoked_at IS NULL",
    )
    .bind(hash_key(token))
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(token_id, tenant_id, rate_per_minute)| Grant {
        token_id,
        tenant_id,
        rate_per_minute,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_from_api_keys() {
        let t = generate();
        assert!(t.starts_with(PREFIX) && t.len() == PREFIX.len() + 64);
        assert_ne!(t, generate());
        assert!(!crate::auth::generate_key().starts_with(PREFIX));
    }
}
