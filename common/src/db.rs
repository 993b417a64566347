//! PostgreSQL connection pool and migrations.
//!
//! Migrations are embedded in the binaries and applied at start. sqlx takes an advisory lock while
//! migrating, so several processes can start at once.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::config::DbConfig;
use crate::tls::TlsRoots;

/// Embedded migrations (`migrations/` at the workspace root).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("bad database URL: {0}")]
    Url(sqlx::Error),
    #[error("database unreachable: {0}")]
    Connect(sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// How PostgreSQL plans the pool's prepared statements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plans {
    /// PostgreSQL's default: custom plans first, a generic one when it looks no worse.
    Auto,
    /// Always the generic plan (`plan_cache_mode = force_generic_plan`). For a process whose
    /// statements are few, fixed and index-driven (the worker): PostgreSQL keeps re-planning a
    /// many-CTE statement such as the retrieval query for every execution (≈ 1 ms of its CPU,
    /// more than executing it) when its cost model rates the generic plan higher.
    Generic,
}

/// A pooled connection idle longer than this is pinged before use.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

/// Opens a pool. Connections are never held across HTTP calls (see the worker), so a small pool
/// serves many concurrent jobs.
pub async fn connect(cfg: &DbConfig, roots: &TlsRoots) -> Result<PgPool, DbError> {
    connect_with(cfg, Plans::Auto, roots).await
}

/// Opens a pool whose connections plan statements as `plans` says.
///
/// TLS follows the URL's `sslmode` (`disable`, `prefer` — sqlx's default —, `require`,
/// `verify-ca`, `verify-full`) and `sslrootcert`; the extra CA file of `roots`, when set, is
/// trusted beside the public roots.
pub async fn connect_with(
    cfg: &DbConfig,
    plans: Plans,
    roots: &TlsRoots,
) -> Result<PgPool, DbError> {
    let mut opts: PgConnectOptions = cfg.url.parse().map_err(DbError::Url)?;
    if let Some(pem) = roots.extra_ca_pem() {
        opts = opts.ssl_root_cert_from_pem(pem.to_vec());
    }
    if plans == Plans::Generic {
        opts = opts.options([("plan_cache_mode", "force_generic_plan")]);
    }
    let opts =
        opts.log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
    PgPoolOptions::new()
        .max_connections(cfg.max_connections)
        .min_connections(1)
        // sqlx pings every connection before handing it out: one more round trip per query.
        // Ping only connections that sat idle (they may have died with a database restart);
        // a busy pool's connections were just used and are handed out at once.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > IDLE_BEFORE_PING {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(opts)
        .await
        .map_err(DbError::Connect)
}

/// Connects and applies pending migrations.
pub async fn connect_and_migrate(cfg: &DbConfig, roots: &TlsRoots) -> Result<PgPool, DbError> {
    connect_and_migrate_with(cfg, Plans::Auto, roots).await
}

/// [`connect_with`], then applies pending migrations.
pub async fn connect_and_migrate_with(
    cfg: &DbConfig,
    plans: Plans,
    roots: &TlsRoots,
) -> Result<PgPool, DbError> {
    let pool = connect_with(cfg, plans, roots).await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// A new RAGFlow-style id: 32 lowercase hex characters.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
