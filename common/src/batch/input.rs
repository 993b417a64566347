//! A batch input file, line by line: each line `{custom_id, method: "POST", url:
//! "/v1/chat/completions", body: <chat completion request>}`. The ingress checks a file this way
//! when a batch is created over it (`POST …/batches`), the CLI (`ragq batch run`) before it
//! creates one; both report bad lines the OpenAI way, `{code, line, message, param}` with
//! 1-based line numbers (at most [`MAX_ERRORS`] of them).

use serde_json::{Value, json};

use super::LineRequest;
use crate::openai_request::{parse_body, parse_request};

/// The one endpoint a batch line may call.
pub const ENDPOINT: &str = "/v1/chat/completions";
/// The most line errors reported for one file.
pub const MAX_ERRORS: usize = 100;

/// Every line's request, or the line-numbered errors (see the module docs).
pub fn validate(content: &[u8]) -> Result<Vec<LineRequest>, Vec<Value>> {
    let text = String::from_utf8_lossy(content);
    let (mut lines, mut errors) = (Vec::new(), Vec::new());
    let mut error = |line: usize, code: &str, param: Option<&str>, message: String| {
        if errors.len() < MAX_ERRORS {
            errors.push(json!({"code": code, "line": line, "message": message, "param": param}));
        }
    };
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(raw) else {
            error(
                line_no,
                "invalid_json_line",
                None,
                "This line is not a JSON object.".into(),
            );
            continue;
        };
        let custom_id = obj.get("custom_id").and_then(Value::as_str).unwrap_or("");
        if custom_id.is_empty() {
            error(
                line_no,
                "missing_required_parameter",
                Some("custom_id"),
                "`custom_id` must be a non-empty string.".into(),
            );
            continue;
        }
        if obj.get("method").and_then(Value::as_str) != Some("POST") {
            error(
                line_no,
                "invalid_method",
                Some("method"),
                "`method` must be `POST`.".into(),
            );
            continue;
        }
        if obj.get("url").and_then(Value::as_str) != Some(ENDPOINT) {
            error(
                line_no,
                "invalid_url",
                Some("url"),
                format!("`url` must be `{ENDPOINT}`, the batch's endpoint."),
            );
            continue;
        }
        let request = match obj.get("body") {
            Some(body @ Value::Object(_)) => {
                parse_body(body.to_string().as_bytes()).and_then(|b| parse_request(&b))
            }
            _ => {
                error(
                    line_no,
                    "invalid_body",
                    Some("body"),
                    "`body` must be a chat completion request object.".into(),
                );
                continue;
            }
        };
        match request {
            Ok(r) => lines.push(LineRequest {
                line_no: line_no as i32,
                custom_id: custom_id.to_string(),
                model: r.model,
                reference: r.reference,
                history: r.history,
                question: r.question,
            }),
            Err(e) => error(line_no, e.code, e.param.or(Some("body")), e.message),
        }
    }
    if errors.is_empty() {
        Ok(lines)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_numbers_its_errors() {
        let good = r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"q"}],"reference":true}}"#;
        let lines = validate(good.as_bytes()).unwrap();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].reference);
        assert_eq!(lines[0].question, "q");
        let bad = format!(
            "{good}\n{}\n{}\nnot json\n",
            r#"{"custom_id":"b","method":"GET","url":"/v1/chat/completions","body":{}}"#,
            r#"{"custom_id":"c","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}"#
        );
        let errors = validate(bad.as_bytes()).unwrap_err();
        let at: Vec<(i64, &str)> = errors
            .iter()
            .map(|e| (e["line"].as_i64().unwrap(), e["code"].as_str().unwrap()))
            .collect();
        assert_eq!(
            at,
            [
                (2, "invalid_method"),
                (3, "invalid_value"),
                (4, "invalid_json_line")
            ]
        );
    }
}
