//! The backbone, end to end on real PostgreSQL, RabbitMQ and Redis: a question travels
//! ingress → queue → worker (DB, retrieval, rerank, LLM) → Redis → SSE.

use std::time::{Duration, Instant};

use ragq_common::job::Lane;
use ragq_tests::{EnvOptions, TestEnv, parse_sse};
use serde_json::{Value, json};

const QUESTION: &str = "What is the delivery limit of the job queue?";

/// The streamed answer is cumulative, ends with a decorated event carrying references to the
/// document that holds the answer, then `data: true`; non-stream returns the same answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_answer_goes_the_whole_way() {
    let env = TestEnv::start(EnvOptions::default()).await;
    let session = env.create_session(&env.chat_id).await;
    let events = env.ask_stream(&env.chat_id, &session, QUESTION).await;

    assert!(events.len() >= 4, "too few events: {events:?}");
    assert_eq!(events.last().unwrap(), &json!({"code": 0, "data": true}));
    let partials: Vec<&str> = events[..events.len() - 2]
        .iter()
        .map(|e| e["data"]["answer"].as_str().unwrap())
        .collect();
    assert!(partials.len() >= 2);
    for pair in partials.windows(2) {
        assert!(
            pair[1].starts_with(pair[0]) && pair[1].len() > pair[0].len(),
            "answers must be cumulative: {pair:?}"
        );
    }
    for e in &events[..events.len() - 2] {
        assert_eq!(e["code"], 0);
        assert_eq!(e["data"]["session_id"], session.as_str());
        assert_eq!(e["data"]["reference"], json!({"chunks": []}));
    }
    let last = &events[events.len() - 2]["data"];
    let answer = last["answer"].as_str().unwrap();
    // The simulator answers from the first retrieved chunk and cites it.
    assert!(
        answer.contains("delivery limit of the job queue is five attempts"),
        "{answer}"
    );
    assert!(answer.contains("[ID:0]"), "{answer}");
    let chunks = last["reference"]["chunks"].as_array().unwrap();
    assert!(!chunks.is_empty());
    assert_eq!(chunks[0]["document_name"], "job-queue.md");
    assert!(
        chunks[0]["content"]
            .as_str()
            .unwrap()
            .contains("five attempts")
    );
    assert_eq!(last["reference"]["total"], chunks.len());
    assert_eq!(last["reference"]["doc_aggs"][0]["doc_name"], "job-queue.md");
    assert!(last["prompt"].as_str().unwrap().contains("### Query:"));
    assert!(last["created_at"].as_f64().unwrap() > 1.7e9);

    let plain = env.ask(&env.chat_id, &session, QUESTION).await;
    assert_eq!(plain["code"], 0, "{plain}");
    assert_eq!(plain["data"]["answer"], answer);
    assert_eq!(
        plain["data"]["reference"]["chunks"][0]["document_name"],
        "job-queue.md"
    );
    assert_eq!(plain["data"]["session_id"], session.as_str());
    env.stop().await;
}

/// A request without `session_id` opens a session and streams only its prologue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_session_id_opens_a_session() {
    let env = TestEnv::start(EnvOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let (_, body) = env
        .post(
            &format!("/api/v1/chats/{}/completions", env.chat_id),
            json!({"question": "hi", "stream": true}),
        )
        .await;
    assert!(
        body.starts_with(
            "data:{\"code\": 0, \"message\": \"\", \"data\": {\"answer\": \"Hi! I'm your assistant."
        ),
        "{body}"
    );
    let events = parse_sse(&body);
    assert_eq!(events.len(), 2);
    let sid = events[0]["data"]["session_id"].as_str().unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE id = $1")
        .bind(sid)
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(n, 1);
    env.stop().await;
}

/// Two workers on the same queue both take jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_queue() {
    let mut sim = ragq_sim::SimConfig::fast();
    sim.ttft_ms = 100;
    let env = TestEnv::start(EnvOptions {
        workers: 2,
        sim,
        ..Default::default()
    })
    .await;
    let session = env.create_session(&env.chat_id).await;
    let asks = (0..20).map(|_| env.ask(&env.chat_id, &session, QUESTION));
    for r in futures::future::join_all(asks).await {
        assert_eq!(r["code"], 0, "{r}");
    }
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT worker_id, count(*) FROM turns GROUP BY worker_id ORDER BY worker_id",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    println!("jobs per worker: {rows:?}");
    assert_eq!(rows.len(), 2, "both workers must have answered: {rows:?}");
    assert_eq!(rows.iter().map(|r| r.1).sum::<i64>(), 20);
    env.stop().await;
}

/// Each turn is saved once with its reference; the next turn's context includes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_are_saved_once_and_feed_the_history() {
    let env = TestEnv::start(EnvOptions::default()).await;
    let session = env.create_session(&env.chat_id).await;
    env.ask_stream(&env.chat_id, &session, QUESTION).await;
    let second = env
        .ask_stream(&env.chat_id, &session, "How are answer events streamed?")
        .await;
    assert_eq!(second.last().unwrap(), &json!({"code": 0, "data": true}));

    // The follow-up question was first rewritten by the model (refine_multiturn): 3 LLM calls.
    assert_eq!(
        env.sim
            .stats
            .chat_requests
            .load(std::sync::atomic::Ordering::SeqCst),
        3
    );
    let turns: Vec<(String, String, Value, String)> = sqlx::query_as(
        "SELECT question, answer, reference, status FROM turns WHERE session_id = $1 ORDER BY seq",
    )
    .bind(&session)
    .fetch_all(&env.db)
    .await
    .unwrap();
    assert_eq!(turns.len(), 2);
    assert_eq!(turns[0].0, QUESTION);
    assert!(turns[0].1.contains("five attempts"));
    assert_eq!(turns[0].2["chunks"][0]["document_name"], "job-queue.md");
    assert_eq!(turns[0].3, "done");
    assert_eq!(turns[1].2["chunks"][0]["document_name"], "event-stream.md");

    // A third job in the session sees both earlier turns, oldest first.
    let job = ragq_common::job::Job {
        v: ragq_common::job::JOB_VERSION,
        id: uuid::Uuid::now_v7(),
        kind: ragq_common::job::JobKind::Chat,
        tenant_id: env.tenant_id.clone(),
        chat_id: env.chat_id.clone(),
        session_id: Some(session.clone()),
        message_id: "m".into(),
        question: "and then?".into(),
        messages: vec![],
        options: Default::default(),
        deadline_ms: ragq_common::now_ms() + 10_000,
        params: serde_json::Value::Null,
        trace: None,
    };
    let ctx = ragq_worker::chat::context::load(&env.db, &env.secrets, &job)
        .await
        .unwrap();
    assert_eq!(ctx.history.len(), 2);
    assert_eq!(ctx.history[0].question, QUESTION);
    env.stop().await;
}

/// With a rerank model its score is the semantic one (RAGFlow's `vtsim`): the question is not
/// embedded. Without one, the question is embedded and the cosine scores the chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reranked_chat_does_not_embed_the_question() {
    use std::sync::atomic::Ordering::SeqCst;
    let env = TestEnv::start(EnvOptions::default()).await;
    let calls = || {
        let s = &env.sim.stats;
        (
            s.embedding_requests.load(SeqCst),
            s.rerank_requests.load(SeqCst),
        )
    };
    let first_chunk = |r: &Value| r["data"]["reference"]["chunks"][0].clone();

    let (embeds, reranks) = calls();
    let session = env.create_session(&env.chat_id).await;
    let r = env.ask(&env.chat_id, &session, QUESTION).await;
    assert_eq!(r["code"], 0, "{r}");
    let top = first_chunk(&r);
    assert_eq!(top["document_name"], "job-queue.md", "{r}");
    assert_eq!(
        calls(),
        (embeds, reranks + 1),
        "reranked: no embedding call"
    );
    // The reported vector similarity is the rerank score, which is in (0, 1].
    let v = top["vector_similarity"].as_f64().expect("a number");
    assert!(v > 0.0 && v <= 1.0, "{top}");

    let plain = env.chat_with_model("no-rerank", "sim").await;
    let session = env.create_session(&plain).await;
    let r = env.ask(&plain, &session, QUESTION).await;
    assert_eq!(r["code"], 0, "{r}");
    let top = first_chunk(&r);
    assert_eq!(top["document_name"], "job-queue.md", "{r}");
    assert_eq!(
        calls(),
        (embeds + 1, reranks + 1),
        "not reranked: one embedding call"
    );
    let cosine = top["vector_similarity"].as_f64().expect("a number");
    assert!(cosine > 0.0 && cosine <= 1.0, "{top}");
    env.stop().await;
}

/// Auth and ownership errors use RAGFlow's codes and messages and publish nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_and_ownership_errors_publish_nothing() {
    let env = TestEnv::start(EnvOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let path = format!("{}/api/v1/chats/{}/completions", env.url, env.chat_id);
    let body = json!({"question": QUESTION, "stream": true, "session_id": "nope"});
    let send = |auth: Option<String>| {
        let mut req = env.http.post(&path).json(&body);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(
        send(None).await,
        json!({"code": 0, "message": "`Authorization` can't be empty", "data": false})
    );
    assert_eq!(
        send(Some("Bearer".into())).await,
        json!({"code": 0, "message": "Please check your authorization format.", "data": false})
    );
    assert_eq!(
        send(Some("Bearer ragq-wrong".into())).await,
        json!({"code": 109, "message": "Authentication error: API key is invalid!", "data": false})
    );
    assert_eq!(
        send(Some(env.auth())).await,
        json!({"code": 102, "message": "You don't own the session nope"})
    );

    // Another tenant cannot use this chat.
    let other = ragq_cli::admin::create_tenant(&env.db, "other")
        .await
        .unwrap();
    let r: Value = env
        .http
        .post(&path)
        .header("Authorization", format!("Bearer {}", other.api_key))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        r,
        json!({"code": 102, "message": format!("You don't own the chat {}", env.chat_id)})
    );
    // Unknown chat, bad JSON.
    let r: Value = env
        .http
        .post(format!("{}/api/v1/chats/nope/completions", env.url))
        .header("Authorization", env.auth())
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["code"], 102);
    let r: Value = env
        .http
        .post(&path)
        .header("Authorization", env.auth())
        .body("{not json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["code"], 101);

    // Nothing reached the queue (no worker runs here, so anything published would still be there).
    let broker = env.broker().await;
    assert_eq!(broker.depth(Lane::Interactive).await.unwrap(), 0);
    broker.close().await;
    env.stop().await;
}

/// An upstream LLM that errors, or never sends a first token, ends the stream with an error
/// event within a bounded time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_end_the_stream_with_an_error() {
    let env = TestEnv::start(EnvOptions {
        first_token_timeout_ms: 1_000,
        ..Default::default()
    })
    .await;
    for (model, bound) in [
        ("sim-error", Duration::from_secs(3)),
        ("sim-stall", Duration::from_secs(4)),
    ] {
        let chat = env.chat_with_model(model, model).await;
        let session = env.create_session(&chat).await;
        let started = Instant::now();
        let events = env.ask_stream(&chat, &session, QUESTION).await;
        let took = started.elapsed();
        println!("{model}: error event after {took:?}");
        assert!(took < bound, "{model} took {took:?}");
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0]["code"], 500);
        assert!(
            events[0]["data"]["answer"]
                .as_str()
                .unwrap()
                .starts_with("**ERROR**: "),
            "{events:?}"
        );
        assert_eq!(events[1], json!({"code": 0, "data": true}));
    }
    env.stop().await;
}

/// 200 concurrent streams through one ingress share its one Redis subscriber connection (on
/// the NATS bus: its one subscriber, counted by the process; the server's `connz` is not
/// served by the test's NATS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_share_one_redis_subscriber() {
    let env = TestEnv::start(EnvOptions::default()).await;
    let redis = env.services.bus == ragq_common::bus::BusKind::Redis;
    let chat = env.chat_with_model("slow", "sim-slow").await;
    let session = env.create_session(&chat).await;
    let name = env.subscriber.connection_name().to_string();

    let mut peak_subs = 0;
    let results = {
        let streams = (0..200).map(|_| env.ask_stream(&chat, &session, QUESTION));
        let all = futures::future::join_all(streams);
        tokio::pin!(all);
        // While the streams are open (the model's first token takes 3 s), inspect Redis.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            tokio::select! {
                r = &mut all => break r,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if !redis {
                        peak_subs = peak_subs.max(env.subscriber.open_streams());
                        assert!(Instant::now() < deadline, "streams took too long");
                        continue;
                    }
                    let clients = env.redis_clients_named(&name).await;
                    assert_eq!(clients.len(), 1, "exactly one subscriber connection: {clients:?}");
                    let subs: usize = clients[0].split_whitespace().find_map(|f| f.strip_prefix("sub=")).and_then(|n| n.parse().ok()).unwrap();
                    peak_subs = peak_subs.max(subs);
                    assert!(Instant::now() < deadline, "streams took too long");
                }
            }
        }
    };
    println!("peak subscriptions on the one connection: {peak_subs}");
    assert_eq!(peak_subs, 200);
    for events in results {
        assert_eq!(events.last().unwrap(), &json!({"code": 0, "data": true}));
        assert!(
            events[events.len() - 2]["data"]["answer"]
                .as_str()
                .unwrap()
                .contains("five attempts")
        );
    }
    env.stop().await;
}
