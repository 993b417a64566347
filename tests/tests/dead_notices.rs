//! A job whose workers are all killed (kill -9) reaches its delivery limit and is dead-lettered
//! with nobody left to tell its client. The broker also delivers a notice of it (RabbitMQ: the
//! dead-letter exchange routes a copy to `{prefix}.jobs.dead.notify`; NATS: the dead-letter
//! stream's shared `dead-notices` consumer), and a live worker's notice consumer ends the
//! client's stream with an error event at once — not at the relay's deadline. The dead-letter
//! queue keeps its copy.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ragq_tests::{EnvOptions, TestEnv, parse_sse};
use tokio_util::sync::CancellationToken;

const QUESTION: &str = "What is the delivery limit of the job queue?";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_workers_are_killed_ends_its_stream_when_dead_lettered() {
    let env = TestEnv::start(EnvOptions {
        workers: 0,
        first_token_timeout_ms: 60_000,
        delivery_limit: 2,
        job_deadline_s: 60,
        ..EnvOptions::default()
    })
    .await;
    // A live worker's notice consumer (the lanes are served only by the processes killed below).
    let broker = env.broker().await;
    let bus = env.worker_bus().await.publisher;
    let stop = CancellationToken::new();
    tokio::spawn(ragq_worker::dead_notices::run(
        broker.clone(),
        bus,
        "test-notices".into(),
        stop.clone(),
    ));

    // The client asks a chat whose model never answers: every worker holds the job when it dies.
    let stall = env.chat_with_model("stall", "sim-stall").await;
    let session = env.create_session(&stall).await;
    let resp = env.start_stream(&stall, &session, QUESTION).await;
    let body = tokio::spawn(async move { resp.text().await });

    let probe = env.broker().await;
    let mut crashes = 0;
    let mut last_kill = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(40);
    while probe
        .dead_letters(5)
        .await
        .expect("dead letters")
        .is_empty()
    {
        assert!(
            Instant::now() < deadline && crashes < 8,
            "never dead-lettered after {crashes} crashes"
        );
        let mut worker = env.spawn_worker_process(&format!("doomed-{crashes}"));
        let seen = env.sim.stats.chat_requests.load(Ordering::SeqCst);
        let held = Instant::now() + Duration::from_secs(10);
        while env.sim.stats.chat_requests.load(Ordering::SeqCst) == seen && Instant::now() < held {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        worker.kill().expect("kill -9");
        worker.wait().expect("reaped");
        last_kill = Instant::now();
        crashes += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let text = tokio::time::timeout(Duration::from_secs(10), body)
        .await
        .expect("the stream ends long before the relay's deadline")
        .expect("task")
        .expect("body");
    let took = last_kill.elapsed();
    let events = parse_sse(&text);
    println!("dead-lettered after {crashes} kills; stream ended {took:?} after the last kill");
    let n = events.len();
    assert_eq!(events[n - 1], serde_json::json!({"code": 0, "data": true}));
    assert_eq!(events[n - 2]["code"], 500, "{:?}", events[n - 2]);
    assert!(
        events[n - 2]["message"]
            .as_str()
            .unwrap()
            .starts_with("an internal error occurred (error id err_"),
        "{:?}",
        events[n - 2]
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    // The operators' copy stays.
    assert_eq!(probe.dead_letters(5).await.unwrap().len(), 1);
    stop.cancel();
    probe.close().await;
    env.stop().await;
}
