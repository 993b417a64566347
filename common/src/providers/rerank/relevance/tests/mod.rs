//! One test module per row of [`super::ROWS`] (copy one to test a new row).

/// The contract every relevance row keeps, written once: no call for no documents, and the
/// three retry rules of `providers::test_support`. `$base` is the version path of the row's
/// `base_url` (`/v1`), `$key` the API key of the empty-documents call, `$index` the result
/// index of the healthy answer and `$docs` the documents of the retried call.
macro_rules! row_contract_tests {
    ($base:literal, $key:literal, $index:literal, $docs:expr) => {
        #[tokio::test]
        async fn empty_documents_make_no_call() {
            let server = MockServer::start().await;
            let scores = reranker(&format!("{}{}", server.uri(), $base), $key)
                .rerank("q", &[])
                .await
                .expect("empty input is fine");
            assert!(scores.is_empty());
            assert!(requests(&server).await.is_empty());
        }

        async fn call(uri: String) -> Result<(), ProviderError> {
            reranker(&format!("{uri}{}", $base), "k")
                .rerank("q", &strings($docs))
                .await
                .map(drop)
        }

        fn ok() -> ResponseTemplate {
            ResponseTemplate::new(200)
                .set_body_json(json!({"results": [{"index": $index, "relevance_score": 0.5}]}))
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
    };
}

mod cohere;
mod jina;
mod localai;
mod xinference;
