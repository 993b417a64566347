//! The cohere row of the relevance table, against a mock server: the request body, the key, the
//! score scale and the retry contract.

use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::providers::test_support::*;
use crate::providers::{ProviderError, Reranker};

const ROUTE: &str = "/v2/rerank";

fn reranker(base: &str, key: &str) -> std::sync::Arc<dyn Reranker> {
    let spec = spec("rerank", "cohere", base, "rerank-v3.5", key);
    providers()
        .reranker(&spec)
        .expect("cohere is a rerank provider")
}

#[tokio::test]
async fn sends_v2_body_with_bearer_key_and_scores_in_input_order() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(ROUTE))
        .and(header("authorization", "Bearer co-key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "07734bd2-2473-4f07-94e1-0d9f0e6843cf",
            "results": [
                {"index": 2, "relevance_score": 0.999},
                {"index": 0, "relevance_score": 0.0321},
                {"index": 1, "relevance_score": 1.7},
                {"index": 5, "relevance_score": 0.5}
            ],
            "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}
        })))
        .mount(&server)
        .await;
    let scores = reranker(&format!("{}/v2", server.uri()), "co-key")
        .rerank(
            "capital of the US",
            &strings(&["Carson City", "Saipan", "Washington"]),
        )
        .await
        .expect("rerank succeeds");
    // Probabilities are kept; a stray 1.7 is clamped; index 5 is ignored.
    assert_eq!(scores, vec![0.0321, 1.0, 0.999]);

    let reqs = requests(&server).await;
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        json_body(&reqs[0]),
        json!({
            "model": "rerank-v3.5",
            "query": "capital of the US",
            "documents": ["Carson City", "Saipan", "Washington"],
            "top_n": 3
        })
    );
}

#[tokio::test]
async fn no_key_sends_no_authorization_and_missing_scores_are_zero() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(ROUTE))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"results": [{"index": 1}, {"index": 0, "relevance_score": null}]}),
        ))
        .mount(&server)
        .await;
    let scores = reranker(&format!("{}/v2", server.uri()), "")
        .rerank("q", &strings(&["a", "b"]))
        .await
        .expect("rerank succeeds");
    assert_eq!(scores, vec![0.0, 0.0]);
    assert_eq!(auth(&requests(&server).await[0]), None);
}

row_contract_tests!("/v2", "k", 1, &["a", "b"]);
