//! W3C trace context end to end (issue 12, item 2): a `traceparent` sent with a completion is
//! answered with this ingress's span of the same trace, travels in the job, and every JSON log
//! line the worker writes for that job (captured here through a global subscriber, formatted as
//! with `RAGQ_LOG_JSON=1`) carries its trace id with the job id, tenant and chat. A request
//! without one starts a new trace.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use ragq_tests::{EnvOptions, TestEnv};
use serde_json::{Value, json};

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().map_or(Ok(buf.len()), |mut l| {
            l.extend_from_slice(buf);
            Ok(buf.len())
        })
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The captured JSON log lines whose text contains `needle`.
fn json_lines_with(needle: &str) -> Vec<Value> {
    let logs = LOGS.lock().map(|l| l.clone()).unwrap_or_default();
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Asks one streamed question with `traceparent` (if any); returns the response's
/// `traceparent` and job id.
async fn ask(env: &TestEnv, session: &str, traceparent: Option<&str>) -> (String, String) {
    let mut req = env
        .http
        .post(format!("{}/api/v1/chats/{}/completions", env.url, env.chat_id))
        .header("Authorization", env.auth())
        .json(&json!({"question": "What is the delivery limit?", "stream": true, "session_id": session}));
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    let resp = req.send().await.expect("request");
    assert_eq!(resp.status(), 200);
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (tp, job) = (header("traceparent"), header("x-ragq-job-id"));
    let body = resp.text().await.expect("body");
    assert!(body.contains("\"answer\""), "{body}");
    (tp, job)
}

/// Waits for the worker's log lines of `job`; asserts each carries `trace_id` and the job's
/// tenant and chat in its `job` span.
async fn assert_job_lines_carry(env: &TestEnv, job: &str, trace_id: &str) {
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = json_lines_with(&format!("\"job_id\":\"{job}\""));
        if lines
            .iter()
            .any(|l| l["fields"]["message"] == "job finished")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(lines.len() >= 2, "worker log lines of job {job}: {lines:?}");
    for line in &lines {
        let span = &line["span"];
        let job_span = line["spans"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "job"))
            .unwrap_or(span);
        assert_eq!(job_span["trace_id"], trace_id, "{line}");
        assert_eq!(job_span["tenant"], env.tenant_id.as_str(), "{line}");
        assert_eq!(job_span["chat"], env.chat_id.as_str(), "{line}");
    }
    // The GenAI spans nest under the job's.
    assert!(
        lines.iter().any(|l| l["spans"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["name"] == "chat"
                && s["gen_ai.request.model"] == "sim"
                && s["gen_ai.usage.output_tokens"]
                    .as_u64()
                    .is_some_and(|n| n > 0)))),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_traceparent_reaches_the_workers_log_lines() {
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter("info,ragq_worker=debug,sqlx=warn,lapin=warn")
        .with_ansi(false)
        .with_writer(|| Capture)
        .try_init();
    let env = TestEnv::start(EnvOptions::default()).await;
    let session = env.create_session(&env.chat_id).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let sent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let (answered, job) = ask(&env, &session, Some(&sent)).await;
    // The ingress answers with its own span of the same trace.
    assert!(
        answered.starts_with(&format!("00-{trace_id}-")) && answered != sent,
        "{answered}"
    );
    assert_job_lines_carry(&env, &job, trace_id).await;

    // No traceparent (or a malformed one): a new trace, reported and logged the same way.
    for sent in [None, Some("garbage")] {
        let (answered, job) = ask(&env, &session, sent).await;
        let parts: Vec<&str> = answered.split('-').collect();
        assert!(parts.len() == 4 && parts[1].len() == 32, "{answered}");
        assert_ne!(parts[1], trace_id);
        assert_job_lines_carry(&env, &job, parts[1]).await;
    }
    env.stop().await;
}
