//! The results file of `ragq batch run` / `ragq batch results`: one JSON line per finished
//! input line, written as lines finish (not in input order), each custom id exactly once:
//!
//! ```json
//! {"custom_id":"q1","line":1,"status":"completed","answer":"…","documents":["guide.md"],
//!  "usage":{"prompt_tokens":812,"completion_tokens":64},"error":null,
//!  "expected":["guide.md"],"hit":true}
//! ```
//!
//! `status` is `completed`, `failed` (`error` is `{reason, error_id, message}`, the same the API
//! shows) or `skipped` (the batch was cancelled or expired before the line ran). `documents` are
//! the documents the answer cites (RAGFlow's `doc_aggs`). `expected` and `hit` appear when the
//! input line named expected documents: a hit is an answer citing at least one of them
//! (compared case-insensitively, with or without the file extension).
//!
//! The file is also the resume record: a rerun reads the custom ids already in it and writes
//! only the others. A last line cut short by a crash is dropped and written again.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use ragq_common::event::{Done, Reference};
use ragq_common::status::LineStatus;
use serde_json::{Value, json};

use super::questions::Expected;

/// One finished line as stored in `batch_lines`.
#[derive(Debug, sqlx::FromRow)]
pub struct LineRow {
    pub custom_id: String,
    pub line_no: i32,
    pub status: String,
    pub result: Option<sqlx::types::Json<Value>>,
}

/// The results line of `row`, and whether it was a hit (None: no expectation).
pub fn result_line(row: &LineRow, expected: &Expected) -> (Value, Option<bool>) {
    let result = row.result.as_ref().map(|j| &j.0);
    let mut line = json!({
        "custom_id": row.custom_id,
        "line": row.line_no,
        "status": row.status,
    });
    let mut documents: Vec<String> = Vec::new();
    if LineStatus::Completed == row.status {
        let done: Option<Done> = result
            .and_then(|r| r.get("done"))
            .and_then(|d| serde_json::from_value(d.clone()).ok());
        let reference: Option<Reference> = result
            .and_then(|r| r.get("reference"))
            .and_then(|d| serde_json::from_value(d.clone()).ok());
        if let Some(r) = &reference {
            documents = r.doc_aggs.iter().map(|d| d.doc_name.clone()).collect();
        }
        line["answer"] = json!(done.as_ref().map(|d| d.answer.as_str()).unwrap_or(""));
        line["documents"] = json!(documents);
        line["usage"] = json!(done.map(|d| d.usage).unwrap_or_default());
        line["error"] = Value::Null;
    } else if LineStatus::Failed == row.status {
        let text = |k: &str| {
            result
                .and_then(|r| r.get(k))
                .cloned()
                .unwrap_or(Value::Null)
        };
        line["error"] = json!({"reason": text("reason"), "error_id": text("error_id"), "message": text("message")});
    } else {
        line["error"] = json!({"reason": "skipped", "message": "The batch ended (cancelled or expired) before this line ran."});
    }
    let hit = expected.get(&row.custom_id).map(|names| {
        line["expected"] = json!(names);
        let hit = cites_any(&documents, names);
        line["hit"] = json!(hit);
        hit
    });
    (line, hit)
}

/// True when one of `documents` is one of `expected` (case-insensitive, extension optional).
pub fn cites_any(documents: &[String], expected: &[String]) -> bool {
    fn forms(name: &str) -> [String; 2] {
        let lower = name.trim().to_lowercase();
        let stem = match lower.rsplit_once('.') {
            Some((stem, _)) if !stem.is_empty() => stem.to_string(),
            _ => lower.clone(),
        };
        [lower, stem]
    }
    documents.iter().any(|d| {
        let [d_full, d_stem] = forms(d);
        expected.iter().any(|e| {
            let [e_full, e_stem] = forms(e);
            d_full == e_full || d_stem == e_full || d_full == e_stem || d_stem == e_stem
        })
    })
}

/// The results file, opened for appending after what an earlier run wrote.
pub struct ResultsFile {
    file: std::fs::File,
    /// Custom ids already written.
    pub written: HashSet<String>,
    /// Hits and expectation counts of the lines written (this run and earlier ones).
    pub hits: usize,
    pub judged: usize,
}

impl ResultsFile {
    /// Opens `path`, keeping its complete lines (a trailing partial line is cut off).
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let mut written = HashSet::new();
        let (mut hits, mut judged) = (0, 0);
        let existing = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let complete = existing
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        for raw in existing[..complete].split(|b| *b == b'\n') {
            let Ok(v) = serde_json::from_slice::<Value>(raw) else {
                continue;
            };
            if let Some(id) = v.get("custom_id").and_then(Value::as_str) {
                written.insert(id.to_string());
                if let Some(hit) = v.get("hit").and_then(Value::as_bool) {
                    judged += 1;
                    hits += usize::from(hit);
                }
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        file.set_len(complete as u64)?;
        let mut file = file;
        use std::io::Seek;
        file.seek(std::io::SeekFrom::End(0))?;
        Ok(ResultsFile {
            file,
            written,
            hits,
            judged,
        })
    }

    /// Writes `row`'s line unless it is already in the file; true when written.
    pub fn write(&mut self, row: &LineRow, expected: &Expected) -> std::io::Result<bool> {
        if self.written.contains(&row.custom_id) {
            return Ok(false);
        }
        let (line, hit) = result_line(row, expected);
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        self.file.write_all(&bytes)?;
        self.file.flush()?;
        self.written.insert(row.custom_id.clone());
        if let Some(hit) = hit {
            self.judged += 1;
            self.hits += usize::from(hit);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, status: &str, result: Value) -> LineRow {
        LineRow {
            custom_id: id.into(),
            line_no: 1,
            status: status.into(),
            result: Some(sqlx::types::Json(result)),
        }
    }

    #[test]
    fn citations_match_by_name_or_stem() {
        let docs = vec!["Delivery-Guide.md".to_string()];
        assert!(cites_any(&docs, &["delivery-guide".into()]));
        assert!(cites_any(&docs, &["delivery-guide.MD".into()]));
        assert!(!cites_any(&docs, &["other.md".into()]));
        assert!(!cites_any(&[], &["x".into()]));
    }

    #[test]
    fn lines_are_written_once_and_a_cut_line_is_rewritten() {
        let dir = std::env::temp_dir().join(format!("ragq-results-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.jsonl");
        let expected: Expected = [("a".to_string(), vec!["g.md".to_string()])].into();
        let done = json!({"message_id": "m", "answer": "yes [ID:0]", "prompt": "", "created_at": 1.0,
                          "usage": {"prompt_tokens": 3, "completion_tokens": 2}});
        let reference = json!({"total": 1, "chunks": [], "doc_aggs": [{"doc_name": "g.md", "doc_id": "d", "count": 1}]});
        let a = row(
            "a",
            "completed",
            json!({"done": done, "reference": reference}),
        );
        let mut f = ResultsFile::open(&path).unwrap();
        assert!(f.write(&a, &expected).unwrap());
        assert!(!f.write(&a, &expected).unwrap(), "never twice");
        assert_eq!((f.hits, f.judged), (1, 1));
        drop(f);
        // A crash in the middle of the next line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"custom_id\":\"b\",")
            .unwrap();
        let mut f = ResultsFile::open(&path).unwrap();
        assert_eq!((f.written.len(), f.hits, f.judged), (1, 1, 1));
        let b = row(
            "b",
            "failed",
            json!({"reason": "upstream_error", "error_id": "err_1", "message": "m"}),
        );
        assert!(f.write(&b, &expected).unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["documents"], json!(["g.md"]));
        assert_eq!(lines[0]["hit"], json!(true));
        assert_eq!(lines[1]["error"]["reason"], "upstream_error");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
