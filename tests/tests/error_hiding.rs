//! Internal errors never reach clients (issue 10, item 4), end to end through the real api,
//! queue and worker.
//!
//! A small upstream started here answers every request with HTTP 500 (or 429 under
//! `/ratelimited/`) and a body holding a secret-looking key, behind a distinctive URL path. Every
//! way a client can see a failure — the RAGFlow stream and non-stream answers, the OpenAI stream
//! and non-stream answers, a retrieval, a failed document parse's `progress_msg` — must show a
//! fixed message with an error id and nothing of the body, the secret or the URL. The worker's
//! log (captured from the in-process workers through a global tracing subscriber) must hold the
//! same error id next to the upstream's status and body.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{StatusCode, Uri};
use ragq_cli::admin;
use ragq_tests::{EnvOptions, TestEnv, parse_sse};
use serde_json::{Value, json};

const SECRET: &str = "sk-live-SECRET123abcDEF456ghi";
/// The upstream's distinctive base path.
const PATH: &str = "/private-gw-7f3a";
const QUESTION: &str = "What is the delivery limit?";

fn upstream_body() -> String {
    format!(
        r#"{{"error": {{"message": "Incorrect API key provided: {SECRET}", "type": "invalid_request_error"}}}}"#
    )
}

/// Everything every test's tracing events wrote (all tests of this binary share it).
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().map_or(Ok(buf.len()), |mut l| {
            l.extend_from_slice(buf);
            Ok(buf.len())
        })
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber (once per process; `TestEnv`'s own is then a no-op).
fn capture_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info,sqlx=warn,lapin=warn")
        .with_ansi(false)
        .with_writer(|| Capture)
        .try_init();
}

/// The captured log lines that mention `needle`.
fn log_lines_with(needle: &str) -> Vec<String> {
    let logs = LOGS.lock().map(|l| l.clone()).unwrap_or_default();
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Starts the failing upstream on 127.0.0.1:0; returns its base URL (`http://addr/private-gw-7f3a`).
async fn failing_upstream() -> String {
    let app = axum::Router::new().fallback(|uri: Uri| async move {
        let status = if uri.path().contains("/ratelimited/") {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        (
            status,
            [("content-type", "application/json")],
            upstream_body(),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}{PATH}")
}

/// A base URL on which nothing listens (connection refused).
async fn closed_base() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}{PATH}/v1")
}

async fn add_model(env: &TestEnv, kind: &str, name: &str, base_url: &str) {
    let spec = admin::NewModel {
        name,
        kind,
        provider: "openai",
        base_url,
        model: "m",
        api_key: "sk-test-key",
        max_tokens: 8192,
    };
    admin::put_model(&env.db, &env.secrets, &env.tenant_id, &spec)
        .await
        .expect("model");
}

/// Asserts `text` (anything a client received) holds nothing of the upstream's answer or URL.
fn assert_hidden(what: &str, text: &str, base: &str) {
    for needle in [
        SECRET,
        "sk-live",
        "Incorrect API key",
        PATH,
        base,
        "127.0.0.1",
        "upstream answered",
        "database error",
    ] {
        assert!(!text.contains(needle), "{what} leaks {needle:?}: {text}");
    }
}

/// The `err_` + 12 hex id in `text`.
fn error_id(what: &str, text: &str) -> String {
    let start = text
        .find("(error id err_")
        .unwrap_or_else(|| panic!("{what} has no error id: {text}"))
        + "(error id ".len();
    let id = &text[start..(start + 16).min(text.len())];
    assert!(
        id.len() == 16 && id[4..].chars().all(|c| c.is_ascii_hexdigit()),
        "{what}: bad error id {id:?} in {text}"
    );
    id.to_string()
}

/// Asserts the worker logged `id` with the upstream's status and body (the detail).
fn assert_logged(id: &str, detail: &[&str]) {
    // The subscriber writes each event as it happens; allow the worker's line a moment.
    let lines = log_lines_with(id);
    let worker: Vec<&String> = lines.iter().filter(|l| l.contains("ragq_worker")).collect();
    assert!(
        !worker.is_empty(),
        "no worker log line with {id}: {lines:?}"
    );
    for d in detail {
        assert!(
            worker.iter().any(|l| l.contains(d)),
            "the worker's log for {id} lacks {d:?}: {worker:?}"
        );
    }
}

async fn openai(env: &TestEnv, chat: &str, stream: bool) -> (u16, String) {
    env.post(
        &format!("/api/v1/chats_openai/{chat}/chat/completions"),
        json!({"model": "m", "messages": [{"role": "user", "content": QUESTION}], "stream": stream}),
    )
    .await
}

/// The OpenAI stream's `**ERROR**` chunk content.
fn openai_error_chunk(body: &str) -> String {
    let events: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter(|d| d.trim() != "[DONE]")
        .map(|d| serde_json::from_str(d.trim()).expect("chunk json"))
        .collect();
    events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .find(|c| c.starts_with("**ERROR**: "))
        .unwrap_or_else(|| panic!("no error chunk in {body}"))
        .to_string()
}

const BOUNDARY: &str = "ragq-error-hiding-boundary";

/// Uploads one markdown document; returns its id.
async fn upload(env: &TestEnv, dataset: &str) -> String {
    let body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.md\"\r\n\
         Content-Type: text/markdown\r\n\r\n# Lamps\n\nThe keeper cleans the lamp every Tuesday.\r\n\
         --{BOUNDARY}--\r\n"
    );
    let resp = env
        .http
        .post(format!("{}/api/v1/datasets/{dataset}/documents", env.url))
        .header("Authorization", env.auth())
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .header("Connection", "close")
        .body(body)
        .send()
        .await
        .expect("upload");
    let v: Value = resp.json().await.expect("upload json");
    assert_eq!(v["code"], 0, "{v}");
    v["data"][0]["id"].as_str().expect("doc id").to_string()
}

/// Polls the documents list until `doc` leaves `RUNNING`; returns the document.
async fn settled(env: &TestEnv, dataset: &str, doc: &str) -> Value {
    let started = Instant::now();
    loop {
        let resp = env
            .http
            .get(format!(
                "{}/api/v1/datasets/{dataset}/documents?id={doc}",
                env.url
            ))
            .header("Authorization", env.auth())
            .send()
            .await
            .expect("documents");
        let v: Value = resp.json().await.expect("documents json");
        let d = v["data"]["docs"][0].clone();
        if d["run"] != "RUNNING" && d["run"] != "UNSTART" {
            return d;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An upstream answering 500 with a secret in its body: every client-visible failure shows a
/// fixed message and an error id, and the worker logs that id with the status and the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_reach_clients_only_as_a_code_and_an_error_id() {
    capture_logs();
    let env = TestEnv::start(EnvOptions::default()).await;
    let base = failing_upstream().await;
    add_model(&env, "chat", "leaky-llm", &format!("{base}/v1")).await;
    add_model(&env, "embedding", "leaky-embed", &format!("{base}/v1")).await;
    let chat = env.chat_with_model("leaky", "leaky-llm").await;
    let session = env.create_session(&chat).await;
    let detail = ["upstream answered 500", SECRET];
    let fixed = "the model service returned an error (error id ";

    // (a) RAGFlow stream: one error event, then the end line.
    let (status, body) = env
        .post(
            &format!("/api/v1/chats/{chat}/completions"),
            json!({"question": QUESTION, "stream": true, "session_id": session}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_hidden("RAGFlow stream", &body, &base);
    let events = parse_sse(&body);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["code"], 500);
    let message = events[0]["message"].as_str().expect("message");
    assert!(message.starts_with(fixed), "{message}");
    assert_eq!(
        events[0]["data"]["answer"],
        format!("**ERROR**: {message}").as_str()
    );
    let id = error_id("RAGFlow stream", &body);
    assert_logged(&id, &detail);

    // (b) RAGFlow non-stream: code 100.
    let (_, body) = env
        .post(
            &format!("/api/v1/chats/{chat}/completions"),
            json!({"question": QUESTION, "stream": false, "session_id": session}),
        )
        .await;
    assert_hidden("RAGFlow non-stream", &body, &base);
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["code"], 100, "{v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(&format!("**ERROR**: {fixed}"))),
        "{v}"
    );
    assert_logged(&error_id("RAGFlow non-stream", &body), &detail);

    // (c) OpenAI stream (an error chunk) and non-stream (HTTP 502, `upstream_error`).
    let (status, body) = openai(&env, &chat, true).await;
    assert_eq!(status, 200, "{body}");
    assert_hidden("OpenAI stream", &body, &base);
    let chunk = openai_error_chunk(&body);
    assert!(chunk.starts_with(&format!("**ERROR**: {fixed}")), "{chunk}");
    assert!(body.trim_end().ends_with("data:[DONE]"), "{body}");
    assert_logged(&error_id("OpenAI stream", &body), &detail);
    let (status, body) = openai(&env, &chat, false).await;
    assert_eq!(status, 502, "{body}");
    assert_hidden("OpenAI non-stream", &body, &base);
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["error"]["type"], "server_error");
    assert_eq!(v["error"]["code"], "upstream_error");
    assert_logged(&error_id("OpenAI non-stream", &body), &detail);

    // (d) A document parse whose embedding model fails: `progress_msg` via the documents API.
    let dataset = admin::create_dataset(&env.db, &env.tenant_id, "leaky", "leaky-embed")
        .await
        .expect("dataset");
    let doc = upload(&env, &dataset).await;
    let (_, started) = env
        .post(
            &format!("/api/v1/datasets/{dataset}/chunks"),
            json!({"document_ids": [doc]}),
        )
        .await;
    assert!(started.contains("\"code\": 0"), "{started}");
    let d = settled(&env, &dataset, &doc).await;
    assert_eq!(d["run"], "FAIL", "{d}");
    let progress_msg = d["progress_msg"].as_str().expect("progress_msg");
    assert!(progress_msg.starts_with(fixed), "{progress_msg}");
    assert_hidden("progress_msg", &d.to_string(), &base);
    assert_logged(&error_id("progress_msg", progress_msg), &detail);

    // A retrieval on that dataset (the ingress waits for its result): code 100.
    let (_, body) = env
        .post(
            "/api/v1/retrieval",
            json!({"question": "lamp", "dataset_ids": [dataset]}),
        )
        .await;
    assert_hidden("retrieval", &body, &base);
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["code"], 100, "{v}");
    assert!(
        v["message"].as_str().is_some_and(|m| m.starts_with(fixed)),
        "{v}"
    );
    assert_logged(&error_id("retrieval", &body), &detail);
    env.stop().await;
}

/// HTTP 429 from the model is `upstream_rate_limited`: OpenAI non-stream answers 429
/// (`rate_limit_error`), the RAGFlow stream says so, the worker logs the 429 and its body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_upstream_is_upstream_rate_limited() {
    capture_logs();
    let env = TestEnv::start(EnvOptions::default()).await;
    let base = failing_upstream().await;
    add_model(
        &env,
        "chat",
        "limited-llm",
        &format!("{base}/ratelimited/v1"),
    )
    .await;
    let chat = env.chat_with_model("limited", "limited-llm").await;
    let session = env.create_session(&chat).await;

    let events = env.ask_stream(&chat, &session, QUESTION).await;
    let message = events[0]["message"].as_str().expect("message").to_string();
    assert!(
        message
            .starts_with("the model service is rate limiting requests; retry later (error id err_"),
        "{events:?}"
    );
    assert_hidden("RAGFlow stream", &message, &base);
    assert_logged(
        &error_id("RAGFlow stream", &message),
        &["upstream answered 429", SECRET, "upstream_rate_limited"],
    );

    let (status, body) = openai(&env, &chat, false).await;
    assert_eq!(status, 429, "{body}");
    assert_hidden("OpenAI non-stream", &body, &base);
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
    assert_eq!(v["error"]["code"], "upstream_rate_limited", "{v}");
    assert_logged(
        &error_id("OpenAI non-stream", &body),
        &["upstream answered 429"],
    );
    env.stop().await;
}

/// Nothing listening at the model's address is `upstream_unavailable` ("could not be reached");
/// the worker logs the connect error, and nobody sees the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_upstream_unavailable() {
    capture_logs();
    let env = TestEnv::start(EnvOptions::default()).await;
    let base = closed_base().await;
    add_model(&env, "chat", "gone-llm", &base).await;
    let chat = env.chat_with_model("gone", "gone-llm").await;
    let session = env.create_session(&chat).await;

    let events = env.ask_stream(&chat, &session, QUESTION).await;
    let message = events[0]["message"].as_str().expect("message").to_string();
    assert!(
        message.starts_with("the model service could not be reached (error id err_"),
        "{events:?}"
    );
    assert_hidden("RAGFlow stream", &message, &base);
    assert_logged(
        &error_id("RAGFlow stream", &message),
        &["upstream unreachable", "upstream_unavailable"],
    );

    let (status, body) = openai(&env, &chat, false).await;
    assert_eq!(status, 502, "{body}");
    assert_hidden("OpenAI non-stream", &body, &base);
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["error"]["code"], "upstream_unavailable", "{v}");
    env.stop().await;
}
