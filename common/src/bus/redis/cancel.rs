//! The Redis side of cancellation: the mark is `{prefix}:cancelled:{job_id}`, the signal a
//! publish of the job id on `{prefix}:cancel` (see [`super::control::RedisControl`]). Each
//! worker process listens on that channel with one connection, reconnecting by itself.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use redis::aio::ConnectionManager;
use uuid::Uuid;

use super::endpoint::RedisEndpoint;
use super::keys::{cancel_channel, cancelled_key};
use crate::bus::BusError;
use crate::bus::cancel::{CancelMarks, CancelWatcher};

struct RedisMarks {
    conn: ConnectionManager,
    prefix: String,
}

#[async_trait]
impl CancelMarks for RedisMarks {
    async fn is_cancelled(&self, job_id: Uuid) -> bool {
        let mut conn = self.conn.clone();
        let cancelled: Result<Option<String>, _> = redis::cmd("GET")
            .arg(cancelled_key(&self.prefix, job_id))
            .query_async(&mut conn)
            .await;
        matches!(cancelled, Ok(Some(_)))
    }
}

/// Connects and starts listening; the listener ends when the last watcher clone is dropped.
pub async fn start(endpoint: &RedisEndpoint, prefix: &str) -> Result<CancelWatcher, BusError> {
    let client = endpoint.client().clone();
    let conn = endpoint.connection_manager().await?;
    let watcher = CancelWatcher::new(Arc::new(RedisMarks {
        conn,
        prefix: prefix.to_string(),
    }));
    let channel = cancel_channel(prefix);
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(&channel).await?;
    let listener = watcher.clone();
    tokio::spawn(async move {
        loop {
            {
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    if let Ok(id) = std::str::from_utf8(msg.get_payload_bytes())
                        .unwrap_or("")
                        .parse::<Uuid>()
                    {
                        listener.signal(id);
                    }
                }
            }
            if !listener.in_use() {
                return;
            }
            tracing::warn!("cancel listener lost its connection; reconnecting");
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Ok(mut p) = client.get_async_pubsub().await
                    && p.subscribe(&channel).await.is_ok()
                {
                    pubsub = p;
                    break;
                }
            }
        }
    });
    Ok(watcher)
}
