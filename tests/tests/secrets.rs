//! Model API keys at rest, end to end on real PostgreSQL: stored as `enc:v1:` ciphertext,
//! decrypted by the worker for the upstream call, readable through a key rotation and moved to
//! the new key by `reencrypt-secrets`; unknown providers rejected at creation; the key never in
//! the logs or in the events a client receives.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use ragq_cli::admin::{self, NewModel};
use ragq_common::model::api_key_context;
use ragq_common::models;
use ragq_common::providers::ModelKind;
use ragq_common::secret::{PREFIX, SecretKey, SecretKeys, Stored};
use ragq_tests::{EnvOptions, TestEnv};

const QUESTION: &str = "What is the delivery limit of the job queue?";

/// Everything every test of this file logged, at debug level (one subscriber per process).
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        // The process builds HTTP clients (rustls without a built-in provider).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Capture(buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .try_init();
        buf
    })
    .clone()
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn start() -> TestEnv {
    captured_logs();
    TestEnv::start(EnvOptions::default()).await
}

/// A model of the test tenant on the simulator.
fn model<'a>(base_url: &'a str, kind: &'a str, name: &'a str, key: &'a str) -> NewModel<'a> {
    NewModel {
        name,
        kind,
        provider: "openai",
        base_url,
        model: "sim",
        api_key: key,
        max_tokens: 8192,
    }
}

async fn stored_key(env: &TestEnv, kind: &str, name: &str) -> String {
    sqlx::query_scalar(
        "SELECT api_key FROM models WHERE tenant_id = $1 AND kind = $2 AND name = $3",
    )
    .bind(&env.tenant_id)
    .bind(kind)
    .bind(name)
    .fetch_one(&env.db)
    .await
    .expect("model row")
}

/// A key given to `put_model` is stored as `enc:v1:` ciphertext bound to its row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_stored_encrypted() {
    let env = start().await;
    let key = "sk-stored-0123456789abcdef";
    let base = env.sim.api_base();
    let m = model(&base, "chat", "keyed", key);
    admin::put_model(&env.db, &env.secrets, &env.tenant_id, &m)
        .await
        .expect("model with a key");
    let stored = stored_key(&env, "chat", "keyed").await;
    assert!(stored.starts_with(PREFIX), "{stored}");
    assert!(!stored.contains(key));
    let own = api_key_context(&env.tenant_id, "chat", "keyed");
    let opened = env.secrets.decrypt(&stored, &own).expect("decrypts");
    assert_eq!(
        (opened.plaintext.as_str(), opened.stored),
        (key, Stored::Current)
    );
    // Bound to the row: the same value does not open as another model's key.
    let other = api_key_context(&env.tenant_id, "chat", "sim");
    assert!(env.secrets.decrypt(&stored, &other).is_err());
    // Models without a key store nothing, and need no secret key.
    assert_eq!(stored_key(&env, "chat", "sim").await, "");

    // Without RAGQ_SECRET_KEY a key cannot be stored; the message says what to set.
    let err = admin::put_model(&env.db, &SecretKeys::default(), &env.tenant_id, &m)
        .await
        .expect_err("no secret key")
        .to_string();
    assert!(err.contains("RAGQ_SECRET_KEY is not set"), "{err}");
    assert!(!err.contains(key));
    env.stop().await;
}

/// A chat whose model has an API key answers as before (the worker decrypts the key), and the
/// key is in no event and no log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_with_a_key_answers_and_the_key_is_never_logged() {
    let env = start().await;
    let key = "sk-never-logged-5f2c9a7e31d04b68";
    let base = env.sim.api_base();
    for (name, upstream) in [("keyed", "sim"), ("keyed-error", "sim:error")] {
        let m = NewModel {
            model: upstream,
            ..model(&base, "chat", name, key)
        };
        admin::put_model(&env.db, &env.secrets, &env.tenant_id, &m)
            .await
            .expect("model");
    }

    let chat = env.chat_with_model("keyed", "keyed").await;
    let session = env.create_session(&chat).await;
    let (status, body) = env
        .post(
            &format!("/api/v1/chats/{chat}/completions"),
            serde_json::json!({"question": QUESTION, "stream": true, "session_id": session}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let events = ragq_tests::parse_sse(&body);
    let last = &events[events.len() - 2]["data"];
    let answer = last["answer"].as_str().expect("answer");
    assert!(
        answer.contains("delivery limit of the job queue is five attempts"),
        "{events:?}"
    );
    assert!(!body.contains(key));

    // An upstream failure is reported and logged without the key.
    let failing = env.chat_with_model("keyed-error", "keyed-error").await;
    let session = env.create_session(&failing).await;
    let events = env.ask_stream(&failing, &session, QUESTION).await;
    assert_eq!(events[0]["code"], 500, "{events:?}");
    assert!(!serde_json::to_string(&events).expect("json").contains(key));

    // The masked listing shows only the ends of the key.
    let listing = admin::list_models(&env.db, &env.secrets, &env.tenant_id)
        .await
        .expect("list");
    let line = listing
        .iter()
        .map(ToString::to_string)
        .find(|l| l.contains("name=keyed "))
        .expect("keyed listed");
    assert!(
        line.contains("api_key=sk-n******4b68 key_storage=current"),
        "{line}"
    );

    let logs = captured_logs();
    let logs = String::from_utf8_lossy(&logs.lock().unwrap_or_else(|e| e.into_inner())).to_string();
    // The capture holds the worker's logs, including the failed job's.
    assert!(
        logs.contains("ragq_worker") && logs.contains("job failed"),
        "{logs}"
    );
    assert!(!logs.contains(key), "the plaintext key was logged");
    assert!(!logs.contains(&key[3..20]), "part of the key was logged");
    env.stop().await;
}

/// After a rotation (old key as previous) keys still decrypt; `reencrypt-secrets` moves them,
/// and legacy plaintext, to the new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_and_reencrypt_move_rows_to_the_new_key() {
    let env = start().await;
    let base = env.sim.api_base();
    let m = model(&base, "chat", "rotated", "sk-rotated-0123456789");
    admin::put_model(&env.db, &env.secrets, &env.tenant_id, &m)
        .await
        .expect("model");
    // A row written before encryption existed.
    sqlx::query(
        "INSERT INTO models (tenant_id, name, kind, provider, base_url, model, api_key)
         VALUES ($1, 'legacy', 'embedding', 'openai', $2, 'sim-embed', 'sk-legacy-plaintext')",
    )
    .bind(&env.tenant_id)
    .bind(&base)
    .execute(&env.db)
    .await
    .expect("legacy row");

    let new_key = SecretKey::generate();
    let rotated = SecretKeys {
        current: Some(new_key.clone()),
        previous: env.secrets.current.clone(),
    };
    let row = models::find(&env.db, &env.tenant_id, ModelKind::Chat, "rotated")
        .await
        .expect("query")
        .expect("row");
    let (spec, stored) = row.open(&rotated).expect("previous key decrypts");
    assert_eq!(
        (spec.api_key.as_str(), stored),
        ("sk-rotated-0123456789", Stored::Previous)
    );
    let legacy = models::load(
        &env.db,
        &rotated,
        &env.tenant_id,
        ModelKind::Embedding,
        "legacy",
    )
    .await
    .expect("legacy plaintext is read")
    .expect("row");
    assert_eq!(legacy.api_key, "sk-legacy-plaintext");

    let report = admin::reencrypt_secrets(&env.db, &rotated)
        .await
        .expect("reencrypt");
    assert_eq!(
        (report.previous, report.plaintext, report.current),
        (1, 1, 0),
        "{report:?}"
    );
    assert!(report.empty >= 10 && report.failed.is_empty(), "{report:?}");
    let again = admin::reencrypt_secrets(&env.db, &rotated)
        .await
        .expect("reencrypt");
    assert_eq!(
        (again.previous, again.plaintext, again.current),
        (0, 0, 2),
        "{again:?}"
    );

    // The new key alone now opens both; the old key alone opens neither.
    let only_new = SecretKeys {
        current: Some(new_key),
        previous: None,
    };
    for (kind, name, plain) in [
        (ModelKind::Chat, "rotated", "sk-rotated-0123456789"),
        (ModelKind::Embedding, "legacy", "sk-legacy-plaintext"),
    ] {
        let stored = stored_key(&env, kind.as_str(), name).await;
        assert!(stored.starts_with(PREFIX), "{stored}");
        let spec = models::load(&env.db, &only_new, &env.tenant_id, kind, name)
            .await
            .expect("new key decrypts")
            .expect("row");
        assert_eq!(spec.api_key, plain);
        let old = models::load(&env.db, &env.secrets, &env.tenant_id, kind, name).await;
        let err = old.expect_err("old key no longer decrypts").to_string();
        assert!(err.contains(name) && !err.contains(plain), "{err}");
    }
    env.stop().await;
}

/// Unknown kinds and providers, and providers that cannot serve the kind, are rejected when
/// the model is created, with the valid values in the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_unfit_providers_are_rejected_at_creation() {
    let env = start().await;
    let base = env.sim.api_base();
    let put = |kind: &'static str, provider: &'static str| {
        let m = NewModel {
            provider,
            ..model(&base, kind, "bad", "")
        };
        let env = &env;
        async move {
            admin::put_model(&env.db, &env.secrets, &env.tenant_id, &m)
                .await
                .expect_err("rejected")
                .to_string()
        }
    };
    let err = put("chat", "opnai").await;
    assert!(err.contains("unknown provider `opnai`"), "{err}");
    for valid in [
        "openai",
        "vllm",
        "ollama",
        "localai",
        "xinference",
        "tgi",
        "openai-compatible",
        "local",
        "jina",
        "nvidia",
        "cohere",
    ] {
        assert!(err.contains(valid), "{valid} missing from: {err}");
    }
    let err = put("llm", "openai").await;
    assert!(
        err.contains("valid values: chat, embedding, rerank"),
        "{err}"
    );
    for (kind, provider) in [("chat", "jina"), ("chat", "local"), ("rerank", "openai")] {
        let err = put(kind, provider).await;
        assert!(
            err.contains(&format!(
                "provider `{provider}` does not serve {kind} models"
            )),
            "{err}"
        );
    }
    let err = put("rerank", "local").await;
    assert!(
        err.contains("rerank providers: localai, xinference, jina, nvidia, cohere"),
        "{err}"
    );
    let none: i64 = sqlx::query_scalar("SELECT count(*) FROM models WHERE name = 'bad'")
        .fetch_one(&env.db)
        .await
        .expect("count");
    assert_eq!(none, 0);
    env.stop().await;
}
