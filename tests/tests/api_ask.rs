//! Dataset-level model jobs through the real queue and workers: `POST /api/v1/sessions/ask`
//! (streamed, cited, nothing saved), `POST /api/v1/sessions/related_questions` (a parsed list)
//! and `POST /api/v1/sessions/mindmap` (nested JSON); RAGFlow's validation messages and tenant
//! isolation on each.

use ragq_tests::{EnvOptions, TestEnv, parse_sse};
use serde_json::{Value, json};

const QUESTION: &str = "What is the delivery limit of the job queue?";

fn body(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// A second tenant with a dataset of its own (no chunks needed: ownership is checked first).
async fn other_tenant_dataset(env: &TestEnv) -> String {
    let other = ragq_cli::admin::create_tenant(&env.db, "other")
        .await
        .unwrap();
    let id = uuid::Uuid::new_v4().simple().to_string();
    sqlx::query(
        "INSERT INTO datasets (id, tenant_id, name, embedding_model) VALUES ($1, $2, 'theirs', 'sim-embed')",
    )
    .bind(&id)
    .bind(&other.tenant_id)
    .execute(&env.db)
    .await
    .unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_streams_a_cited_answer_and_saves_nothing() {
    let env = TestEnv::start(EnvOptions::default()).await;
    let (status, text) = env
        .post(
            "/api/v1/sessions/ask",
            json!({"question": QUESTION, "dataset_ids": [env.dataset_id]}),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let events = parse_sse(&text);
    assert!(events.len() >= 3, "{events:?}");
    assert_eq!(events.last().unwrap(), &json!({"code": 0, "data": true}));
    let partials = &events[..events.len() - 2];
    for e in partials {
        assert_eq!(e["code"], 0);
        assert_eq!(e["message"], "");
        assert_eq!(e["data"]["reference"], json!({}));
    }
    for pair in partials.windows(2) {
        let (a, b) = (
            pair[0]["data"]["answer"].as_str().unwrap(),
            pair[1]["data"]["answer"].as_str().unwrap(),
        );
        assert!(b.starts_with(a), "answers must be cumulative: {a:?} {b:?}");
    }
    let last = &events[events.len() - 2]["data"];
    let answer = last["answer"].as_str().unwrap();
    assert!(
        answer.contains("delivery limit of the job queue is five attempts"),
        "{answer}"
    );
    assert!(answer.contains("[ID:0]"), "{answer}");
    assert_eq!(
        last["reference"]["chunks"][0]["document_name"],
        "job-queue.md"
    );
    assert_eq!(last["reference"]["doc_aggs"][0]["doc_name"], "job-queue.md");
    // Nothing saved to a session.
    let (sessions, turns): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM turns)")
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!((sessions, turns), (0, 0));

    // RAGFlow's validation, code 102, nothing streamed.
    let theirs = other_tenant_dataset(&env).await;
    let empty = ragq_cli::admin::create_dataset(&env.db, &env.tenant_id, "empty", "sim-embed")
        .await
        .unwrap();
    for (req, message) in [
        (
            json!({"dataset_ids": [env.dataset_id]}),
            "`question` is required.".to_string(),
        ),
        (
            json!({"question": "", "dataset_ids": [env.dataset_id]}),
            "`question` is required.".into(),
        ),
        (
            json!({"question": QUESTION}),
            "`dataset_ids` is required.".into(),
        ),
        (
            json!({"question": QUESTION, "dataset_ids": []}),
            "`dataset_ids` is required.".into(),
        ),
        (
            json!({"question": QUESTION, "dataset_ids": env.dataset_id}),
            "`dataset_ids` should be a list.".into(),
        ),
        (
            json!({"question": QUESTION, "dataset_ids": [theirs]}),
            format!("You don't own the dataset {theirs}."),
        ),
        (
            json!({"question": QUESTION, "dataset_ids": [empty]}),
            format!("The dataset {empty} doesn't own parsed file"),
        ),
    ] {
        let (status, text) = env.post("/api/v1/sessions/ask", req.clone()).await;
        assert_eq!(status, 200);
        let v = body(&text);
        assert_eq!(v, json!({"code": 102, "message": message}), "{req}");
    }
    let (_, text) = env.post("/api/v1/sessions/ask", json!([1])).await;
    assert_eq!(body(&text)["code"], 101);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn related_questions_are_a_parsed_list() {
    let env = TestEnv::start(EnvOptions::default()).await;
    let (_, text) = env
        .post(
            "/api/v1/sessions/related_questions",
            json!({"question": "job queue"}),
        )
        .await;
    let v = body(&text);
    assert_eq!(v["code"], 0, "{text}");
    assert_eq!(v["message"], "success");
    assert_eq!(
        v["data"],
        json!([
            "job queue overview",
            "job queue examples",
            "job queue best practices",
            "job queue troubleshooting",
            "job queue in production"
        ])
    );
    let (_, text) = env
        .post(
            "/api/v1/sessions/related_questions",
            json!({"question": "retrieval", "industry": "software"}),
        )
        .await;
    assert_eq!(body(&text)["data"][0], "retrieval overview", "{text}");
    for req in [json!({}), json!({"question": ""}), json!({"industry": "x"})] {
        let (_, text) = env.post("/api/v1/sessions/related_questions", req).await;
        assert_eq!(
            body(&text),
            json!({"code": 102, "message": "`question` is required."})
        );
    }
    let (_, text) = env
        .post(
            "/api/v1/sessions/related_questions",
            json!({"question": "q", "industry": 5}),
        )
        .await;
    assert_eq!(body(&text)["code"], 102);
    env.stop().await;
}

fn assert_tree(node: &Value) {
    assert!(node["id"].is_string(), "{node}");
    for child in node["children"].as_array().expect("children") {
        assert_tree(child);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mindmap_is_nested_json_and_bad_answers_are_clear_errors() {
    let env = TestEnv::start(EnvOptions::default()).await;
    let (_, text) = env
        .post(
            "/api/v1/sessions/mindmap",
            json!({"question": QUESTION, "kb_ids": [env.dataset_id]}),
        )
        .await;
    let v = body(&text);
    assert_eq!(v["code"], 0, "{text}");
    let tree = &v["data"];
    assert_eq!(tree["id"], "root");
    assert_tree(tree);
    let docs: Vec<&str> = tree["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    // Built from the retrieved chunks: the document that answers comes first.
    assert_eq!(docs[0], "job-queue.md", "{tree}");
    assert!(
        !tree["children"][0]["children"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // `dataset_ids` is accepted too.
    let (_, text) = env
        .post(
            "/api/v1/sessions/mindmap",
            json!({"question": QUESTION, "dataset_ids": [env.dataset_id]}),
        )
        .await;
    assert_eq!(body(&text)["data"]["id"], "root", "{text}");

    let theirs = other_tenant_dataset(&env).await;
    for (req, message) in [
        (
            json!({"kb_ids": [env.dataset_id]}),
            "`question` is required.".to_string(),
        ),
        (
            json!({"question": QUESTION}),
            "`kb_ids` is required.".into(),
        ),
        (
            json!({"question": QUESTION, "kb_ids": [theirs]}),
            format!("You don't own the dataset {theirs}."),
        ),
    ] {
        let (_, text) = env.post("/api/v1/sessions/mindmap", req).await;
        assert_eq!(body(&text), json!({"code": 102, "message": message}));
    }

    // A model whose answer is cut to one word: not JSON → a clear error, not a panic.
    let spec = ragq_cli::admin::NewModel {
        name: "sim-short",
        kind: "chat",
        provider: "openai",
        base_url: &env.sim.api_base(),
        model: "sim:tokens=1",
        api_key: "",
        max_tokens: 8192,
    };
    ragq_cli::admin::put_model(&env.db, &env.secrets, &env.tenant_id, &spec)
        .await
        .unwrap();
    sqlx::query("UPDATE models SET is_default = (name = 'sim-short') WHERE tenant_id = $1 AND kind = 'chat'")
        .bind(&env.tenant_id)
        .execute(&env.db)
        .await
        .unwrap();
    let (_, text) = env
        .post(
            "/api/v1/sessions/mindmap",
            json!({"question": QUESTION, "kb_ids": [env.dataset_id]}),
        )
        .await;
    let v = body(&text);
    assert_eq!(v["code"], 102, "{text}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("not a valid mind map"),
        "{text}"
    );
    // The worker is still there: the next question is answered.
    let (_, text) = env
        .post(
            "/api/v1/sessions/related_questions",
            json!({"question": "lanes"}),
        )
        .await;
    assert_eq!(body(&text)["code"], 0, "{text}");
    env.stop().await;
}
