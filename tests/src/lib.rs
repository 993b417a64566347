//! Test harness for ragq's end-to-end tests (zero-to-production style): each test gets its own
//! PostgreSQL database, its own RabbitMQ queue names and Redis channel prefix, an in-process
//! upstream simulator, the real ingress and real workers — all on 127.0.0.1.
//!
//! Needs PostgreSQL, RabbitMQ, Redis and NATS on their default local ports (`scripts/test.sh`
//! starts them). Override with `RAGQ_TEST_PG` (admin URL, no database), `RAGQ_TEST_AMQP`,
//! `RAGQ_TEST_REDIS`, `RAGQ_TEST_NATS`.
//!
//! **Which broker and bus** every environment uses is `RAGQ_TEST_BROKER` (`rabbitmq` | `nats`)
//! and `RAGQ_TEST_BUS` (`redis` | `nats`): `scripts/test.sh` runs the end-to-end, fault and
//! outage suites once per combination, the same tests each time.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use futures::StreamExt;
use ragq_api::{Api, ApiConfig};
use ragq_cli::admin::{self, NewChat, NewModel};
use ragq_common::broker::{Broker, BrokerKind};
use ragq_common::bus::{BusKind, EventSubscriber};
use ragq_common::providers::{Providers, Timeouts};
use ragq_common::secret::{SecretKey, SecretKeys};
use ragq_common::tls::TlsRoots;
use ragq_sim::{SimConfig, SimHandle};
use ragq_worker::{Worker, WorkerConfig};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub mod tls;

pub fn pg_admin_url() -> String {
    std::env::var("RAGQ_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}
pub fn amqp_url() -> String {
    std::env::var("RAGQ_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}
pub fn redis_url() -> String {
    std::env::var("RAGQ_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}
pub fn nats_url() -> String {
    std::env::var("RAGQ_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// The broker of this test run (`RAGQ_TEST_BROKER`, default RabbitMQ).
pub fn broker_kind() -> BrokerKind {
    match std::env::var("RAGQ_TEST_BROKER").as_deref() {
        Ok("nats") => BrokerKind::Nats,
        Ok("rabbitmq") | Err(_) => BrokerKind::Rabbitmq,
        Ok(other) => panic!("RAGQ_TEST_BROKER={other}: rabbitmq or nats"),
    }
}

/// The bus of this test run (`RAGQ_TEST_BUS`, default Redis).
pub fn bus_kind() -> BusKind {
    match std::env::var("RAGQ_TEST_BUS").as_deref() {
        Ok("nats") => BusKind::Nats,
        Ok("redis") | Err(_) => BusKind::Redis,
        Ok(other) => panic!("RAGQ_TEST_BUS={other}: redis or nats"),
    }
}

/// JetStream's ack wait in tests: a killed worker's job is redelivered after this long.
pub const NATS_ACK_WAIT_MS: u64 = 2_000;

/// Idle test queues are deleted by RabbitMQ after this long (and by [`TestEnv::stop`] at once).
pub const QUEUE_EXPIRES_MS: u32 = 120_000;
const QUEUE_EXPIRES: &str = "120000";

/// The demo documents shipped with the repository.
pub fn demo_docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../demo/docs")
}

/// Logs go to stderr when `TEST_LOG=1`.
pub fn init_logs() {
    if std::env::var("TEST_LOG").is_ok_and(|v| v == "1") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,sqlx=warn")
            .with_test_writer()
            .try_init();
    }
}

#[derive(Parser)]
struct WorkerArgs {
    #[command(flatten)]
    cfg: WorkerConfig,
}

#[derive(Parser)]
struct ProbeArgs {
    #[command(flatten)]
    broker: ragq_common::config::BrokerConfig,
    #[command(flatten)]
    bus: ragq_common::config::BusConfig,
    #[command(flatten)]
    nats: ragq_common::config::NatsConfig,
    #[command(flatten)]
    _tls: ragq_common::tls::TlsConfig,
}

#[derive(Parser)]
struct ApiArgs {
    #[command(flatten)]
    cfg: ApiConfig,
}

/// Knobs of a test environment.
pub struct EnvOptions {
    pub workers: usize,
    pub sim: SimConfig,
    pub first_token_timeout_ms: u64,
    pub job_deadline_s: u64,
    /// Workers' `RAGQ_COALESCE_MS`.
    pub coalesce_ms: u64,
    /// The api's admission bounds (`RAGQ_MAX_OPEN_STREAMS`, `RAGQ_MAX_QUEUE_DEPTH`).
    pub max_open_streams: usize,
    pub max_queue_depth: u32,
    /// Redis URL of the api and workers (default [`redis_url`]), e.g. a password-protected one.
    pub redis_url: Option<String>,
    /// AMQP URL of the api and workers (default [`amqp_url`]), e.g. another user and vhost.
    pub amqp_url: Option<String>,
    /// NATS URL of the api and workers (default [`nats_url`]), e.g. a server the test restarts.
    pub nats_url: Option<String>,
    /// The broker and bus of this environment (default: [`broker_kind`], [`bus_kind`]).
    pub broker: Option<BrokerKind>,
    pub bus: Option<BusKind>,
    /// Serve the simulator over HTTPS with this server configuration (its models get
    /// `https://localhost:PORT/v1` base URLs).
    pub sim_tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// `RAGQ_EXTRA_CA_FILE` of the api and workers.
    pub extra_ca_file: Option<PathBuf>,
    /// Appended to the database URL of every process, e.g. `?sslmode=require`.
    pub db_url_query: &'static str,
    /// The api's `RAGQ_DISCONNECT_GRACE_S` (short here: tests wait for it).
    pub disconnect_grace_s: u64,
    /// The api's `RAGQ_SHUTDOWN_GRACE_S`.
    pub shutdown_grace_s: u64,
    /// `RAGQ_DELIVERY_LIMIT` of api and workers.
    pub delivery_limit: u32,
    /// Fault hook installed in every in-process worker (see `ragq_worker::job::faults`).
    pub faults: Option<ragq_worker::job::faults::FaultHook>,
    /// In-process workers' `RAGQ_PREFETCH` (their interactive slots); `None` = the default.
    pub prefetch: Option<u16>,
    /// In-process workers' `RAGQ_TENANT_WORKER_JOBS`; `None` = the default (no cap).
    pub tenant_worker_jobs: Option<u16>,
}

impl Default for EnvOptions {
    fn default() -> Self {
        EnvOptions {
            workers: 1,
            sim: SimConfig::fast(),
            first_token_timeout_ms: 5_000,
            job_deadline_s: 30,
            coalesce_ms: 40,
            max_open_streams: 20_000,
            max_queue_depth: 10_000,
            redis_url: None,
            amqp_url: None,
            nats_url: None,
            broker: None,
            bus: None,
            sim_tls: None,
            extra_ca_file: None,
            db_url_query: "",
            disconnect_grace_s: 2,
            shutdown_grace_s: 30,
            delivery_limit: 5,
            faults: None,
            prefetch: None,
            tenant_worker_jobs: None,
        }
    }
}

/// A running ragq (api + workers + simulator) on a fresh database, with demo data loaded.
pub struct TestEnv {
    pub db: PgPool,
    pub db_name: String,
    pub url: String,
    pub api_key: String,
    pub tenant_id: String,
    pub chat_id: String,
    pub dataset_id: String,
    pub sim: SimHandle,
    pub subscriber: Arc<dyn EventSubscriber>,
    pub queue_prefix: String,
    pub http: reqwest::Client,
    /// The environment's `RAGQ_SECRET_KEY` (random per environment), given to its workers.
    pub secrets: SecretKeys,
    shutdown: CancellationToken,
    /// Stops the first api only (workers go on).
    api_shutdown: CancellationToken,
    /// Arguments the api was started with (more apis of the same environment reuse them).
    api_argv: Vec<String>,
    db_url: String,
    faults: Option<ragq_worker::job::faults::FaultHook>,
    delivery_limit: u32,
    prefetch: Option<u16>,
    tenant_worker_jobs: Option<u16>,
    worker_tasks: Vec<tokio::task::JoinHandle<()>>,
    opts_first_token_ms: u64,
    opts_coalesce_ms: u64,
    /// The services this environment's processes use (see [`EnvOptions`]).
    pub services: Services,
}

/// Where an environment's api and workers find their services.
#[derive(Clone, Debug)]
pub struct Services {
    pub broker: BrokerKind,
    pub bus: BusKind,
    pub redis_url: String,
    pub amqp_url: String,
    pub nats_url: String,
    pub extra_ca_file: Option<PathBuf>,
}

impl Services {
    /// The trust anchors these services are reached with.
    pub fn roots(&self) -> TlsRoots {
        TlsRoots::load(&ragq_common::tls::TlsConfig {
            extra_ca_file: self.extra_ca_file.clone(),
        })
        .expect("extra CA file")
    }

    /// Command-line arguments naming these services (for the api, workers and the `ragq` CLI).
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--broker".to_string(),
            self.broker.as_str().to_string(),
            "--bus".to_string(),
            self.bus.as_str().to_string(),
            "--amqp-url".to_string(),
            self.amqp_url.clone(),
            "--redis-url".to_string(),
            self.redis_url.clone(),
            "--nats-url".to_string(),
            self.nats_url.clone(),
            "--nats-ack-wait-ms".to_string(),
            NATS_ACK_WAIT_MS.to_string(),
        ];
        if let Some(ca) = &self.extra_ca_file {
            args.push("--extra-ca-file".into());
            args.push(ca.display().to_string());
        }
        args
    }
}

impl TestEnv {
    pub async fn start(opts: EnvOptions) -> TestEnv {
        init_logs();
        // reqwest is built without a rustls provider: the process installs ring before its
        // first HTTP client is made.
        ragq_common::tls::install_ring_provider();
        let id = Uuid::new_v4().simple().to_string();
        let db_name = format!("ragq_test_{id}");
        let admin = PgPool::connect(&format!("{}/postgres", pg_admin_url()))
            .await
            .expect("postgres reachable");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
            .execute(&admin)
            .await
            .expect("create db");
        admin.close().await;
        let db_url = format!("{}/{db_name}{}", pg_admin_url(), opts.db_url_query);
        let queue_prefix = format!("test.{id}");
        let sim = match &opts.sim_tls {
            Some(tls) => ragq_sim::spawn_tls(opts.sim, tls.clone()).await,
            None => ragq_sim::spawn(opts.sim).await,
        }
        .expect("simulator");
        let services = Services {
            broker: opts.broker.unwrap_or_else(broker_kind),
            bus: opts.bus.unwrap_or_else(bus_kind),
            redis_url: opts.redis_url.clone().unwrap_or_else(redis_url),
            amqp_url: opts.amqp_url.clone().unwrap_or_else(amqp_url),
            nats_url: opts.nats_url.clone().unwrap_or_else(nats_url),
            extra_ca_file: opts.extra_ca_file.clone(),
        };
        let shutdown = CancellationToken::new();

        let mut api_argv: Vec<String> = vec!["api".to_string()];
        api_argv.extend(services.args());
        api_argv.extend(
            [
                "--database-url",
                &db_url,
                "--db-max-connections",
                "8",
                "--queue-prefix",
                &queue_prefix,
                "--queue-expires-ms",
                QUEUE_EXPIRES,
                "--channel-prefix",
                &queue_prefix,
                "--addr",
                "127.0.0.1:0",
                "--job-deadline-s",
                &opts.job_deadline_s.to_string(),
                "--max-open-streams",
                &opts.max_open_streams.to_string(),
                "--max-queue-depth",
                &opts.max_queue_depth.to_string(),
                "--disconnect-grace-s",
                &opts.disconnect_grace_s.to_string(),
                "--shutdown-grace-s",
                &opts.shutdown_grace_s.to_string(),
                "--delivery-limit",
                &opts.delivery_limit.to_string(),
            ]
            .iter()
            .map(|a| a.to_string()),
        );
        let api_shutdown = shutdown.child_token();
        let (url, subscriber) =
            start_api(&api_argv, &format!("ragq-test-{id}"), api_shutdown.clone()).await;
        let db = ragq_common::db::connect(
            &ragq_common::config::DbConfig {
                url: db_url.clone(),
                max_connections: 8,
            },
            &TlsRoots::public(),
        )
        .await
        .expect("db");

        // Tenant, models, demo dataset and chat.
        let secrets = SecretKeys {
            current: Some(SecretKey::generate()),
            previous: None,
        };
        let tenant = admin::create_tenant(&db, "test").await.expect("tenant");
        let sim_base = sim.api_base();
        for (kind, name, provider, model) in [
            ("chat", "sim", "openai", "sim"),
            ("chat", "sim-error", "openai", "sim:error"),
            ("chat", "sim-stall", "openai", "sim:stall"),
            ("chat", "sim-slow", "openai", "sim:ttft=3000"),
            ("chat", "sim-long", "openai", "sim:tokens=400:gap=20"),
            ("chat", "sim-medium", "openai", "sim:tokens=60:gap=20"),
            ("chat", "sim-huge", "openai", "sim:tokens=30000:gap=1"),
            ("embedding", "sim-embed", "openai", "sim-embed"),
            ("embedding", "local", "local", "local"),
            ("rerank", "sim-rerank", "jina", "sim-rerank"),
        ] {
            let spec = NewModel {
                name,
                kind,
                provider,
                base_url: &sim_base,
                model,
                api_key: "",
                max_tokens: 8192,
            };
            admin::put_model(&db, &secrets, &tenant.tenant_id, &spec)
                .await
                .expect("model");
        }
        let providers = Providers::new(
            Timeouts {
                connect: Duration::from_secs(2),
                request: Duration::from_secs(10),
                idle: Duration::from_secs(10),
                retries: 1,
            },
            &services.roots(),
        )
        .expect("providers");
        let dataset_id = admin::create_dataset(&db, &tenant.tenant_id, "demo", "sim-embed")
            .await
            .expect("dataset");
        admin::load_folder(
            &db,
            &providers,
            &secrets,
            &tenant.tenant_id,
            &dataset_id,
            &demo_docs(),
        )
        .await
        .expect("load demo docs");
        let chat_id = admin::create_chat(
            &db,
            &tenant.tenant_id,
            &NewChat {
                name: "demo",
                llm_model: "sim",
                dataset_ids: std::slice::from_ref(&dataset_id),
                rerank_model: "sim-rerank",
                top_n: 6,
                similarity_threshold: 0.2,
                vector_similarity_weight: 0.3,
            },
        )
        .await
        .expect("chat");

        let mut env = TestEnv {
            db,
            db_name,
            url,
            api_key: tenant.api_key,
            tenant_id: tenant.tenant_id,
            chat_id,
            dataset_id,
            sim,
            subscriber,
            queue_prefix,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(usize::MAX)
                .build()
                .expect("http client"),
            secrets,
            shutdown,
            api_shutdown,
            api_argv,
            db_url,
            faults: opts.faults,
            delivery_limit: opts.delivery_limit,
            prefetch: opts.prefetch,
            tenant_worker_jobs: opts.tenant_worker_jobs,
            worker_tasks: Vec::new(),
            opts_first_token_ms: opts.first_token_timeout_ms,
            opts_coalesce_ms: opts.coalesce_ms,
            services,
        };
        for i in 0..opts.workers {
            env.add_worker(&format!("w{}", i + 1)).await;
        }
        env
    }

    /// Arguments of a worker of this environment.
    pub fn worker_config(&self, worker_id: &str) -> WorkerConfig {
        let mut argv = self.services.args();
        argv.insert(0, "worker".into());
        WorkerArgs::try_parse_from(argv.iter().map(String::as_str).chain([
            "--database-url",
            &self.db_url,
            "--db-max-connections",
            "8",
            "--queue-prefix",
            &self.queue_prefix,
            "--queue-expires-ms",
            QUEUE_EXPIRES,
            "--channel-prefix",
            &self.queue_prefix,
            "--worker-id",
            worker_id,
            "--first-token-timeout-ms",
            &self.opts_first_token_ms.to_string(),
            "--drain-timeout-s",
            "20",
            "--coalesce-ms",
            &self.opts_coalesce_ms.to_string(),
            "--secret-key",
            &self.secret_key_hex(),
            "--delivery-limit",
            &self.delivery_limit.to_string(),
        ]))
        .map(|a| {
            let mut cfg = a.cfg;
            if let Some(p) = self.prefetch {
                cfg.prefetch = p;
            }
            if let Some(n) = self.tenant_worker_jobs {
                cfg.tenant_worker_jobs = n;
            }
            cfg
        })
        .expect("worker args")
    }

    /// Starts a worker as a separate OS process (the `ragq-worker` binary built by
    /// `cargo build --bins`), for tests that kill or signal it. Its output goes to the test's.
    pub fn spawn_worker_process(&self, worker_id: &str) -> std::process::Child {
        let bin = bin_dir().join("ragq-worker");
        assert!(
            bin.exists(),
            "{} is missing: run `cargo build --bins` first (scripts/test.sh does)",
            bin.display()
        );
        std::process::Command::new(bin)
            .args(self.services.args())
            .args([
                "--database-url",
                &self.db_url,
                "--db-max-connections",
                "8",
                "--queue-prefix",
                &self.queue_prefix,
                "--queue-expires-ms",
                QUEUE_EXPIRES,
                "--channel-prefix",
                &self.queue_prefix,
                "--worker-id",
                worker_id,
                "--first-token-timeout-ms",
                &self.opts_first_token_ms.to_string(),
                "--drain-timeout-s",
                "20",
                "--coalesce-ms",
                &self.opts_coalesce_ms.to_string(),
                "--delivery-limit",
                &self.delivery_limit.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .env("RAGQ_SECRET_KEY", self.secret_key_hex())
            .spawn()
            .expect("spawn ragq-worker")
    }

    /// The `ragq` operator tool (built by `cargo build --bins`) configured for this environment.
    pub fn ragq_cli(&self) -> std::process::Command {
        let bin = bin_dir().join("ragq");
        assert!(
            bin.exists(),
            "{} is missing: run `cargo build --bins`",
            bin.display()
        );
        let mut cmd = std::process::Command::new(bin);
        cmd.args(self.services.args())
            .args(["--database-url", &self.db_url])
            .args(["--queue-prefix", &self.queue_prefix])
            .args(["--queue-expires-ms", QUEUE_EXPIRES])
            .args(["--channel-prefix", &self.queue_prefix])
            .env("RAGQ_SECRET_KEY", self.secret_key_hex())
            .env("RUST_LOG", "warn");
        cmd
    }

    /// The environment's secret key as 64 hex digits (for a worker's configuration).
    pub fn secret_key_hex(&self) -> String {
        self.secrets
            .current
            .as_ref()
            .map(SecretKey::expose_hex)
            .unwrap_or_default()
    }

    /// Starts one more worker, stopped with the environment.
    pub async fn add_worker(&mut self, worker_id: &str) {
        let mut worker = Worker::start(self.worker_config(worker_id))
            .await
            .expect("worker starts");
        if let Some(hook) = &self.faults {
            worker = worker.with_faults(hook.clone());
        }
        let stop = self.shutdown.clone();
        self.worker_tasks.push(tokio::spawn(async move {
            let _ = worker.run(stop).await;
        }));
    }

    /// Starts another api process (in-process, its own listener and bus subscriber) of this
    /// environment; returns its URL and the token that shuts it down (gracefully, as SIGTERM).
    pub async fn spawn_api(&self, name: &str) -> (String, CancellationToken) {
        let token = self.shutdown.child_token();
        let (url, _) = start_api(
            &self.api_argv,
            &format!("{}-{name}", self.queue_prefix),
            token.clone(),
        )
        .await;
        (url, token)
    }

    /// Starts another api whose bus connection (Redis or NATS, whichever this run uses) goes
    /// through a TCP proxy; cancelling the returned `cut` token severs it as a lost server
    /// would. Returns the api's URL, its shutdown token and `cut`.
    pub async fn spawn_api_with_cuttable_bus(
        &self,
        name: &str,
    ) -> (String, CancellationToken, CancellationToken) {
        let (flag, target, scheme) = match self.services.bus {
            BusKind::Redis => ("--redis-url", redis_addr(), "redis"),
            BusKind::Nats => ("--nats-url", host_port(&self.services.nats_url), "nats"),
        };
        let (proxy, cut) = tcp_proxy(target).await;
        let mut argv = self.api_argv.clone();
        if let Some(i) = argv.iter().position(|a| a == flag) {
            argv[i + 1] = format!("{scheme}://{proxy}/");
        }
        let token = self.shutdown.child_token();
        let (url, _) = start_api(
            &argv,
            &format!("{}-{name}", self.queue_prefix),
            token.clone(),
        )
        .await;
        (url, token, cut)
    }

    /// Shuts the first api down as SIGTERM would (workers and other apis go on).
    pub fn shutdown_api(&self) {
        self.api_shutdown.cancel();
    }

    /// Adds a chat on the demo dataset that uses the chat model `llm`.
    pub async fn chat_with_model(&self, name: &str, llm: &str) -> String {
        admin::create_chat(
            &self.db,
            &self.tenant_id,
            &NewChat {
                name,
                llm_model: llm,
                dataset_ids: std::slice::from_ref(&self.dataset_id),
                rerank_model: "",
                top_n: 6,
                similarity_threshold: 0.2,
                vector_similarity_weight: 0.3,
            },
        )
        .await
        .expect("chat")
    }

    pub fn auth(&self) -> String {
        format!("Bearer {}", self.api_key)
    }

    /// POST JSON with this environment's key; returns (status, body text).
    pub async fn post(&self, path: &str, body: Value) -> (u16, String) {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .header("Authorization", self.auth())
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    }

    pub async fn create_session(&self, chat_id: &str) -> String {
        let (_, body) = self
            .post(
                &format!("/api/v1/chats/{chat_id}/sessions"),
                json!({"name": "t"}),
            )
            .await;
        let v: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["code"], 0, "{body}");
        v["data"]["id"].as_str().expect("session id").to_string()
    }

    /// Sends a request with `key`; asserts RAGFlow's HTTP 200 and returns the JSON envelope.
    pub async fn call(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let mut rb = self
            .http
            .request(method.clone(), format!("{}{path}", self.url))
            .header("Authorization", format!("Bearer {key}"));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        assert_eq!(status, 200, "{method} {path}: {text}");
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"))
    }

    /// Starts a streamed RAGFlow completion; returns the response once its headers arrived
    /// (status 200 asserted), with the body unread.
    pub async fn start_stream(
        &self,
        chat_id: &str,
        session_id: &str,
        question: &str,
    ) -> reqwest::Response {
        let resp = self
            .http
            .post(format!("{}/api/v1/chats/{chat_id}/completions", self.url))
            .header("Authorization", self.auth())
            .json(&json!({"question": question, "stream": true, "session_id": session_id}))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        resp
    }

    /// Resumes a job's stream (`GET …/completions/{job_id}`) and reads it to its end, each read
    /// bounded by 5 s; returns the parsed `data:` events.
    pub async fn resume(&self, chat_id: &str, job_id: &str) -> Vec<Value> {
        let resp = self
            .http
            .get(format!(
                "{}/api/v1/chats/{chat_id}/completions/{job_id}",
                self.url
            ))
            .header("Authorization", self.auth())
            .send()
            .await
            .expect("resume request");
        let mut body = resp.bytes_stream();
        let mut text = String::new();
        while let Some(chunk) = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("the resumed stream ends")
        {
            text.push_str(&String::from_utf8_lossy(&chunk.expect("body")));
        }
        parse_sse(&text)
    }

    /// Asks with `stream: true`; returns the parsed `data:` events in order.
    pub async fn ask_stream(&self, chat_id: &str, session_id: &str, question: &str) -> Vec<Value> {
        let (status, body) = self
            .post(
                &format!("/api/v1/chats/{chat_id}/completions"),
                json!({"question": question, "stream": true, "session_id": session_id}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        parse_sse(&body)
    }

    /// Asks with `stream: false`; returns the JSON body.
    pub async fn ask(&self, chat_id: &str, session_id: &str, question: &str) -> Value {
        let (_, body) = self
            .post(
                &format!("/api/v1/chats/{chat_id}/completions"),
                json!({"question": question, "stream": false, "session_id": session_id}),
            )
            .await;
        serde_json::from_str(&body).expect("json body")
    }

    /// A broker client on this environment's queues (to inspect depth or the dead-letter queue),
    /// configured as the environment's processes are.
    pub async fn broker(&self) -> Arc<dyn Broker> {
        let p = self.probe_config();
        ragq_common::broker::connect(&p.broker, &p.nats, "test-probe", &self.services.roots())
            .await
            .expect("broker probe")
    }

    /// The ingress side of this environment's bus (its shared job state, as an api sees it).
    pub async fn ingress_bus(&self) -> ragq_common::bus::IngressBus {
        let p = self.probe_config();
        ragq_common::bus::connect_ingress(
            &p.bus,
            &p.nats,
            "test-ingress-bus",
            16,
            &self.services.roots(),
        )
        .await
        .expect("ingress bus")
    }

    /// The worker side of this environment's bus (to publish events as a worker would).
    pub async fn worker_bus(&self) -> ragq_common::bus::WorkerBus {
        let p = self.probe_config();
        ragq_common::bus::connect_worker(&p.bus, &p.nats, "test-worker-bus", &self.services.roots())
            .await
            .expect("worker bus")
    }

    /// The broker, bus and NATS settings of this environment's processes.
    fn probe_config(&self) -> ProbeArgs {
        let mut argv = vec!["probe".to_string()];
        argv.extend(self.services.args());
        argv.extend(
            [
                "--queue-prefix",
                &self.queue_prefix,
                "--queue-expires-ms",
                QUEUE_EXPIRES,
                "--channel-prefix",
                &self.queue_prefix,
                "--delivery-limit",
                &self.delivery_limit.to_string(),
            ]
            .map(String::from),
        );
        ProbeArgs::try_parse_from(argv).expect("probe args")
    }

    /// Publishes `payload` to the queue `{prefix}.{queue}` (e.g. `jobs.interactive`,
    /// `jobs.dead`) without going through the api — what an old or broken publisher would
    /// send — and waits for the broker's confirm. `message_id` labels it (the job id).
    pub async fn raw_publish(&self, queue: &str, payload: &[u8], message_id: Option<&str>) {
        let queue = format!("{}.{queue}", self.queue_prefix);
        match self.services.broker {
            BrokerKind::Rabbitmq => {
                let conn = lapin::Connection::connect(
                    &self.services.amqp_url,
                    lapin::ConnectionProperties::default(),
                )
                .await
                .expect("amqp");
                let ch = conn.create_channel().await.expect("channel");
                let mut props = lapin::BasicProperties::default().with_delivery_mode(2);
                if let Some(id) = message_id {
                    props = props.with_message_id(id.into());
                }
                ch.confirm_select(Default::default())
                    .await
                    .expect("confirms");
                let confirm = ch
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        Default::default(),
                        payload,
                        props,
                    )
                    .await
                    .expect("publish")
                    .await
                    .expect("publish confirm");
                assert!(confirm.is_ack(), "the broker refused the message");
                let _ = conn.close(200, "done".into()).await;
            }
            BrokerKind::Nats => {
                let client = async_nats::connect(self.services.nats_url.as_str())
                    .await
                    .expect("nats");
                let js = async_nats::jetstream::new(client);
                let mut headers = async_nats::HeaderMap::new();
                if let Some(id) = message_id {
                    headers.insert("Ragq-Job-Id", id);
                    headers.insert("Nats-Msg-Id", id);
                }
                js.publish_with_headers(queue, headers, payload.to_vec().into())
                    .await
                    .expect("publish")
                    .await
                    .expect("publish ack");
            }
        }
    }

    /// Waits (≤ 20 s) until `n` consumers are subscribed to the interactive lane.
    pub async fn wait_for_consumers(&self, n: u32) {
        let broker = self.broker().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let stats = broker
                .queue_stats(ragq_common::job::Lane::Interactive)
                .await
                .expect("queue stats");
            if stats.consumers >= n || tokio::time::Instant::now() > deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Redis `CLIENT LIST` lines whose name starts with `prefix`.
    pub async fn redis_clients_named(&self, prefix: &str) -> Vec<String> {
        let client = redis::Client::open(self.services.redis_url.as_str()).expect("redis url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis");
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut conn)
            .await
            .expect("client list");
        list.lines()
            .filter(|l| {
                l.split_whitespace().any(|f| {
                    f.strip_prefix("name=")
                        .is_some_and(|n| n.starts_with(prefix))
                })
            })
            .map(str::to_string)
            .collect()
    }

    /// Stops api and workers (waits for workers to drain), deletes the test's queues and drops
    /// the database.
    pub async fn stop(self) {
        let probe = self.probe_config();
        self.shutdown.cancel();
        for t in self.worker_tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
        // Quorum queues are Raft groups and streams are files: hundreds of leftovers slow the
        // broker for everyone. Every step of the teardown is bounded: a test must end even if
        // a service stalls.
        let ProbeArgs {
            broker, bus, nats, ..
        } = probe;
        let roots = self.services.roots();
        let cleanup = async move {
            if let Ok(b) =
                ragq_common::broker::connect(&broker, &nats, "test-teardown", &roots).await
            {
                let _ = b.delete_topology().await;
                b.close().await;
            }
            if bus.kind == BusKind::Nats
                && let Ok(b) = ragq_common::bus::nats::NatsBus::connect(
                    &nats,
                    &bus.prefix,
                    "test-teardown",
                    &roots,
                )
                .await
            {
                let _ = b.delete_all().await;
            }
        };
        let _ = tokio::time::timeout(TEARDOWN_STEP, cleanup).await;
        // Waits for every checked-out connection; DROP DATABASE … WITH (FORCE) below ends any
        // session still open if that takes too long.
        let _ = tokio::time::timeout(TEARDOWN_STEP, self.db.close()).await;
        let drop_db = async {
            if let Ok(admin) = PgPool::connect(&format!("{}/postgres", pg_admin_url())).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.db_name
                )))
                .execute(&admin)
                .await;
                admin.close().await;
            }
        };
        let _ = tokio::time::timeout(TEARDOWN_STEP, drop_db).await;
    }
}

/// A TCP proxy to `target` on 127.0.0.1:0: cancelling the returned token closes every proxied
/// connection and stops accepting (new connections are refused), as a lost server would.
pub async fn tcp_proxy(target: String) -> (std::net::SocketAddr, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("proxy listens");
    let addr = listener.local_addr().expect("proxy addr");
    let cut = CancellationToken::new();
    let stop = cut.clone();
    tokio::spawn(async move {
        loop {
            let (mut client, _) = tokio::select! {
                a = listener.accept() => match a { Ok(a) => a, Err(_) => return },
                () = stop.cancelled() => return,
            };
            let (target, stop) = (target.clone(), stop.clone());
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    () = stop.cancelled() => {}
                }
            });
        }
    });
    (addr, cut)
}

/// `host:port` of [`redis_url`].
pub fn redis_addr() -> String {
    host_port(&redis_url())
}

/// Runs the `ragq-api` binary against database `db_name` with `args` and expects it to refuse
/// to start: a failed exit within 15 s. Returns its standard error (what an operator reads).
pub fn api_start_failure<S: AsRef<std::ffi::OsStr>>(
    db_name: &str,
    args: impl IntoIterator<Item = S>,
) -> String {
    let started = std::time::Instant::now();
    let out = std::process::Command::new(bin_dir().join("ragq-api"))
        .args(["--database-url", &format!("{}/{db_name}", pg_admin_url())])
        .args(args)
        .args(["--addr", "127.0.0.1:0"])
        .env("RUST_LOG", "error")
        .output()
        .expect("ragq-api runs");
    assert!(!out.status.success(), "ragq-api started");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Starts a `nats-server` of the test's own with JetStream on 127.0.0.1:`port`, storing under
/// `store`, with `extra` arguments (TLS, credentials), and waits until it listens (at most
/// 10 s). The caller stops it.
pub fn start_nats_server<S: AsRef<std::ffi::OsStr>>(
    port: u16,
    store: &std::path::Path,
    extra: impl IntoIterator<Item = S>,
) -> std::process::Child {
    let child = std::process::Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store)
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nats-server (Debian package nats-server) is installed");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nats-server did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// `host:port` of a service URL (credentials and path dropped).
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// Builds and runs an api from `argv` named `instance` until `shutdown` fires; returns its URL
/// and bus subscriber.
async fn start_api(
    argv: &[String],
    instance: &str,
    shutdown: CancellationToken,
) -> (String, Arc<dyn EventSubscriber>) {
    let mut argv = argv.to_vec();
    argv.extend(["--instance".to_string(), instance.to_string()]);
    let api_args = ApiArgs::try_parse_from(argv).expect("api args");
    let api = Api::build(api_args.cfg).await.expect("api starts");
    let url = format!("http://{}", api.local_addr().expect("addr"));
    let subscriber = api.subscriber();
    tokio::spawn(async move {
        let _ = api.run(async move { shutdown.cancelled().await }).await;
    });
    (url, subscriber)
}

/// The longest any one step of [`TestEnv::stop`] may take.
const TEARDOWN_STEP: Duration = Duration::from_secs(10);

/// Parses an SSE body into its events' `data` JSON payloads (comments skipped, multi-line `data:`
/// fields joined), with ragq's one SSE parser (`ragq_common::sse`).
pub fn parse_sse(body: &str) -> Vec<Value> {
    ragq_common::sse::events_of(body.as_bytes())
        .unwrap_or_else(|e| panic!("bad event stream: {e}"))
        .into_iter()
        .map(|d| {
            serde_json::from_slice(&d)
                .unwrap_or_else(|e| panic!("bad event {}: {e}", String::from_utf8_lossy(&d)))
        })
        .collect()
}

/// Where the workspace's binaries are (`$CARGO_TARGET_DIR` or `target/`, debug profile;
/// `RAGQ_BIN_DIR` overrides).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("RAGQ_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug")
}
