//! Chat assistant CRUD (`/api/v1/chats`) against the real api and PostgreSQL: ragflow-sdk
//! shaped requests, RAGFlow's validations and messages, bad input, and tenant isolation.

use ragq_common::chat_defaults;
use ragq_tests::{EnvOptions, TestEnv};
use reqwest::Method;
use serde_json::{Value, json};

fn no_workers() -> EnvOptions {
    EnvOptions {
        workers: 0,
        ..Default::default()
    }
}

/// Calls the api with `key`; asserts HTTP 200 and a JSON body.
async fn call(env: &TestEnv, key: &str, method: Method, path: &str, body: Option<Value>) -> Value {
    let mut req = env
        .http
        .request(method, format!("{}{path}", env.url))
        .header("Authorization", format!("Bearer {key}"));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

async fn get(env: &TestEnv, path: &str) -> Value {
    call(env, &env.api_key, Method::GET, path, None).await
}
async fn post(env: &TestEnv, path: &str, body: Value) -> Value {
    call(env, &env.api_key, Method::POST, path, Some(body)).await
}
async fn put(env: &TestEnv, path: &str, body: Value) -> Value {
    call(env, &env.api_key, Method::PUT, path, Some(body)).await
}
async fn delete(env: &TestEnv, path: &str, body: Value) -> Value {
    call(env, &env.api_key, Method::DELETE, path, Some(body)).await
}

/// Asserts a RAGFlow error envelope.
#[track_caller]
fn assert_err(v: &Value, code: i64, message: &str) {
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["message"], message, "{v}");
}

/// The body `ragflow_sdk.RAGFlow.create_chat(name, dataset_ids=[ds])` sends (0.22.1).
fn sdk_create_body(name: &str, dataset_id: &str) -> Value {
    json!({
        "name": name, "avatar": "", "dataset_ids": [dataset_id],
        "llm": {"frequency_penalty": 0.7, "max_tokens": 512, "model_name": null,
                "presence_penalty": 0.4, "temperature": 0.1, "top_p": 0.3},
        "prompt": {"empty_response": null, "keywords_similarity_weight": 0.7,
                   "opener": "Hi! I'm your assistant. What can I do for you?",
                   "prompt": chat_defaults::SYSTEM_PROMPT, "rerank_model": "", "show_quote": true,
                   "similarity_threshold": 0.2, "top_k": 1024, "top_n": 8,
                   "variables": [{"key": "knowledge", "optional": true}]}
    })
}

async fn live_chats(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM chats WHERE status = '1'")
        .fetch_one(&env.db)
        .await
        .unwrap()
}

/// Create (SDK body) → list → update → delete, asserting the stored and returned content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_crud_happy_path() {
    let env = TestEnv::start(no_workers()).await;

    let created = post(
        &env,
        "/api/v1/chats",
        sdk_create_body("sdk chat", &env.dataset_id),
    )
    .await;
    assert_eq!(created["code"], 0, "{created}");
    let c = &created["data"];
    let id = c["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(c["name"], "sdk chat");
    assert_eq!(c["tenant_id"], env.tenant_id.as_str());
    assert_eq!(c["avatar"], "");
    assert_eq!(c["description"], "A helpful Assistant");
    assert_eq!(c["language"], "English");
    assert_eq!(c["status"], "1");
    assert_eq!(c["do_refer"], "1");
    assert_eq!(c["prompt_type"], "simple");
    assert_eq!(c["dataset_ids"], json!([env.dataset_id]));
    assert!(
        c.get("datasets").is_none() && c.get("top_k").is_none(),
        "{c}"
    );
    // No model_name: the tenant's first chat model by name.
    assert_eq!(
        c["llm"],
        json!({"temperature": 0.1, "top_p": 0.3, "presence_penalty": 0.4,
               "frequency_penalty": 0.7, "max_tokens": 512, "model_name": "sim"})
    );
    assert_eq!(
        c["prompt"],
        json!({
            "variables": [{"key": "knowledge", "optional": true}],
            "opener": "Hi! I'm your assistant. What can I do for you?",
            "show_quote": true,
            "prompt": chat_defaults::SYSTEM_PROMPT,
            "empty_response": null,
            "tts": false,
            "refine_multiturn": true,
            "similarity_threshold": 0.2,
            "keywords_similarity_weight": 0.7,
            "top_n": 8,
            "rerank_model": "",
        })
    );
    assert!(c["create_time"].as_i64().unwrap() > 1_700_000_000_000);
    assert!(c["create_date"].as_str().unwrap().ends_with(" GMT"));
    assert_eq!(c["create_time"], c["update_time"]);

    // Storage: the keyword weight is stored as the vector weight 1 − 0.7; null stays null.
    let (vsw, top_k, top_n, cfg): (f32, i32, i32, Value) = sqlx::query_as(
        "SELECT vector_similarity_weight, top_k, top_n, prompt_config FROM chats WHERE id = $1",
    )
    .bind(&id)
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert!((vsw - 0.3).abs() < 1e-6);
    assert_eq!((top_k, top_n), (1024, 8));
    assert_eq!(cfg["empty_response"], Value::Null);
    assert_eq!(cfg["system"], chat_defaults::SYSTEM_PROMPT);

    // Defaults when prompt and llm are absent; the `is_default` chat model wins.
    sqlx::query("UPDATE models SET is_default = true WHERE tenant_id = $1 AND name = 'sim-slow'")
        .bind(&env.tenant_id)
        .execute(&env.db)
        .await
        .unwrap();
    let bare = post(&env, "/api/v1/chats", json!({"name": "bare"})).await;
    assert_eq!(bare["code"], 0, "{bare}");
    assert_eq!(bare["data"]["llm"]["model_name"], "sim-slow");
    assert_eq!(bare["data"]["llm"]["temperature"], 0.1);
    assert_eq!(bare["data"]["dataset_ids"], json!([]));
    let p = &bare["data"]["prompt"];
    assert_eq!(p["opener"], chat_defaults::PROLOGUE);
    assert_eq!(p["empty_response"], chat_defaults::EMPTY_RESPONSE);
    assert_eq!(
        p["variables"],
        json!([{"key": "knowledge", "optional": false}])
    );
    assert_eq!(
        (p["top_n"].clone(), p["similarity_threshold"].clone()),
        (json!(6), json!(0.2))
    );
    assert_eq!(p["keywords_similarity_weight"], 0.7);
    let bare_id = bare["data"]["id"].as_str().unwrap().to_string();

    // List: top_k and full dataset objects instead of dataset_ids.
    let one = get(&env, &format!("/api/v1/chats?id={id}")).await;
    assert_eq!(one["code"], 0, "{one}");
    let l = &one["data"][0];
    assert_eq!(one["data"].as_array().unwrap().len(), 1);
    assert_eq!(l["id"], id.as_str());
    assert_eq!(l["top_k"], 1024);
    assert!(l.get("dataset_ids").is_none());
    assert_eq!(l["prompt"], c["prompt"]);
    assert_eq!(l["llm"], c["llm"]);
    let ds = &l["datasets"][0];
    assert_eq!(ds["id"], env.dataset_id.as_str());
    assert_eq!(ds["name"], "demo");
    assert_eq!(ds["embedding_model"], "sim-embed");
    assert_eq!(ds["document_count"], 4);
    assert!(ds["chunk_count"].as_i64().unwrap() > 0, "{ds}");
    let by_name = get(&env, "/api/v1/chats?name=sdk%20chat").await;
    assert_eq!(by_name["data"][0]["id"], id.as_str());

    // Ordering and paging: newest first by default.
    let all = get(&env, "/api/v1/chats").await;
    let names: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bare", "sdk chat", "demo"]);
    let oldest = get(&env, "/api/v1/chats?page=1&page_size=1&desc=false").await;
    assert_eq!(oldest["data"].as_array().unwrap().len(), 1);
    assert_eq!(oldest["data"][0]["name"], "demo");
    let second = get(
        &env,
        "/api/v1/chats?page=2&page_size=1&orderby=create_time&desc=True",
    )
    .await;
    assert_eq!(second["data"][0]["name"], "sdk chat");
    let beyond = get(&env, "/api/v1/chats?page=9&page_size=30").await;
    assert_eq!(beyond, json!({"code": 0, "data": []}));

    // Update: merges llm and prompt, keeps datasets when dataset_ids is absent.
    let upd = put(
        &env,
        &format!("/api/v1/chats/{id}"),
        json!({"name": "renamed", "avatar": "img", "show_quotation": false,
               "llm": {"temperature": 0.5},
               "prompt": {"opener": "Hello there", "keywords_similarity_weight": 0.25, "top_n": 3}}),
    )
    .await;
    assert_eq!(upd, json!({"code": 0}));
    let l = get(&env, &format!("/api/v1/chats?id={id}")).await["data"][0].clone();
    assert_eq!(l["name"], "renamed");
    assert_eq!(l["avatar"], "img");
    assert_eq!(l["do_refer"], "0");
    assert_eq!(l["llm"]["temperature"], 0.5);
    assert_eq!(l["llm"]["top_p"], 0.3);
    assert_eq!(l["llm"]["model_name"], "sim");
    assert_eq!(l["prompt"]["opener"], "Hello there");
    assert_eq!(l["prompt"]["empty_response"], Value::Null);
    assert_eq!(
        l["prompt"]["variables"],
        json!([{"key": "knowledge", "optional": true}])
    );
    assert_eq!(l["prompt"]["keywords_similarity_weight"], 0.25);
    assert_eq!(l["prompt"]["top_n"], 3);
    assert_eq!(l["datasets"][0]["id"], env.dataset_id.as_str());
    assert!(l["update_time"].as_i64() > l["create_time"].as_i64());
    // A new session opens with the new opener.
    let s = post(&env, &format!("/api/v1/chats/{id}/sessions"), json!({})).await;
    assert_eq!(s["data"]["messages"][0]["content"], "Hello there");
    // Same name again (own chat) is fine; model, rerank and datasets can change.
    let upd = put(
        &env,
        &format!("/api/v1/chats/{id}"),
        json!({"name": "renamed", "dataset_ids": [], "llm": {"model_name": "sim-error"},
               "prompt": {"rerank_model": "sim-rerank"}}),
    )
    .await;
    assert_eq!(upd, json!({"code": 0}));
    let l = get(&env, &format!("/api/v1/chats?id={id}")).await["data"][0].clone();
    assert_eq!(l["datasets"], json!([]));
    assert_eq!(l["llm"]["model_name"], "sim-error");
    assert_eq!(l["prompt"]["rerank_model"], "sim-rerank");

    // Delete: soft, and the name is free again.
    let del = delete(&env, "/api/v1/chats", json!({"ids": [id, bare_id]})).await;
    assert_eq!(del, json!({"code": 0}));
    assert_err(
        &get(&env, &format!("/api/v1/chats?id={id}")).await,
        102,
        "The chat doesn't exist",
    );
    let status: String = sqlx::query_scalar("SELECT status FROM chats WHERE id = $1")
        .bind(&id)
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(status, "0");
    let again = post(&env, "/api/v1/chats", json!({"name": "renamed"})).await;
    assert_eq!(again["code"], 0, "{again}");
    env.stop().await;
}

/// Each of RAGFlow's create checks, with its code and message; nothing is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_validations() {
    let env = TestEnv::start(no_workers()).await;
    let before = live_chats(&env).await;

    // A dataset without chunks, and one with chunks but another embedding model.
    let empty_ds = ragq_cli::admin::create_dataset(&env.db, &env.tenant_id, "empty", "sim-embed")
        .await
        .unwrap();
    let local_ds = ragq_cli::admin::create_dataset(&env.db, &env.tenant_id, "local", "local")
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO documents (id, dataset_id, tenant_id, name) VALUES ('doc-local', $1, $2, 'a.txt');
         ",
    )
    .bind(&local_ds)
    .bind(&env.tenant_id)
    .execute(&env.db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO chunks (id, dataset_id, document_id, content, embedding)
         VALUES ('chunk-local', $1, 'doc-local', 'text', '\\x00000000'::bytea)",
    )
    .bind(&local_ds)
    .execute(&env.db)
    .await
    .unwrap();

    let ds = env.dataset_id.clone();
    let cases: Vec<(Value, i64, String)> = vec![
        (
            json!({"name": "x", "dataset_ids": ["nope"]}),
            102,
            "You don't own the dataset nope".into(),
        ),
        // Dataset checks come before the name check, as in RAGFlow.
        (
            json!({"dataset_ids": [ds, "nope"]}),
            102,
            "You don't own the dataset nope".into(),
        ),
        (
            json!({"name": "x", "dataset_ids": [empty_ds]}),
            102,
            format!("The dataset {empty_ds} doesn't own parsed file"),
        ),
        (
            json!({"name": "x", "dataset_ids": [ds, local_ds]}),
            109,
            "Datasets use different embedding models.".into(),
        ),
        (
            json!({"name": "x", "llm": {"model_name": "nope"}}),
            102,
            "`model_name` nope doesn't exist".into(),
        ),
        // An embedding model is not a chat model.
        (
            json!({"name": "x", "llm": {"model_name": "local"}}),
            102,
            "`model_name` local doesn't exist".into(),
        ),
        (
            json!({"name": "x", "prompt": {"rerank_model": "sim"}}),
            102,
            "`rerank_model` sim doesn't exist".into(),
        ),
        (json!({}), 102, "`name` is required.".into()),
        (json!({"name": ""}), 102, "`name` is required.".into()),
        (
            json!({"name": null, "avatar": "a"}),
            102,
            "`name` is required.".into(),
        ),
        (
            json!({"name": "demo"}),
            102,
            "Duplicated chat name in creating chat.".into(),
        ),
        (
            json!({"name": "x", "tenant_id": "t"}),
            102,
            "`tenant_id` must not be provided.".into(),
        ),
        (
            json!({"name": "x", "prompt": {"prompt": "no placeholder"}}),
            102,
            "Parameter 'knowledge' is not used".into(),
        ),
        (
            json!({"name": "x", "prompt": {"prompt": "{knowledge}",
                   "variables": [{"key": "knowledge", "optional": false}, {"key": "lang", "optional": false}]}}),
            102,
            "Parameter 'lang' is not used".into(),
        ),
    ];
    for (body, code, message) in cases {
        let v = post(&env, "/api/v1/chats", body.clone()).await;
        assert_eq!(v["code"], code, "{body} → {v}");
        assert_eq!(v["message"], message.as_str(), "{body} → {v}");
        assert!(v.get("data").is_none() || v["data"].is_null(), "{v}");
    }
    // Optional variables need no placeholder; used ones pass.
    let v = post(
        &env,
        "/api/v1/chats",
        json!({"name": "vars", "prompt": {"prompt": "Answer in {lang}. {knowledge}",
               "variables": [{"key": "knowledge", "optional": false}, {"key": "lang", "optional": false},
                             {"key": "tone", "optional": true}]}}),
    )
    .await;
    assert_eq!(v["code"], 0, "{v}");
    assert_eq!(live_chats(&env).await, before + 1);
    env.stop().await;
}

/// Malformed bodies and parameters get RAGFlow envelopes (101), never a 5xx, and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_an_argument_error() {
    let env = TestEnv::start(no_workers()).await;
    let before = live_chats(&env).await;
    for body in [
        json!({"name": 5}),
        json!({"name": "x", "dataset_ids": "abc"}),
        json!({"name": "x", "dataset_ids": [1, 2]}),
        json!({"name": "x", "llm": "sim"}),
        json!({"name": "x", "llm": {"temperature": "hot"}}),
        json!({"name": "x", "llm": {"max_tokens": -1}}),
        json!({"name": "x", "prompt": "be nice"}),
        json!({"name": "x", "prompt": {"top_n": "6"}}),
        json!({"name": "x", "prompt": {"top_k": 1e20}}),
        json!({"name": "x", "prompt": {"similarity_threshold": 1.5}}),
        json!({"name": "x", "prompt": {"keywords_similarity_weight": -0.1}}),
        json!({"name": "x", "prompt": {"variables": "knowledge"}}),
        json!({"name": "x", "prompt": {"opener": ["hi"]}}),
        json!(["not", "an", "object"]),
    ] {
        let v = post(&env, "/api/v1/chats", body.clone()).await;
        assert_eq!(v["code"], 101, "{body} → {v}");
        let v = put(
            &env,
            &format!("/api/v1/chats/{}", env.chat_id),
            body.clone(),
        )
        .await;
        assert_eq!(v["code"], 101, "{body} → {v}");
    }
    // Not JSON at all.
    for (method, path) in [
        (Method::POST, "/api/v1/chats".to_string()),
        (Method::PUT, format!("/api/v1/chats/{}", env.chat_id)),
        (Method::DELETE, "/api/v1/chats".to_string()),
    ] {
        let resp = env
            .http
            .request(method, format!("{}{path}", env.url))
            .header("Authorization", env.auth())
            .body("{\"name\": ")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["code"], 101, "{v}");
    }
    // Larger than RAGQ_MAX_BODY_BYTES (1 MiB), streamed without a length: envelope, no 5xx.
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(2 << 20));
    let stream = futures::stream::iter(
        big.into_bytes()
            .chunks(64 << 10)
            .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let resp = env
        .http
        .post(format!("{}/api/v1/chats", env.url))
        .header("Authorization", env.auth())
        // The server answers before reading the whole body and then closes the connection:
        // keep it out of the client's pool, or the next request may be sent on it.
        .header("Connection", "close")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], 101, "{v}");
    // … and with a Content-Length, refused before the handler runs: still the envelope.
    let resp = env
        .http
        .post(format!("{}/api/v1/chats", env.url))
        .header("Authorization", env.auth())
        .header("Connection", "close")
        .body(format!("{{\"name\": \"{}\"}}", "x".repeat(2 << 20)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], 101, "{v}");
    // A known path with a verb it does not serve.
    let v = get(&env, &format!("/api/v1/chats/{}", env.chat_id)).await;
    assert_eq!(v["code"], 405, "{v}");
    // Bad query parameters.
    for q in ["page=x", "page_size=-1", "orderby=name", "page=1.5"] {
        let v = get(&env, &format!("/api/v1/chats?{q}")).await;
        assert_eq!(v["code"], 101, "{q} → {v}");
    }
    for body in [json!({"ids": "abc"}), json!({"ids": [1]})] {
        let v = delete(&env, "/api/v1/chats", body.clone()).await;
        assert_eq!(v["code"], 101, "{body} → {v}");
    }
    assert_eq!(live_chats(&env).await, before);
    env.stop().await;
}

/// PUT and DELETE errors, partial deletes and the ids-less delete that deletes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_and_delete_errors() {
    let env = TestEnv::start(no_workers()).await;
    let other = post(&env, "/api/v1/chats", json!({"name": "taken"})).await["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/v1/chats/{}", env.chat_id);

    assert_err(
        &put(&env, "/api/v1/chats/nope", json!({"name": "y"})).await,
        102,
        "You do not own the chat",
    );
    for (body, code, message) in [
        (json!({"name": ""}), 102, "`name` cannot be empty."),
        (
            json!({"name": "taken"}),
            102,
            "Duplicated chat name in updating chat.",
        ),
        (
            json!({"llm": {"model_name": "nope"}}),
            102,
            "`model_name` nope doesn't exist",
        ),
        (
            json!({"prompt": {"rerank_model": "nope"}}),
            102,
            "`rerank_model` nope doesn't exist",
        ),
        (
            json!({"dataset_ids": ["nope"]}),
            102,
            "You don't own the dataset nope",
        ),
        (
            json!({"tenant_id": "someone"}),
            102,
            "`tenant_id` must not be provided.",
        ),
        (
            json!({"prompt": {"prompt": "no knowledge here"}}),
            102,
            "Parameter 'knowledge' is not used",
        ),
    ] {
        let v = put(&env, &path, body.clone()).await;
        assert_eq!(v["code"], code, "{body} → {v}");
        assert_eq!(v["message"], message, "{body} → {v}");
    }
    // Nothing above changed the chat.
    let demo = get(&env, &format!("/api/v1/chats?id={}", env.chat_id)).await["data"][0].clone();
    assert_eq!(demo["name"], "demo");
    assert_eq!(demo["llm"]["model_name"], "sim");
    assert_eq!(demo["prompt"]["rerank_model"], "sim-rerank");
    assert_eq!(demo["prompt"]["prompt"], chat_defaults::SYSTEM_PROMPT);
    assert_eq!(demo["datasets"][0]["id"], env.dataset_id.as_str());
    // Renaming a chat to its own name is fine.
    assert_eq!(
        put(&env, &path, json!({"name": "demo"})).await,
        json!({"code": 0})
    );

    // Deleting with no ids deletes nothing (deviation from RAGFlow's "delete all").
    let before = live_chats(&env).await;
    for body in [json!({}), json!({"ids": null}), json!({"ids": []})] {
        let v = delete(&env, "/api/v1/chats", body.clone()).await;
        assert_eq!(v["code"], 102, "{body} → {v}");
        assert!(
            v["message"].as_str().unwrap().contains("`ids` is required"),
            "{v}"
        );
    }
    let resp = env
        .http
        .delete(format!("{}/api/v1/chats", env.url))
        .header("Authorization", env.auth())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], 102);
    assert_eq!(live_chats(&env).await, before);

    assert_err(
        &delete(&env, "/api/v1/chats", json!({"ids": ["nope"]})).await,
        102,
        "Assistant(nope) not found.",
    );
    assert_err(
        &delete(&env, "/api/v1/chats", json!({"ids": ["a", "b"]})).await,
        102,
        "Assistant(a) not found.; Assistant(b) not found.",
    );
    let partial = delete(&env, "/api/v1/chats", json!({"ids": [other, "nope"]})).await;
    assert_eq!(
        partial,
        json!({"code": 0, "data": {"success_count": 1, "errors": ["Assistant(nope) not found."]}})
    );
    // Deleted already → not found.
    assert_err(
        &delete(&env, "/api/v1/chats", json!({"ids": [other]})).await,
        102,
        &format!("Assistant({other}) not found."),
    );
    assert_err(
        &put(
            &env,
            &format!("/api/v1/chats/{other}"),
            json!({"name": "z"}),
        )
        .await,
        102,
        "You do not own the chat",
    );
    let dup = delete(
        &env,
        "/api/v1/chats",
        json!({"ids": [env.chat_id, env.chat_id]}),
    )
    .await;
    assert_eq!(
        dup,
        json!({"code": 0, "data": {"success_count": 1,
               "errors": [format!("Duplicate assistant ids: {}", env.chat_id)]}})
    );
    assert_eq!(live_chats(&env).await, before - 2);
    env.stop().await;
}

/// A second tenant sees none of the first tenant's chats and changes nothing, on every verb.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_tenant_is_isolated() {
    let env = TestEnv::start(no_workers()).await;
    let other = ragq_cli::admin::create_tenant(&env.db, "other")
        .await
        .unwrap();
    let key = other.api_key.as_str();
    let chat_path = format!("/api/v1/chats/{}", env.chat_id);

    let v = call(&env, key, Method::GET, "/api/v1/chats", None).await;
    assert_eq!(v, json!({"code": 0, "data": []}));
    let v = call(
        &env,
        key,
        Method::GET,
        &format!("/api/v1/chats?id={}", env.chat_id),
        None,
    )
    .await;
    assert_err(&v, 102, "The chat doesn't exist");
    let v = call(&env, key, Method::GET, "/api/v1/chats?name=demo", None).await;
    assert_err(&v, 102, "The chat doesn't exist");

    let v = call(
        &env,
        key,
        Method::PUT,
        &chat_path,
        Some(json!({"name": "hijacked"})),
    )
    .await;
    assert_err(&v, 102, "You do not own the chat");
    let body = json!({"ids": [env.chat_id]});
    let v = call(&env, key, Method::DELETE, "/api/v1/chats", Some(body)).await;
    assert_err(&v, 102, &format!("Assistant({}) not found.", env.chat_id));

    // The other tenant cannot use the first tenant's dataset or models.
    let body = json!({"name": "mine", "dataset_ids": [env.dataset_id]});
    let v = call(&env, key, Method::POST, "/api/v1/chats", Some(body)).await;
    assert_err(
        &v,
        102,
        &format!("You don't own the dataset {}", env.dataset_id),
    );
    let body = json!({"name": "mine", "llm": {"model_name": "sim"}});
    let v = call(&env, key, Method::POST, "/api/v1/chats", Some(body)).await;
    assert_err(&v, 102, "`model_name` sim doesn't exist");
    let v = call(
        &env,
        key,
        Method::POST,
        "/api/v1/chats",
        Some(json!({"name": "mine"})),
    )
    .await;
    assert_err(
        &v,
        102,
        "`llm.model_name` is required: the tenant has no chat model.",
    );

    // With its own model it may reuse the name "demo": names are unique per tenant.
    sqlx::query(
        "INSERT INTO models (tenant_id, name, kind, provider, model) VALUES ($1, 'own', 'chat', 'openai', 'own')",
    )
    .bind(&other.tenant_id)
    .execute(&env.db)
    .await
    .unwrap();
    let v = call(
        &env,
        key,
        Method::POST,
        "/api/v1/chats",
        Some(json!({"name": "demo"})),
    )
    .await;
    assert_eq!(v["code"], 0, "{v}");
    assert_eq!(v["data"]["llm"]["model_name"], "own");
    let theirs = v["data"]["id"].as_str().unwrap().to_string();

    // The first tenant's chat is untouched and the second tenant's chat is invisible to it.
    let mine = get(&env, "/api/v1/chats").await;
    let ids: Vec<&str> = mine["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [env.chat_id.as_str()]);
    assert_eq!(mine["data"][0]["name"], "demo");
    assert_eq!(mine["data"][0]["status"], "1");
    assert_err(
        &put(
            &env,
            &format!("/api/v1/chats/{theirs}"),
            json!({"name": "x"}),
        )
        .await,
        102,
        "You do not own the chat",
    );
    assert_err(
        &delete(&env, "/api/v1/chats", json!({"ids": [theirs]})).await,
        102,
        &format!("Assistant({theirs}) not found."),
    );
    env.stop().await;
}
