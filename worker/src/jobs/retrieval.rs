//! Retrieval job (`POST /api/v1/retrieval`): search datasets and send the result as one `result`
//! event, then `done`.
//!
//! The ingress has already checked the request and normalised it (every parameter present, nulls
//! replaced by RAGFlow's defaults); the checks that matter for isolation are repeated here, since
//! a job is only as trustworthy as its queue. The search itself is the chat pipeline's hybrid
//! retrieval ([`crate::search::rank`]): keyword candidates from PostgreSQL plus a
//! vector fallback, scored `(1 − w)·term + w·vector` (the reranker's score replaces the cosine when
//! `rerank_id` is given), thresholded, then paged here by `page`/`page_size`. `total` counts every
//! chunk above the threshold; `doc_aggs` counts the returned page, as RAGFlow does.

use std::collections::HashSet;

use ragq_common::event::{Done, EventBody, RefChunk};
use ragq_common::job::Job;
use ragq_common::json::short_f32;
use ragq_common::ownership::{self, OwnershipError};
use ragq_common::text;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::job::deps::Deps;
use crate::job::error::StepError;
use crate::job::events::JobEvents;
use crate::search;
use ragq_common::models;
use ragq_common::providers::ModelKind;

fn default_page() -> usize {
    1
}
fn default_page_size() -> usize {
    30
}
fn default_threshold() -> f32 {
    0.2
}
fn default_weight() -> f32 {
    0.3
}
fn default_top_k() -> i64 {
    1024
}
fn default_true() -> bool {
    true
}

/// The job's `params`, as the ingress writes them.
#[derive(Debug, Deserialize)]
pub struct Params {
    pub dataset_ids: Vec<String>,
    #[serde(default)]
    pub document_ids: Vec<String>,
    #[serde(default = "default_page")]
    pub page: usize,
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    #[serde(default = "default_threshold")]
    pub similarity_threshold: f32,
    #[serde(default = "default_weight")]
    pub vector_similarity_weight: f32,
    #[serde(default = "default_top_k")]
    pub top_k: i64,
    #[serde(default)]
    pub rerank_id: Option<String>,
    #[serde(default = "default_true")]
    pub highlight: bool,
}

pub async fn run(p: &Deps, job: &Job, events: &mut JobEvents) -> Result<(), StepError> {
    let params: Params = serde_json::from_value(job.params.clone())
        .map_err(|e| StepError::BadRequest(format!("bad retrieval parameters: {e}")))?;
    let data = search(p, job, &params).await?;
    events.send(EventBody::Result { data }).await?;
    events
        .send(EventBody::Done(Box::new(Done::after_result(
            job.message_id.clone(),
        ))))
        .await?;
    Ok(())
}

/// Runs the search; the `data` of RAGFlow's answer.
async fn search(p: &Deps, job: &Job, params: &Params) -> Result<Value, StepError> {
    if params.dataset_ids.is_empty() {
        return Err(StepError::BadRequest("`dataset_ids` is required.".into()));
    }
    // The same isolation check the ingress made: a job is only as trustworthy as its queue.
    let refused = |e: OwnershipError| match e {
        OwnershipError::Db(e) => StepError::Db(e),
        other => StepError::BadRequest(other.to_string()),
    };
    let embedding_name = ownership::search_datasets(&p.db, &job.tenant_id, &params.dataset_ids)
        .await
        .map_err(refused)?;
    ownership::documents_in_datasets(&p.db, &params.document_ids, &params.dataset_ids)
        .await
        .map_err(refused)?;
    let embedding_name = embedding_name.as_str();
    let embedding = models::load(
        &p.db,
        &p.secrets,
        &job.tenant_id,
        ModelKind::Embedding,
        embedding_name,
    )
    .await?
    .ok_or_else(|| {
        StepError::BadRequest(format!(
            "The embedding model `{embedding_name}` of the datasets does not exist."
        ))
    })?;
    let embedder = p.providers.embedder(&embedding)?;
    let reranker = match params.rerank_id.as_deref().filter(|r| !r.is_empty()) {
        Some(name) => {
            let spec = models::load(&p.db, &p.secrets, &job.tenant_id, ModelKind::Rerank, name)
                .await?
                .ok_or_else(|| {
                    StepError::BadRequest(format!("The rerank model `{name}` does not exist."))
                })?;
            Some(p.providers.reranker(&spec)?)
        }
        None => None,
    };

    let page = params.page.max(1);
    let page_size = params.page_size.max(1);
    let wanted = page.saturating_mul(page_size);
    let rp = search::Params {
        dataset_ids: params.dataset_ids.clone(),
        top_n: wanted,
        // The search reads at most `search::VECTOR_SCAN` (256) chunks whatever `top_k` says.
        top_k: params.top_k,
        similarity_threshold: params.similarity_threshold,
        vector_similarity_weight: params.vector_similarity_weight,
        document_ids: params.document_ids.clone(),
    };
    let ranked = search::rank(
        &p.db,
        &p.common_terms,
        embedder,
        reranker,
        &rp,
        &job.question,
    )
    .await?;
    let total = ranked.len();
    let start = (page - 1).saturating_mul(page_size).min(total);
    let end = start.saturating_add(page_size).min(total);
    let hits: Vec<RefChunk> = ranked.into_iter().skip(start).take(end - start).collect();

    // Fields the ranking does not carry.
    let ids: Vec<String> = hits.iter().map(|h| h.id.clone()).collect();
    let extra: Vec<(String, Vec<String>)> =
        sqlx::query_as("SELECT id, important_keywords FROM chunks WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&p.db)
            .await?;
    let query_terms: HashSet<String> = text::terms(&job.question).into_iter().collect();
    let chunks: Vec<Value> = hits
        .iter()
        .map(|h| {
            let keywords = extra
                .iter()
                .find(|(id, _)| *id == h.id)
                .map(|(_, k)| k.clone())
                .unwrap_or_default();
            let mut c = json!({
                "id": h.id,
                "content": h.content,
                "content_ltks": content_ltks(&h.content),
                "document_id": h.document_id,
                "document_keyword": h.document_name,
                "dataset_id": h.dataset_id,
                "important_keywords": keywords,
                "image_id": "",
                "similarity": short_f32(h.similarity),
                "vector_similarity": short_f32(h.vector_similarity),
                "term_similarity": short_f32(h.term_similarity),
                "positions": [],
                "doc_type_kwd": "",
            });
            if params.highlight {
                c["highlight"] = Value::String(highlight(&h.content, &query_terms));
            }
            c
        })
        .collect();
    let doc_aggs = search::doc_aggs(&hits);
    Ok(json!({"total": total, "chunks": chunks, "doc_aggs": doc_aggs}))
}

/// RAGFlow's `content_ltks`: the content's words, lower-cased, separated by single spaces.
pub fn content_ltks(content: &str) -> String {
    content
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The content with every word that matches a query term wrapped in `<em>…</em>` (the markup
/// RAGFlow's highlighter uses).
pub fn highlight(content: &str, query_terms: &HashSet<String>) -> String {
    let mut out = String::with_capacity(content.len() + 32);
    let mut word_start: Option<usize> = None;
    let push_word = |out: &mut String, word: &str| {
        let hit = text::terms(word)
            .first()
            .is_some_and(|t| query_terms.contains(t));
        if hit {
            out.push_str("<em>");
            out.push_str(word);
            out.push_str("</em>");
        } else {
            out.push_str(word);
        }
    };
    for (i, c) in content.char_indices() {
        if c.is_alphanumeric() {
            word_start.get_or_insert(i);
        } else {
            if let Some(s) = word_start.take() {
                push_word(&mut out, &content[s..i]);
            }
            out.push(c);
        }
    }
    if let Some(s) = word_start {
        push_word(&mut out, &content[s..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highlights_query_terms_only() {
        let terms: HashSet<String> = text::terms("Which workers clean the lamp?")
            .into_iter()
            .collect();
        assert_eq!(
            highlight("The worker cleans lamps, daily.", &terms),
            "The <em>worker</em> <em>cleans</em> <em>lamps</em>, daily."
        );
        assert_eq!(highlight("", &terms), "");
        assert_eq!(highlight("é lamp", &terms), "é <em>lamp</em>");
    }

    #[test]
    fn ltks_and_floats() {
        assert_eq!(content_ltks("Hello, World!  x-y"), "hello world x y");
        assert_eq!(short_f32(0.7), json!(0.7));
        assert_eq!(short_f32(f32::NAN), Value::Null);
    }

    #[test]
    fn params_take_defaults() {
        let p: Params = serde_json::from_value(json!({"dataset_ids": ["d"]})).unwrap();
        assert_eq!((p.page, p.page_size, p.top_k), (1, 30, 1024));
        assert!(p.highlight && p.document_ids.is_empty() && p.rerank_id.is_none());
    }
}
