//! The xinference row of the relevance table, against a mock server: the request body, the key, the
//! score scale and the retry contract.

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::providers::rerank::scores::sigmoid;
use crate::providers::test_support::*;
use crate::providers::{ProviderError, Reranker};

const ROUTE: &str = "/v1/rerank";

fn reranker(base: &str, key: &str) -> std::sync::Arc<dyn Reranker> {
    let spec = spec("rerank", "xinference", base, "bge-reranker-v2-m3", key);
    providers()
        .reranker(&spec)
        .expect("xinference is a rerank provider")
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
async fn sends_xinference_body_and_scores_in_input_order() {
    let server = answering(json!({
        "id": "r1",
        "results": [
            {"index": 2, "relevance_score": 0.9, "document": null},
            {"index": 0, "relevance_score": 0.4},
            {"index": 7, "relevance_score": 1.0},
            {"index": 3}
        ],
        "meta": {"tokens": {"input_tokens": 12, "output_tokens": 0}}
    }))
    .await;
    let docs = strings(&["alpha", "beta", "gamma", "delta"]);
    let scores = reranker(&format!("{}/v1/", server.uri()), "sk-xi")
        .rerank("which one?", &docs)
        .await
        .expect("rerank succeeds");
    // Out-of-range index 7 is ignored; "beta" is not mentioned and "delta" has no score.
    assert_eq!(scores, vec![0.4, 0.0, 0.9, 0.0]);

    let reqs = requests(&server).await;
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].url.path(), ROUTE);
    assert_eq!(
        json_body(&reqs[0]),
        json!({
            "model": "bge-reranker-v2-m3",
            "query": "which one?",
            "documents": ["alpha", "beta", "gamma", "delta"],
            "return_documents": false,
            "top_n": 4
        })
    );
    assert_eq!(auth(&reqs[0]).as_deref(), Some("Bearer sk-xi"));
}

#[tokio::test]
async fn raw_logits_go_through_a_sigmoid() {
    let server = answering(json!({"results": [
        {"index": 1, "relevance_score": 3.5},
        {"index": 0, "relevance_score": -2.0}
    ]}))
    .await;
    let scores = reranker(&format!("{}/v1", server.uri()), "")
        .rerank("q", &strings(&["a", "b"]))
        .await
        .expect("rerank succeeds");
    assert_eq!(scores, vec![sigmoid(-2.0), sigmoid(3.5)]);
    // No key: no Authorization header.
    assert_eq!(auth(&requests(&server).await[0]), None);
}

#[tokio::test]
async fn answer_without_results_is_a_decode_error() {
    let server = answering(json!({"detail": "model not found"})).await;
    let res = reranker(&format!("{}/v1", server.uri()), "")
        .rerank("q", &strings(&["a"]))
        .await;
    assert!(matches!(res, Err(ProviderError::Decode(_))), "{res:?}");
}

row_contract_tests!("/v1", "k", 0, &["a", "b"]);
