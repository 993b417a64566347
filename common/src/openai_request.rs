//! The body of an OpenAI chat completion request (`POST …/chat/completions`), parsed and
//! checked: shared by the ingress (`chats_openai/{chat_id}/chat/completions`, each line of a
//! batch input file) and the operator CLI (`ragq batch run`), so that a line is judged the same
//! way wherever it comes from.
//!
//! Two steps, as RAGFlow orders them: [`parse_body`] (a JSON object with `model` and `messages`,
//! checked before authentication) and [`parse_request`] (the fields and the conversation).
//! Errors are [`RequestError`]s: an OpenAI error `code`, the field at fault and RAGFlow's
//! message; the ingress turns them into HTTP 400 `invalid_request_error` bodies.

use serde_json::{Map, Value};

use crate::job::{ChatMessage, Role};

/// Why a request was refused (always a client error: HTTP 400 at the ingress).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// The OpenAI error code (`invalid_json`, `missing_required_parameter`, `invalid_type`,
    /// `invalid_value`).
    pub code: &'static str,
    /// The request field at fault, when there is one.
    pub param: Option<&'static str>,
    pub message: String,
}

impl RequestError {
    /// About the body as a whole.
    fn body(code: &'static str, message: impl Into<String>) -> Self {
        RequestError {
            code,
            param: None,
            message: message.into(),
        }
    }

    /// About one field.
    fn param(param: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        RequestError {
            code,
            param: Some(param),
            message: message.into(),
        }
    }
}

/// A validated chat completion request.
#[derive(Debug, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub stream: bool,
    pub reference: bool,
    /// The conversation before the last user message (system and leading assistant messages
    /// already dropped).
    pub history: Vec<ChatMessage>,
    /// The last user message.
    pub question: String,
}

/// Step 1 (before auth, as RAGFlow's `validate_request`): a JSON object with `model` and
/// `messages`.
pub fn parse_body(body: &[u8]) -> Result<Map<String, Value>, RequestError> {
    let obj = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                return Err(RequestError::body(
                    "invalid_json",
                    "The request body must be a JSON object.",
                ));
            }
            Err(e) => {
                return Err(RequestError::body(
                    "invalid_json",
                    format!("The request body is not valid JSON: {e}"),
                ));
            }
        }
    };
    let missing: Vec<&'static str> = ["model", "messages"]
        .into_iter()
        .filter(|k| obj.get(*k).is_none_or(Value::is_null))
        .collect();
    if let Some(first) = missing.first() {
        return Err(RequestError::param(
            first,
            "missing_required_parameter",
            format!("required argument are missing: {}; ", missing.join(",")),
        ));
    }
    Ok(obj)
}

/// A boolean option: absent or null is `None`.
fn opt_bool(v: Option<&Value>, name: &'static str) -> Result<Option<bool>, RequestError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(RequestError::param(
            name,
            "invalid_type",
            format!("`{name}` must be a boolean."),
        )),
    }
}

/// Step 3: the fields and the conversation.
pub fn parse_request(obj: &Map<String, Value>) -> Result<ChatRequest, RequestError> {
    let model = match obj.get("model") {
        Some(Value::String(s)) => s.clone(),
        _ => {
            return Err(RequestError::param(
                "model",
                "invalid_type",
                "`model` must be a string.",
            ));
        }
    };
    let stream = opt_bool(obj.get("stream"), "stream")?.unwrap_or(false);
    let reference = match opt_bool(obj.get("reference"), "reference")? {
        Some(b) => b,
        None => match obj.get("extra_body") {
            Some(Value::Object(extra)) => {
                opt_bool(extra.get("reference"), "reference")?.unwrap_or(false)
            }
            _ => false,
        },
    };
    let Some(Value::Array(messages)) = obj.get("messages") else {
        return Err(RequestError::param(
            "messages",
            "invalid_type",
            "`messages` must be a list.",
        ));
    };
    let invalid_value = |m: &str| RequestError::param("messages", "invalid_value", m);
    if messages.is_empty() {
        return Err(invalid_value("You have to provide messages."));
    }
    if messages
        .last()
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str)
        != Some("user")
    {
        return Err(invalid_value(
            "The last content of this conversation is not from user.",
        ));
    }
    let mut kept: Vec<ChatMessage> = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let invalid_type = |what: String| RequestError::param("messages", "invalid_type", what);
        let Some(m) = m.as_object() else {
            return Err(invalid_type(format!("Message {i} must be an object.")));
        };
        let role = match m.get("role").and_then(Value::as_str) {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some("system" | "developer") => Role::System,
            Some(other) => {
                return Err(invalid_value(&format!(
                    "Message {i} has an unsupported role `{other}` (use system, user or assistant)."
                )));
            }
            None => return Err(invalid_type(format!("Message {i} needs a string `role`."))),
        };
        let Some(Value::String(content)) = m.get("content") else {
            return Err(invalid_type(format!(
                "The `content` of message {i} must be a string."
            )));
        };
        match role {
            Role::System => continue,
            Role::Assistant if kept.is_empty() => continue,
            _ => kept.push(ChatMessage {
                role,
                content: content.clone(),
            }),
        }
    }
    // The last message is from the user (checked above), so `kept` is not empty.
    let question = kept.pop().map(|m| m.content).unwrap_or_default();
    Ok(ChatRequest {
        model,
        stream,
        reference,
        history: kept,
        question,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: Value) -> Result<ChatRequest, RequestError> {
        parse_request(&parse_body(v.to_string().as_bytes())?)
    }

    #[test]
    fn errors_name_their_field_and_code() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "q"}]});
        let mut b = base.clone();
        b["reference"] = json!(1);
        let e = req(b).unwrap_err();
        assert_eq!((e.code, e.param), ("invalid_type", Some("reference")));
        let e = req(json!({"model": "m"})).unwrap_err();
        assert_eq!(
            (e.code, e.param),
            ("missing_required_parameter", Some("messages"))
        );
        let e = parse_body(b"{oops").unwrap_err();
        assert_eq!((e.code, e.param), ("invalid_json", None));
        assert_eq!(req(base).unwrap().question, "q");
    }
}
