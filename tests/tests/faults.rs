//! Fault tests that do not stop shared services (those are in `outages.rs`, run alone): worker
//! crash, graceful drain, poison messages and the dead-letter queue, a client that never reads.
//! Each is bounded in time and count, targets only 127.0.0.1, and prints its figures.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ragq_common::job::{JOB_VERSION, Job, JobKind, Lane};
use ragq_tests::{EnvOptions, TestEnv};
use serde_json::{Value, json};

const QUESTION: &str = "What is the delivery limit of the job queue?";

/// The tests that open hundreds of streams at once take turns: run side by side on a 2-core
/// machine, they measure each other's CPU contention (upstream retries, late first tokens)
/// rather than the fault they inject.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn is_complete(events: &[Value]) -> bool {
    events.len() >= 2
        && events.last() == Some(&json!({"code": 0, "data": true}))
        && events[events.len() - 2]["code"] == 0
        && events[events.len() - 2]["data"]["answer"]
            .as_str()
            .is_some_and(|a| a.contains("five attempts"))
}

async fn turns(env: &TestEnv) -> (i64, i64) {
    sqlx::query_as("SELECT count(*), count(DISTINCT job_id) FROM turns")
        .fetch_one(&env.db)
        .await
        .unwrap()
}

/// kill -9 one of two workers while 100 streams are open: every client still gets a complete
/// answer (the redelivered jobs are regenerated behind a `reset`), each answer saved once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_mid_stream_loses_nothing() {
    let _turn = HEAVY.lock().await;
    let env = TestEnv::start(EnvOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let chat = env.chat_with_model("medium", "sim-medium").await;
    let session = env.create_session(&chat).await;
    let mut victim = env.spawn_worker_process("victim");
    let mut survivor = env.spawn_worker_process("survivor");
    env.wait_for_consumers(2).await;

    let started = Instant::now();
    let streams =
        futures::future::join_all((0..100).map(|_| env.ask_stream(&chat, &session, QUESTION)));
    let kill = async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        victim.kill().unwrap(); // SIGKILL
        victim.wait().unwrap();
    };
    let (results, ()) = tokio::join!(streams, kill);
    let complete = results.iter().filter(|e| is_complete(e)).count();
    // A regenerated stream shows an answer shorter than the one before it.
    let answer_len = |e: &Value| e["data"]["answer"].as_str().map(str::len);
    let resets = results
        .iter()
        .filter(|events| {
            let lens: Vec<usize> = events.iter().filter_map(answer_len).collect();
            lens.windows(2).any(|w| w[1] < w[0])
        })
        .count();
    let (saved, distinct) = turns(&env).await;
    let by_worker: Vec<(String, i64)> =
        sqlx::query_as("SELECT worker_id, count(*) FROM turns GROUP BY 1 ORDER BY 1")
            .fetch_all(&env.db)
            .await
            .unwrap();
    println!(
        "kill -9: {complete}/100 complete in {:?}, {resets} streams restarted, {saved} turns saved ({distinct} distinct jobs), by worker {by_worker:?}",
        started.elapsed()
    );
    assert_eq!(complete, 100);
    assert_eq!((saved, distinct), (100, 100));
    survivor.kill().unwrap();
    let _ = survivor.wait();
    env.stop().await;
}

/// SIGTERM a worker holding 200 jobs: it stops consuming, finishes all 200, exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_jobs() {
    let _turn = HEAVY.lock().await;
    let env = TestEnv::start(EnvOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let chat = env.chat_with_model("medium", "sim-medium").await;
    let session = env.create_session(&chat).await;
    let mut worker = env.spawn_worker_process("draining");
    env.wait_for_consumers(1).await;

    let streams =
        futures::future::join_all((0..200).map(|_| env.ask_stream(&chat, &session, QUESTION)));
    let term = async {
        // Wait until every job is in flight — its model stream opened (requests count retries
        // too, so they could reach 200 with a job still queued) — then ask the worker to stop.
        let started = || {
            env.sim.stats.chat_streams_active.load(Ordering::SeqCst)
                + env.sim.stats.chat_streams_completed.load(Ordering::SeqCst)
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while started() < 200 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let in_flight = started();
        let signalled = Instant::now();
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &worker.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let status = tokio::task::spawn_blocking(move || worker.wait().unwrap())
            .await
            .unwrap();
        (in_flight, signalled.elapsed(), status)
    };
    let (results, (in_flight, drained_in, status)) = tokio::join!(streams, term);
    let complete = results.iter().filter(|e| is_complete(e)).count();
    for events in results.iter().filter(|e| !is_complete(e)) {
        println!(
            "incomplete: {:?}",
            &events[events.len().saturating_sub(2)..]
        );
    }
    println!(
        "SIGTERM with {in_flight} jobs in flight: exited {status} after {drained_in:?}; {complete}/200 complete"
    );
    assert!(status.success(), "worker exit status {status}");
    assert_eq!(complete, 200, "0 failed");
    assert_eq!(turns(&env).await, (200, 200));
    env.stop().await;
}

/// An undecodable job is dead-lettered at once while other jobs keep flowing; an operator can
/// list the dead-letter queue and replay a job from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_jobs_are_dead_lettered_and_replayable() {
    let env = TestEnv::start(EnvOptions::default()).await;
    let broker = env.broker().await;
    // Garbage, and a job of a version this build does not know, straight onto the queue.
    let mut unreadable_job = serde_json::to_value(fake_job(&env, None)).unwrap();
    // Older than any build reads (a newer one would be handed back for a newer worker instead).
    unreadable_job["v"] = json!(ragq_common::job::MIN_JOB_VERSION - 1);
    for payload in [
        b"not json at all".to_vec(),
        serde_json::to_vec(&unreadable_job).unwrap(),
    ] {
        env.raw_publish("jobs.interactive", &payload, None).await;
    }
    let session = env.create_session(&env.chat_id).await;
    let answers =
        futures::future::join_all((0..20).map(|_| env.ask(&env.chat_id, &session, QUESTION))).await;
    assert!(answers.iter().all(|a| a["code"] == 0), "jobs kept flowing");

    let deadline = Instant::now() + Duration::from_secs(5);
    let dead = loop {
        let dead = broker.dead_letters(10).await.unwrap();
        if dead.len() >= 2 || Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "dead letters: {:?}",
        dead.iter().map(|d| d.reason.clone()).collect::<Vec<_>>()
    );
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().all(|d| d.reason == "rejected"));
    // Listing does not remove them.
    assert_eq!(broker.dead_letters(10).await.unwrap().len(), 2);

    // A valid job that ended in the dead-letter queue is replayed and answered.
    let job = fake_job(&env, Some(session.clone()));
    env.raw_publish("jobs.dead", &job.encode(), Some(&job.id.to_string()))
        .await;
    assert_eq!(broker.replay_dead_letters(Some(job.id)).await.unwrap(), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM turns WHERE job_id = $1")
            .bind(job.id)
            .fetch_one(&env.db)
            .await
            .unwrap();
        if n == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "replayed job never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        broker.dead_letters(10).await.unwrap().len(),
        2,
        "undecodable ones stay"
    );
    assert_eq!(broker.depth(Lane::Interactive).await.unwrap(), 0);
    broker.close().await;
    env.stop().await;
}

/// A client that never reads: its bounded buffer fills, the stream is cut and the job cancelled
/// (the model's stream is dropped) instead of the ingress buffering without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_cut_off() {
    let _turn = HEAVY.lock().await;
    // One event per token: thousands of events, far more than the per-stream buffer.
    let env = TestEnv::start(EnvOptions {
        coalesce_ms: 0,
        ..Default::default()
    })
    .await;
    // No datasets: the simulator's answer is then as long as asked (30,000 tokens, 1 ms apart).
    let chat = ragq_cli::admin::create_chat(
        &env.db,
        &env.tenant_id,
        &ragq_cli::admin::NewChat {
            name: "huge",
            llm_model: "sim-huge",
            dataset_ids: &[],
            rerank_model: "",
            top_n: 6,
            similarity_threshold: 0.2,
            vector_similarity_weight: 0.3,
        },
    )
    .await
    .unwrap();
    let session = env.create_session(&chat).await;
    let resp = env
        .http
        .post(format!("{}/api/v1/chats/{chat}/completions", env.url))
        .header("Authorization", env.auth())
        .json(&json!({"question": QUESTION, "stream": true, "session_id": session}))
        .send()
        .await
        .unwrap();
    // Hold the response without reading it, until the ingress lets go of the stream.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut was_open = false;
    loop {
        let open = env.subscriber.open_streams();
        was_open |= open == 1;
        if was_open && open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slow reader was never cut off: sim {:?}",
            env.sim.stats.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cut_after = Instant::now();
    // What the client can still read is bounded (socket buffers + the per-stream buffer), and
    // it ends with an error event and the end line.
    let body = tokio::time::timeout(Duration::from_secs(20), resp.bytes())
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&body);
    println!(
        "slow reader cut; {} MB were still deliverable after the cut (read in {:?}); sim {:?}",
        body.len() / (1 << 20),
        cut_after.elapsed(),
        env.sim.stats.snapshot()
    );
    assert!(
        text.contains("read too slowly"),
        "{}",
        &text[text.len().saturating_sub(300)..]
    );
    assert!(text.ends_with("data:{\"code\": 0, \"data\": true}\n\n"));
    env.stop().await;
}

fn fake_job(env: &TestEnv, session: Option<String>) -> Job {
    Job {
        v: JOB_VERSION,
        id: uuid::Uuid::now_v7(),
        kind: JobKind::Chat,
        tenant_id: env.tenant_id.clone(),
        chat_id: env.chat_id.clone(),
        session_id: session,
        message_id: uuid::Uuid::new_v4().to_string(),
        question: QUESTION.into(),
        messages: vec![],
        options: Default::default(),
        deadline_ms: ragq_common::now_ms() + 60_000,
        params: Value::Null,
        trace: None,
    }
}

/// Admission control: with the interactive queue deeper than its bound, or the ingress holding
/// its maximum of open streams, new questions get 429 + Retry-After and nothing is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_refused_with_429() {
    // Queue depth: no worker, bound 2.
    let env = TestEnv::start(EnvOptions {
        workers: 0,
        max_queue_depth: 2,
        ..Default::default()
    })
    .await;
    let session = env.create_session(&env.chat_id).await;
    let body = json!({"question": QUESTION, "stream": true, "session_id": session});
    let url = format!("{}/api/v1/chats/{}/completions", env.url, env.chat_id);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            env.http
                .post(&url)
                .header("Authorization", env.auth())
                .json(&body)
                .send()
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(1200)).await; // the depth is refreshed twice a second
    let refused = env
        .http
        .post(&url)
        .header("Authorization", env.auth())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let v: Value = refused.json().await.unwrap();
    println!("deep queue: {v}");
    assert_eq!(v["code"], 429);
    let broker = env.broker().await;
    assert_eq!(
        broker.depth(Lane::Interactive).await.unwrap(),
        3,
        "the refused job was not published"
    );
    broker.close().await;
    drop(held);
    env.stop().await;

    // Open streams: bound 2, a slow model keeps the first two open.
    let env = TestEnv::start(EnvOptions {
        max_open_streams: 2,
        ..Default::default()
    })
    .await;
    let chat = env.chat_with_model("slow", "sim-slow").await;
    let session = env.create_session(&chat).await;
    let url = format!("{}/api/v1/chats/{chat}/completions", env.url);
    let body = json!({"question": QUESTION, "stream": true, "session_id": session});
    let a = env
        .http
        .post(&url)
        .header("Authorization", env.auth())
        .json(&body)
        .send()
        .await
        .unwrap();
    let b = env
        .http
        .post(&url)
        .header("Authorization", env.auth())
        .json(&body)
        .send()
        .await
        .unwrap();
    let c = env
        .http
        .post(&url)
        .header("Authorization", env.auth())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            a.status().as_u16(),
            b.status().as_u16(),
            c.status().as_u16()
        ),
        (200, 200, 429)
    );
    // Once they finish, questions are accepted again.
    assert!(
        a.text()
            .await
            .unwrap()
            .ends_with("data:{\"code\": 0, \"data\": true}\n\n")
    );
    drop(b);
    let d = env.ask(&chat, &session, QUESTION).await;
    assert_eq!(d["code"], 0, "{d}");
    env.stop().await;
}

/// A job that keeps killing its worker is dead-lettered by the queue's delivery limit, while
/// other questions keep being answered between the crashes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_killing_workers_is_dead_lettered_after_the_limit() {
    let env = TestEnv::start(EnvOptions {
        workers: 0,
        first_token_timeout_ms: 60_000,
        ..Default::default()
    })
    .await;
    let stall_chat = env.chat_with_model("stall", "sim-stall").await;
    let session = env.create_session(&env.chat_id).await;
    // The poison: a job whose model never answers, so a worker always holds it when it dies.
    let mut poison = fake_job(&env, None);
    poison.chat_id = stall_chat;
    let broker = env.broker().await;
    broker.publish(Lane::Interactive, &poison).await.unwrap();

    let mut crashes = 0;
    let mut answered = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let reason = loop {
        let dead = broker.dead_letters(5).await.unwrap();
        if let Some(d) = dead.first() {
            break d.reason.clone();
        }
        assert!(
            Instant::now() < deadline && crashes < 10,
            "never dead-lettered after {crashes} crashes"
        );
        let mut worker = env.spawn_worker_process(&format!("crash-{crashes}"));
        // Wait until this worker holds the poison (the simulator sees its stalled request) …
        let seen = env.sim.stats.chat_requests.load(Ordering::SeqCst);
        let held = Instant::now() + Duration::from_secs(10);
        while env.sim.stats.chat_requests.load(Ordering::SeqCst) == seen && Instant::now() < held {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // … answer a normal question meanwhile (other work keeps flowing) …
        if env.sim.stats.chat_requests.load(Ordering::SeqCst) > seen {
            let a = env.ask(&env.chat_id, &session, QUESTION).await;
            if a["code"] == 0 {
                answered += 1;
            }
        }
        // … and crash it.
        worker.kill().unwrap();
        worker.wait().unwrap();
        crashes += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "poison dead-lettered ({reason}) after {crashes} worker crashes; {answered} other questions answered meanwhile"
    );
    assert_eq!(reason, "delivery_limit");
    assert!(answered >= 3);
    // (An answered question whose ack was cut off by a crash may still wait in the queue: the
    // next worker replays its saved turn. The poison itself is only in the dead-letter queue.)
    let dead = broker.dead_letters(5).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(Job::decode(&dead[0].payload).unwrap().id, poison.id);
    broker.close().await;
    env.stop().await;
}
