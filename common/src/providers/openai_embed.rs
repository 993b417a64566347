//! OpenAI-compatible embeddings (`POST {base}/embeddings`).

use async_trait::async_trait;
use serde::Deserialize;

use super::{Embedder, JsonEndpoint, ModelSpec, ProviderError, Timeouts, endpoint};

pub struct OpenAiEmbed(JsonEndpoint);

impl OpenAiEmbed {
    pub fn new(http: reqwest::Client, spec: &ModelSpec, t: &Timeouts) -> Self {
        OpenAiEmbed(JsonEndpoint::new(
            http,
            spec,
            endpoint(&spec.base_url, "embeddings"),
            t,
        ))
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
        let body = serde_json::json!({ "model": self.0.model, "input": texts });
        let resp: Response = self.0.post(&body).await?;
        let mut out = vec![Vec::new(); texts.len()];
        for mut item in resp.data {
            let slot = out.get_mut(item.index).ok_or_else(|| {
                ProviderError::Decode(format!("embedding index {} out of range", item.index))
            })?;
            crate::text::normalize(&mut item.embedding);
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

#[cfg(test)]
mod tests {
    use serde_json::json;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::super::test_support::*;
    use super::*;

    const ROUTE: &str = "/v1/embeddings";

    fn embedder(base: &str, key: &str) -> std::sync::Arc<dyn Embedder> {
        let spec = spec("embedding", "openai", base, "text-embedding-3-small", key);
        providers()
            .embedder(&spec)
            .expect("openai is an embedding provider")
    }

    async fn answering(body: serde_json::Value) -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(ROUTE))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .mount(&server)
            .await;
        server
    }

    #[tokio::test]
    async fn places_vectors_by_index_and_normalises_them() {
        let server = answering(json!({
            "object": "list",
            "data": [
                {"object": "embedding", "index": 1, "embedding": [0.0, 2.0]},
                {"object": "embedding", "index": 0, "embedding": [3.0, 4.0]}
            ],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 4, "total_tokens": 4}
        }))
        .await;
        let vectors = embedder(&format!("{}/v1", server.uri()), "sk-emb")
            .embed(&strings(&["first", "second"]))
            .await
            .expect("embed succeeds");
        assert_eq!(vectors, vec![vec![0.6, 0.8], vec![0.0, 1.0]]);

        let reqs = requests(&server).await;
        assert_eq!(reqs.len(), 1);
        assert_eq!(
            json_body(&reqs[0]),
            json!({"model": "text-embedding-3-small", "input": ["first", "second"]})
        );
        assert_eq!(auth(&reqs[0]).as_deref(), Some("Bearer sk-emb"));
    }

    #[tokio::test]
    async fn index_out_of_range_is_a_decode_error() {
        let server = answering(json!({"data": [
            {"index": 0, "embedding": [1.0]},
            {"index": 2, "embedding": [1.0]}
        ]}))
        .await;
        let res = embedder(&format!("{}/v1", server.uri()), "")
            .embed(&strings(&["a", "b"]))
            .await;
        match res {
            Err(ProviderError::Decode(msg)) => assert!(msg.contains("index 2"), "{msg}"),
            other => panic!("expected a decode error, got {other:?}"),
        }
        assert_eq!(auth(&requests(&server).await[0]), None);
    }

    #[tokio::test]
    async fn a_missing_vector_is_a_decode_error() {
        let server = answering(json!({"data": [{"index": 1, "embedding": [1.0, 0.0]}]})).await;
        let res = embedder(&format!("{}/v1", server.uri()), "")
            .embed(&strings(&["a", "b"]))
            .await;
        assert!(matches!(res, Err(ProviderError::Decode(_))), "{res:?}");
    }

    #[tokio::test]
    async fn empty_input_makes_no_call() {
        let server = MockServer::start().await;
        let vectors = embedder(&format!("{}/v1", server.uri()), "k")
            .embed(&[])
            .await
            .expect("empty input is fine");
        assert!(vectors.is_empty());
        assert!(requests(&server).await.is_empty());
    }

    async fn call(uri: String) -> Result<(), ProviderError> {
        embedder(&format!("{uri}/v1"), "k")
            .embed(&strings(&["a"]))
            .await
            .map(drop)
    }

    fn ok() -> ResponseTemplate {
        ResponseTemplate::new(200)
            .set_body_json(json!({"data": [{"index": 0, "embedding": [1.0]}]}))
    }

    #[tokio::test]
    async fn retries_a_503() {
        transient_status_is_retried(ROUTE, ok(), call).await;
    }

    #[tokio::test]
    async fn does_not_retry_a_400() {
        client_error_is_not_retried(ROUTE, call).await;
    }

    #[tokio::test]
    async fn times_out_after_bounded_retries() {
        hung_upstream_times_out(ROUTE, ok(), call).await;
    }
}
