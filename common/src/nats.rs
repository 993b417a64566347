//! One NATS connection, as the broker and the bus open it: TLS (rustls on ring, public roots
//! plus `RAGQ_EXTRA_CA_FILE`) when the URL says `tls://`, credentials from the URL, and a
//! connection name that shows in the server's `connz`. async-nats reconnects by itself, for
//! ever, with backoff; subscriptions are re-established on the new connection.

use std::time::Duration;

use crate::config::NatsConfig;
use crate::tls::TlsRoots;

#[derive(Debug, thiserror::Error)]
pub enum NatsConnectError {
    #[error("NATS TLS configuration: {0}")]
    Tls(String),
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
}

/// Connects to `cfg.url` (bounded: a server that is not there fails the start, it is not
/// waited for).
pub async fn connect(
    cfg: &NatsConfig,
    name: &str,
    roots: &TlsRoots,
) -> Result<async_nats::Client, NatsConnectError> {
    let mut opts = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(10)))
        .retry_on_initial_connect()
        .max_reconnects(None)
        // Events for a job are small and many: never let a slow consumer of the client's own
        // buffer drop them silently (the subscriber cuts its slow readers itself).
        .subscription_capacity(65_536)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Disconnected => tracing::warn!("NATS connection lost"),
                async_nats::Event::Connected => tracing::info!("NATS connected"),
                other => tracing::debug!(event = %other, "NATS event"),
            }
        });
    if cfg.url.starts_with("tls://") || roots.has_extra() {
        let tls = roots
            .client_config()
            .map_err(|e| NatsConnectError::Tls(e.to_string()))?;
        opts = opts.tls_client_config(tls);
        if cfg.url.starts_with("tls://") {
            opts = opts.require_tls(true);
        }
    }
    let connect = opts.connect(cfg.url.as_str());
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(NatsConnectError::Connect(e.to_string())),
        Err(_) => Err(NatsConnectError::Connect(
            "no answer within 10 s".to_string(),
        )),
    }
}

/// A stream name from a subject prefix (stream names may not contain `.`, `*`, `>` or spaces).
pub fn stream_name(prefix: &str, what: &str) -> String {
    let clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{clean}_{what}")
}
