//! Ingress side of the bus: **one** Redis connection per api process carries every open stream.
//!
//! The connection speaks RESP3, so it can hold thousands of channel subscriptions and still
//! answer ordinary commands (`CLIENT SETNAME`, `PING`); redis-rs does the set-up (TLS, `HELLO`
//! with `AUTH`, `SELECT`). Published messages arrive as *push* frames, which the connection's
//! own reader hands to [`route`] without an extra task or queue:
//!
//! - Each open stream is a **reader** with its own bounded buffer of `RAGQ_STREAM_BUFFER`
//!   events. A channel can have any number of readers (a resume while the first stream is still
//!   open, two tabs): routes are keyed by channel *and* reader, every reader gets every event,
//!   and the channel is unsubscribed only when its last reader leaves.
//! - **Slow reader cut:** a reader whose buffer is full is removed and gets
//!   [`Closed::SlowReader`]; the others on the channel go on.
//! - **Reconnect:** when the connection drops (or stops answering the periodic `PING`), the
//!   subscriber is marked down (new subscribes fail → HTTP 503, `/readyz` says `bus: false`),
//!   then a supervisor reconnects with backoff from 50 ms to 2 s, re-subscribes every open
//!   channel and asks every reader to *resync*: read the job's replay stream for what it missed.
//!   A resync request is never lost, even when the reader's buffer is full (it is a flag beside
//!   the buffer, see [`ReaderState`]).
//! - **Bounded outage:** when the connection stays down longer than [`DOWN_BOUND`], every
//!   reader is closed with [`Closed::Disconnected`] (its stream ends with a clear error instead
//!   of waiting for its deadline); streams opened after the reconnect work again.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};
use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

use super::endpoint::{COMMAND_TIMEOUT, RedisEndpoint};
use super::keys::channel;
use crate::bus::{BusError, Closed, EventSubscriber, ReaderState, Subscription};

/// How often the supervisor checks that the connection still answers.
const PING_EVERY: Duration = Duration::from_secs(5);
/// How long the connection may stay down before every open reader is closed.
pub const DOWN_BOUND: Duration = Duration::from_secs(3);
/// Channels per `SUBSCRIBE`/`UNSUBSCRIBE` command.
const BATCH: usize = 256;

struct Reader {
    id: u64,
    tx: mpsc::Sender<Vec<u8>>,
    state: Arc<ReaderState>,
}

impl Reader {
    /// Tells the reader to catch up from the replay stream.
    fn resync(&self) {
        if self.tx.try_send(Vec::new()).is_err() {
            self.state.request_resync();
        }
    }
}

struct Shared {
    /// Channel name → its readers (almost always one).
    routes: Mutex<HashMap<String, Vec<Reader>>>,
    readers: AtomicUsize,
    next_id: AtomicU64,
    /// `None` while reconnecting.
    conn: Mutex<Option<MultiplexedConnection>>,
    /// Woken when the current connection reports its own loss.
    lost: Notify,
    /// Counts connections, so that the loss of an old one is not taken for the current one's.
    generation: AtomicU64,
    unsubscribe: mpsc::UnboundedSender<String>,
}

impl Shared {
    fn conn(&self) -> Option<MultiplexedConnection> {
        self.conn.lock().ok().and_then(|c| c.clone())
    }

    fn set_conn(&self, conn: Option<MultiplexedConnection>) {
        if let Ok(mut c) = self.conn.lock() {
            *c = conn;
        }
    }

    /// Removes one reader; when it was the channel's last, queues the channel's unsubscribe.
    fn remove_reader(&self, channel: &str, id: u64) {
        let Ok(mut routes) = self.routes.lock() else {
            return;
        };
        let Some(readers) = routes.get_mut(channel) else {
            return;
        };
        if let Some(pos) = readers.iter().position(|r| r.id == id) {
            readers.swap_remove(pos);
            self.readers.fetch_sub(1, Ordering::Relaxed);
        }
        if readers.is_empty() {
            routes.remove(channel);
            let _ = self.unsubscribe.send(channel.to_string());
        }
    }

    fn channels(&self) -> Vec<String> {
        self.routes
            .lock()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Closes every reader with [`Closed::Disconnected`]; returns how many there were.
    fn close_all(&self) -> usize {
        let Ok(mut routes) = self.routes.lock() else {
            return 0;
        };
        let mut n = 0;
        for (_, readers) in routes.drain() {
            for r in readers {
                r.state.close(Closed::Disconnected);
                n += 1;
            }
        }
        self.readers.fetch_sub(n, Ordering::Relaxed);
        n
    }

    fn resync_all(&self) {
        if let Ok(routes) = self.routes.lock() {
            routes.values().flatten().for_each(Reader::resync);
        }
    }
}

/// Hands one push frame to the readers of its channel (runs on the connection's reader).
fn route(shared: &Shared, info: PushInfo) {
    match info.kind {
        PushKind::Message => {}
        _ => return, // subscribe / unsubscribe confirmations; disconnection: see `open`
    }
    let mut data = info.data.into_iter();
    let (Some(Value::BulkString(name)), Some(Value::BulkString(payload))) =
        (data.next(), data.next())
    else {
        return;
    };
    let Ok(name) = std::str::from_utf8(&name) else {
        return;
    };
    let Ok(mut routes) = shared.routes.lock() else {
        return;
    };
    let Some(readers) = routes.get_mut(name) else {
        return;
    };
    let mut cut = Vec::new();
    if let [reader] = readers.as_slice() {
        if let Err(mpsc::error::TrySendError::Full(_)) = reader.tx.try_send(payload) {
            cut.push(reader.id);
        }
    } else {
        for reader in readers.iter() {
            if let Err(mpsc::error::TrySendError::Full(_)) = reader.tx.try_send(payload.clone()) {
                cut.push(reader.id);
            }
        }
    }
    if cut.is_empty() {
        return;
    }
    readers.retain(|r| {
        let slow = cut.contains(&r.id);
        if slow {
            r.state.close(Closed::SlowReader);
        }
        !slow
    });
    shared.readers.fetch_sub(cut.len(), Ordering::Relaxed);
    if readers.is_empty() {
        routes.remove(name);
        let _ = shared.unsubscribe.send(name.to_string());
    }
}

/// Opens the subscriber connection, named `name` (visible in `CLIENT LIST`).
async fn open(
    client: &redis::Client,
    name: &str,
    shared: Weak<Shared>,
) -> Result<MultiplexedConnection, BusError> {
    let generation = match shared.upgrade() {
        Some(s) => s.generation.fetch_add(1, Ordering::SeqCst) + 1,
        None => return Err(BusError::Connection("subscriber dropped".into())),
    };
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT))
        .set_push_sender(move |info: PushInfo| {
            if let Some(shared) = shared.upgrade() {
                if info.kind == PushKind::Disconnection {
                    if shared.generation.load(Ordering::SeqCst) == generation {
                        shared.lost.notify_one();
                    }
                } else {
                    route(&shared, info);
                }
            }
            Ok::<(), Infallible>(())
        });
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(name)
        .query_async(&mut conn)
        .await?;
    Ok(conn)
}

/// One pub/sub connection multiplexing every open stream of this process (see the module docs).
#[derive(Clone)]
pub struct RedisSubscriber {
    shared: Arc<Shared>,
    prefix: String,
    buffer: usize,
    name: String,
}

impl RedisSubscriber {
    /// Connects and starts the supervisor. `buffer` bounds the events queued per reader.
    pub async fn connect(
        endpoint: &RedisEndpoint,
        prefix: &str,
        name: &str,
        buffer: usize,
    ) -> Result<Self, BusError> {
        let client = endpoint.resp3_client()?;
        let (unsub_tx, unsub_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            routes: Mutex::new(HashMap::new()),
            readers: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            conn: Mutex::new(None),
            lost: Notify::new(),
            generation: AtomicU64::new(0),
            unsubscribe: unsub_tx,
        });
        let conn = open(&client, name, Arc::downgrade(&shared)).await?;
        shared.set_conn(Some(conn));
        tokio::spawn(supervise(Arc::downgrade(&shared), client, name.to_string()));
        tokio::spawn(unsubscribe_loop(Arc::downgrade(&shared), unsub_rx));
        Ok(RedisSubscriber {
            shared,
            prefix: prefix.to_string(),
            buffer: buffer.max(1),
            name: name.to_string(),
        })
    }
}

/// Keeps the connection alive: reconnects when it reports its loss or stops answering `PING`.
async fn supervise(shared: Weak<Shared>, client: redis::Client, name: String) {
    loop {
        let lost = {
            let Some(s) = shared.upgrade() else { return };
            let conn = s.conn();
            tokio::select! {
                _ = s.lost.notified() => true,
                _ = tokio::time::sleep(PING_EVERY) => match conn {
                    Some(mut conn) => redis::cmd("PING").query_async::<Value>(&mut conn).await.is_err(),
                    None => true,
                },
            }
        };
        if !lost {
            continue;
        }
        let Some(s) = shared.upgrade() else { return };
        s.set_conn(None);
        drop(s);
        tracing::warn!("redis subscriber connection lost; reconnecting");
        let mut delay = Duration::from_millis(50);
        let lost_at = tokio::time::Instant::now();
        let mut closed = false;
        loop {
            if !closed && lost_at.elapsed() >= DOWN_BOUND {
                closed = true;
                if let Some(s) = shared.upgrade() {
                    let n = s.close_all();
                    tracing::warn!(
                        streams = n,
                        "redis subscriber down too long: open streams ended"
                    );
                }
            }
            let Some(s) = shared.upgrade() else { return };
            // An attempt that hangs (a black-holed server) must not hold up the outage bound.
            let attempt = reconnect(&s, &client, &name, &shared);
            let result = if closed {
                attempt.await
            } else {
                let left = DOWN_BOUND.saturating_sub(lost_at.elapsed());
                tokio::time::timeout(left.max(Duration::from_millis(1)), attempt)
                    .await
                    .unwrap_or_else(|_| {
                        Err(BusError::Connection("reconnect attempt timed out".into()))
                    })
            };
            match result {
                Ok(streams) => {
                    tracing::info!(streams, "redis subscriber reconnected");
                    break;
                }
                Err(e) => {
                    drop(s);
                    tracing::warn!(error = %e, "redis subscriber reconnect failed");
                    // Wake at the outage bound at the latest, to end the open streams then.
                    let until_bound = DOWN_BOUND.saturating_sub(lost_at.elapsed());
                    let nap = if closed {
                        delay
                    } else {
                        delay.min(until_bound.max(Duration::from_millis(1)))
                    };
                    tokio::time::sleep(nap).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// Opens a new connection, re-subscribes every open channel and asks every reader to resync.
async fn reconnect(
    s: &Shared,
    client: &redis::Client,
    name: &str,
    weak: &Weak<Shared>,
) -> Result<usize, BusError> {
    let mut conn = open(client, name, weak.clone()).await?;
    let channels = s.channels();
    for batch in channels.chunks(BATCH) {
        conn.subscribe(batch).await?;
    }
    s.set_conn(Some(conn));
    // Events published while we were away are only in the replay streams.
    s.resync_all();
    Ok(channels.len())
}

/// Unsubscribes channels whose last reader left, in batches.
async fn unsubscribe_loop(shared: Weak<Shared>, mut rx: mpsc::UnboundedReceiver<String>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let Some(s) = shared.upgrade() else { return };
        if let Some(mut conn) = s.conn() {
            // A channel that got a new reader in between keeps its subscription.
            let stale: Vec<String> = match s.routes.lock() {
                Ok(routes) => batch
                    .drain(..)
                    .filter(|c| !routes.contains_key(c))
                    .collect(),
                Err(_) => return,
            };
            if !stale.is_empty() {
                if let Err(e) = conn.unsubscribe(&stale).await {
                    tracing::warn!(error = %e, "redis unsubscribe failed");
                }
                // A reader that subscribed while the UNSUBSCRIBE was on its way lost its
                // subscription: subscribe again and let it catch up from the replay stream.
                let revived: Vec<String> = match s.routes.lock() {
                    Ok(routes) => stale
                        .into_iter()
                        .filter(|c| routes.contains_key(c))
                        .collect(),
                    Err(_) => return,
                };
                if !revived.is_empty()
                    && conn.subscribe(&revived).await.is_ok()
                    && let Ok(routes) = s.routes.lock()
                {
                    revived
                        .iter()
                        .filter_map(|c| routes.get(c))
                        .flatten()
                        .for_each(Reader::resync);
                }
            }
        }
        batch.clear();
    }
}

/// Removes its reader when the [`Subscription`] is dropped.
struct ReaderGuard {
    shared: Arc<Shared>,
    channel: String,
    id: u64,
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.shared.remove_reader(&self.channel, self.id);
    }
}

#[async_trait]
impl EventSubscriber for RedisSubscriber {
    async fn subscribe(&self, job_id: Uuid) -> Result<Subscription, BusError> {
        let name = channel(&self.prefix, job_id);
        let (tx, rx) = mpsc::channel(self.buffer);
        let state = Arc::new(ReaderState::default());
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut routes) = self.shared.routes.lock() {
            routes.entry(name.clone()).or_default().push(Reader {
                id,
                tx,
                state: state.clone(),
            });
            self.shared.readers.fetch_add(1, Ordering::Relaxed);
        }
        let guard = ReaderGuard {
            shared: self.shared.clone(),
            channel: name.clone(),
            id,
        };
        let Some(mut conn) = self.shared.conn() else {
            return Err(BusError::Connection(
                "redis subscriber is reconnecting".into(),
            ));
        };
        // Also for a channel that already has readers: SUBSCRIBE is idempotent, and its reply
        // is what guarantees that this reader sees every event published after we return.
        conn.subscribe(&name).await?;
        Ok(Subscription::new(rx, state, Box::new(guard)))
    }

    /// Number of open readers (streams) in this process.
    fn open_streams(&self) -> usize {
        self.shared.readers.load(Ordering::Relaxed)
    }

    /// Open readers of one job's channel in this process.
    fn readers_of(&self, job_id: Uuid) -> usize {
        let name = channel(&self.prefix, job_id);
        self.shared
            .routes
            .lock()
            .map(|r| r.get(&name).map_or(0, Vec::len))
            .unwrap_or(0)
    }

    /// True while the connection is up (false while reconnecting).
    fn is_connected(&self) -> bool {
        self.shared.conn().is_some()
    }

    /// The name of the one pub/sub connection (as shown by `CLIENT LIST`).
    fn connection_name(&self) -> &str {
        &self.name
    }
}
