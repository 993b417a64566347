//! Bearer-token authentication, RAGFlow style: `Authorization: Bearer <key>`; the scheme word is
//! not checked (RAGFlow takes the second word). Keys are looked up by their SHA-256 hash.
//!
//! Where this sits in the job path: first. A route's [`Tenant`] (API key) or [`Embedded`]
//! (embed token) extractor runs before its body is read; only an authenticated tenant's request
//! is parsed, checked and turned into a job (`crate::dispatch`). Recently verified keys are
//! remembered in [`crate::caches::KeyCache`].

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use ragq_common::auth::hash_key;
use ragq_common::ids::TenantId;
use serde_json::Value;

use crate::envelope::{ApiError, code};
use crate::state::AppState;

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
pub struct Tenant(pub TenantId);

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
            Some(t) => Ok(Tenant(TenantId::from_db(t))),
            None => Err(ApiError::new(
                code::AUTHENTICATION,
                "Authentication error: API key is invalid!",
            )
            .with_data(Value::Bool(false))),
        }
    }
}

/// The tenant of an embedded chatbot or search page: authorised by an **embed token** (RAGFlow's
/// `beta` token), never by the tenant's API key, and counted against the token's rate limit
/// (HTTP 429, code 429, `Retry-After`). Only the `/api/v1/chatbots/*` and `/api/v1/searchbots/*`
/// routes take it; every other route takes [`Tenant`], which knows nothing of embed tokens.
#[derive(Clone, Debug)]
pub struct Embedded {
    pub tenant: TenantId,
    pub token_id: String,
}

/// RAGFlow's answer to a missing or unknown `beta` token (code 102).
pub const EMBED_INVALID: &str = "Authentication error: API key is invalid!";

impl FromRequestParts<AppState> for Embedded {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let words: Vec<&str> = header.split_whitespace().collect();
        let [_, token] = words.as_slice() else {
            return Err(ApiError::data("Authorization is not valid!"));
        };
        let grant = ragq_common::embed_token::authenticate(&state.db, token)
            .await
            .map_err(|e| match e {
                ragq_common::embed_token::EmbedTokenError::Db(e) => ApiError::from(e),
                e => ApiError::internal(e),
            })?;
        let Some(grant) = grant else {
            if tenant_for_key(state, token).await?.is_some() {
                return Err(ApiError::data(
                    "Authentication error: an API key is not accepted here; use an embed token.",
                ));
            }
            return Err(ApiError::data(EMBED_INVALID));
        };
        let now_s = u64::try_from(ragq_common::now_ms() / 1000).unwrap_or(0);
        let limit = u32::try_from(grant.rate_per_minute.max(1)).unwrap_or(1);
        let counted = match state
            .control
            .count_request(&grant.token_id, now_s / 60, 60)
            .await
        {
            Ok(n) if n > u64::from(limit) => Err((60 - now_s % 60).max(1) as u32),
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "shared rate count failed; counting in this process");
                state.embed_rate.check(&grant.token_id, limit, now_s)
            }
        };
        if let Err(retry_after) = counted {
            let mut e = ApiError::busy(format!(
                "This embed token's rate limit ({limit} requests per minute) is exceeded; retry in {retry_after} s."
            ));
            e.retry_after = Some(retry_after);
            return Err(e);
        }
        Ok(Embedded {
            tenant: TenantId::from_db(grant.tenant_id),
            token_id: grant.token_id,
        })
    }
}
