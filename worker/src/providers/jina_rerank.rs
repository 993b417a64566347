//! Jina-style rerank (`POST {base}/rerank` with `{model, query, documents, top_n}` →
//! `{results: [{index, relevance_score}]}`).

use async_trait::async_trait;
use serde::Deserialize;

use super::{ModelSpec, ProviderError, Reranker, Timeouts, endpoint, post_json};

pub struct JinaRerank {
    http: reqwest::Client,
    url: String,
    model: String,
    api_key: String,
    timeouts: Timeouts,
}

impl JinaRerank {
    pub fn new(http: reqwest::Client, spec: &ModelSpec, t: &Timeouts) -> Self {
        JinaRerank {
            http,
            url: endpoint(&spec.base_url, "rerank"),
            model: spec.model.clone(),
            api_key: spec.api_key.clone(),
            timeouts: t.clone(),
        }
    }
}

#[derive(Deserialize)]
struct Response {
    results: Vec<Item>,
}
#[derive(Deserialize)]
struct Item {
    index: usize,
    relevance_score: f32,
}

#[async_trait]
impl Reranker for JinaRerank {
    async fn rerank(&self, query: &str, documents: &[String]) -> Result<Vec<f32>, ProviderError> {
        if documents.is_empty() {
            return Ok(Vec::new());
        }
        let body = serde_json::json!({
            "model": self.model, "query": query, "documents": documents, "top_n": documents.len(),
        });
        let resp: Response = post_json(
            &self.http,
            &self.url,
            &self.api_key,
            &body,
            self.timeouts.request,
            self.timeouts.retries,
        )
        .await?;
        let mut scores = vec![0f32; documents.len()];
        for item in resp.results {
            if let Some(s) = scores.get_mut(item.index) {
                *s = item.relevance_score;
            }
        }
        Ok(scores)
    }
}
