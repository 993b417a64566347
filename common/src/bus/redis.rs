//! Redis implementation of the event bus: `PUBLISH` on `{prefix}:stream:{job_id}`.
//!
//! [`RedisSubscriber`] owns **one** pub/sub connection per process. A router task reads every
//! message from it and forwards the payload to the bounded channel of the subscription that
//! owns the channel name. A subscriber that does not drain its channel fast enough is cut off
//! (its channel is closed, [`Closed::SlowReader`]) instead of growing memory without bound.
//! When the connection drops, the router reconnects and resubscribes every open stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use redis::aio::{ConnectionManager, PubSubSink, PubSubStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{BusError, Closed, EventPublisher, EventSubscriber, Subscription};
use crate::event::{EventBody, StreamEvent};

/// Channel name of a job's events.
pub fn channel(prefix: &str, job_id: Uuid) -> String {
    format!("{prefix}:stream:{job_id}")
}

/// Key of a job's replay stream (a capped-by-time Redis Stream of every event).
pub fn replay_key(prefix: &str, job_id: Uuid) -> String {
    format!("{prefix}:replay:{job_id}")
}

/// How long a job's replay stream lives after its last event.
pub const REPLAY_TTL_S: i64 = 600;

/// Worker side: publishes events over a multiplexed connection. Every event is appended to the
/// job's replay stream (expiring [`REPLAY_TTL_S`] after the last event — an expiry, not MAXLEN
/// trimming, so a reader's cursor is never cut) and then published, in one round trip.
#[derive(Clone)]
pub struct RedisPublisher {
    conn: ConnectionManager,
    prefix: String,
}

impl RedisPublisher {
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, BusError> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new(client).await?;
        Ok(RedisPublisher {
            conn,
            prefix: prefix.to_string(),
        })
    }
}

#[async_trait]
impl EventPublisher for RedisPublisher {
    async fn publish(&self, job_id: Uuid, event: &StreamEvent) -> Result<(), BusError> {
        let mut conn = self.conn.clone();
        let payload = event.encode();
        let key = replay_key(&self.prefix, job_id);
        let mut pipe = redis::pipe();
        pipe.cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg("e")
            .arg(&payload)
            .ignore();
        // The expiry is set when an attempt starts and renewed by its terminal event — not on
        // every delta: a job's stream never lives longer than its deadline (minutes), well
        // under the TTL.
        if event.seq == 1 || matches!(event.body, EventBody::Reset) || event.body.is_terminal() {
            pipe.cmd("EXPIRE").arg(&key).arg(REPLAY_TTL_S).ignore();
        }
        pipe.cmd("PUBLISH")
            .arg(channel(&self.prefix, job_id))
            .arg(&payload)
            .ignore();
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    async fn last_seq(&self, job_id: Uuid) -> Result<u64, BusError> {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(replay_key(&self.prefix, job_id))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        Ok(reply
            .ids
            .first()
            .and_then(|entry| match entry.map.get("e") {
                Some(redis::Value::BulkString(b)) => StreamEvent::decode(b).ok(),
                _ => None,
            })
            .map_or(0, |e| e.seq))
    }
}

struct Route {
    tx: mpsc::Sender<Vec<u8>>,
    closed: Arc<Mutex<Option<Closed>>>,
}

struct Shared {
    routes: Mutex<HashMap<String, Route>>,
    sink: Mutex<Option<PubSubSink>>,
    unsubscribe: mpsc::UnboundedSender<String>,
}

/// Ingress side: one pub/sub connection multiplexing every open stream (see the module docs).
#[derive(Clone)]
pub struct RedisSubscriber {
    shared: Arc<Shared>,
    prefix: String,
    buffer: usize,
    name: String,
}

/// Opens a pub/sub connection named `name` (visible in `CLIENT LIST`).
async fn open_pubsub(url: &str, name: &str) -> Result<(PubSubSink, PubSubStream), BusError> {
    let client = redis::Client::open(url)?;
    let info = client.get_connection_info().clone();
    let (host, port) = match info.addr() {
        redis::ConnectionAddr::Tcp(h, p) => (h.clone(), *p),
        other => {
            return Err(BusError::Connection(format!(
                "unsupported address {other:?}"
            )));
        }
    };
    let mut tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| BusError::Connection(e.to_string()))?;
    tcp.set_nodelay(true)
        .map_err(|e| BusError::Connection(e.to_string()))?;
    // Name the connection before it enters subscribe mode, so operators and tests can find it.
    let cmd = format!(
        "*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n${}\r\n{}\r\n",
        name.len(),
        name
    );
    tcp.write_all(cmd.as_bytes())
        .await
        .map_err(|e| BusError::Connection(e.to_string()))?;
    let mut reply = [0u8; 5];
    tcp.read_exact(&mut reply)
        .await
        .map_err(|e| BusError::Connection(e.to_string()))?;
    if &reply != b"+OK\r\n" {
        return Err(BusError::Connection("CLIENT SETNAME failed".into()));
    }
    let pubsub = redis::aio::PubSub::new(info.redis_settings(), tcp).await?;
    Ok(pubsub.split())
}

impl RedisSubscriber {
    /// Connects and starts the router task. `buffer` bounds the events queued per subscription.
    pub async fn connect(
        url: &str,
        prefix: &str,
        name: &str,
        buffer: usize,
    ) -> Result<Self, BusError> {
        let (sink, stream) = open_pubsub(url, name).await?;
        let (unsub_tx, unsub_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            routes: Mutex::new(HashMap::new()),
            sink: Mutex::new(Some(sink)),
            unsubscribe: unsub_tx,
        });
        tokio::spawn(route_messages(
            shared.clone(),
            stream,
            url.to_string(),
            name.to_string(),
        ));
        tokio::spawn(unsubscribe_loop(shared.clone(), unsub_rx));
        Ok(RedisSubscriber {
            shared,
            prefix: prefix.to_string(),
            buffer: buffer.max(1),
            name: name.to_string(),
        })
    }

    /// The name of the one pub/sub connection (as shown by `CLIENT LIST`).
    pub fn connection_name(&self) -> &str {
        &self.name
    }

    /// Number of open subscriptions.
    pub fn open_streams(&self) -> usize {
        self.shared.routes.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// True while the pub/sub connection is up (false while reconnecting).
    pub fn is_connected(&self) -> bool {
        self.shared
            .sink
            .lock()
            .map(|s| s.is_some())
            .unwrap_or(false)
    }

    fn sink(&self) -> Option<PubSubSink> {
        self.shared.sink.lock().ok().and_then(|s| s.clone())
    }
}

/// Reads every message and hands it to its subscription; reconnects when the connection drops.
async fn route_messages(shared: Arc<Shared>, mut stream: PubSubStream, url: String, name: String) {
    loop {
        while let Some(msg) = stream.next().await {
            let name = msg.get_channel_name();
            let mut routes = match shared.routes.lock() {
                Ok(r) => r,
                Err(_) => return,
            };
            let Some(route) = routes.get(name) else {
                continue;
            };
            if let Err(mpsc::error::TrySendError::Full(_)) =
                route.tx.try_send(msg.get_payload_bytes().to_vec())
            {
                if let Ok(mut c) = route.closed.lock() {
                    *c = Some(Closed::SlowReader);
                }
                let channel = name.to_string();
                routes.remove(&channel);
                let _ = shared.unsubscribe.send(channel);
            }
        }
        // The connection is gone: mark the sink unusable and reconnect with backoff.
        if let Ok(mut s) = shared.sink.lock() {
            *s = None;
        }
        tracing::warn!("redis pub/sub connection lost; reconnecting");
        let mut delay = Duration::from_millis(50);
        loop {
            if Arc::strong_count(&shared) <= 2 {
                return; // only this task and the unsubscribe task are left
            }
            match open_pubsub(&url, &name).await {
                Ok((mut sink, new_stream)) => {
                    let channels: Vec<String> = shared
                        .routes
                        .lock()
                        .map(|r| r.keys().cloned().collect())
                        .unwrap_or_default();
                    if !channels.is_empty() && sink.subscribe(&channels).await.is_err() {
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    if let Ok(mut s) = shared.sink.lock() {
                        *s = Some(sink);
                    }
                    // Events published while we were away are only in the replay streams: an
                    // empty payload tells each reader to catch up from there.
                    if let Ok(routes) = shared.routes.lock() {
                        for route in routes.values() {
                            let _ = route.tx.try_send(Vec::new());
                        }
                    }
                    tracing::info!(streams = channels.len(), "redis pub/sub reconnected");
                    stream = new_stream;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "redis pub/sub reconnect failed");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// Unsubscribes channels whose subscription was dropped, in batches.
async fn unsubscribe_loop(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<String>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 256).await > 0 {
        let sink = shared.sink.lock().ok().and_then(|s| s.clone());
        if let Some(mut sink) = sink {
            // A channel re-subscribed in between by a new stream keeps its route: only drop
            // channels that no longer have one.
            let stale: Vec<String> = match shared.routes.lock() {
                Ok(routes) => batch
                    .drain(..)
                    .filter(|c| !routes.contains_key(c))
                    .collect(),
                Err(_) => return,
            };
            if !stale.is_empty()
                && let Err(e) = sink.unsubscribe(&stale).await
            {
                tracing::warn!(error = %e, "redis unsubscribe failed");
            }
        }
        batch.clear();
    }
}

struct RouteGuard {
    shared: Arc<Shared>,
    channel: String,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        if let Ok(mut routes) = self.shared.routes.lock() {
            routes.remove(&self.channel);
        }
        let _ = self
            .shared
            .unsubscribe
            .send(std::mem::take(&mut self.channel));
    }
}

#[async_trait]
impl EventSubscriber for RedisSubscriber {
    async fn subscribe(&self, job_id: Uuid) -> Result<Subscription, BusError> {
        let name = channel(&self.prefix, job_id);
        let (tx, rx) = mpsc::channel(self.buffer);
        let closed = Arc::new(Mutex::new(None));
        if let Ok(mut routes) = self.shared.routes.lock() {
            routes.insert(
                name.clone(),
                Route {
                    tx,
                    closed: closed.clone(),
                },
            );
        }
        let guard = RouteGuard {
            shared: self.shared.clone(),
            channel: name.clone(),
        };
        let Some(mut sink) = self.sink() else {
            return Err(BusError::Connection("redis pub/sub is reconnecting".into()));
        };
        sink.subscribe(&name).await?;
        Ok(Subscription::new(rx, closed, Box::new(guard)))
    }
}
