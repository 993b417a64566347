//! Bearer-token authentication, RAGFlow style: `Authorization: Bearer <key>`; the scheme word is
//! not checked (RAGFlow takes the second word). Keys are looked up by their SHA-256 hash.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use ragq_common::auth::hash_key;
use serde_json::Value;

use crate::envelope::{ApiError, code};
use crate::state::AppState;

/// Recently verified keys (hash → tenant), so that a busy client's every request does not cost a
/// database query. Only successful lookups are cached, for [`KeyCache::TTL`]: a new key works at
/// once; a key deleted from `api_keys` stops working within the TTL.
#[derive(Default)]
pub struct KeyCache {
    entries: std::sync::Mutex<std::collections::HashMap<String, (String, std::time::Instant)>>,
}

impl KeyCache {
    pub const TTL: std::time::Duration = std::time::Duration::from_secs(30);
    /// Entries kept at most; the cache is emptied when it would grow past this.
    const CAPACITY: usize = 100_000;

    fn get(&self, hash: &str) -> Option<String> {
        let entries = self.entries.lock().ok()?;
        let (tenant, at) = entries.get(hash)?;
        (at.elapsed() < Self::TTL).then(|| tenant.clone())
    }

    fn put(&self, hash: String, tenant: String) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= Self::CAPACITY {
                entries.clear();
            }
            entries.insert(hash, (tenant, std::time::Instant::now()));
        }
    }
}

/// The tenant that owns API key `key` (looked up by its hash), if any. Shared by the [`Tenant`]
/// extractor and routes that answer auth errors in another format (the OpenAI endpoint).
pub async fn tenant_for_key(state: &AppState, key: &str) -> Result<Option<String>, sqlx::Error> {
    let hash = hash_key(key);
    if let Some(tenant) = state.keys.get(&hash) {
        return Ok(Some(tenant));
    }
    let tenant: Option<String> =
        sqlx::query_scalar("SELECT tenant_id FROM api_keys WHERE key_hash = $1")
            .bind(&hash)
            .fetch_optional(&state.db)
            .await?;
    if let Some(t) = &tenant {
        state.keys.put(hash, t.clone());
    }
    Ok(tenant)
}

/// The authenticated tenant of a request.
#[derive(Clone, Debug)]
pub struct Tenant(pub String);

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            // RAGFlow answers code 0 here (a bug we keep for wire compatibility; data is false).
            return Err(
                ApiError::new(code::SUCCESS, "`Authorization` can't be empty")
                    .with_data(Value::Bool(false)),
            );
        };
        let header = header.to_str().unwrap_or("");
        let mut words = header.split_whitespace();
        let key = match (words.next(), words.next()) {
            (Some(_), Some(key)) => key,
            _ => {
                return Err(ApiError::new(
                    code::SUCCESS,
                    "Please check your authorization format.",
                )
                .with_data(Value::Bool(false)));
            }
        };
        match tenant_for_key(state, key).await? {
            Some(t) => Ok(Tenant(t)),
            None => Err(ApiError::new(
                code::AUTHENTICATION,
                "Authentication error: API key is invalid!",
            )
            .with_data(Value::Bool(false))),
        }
    }
}
