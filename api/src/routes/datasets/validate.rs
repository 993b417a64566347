//! Validation of a dataset body in pydantic's wording (`Field: <name> - Message: <…> - Value:
//! <…>`, code 101), as RAGFlow's `CreateDatasetReq` / `UpdateDatasetReq` report it.
//!
//! Where this sits: first step of `create` and `update`, before any database work.

use serde_json::{Map, Value, json};

use crate::envelope::{ApiError, code};

/// RAGFlow's `DATASET_NAME_LIMIT`.
pub const NAME_LIMIT: usize = 128;

/// RAGFlow's chunking methods (`chunk_method`). ragq stores the name; every method is parsed as
/// plain text, markdown or HTML.
pub const CHUNK_METHODS: &[&str] = &[
    "naive",
    "book",
    "email",
    "laws",
    "manual",
    "one",
    "paper",
    "picture",
    "presentation",
    "qa",
    "table",
    "tag",
];

pub(super) const WRITABLE: &[&str] = &[
    "name",
    "avatar",
    "description",
    "embedding_model",
    "permission",
    "chunk_method",
    "pagerank",
    "parser_config",
];

/// A pydantic-style validation error (code 101), as RAGFlow's request models report them.
pub fn invalid(field: &str, message: &str, value: &Value) -> ApiError {
    let shown = match value {
        Value::String(s) => s.clone(),
        Value::Null => "None".to_string(),
        other => other.to_string(),
    };
    ApiError::new(
        code::ARGUMENT,
        format!("Field: <{field}> - Message: <{message}> - Value: <{shown}>"),
    )
}

/// RAGFlow's default `parser_config` for the `naive` method (the subset ragq uses or echoes).
pub fn default_parser_config() -> Value {
    json!({
        "chunk_token_num": 512,
        "delimiter": "\n",
        "html4excel": false,
        "layout_recognize": "DeepDOC",
        "auto_keywords": 0,
        "auto_questions": 0,
        "topn_tags": 3,
        "raptor": {"use_raptor": false},
        "graphrag": {"use_graphrag": false},
    })
}

/// Checks a `parser_config` and merges it over `base` (one level deep, like RAGFlow's
/// `deep_merge` for the nested `raptor`/`graphrag` objects).
pub(super) fn merge_parser_config(base: Value, given: &Value) -> Result<Value, ApiError> {
    let Value::Object(given_map) = given else {
        return Err(invalid(
            "parser_config",
            "Input should be a valid dictionary or instance of ParserConfig",
            given,
        ));
    };
    if let Some(n) = given_map.get("chunk_token_num")
        && !n.as_u64().is_some_and(|n| (1..=2048).contains(&n))
    {
        return Err(invalid(
            "chunk_token_num",
            "Input should be an integer between 1 and 2048",
            n,
        ));
    }
    if given.to_string().len() > 65_535 {
        return Err(invalid(
            "parser_config",
            "Parser config exceeds size limit (max 65,535 characters).",
            &Value::Null,
        ));
    }
    let mut merged = match base {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for (k, v) in given_map {
        match (merged.get_mut(k), v) {
            (Some(Value::Object(old)), Value::Object(new)) => {
                for (k2, v2) in new {
                    old.insert(k2.clone(), v2.clone());
                }
            }
            _ => {
                merged.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(Value::Object(merged))
}

/// An optional string field of at most `max` characters; `None` when absent or null.
pub(super) fn opt_string(
    req: &Map<String, Value>,
    field: &str,
    max: usize,
) -> Result<Option<String>, ApiError> {
    match req.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s.clone())),
        Some(v @ Value::String(_)) => Err(invalid(
            field,
            &format!("String should have at most {max} characters"),
            v,
        )),
        Some(v) => Err(invalid(field, "Input should be a valid string", v)),
    }
}

/// The dataset name: stripped, 1..=128 characters.
pub(super) fn dataset_name(v: &Value) -> Result<String, ApiError> {
    let Value::String(s) = v else {
        return Err(invalid("name", "Input should be a valid string", v));
    };
    let name = s.trim();
    if name.is_empty() {
        return Err(invalid(
            "name",
            "String should have at least 1 character",
            v,
        ));
    }
    if name.chars().count() > NAME_LIMIT {
        return Err(invalid(
            "name",
            &format!("String should have at most {NAME_LIMIT} characters"),
            v,
        ));
    }
    Ok(name.to_string())
}

pub(super) fn permission(v: &Value) -> Result<String, ApiError> {
    match v.as_str().map(|s| s.trim().to_ascii_lowercase()) {
        Some(p) if p == "me" || p == "team" => Ok(p),
        _ => Err(invalid("permission", "Input should be 'me' or 'team'", v)),
    }
}

pub(super) fn chunk_method(v: &Value) -> Result<String, ApiError> {
    match v.as_str() {
        Some(m) if CHUNK_METHODS.contains(&m) => Ok(m.to_string()),
        _ => Err(invalid(
            "chunk_method",
            "Input should be 'naive', 'book', 'email', 'laws', 'manual', 'one', 'paper', 'picture', 'presentation', 'qa', 'table' or 'tag'",
            v,
        )),
    }
}

pub(super) fn pagerank(v: &Value) -> Result<i32, ApiError> {
    match v.as_i64() {
        Some(n) if (0..=100).contains(&n) => Ok(n as i32),
        _ => Err(invalid(
            "pagerank",
            "Input should be an integer between 0 and 100",
            v,
        )),
    }
}

pub(super) fn reject_unknown_keys(req: &Map<String, Value>) -> Result<(), ApiError> {
    match req.iter().find(|(k, _)| !WRITABLE.contains(&k.as_str())) {
        Some((k, v)) => Err(invalid(k, "Extra inputs are not permitted", v)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_config_merges_and_validates() {
        let merged = merge_parser_config(
            default_parser_config(),
            &json!({"chunk_token_num": 64, "raptor": {"max_token": 9}}),
        )
        .unwrap();
        assert_eq!(merged["chunk_token_num"], 64);
        assert_eq!(
            merged["raptor"],
            json!({"use_raptor": false, "max_token": 9})
        );
        assert_eq!(merged["delimiter"], "\n");
        let err = merge_parser_config(default_parser_config(), &json!({"chunk_token_num": 0}))
            .unwrap_err();
        assert_eq!(err.code, code::ARGUMENT);
        assert!(err.message.contains("chunk_token_num"), "{}", err.message);
        assert!(merge_parser_config(default_parser_config(), &json!([1])).is_err());
    }

    #[test]
    fn pydantic_wording() {
        let e = invalid("name", "Field required", &Value::Null);
        assert_eq!(
            e.message,
            "Field: <name> - Message: <Field required> - Value: <None>"
        );
    }
}
