//! A rolling upgrade: old-format and new-format jobs through one mixed fleet. A worker that meets
//! a job of a newer format than it reads hands it back (published again for another worker,
//! counted in `ragq_jobs_handed_back_total`) — never dead-lettered, never failed — and a newer
//! worker runs both the old and the new format.

use std::time::{Duration, Instant};

use ragq_common::job::{JOB_VERSION, Job, JobKind, JobOptions, Lane};
use ragq_tests::{EnvOptions, TestEnv};
use ragq_worker::Worker;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const QUESTION: &str = "What is the delivery limit of the job queue?";

/// A chat job in format `v` for a new session of the demo chat.
async fn chat_job(env: &TestEnv, v: u32) -> (Job, String) {
    let session = env.create_session(&env.chat_id).await;
    let job = Job {
        v,
        id: Uuid::now_v7(),
        kind: JobKind::Chat,
        tenant_id: env.tenant_id.clone(),
        chat_id: env.chat_id.clone(),
        session_id: Some(session.clone()),
        message_id: Uuid::new_v4().to_string(),
        question: QUESTION.into(),
        messages: Vec::new(),
        options: JobOptions::default(),
        deadline_ms: chrono::Utc::now().timestamp_millis() + 60_000,
        params: serde_json::Value::Null,
        trace: None,
    };
    (job, session)
}

async fn turn_status(env: &TestEnv, session: &str) -> Option<String> {
    sqlx::query_scalar("SELECT status FROM turns WHERE session_id = $1")
        .bind(session)
        .fetch_optional(&env.db)
        .await
        .expect("turn")
}

/// The counter's value on this process's metrics page (every in-process worker shares it).
fn handed_back() -> f64 {
    let page = ragq_common::metrics::install().render();
    page.lines()
        .filter(|l| l.starts_with("ragq_jobs_handed_back_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn start_worker(env: &TestEnv, id: &str, reads_up_to: u32) -> CancellationToken {
    let worker = Worker::start(env.worker_config(id))
        .await
        .expect("worker starts")
        .with_max_job_version(reads_up_to);
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        let _ = worker.run(token).await;
    });
    stop
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_fleet_runs_old_and_new_jobs_and_loses_none() {
    let env = TestEnv::start(EnvOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let broker = env.broker().await;
    let next = JOB_VERSION + 1;
    // Only the old build runs: it reads up to JOB_VERSION.
    let old = start_worker(&env, "old", JOB_VERSION).await;
    let before = handed_back();
    let (new_job, new_session) = chat_job(&env, next).await;
    broker
        .publish(Lane::Interactive, &new_job)
        .await
        .expect("publish v+1");
    let (old_job, old_session) = chat_job(&env, JOB_VERSION).await;
    broker
        .publish(Lane::Interactive, &old_job)
        .await
        .expect("publish v");
    // The old worker answers the job it reads and keeps handing the newer one back.
    let t0 = Instant::now();
    while turn_status(&env, &old_session).await.is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the old worker answers its format"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while handed_back() - before < 3.0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the newer job is handed back, again and again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        turn_status(&env, &new_session).await,
        None,
        "no old worker ran the newer job"
    );
    assert!(
        broker.dead_letters(10).await.expect("dlq").is_empty(),
        "nothing dead-lettered"
    );
    // The new build joins (it reads both formats); more jobs of both formats arrive.
    let new = start_worker(&env, "new", next).await;
    let mut sessions = vec![new_session];
    for v in [JOB_VERSION, next, JOB_VERSION, next] {
        let (job, session) = chat_job(&env, v).await;
        broker
            .publish(Lane::Interactive, &job)
            .await
            .expect("publish");
        sessions.push(session);
    }
    let t1 = Instant::now();
    for s in &sessions {
        loop {
            if let Some(status) = turn_status(&env, s).await {
                assert_eq!(status, "done", "session {s}");
                break;
            }
            assert!(
                t1.elapsed() < Duration::from_secs(30),
                "every job of the mixed fleet is answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let handed = handed_back() - before;
    println!(
        "rolling upgrade: v{next} job answered {:?} after the new worker joined; handed back {handed} times by the old worker; 6/6 answered, 0 dead-lettered",
        t1.elapsed()
    );
    assert!(
        broker.dead_letters(10).await.expect("dlq").is_empty(),
        "nothing dead-lettered"
    );
    old.cancel();
    new.cancel();
    env.stop().await;
}
