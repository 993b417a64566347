//! The OpenAI Batch API over HTTP, end to end through the real batch lane and workers: upload →
//! batch → `completed` → output (every custom_id once, answers citing job-queue.md); cancel
//! mid-run; a malformed file → `failed` with line numbers; another tenant sees nothing; a worker
//! killed with SIGKILL mid-batch loses and doubles nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ragq_tests::{EnvOptions, TestEnv};
use reqwest::Method;
use serde_json::{Value, json};

const BOUNDARY: &str = "ragq-batch-boundary-7c1e";
const QUESTION: &str = "What is the delivery limit of the job queue?";

fn line(custom_id: &str, reference: bool) -> Value {
    let mut body = json!({"model": "ragq", "messages": [{"role": "user", "content": QUESTION}]});
    if reference {
        body["reference"] = json!(true);
    } else {
        body["extra_body"] = json!({"reference": true});
    }
    json!({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})
}

fn jsonl(lines: &[Value]) -> Vec<u8> {
    lines
        .iter()
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .into_bytes()
}

async fn call(
    env: &TestEnv,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut rb = env
        .http
        .request(method, format!("{}{path}", env.url))
        .header("Authorization", format!("Bearer {key}"));
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let resp = rb.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn upload(env: &TestEnv, key: &str, chat: &str, content: &[u8]) -> (u16, Value) {
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n").as_bytes());
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let resp = env
        .http
        .post(format!("{}/api/v1/chats_openai/{chat}/files", env.url))
        .header("Authorization", format!("Bearer {key}"))
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .expect("upload");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"))
}

async fn start_batch(env: &TestEnv, chat: &str, content: &[u8]) -> Value {
    let (status, file) = upload(env, &env.api_key, chat, content).await;
    assert_eq!(status, 200, "{file}");
    assert_eq!(file["purpose"], "batch");
    let (status, batch) = call(
        env,
        &env.api_key,
        Method::POST,
        &format!("/api/v1/chats_openai/{chat}/batches"),
        Some(
            json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                    "completion_window": "24h", "metadata": {"run": "test"}}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{batch}");
    batch
}

async fn get_batch(env: &TestEnv, chat: &str, id: &str) -> Value {
    let (status, b) = call(
        env,
        &env.api_key,
        Method::GET,
        &format!("/api/v1/chats_openai/{chat}/batches/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{b}");
    b
}

async fn wait_for(
    env: &TestEnv,
    chat: &str,
    id: &str,
    statuses: &[&str],
    limit: Duration,
) -> Value {
    let started = Instant::now();
    loop {
        let b = get_batch(env, chat, id).await;
        if statuses.contains(&b["status"].as_str().unwrap_or("")) {
            return b;
        }
        assert!(started.elapsed() < limit, "batch still {b}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn content(env: &TestEnv, chat: &str, file: &str) -> Vec<Value> {
    let resp = env
        .http
        .get(format!(
            "{}/api/v1/chats_openai/{chat}/files/{file}/content",
            env.url
        ))
        .header("Authorization", env.auth())
        .send()
        .await
        .expect("content");
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.expect("text");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("jsonl line"))
        .collect()
}

/// custom_id → number of output lines carrying it.
fn counts(lines: &[Value]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for l in lines {
        *out.entry(l["custom_id"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_runs_to_completed_with_cited_answers() {
    let env = TestEnv::start(EnvOptions::default()).await;
    let chat = env.chat_id.clone();
    let lines: Vec<Value> = (0..20)
        .map(|i| line(&format!("q-{i}"), i % 2 == 0))
        .collect();
    let started = Instant::now();
    let batch = start_batch(&env, &chat, &jsonl(&lines)).await;
    assert_eq!(batch["object"], "batch");
    assert_eq!(batch["status"], "in_progress");
    assert_eq!(batch["request_counts"]["total"], 20);
    assert_eq!(batch["metadata"]["run"], "test");
    let id = batch["id"].as_str().unwrap().to_string();
    let done = wait_for(
        &env,
        &chat,
        &id,
        &["completed", "failed"],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["request_counts"],
        json!({"total": 20, "completed": 20, "failed": 0})
    );
    assert!(done["completed_at"].is_i64() && done["finalizing_at"].is_i64());
    assert!(done["error_file_id"].is_null());
    let out = content(&env, &chat, done["output_file_id"].as_str().unwrap()).await;
    assert_eq!(out.len(), 20);
    let c = counts(&out);
    assert!(
        (0..20).all(|i| c.get(&format!("q-{i}")) == Some(&1)),
        "{c:?}"
    );
    for l in &out {
        assert_eq!(l["response"]["status_code"], 200, "{l}");
        assert!(l["error"].is_null());
        let body = &l["response"]["body"];
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["model"], "ragq");
        let msg = &body["choices"][0]["message"];
        assert!(
            msg["content"]
                .as_str()
                .unwrap_or("")
                .contains("delivery limit of the job queue"),
            "{msg}"
        );
        assert_eq!(
            msg["reference"][0]["document_name"], "job-queue.md",
            "{msg}"
        );
    }
    println!("batch of 20 completed in {:?}", started.elapsed());

    // The output file is listed and described; the list pages with `after`.
    let (_, files) = call(
        &env,
        &env.api_key,
        Method::GET,
        &format!("/api/v1/chats_openai/{chat}/files?limit=1"),
        None,
    )
    .await;
    assert_eq!(files["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(files["has_more"], true);
    let (_, page2) = call(
        &env,
        &env.api_key,
        Method::GET,
        &format!(
            "/api/v1/chats_openai/{chat}/files?limit=10&after={}",
            files["last_id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(page2["data"].as_array().map(Vec::len), Some(1), "{page2}");
    let (_, list) = call(
        &env,
        &env.api_key,
        Method::GET,
        &format!("/api/v1/chats_openai/{chat}/batches"),
        None,
    )
    .await;
    assert_eq!(list["data"][0]["id"], id.as_str());

    // Another tenant sees neither the batch nor its files, and cannot cancel.
    let other = ragq_cli::admin::create_tenant(&env.db, "other")
        .await
        .expect("tenant");
    let k = &other.api_key;
    for path in [
        format!("/api/v1/chats_openai/{chat}/batches/{id}"),
        format!(
            "/api/v1/chats_openai/{chat}/files/{}",
            done["output_file_id"].as_str().unwrap()
        ),
        format!(
            "/api/v1/chats_openai/{chat}/files/{}/content",
            done["output_file_id"].as_str().unwrap()
        ),
        format!(
            "/api/v1/chats_openai/{chat}/files/{}",
            done["input_file_id"].as_str().unwrap()
        ),
    ] {
        let (status, body) = call(&env, k, Method::GET, &path, None).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    let (status, _) = call(
        &env,
        k,
        Method::POST,
        &format!("/api/v1/chats_openai/{chat}/batches/{id}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (_, theirs) = call(
        &env,
        k,
        Method::GET,
        &format!("/api/v1/chats_openai/{chat}/files"),
        None,
    )
    .await;
    assert_eq!(theirs["data"], json!([]));
    // Nor can it run a batch of this tenant's file or on this tenant's chat.
    let (status, _) = call(&env, k, Method::POST, &format!("/api/v1/chats_openai/{chat}/batches"),
        Some(json!({"input_file_id": done["input_file_id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}))).await;
    assert_eq!(status, 404);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_files_and_requests_are_openai_errors() {
    let env = TestEnv::start(EnvOptions::default()).await;
    let chat = env.chat_id.clone();
    let key = env.api_key.clone();
    // Upload-time checks: duplicate custom_id, not JSON, no custom_id.
    let dup = jsonl(&[line("a", true), line("b", true), line("a", true)]);
    let (status, e) = upload(&env, &key, &chat, &dup).await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["error"]["code"], "duplicate_custom_id");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("Line 3"),
        "{e}"
    );
    let (status, e) = upload(&env, &key, &chat, b"{\"custom_id\":\"a\"}\nnot json\n").await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("invalid_file")),
        "{e}"
    );

    // Batch-time validation: line-numbered errors, status failed, nothing runs.
    let mut wrong_url = line("b", true);
    wrong_url["url"] = json!("/v1/embeddings");
    let mut no_messages = line("c", true);
    no_messages["body"]["messages"] = json!([]);
    let bad = jsonl(&[line("a", true), wrong_url, no_messages]);
    let batch = start_batch(&env, &chat, &bad).await;
    assert_eq!(batch["status"], "failed", "{batch}");
    assert!(batch["failed_at"].is_i64());
    let errors = &batch["errors"];
    assert_eq!(errors["object"], "list");
    assert_eq!(errors["data"][0]["line"], 2);
    assert_eq!(errors["data"][0]["code"], "invalid_url");
    assert_eq!(errors["data"][0]["param"], "url");
    assert_eq!(errors["data"][1]["line"], 3);
    assert_eq!(errors["data"][1]["param"], "messages");
    assert_eq!(batch["request_counts"]["total"], 0);

    // Request errors.
    let base = format!("/api/v1/chats_openai/{chat}/batches");
    let (status, e) = call(&env, &key, Method::POST, &base, Some(json!({"input_file_id": "file-nope", "endpoint": "/v1/chat/completions", "completion_window": "24h"}))).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, e) = call(
        &env,
        &key,
        Method::POST,
        &base,
        Some(
            json!({"input_file_id": "x", "endpoint": "/v1/embeddings", "completion_window": "24h"}),
        ),
    )
    .await;
    assert_eq!(
        (status, e["error"]["param"].as_str()),
        (400, Some("endpoint"))
    );
    let (status, e) = call(&env, &key, Method::POST, &base, Some(json!({"input_file_id": "x", "endpoint": "/v1/chat/completions", "completion_window": "1h"}))).await;
    assert_eq!(
        (status, e["error"]["param"].as_str()),
        (400, Some("completion_window"))
    );
    let (status, e) = call(&env, "nope", Method::GET, &base, None).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let (status, _) = call(&env, &key, Method::GET, &format!("{base}/batch_nope"), None).await;
    assert_eq!(status, 404);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_mid_run_keeps_partial_results() {
    let env = TestEnv::start(EnvOptions::default()).await;
    // ~3 s per answer: with 4 lines per tenant at once, 20 lines take ~15 s.
    let chat = env.chat_with_model("slow", "sim-slow").await;
    let lines: Vec<Value> = (0..20).map(|i| line(&format!("c-{i}"), true)).collect();
    let batch = start_batch(&env, &chat, &jsonl(&lines)).await;
    let id = batch["id"].as_str().unwrap().to_string();
    // Wait for the first answers, then cancel.
    let started = Instant::now();
    loop {
        let b = get_batch(&env, &chat, &id).await;
        if b["request_counts"]["completed"].as_i64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, c) = call(
        &env,
        &env.api_key,
        Method::POST,
        &format!("/api/v1/chats_openai/{chat}/batches/{id}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{c}");
    assert!(
        matches!(c["status"].as_str(), Some("cancelling" | "cancelled")),
        "{c}"
    );
    let end = wait_for(&env, &chat, &id, &["cancelled"], Duration::from_secs(30)).await;
    assert!(end["cancelled_at"].is_i64() && end["cancelling_at"].is_i64());
    let completed = end["request_counts"]["completed"].as_i64().unwrap();
    assert!((1..20).contains(&completed), "{end}");
    let out = content(&env, &chat, end["output_file_id"].as_str().unwrap()).await;
    assert_eq!(out.len() as i64, completed);
    assert!(counts(&out).values().all(|&n| n == 1));
    // Nothing runs after the end: the counters stay.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later = get_batch(&env, &chat, &id).await;
    assert_eq!(later["request_counts"], end["request_counts"]);
    let (status, _) = call(
        &env,
        &env.api_key,
        Method::POST,
        &format!("/api/v1/chats_openai/{chat}/batches/{id}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, 200, "cancelling a cancelled batch is a no-op");
    println!("cancelled with {completed}/20 answered");
    env.stop().await;
}

/// Waits until `n` consumers read the batch lane.
async fn wait_for_batch_consumers(env: &TestEnv, n: u32) {
    let conn = lapin::Connection::connect(
        &ragq_tests::amqp_url(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("amqp");
    let ch = conn.create_channel().await.expect("channel");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let q = ch
            .queue_declare(
                format!("{}.jobs.batch", env.queue_prefix).into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .expect("declare");
        if q.consumer_count() >= n {
            break;
        }
        assert!(Instant::now() < deadline, "workers never consumed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = conn.close(200, "done".into()).await;
}

/// kill -9 of one of two worker processes while it answers batch lines: its unacked lines are
/// redelivered, claimed again and answered once; the output has every custom_id exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_killed_mid_batch_loses_and_doubles_nothing() {
    let env = TestEnv::start(EnvOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let chat = env.chat_with_model("slow", "sim-slow").await;
    let mut victim = env.spawn_worker_process("victim");
    let mut survivor = env.spawn_worker_process("survivor");
    wait_for_batch_consumers(&env, 2).await;
    let lines: Vec<Value> = (0..20).map(|i| line(&format!("k-{i}"), true)).collect();
    let batch = start_batch(&env, &chat, &jsonl(&lines)).await;
    let id = batch["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    victim.kill().expect("SIGKILL");
    let _ = victim.wait();
    let end = wait_for(&env, &chat, &id, &["completed"], Duration::from_secs(120)).await;
    assert_eq!(
        end["request_counts"],
        json!({"total": 20, "completed": 20, "failed": 0}),
        "{end}"
    );
    let out = content(&env, &chat, end["output_file_id"].as_str().unwrap()).await;
    assert_eq!(out.len(), 20);
    let c = counts(&out);
    assert!(
        (0..20).all(|i| c.get(&format!("k-{i}")) == Some(&1)),
        "{c:?}"
    );
    let attempts: Vec<i32> =
        sqlx::query_scalar("SELECT attempts FROM batch_lines WHERE batch_id = $1")
            .bind(&id)
            .fetch_all(&env.db)
            .await
            .expect("attempts");
    let retried = attempts.iter().filter(|&&a| a > 1).count();
    println!(
        "kill -9 mid-batch: 20/20 answered once, {retried} lines claimed again after the kill"
    );
    assert!(
        retried >= 1,
        "the victim held lines when it died: {attempts:?}"
    );
    survivor.kill().expect("kill");
    let _ = survivor.wait();
    env.stop().await;
}
