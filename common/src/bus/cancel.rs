//! Worker side of cancellation: one listener per worker process.
//!
//! Cancelling a job sets `{prefix}:cancelled:{job_id}` (so a worker that receives the job later
//! skips it) and publishes the id on `{prefix}:cancel` (so the worker running it stops at once;
//! see [`super::control::RedisControl::cancel`]). Each worker process listens on that channel
//! with one connection ([`CancelWatcher`]) and keeps a token per running job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::BusError;
use super::endpoint::RedisEndpoint;
use super::keys::{cancel_channel, cancelled_key};

/// Worker side: one listener per process for cancel signals (see the module docs).
#[derive(Clone)]
pub struct CancelWatcher {
    conn: ConnectionManager,
    prefix: String,
    tokens: Arc<Mutex<HashMap<Uuid, CancellationToken>>>,
}

/// A running job's registration; dropping it forgets the job.
pub struct Watch {
    pub token: CancellationToken,
    tokens: Arc<Mutex<HashMap<Uuid, CancellationToken>>>,
    job_id: Uuid,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Ok(mut t) = self.tokens.lock() {
            t.remove(&self.job_id);
        }
    }
}

impl CancelWatcher {
    /// Connects and starts listening (reconnecting by itself if the connection drops).
    pub async fn start(endpoint: &RedisEndpoint, prefix: &str) -> Result<Self, BusError> {
        let client = endpoint.client().clone();
        let conn = ConnectionManager::new(client.clone()).await?;
        let watcher = CancelWatcher {
            conn,
            prefix: prefix.to_string(),
            tokens: Arc::new(Mutex::new(HashMap::new())),
        };
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(cancel_channel(prefix)).await?;
        let tokens = watcher.tokens.clone();
        let channel = cancel_channel(prefix);
        tokio::spawn(async move {
            loop {
                {
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        let Ok(id) = std::str::from_utf8(msg.get_payload_bytes())
                            .unwrap_or("")
                            .parse::<Uuid>()
                        else {
                            continue;
                        };
                        if let Some(token) = tokens.lock().ok().and_then(|t| t.get(&id).cloned()) {
                            token.cancel();
                        }
                    }
                }
                if Arc::strong_count(&tokens) <= 1 {
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

    /// Registers a job about to run. The token is already cancelled when the job was cancelled
    /// while it waited in the queue.
    pub async fn watch(&self, job_id: Uuid) -> Watch {
        let token = CancellationToken::new();
        if let Ok(mut t) = self.tokens.lock() {
            t.insert(job_id, token.clone());
        }
        let mut conn = self.conn.clone();
        let cancelled: Result<Option<String>, _> = redis::cmd("GET")
            .arg(cancelled_key(&self.prefix, job_id))
            .query_async(&mut conn)
            .await;
        if matches!(cancelled, Ok(Some(_))) {
            token.cancel();
        }
        Watch {
            token,
            tokens: self.tokens.clone(),
            job_id,
        }
    }
}
