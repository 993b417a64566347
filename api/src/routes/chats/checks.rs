//! RAGFlow's checks of a chat body against the database, in RAGFlow's order (code 102, and 109
//! for mixed embedding models).
//!
//! Where this sits: after [`super::input`] parsed the body, before `create`/`update` write.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};
use sqlx::PgPool;

use super::input::ChatInput;
use crate::envelope::{ApiError, code};

/// Longest accepted chat name, in characters.
const MAX_NAME_CHARS: usize = 255;

/// RAGFlow's dataset checks, in its order: each dataset is the tenant's and has chunks; then all
/// of them share one embedding model (code 109).
pub(super) async fn check_datasets(
    db: &PgPool,
    tenant: &str,
    ids: &[String],
) -> Result<(), ApiError> {
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
pub(super) async fn check_models(
    db: &PgPool,
    tenant: &str,
    input: &ChatInput,
) -> Result<(), ApiError> {
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
pub(super) async fn default_chat_model(
    db: &PgPool,
    tenant: &str,
) -> Result<Option<String>, ApiError> {
    Ok(sqlx::query_scalar(
        "SELECT name FROM models WHERE tenant_id = $1 AND kind = 'chat'
         ORDER BY is_default DESC, name LIMIT 1",
    )
    .bind(tenant)
    .fetch_optional(db)
    .await?)
}

/// Another live chat of the tenant already has this name.
pub(super) async fn name_taken(
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
pub(super) fn check_parameters(cfg: &Map<String, Value>) -> Result<(), ApiError> {
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
pub(super) fn valid_name(name: Option<&str>, missing: &str) -> Result<Option<String>, ApiError> {
    match name {
        None => Ok(None),
        Some(n) if n.trim().is_empty() => Err(ApiError::data(missing)),
        Some(n) if n.chars().count() > MAX_NAME_CHARS => Err(ApiError::data(format!(
            "`name` is longer than {MAX_NAME_CHARS} characters."
        ))),
        Some(n) => Ok(Some(n.to_string())),
    }
}

pub(super) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parameters_must_be_used() {
        let cfg = json!({"system": "a {knowledge} b", "parameters": [
            {"key": "knowledge", "optional": false}, {"key": "lang", "optional": true}]});
        assert!(check_parameters(cfg.as_object().unwrap()).is_ok());
        let cfg = json!({"system": "no placeholder", "parameters": [{"key": "knowledge", "optional": false}]});
        let e = check_parameters(cfg.as_object().unwrap()).unwrap_err();
        assert_eq!(e.message, "Parameter 'knowledge' is not used");
    }
}
