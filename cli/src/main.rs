//! `ragq`: the operator's command-line tool. Creates tenants and API keys, model settings,
//! datasets loaded from a folder, and chats; lists models (keys masked) and re-encrypts their
//! API keys after a rotation of `RAGQ_SECRET_KEY`. Output is `NAME=value` lines, so scripts can
//! `eval` or `grep` them.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ragq_cli::admin::{self, NewChat, NewModel};
use ragq_common::config::{BrokerConfig, BusConfig, DbConfig, NatsConfig};
use ragq_common::providers::{Providers, Timeouts};
use ragq_common::secret::SecretConfig;

#[derive(Parser)]
#[command(name = "ragq", version, about = "ragq operator tool")]
struct Cli {
    #[command(flatten)]
    db: DbConfig,
    #[command(flatten)]
    broker: BrokerConfig,
    #[command(flatten)]
    bus: BusConfig,
    #[command(flatten)]
    nats: NatsConfig,
    #[command(flatten)]
    tls: ragq_common::tls::TlsConfig,
    #[command(flatten)]
    secrets: SecretConfig,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Apply database migrations and exit.
    Migrate,
    /// Check the configuration: reach PostgreSQL, the broker and the bus, and call each model of a
    /// tenant (or of every tenant) once. One line per check; exits 1 if any check fails.
    Doctor {
        /// Only this tenant's models.
        #[arg(long)]
        tenant: Option<String>,
        /// Only models with this name (repeatable).
        #[arg(long = "model")]
        models: Vec<String>,
        /// Bound on each check, in seconds.
        #[arg(long, default_value_t = 10)]
        timeout_s: u64,
    },
    /// List dead-lettered jobs (without removing them): one JSON line each.
    DlqList {
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Put dead-lettered jobs back on their queue: all of them, or only `--job ID`.
    DlqReplay {
        #[arg(long)]
        job: Option<uuid::Uuid>,
    },
    /// Create a tenant and its first API key (printed once).
    CreateTenant {
        #[arg(long)]
        name: String,
    },
    /// Set a tenant's fairness limits (the api's defaults are RAGQ_TENANT_RATE_PER_MINUTE and
    /// RAGQ_TENANT_MAX_JOBS): a number (0 = unlimited) or `default`. Prints the stored values;
    /// the api applies them within 10 s.
    SetTenantLimits {
        #[arg(long)]
        tenant: String,
        /// Jobs the tenant may start per minute: N (0 = unlimited) or `default`.
        #[arg(long)]
        rate_per_minute: Option<ragq_common::tenant_limits::Change>,
        /// Jobs of the tenant running at once: N (0 = unlimited) or `default`.
        #[arg(long)]
        max_concurrent_jobs: Option<ragq_common::tenant_limits::Change>,
    },
    /// List tenants with their fairness limits, one line each (`default` = the api's setting).
    ListTenants,
    /// Add or replace a model setting of a tenant.
    AddModel {
        #[arg(long)]
        tenant: String,
        /// chat, embedding or rerank
        #[arg(long)]
        kind: String,
        /// Name chats and datasets use to refer to it.
        #[arg(long)]
        name: String,
        /// Provider. chat: openai, vllm, ollama, localai, xinference, tgi, openai-compatible;
        /// embedding: the same or local (built-in embedder); rerank: jina, xinference, localai,
        /// nvidia, cohere.
        #[arg(long)]
        provider: String,
        /// Base URL including the version prefix, e.g. http://127.0.0.1:9390/v1
        #[arg(long, default_value = "")]
        base_url: String,
        /// Model name sent upstream (defaults to --name).
        #[arg(long)]
        model: Option<String>,
        /// Upstream API key, stored encrypted with RAGQ_SECRET_KEY (prefer the variable).
        #[arg(
            long,
            env = "RAGQ_MODEL_API_KEY",
            default_value = "",
            hide_env_values = true
        )]
        api_key: String,
        /// Context budget in tokens.
        #[arg(long, default_value_t = 8192)]
        max_tokens: i32,
    },
    /// List a tenant's models, one line each, API keys masked.
    ListModels {
        #[arg(long)]
        tenant: String,
    },
    /// Encrypt every stored model API key with RAGQ_SECRET_KEY: legacy plaintext keys and keys
    /// encrypted with RAGQ_SECRET_KEY_PREVIOUS (after a key rotation).
    ReencryptSecrets,
    /// Create a dataset and load every .txt/.md/.html file of a folder into it.
    LoadDataset {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        embedding_model: String,
        folder: PathBuf,
    },
    /// Create a chat assistant.
    CreateChat {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        llm: String,
        #[arg(long = "dataset")]
        datasets: Vec<String>,
        #[arg(long, default_value = "")]
        rerank: String,
        #[arg(long, default_value_t = 6)]
        top_n: i32,
        #[arg(long, default_value_t = 0.2)]
        similarity_threshold: f32,
        #[arg(long, default_value_t = 0.3)]
        vector_similarity_weight: f32,
        /// Rewrite follow-up questions with the chat model before retrieval (RAGFlow's default).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        refine_multiturn: bool,
    },
    /// Batches: answer a questions file through a chat (`run`), and `status`, `cancel`,
    /// `results` of any batch.
    Batch {
        #[command(subcommand)]
        cmd: ragq_cli::batch::BatchCmd,
    },
    /// Embed tokens of a tenant (embedded chatbots and search pages; RAGFlow's `beta` token).
    EmbedToken {
        #[command(subcommand)]
        cmd: EmbedTokenCmd,
    },
}

#[derive(Subcommand)]
enum EmbedTokenCmd {
    /// Create a token (printed once as RAGQ_EMBED_TOKEN).
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "")]
        label: String,
        /// Requests per minute the token may make.
        #[arg(long, default_value_t = ragq_common::embed_token::DEFAULT_RATE_PER_MINUTE)]
        rate_per_minute: i32,
    },
    /// List a tenant's tokens, one line each (never the token itself).
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Revoke a token by its id; it authorises nothing from the next request on.
    Revoke {
        #[arg(long)]
        tenant: String,
        id: String,
    },
}

async fn embed_token(db: &sqlx::PgPool, cmd: EmbedTokenCmd) -> anyhow::Result<()> {
    use ragq_common::embed_token as et;
    match cmd {
        EmbedTokenCmd::Create {
            tenant,
            label,
            rate_per_minute,
        } => {
            let created = et::create(db, &tenant, &label, Some(rate_per_minute)).await?;
            println!(
                "RAGQ_EMBED_TOKEN_ID={}\nRAGQ_EMBED_TOKEN={}",
                created.row.id, created.token
            );
        }
        EmbedTokenCmd::List { tenant } => {
            for t in et::list(db, &tenant).await? {
                println!(
                    "id={} label={:?} rate_per_minute={} created={} revoked={}",
                    t.id,
                    t.label,
                    t.rate_per_minute,
                    t.created_at.to_rfc3339(),
                    t.revoked_at
                        .map_or_else(|| "no".to_string(), |r| r.to_rfc3339())
                );
            }
        }
        EmbedTokenCmd::Revoke { tenant, id } => {
            if !et::revoke(db, &tenant, &id).await? {
                anyhow::bail!("tenant {tenant} has no live embed token {id}");
            }
            println!("REVOKED={id}");
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ragq_common::telemetry::init();
    let cli = Cli::parse();
    let roots = ragq_common::tls::TlsRoots::load(&cli.tls).context("TLS")?;
    let keys = cli.secrets.keys()?;
    if let Cmd::Doctor {
        tenant,
        models,
        timeout_s,
    } = &cli.cmd
    {
        let healthy = doctor(&cli, &roots, &keys, tenant.as_deref(), models, *timeout_s).await?;
        std::process::exit(if healthy { 0 } else { 1 });
    }
    let db = ragq_common::db::connect_and_migrate(&cli.db, &roots)
        .await
        .context("database")?;
    match cli.cmd {
        Cmd::Migrate => println!("MIGRATED=1"),
        Cmd::Doctor { .. } => unreachable!("handled before connecting"),
        Cmd::DlqList { limit } => {
            let broker = connect_broker(&cli.broker, &cli.nats, &roots).await?;
            for dead in broker.dead_letters(limit).await? {
                let line = match ragq_common::job::Job::decode(&dead.payload) {
                    Ok(job) => serde_json::json!({
                        "job_id": job.id, "kind": job.kind, "tenant_id": job.tenant_id, "chat_id": job.chat_id,
                        "question": job.question, "reason": dead.reason,
                    }),
                    Err(e) => serde_json::json!({
                        "undecodable": e.to_string(), "reason": dead.reason,
                        "payload": String::from_utf8_lossy(&dead.payload),
                    }),
                };
                println!("{line}");
            }
        }
        Cmd::DlqReplay { job } => {
            let broker = connect_broker(&cli.broker, &cli.nats, &roots).await?;
            let n = broker.replay_dead_letters(job).await?;
            println!("REPLAYED={n}");
        }
        Cmd::EmbedToken { cmd } => embed_token(&db, cmd).await?,
        Cmd::Batch { cmd } => {
            let code = batch(&cli.broker, &cli.nats, &roots, &db, cmd).await?;
            std::process::exit(code);
        }
        Cmd::CreateTenant { name } => {
            let t = admin::create_tenant(&db, &name).await?;
            println!("RAGQ_TENANT_ID={}\nRAGQ_API_KEY={}", t.tenant_id, t.api_key);
        }
        Cmd::SetTenantLimits {
            tenant,
            rate_per_minute,
            max_concurrent_jobs,
        } => {
            use ragq_common::tenant_limits::Change;
            anyhow::ensure!(
                rate_per_minute.is_some() || max_concurrent_jobs.is_some(),
                "give --rate-per-minute and/or --max-concurrent-jobs"
            );
            let o = admin::set_tenant_limits(
                &db,
                &tenant,
                rate_per_minute.unwrap_or(Change::Keep),
                max_concurrent_jobs.unwrap_or(Change::Keep),
            )
            .await?;
            println!(
                "RAGQ_TENANT_ID={tenant}\nRATE_PER_MINUTE={}\nMAX_CONCURRENT_JOBS={}",
                admin::limit_text(o.rate_per_minute),
                admin::limit_text(o.max_concurrent_jobs)
            );
        }
        Cmd::ListTenants => {
            for t in ragq_common::tenant_limits::list(&db).await? {
                println!(
                    "id={} name={:?} rate_per_minute={} max_concurrent_jobs={}",
                    t.id,
                    t.name,
                    admin::limit_text(t.limits.rate_per_minute),
                    admin::limit_text(t.limits.max_concurrent_jobs)
                );
            }
        }
        Cmd::AddModel {
            tenant,
            kind,
            name,
            provider,
            base_url,
            model,
            api_key,
            max_tokens,
        } => {
            let spec = NewModel {
                name: &name,
                kind: &kind,
                provider: &provider,
                base_url: &base_url,
                model: model.as_deref().unwrap_or(&name),
                api_key: &api_key,
                max_tokens,
            };
            admin::put_model(&db, &keys, &tenant, &spec).await?;
            println!("MODEL={name}");
        }
        Cmd::ListModels { tenant } => {
            for line in admin::list_models(&db, &keys, &tenant).await? {
                println!("{line}");
            }
        }
        Cmd::ReencryptSecrets => {
            let r = admin::reencrypt_secrets(&db, &keys).await?;
            println!(
                "REENCRYPTED_PLAINTEXT={}\nREENCRYPTED_PREVIOUS={}\nALREADY_CURRENT={}\nNO_KEY={}\nSKIPPED={}\nFAILED={}",
                r.plaintext,
                r.previous,
                r.current,
                r.empty,
                r.skipped,
                r.failed.len()
            );
            for failure in &r.failed {
                eprintln!("not re-encrypted: {failure}");
            }
            anyhow::ensure!(
                r.failed.is_empty(),
                "{} model keys do not decrypt",
                r.failed.len()
            );
        }
        Cmd::LoadDataset {
            tenant,
            name,
            embedding_model,
            folder,
        } => {
            let providers = Providers::new(
                Timeouts {
                    connect: std::time::Duration::from_secs(2),
                    request: std::time::Duration::from_secs(60),
                    idle: std::time::Duration::from_secs(60),
                    retries: 3,
                },
                &roots,
            )?;
            let id = admin::create_dataset(&db, &tenant, &name, &embedding_model).await?;
            let chunks = admin::load_folder(&db, &providers, &keys, &tenant, &id, &folder).await?;
            println!("RAGQ_DATASET_ID={id}\nCHUNKS={chunks}");
        }
        Cmd::CreateChat {
            tenant,
            name,
            llm,
            datasets,
            rerank,
            top_n,
            similarity_threshold,
            vector_similarity_weight,
            refine_multiturn,
        } => {
            let id = admin::create_chat(
                &db,
                &tenant,
                &NewChat {
                    name: &name,
                    llm_model: &llm,
                    dataset_ids: &datasets,
                    rerank_model: &rerank,
                    top_n,
                    similarity_threshold,
                    vector_similarity_weight,
                },
            )
            .await?;
            if !refine_multiturn {
                admin::set_refine_multiturn(&db, &id, false).await?;
            }
            println!("RAGQ_CHAT_ID={id}");
        }
    }
    Ok(())
}

/// `ragq batch …`: returns the exit code.
async fn batch(
    broker: &BrokerConfig,
    nats: &NatsConfig,
    roots: &ragq_common::tls::TlsRoots,
    db: &sqlx::PgPool,
    cmd: ragq_cli::batch::BatchCmd,
) -> anyhow::Result<i32> {
    use ragq_cli::batch::{self, BatchCmd, run};
    let BatchCmd::Run {
        file,
        chat,
        out,
        poll_ms,
        no_progress,
    } = cmd
    else {
        return Ok(batch::query(db, &cmd).await?);
    };
    let broker = connect_broker(broker, nats, roots).await?;
    let args = run::RunArgs {
        file,
        chat_id: chat,
        out,
        poll: std::time::Duration::from_millis(poll_ms.max(50)),
        progress: !no_progress,
    };
    match run::run(db, broker.as_ref(), &args).await {
        Ok(summary) => Ok(batch::report(&summary)),
        Err(batch::BatchError::BadLines(bad)) => {
            for e in &bad.0 {
                eprintln!("{e}");
            }
            anyhow::bail!("{bad}")
        }
        Err(e) => Err(e.into()),
    }
}

async fn connect_broker(
    cfg: &BrokerConfig,
    nats: &NatsConfig,
    roots: &ragq_common::tls::TlsRoots,
) -> anyhow::Result<std::sync::Arc<dyn ragq_common::broker::Broker>> {
    ragq_common::broker::connect(cfg, nats, "ragq-cli", roots)
        .await
        .with_context(|| format!("broker ({})", cfg.kind.as_str()))
}

/// `ragq doctor`: prints one line per check; true when all passed.
async fn doctor(
    cli: &Cli,
    roots: &ragq_common::tls::TlsRoots,
    keys: &ragq_common::secret::SecretKeys,
    tenant: Option<&str>,
    only: &[String],
    timeout_s: u64,
) -> anyhow::Result<bool> {
    use ragq_cli::doctor;
    let limit = std::time::Duration::from_secs(timeout_s.max(1));
    let checks = doctor::services(&cli.db, &cli.broker, &cli.bus, &cli.nats, roots, limit).await;
    let mut healthy = true;
    for c in &checks {
        println!("{c}");
        healthy &= c.ok();
    }
    if !checks.first().is_some_and(doctor::Check::ok) {
        println!("skip  models: the database is not reachable");
        return Ok(false);
    }
    let db = ragq_common::db::connect(&cli.db, roots).await?;
    let providers = Providers::new(
        Timeouts {
            connect: limit,
            request: limit,
            idle: limit,
            retries: 0,
        },
        roots,
    )?;
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(roots.client_config()?)
        .connect_timeout(limit)
        .timeout(limit)
        .build()?;
    let models = doctor::models(&db, keys, &providers, &http, tenant, only, limit).await?;
    if models.is_empty() {
        println!("skip  models: none configured");
    }
    for c in &models {
        println!("{c}");
        healthy &= c.ok();
    }
    Ok(healthy)
}
