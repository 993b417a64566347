//! Updating a chunk (RAGFlow v0.22.1's `PUT …/chunks/{chunk_id}`, and `PATCH` as RAGFlow ≥ 0.25
//! and ragflow-sdk ≥ 0.23 send it): keywords, questions and `available` are written by the api;
//! new content is embedded again by a worker, so retrieval finds the new text, not the old.

use ragq_tests::{EnvOptions, TestEnv};
use reqwest::Method;
use serde_json::{Value, json};

async fn call(env: &TestEnv, key: &str, method: Method, path: &str, body: Option<Value>) -> Value {
    env.call(key, method, path, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_are_updated_by_put_and_patch() {
    let env = TestEnv::start(EnvOptions::default()).await;
    let key = env.api_key.clone();
    let ds = env.dataset_id.clone();
    let doc: String =
        sqlx::query_scalar("SELECT id FROM documents WHERE dataset_id = $1 ORDER BY name LIMIT 1")
            .bind(&ds)
            .fetch_one(&env.db)
            .await
            .unwrap();
    let base = format!("/api/v1/datasets/{ds}/documents/{doc}/chunks");
    let added = call(
        &env,
        &key,
        Method::POST,
        &base,
        Some(json!({"content": "The zebra protocol retries seven times."})),
    )
    .await;
    assert_eq!(added["code"], 0, "{added}");
    let chunk = added["data"]["chunk"]["id"].as_str().unwrap().to_string();
    let path = format!("{base}/{chunk}");

    // PUT without content: written at once, no job.
    let r = call(
        &env,
        &key,
        Method::PUT,
        &path,
        Some(json!({"important_keywords": ["zebra", " stripes "], "available": false})),
    )
    .await;
    assert_eq!(r, json!({"code": 0}));
    let (kw, available): (Vec<String>, bool) =
        sqlx::query_as("SELECT important_keywords, available FROM chunks WHERE id = $1")
            .bind(&chunk)
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(kw, vec!["zebra", "stripes"]);
    assert!(!available);

    // PATCH with content: re-embedded by a worker; the old text is gone from retrieval.
    let tokens_before: i64 =
        sqlx::query_scalar("SELECT token_count::bigint FROM documents WHERE id = $1")
            .bind(&doc)
            .fetch_one(&env.db)
            .await
            .unwrap();
    let r = call(
        &env,
        &key,
        Method::PATCH,
        &path,
        Some(json!({
            "content": "The okapi gateway answers within forty milliseconds, every single time.",
            "available": true
        })),
    )
    .await;
    assert_eq!(r, json!({"code": 0}));
    let (content, embedding_len): (String, i32) =
        sqlx::query_as("SELECT content, length(embedding) FROM chunks WHERE id = $1")
            .bind(&chunk)
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert!(content.starts_with("The okapi gateway"), "{content}");
    assert_eq!(embedding_len, 384 * 4, "a fresh 384-dimension embedding");
    let tokens_after: i64 =
        sqlx::query_scalar("SELECT token_count::bigint FROM documents WHERE id = $1")
            .bind(&doc)
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert!(
        tokens_after > tokens_before,
        "{tokens_before} → {tokens_after}"
    );
    let found = call(
        &env,
        &key,
        Method::POST,
        "/api/v1/retrieval",
        Some(json!({"question": "okapi gateway milliseconds", "dataset_ids": [ds]})),
    )
    .await;
    let ids: Vec<&str> = found["data"]["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert!(ids.contains(&chunk.as_str()), "{found}");
    let old = call(
        &env,
        &key,
        Method::POST,
        "/api/v1/retrieval",
        Some(json!({"question": "zebra protocol seven", "dataset_ids": [ds]})),
    )
    .await;
    assert!(!old.to_string().contains("zebra protocol"), "{old}");

    // Bad input and strangers.
    let r = call(
        &env,
        &key,
        Method::PUT,
        &format!("{base}/nope"),
        Some(json!({"available": true})),
    )
    .await;
    assert_eq!(r["code"], 102, "{r}");
    assert_eq!(r["message"], "Can't find this chunk nope");
    let r = call(
        &env,
        &key,
        Method::PUT,
        &path,
        Some(json!({"important_keywords": "x"})),
    )
    .await;
    assert_eq!(r["code"], 102, "{r}");
    assert_eq!(r["message"], "`important_keywords` should be a list");
    let r = call(
        &env,
        &key,
        Method::PATCH,
        &path,
        Some(json!({"content": ""})),
    )
    .await;
    assert_eq!(r["code"], 102, "{r}");
    let other = ragq_cli::admin::create_tenant(&env.db, "other")
        .await
        .unwrap();
    let r = call(
        &env,
        &other.api_key,
        Method::PUT,
        &path,
        Some(json!({"available": false})),
    )
    .await;
    assert_eq!(r["code"], 102, "{r}");
    assert_eq!(r["message"], format!("You don't own the dataset {ds}."));
    let untouched: bool = sqlx::query_scalar("SELECT available FROM chunks WHERE id = $1")
        .bind(&chunk)
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert!(untouched, "another tenant changed nothing");
    env.stop().await;
}
