//! Smoke run of the load generator against a real ragq (api, worker, simulator; real
//! PostgreSQL, RabbitMQ and Redis). Benchmarks are not tests: this asserts success only, never
//! timing.

use std::time::Duration;

use ragq_loadgen::{Config, TestType};
use ragq_tests::{EnvOptions, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_smoke_run_succeeds() {
    let env = TestEnv::start(EnvOptions::default()).await;
    let mut cfg = Config::new(env.url.clone(), env.api_key.clone(), env.chat_id.clone());
    cfg.users = 10;
    cfg.requests = 2;
    cfg.test_type = TestType::Both;
    cfg.quiet = true;
    cfg.timeout = Duration::from_secs(30);
    cfg.max_duration = Duration::from_secs(60);
    let report = ragq_loadgen::run(cfg).await.expect("load generator ran");
    println!(
        "smoke: {} requests, {} failed in {:?}",
        report.stats.requests(),
        report.stats.failed(),
        report.wall
    );
    assert_eq!(report.users_ok, 10);
    assert_eq!(report.stats.requests(), 20);
    assert_eq!(
        report.stats.failed(),
        0,
        "{:?}",
        report
            .stats
            .iter()
            .map(|(k, s)| (k, s.failures.clone()))
            .collect::<Vec<_>>()
    );
    env.stop().await;
}
