//! Model providers over HTTPS: the simulator serves TLS with a certificate from a CA made at test
//! time. With the CA given as `RAGQ_EXTRA_CA_FILE`, a whole answer — embedding, rerank and a
//! streamed chat, all over HTTPS — goes through ragq and `ragq doctor` passes; without it, the
//! stream ends promptly with an error event (never a hang) and `ragq doctor` names the TLS
//! failure.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ragq_cli::admin;
use ragq_tests::tls::TestCa;
use ragq_tests::{EnvOptions, TestEnv};

const QUESTION: &str = "What is the delivery limit of the job queue?";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_model_over_https_with_the_extra_ca() {
    let ca = TestCa::new();
    let cert = ca.server_cert(&["localhost", "127.0.0.1"]);
    let env = TestEnv::start(EnvOptions {
        sim_tls: Some(cert.rustls_server_config()),
        extra_ca_file: Some(ca.ca_path().to_path_buf()),
        ..EnvOptions::default()
    })
    .await;
    assert!(
        env.sim.base_url.starts_with("https://localhost:"),
        "{}",
        env.sim.base_url
    );
    let embeddings_at_start = env.sim.stats.embedding_requests.load(Ordering::Relaxed);
    assert!(
        embeddings_at_start > 0,
        "the demo dataset was embedded over HTTPS"
    );

    let session = env.create_session(&env.chat_id).await;
    let events = env.ask_stream(&env.chat_id, &session, QUESTION).await;
    let last = events.len() - 1;
    assert_eq!(events[last], serde_json::json!({"code": 0, "data": true}));
    let answer = &events[last - 1]["data"];
    assert!(
        answer["answer"].as_str().unwrap().contains("five attempts"),
        "{answer}"
    );
    assert!(
        !answer["reference"]["chunks"].as_array().unwrap().is_empty(),
        "retrieval (embedding + rerank over HTTPS) found chunks: {answer}"
    );
    assert!(env.sim.stats.chat_requests.load(Ordering::Relaxed) >= 1);
    assert!(env.sim.stats.rerank_requests.load(Ordering::Relaxed) >= 1);
    // The demo chat reranks (no question embedding); a chat without a reranker embeds the
    // question over HTTPS too.
    let plain = env.chat_with_model("no-rerank", "sim").await;
    let session = env.create_session(&plain).await;
    let events = env.ask_stream(&plain, &session, QUESTION).await;
    let last = events.len() - 1;
    assert_eq!(events[last], serde_json::json!({"code": 0, "data": true}));
    assert!(
        !events[last - 1]["data"]["reference"]["chunks"]
            .as_array()
            .unwrap()
            .is_empty(),
        "retrieval (embedding over HTTPS) found chunks: {}",
        events[last - 1]
    );
    assert!(env.sim.stats.embedding_requests.load(Ordering::Relaxed) > embeddings_at_start);

    // The operator's check agrees.
    let out = env
        .ragq_cli()
        .args(["doctor", "--tenant", &env.tenant_id, "--timeout-s", "10"])
        .args([
            "--model",
            "sim",
            "--model",
            "sim-embed",
            "--model",
            "sim-rerank",
        ])
        .output()
        .expect("ragq doctor runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "doctor failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok    model chat `sim`"), "{stdout}");
    assert!(
        stdout.contains("ok    model rerank `sim-rerank`"),
        "{stdout}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_ends_the_stream_and_doctor_names_it() {
    // A plain-HTTP environment, plus a chat model served over HTTPS by a CA nobody trusts.
    let env = TestEnv::start(EnvOptions::default()).await;
    let ca = TestCa::new();
    let cert = ca.server_cert(&["localhost", "127.0.0.1"]);
    let tls_sim = ragq_sim::spawn_tls(ragq_sim::SimConfig::fast(), cert.rustls_server_config())
        .await
        .expect("TLS simulator");
    admin::put_model(
        &env.db,
        &env.secrets,
        &env.tenant_id,
        &admin::NewModel {
            name: "tls-sim",
            kind: "chat",
            provider: "openai",
            base_url: &tls_sim.api_base(),
            model: "sim",
            api_key: "",
            max_tokens: 8192,
        },
    )
    .await
    .expect("model");
    let chat = env.chat_with_model("tls", "tls-sim").await;
    let session = env.create_session(&chat).await;

    let started = Instant::now();
    let events = tokio::time::timeout(
        Duration::from_secs(20),
        env.ask_stream(&chat, &session, QUESTION),
    )
    .await
    .expect("the stream ends, it does not hang");
    let elapsed = started.elapsed();
    let n = events.len();
    assert_eq!(events[n - 1], serde_json::json!({"code": 0, "data": true}));
    assert_ne!(
        events[n - 2]["code"],
        0,
        "an error event: {:?}",
        events[n - 2]
    );
    let text = events[n - 2].to_string();
    assert!(
        !text.contains(&tls_sim.base_url) && !text.contains("localhost:"),
        "no upstream URL in the client's event: {text}"
    );
    assert!(elapsed < Duration::from_secs(10), "ended after {elapsed:?}");
    assert_eq!(
        tls_sim.stats.chat_requests.load(Ordering::Relaxed),
        0,
        "no request passed the handshake"
    );

    let out = env
        .ragq_cli()
        .args(["doctor", "--tenant", &env.tenant_id, "--timeout-s", "5"])
        .args(["--model", "sim", "--model", "tls-sim"])
        .output()
        .expect("ragq doctor runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "doctor must fail:\n{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains("`tls-sim`"))
        .unwrap_or_else(|| panic!("a line for the TLS model:\n{stdout}"));
    assert!(line.starts_with("FAIL"), "{line}");
    assert!(line.contains("TLS failure"), "{line}");
    assert!(line.contains("UnknownIssuer"), "{line}");
    // Everything else still checks out.
    assert!(stdout.contains("ok    model chat `sim`"), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("ok    redis")),
        "{stdout}"
    );

    tls_sim.shutdown().await.expect("sim stops");
    env.stop().await;
}
