//! What an operator meets first: `ragq doctor` against a healthy setup (exit 0) and with one
//! service down (exit 1, the service named with its cause), and PostgreSQL over TLS
//! (`sslmode=require`) for the api, the workers and the CLI.

use std::time::Duration;

use ragq_tests::{EnvOptions, TestEnv};

const QUESTION: &str = "What is the delivery limit of the job queue?";

/// `ragq doctor` on this environment; `redis_url` replaces the environment's Redis.
fn doctor(env: &TestEnv, redis_url: Option<&str>) -> (bool, String) {
    let mut cmd = match redis_url {
        None => env.ragq_cli(),
        Some(url) => {
            let mut cmd = std::process::Command::new(ragq_tests::bin_dir().join("ragq"));
            cmd.args([
                "--database-url",
                &format!("{}/{}", ragq_tests::pg_admin_url(), env.db_name),
            ])
            .args(["--amqp-url", &env.services.amqp_url, "--redis-url", url])
            .args([
                "--queue-prefix",
                &env.queue_prefix,
                "--channel-prefix",
                &env.queue_prefix,
                "--queue-expires-ms",
                &ragq_tests::QUEUE_EXPIRES_MS.to_string(),
            ])
            .env("RAGQ_SECRET_KEY", env.secret_key_hex())
            .env("RUST_LOG", "warn");
            cmd
        }
    };
    let out = cmd
        .args(["doctor", "--tenant", &env.tenant_id, "--timeout-s", "5"])
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
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_a_healthy_setup_and_names_a_service_that_is_down() {
    let env = TestEnv::start(EnvOptions::default()).await;
    let (ok, out) = doctor(&env, None);
    assert!(ok, "healthy setup:\n{out}");
    for service in ["postgres", "rabbitmq", "redis"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("ok    {service} "))),
            "{service}:\n{out}"
        );
    }
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok    model")).count(),
        3,
        "{out}"
    );

    // Redis "down": nothing listens where the configuration points.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dead = format!("redis://:pw@127.0.0.1:{port}/");
    let (ok, out) = doctor(&env, Some(&dead));
    assert!(!ok, "must fail:\n{out}");
    let line = out
        .lines()
        .find(|l| l.contains("redis"))
        .unwrap_or_else(|| panic!("a redis line:\n{out}"));
    assert!(line.starts_with("FAIL  redis"), "{line}");
    assert!(line.contains("connection refused"), "{line}");
    assert!(!out.contains(":pw@"), "no password printed:\n{out}");
    // The others still pass.
    assert!(
        out.lines().any(|l| l.starts_with("ok    postgres")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("ok    rabbitmq")),
        "{out}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls() {
    let env = TestEnv::start(EnvOptions {
        db_url_query: "?sslmode=require",
        ..EnvOptions::default()
    })
    .await;
    let session = env.create_session(&env.chat_id).await;
    let events = env.ask_stream(&env.chat_id, &session, QUESTION).await;
    assert_eq!(
        events.last(),
        Some(&serde_json::json!({"code": 0, "data": true}))
    );
    assert_eq!(events[events.len() - 2]["code"], 0, "{events:?}");
    // Every connection of this environment's database is encrypted.
    let (tls, plain): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
         FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = $1",
    )
    .bind(&env.db_name)
    .fetch_one(&env.db)
    .await
    .expect("pg_stat_ssl");
    assert!(
        tls >= 2,
        "api and worker pools use TLS: {tls} encrypted, {plain} plain"
    );
    assert_eq!(
        plain, 0,
        "no plain connection: {tls} encrypted, {plain} plain"
    );
    let (ok, out) = doctor(&env, None);
    assert!(ok, "{out}");
    tokio::time::sleep(Duration::from_millis(10)).await;
    env.stop().await;
}
