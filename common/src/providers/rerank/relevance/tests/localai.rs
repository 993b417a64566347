//! The localai row of the relevance table, against a mock server: the request body, the key, the
//! score scale and the retry contract.

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::providers::rerank::scores::sigmoid;
use crate::providers::test_support::*;
use crate::providers::{ProviderError, Reranker};

const ROUTE: &str = "/v1/rerank";

fn reranker(base: &str, key: &str) -> std::sync::Arc<dyn Reranker> {
    let spec = spec("rerank", "localai", base, "jina-reranker-v1-base-en", key);
    providers()
        .reranker(&spec)
        .expect("localai is a rerank provider")
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
async fn sends_jina_style_body_and_scores_in_input_order() {
    let server = answering(json!({
        "model": "jina-reranker-v1-base-en",
        "usage": {"total_tokens": 9, "prompt_tokens": 9},
        "results": [
            {"index": 1, "document": {"text": "beta"}, "relevance_score": 0.75},
            {"index": 0, "document": {"text": "alpha"}, "relevance_score": 0.25},
            {"index": -1, "relevance_score": 1.0}
        ]
    }))
    .await;
    let scores = reranker(&format!("{}/v1", server.uri()), "sk-local")
        .rerank("pick", &strings(&["alpha", "beta", "gamma"]))
        .await
        .expect("rerank succeeds");
    // Scores already in 0..=1 are kept as they are (no min-max stretching); the negative
    // index is ignored and the unmentioned "gamma" scores 0.
    assert_eq!(scores, vec![0.25, 0.75, 0.0]);

    let reqs = requests(&server).await;
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].url.path(), ROUTE);
    assert_eq!(
        json_body(&reqs[0]),
        json!({
            "model": "jina-reranker-v1-base-en",
            "query": "pick",
            "documents": ["alpha", "beta", "gamma"],
            "top_n": 3
        })
    );
    assert_eq!(auth(&reqs[0]).as_deref(), Some("Bearer sk-local"));
}

#[tokio::test]
async fn a_single_document_keeps_its_score() {
    // RAGFlow's min-max would turn a lone candidate into 0; we keep what the model said.
    let server = answering(json!({"results": [{"index": 0, "relevance_score": 0.8}]})).await;
    let scores = reranker(&format!("{}/v1", server.uri()), "")
        .rerank("q", &strings(&["only"]))
        .await
        .expect("rerank succeeds");
    assert_eq!(scores, vec![0.8]);
    assert_eq!(auth(&requests(&server).await[0]), None);
}

#[tokio::test]
async fn logits_go_through_a_sigmoid_keeping_order() {
    let server = answering(json!({"results": [
        {"index": 0, "relevance_score": 4.0},
        {"index": 1, "relevance_score": -6.0},
        {"index": 2, "relevance_score": 0.5}
    ]}))
    .await;
    let scores = reranker(&format!("{}/v1", server.uri()), "")
        .rerank("q", &strings(&["a", "b", "c"]))
        .await
        .expect("rerank succeeds");
    assert_eq!(scores, vec![sigmoid(4.0), sigmoid(-6.0), sigmoid(0.5)]);
    assert!(scores[0] > scores[2] && scores[2] > scores[1]);
}

row_contract_tests!("/v1", "", 0, &["a"]);
