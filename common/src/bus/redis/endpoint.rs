//! Where Redis is and how to reach it: the URL (`redis://`, `rediss://`, with `user:password@`
//! for AUTH and ACL users, `/db`) and the trust anchors for `rediss://`.
//!
//! redis-rs does the whole connection set-up (TLS handshake, `HELLO`/`AUTH`, `SELECT`); ragq
//! only builds the [`redis::Client`] once per process and hands it to the publisher, the
//! subscriber, the control connection and the cancel watcher.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion};

use crate::bus::BusError;
use crate::tls::TlsRoots;

/// Bound on connecting and on every command's reply, on every connection ragq makes. redis-rs's
/// own default reply timeout, 500 ms, failed the owner record of 1,272 of 19,600 RAGFlow streams
/// opened in 40 s on a saturated 2-core machine (HTTP 503s, docs/BENCHMARKS.md): a busy server
/// is not a lost one. A Redis that is down fails at once (connection refused), not after this.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// A validated Redis endpoint.
#[derive(Clone)]
pub struct RedisEndpoint {
    client: redis::Client,
    tls: bool,
}

impl std::fmt::Debug for RedisEndpoint {
    // The URL may carry a password: show only what is safe.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEndpoint")
            .field(
                "addr",
                &self.client.get_connection_info().addr().to_string(),
            )
            .field("tls", &self.tls)
            .finish()
    }
}

impl RedisEndpoint {
    /// Parses `url`. For `rediss://` the server is verified against `roots` (public roots plus
    /// the extra CA file); `rediss://…#insecure` is refused rather than silently accepted.
    pub fn new(url: &str, roots: &TlsRoots) -> Result<Self, BusError> {
        let info = url
            .into_connection_info()
            .map_err(|e| BusError::Config(format!("bad Redis URL: {e}")))?;
        let (tls, insecure) = match info.addr() {
            redis::ConnectionAddr::TcpTls { insecure, .. } => (true, *insecure),
            _ => (false, false),
        };
        if insecure {
            return Err(BusError::Config(
                "`rediss://…#insecure` (no certificate check) is not supported: give the CA with RAGQ_EXTRA_CA_FILE".into(),
            ));
        }
        let client = if tls && roots.has_extra() {
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(roots.bundle_pem()),
                },
            )?
        } else {
            redis::Client::open(info)?
        };
        Ok(RedisEndpoint { client, tls })
    }

    /// The client for ordinary connections (the URL's protocol, RESP2 unless it says otherwise).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// A multiplexed, reconnecting connection for commands (publishing, control, cancel marks),
    /// bounded by [`COMMAND_TIMEOUT`].
    pub async fn connection_manager(&self) -> Result<ConnectionManager, BusError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT));
        Ok(ConnectionManager::new_with_config(self.client.clone(), config).await?)
    }

    /// A client for the same server speaking RESP3, whose connections can subscribe to channels
    /// and still run ordinary commands (the ingress's one subscriber connection needs both).
    pub fn resp3_client(&self) -> Result<redis::Client, BusError> {
        let info = self.client.get_connection_info().clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        Ok(redis::Client::open(info.set_redis_settings(settings))?)
    }

    /// Connects with both protocols the bus uses (RESP2 for publishing and control, RESP3 for
    /// the ingress's subscriber: Redis ≥ 6) and sends `PING`.
    pub async fn ping(&self) -> Result<String, BusError> {
        let mut conn = self.client.get_multiplexed_async_connection().await?;
        let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
        let mut resp3 = self
            .resp3_client()?
            .get_multiplexed_async_connection()
            .await?;
        let _: String = redis::cmd("PING").query_async(&mut resp3).await?;
        Ok(pong)
    }

    /// True for `rediss://`.
    pub fn is_tls(&self) -> bool {
        self.tls
    }
}
