//! The questions file of `ragq batch run`, in either of two line formats (decided by the first
//! non-empty line):
//!
//! - **OpenAI batch lines** `{custom_id, method: "POST", url: "/v1/chat/completions", body}`,
//!   checked exactly as the ingress checks a batch input file ([`ragq_common::batch::input`]);
//! - **plain lines** `{"id": "q1", "question": "…"}` (`id` a string or a number), answered with
//!   references on.
//!
//! Either may carry what the answer should cite, for the hit-rate summary: `expected` (a document
//! name or a list of them) or `expected_documents` (a list). A line with expectations always
//! asks for references. Custom ids must be unique in the file.

use std::collections::HashMap;

use ragq_common::batch::LineRequest;
use ragq_common::batch::input::{MAX_ERRORS, validate};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// What the answer to each line should cite (document names), by custom id.
pub type Expected = HashMap<String, Vec<String>>;

/// A checked questions file.
#[derive(Debug)]
pub struct Questions {
    pub lines: Vec<LineRequest>,
    pub expected: Expected,
    /// Hex SHA-256 of the file: a resumed run must read the same file.
    pub sha256: String,
}

/// The file's bad lines, `{code, line, message, param}` as OpenAI reports them.
#[derive(Debug, thiserror::Error)]
#[error("the questions file has {} bad lines: {}", .0.len(), summary(.0))]
pub struct BadLines(pub Vec<Value>);

fn summary(errors: &[Value]) -> String {
    errors
        .iter()
        .take(5)
        .map(|e| {
            format!(
                "line {}: {}",
                e["line"],
                e["message"].as_str().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Reads and checks `content`.
pub fn parse(content: &[u8]) -> Result<Questions, BadLines> {
    let text = String::from_utf8_lossy(content);
    let objects: Vec<(usize, Option<Map<String, Value>>)> = text
        .lines()
        .enumerate()
        .filter(|(_, raw)| !raw.trim().is_empty())
        .map(|(i, raw)| match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(m)) => (i + 1, Some(m)),
            _ => (i + 1, None),
        })
        .collect();
    let plain = objects
        .first()
        .and_then(|(_, o)| o.as_ref())
        .is_some_and(|o| o.contains_key("question"));
    let mut errors = Vec::new();
    let mut lines = if plain {
        plain_lines(&objects, &mut errors)
    } else {
        match validate(content) {
            Ok(lines) => lines,
            Err(e) => return Err(BadLines(e)),
        }
    };
    let mut expected = Expected::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let by_line: HashMap<usize, &Map<String, Value>> = objects
        .iter()
        .filter_map(|(n, o)| o.as_ref().map(|o| (*n, o)))
        .collect();
    for l in &mut lines {
        let line_no = l.line_no as usize;
        if let Some(first) = seen.insert(l.custom_id.clone(), line_no) {
            push(
                &mut errors,
                line_no,
                "duplicate_custom_id",
                Some("custom_id"),
                format!("`{}` is also the id of line {first}.", l.custom_id),
            );
        }
        match by_line.get(&line_no).map(|o| expectations(o)) {
            Some(Ok(names)) if !names.is_empty() => {
                l.reference = true;
                expected.insert(l.custom_id.clone(), names);
            }
            Some(Err(message)) => push(
                &mut errors,
                line_no,
                "invalid_type",
                Some("expected"),
                message,
            ),
            _ => {}
        }
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| e["line"].as_u64());
        return Err(BadLines(errors));
    }
    Ok(Questions {
        lines,
        expected,
        sha256: hex::encode(Sha256::digest(content)),
    })
}

fn push(errors: &mut Vec<Value>, line: usize, code: &str, param: Option<&str>, message: String) {
    if errors.len() < MAX_ERRORS {
        errors.push(json!({"code": code, "line": line, "message": message, "param": param}));
    }
}

fn plain_lines(
    objects: &[(usize, Option<Map<String, Value>>)],
    errors: &mut Vec<Value>,
) -> Vec<LineRequest> {
    let mut lines = Vec::new();
    for (line_no, obj) in objects {
        let line_no = *line_no;
        let Some(obj) = obj else {
            push(
                errors,
                line_no,
                "invalid_json_line",
                None,
                "This line is not a JSON object.".into(),
            );
            continue;
        };
        let id = match obj.get("id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                push(
                    errors,
                    line_no,
                    "missing_required_parameter",
                    Some("id"),
                    "`id` must be a non-empty string or a number.".into(),
                );
                continue;
            }
        };
        let question = match obj.get("question") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            _ => {
                push(
                    errors,
                    line_no,
                    "missing_required_parameter",
                    Some("question"),
                    "`question` must be a non-empty string.".into(),
                );
                continue;
            }
        };
        lines.push(LineRequest {
            line_no: line_no as i32,
            custom_id: id,
            model: "ragq".into(),
            reference: true,
            history: Vec::new(),
            question,
        });
    }
    lines
}

/// The document names a line expects its answer to cite.
fn expectations(obj: &Map<String, Value>) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for key in ["expected", "expected_documents"] {
        match obj.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => names.push(s.clone()),
            Some(Value::Array(items)) => {
                for item in items {
                    match item {
                        Value::String(s) => names.push(s.clone()),
                        _ => return Err(format!("`{key}` must list document names (strings).")),
                    }
                }
            }
            Some(_) => {
                return Err(format!(
                    "`{key}` must be a document name or a list of them."
                ));
            }
        }
    }
    names.retain(|n| !n.trim().is_empty());
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_with_expectations() {
        let q = parse(
            b"{\"id\": \"a\", \"question\": \"q1\", \"expected\": \"guide.md\"}\n\n{\"id\": 7, \"question\": \"q2\"}\n",
        )
        .unwrap();
        assert_eq!(q.lines.len(), 2);
        assert_eq!(
            (q.lines[1].custom_id.as_str(), q.lines[1].line_no),
            ("7", 3)
        );
        assert!(q.lines.iter().all(|l| l.reference));
        assert_eq!(q.expected["a"], ["guide.md"]);
        assert!(!q.expected.contains_key("7"));
        assert_eq!(q.sha256.len(), 64);
    }

    #[test]
    fn openai_lines_are_checked_as_the_ingress_does() {
        let good = r#"{"custom_id":"x","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"q"}]},"expected_documents":["a.txt"]}"#;
        let q = parse(good.as_bytes()).unwrap();
        assert!(q.lines[0].reference, "expectations turn references on");
        assert_eq!(q.expected["x"], ["a.txt"]);
        let bad = format!("{good}\n{}", good.replace("POST", "GET"));
        let e = parse(bad.as_bytes()).unwrap_err();
        assert_eq!(e.0[0]["code"], "invalid_method");
        assert_eq!(e.0[0]["line"], 2);
    }

    #[test]
    fn bad_plain_lines_and_duplicates_are_numbered() {
        let e = parse(b"{\"id\": \"a\", \"question\": \"q\"}\n{\"id\": \"a\", \"question\": \"q\"}\nnope\n{\"id\": \"b\"}\n{\"id\": \"c\", \"question\": \"q\", \"expected\": 3}\n")
            .unwrap_err();
        let at: Vec<(u64, &str)> =
            e.0.iter()
                .map(|e| (e["line"].as_u64().unwrap(), e["code"].as_str().unwrap()))
                .collect();
        assert_eq!(
            at,
            [
                (2, "duplicate_custom_id"),
                (3, "invalid_json_line"),
                (4, "missing_required_parameter"),
                (5, "invalid_type")
            ]
        );
    }
}
