//! The jina row of the relevance table, against a mock server: the request body, the key, the
//! score scale and the retry contract.

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::providers::test_support::*;
use crate::providers::{ProviderError, Reranker};

const ROUTE: &str = "/v1/rerank";

fn reranker(base: &str, key: &str) -> std::sync::Arc<dyn Reranker> {
    let spec = spec(
        "rerank",
        "jina",
        base,
        "jina-reranker-v2-base-multilingual",
        key,
    );
    providers()
        .reranker(&spec)
        .expect("jina is a rerank provider")
}

#[tokio::test]
async fn sends_jina_body_and_scores_in_input_order() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(ROUTE))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "model": "jina-reranker-v2-base-multilingual",
            "usage": {"total_tokens": 20},
            "results": [
                {"index": 1, "relevance_score": 0.875, "document": {"text": "b"}},
                {"index": 3, "relevance_score": 0.5},
                {"index": 0, "relevance_score": 0.125}
            ]
        })))
        .mount(&server)
        .await;
    let scores = reranker(&format!("{}/v1", server.uri()), "jina_key")
        .rerank("q?", &strings(&["a", "b", "c"]))
        .await
        .expect("rerank succeeds");
    // Index 3 is out of range and ignored; "c" is not mentioned and scores 0.
    assert_eq!(scores, vec![0.125, 0.875, 0.0]);

    let reqs = requests(&server).await;
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        json_body(&reqs[0]),
        json!({
            "model": "jina-reranker-v2-base-multilingual",
            "query": "q?",
            "documents": ["a", "b", "c"],
            "top_n": 3
        })
    );
    assert_eq!(auth(&reqs[0]).as_deref(), Some("Bearer jina_key"));
}

#[tokio::test]
async fn no_key_sends_no_authorization() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(ROUTE))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"results": [{"index": 0, "relevance_score": 0.5}]})),
        )
        .mount(&server)
        .await;
    let scores = reranker(&format!("{}/v1", server.uri()), "")
        .rerank("q", &strings(&["a"]))
        .await
        .expect("rerank succeeds");
    assert_eq!(scores, vec![0.5]);
    assert_eq!(auth(&requests(&server).await[0]), None);
}

row_contract_tests!("/v1", "k", 0, &["a", "b"]);
