//! Parsing a chat's POST or PUT body: types and ranges (code 101), and RAGFlow's renames from
//! request names to storage names (see the table in the [module docs](super)).
//!
//! Where this sits: first step of `create` and `update`, before any database check.

use serde_json::{Map, Value, json};

use crate::envelope::ApiError;

/// What a POST or PUT body sets. `None` = not sent.
#[derive(Debug, Default)]
pub(super) struct ChatInput {
    /// `null` is read as the empty name.
    pub(super) name: Option<String>,
    pub(super) avatar: Option<String>,
    pub(super) description: Option<String>,
    pub(super) language: Option<String>,
    pub(super) dataset_ids: Option<Vec<String>>,
    /// `Some(None)`: `llm.model_name` sent as null.
    pub(super) llm_model: Option<Option<String>>,
    /// `llm` keys other than `model_name`.
    pub(super) llm_setting: Map<String, Value>,
    /// `prompt_config` keys (storage names).
    pub(super) prompt_config: Map<String, Value>,
    pub(super) prompt_given: bool,
    pub(super) similarity_threshold: Option<f32>,
    pub(super) vector_similarity_weight: Option<f32>,
    pub(super) top_n: Option<i32>,
    pub(super) top_k: Option<i32>,
    pub(super) rerank_model: Option<String>,
    pub(super) do_refer: Option<String>,
    pub(super) prompt_type: Option<String>,
    pub(super) tenant_id_given: bool,
}

fn type_error(field: &str, what: &str) -> ApiError {
    ApiError::argument(format!("`{field}` must be {what}."))
}

/// A string, or `None` for null.
fn opt_string(v: Value, field: &str) -> Result<Option<String>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        _ => Err(type_error(field, "a string")),
    }
}

/// A boolean or null (kept as JSON).
fn opt_bool(v: Value, field: &str) -> Result<Value, ApiError> {
    match v {
        Value::Null | Value::Bool(_) => Ok(v),
        _ => Err(type_error(field, "a boolean")),
    }
}

/// A number in [0, 1], or `None` for null.
fn unit_number(v: Value, field: &str) -> Result<Option<f64>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_f64() {
            Some(x) if (0.0..=1.0).contains(&x) => Ok(Some(x)),
            _ => Err(type_error(field, "a number between 0 and 1")),
        },
        _ => Err(type_error(field, "a number between 0 and 1")),
    }
}

/// A non-negative integer that fits a PostgreSQL `integer`, or `None` for null. `8.0` counts.
fn count(v: Value, field: &str) -> Result<Option<i32>, ApiError> {
    let n = match &v {
        Value::Null => return Ok(None),
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .map(|f| f as u64)
        }),
        _ => None,
    };
    n.and_then(|n| i32::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| type_error(field, "a non-negative integer"))
}

/// `show_quotation` / `do_refer`: booleans, `1`/`0` and `"1"`/`"0"` become `"1"`/`"0"`.
fn do_refer(v: Value, field: &str) -> Result<Option<String>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(if b { "1" } else { "0" }.into())),
        Value::Number(n) if n.as_u64() == Some(1) => Ok(Some("1".into())),
        Value::Number(n) if n.as_u64() == Some(0) => Ok(Some("0".into())),
        Value::String(s) if s == "1" || s == "0" => Ok(Some(s)),
        _ => Err(type_error(field, "a boolean")),
    }
}

/// Removes a renamed `prompt` key: the request name wins over the storage name. Returns the
/// name that was used (for messages) and the value.
fn take(
    p: &mut Map<String, Value>,
    api: &'static str,
    storage: &'static str,
) -> Option<(&'static str, Value)> {
    let stored = p.remove(storage);
    match p.remove(api) {
        Some(v) => Some((api, v)),
        None => stored.map(|v| (storage, v)),
    }
}

/// `prompt.variables`: null, or a list of `{key, optional}` (optional defaults to false).
fn parameters(v: Value, field: &str) -> Result<Value, ApiError> {
    let items = match v {
        Value::Null => return Ok(Value::Null),
        Value::Array(items) => items,
        _ => {
            return Err(type_error(
                field,
                "a list of {\"key\", \"optional\"} objects",
            ));
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let key = item
            .get("key")
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty());
        let optional = match item.get("optional") {
            None | Some(Value::Null) => Some(false),
            Some(v) => v.as_bool(),
        };
        match (key, optional) {
            (Some(key), Some(optional)) => out.push(json!({"key": key, "optional": optional})),
            _ => {
                return Err(type_error(
                    field,
                    "a list of {\"key\": string, \"optional\": boolean} objects",
                ));
            }
        }
    }
    Ok(Value::Array(out))
}

fn parse_llm(v: Value, input: &mut ChatInput) -> Result<(), ApiError> {
    let mut m = match v {
        Value::Null => return Ok(()),
        Value::Object(m) => m,
        _ => return Err(type_error("llm", "an object")),
    };
    if let Some(name) = m.remove("model_name") {
        input.llm_model = Some(opt_string(name, "llm.model_name")?);
    }
    for key in [
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
    ] {
        if let Some(v) = m.get(key)
            && !(v.is_null() || v.is_number())
        {
            return Err(type_error(&format!("llm.{key}"), "a number"));
        }
    }
    if let Some(v) = m.get("max_tokens")
        && !(v.is_null() || v.is_u64())
    {
        return Err(type_error("llm.max_tokens", "a non-negative integer"));
    }
    input.llm_setting = m;
    Ok(())
}

fn parse_prompt(v: Value, input: &mut ChatInput) -> Result<(), ApiError> {
    let mut p = match v {
        Value::Null => return Ok(()),
        Value::Object(m) => m,
        _ => return Err(type_error("prompt", "an object")),
    };
    input.prompt_given = true;
    let field = |name: &str| format!("prompt.{name}");
    // Keys that live in columns.
    if let Some(v) = p.remove("similarity_threshold") {
        input.similarity_threshold =
            unit_number(v, "prompt.similarity_threshold")?.map(|x| x as f32);
    }
    if let Some((name, v)) = take(
        &mut p,
        "keywords_similarity_weight",
        "vector_similarity_weight",
    ) {
        let x = unit_number(v, &field(name))?;
        input.vector_similarity_weight = x.map(|x| {
            if name == "keywords_similarity_weight" {
                (1.0 - x) as f32
            } else {
                x as f32
            }
        });
    }
    if let Some(v) = p.remove("top_n") {
        input.top_n = count(v, "prompt.top_n")?;
    }
    if let Some(v) = p.remove("top_k") {
        input.top_k = count(v, "prompt.top_k")?;
    }
    if let Some((name, v)) = take(&mut p, "rerank_model", "rerank_id") {
        input.rerank_model = Some(opt_string(v, &field(name))?.unwrap_or_default());
    }
    // Keys that live in `prompt_config`.
    let cfg = &mut input.prompt_config;
    if let Some((name, v)) = take(&mut p, "prompt", "system") {
        cfg.insert("system".into(), opt_string(v, &field(name))?.into());
    }
    if let Some((name, v)) = take(&mut p, "opener", "prologue") {
        cfg.insert("prologue".into(), opt_string(v, &field(name))?.into());
    }
    if let Some((name, v)) = take(&mut p, "variables", "parameters") {
        cfg.insert("parameters".into(), parameters(v, &field(name))?);
    }
    if let Some((name, v)) = take(&mut p, "show_quote", "quote") {
        cfg.insert("quote".into(), opt_bool(v, &field(name))?);
    }
    if let Some(v) = p.remove("empty_response") {
        cfg.insert(
            "empty_response".into(),
            opt_string(v, "prompt.empty_response")?.into(),
        );
    }
    for key in ["tts", "refine_multiturn"] {
        if let Some(v) = p.remove(key) {
            cfg.insert(key.into(), opt_bool(v, &field(key))?);
        }
    }
    // Anything else is kept as sent, as RAGFlow does.
    cfg.extend(p);
    Ok(())
}

pub(super) fn parse_input(mut req: Map<String, Value>) -> Result<ChatInput, ApiError> {
    let mut input = ChatInput {
        tenant_id_given: req.get("tenant_id").is_some_and(|v| !v.is_null()),
        ..ChatInput::default()
    };
    if let Some(v) = req.remove("name") {
        input.name = Some(opt_string(v, "name")?.unwrap_or_default());
    }
    for (key, slot) in [
        ("avatar", &mut input.avatar),
        ("description", &mut input.description),
        ("language", &mut input.language),
    ] {
        if let Some(v) = req.remove(key) {
            *slot = opt_string(v, key)?;
        }
    }
    if let Some(v) = req.remove("prompt_type") {
        input.prompt_type = opt_string(v, "prompt_type")?;
        if let Some(t) = &input.prompt_type
            && t != "simple"
            && t != "advanced"
        {
            return Err(type_error("prompt_type", "`simple` or `advanced`"));
        }
    }
    match req.remove("dataset_ids") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            let mut ids: Vec<String> = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    // RAGFlow drops empty ids.
                    Value::Null => {}
                    Value::String(s) if s.is_empty() => {}
                    Value::String(s) => {
                        if !ids.contains(&s) {
                            ids.push(s);
                        }
                    }
                    _ => return Err(type_error("dataset_ids", "a list of strings")),
                }
            }
            input.dataset_ids = Some(ids);
        }
        Some(_) => return Err(ApiError::argument("`dataset_ids` should be a list.")),
    }
    if let Some(v) = req.remove("llm") {
        parse_llm(v, &mut input)?;
    }
    if let Some(v) = req.remove("prompt") {
        parse_prompt(v, &mut input)?;
    }
    if let Some(v) = req.remove("do_refer") {
        input.do_refer = do_refer(v, "do_refer")?;
    }
    if let Some(v) = req.remove("show_quotation") {
        input.do_refer = do_refer(v, "show_quotation")?;
    }
    Ok(input)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::code;

    fn input(v: Value) -> Result<ChatInput, ApiError> {
        match v {
            Value::Object(m) => parse_input(m),
            _ => unreachable!(),
        }
    }

    #[test]
    fn renames_prompt_keys_and_request_name_wins() {
        let i = input(json!({"prompt": {
            "system": "old {knowledge}", "prompt": "new {knowledge}", "opener": "hi",
            "variables": [{"key": "knowledge"}], "show_quote": false, "empty_response": null,
            "keywords_similarity_weight": 0.7, "top_n": 8, "top_k": 1024.0, "rerank_model": "",
            "custom": 1
        }}))
        .unwrap();
        assert_eq!(i.prompt_config["system"], "new {knowledge}");
        assert_eq!(i.prompt_config["prologue"], "hi");
        assert_eq!(
            i.prompt_config["parameters"],
            json!([{"key": "knowledge", "optional": false}])
        );
        assert_eq!(i.prompt_config["quote"], false);
        assert_eq!(i.prompt_config["empty_response"], Value::Null);
        assert_eq!(i.prompt_config["custom"], 1);
        assert!(!i.prompt_config.contains_key("top_n"));
        assert!((i.vector_similarity_weight.unwrap() - 0.3).abs() < 1e-6);
        assert_eq!((i.top_n, i.top_k), (Some(8), Some(1024)));
        assert_eq!(i.rerank_model.as_deref(), Some(""));
    }

    #[test]
    fn storage_weight_name_is_stored_as_given() {
        let i = input(json!({"prompt": {"vector_similarity_weight": 0.25}})).unwrap();
        assert_eq!(i.vector_similarity_weight, Some(0.25));
    }

    #[test]
    fn wrong_types_are_argument_errors() {
        for body in [
            json!({"name": 5}),
            json!({"dataset_ids": "abc"}),
            json!({"dataset_ids": [1]}),
            json!({"llm": "sim"}),
            json!({"llm": {"temperature": "hot"}}),
            json!({"llm": {"model_name": 3}}),
            json!({"prompt": []}),
            json!({"prompt": {"top_n": -1}}),
            json!({"prompt": {"top_n": 1.5}}),
            json!({"prompt": {"top_k": 1e12}}),
            json!({"prompt": {"similarity_threshold": 2}}),
            json!({"prompt": {"keywords_similarity_weight": "x"}}),
            json!({"prompt": {"variables": [{"optional": true}]}}),
            json!({"prompt": {"show_quote": "yes"}}),
            json!({"show_quotation": "maybe"}),
        ] {
            let e = input(body.clone()).unwrap_err();
            assert_eq!(e.code, code::ARGUMENT, "{body}");
        }
    }
}
