//! Cancellation and resume, end to end: a client that leaves and does not come back within the
//! disconnect grace, or calls stop, makes the worker drop its upstream LLM request (the simulator sees its stream closed) and save the partial
//! answer as stopped; a job cancelled while queued is never run; a finished or running job's
//! stream can be resumed from its replay stream.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ragq_tests::{EnvOptions, TestEnv, parse_sse};
use serde_json::{Value, json};

const QUESTION: &str = "What is the delivery limit of the job queue?";

/// Sends a streamed question; returns the response (headers arrived, body not read).
async fn start(env: &TestEnv, chat: &str, session: &str) -> reqwest::Response {
    let resp = env
        .http
        .post(format!("{}/api/v1/chats/{chat}/completions", env.url))
        .header("Authorization", env.auth())
        .json(&json!({"question": QUESTION, "stream": true, "session_id": session}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp
}

/// Reads the body until the first event with answer text.
async fn read_first_answer(resp: &mut reqwest::Response) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = String::new();
    while Instant::now() < deadline {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
        if seen.contains("\"answer\": \"According") {
            return;
        }
    }
    panic!("no answer text: {seen}");
}

async fn wait_for_turn(env: &TestEnv, session: &str) -> (String, String) {
    for _ in 0..100 {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT status, answer FROM turns WHERE session_id = $1")
                .bind(session)
                .fetch_optional(&env.db)
                .await
                .unwrap();
        if let Some(r) = row {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the turn was never saved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_stops_the_model_and_saves_a_stopped_turn() {
    let env = TestEnv::start(EnvOptions::default()).await;
    let chat = env.chat_with_model("long", "sim-long").await;
    let session = env.create_session(&chat).await;
    let mut resp = start(&env, &chat, &session).await;
    read_first_answer(&mut resp).await;
    let before = env.sim.stats.chat_streams_dropped.load(Ordering::SeqCst);
    let left_at = chrono::Utc::now().timestamp_millis();
    drop(resp);

    // A disconnect is not a stop: the job is cancelled only once the grace (2 s in the test
    // environment) is over with nobody reading it.
    let grace_ms = EnvOptions::default().disconnect_grace_s as i64 * 1000;
    let deadline = Instant::now() + Duration::from_secs(8);
    while env.sim.stats.chat_streams_dropped.load(Ordering::SeqCst) == before {
        assert!(
            Instant::now() < deadline,
            "the upstream stream was never closed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let closed_after = env.sim.stats.last_drop_unix_ms.load(Ordering::SeqCst) as i64 - left_at;
    println!(
        "upstream stream closed {closed_after} ms after the client left (grace {grace_ms} ms)"
    );
    assert!(
        closed_after >= grace_ms - 50 && closed_after <= grace_ms + 200,
        "upstream closed {closed_after} ms after the client left (grace {grace_ms} ms)"
    );

    let (status, answer) = wait_for_turn(&env, &session).await;
    assert_eq!(status, "stopped");
    assert!(answer.starts_with("According"), "{answer}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_endpoint_ends_the_stream_and_the_model() {
    let env = TestEnv::start(EnvOptions::default()).await;
    let chat = env.chat_with_model("long", "sim-long").await;
    let session = env.create_session(&chat).await;
    let mut resp = start(&env, &chat, &session).await;
    let job_id = resp.headers()["x-ragq-job-id"]
        .to_str()
        .unwrap()
        .to_string();
    read_first_answer(&mut resp).await;

    // Another tenant cannot stop it.
    let other = ragq_cli::admin::create_tenant(&env.db, "other")
        .await
        .unwrap();
    let stop_url = format!("{}/api/v1/chats/{chat}/completions/{job_id}/stop", env.url);
    let r: Value = env
        .http
        .post(&stop_url)
        .header("Authorization", format!("Bearer {}", other.api_key))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["code"], 102, "{r}");

    let stopped_at = Instant::now();
    let r: Value = env
        .http
        .post(&stop_url)
        .header("Authorization", env.auth())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r, json!({"code": 0, "data": true}));
    let rest = tokio::time::timeout(Duration::from_secs(5), resp.text())
        .await
        .unwrap()
        .unwrap();
    println!("stream ended {:?} after stop", stopped_at.elapsed());
    let events = parse_sse(&rest);
    assert_eq!(events.last().unwrap(), &json!({"code": 0, "data": true}));
    let last = &events[events.len() - 2]["data"];
    assert!(last["answer"].as_str().unwrap().starts_with("According"));
    assert!(stopped_at.elapsed() < Duration::from_secs(2));
    assert_eq!(env.sim.stats.chat_streams_dropped.load(Ordering::SeqCst), 1);
    assert_eq!(wait_for_turn(&env, &session).await.0, "stopped");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_while_queued_never_runs() {
    let mut env = TestEnv::start(EnvOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let session = env.create_session(&env.chat_id).await;
    let resp = start(&env, &env.chat_id.clone(), &session).await;
    let job_id = resp.headers()["x-ragq-job-id"]
        .to_str()
        .unwrap()
        .to_string();
    let r: Value = env
        .http
        .post(format!(
            "{}/api/v1/chats/{}/completions/{job_id}/stop",
            env.url, env.chat_id
        ))
        .header("Authorization", env.auth())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["code"], 0);
    env.add_worker("late").await;
    let body = tokio::time::timeout(Duration::from_secs(10), resp.text())
        .await
        .unwrap()
        .unwrap();
    let events = parse_sse(&body);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events[0]["message"].as_str().unwrap().contains("cancelled"),
        "{events:?}"
    );
    assert_eq!(
        env.sim.stats.chat_requests.load(Ordering::SeqCst),
        0,
        "the model must not be called"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_can_be_resumed_from_its_replay() {
    let env = TestEnv::start(EnvOptions::default()).await;
    let session = env.create_session(&env.chat_id).await;
    let resp = start(&env, &env.chat_id, &session).await;
    let job_id = resp.headers()["x-ragq-job-id"]
        .to_str()
        .unwrap()
        .to_string();
    let original = parse_sse(&resp.text().await.unwrap());
    let resume = env
        .http
        .get(format!(
            "{}/api/v1/chats/{}/completions/{job_id}",
            env.url, env.chat_id
        ))
        .header("Authorization", env.auth())
        .send()
        .await
        .unwrap();
    let mut body = resume.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .unwrap()
    {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let resumed = parse_sse(&text);
    assert_eq!(resumed.last(), original.last());
    let n = original.len();
    assert_eq!(
        resumed[resumed.len() - 2]["data"]["answer"],
        original[n - 2]["data"]["answer"]
    );
    assert_eq!(
        resumed[resumed.len() - 2]["data"]["reference"],
        original[n - 2]["data"]["reference"]
    );
    // Unknown or foreign job ids are refused.
    let r: Value = env
        .http
        .get(format!(
            "{}/api/v1/chats/{}/completions/{}",
            env.url,
            env.chat_id,
            uuid::Uuid::now_v7()
        ))
        .header("Authorization", env.auth())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["code"], 102);
    env.stop().await;
}
