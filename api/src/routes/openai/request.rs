//! Reading an OpenAI chat-completion request: the body's shape (before authentication, as
//! RAGFlow's `validate_request`), then its fields and the conversation. The rules live in
//! [`ragq_common::openai_request`] (shared with batch input files and `ragq batch run`); here
//! they become OpenAI error responses.
//!
//! Where this sits in the job path: steps 1 and 3 of `handle` (step 2 is authentication).

use ragq_common::openai_request;
use serde_json::{Map, Value};

use crate::wire::openai::OpenAiError;

/// A validated request (see [`ragq_common::openai_request`]).
pub(crate) use ragq_common::openai_request::ChatRequest as Request;

/// Step 1 (before auth, as RAGFlow's `validate_request`): a JSON object with `model` and
/// `messages`.
pub(crate) fn parse_body(body: &[u8]) -> Result<Map<String, Value>, OpenAiError> {
    Ok(openai_request::parse_body(body)?)
}

/// Step 3: the fields and the conversation.
pub(crate) fn parse_request(obj: &Map<String, Value>) -> Result<Request, OpenAiError> {
    Ok(openai_request::parse_request(obj)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use ragq_common::job::{ChatMessage, Role};
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
