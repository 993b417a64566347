//! OpenAI-compatible embeddings (`POST {base}/embeddings`).

use async_trait::async_trait;
use serde::Deserialize;

use super::{Embedder, ModelSpec, ProviderError, Timeouts, endpoint, post_json};

pub struct OpenAiEmbed {
    http: reqwest::Client,
    url: String,
    model: String,
    api_key: String,
    timeouts: Timeouts,
}

impl OpenAiEmbed {
    pub fn new(http: reqwest::Client, spec: &ModelSpec, t: &Timeouts) -> Self {
        OpenAiEmbed {
            http,
            url: endpoint(&spec.base_url, "embeddings"),
            model: spec.model.clone(),
            api_key: spec.api_key.clone(),
            timeouts: t.clone(),
        }
    }
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Item>,
}
#[derive(Deserialize)]
struct Item {
    index: usize,
    embedding: Vec<f32>,
}

#[async_trait]
impl Embedder for OpenAiEmbed {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let body = serde_json::json!({ "model": self.model, "input": texts });
        let resp: Response = post_json(
            &self.http,
            &self.url,
            &self.api_key,
            &body,
            self.timeouts.request,
            self.timeouts.retries,
        )
        .await?;
        let mut out = vec![Vec::new(); texts.len()];
        for mut item in resp.data {
            let slot = out.get_mut(item.index).ok_or_else(|| {
                ProviderError::Decode(format!("embedding index {} out of range", item.index))
            })?;
            ragq_common::text::normalize(&mut item.embedding);
            *slot = item.embedding;
        }
        if out.iter().any(Vec::is_empty) {
            return Err(ProviderError::Decode(
                "missing embeddings in response".into(),
            ));
        }
        Ok(out)
    }
}
