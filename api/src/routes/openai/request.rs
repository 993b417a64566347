//! Reading an OpenAI chat-completion request: the body's shape (before authentication, as
//! RAGFlow's `validate_request`), then its fields and the conversation. Also used for each line
//! of a batch (`routes::batch`).
//!
//! Where this sits in the job path: steps 1 and 3 of `handle` (step 2 is authentication).

use axum::http::StatusCode;
use ragq_common::job::{ChatMessage, Role};
use serde_json::{Map, Value};

use crate::wire::openai::OpenAiError;

/// A validated request.
#[derive(Debug, PartialEq)]
pub(crate) struct Request {
    pub(crate) model: String,
    pub(crate) stream: bool,
    pub(crate) reference: bool,
    /// The conversation before the last user message (system and leading assistant messages
    /// already dropped).
    pub(crate) history: Vec<ChatMessage>,
    /// The last user message.
    pub(crate) question: String,
}

/// Step 1 (before auth, as RAGFlow's `validate_request`): a JSON object with `model` and
/// `messages`.
pub(crate) fn parse_body(body: &[u8]) -> Result<Map<String, Value>, OpenAiError> {
    let obj = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                return Err(OpenAiError::invalid(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    "The request body must be a JSON object.",
                ));
            }
            Err(e) => {
                return Err(OpenAiError::invalid(
                    StatusCode::BAD_REQUEST,
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
        return Err(OpenAiError::bad_param(
            first,
            "missing_required_parameter",
            format!("required argument are missing: {}; ", missing.join(",")),
        ));
    }
    Ok(obj)
}

/// A boolean option: absent or null is `None`.
fn opt_bool(v: Option<&Value>, name: &'static str) -> Result<Option<bool>, OpenAiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(OpenAiError::bad_param(
            name,
            "invalid_type",
            format!("`{name}` must be a boolean."),
        )),
    }
}

/// Step 3: the fields and the conversation.
pub(crate) fn parse_request(obj: &Map<String, Value>) -> Result<Request, OpenAiError> {
    let model = match obj.get("model") {
        Some(Value::String(s)) => s.clone(),
        _ => {
            return Err(OpenAiError::bad_param(
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
        return Err(OpenAiError::bad_param(
            "messages",
            "invalid_type",
            "`messages` must be a list.",
        ));
    };
    let invalid_value = |m: &str| OpenAiError::bad_param("messages", "invalid_value", m);
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
        let invalid_type = |what: String| OpenAiError::bad_param("messages", "invalid_type", what);
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
    Ok(Request {
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

    fn req(v: Value) -> Result<Request, OpenAiError> {
        let obj = parse_body(v.to_string().as_bytes())?;
        parse_request(&obj)
    }

    fn msg(role: Role, content: &str) -> ChatMessage {
        ChatMessage {
            role,
            content: content.into(),
        }
    }

    #[test]
    fn conversation_is_split_into_history_and_question() {
        let r = req(json!({"model": "m", "messages": [
            {"role": "assistant", "content": "Hi! I'm your assistant."},
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1"},
            {"role": "developer", "content": "x"},
            {"role": "user", "content": "q2"},
        ]}))
        .unwrap();
        assert_eq!(
            r,
            Request {
                model: "m".into(),
                stream: false,
                reference: false,
                history: vec![msg(Role::User, "q1"), msg(Role::Assistant, "a1")],
                question: "q2".into(),
            }
        );
    }

    #[test]
    fn stream_and_reference_options() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "q"}]});
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            req(b)
        };
        assert!(
            !req(base.clone()).unwrap().stream,
            "stream defaults to false"
        );
        assert!(with("stream", json!(true)).unwrap().stream);
        assert!(with("reference", json!(true)).unwrap().reference);
        assert!(
            with("extra_body", json!({"reference": true}))
                .unwrap()
                .reference
        );
        let mut both = base.clone();
        both["reference"] = json!(false);
        both["extra_body"] = json!({"reference": true});
        assert!(!req(both).unwrap().reference, "the top level wins");
        assert_eq!(
            with("stream", json!("yes")).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            with("reference", json!(1)).unwrap_err().param,
            Some("reference")
        );
    }

    #[test]
    fn invalid_requests_are_400_with_ragflow_messages() {
        let cases = [
            (json!({}), "required argument are missing: model,messages; "),
            (
                json!({"model": "m"}),
                "required argument are missing: messages; ",
            ),
            (
                json!({"model": "m", "messages": []}),
                "You have to provide messages.",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}),
                "The last content of this conversation is not from user.",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]}]}),
                "The `content` of message 0 must be a string.",
            ),
            (
                json!({"model": "m", "messages": [{"role": "tool", "content": "x"}, {"role": "user", "content": "q"}]}),
                "Message 0 has an unsupported role `tool` (use system, user or assistant).",
            ),
            (
                json!({"model": "m", "messages": {"role": "user"}}),
                "`messages` must be a list.",
            ),
            (
                json!({"model": 3, "messages": [{"role": "user", "content": "q"}]}),
                "`model` must be a string.",
            ),
        ];
        for (body, message) in cases {
            let e = req(body.clone()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.message, message, "{body}");
            assert_eq!(e.kind, "invalid_request_error");
        }
        for raw in [&b"[1]"[..], b"{oops"] {
            assert_eq!(parse_body(raw).unwrap_err().code, "invalid_json", "{raw:?}");
        }
    }
}
