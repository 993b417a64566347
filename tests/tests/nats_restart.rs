//! A NATS server restart during load, with NATS as both broker and bus: the JetStream store on
//! disk survives it and no confirmed job is lost — every question whose stream started (the
//! broker had confirmed the job) is answered, however its client's stream ended.
//!
//! The test runs its own `nats-server` (its own port and store directory), so it stops no shared
//! service; it is bounded in time and count and talks only to 127.0.0.1.

use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ragq_common::broker::BrokerKind;
use ragq_common::bus::BusKind;
use ragq_tests::{EnvOptions, TestEnv};
use serde_json::json;

const QUESTION: &str = "What is the delivery limit of the job queue?";

/// A nats-server with JetStream on `port`, storing under `dir`.
fn start_nats(port: u16, dir: &std::path::Path) -> Child {
    ragq_tests::start_nats_server(port, dir, std::iter::empty::<&str>())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Outcomes of the load loops.
#[derive(Default)]
struct Tally {
    confirmed: std::sync::Mutex<Vec<String>>,
    answered: AtomicUsize,
    ended_otherwise: AtomicUsize,
    refused: AtomicUsize,
    hung: AtomicUsize,
}

async fn ask(env: &TestEnv, session: &str, tally: &Tally) {
    let sent = env
        .http
        .post(format!(
            "{}/api/v1/chats/{}/completions",
            env.url, env.chat_id
        ))
        .header("Authorization", env.auth())
        .json(&json!({"question": QUESTION, "stream": true, "session_id": session}))
        .timeout(Duration::from_secs(40))
        .send()
        .await;
    let resp = match sent {
        Ok(r) if r.status() == 200 => r,
        Ok(_) | Err(_) => {
            tally.refused.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            return;
        }
    };
    let job = resp
        .headers()
        .get("x-ragq-job-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if let Ok(mut c) = tally.confirmed.lock() {
        c.push(job);
    }
    match tokio::time::timeout(Duration::from_secs(40), resp.text()).await {
        Ok(Ok(body)) if body.contains("\"answer\"") && body.contains("five attempts") => {
            tally.answered.fetch_add(1, Ordering::SeqCst);
        }
        Ok(_) => {
            tally.ended_otherwise.fetch_add(1, Ordering::SeqCst);
        }
        Err(_) => {
            tally.hung.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_during_load_loses_no_confirmed_job() {
    restart_during_load("TERM").await;
}

/// The same with the server killed (kill -9). JetStream acknowledges a message once its store
/// holds it, before any fsync (`sync_interval`), so a crash of the process, not of the machine,
/// is what this proves survivable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_crash_during_load_loses_no_confirmed_job() {
    restart_during_load("KILL").await;
}

/// Load through ragq on NATS, the server stopped with `signal`, 2 s down, started again on the
/// same store; then every confirmed job must be answered.
async fn restart_during_load(signal: &str) {
    let port = free_port();
    let store = std::env::temp_dir().join(format!("ragq-nats-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&store).expect("store dir");
    let mut server = start_nats(port, &store);
    let env = Arc::new(
        TestEnv::start(EnvOptions {
            workers: 2,
            job_deadline_s: 30,
            nats_url: Some(format!("nats://127.0.0.1:{port}")),
            broker: Some(BrokerKind::Nats),
            bus: Some(BusKind::Nats),
            ..Default::default()
        })
        .await,
    );
    let session = env.create_session(&env.chat_id).await;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let loops: Vec<_> = (0..8)
        .map(|_| {
            let (env, session, stop, tally) =
                (env.clone(), session.clone(), stop.clone(), tally.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    ask(&env, &session, &tally).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = tally.answered.load(Ordering::SeqCst);
    // The restart: the signal, 2 s down, the same store directory again.
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &server.id().to_string()])
        .status();
    let _ = server.wait();
    tokio::time::sleep(Duration::from_secs(2)).await;
    server = start_nats(port, &store);
    let restarted = Instant::now();
    // Service is back when a question is answered again.
    let recovered = loop {
        let answered = tally.answered.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        if tally.answered.load(Ordering::SeqCst) > answered {
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(30),
            "never recovered"
        );
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    for l in loops {
        let _ = l.await;
    }
    let confirmed = tally
        .confirmed
        .lock()
        .map(|c| c.clone())
        .unwrap_or_default();
    // Every confirmed job is answered (saved as a done turn; `turns.job_id` is unique, so at
    // most once), however its client's stream ended.
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut missing = confirmed.clone();
    while !missing.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for job in missing {
            let id: uuid::Uuid = job.parse().expect("job id header");
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM turns WHERE job_id = $1 AND status = 'done'",
            )
            .bind(id)
            .fetch_one(&env.db)
            .await
            .expect("turns");
            if n == 0 {
                still.push(job);
            }
        }
        missing = still;
        if !missing.is_empty() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    println!(
        "NATS restart (SIG{signal}, 2 s down): {} confirmed, {} answered in their stream ({before} before the stop), {} ended otherwise (resume / error event), {} refused (503/429), {} hung; service back {recovered:?} after the restart; unanswered confirmed jobs: {}",
        confirmed.len(),
        tally.answered.load(Ordering::SeqCst),
        tally.ended_otherwise.load(Ordering::SeqCst),
        tally.refused.load(Ordering::SeqCst),
        tally.hung.load(Ordering::SeqCst),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "confirmed jobs never answered: {missing:?}"
    );
    assert_eq!(tally.hung.load(Ordering::SeqCst), 0, "no stream may hang");
    assert!(recovered < Duration::from_secs(15), "{recovered:?}");
    if let Ok(env) = Arc::try_unwrap(env) {
        env.stop().await;
    }
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&store);
}
