//! End-to-end checks of the simulator over real HTTP (reqwest against `ragq_sim::spawn`).

use std::time::Duration;

use ragq_sim::{SimConfig, SimHandle, StatsSnapshot};
use serde_json::{Value, json};

const KNOWLEDGE: &str = "Answer from the knowledge base.\n\
    ID: 0\n\
    ├── Title: handbook.md\n\
    └── Content:\n\
    Workers pull jobs from the queue and stream tokens back.\n\
    ------\n\
    ID: 1\n\
    ├── Title: faq.md\n\
    └── Content:\n\
    Retries use exponential backoff.\n";

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

async fn sim() -> SimHandle {
    ragq_sim::spawn(SimConfig::fast()).await.expect("spawn sim")
}

fn chat_body(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "stream": stream,
        "stream_options": {"include_usage": true},
        "temperature": 0.1,
        "messages": [
            {"role": "system", "content": KNOWLEDGE},
            {"role": "user", "content": "How do workers get jobs?"}
        ]
    })
}

/// The `data:` payloads of an SSE body.
fn sse_events(body: &str) -> Vec<&str> {
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").expect("data event"))
        .collect()
}

/// Polls the stats until `pred` holds (at most 2 s).
async fn wait_stats(sim: &SimHandle, pred: impl Fn(&StatsSnapshot) -> bool) -> StatsSnapshot {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let s = sim.stats.snapshot();
        if pred(&s) || tokio::time::Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const EXPECTED_SHORT: &str = "According to handbook.md, Workers pull jobs from the queue [ID:0]";

#[tokio::test]
async fn streamed_chat_with_knowledge() {
    let sim = sim().await;
    let resp = client()
        .post(format!("{}/chat/completions", sim.api_base()))
        .json(&chat_body("sim:tokens=10", true))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    let body = resp.text().await.expect("body");
    let events = sse_events(&body);
    assert_eq!(events.last(), Some(&"[DONE]"));

    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("chunk json"))
        .collect();
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(chunks[0]["model"], "sim:tokens=10");
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    let tokens: Vec<&str> = chunks[1..]
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(tokens.len(), 10);
    assert_eq!(tokens[0], "According ");
    assert_eq!(tokens[9], "[ID:0]");
    assert_eq!(tokens.concat(), EXPECTED_SHORT);

    let stop = &chunks[chunks.len() - 2];
    assert_eq!(stop["choices"][0]["finish_reason"], "stop");
    assert_eq!(stop["choices"][0]["delta"], json!({}));
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 10);
    let prompt = usage["usage"]["prompt_tokens"]
        .as_u64()
        .expect("prompt_tokens");
    assert!(prompt > 20, "{prompt}");
    assert_eq!(usage["usage"]["total_tokens"], prompt + 10);

    let s = wait_stats(&sim, |s| s.chat_streams_completed == 1).await;
    assert_eq!((s.chat_requests, s.chat_streams_completed), (1, 1));
    assert_eq!((s.chat_streams_active, s.chat_streams_dropped), (0, 0));
}

#[tokio::test]
async fn non_streamed_chat_gives_the_same_text() {
    let sim = sim().await;
    let resp: Value = client()
        .post(format!("{}/chat/completions", sim.api_base()))
        .json(&chat_body("sim:tokens=10", false))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(resp["object"], "chat.completion");
    assert_eq!(resp["choices"][0]["message"]["content"], EXPECTED_SHORT);
    assert_eq!(resp["choices"][0]["finish_reason"], "stop");
    assert_eq!(resp["usage"]["completion_tokens"], 10);

    // Default length (48) without knowledge: an echo padded to exactly 48 words.
    let resp: Value = client()
        .post(format!("{}/chat/completions", sim.api_base()))
        .json(&json!({"model": "sim", "messages": [{"role": "user", "content": "Hello There"}]}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let text = resp["choices"][0]["message"]["content"]
        .as_str()
        .expect("content");
    assert!(
        text.starts_with("You asked: hello there this simulated"),
        "{text}"
    );
    assert_eq!(text.split(' ').count(), 48);
}

#[tokio::test]
async fn bad_requests_get_openai_errors() {
    let sim = sim().await;
    let c = client();
    for (path, body) in [
        ("chat/completions", "{not json"),
        ("chat/completions", r#"{"model":"sim"}"#),
        ("chat/completions", r#"{"model":"sim","messages":[]}"#),
        ("embeddings", r#"{"model":"sim","input":[]}"#),
        ("embeddings", r#"{"model":"sim","input":[1,2]}"#),
        ("rerank", r#"{"model":"sim","documents":["x"]}"#),
    ] {
        let resp = c
            .post(format!("{}/{path}", sim.api_base()))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 400, "{path} {body}");
        let err: Value = resp.json().await.expect("json");
        assert_eq!(
            err["error"]["type"], "invalid_request_error",
            "{path} {body}"
        );
    }
}

#[tokio::test]
async fn embeddings_are_unit_vectors() {
    let sim = sim().await;
    let resp: Value = client()
        .post(format!("{}/embeddings", sim.api_base()))
        .json(&json!({"model": "sim-embed", "input": ["quorum queue limit", "delivery limit"]}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(resp["object"], "list");
    assert_eq!(resp["model"], "sim-embed");
    assert_eq!(resp["usage"]["prompt_tokens"], 5);
    let data = resp["data"].as_array().expect("data");
    assert_eq!(data.len(), 2);
    for (i, item) in data.iter().enumerate() {
        assert_eq!(item["index"], i);
        let v: Vec<f64> = item["embedding"]
            .as_array()
            .expect("embedding")
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        assert_eq!(v.len(), ragq_common::text::EMBED_DIM);
        let norm: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "{norm}");
    }

    // A single string input works too, and matches the shared embedder exactly.
    let one: Value = client()
        .post(format!("{}/embeddings", sim.api_base()))
        .json(&json!({"model": "sim", "input": "delivery limit"}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let expected = ragq_common::text::hash_embed("delivery limit");
    let got: Vec<f32> = one["data"][0]["embedding"]
        .as_array()
        .expect("embedding")
        .iter()
        .filter_map(Value::as_f64)
        .map(|x| x as f32)
        .collect();
    assert_eq!(got, expected);
    assert_eq!(sim.stats.snapshot().embedding_requests, 2);
}

#[tokio::test]
async fn rerank_orders_by_relevance() {
    let sim = sim().await;
    let docs = json!([
        "PostgreSQL full text search ranking",
        {"text": "The delivery limit of a quorum queue"},
        "Redis streams consumer groups"
    ]);
    let resp: Value = client()
        .post(format!("{}/rerank", sim.api_base()))
        .json(&json!({"model": "sim-rerank", "query": "quorum queue delivery limit", "documents": docs}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let results = resp["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["index"], 1);
    assert_eq!(
        results[0]["document"]["text"],
        "The delivery limit of a quorum queue"
    );
    let scores: Vec<f64> = results
        .iter()
        .filter_map(|r| r["relevance_score"].as_f64())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)), "{scores:?}");
    assert!(scores[0] >= 0.7, "{scores:?}");

    // top_n, return_documents=false, and the /rerank alias.
    let resp: Value = client()
        .post(format!("{}/rerank", sim.base_url))
        .json(&json!({"model": "sim", "query": "quorum queue", "documents": docs, "top_n": 1, "return_documents": false}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(
        resp["results"],
        json!([{"index": 1, "relevance_score": resp["results"][0]["relevance_score"]}])
    );
    assert_eq!(sim.stats.snapshot().rerank_requests, 2);
}

#[tokio::test]
async fn error_and_status_flags() {
    let sim = sim().await;
    let c = client();
    let cases = [
        (
            "chat/completions",
            json!({"model": "sim:error", "messages": [{"role": "user", "content": "hi"}], "stream": true}),
            500,
        ),
        (
            "chat/completions",
            json!({"model": "sim:status=429", "messages": [{"role": "user", "content": "hi"}]}),
            429,
        ),
        (
            "chat/completions",
            json!({"model": "sim:error-after=2", "messages": [{"role": "user", "content": "hi"}]}),
            500,
        ),
        (
            "embeddings",
            json!({"model": "e:status=503", "input": "hi"}),
            503,
        ),
        (
            "rerank",
            json!({"model": "r:error", "query": "q", "documents": ["d"]}),
            500,
        ),
    ];
    for (path, body, status) in cases {
        let resp = c
            .post(format!("{}/{path}", sim.api_base()))
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), status, "{path} {body}");
        let err: Value = resp.json().await.expect("json");
        assert_eq!(
            err,
            json!({"error": {"message": "simulated upstream error", "type": "server_error", "code": "sim_error"}})
        );
    }
}

#[tokio::test]
async fn error_after_breaks_the_stream() {
    let sim = sim().await;
    let mut resp = client()
        .post(format!("{}/chat/completions", sim.api_base()))
        .json(&chat_body("sim:error-after=3", true))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let mut received = String::new();
    let failure = loop {
        match resp.chunk().await {
            Ok(Some(bytes)) => received.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(None) => panic!("stream ended cleanly: {received}"),
            Err(e) => break e,
        }
    };
    assert!(failure.is_body() || failure.is_decode(), "{failure:?}");
    let events = sse_events(&received);
    assert_eq!(events.len(), 4, "role + 3 tokens: {events:?}");
    assert!(!received.contains("[DONE]"));
    let s = wait_stats(&sim, |s| s.chat_streams_aborted == 1).await;
    assert_eq!((s.chat_streams_aborted, s.chat_streams_dropped), (1, 0));
}

#[tokio::test]
async fn dropped_stream_is_counted() {
    let sim = sim().await;
    let mut resp = client()
        .post(format!("{}/chat/completions", sim.api_base()))
        .json(&chat_body("sim:gap=50", true))
        .send()
        .await
        .expect("send");
    let first = resp.chunk().await.expect("chunk").expect("some bytes");
    assert!(String::from_utf8_lossy(&first).contains("According"));
    assert_eq!(sim.stats.snapshot().chat_streams_active, 1);
    drop(resp);
    let s = wait_stats(&sim, |s| s.chat_streams_dropped == 1).await;
    assert_eq!(s.chat_streams_dropped, 1);
    assert_eq!((s.chat_streams_active, s.chat_streams_completed), (0, 0));
    assert!(s.last_drop_unix_ms > 0);
}

#[tokio::test]
async fn stalled_stream_sends_headers_only() {
    let sim = sim().await;
    let mut resp = client()
        .post(format!("{}/chat/completions", sim.api_base()))
        .json(&chat_body("sim:stall", true))
        .send()
        .await
        .expect("headers arrive");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let silent = tokio::time::timeout(Duration::from_millis(200), resp.chunk()).await;
    assert!(silent.is_err(), "a stalled stream must not send anything");
    drop(resp);
    let s = wait_stats(&sim, |s| s.chat_streams_dropped == 1).await;
    assert_eq!((s.chat_streams_dropped, s.chat_streams_active), (1, 0));
}

#[tokio::test]
async fn timing_follows_flags() {
    let sim = sim().await;
    let started = std::time::Instant::now();
    let mut resp = client()
        .post(format!("{}/chat/completions", sim.api_base()))
        .json(&chat_body("sim:ttft=150:tokens=3:gap=20", true))
        .send()
        .await
        .expect("send");
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "headers before ttft"
    );
    let first = resp.chunk().await.expect("chunk").expect("bytes");
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert!(String::from_utf8_lossy(&first).contains("\"role\":\"assistant\""));
    while resp.chunk().await.expect("chunk").is_some() {}
    assert!(started.elapsed() >= Duration::from_millis(190));
}

#[tokio::test]
async fn misc_endpoints() {
    let sim = sim().await;
    let c = client();
    let health = c
        .get(format!("{}/healthz", sim.base_url))
        .send()
        .await
        .expect("send");
    assert_eq!(health.text().await.expect("text"), "ok");
    let models: Value = c
        .get(format!("{}/models", sim.api_base()))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(models["data"][0]["id"], "sim");
    let stats: StatsSnapshot = c
        .get(format!("{}/stats", sim.base_url))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(stats, sim.stats.snapshot());
    let missing = c
        .get(format!("{}/nope", sim.base_url))
        .send()
        .await
        .expect("send");
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn shutdown_ends_stalled_streams() {
    let sim = sim().await;
    let base = sim.api_base();
    let resp = client()
        .post(format!("{base}/chat/completions"))
        .json(&chat_body("sim:stall", true))
        .send()
        .await
        .expect("send");
    let stats = sim.stats.clone();
    let stopped = tokio::time::timeout(Duration::from_secs(2), sim.shutdown()).await;
    assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
    assert!(resp.text().await.is_err(), "the stalled body breaks");
    assert_eq!(stats.snapshot().chat_streams_aborted, 1);
    let refused = client().get(format!("{base}/models")).send().await;
    assert!(refused.is_err(), "server is gone");
}
