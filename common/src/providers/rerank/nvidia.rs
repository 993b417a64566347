//! The NVIDIA NIM rerank shape (NeMo Retriever reranking microservice and NVIDIA's hosted API
//! catalog): its own request, answer and URL rules, so its own file (see [`super`]).
//!
//! Request: `{model, query: {text}, passages: [{text}], truncate: "END", top_n}`. Answer:
//! `{rankings: [{index, logit}]}`, sorted by logit. Logits are unbounded (often negative), so
//! each one goes through a sigmoid ([`Scale::Logit`]); a passage the answer leaves out scores 0.
//! `truncate: "END"` lets the server cut passages longer than the model's window instead of
//! failing the request with a 400.
//!
//! Where the request goes, from the model's `base_url` (see [`ranking_url`]):
//!
//! | `base_url` | URL |
//! | --- | --- |
//! | ends with `/ranking` or `/reranking` | used as is |
//! | contains `/retrieval/` (hosted catalog, e.g. `https://ai.api.nvidia.com/v1/retrieval/nvidia`) | `{base}/{model slug}/reranking` |
//! | anything else (a self-hosted NIM, e.g. `http://nim:8000/v1`) | `{base}/ranking` |
//!
//! The model slug is the last `/` segment of the model name with `.` written as `_`, as the
//! catalog spells it: `nvidia/llama-3.2-nv-rerankqa-1b-v2` → `llama-3_2-nv-rerankqa-1b-v2`.
//! (RAGFlow builds the catalog URL only for two hard-coded Mistral models; this rule covers
//! them and every other catalog reranker.)

use async_trait::async_trait;
use serde::Deserialize;

use super::scores::{Scale, in_input_order};
use crate::providers::{JsonEndpoint, ModelSpec, ProviderError, Reranker, Timeouts, endpoint};

pub struct NvidiaRerank(JsonEndpoint);

impl NvidiaRerank {
    pub fn new(http: reqwest::Client, spec: &ModelSpec, t: &Timeouts) -> Self {
        NvidiaRerank(JsonEndpoint::new(
            http,
            spec,
            ranking_url(&spec.base_url, &spec.model),
            t,
        ))
    }
}

/// The ranking endpoint for `base` and `model`; see the table in the module docs.
pub fn ranking_url(base: &str, model: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/ranking") || base.ends_with("/reranking") {
        return base.to_owned();
    }
    if base.contains("/retrieval/") {
        let slug = model.rsplit('/').next().unwrap_or(model).replace('.', "_");
        return endpoint(base, &format!("{slug}/reranking"));
    }
    endpoint(base, "ranking")
}

#[derive(Deserialize)]
struct Response {
    rankings: Vec<Ranking>,
}
#[derive(Deserialize)]
struct Ranking {
    index: i64,
    #[serde(default)]
    logit: Option<f64>,
}

#[async_trait]
impl Reranker for NvidiaRerank {
    async fn rerank(&self, query: &str, documents: &[String]) -> Result<Vec<f32>, ProviderError> {
        if documents.is_empty() {
            return Ok(Vec::new());
        }
        let passages: Vec<serde_json::Value> = documents
            .iter()
            .map(|d| serde_json::json!({ "text": d }))
            .collect();
        let body = serde_json::json!({
            "model": self.0.model,
            "query": { "text": query },
            "passages": passages,
            "truncate": "END",
            "top_n": documents.len(),
        });
        let resp: Response = self.0.post(&body).await?;
        Ok(in_input_order(
            documents.len(),
            resp.rankings.into_iter().map(|r| (r.index, r.logit)),
            Scale::Logit,
        ))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::super::scores::sigmoid;
    use super::*;
    use crate::providers::test_support::*;

    const ROUTE: &str = "/v1/ranking";
    const MODEL: &str = "nvidia/llama-3.2-nv-rerankqa-1b-v2";

    fn reranker(base: &str, key: &str) -> std::sync::Arc<dyn Reranker> {
        let spec = spec("rerank", "nvidia", base, MODEL, key);
        providers()
            .reranker(&spec)
            .expect("nvidia is a rerank provider")
    }

    async fn answering(route: &str, body: serde_json::Value) -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(route))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .mount(&server)
            .await;
        server
    }

    #[test]
    fn ranking_url_follows_the_deployment() {
        assert_eq!(
            ranking_url("http://nim:8000/v1", MODEL),
            "http://nim:8000/v1/ranking"
        );
        assert_eq!(
            ranking_url("http://nim:8000/v1/ranking/", MODEL),
            "http://nim:8000/v1/ranking"
        );
        assert_eq!(
            ranking_url("https://ai.api.nvidia.com/v1/retrieval/nvidia/", MODEL),
            "https://ai.api.nvidia.com/v1/retrieval/nvidia/llama-3_2-nv-rerankqa-1b-v2/reranking"
        );
        assert_eq!(
            ranking_url(
                "https://ai.api.nvidia.com/v1/retrieval/nvidia",
                "nvidia/nv-rerankqa-mistral-4b-v3"
            ),
            "https://ai.api.nvidia.com/v1/retrieval/nvidia/nv-rerankqa-mistral-4b-v3/reranking"
        );
        assert_eq!(
            ranking_url(
                "https://ai.api.nvidia.com/v1/retrieval/nvidia/nv-rerankqa-mistral-4b-v3/reranking",
                "anything"
            ),
            "https://ai.api.nvidia.com/v1/retrieval/nvidia/nv-rerankqa-mistral-4b-v3/reranking"
        );
    }

    #[tokio::test]
    async fn sends_nim_body_and_maps_logits_in_input_order() {
        let server = answering(
            ROUTE,
            json!({"rankings": [
                {"index": 2, "logit": 6.8},
                {"index": 0, "logit": -1.25},
                {"index": 9, "logit": 10.0},
                {"index": 1}
            ]}),
        )
        .await;
        let scores = reranker(&format!("{}/v1", server.uri()), "nvapi-key")
            .rerank(
                "GPU memory bandwidth",
                &strings(&["Hopper", "A100", "H100"]),
            )
            .await
            .expect("rerank succeeds");
        // Logits through a sigmoid; a ranking without a logit and the out-of-range index 9
        // contribute nothing.
        assert_eq!(scores, vec![sigmoid(-1.25), 0.0, sigmoid(6.8)]);
        assert!(scores[2] > 0.99 && scores[0] < 0.25);

        let reqs = requests(&server).await;
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].url.path(), ROUTE);
        assert_eq!(
            json_body(&reqs[0]),
            json!({
                "model": MODEL,
                "query": {"text": "GPU memory bandwidth"},
                "passages": [{"text": "Hopper"}, {"text": "A100"}, {"text": "H100"}],
                "truncate": "END",
                "top_n": 3
            })
        );
        assert_eq!(auth(&reqs[0]).as_deref(), Some("Bearer nvapi-key"));
    }

    #[tokio::test]
    async fn hosted_catalog_uses_the_model_specific_path() {
        let route = "/v1/retrieval/nvidia/llama-3_2-nv-rerankqa-1b-v2/reranking";
        let server = answering(route, json!({"rankings": [{"index": 0, "logit": 0.0}]})).await;
        let scores = reranker(&format!("{}/v1/retrieval/nvidia", server.uri()), "")
            .rerank("q", &strings(&["a"]))
            .await
            .expect("rerank succeeds");
        assert_eq!(scores, vec![0.5]);
        let reqs = requests(&server).await;
        assert_eq!(reqs[0].url.path(), route);
        assert_eq!(auth(&reqs[0]), None);
    }

    #[tokio::test]
    async fn empty_documents_make_no_call() {
        let server = MockServer::start().await;
        let scores = reranker(&format!("{}/v1", server.uri()), "k")
            .rerank("q", &[])
            .await
            .expect("empty input is fine");
        assert!(scores.is_empty());
        assert!(requests(&server).await.is_empty());
    }

    async fn call(uri: String) -> Result<(), ProviderError> {
        reranker(&format!("{uri}/v1"), "k")
            .rerank("q", &strings(&["a", "b"]))
            .await
            .map(drop)
    }

    fn ok() -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(json!({"rankings": [{"index": 0, "logit": 1.0}]}))
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
