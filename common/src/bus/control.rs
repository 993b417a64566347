//! Job control over Redis, beside the event stream: reading a job's replay stream, remembering
//! who owns a job, and cancellation.
//!
//! Cancelling a job sets `{prefix}:cancelled:{job_id}` (so a worker that receives the job later
//! skips it) and publishes the id on `{prefix}:cancel` (so the worker running it stops at once).
//! Each worker process listens on that channel with one connection ([`CancelWatcher`]) and keeps
//! a token per running job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::BusError;
use super::redis::replay_key;

fn cancelled_key(prefix: &str, job_id: Uuid) -> String {
    format!("{prefix}:cancelled:{job_id}")
}
fn owner_key(prefix: &str, job_id: Uuid) -> String {
    format!("{prefix}:job:{job_id}")
}
fn cancel_channel(prefix: &str) -> String {
    format!("{prefix}:cancel")
}

/// Ingress side: replay reads, job ownership, cancel signals.
#[derive(Clone)]
pub struct RedisControl {
    conn: ConnectionManager,
    prefix: String,
}

impl RedisControl {
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, BusError> {
        let client = redis::Client::open(url)?;
        Ok(RedisControl {
            conn: ConnectionManager::new(client).await?,
            prefix: prefix.to_string(),
        })
    }

    /// Raw events of a job's replay stream, in order (empty when it expired or never existed).
    pub async fn replay(&self, job_id: Uuid) -> Result<Vec<Vec<u8>>, BusError> {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(replay_key(&self.prefix, job_id))
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await?;
        Ok(reply
            .ids
            .into_iter()
            .filter_map(|entry| match entry.map.get("e") {
                Some(redis::Value::BulkString(b)) => Some(b.clone()),
                _ => None,
            })
            .collect())
    }

    /// Records that `tenant_id` owns the job, for `ttl` (stop and resume check it).
    pub async fn set_owner(
        &self,
        job_id: Uuid,
        tenant_id: &str,
        ttl: Duration,
    ) -> Result<(), BusError> {
        let mut conn = self.conn.clone();
        let _: () = redis::cmd("SET")
            .arg(owner_key(&self.prefix, job_id))
            .arg(tenant_id)
            .arg("EX")
            .arg(ttl.as_secs().max(1) + super::redis::REPLAY_TTL_S as u64)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    pub async fn owner(&self, job_id: Uuid) -> Result<Option<String>, BusError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("GET")
            .arg(owner_key(&self.prefix, job_id))
            .query_async(&mut conn)
            .await?)
    }

    /// Cancels a job, queued or running.
    pub async fn cancel(&self, job_id: Uuid) -> Result<(), BusError> {
        let mut conn = self.conn.clone();
        let _: () = redis::pipe()
            .cmd("SET")
            .arg(cancelled_key(&self.prefix, job_id))
            .arg(1)
            .arg("EX")
            .arg(3600)
            .ignore()
            .cmd("PUBLISH")
            .arg(cancel_channel(&self.prefix))
            .arg(job_id.to_string())
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// True while the connection answers.
    pub async fn ping(&self) -> bool {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok()
    }
}

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
    pub async fn start(url: &str, prefix: &str) -> Result<Self, BusError> {
        let client = redis::Client::open(url)?;
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
