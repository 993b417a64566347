//! Ingress side: **one** NATS connection per api process carries every open stream.
//!
//! - Each open stream is a **reader**: its own core subscription on `{prefix}.stream.{job_id}`
//!   and a forwarding task that moves the payloads into the reader's bounded buffer
//!   (`RAGQ_STREAM_BUFFER` events). A job can have any number of readers (a resume while the
//!   first stream is still open, two tabs); each gets every event. Dropping the
//!   [`Subscription`] ends the task and unsubscribes.
//! - **Active on return:** `subscribe` returns only after a server round trip on the same
//!   connection that follows the `SUB` (see [`round_trip`]): the server handles a connection's
//!   commands in order, so the subscription is in place and every event published after the
//!   return — by any connection — is delivered. (`Client::flush` only writes the socket; it
//!   proves nothing about the server.)
//! - **Slow reader cut:** a reader whose buffer is full is cut off with
//!   [`Closed::SlowReader`]; the other readers of the job go on.
//! - **Reconnect:** async-nats reconnects by itself and re-subscribes every subscription
//!   before anything else it sends. A supervisor watches the connection every
//!   [`WATCH_EVERY`]: while it is down, new subscribes fail ([`BusError::Connection`], HTTP 503)
//!   and [`EventSubscriber::is_connected`] is false; after a reconnect (the client's connect
//!   counter moved) every open reader is asked to *resync*: core NATS does not keep what was
//!   published during the gap, the replay stream does.
//! - **Bounded outage:** when the connection stays down longer than [`DOWN_BOUND`], every
//!   reader is closed with [`Closed::Disconnected`]; streams opened after the reconnect work.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::connection::State;
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use uuid::Uuid;

use super::names::event_subject;
use crate::bus::{BusError, Closed, EventSubscriber, ReaderState, Subscription};

/// How often the supervisor looks at the connection.
pub const WATCH_EVERY: Duration = Duration::from_millis(100);
/// How long the connection may stay down before every open reader is closed.
pub const DOWN_BOUND: Duration = Duration::from_secs(3);
/// Bound on the round trip that makes a subscription active.
pub const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(5);

/// A server round trip on `client`'s connection: subscribes to a fresh inbox, publishes one
/// message to it and waits for it to come back. When it is back, the server has processed
/// every command this connection sent before (in particular its `SUB`s). Relies on the
/// server echoing a connection's own messages (NATS' default; the bus never sets `no_echo`).
pub async fn round_trip(client: &async_nats::Client) -> Result<(), BusError> {
    let inbox = client.new_inbox();
    let trip = async {
        let mut echo = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| BusError::Connection(format!("round trip: {e}")))?;
        client
            .publish(inbox, Bytes::new())
            .await
            .map_err(|e| BusError::Connection(format!("round trip: {e}")))?;
        match echo.next().await {
            Some(_) => Ok(()),
            None => Err(BusError::Connection("round trip: connection closed".into())),
        }
    };
    match tokio::time::timeout(ROUND_TRIP_TIMEOUT, trip).await {
        Ok(result) => result,
        Err(_) => Err(BusError::Connection(format!(
            "the NATS server did not answer within {ROUND_TRIP_TIMEOUT:?}"
        ))),
    }
}

struct Reader {
    id: u64,
    tx: mpsc::Sender<Vec<u8>>,
    state: Arc<ReaderState>,
    task: AbortHandle,
}

impl Reader {
    /// Tells the reader to catch up from the replay stream (a flag when its buffer is full).
    fn resync(&self) {
        if self.tx.try_send(Vec::new()).is_err() {
            self.state.request_resync();
        }
    }
}

struct Shared {
    /// Job → its readers (almost always one).
    routes: Mutex<HashMap<Uuid, Vec<Reader>>>,
    readers: AtomicUsize,
    next_id: AtomicU64,
    /// False while the supervisor sees the connection down.
    up: AtomicBool,
}

impl Shared {
    /// Removes one reader (its channel closes once its task is gone too). Idempotent.
    fn remove(&self, job_id: Uuid, id: u64) -> Option<Reader> {
        let mut routes = self.routes.lock().ok()?;
        let readers = routes.get_mut(&job_id)?;
        let pos = readers.iter().position(|r| r.id == id)?;
        let reader = readers.swap_remove(pos);
        if readers.is_empty() {
            routes.remove(&job_id);
        }
        self.readers.fetch_sub(1, Ordering::Relaxed);
        Some(reader)
    }

    fn resync_all(&self) {
        if let Ok(routes) = self.routes.lock() {
            routes.values().flatten().for_each(Reader::resync);
        }
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
                r.task.abort();
                n += 1;
            }
        }
        self.readers.fetch_sub(n, Ordering::Relaxed);
        n
    }
}

/// The bus's one subscriber connection (see the module docs).
#[derive(Clone)]
pub struct NatsSubscriber {
    client: async_nats::Client,
    shared: Arc<Shared>,
    prefix: String,
    name: String,
    buffer: usize,
}

impl NatsSubscriber {
    /// Starts the supervisor (when called inside a Tokio runtime, as the bus always is).
    pub(super) fn new(client: async_nats::Client, prefix: &str, name: &str, buffer: usize) -> Self {
        let shared = Arc::new(Shared {
            routes: Mutex::new(HashMap::new()),
            readers: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            up: AtomicBool::new(client.connection_state() == State::Connected),
        });
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(supervise(Arc::downgrade(&shared), client.clone()));
            }
            Err(_) => tracing::error!("NATS subscriber made outside a runtime: not supervised"),
        }
        NatsSubscriber {
            client,
            shared,
            prefix: prefix.to_string(),
            name: name.to_string(),
            buffer: buffer.max(1),
        }
    }
}

fn connects(client: &async_nats::Client) -> u64 {
    client.statistics().connects.load(Ordering::Relaxed)
}

/// Watches the connection: down → no new subscribes, and after [`DOWN_BOUND`] every reader
/// closed; reconnected → every reader resyncs.
async fn supervise(shared: Weak<Shared>, client: async_nats::Client) {
    let mut seen = connects(&client);
    let mut down_since: Option<tokio::time::Instant> = None;
    let mut closed = false;
    let mut tick = tokio::time::interval(WATCH_EVERY);
    loop {
        tick.tick().await;
        let Some(s) = shared.upgrade() else { return };
        if client.connection_state() == State::Connected {
            let now = connects(&client);
            if now != seen {
                seen = now;
                let streams = s.readers.load(Ordering::Relaxed);
                tracing::info!(streams, "NATS subscriber reconnected; open streams resync");
                s.resync_all();
            }
            s.up.store(true, Ordering::Release);
            down_since = None;
            closed = false;
        } else {
            if s.up.swap(false, Ordering::AcqRel) {
                tracing::warn!("NATS subscriber connection lost");
            }
            let since = *down_since.get_or_insert_with(tokio::time::Instant::now);
            if !closed && since.elapsed() >= DOWN_BOUND {
                closed = true;
                let n = s.close_all();
                tracing::warn!(
                    streams = n,
                    "NATS subscriber down too long: open streams ended"
                );
            }
        }
    }
}

/// Moves one reader's messages into its buffer; cuts it off when the buffer is full.
async fn forward(
    mut messages: async_nats::Subscriber,
    tx: mpsc::Sender<Vec<u8>>,
    state: Arc<ReaderState>,
    shared: Weak<Shared>,
    job_id: Uuid,
    id: u64,
) {
    let why = loop {
        let Some(message) = messages.next().await else {
            break Closed::Disconnected; // the client was closed for good
        };
        match tx.try_send(message.payload.to_vec()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => break Closed::SlowReader,
            Err(mpsc::error::TrySendError::Closed(_)) => return, // the reader left
        }
    };
    state.close(why);
    if let Some(s) = shared.upgrade() {
        s.remove(job_id, id);
    }
    if why == Closed::SlowReader {
        tracing::warn!(%job_id, "slow stream reader cut off");
    }
    // Dropping `messages` unsubscribes; dropping `tx` (and the registry's) closes the reader.
}

/// Removes its reader (and ends its task, which unsubscribes) when the [`Subscription`] is
/// dropped.
struct ReaderGuard {
    shared: Arc<Shared>,
    job_id: Uuid,
    id: u64,
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        if let Some(reader) = self.shared.remove(self.job_id, self.id) {
            reader.task.abort();
        }
    }
}

#[async_trait]
impl EventSubscriber for NatsSubscriber {
    async fn subscribe(&self, job_id: Uuid) -> Result<Subscription, BusError> {
        if !self.is_connected() {
            return Err(BusError::Connection(
                "NATS subscriber is reconnecting".into(),
            ));
        }
        let before = connects(&self.client);
        let messages = self
            .client
            .subscribe(event_subject(&self.prefix, job_id))
            .await
            .map_err(|e| BusError::Connection(format!("subscribing to {job_id}: {e}")))?;
        let (tx, rx) = mpsc::channel(self.buffer);
        let state = Arc::new(ReaderState::default());
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut routes = self
                .shared
                .routes
                .lock()
                .map_err(|_| BusError::Nats("subscriber registry poisoned".into()))?;
            // Spawned under the lock, so the task cannot look for its entry before it exists.
            let task = tokio::spawn(forward(
                messages,
                tx.clone(),
                state.clone(),
                Arc::downgrade(&self.shared),
                job_id,
                id,
            ));
            routes.entry(job_id).or_default().push(Reader {
                id,
                tx,
                state: state.clone(),
                task: task.abort_handle(),
            });
            self.shared.readers.fetch_add(1, Ordering::Relaxed);
        }
        let guard = ReaderGuard {
            shared: self.shared.clone(),
            job_id,
            id,
        };
        round_trip(&self.client).await?;
        // A reconnect between the SUB and the registration would escape the supervisor's
        // resync: catch up from the replay stream in that case.
        if connects(&self.client) != before {
            state.request_resync();
        }
        Ok(Subscription::new(rx, state, Box::new(guard)))
    }

    fn open_streams(&self) -> usize {
        self.shared.readers.load(Ordering::Relaxed)
    }

    fn readers_of(&self, job_id: Uuid) -> usize {
        self.shared
            .routes
            .lock()
            .map(|r| r.get(&job_id).map_or(0, Vec::len))
            .unwrap_or(0)
    }

    fn is_connected(&self) -> bool {
        self.shared.up.load(Ordering::Acquire) && self.client.connection_state() == State::Connected
    }

    fn connection_name(&self) -> &str {
        &self.name
    }
}
