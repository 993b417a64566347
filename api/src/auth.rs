//! Bearer-token authentication, RAGFlow style: `Authorization: Bearer <key>`; the scheme word is
//! not checked (RAGFlow takes the second word). Keys are looked up by their SHA-256 hash.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use ragq_common::auth::hash_key;
use serde_json::Value;

use crate::envelope::{ApiError, code};
use crate::state::AppState;

/// The tenant that owns API key `key` (looked up by its hash), if any. Shared by the [`Tenant`]
/// extractor and routes that answer auth errors in another format (the OpenAI endpoint).
pub async fn tenant_for_key(db: &sqlx::PgPool, key: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT tenant_id FROM api_keys WHERE key_hash = $1")
        .bind(hash_key(key))
        .fetch_optional(db)
        .await
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
        match tenant_for_key(&state.db, key).await? {
            Some(t) => Ok(Tenant(t)),
            None => Err(ApiError::new(
                code::AUTHENTICATION,
                "Authentication error: API key is invalid!",
            )
            .with_data(Value::Bool(false))),
        }
    }
}
