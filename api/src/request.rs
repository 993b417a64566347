//! Reading a request: the parsing every route shares, in one place.
//!
//! Where this sits in the job path: right after authentication ([`crate::auth`]) and before a
//! route's own checks. A route takes its body and query through here, so a malformed request is
//! answered the same way everywhere, in RAGFlow's envelope (code 101), before anything is looked
//! up or published.
//!
//! - [`json_object`] / [`body_object`]: a JSON-object body (an empty body is `{}`).
//! - [`query_map`]: the query string as a map.
//! - [`ListParams`]: `page`, `page_size`, `orderby`, `desc`, `id`, `name` of the chat and session
//!   lists; [`int_param`], [`desc_param`], [`paging`]: the same for the dataset family's lists,
//!   whose wording and bounds differ (RAGFlow's two code paths, kept as they are).
//! - [`id_strings`] (the one id-list parser), [`parse_ids`] (a delete request's `ids` with
//!   RAGFlow's duplicate messages) and [`dedup`].
//!
//! RAGFlow's chat/session routes and its dataset routes word their errors differently; where a
//! helper serves both, the caller says which wording it answers with ([`ErrorData`],
//! [`ListWording`]).

use std::collections::{HashMap, HashSet};

use axum::body::Bytes;
use axum::extract::Query;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use serde_json::{Map, Value};

use crate::envelope::{ApiError, code};

/// Whether an argument error about the request's framing (an unreadable body, a bad query
/// string) carries `"data": null`. The chat and session routes' answers do; the dataset,
/// document, chunk, retrieval and search routes' answers have no `data`. Both stay as they were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorData {
    /// `{"code": 101, "message": …, "data": null}`.
    Null,
    /// `{"code": 101, "message": …}`.
    Absent,
}

impl ErrorData {
    fn argument(self, message: String) -> ApiError {
        match self {
            ErrorData::Null => ApiError::argument(message),
            ErrorData::Absent => ApiError::new(code::ARGUMENT, message),
        }
    }
}

/// Parses a JSON object body; an empty (or all-whitespace) body is `{}`; anything else is
/// RAGFlow's argument error (with `data: null`).
pub fn json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::argument(
            "The request body must be a JSON object.",
        )),
        Err(e) => Err(ApiError::argument(format!(
            "The request body is not valid JSON: {e}"
        ))),
    }
}

/// The body as a JSON object. A body the server could not read (larger than
/// `RAGQ_MAX_BODY_BYTES`, or cut off) is an argument error in RAGFlow's envelope, not a bare 4xx.
pub fn body_object(
    body: Result<Bytes, BytesRejection>,
    data: ErrorData,
) -> Result<Map<String, Value>, ApiError> {
    match body {
        Ok(bytes) => json_object(&bytes),
        Err(e) => Err(data.argument(format!(
            "The request body could not be read: {}",
            e.body_text()
        ))),
    }
}

/// The query string as a map (the last value wins when a key repeats).
pub fn query_map(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    data: ErrorData,
) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(m)| m)
        .map_err(|e| data.argument(format!("Bad query string: {}", e.body_text())))
}

/// `page`, `page_size`, `orderby`, `desc`, `id` and `name` of a chat or session list, parsed the
/// way RAGFlow reads them: `desc` is false only for `False`/`false`; `page` or `page_size` 0
/// means no paging (RAGFlow's `get_list` skips `paginate` then); empty `id`/`name` mean no filter.
#[derive(Debug, Clone)]
pub struct ListParams {
    pub page: i64,
    pub page_size: i64,
    /// `created_at` or `updated_at`.
    pub order_column: &'static str,
    pub desc: bool,
    pub id: Option<String>,
    pub name: Option<String>,
}

impl ListParams {
    pub fn parse(q: &HashMap<String, String>) -> Result<ListParams, ApiError> {
        let int = |key: &str, default: i64| -> Result<i64, ApiError> {
            match q.get(key).map(|s| s.trim()) {
                None | Some("") => Ok(default),
                Some(s) => match s.parse::<i64>() {
                    Ok(n) if n >= 0 => Ok(n),
                    _ => Err(ApiError::argument(format!(
                        "`{key}` must be a non-negative integer."
                    ))),
                },
            }
        };
        let order_column = match q.get("orderby").map(String::as_str) {
            None | Some("") | Some("create_time") => "created_at",
            Some("update_time") => "updated_at",
            Some(_) => {
                return Err(ApiError::argument(
                    "`orderby` must be `create_time` or `update_time`.",
                ));
            }
        };
        let filter = |key: &str| q.get(key).filter(|s| !s.is_empty()).cloned();
        Ok(ListParams {
            page: int("page", 1)?,
            page_size: int("page_size", 30)?,
            order_column,
            desc: !matches!(q.get("desc").map(String::as_str), Some("False" | "false")),
            id: filter("id"),
            name: filter("name"),
        })
    }

    /// `(LIMIT, OFFSET)`; a `None` limit is PostgreSQL's `LIMIT NULL` (no limit).
    pub fn limit_offset(&self) -> Result<(Option<i64>, i64), ApiError> {
        if self.page == 0 || self.page_size == 0 {
            return Ok((None, 0));
        }
        let offset = (self.page - 1)
            .checked_mul(self.page_size)
            .ok_or_else(|| ApiError::argument("`page` × `page_size` is too large."))?;
        Ok((Some(self.page_size), offset))
    }

    /// A whitelisted `ORDER BY` clause (never built from input text); `id` breaks ties.
    pub fn order_sql(&self) -> &'static str {
        match (self.order_column, self.desc) {
            ("updated_at", true) => "updated_at DESC, id DESC",
            ("updated_at", false) => "updated_at ASC, id ASC",
            (_, true) => "created_at DESC, id DESC",
            (_, false) => "created_at ASC, id ASC",
        }
    }
}

/// An integer query parameter of the dataset family; absent or empty = `default`.
pub fn int_param(q: &HashMap<String, String>, key: &str, default: i64) -> Result<i64, ApiError> {
    match q.get(key).map(|s| s.trim()) {
        None | Some("") => Ok(default),
        Some(s) => s.parse::<i64>().map_err(|_| {
            ApiError::new(
                code::ARGUMENT,
                format!("`{key}` must be an integer, not `{s}`."),
            )
        }),
    }
}

/// `desc` of the dataset family: false only for `false`/`False`/`0` (RAGFlow reads everything
/// else as true).
pub fn desc_param(q: &HashMap<String, String>) -> bool {
    !matches!(
        q.get("desc")
            .map(|s| s.trim().to_ascii_lowercase())
            .as_deref(),
        Some("false" | "0")
    )
}

/// `(LIMIT, OFFSET)` for 1-based `page` and `page_size`; a page or size of 0 means "no paging"
/// (RAGFlow skips `paginate` then). Negative values are argument errors.
pub fn paging(page: i64, page_size: i64) -> Result<(Option<i64>, i64), ApiError> {
    if page < 0 || page_size < 0 {
        return Err(ApiError::new(
            code::ARGUMENT,
            "`page` and `page_size` must not be negative.",
        ));
    }
    if page == 0 || page_size == 0 {
        return Ok((None, 0));
    }
    let offset = (page - 1).saturating_mul(page_size);
    Ok((Some(page_size), offset))
}

/// How an id list's type errors are worded (RAGFlow's code paths differ; each is kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListWording {
    /// Dataset, document and chunk routes: `` `{field}` should be a list``,
    /// `` `{field}` must be a list of strings`` (no period).
    Dataset,
    /// Chat and session deletes: `` `{field}` should be a list.``,
    /// `` `{field}` must be a list of strings.``
    Chat,
    /// The dataset-level search routes (`sessions/ask`, `mindmap`, searchbots):
    /// `` `{field}` should be a list.``, `` `{field}` should be a list of strings.``
    Search,
}

/// The one id-list parser: `v` must be a list of strings; `error` turns the (worded) message
/// into the route's error (argument or data error). Order and repeats are kept.
pub fn id_strings(
    v: &Value,
    field: &str,
    wording: ListWording,
    error: fn(String) -> ApiError,
) -> Result<Vec<String>, ApiError> {
    let Value::Array(items) = v else {
        return Err(error(match wording {
            ListWording::Dataset => format!("`{field}` should be a list"),
            ListWording::Chat | ListWording::Search => format!("`{field}` should be a list."),
        }));
    };
    items
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.clone()),
            _ => Err(error(match wording {
                ListWording::Dataset => format!("`{field}` must be a list of strings"),
                ListWording::Chat => format!("`{field}` must be a list of strings."),
                ListWording::Search => format!("`{field}` should be a list of strings."),
            })),
        })
        .collect()
}

/// Removes repeated ids, keeping the first occurrence.
pub fn dedup(ids: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    ids.into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

/// The `ids` of a chat or session delete request.
#[derive(Debug)]
pub struct IdList {
    /// Deduplicated, in first-seen order.
    pub ids: Vec<String>,
    /// RAGFlow's `check_duplicate_ids` messages: `Duplicate {kind} ids: {id}`.
    pub duplicates: Vec<String>,
}

/// Parses `ids` (a list of strings); `None` = null or absent. Type errors are argument errors.
pub fn parse_ids(v: Option<Value>, kind: &str) -> Result<Option<IdList>, ApiError> {
    let all = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => id_strings(&v, "ids", ListWording::Chat, ApiError::argument)?,
    };
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for id in &all {
        *seen.entry(id.as_str()).or_insert(0) += 1;
    }
    let repeated: HashSet<String> = seen
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(id, _)| id.to_string())
        .collect();
    let unique = dedup(all);
    let duplicates = unique
        .iter()
        .filter(|id| repeated.contains(*id))
        .map(|id| format!("Duplicate {kind} ids: {id}"))
        .collect();
    Ok(Some(IdList {
        ids: unique,
        duplicates,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_are_deduplicated_with_messages() {
        let l = parse_ids(Some(json!(["a", "b", "a"])), "assistant")
            .unwrap()
            .unwrap();
        assert_eq!(l.ids, ["a", "b"]);
        assert_eq!(l.duplicates, ["Duplicate assistant ids: a"]);
        assert!(parse_ids(None, "x").unwrap().is_none());
        assert!(parse_ids(Some(json!("a")), "x").is_err());
        assert_eq!(
            parse_ids(Some(json!([1])), "x").unwrap_err().message,
            "`ids` must be a list of strings."
        );
    }

    #[test]
    fn id_list_wordings() {
        let e = id_strings(&json!(1), "ids", ListWording::Dataset, ApiError::data).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (code::DATA, "`ids` should be a list")
        );
        let e = id_strings(&json!([1]), "kb_ids", ListWording::Search, ApiError::data).unwrap_err();
        assert_eq!(e.message, "`kb_ids` should be a list of strings.");
        assert_eq!(
            dedup(vec!["a".into(), "b".into(), "a".into()]),
            vec!["a", "b"]
        );
    }

    #[test]
    fn list_params() {
        let q: HashMap<String, String> = [("page", "2"), ("page_size", "10"), ("desc", "false")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let p = ListParams::parse(&q).unwrap();
        assert_eq!(p.limit_offset().unwrap(), (Some(10), 10));
        assert_eq!(p.order_sql(), "created_at ASC, id ASC");
        let bad: HashMap<String, String> = [("page".to_string(), "x".to_string())].into();
        assert_eq!(ListParams::parse(&bad).unwrap_err().code, code::ARGUMENT);
        let bad: HashMap<String, String> = [("orderby".to_string(), "id; drop".to_string())].into();
        assert!(ListParams::parse(&bad).is_err());
    }

    #[test]
    fn paging_and_framing() {
        assert_eq!(paging(2, 10).unwrap(), (Some(10), 10));
        assert_eq!(paging(0, 10).unwrap(), (None, 0));
        assert!(paging(-1, 10).is_err());
        assert_eq!(ErrorData::Null.argument("m".into()).data, Some(Value::Null));
        assert_eq!(ErrorData::Absent.argument("m".into()).data, None);
    }
}
