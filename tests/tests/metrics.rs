//! Prometheus metrics end to end (issue 12): three questions through the real api, queue and
//! worker move the counters and histograms they should, the worker's health server serves
//! `/metrics` too, and every metric the Grafana dashboard and the alert rules use exists on a
//! live page.
//!
//! The recorder is global to the process (api and workers run in this one), so this binary holds
//! a single test: the before/after deltas are this test's own.

use std::collections::BTreeSet;
use std::time::Duration;

use ragq_tests::{EnvOptions, TestEnv};
use ragq_worker::Worker;
use tokio_util::sync::CancellationToken;

/// The sum of the samples of `name` whose labels include every pair of `labels`.
fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let has_all = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|p| p == format!("{k}=\"{v}\"")));
            has_all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Metric names (`ragq_…`, without the `_bucket`/`_sum`/`_count` of histogram series) in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("ragq_") {
        let start = i + at;
        let mut end = start + "ragq_".len();
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        let mut name = &text[start..end];
        for suffix in ["_bucket", "_sum", "_count"] {
            name = name.strip_suffix(suffix).unwrap_or(name);
        }
        // `ragq_` preceded by an identifier character is part of another word.
        let standalone =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if standalone && name.len() > "ragq_".len() {
            names.insert(name.trim_end_matches('_').to_string());
        }
        i = end;
    }
    names
}

/// Whether `page` has samples of the metric `name` (a histogram's through its series).
fn exported(page: &str, name: &str) -> bool {
    page.lines().filter(|l| !l.starts_with('#')).any(|l| {
        let metric = l.split(['{', ' ']).next().unwrap_or("");
        metric == name
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| metric.strip_suffix(s) == Some(name))
    })
}

async fn scrape(http: &reqwest::Client, url: &str) -> String {
    let resp = http.get(url).send().await.expect("scrape");
    assert_eq!(resp.status(), 200, "{url}");
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(ct.starts_with("text/plain"), "{url}: content-type {ct}");
    resp.text().await.expect("page")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn questions_move_the_metrics_and_dashboards_use_only_exported_names() {
    let env = TestEnv::start(EnvOptions::default()).await;
    // A second worker with a health address: its `/metrics` is scraped too.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let health: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut cfg = env.worker_config("w-health");
    cfg.health_addr = Some(health);
    let worker = Worker::start(cfg).await.expect("worker starts");
    let stop = CancellationToken::new();
    let worker_task = tokio::spawn({
        let stop = stop.clone();
        async move {
            let _ = worker.run(stop).await;
        }
    });
    let api_metrics = format!("{}/metrics", env.url);
    let worker_metrics = format!("http://{health}/metrics");
    // The worker's server is up once it answers.
    let mut up = false;
    for _ in 0..100 {
        if env.http.get(&worker_metrics).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the worker's health server answers");

    let before = scrape(&env.http, &api_metrics).await;
    let done = [("kind", "chat"), ("outcome", "done")];
    let session = env.create_session(&env.chat_id).await;
    for q in [
        "What is the delivery limit?",
        "How are jobs retried?",
        "What does the ingress do?",
    ] {
        let events = env.ask_stream(&env.chat_id, &session, q).await;
        assert!(
            events
                .iter()
                .any(|e| e["data"]["answer"].as_str().is_some_and(|a| !a.is_empty())),
            "{events:?}"
        );
    }
    // The worker counts a job after its `done` event went out: wait for the third.
    let mut after = String::new();
    for _ in 0..100 {
        after = scrape(&env.http, &api_metrics).await;
        if sample(&after, "ragq_jobs_total", &done) - sample(&before, "ragq_jobs_total", &done)
            >= 3.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delta = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    assert_eq!(delta("ragq_jobs_total", &done), 3.0, "{after}");
    assert_eq!(delta("ragq_ttfc_seconds_count", &[]), 3.0);
    assert_eq!(delta("ragq_jobs_published_total", &[("kind", "chat")]), 3.0);
    assert!(delta("ragq_ttfc_seconds_sum", &[]) > 0.0);
    assert_eq!(delta("ragq_job_overhead_seconds_count", &[]), 3.0);
    assert!(
        after.contains("# TYPE ragq_ttfc_seconds histogram"),
        "{after}"
    );
    assert!(after.contains("ragq_ttfc_seconds_bucket{le=\"0.005\"}"));
    assert!(after.contains("ragq_ttfc_seconds_bucket{le=\"60\"}"));
    assert!(after.contains("# TYPE ragq_job_step_seconds histogram"));
    for step in [
        "context",
        "retrieve",
        "rerank",
        "prompt",
        "llm_first_token",
        "llm_total",
        "save",
    ] {
        assert!(
            after.contains(&format!(
                "ragq_job_step_seconds_bucket{{step=\"{step}\",le="
            )),
            "step {step}: {after}"
        );
        assert_eq!(
            delta("ragq_job_step_seconds_count", &[("step", step)]),
            3.0,
            "step {step}"
        );
    }
    // The demo chat: an OpenAI-compatible chat model, a Jina reranker — and, since the rerank
    // score is its semantic score, no embedding call per question.
    assert_eq!(
        delta(
            "ragq_upstream_requests_total",
            &[
                ("provider", "openai"),
                ("kind", "embedding"),
                ("status", "ok")
            ],
        ),
        0.0,
        "a reranked chat does not embed its question"
    );
    for (provider, kind) in [("openai", "chat"), ("jina", "rerank")] {
        let calls = delta(
            "ragq_upstream_requests_total",
            &[("provider", provider), ("kind", kind), ("status", "ok")],
        );
        assert!(calls >= 3.0, "{provider} {kind}: {calls}");
        assert!(
            delta(
                "ragq_upstream_request_seconds_count",
                &[("provider", provider), ("kind", kind)]
            ) >= 3.0
        );
    }
    assert!(delta("ragq_tokens_total", &[("direction", "input")]) > 0.0);
    assert!(delta("ragq_tokens_total", &[("direction", "output")]) > 0.0);
    assert!(delta("ragq_events_relayed_total", &[]) >= 6.0);
    assert!(
        delta(
            "ragq_http_requests_total",
            &[
                ("route", "/api/v1/chats/{chat_id}/completions"),
                ("status", "200")
            ]
        ) >= 3.0
    );
    // Two workers consume each lane; the prefetch gauges add both up.
    assert!(
        sample(
            &after,
            "ragq_worker_prefetch_limit",
            &[("lane", "interactive")]
        ) >= 2.0
    );
    assert!(sample(&after, "ragq_db_pool_max", &[("role", "api")]) >= 1.0);

    // The worker's health server serves the process's metrics, with its own pool's gauges.
    let worker_page = scrape(&env.http, &worker_metrics).await;
    assert!(
        sample(&worker_page, "ragq_db_pool_max", &[("role", "worker")]) >= 1.0,
        "{worker_page}"
    );
    assert!(sample(&worker_page, "ragq_jobs_total", &done) >= 3.0);
    // The queue gauges are refreshed twice a second by the ingress.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let api_page = scrape(&env.http, &api_metrics).await;
    assert!(
        sample(
            &api_page,
            "ragq_queue_consumers",
            &[("lane", "interactive")]
        ) >= 2.0,
        "{api_page}"
    );

    // Every metric of the dashboard and of the alert rules is on a live page.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut used = BTreeSet::new();
    for file in [
        "deploy/grafana/ragq-dashboard.json",
        "deploy/prometheus/alerts.yml",
    ] {
        let text = std::fs::read_to_string(root.join(file)).expect(file);
        let names = metric_names(&text);
        assert!(names.len() >= 5, "{file}: {names:?}");
        used.extend(names);
    }
    let missing: Vec<_> = used
        .iter()
        .filter(|n| !exported(&api_page, n) && !exported(&worker_page, n))
        .collect();
    assert!(
        missing.is_empty(),
        "used by the dashboard or alerts but not exported: {missing:?}"
    );

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), worker_task).await;
    env.stop().await;
}
