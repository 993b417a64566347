//! The NATS bus (`RAGQ_BUS=nats`): core subjects for live events and cancel signals, one
//! JetStream stream for replay, JetStream key-value buckets for the ingress's shared state.
//!
//! | module | what |
//! | --- | --- |
//! | [`names`] | every subject, stream, bucket and key, and their lifetimes |
//! | [`publisher`] | worker: deltas as core publishes, the terminal event acknowledged |
//! | [`subscriber`] | ingress: one connection, a bounded buffer per reader, resync, outage bound |
//! | [`replay`] | reading a job's stored events |
//! | [`control`] | ownership, attached readers, rate counters, tenant admission |
//! | [`kv`] | compare-and-set on one key, the only way state changes |
//! | [`cancel`] | the cancel mark and signal, the worker's listener |
//!
//! **One publish, two uses.** A job's events go to `{prefix}.stream.{job_id}`. Live
//! subscribers get them from core NATS (no per-message acks, in the publishing connection's
//! order); the replay stream `{prefix}_events` listens on `{prefix}.stream.*` and stores the
//! same messages (limits retention, file storage, `max_age` [`names::REPLAY_TTL_S`], old
//! messages discarded, direct get on). Whatever core NATS could not deliver — a reconnect gap,
//! a resume after the client left — the reader reads from there.
//!
//! A [`NatsBus`] is one connection with the stream and buckets declared (idempotently: every
//! process declares the same configuration); the publisher, subscriber, control and cancel
//! watcher made from it share that connection. The server needs JetStream (2.9 or later: no
//! per-message TTLs are used).

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::kv::Store;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType, Stream};
use std::time::Duration;

use crate::bus::BusError;
use crate::bus::cancel::CancelWatcher;
use crate::config::NatsConfig;
use crate::tls::TlsRoots;

pub mod cancel;
pub mod control;
pub mod kv;
pub mod names;
pub mod publisher;
pub mod replay;
pub mod subscriber;

pub use control::NatsControl;
pub use publisher::NatsPublisher;
pub use subscriber::NatsSubscriber;

use names::Bucket;

/// One NATS connection with the bus's JetStream stream and buckets declared.
#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    prefix: String,
    /// The connection's name (the subscriber reports it).
    name: String,
    stream: Stream,
    owners: Store,
    readers: Store,
    rates: Store,
    tenants: Store,
    cancelled: Store,
}

fn nats_err(what: &str) -> impl FnOnce(String) -> BusError + '_ {
    move |e| BusError::Nats(format!("{what}: {e}"))
}

/// Declares the replay stream (or finds it, when another process declared it already).
async fn declare_stream(
    js: &async_nats::jetstream::Context,
    prefix: &str,
    replicas: usize,
) -> Result<Stream, BusError> {
    let name = names::events_stream(prefix);
    let config = stream::Config {
        name: name.clone(),
        subjects: vec![names::event_subjects(prefix)],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        max_age: Duration::from_secs(names::REPLAY_TTL_S),
        discard: DiscardPolicy::Old,
        allow_direct: true,
        num_replicas: replicas,
        ..Default::default()
    };
    match js.get_or_create_stream(config).await {
        Ok(s) => Ok(s),
        Err(e) => js
            .get_stream(&name)
            .await
            .map_err(|_| nats_err("declaring the replay stream")(e.to_string())),
    }
}

/// Declares one bucket (or opens it, when it exists with another configuration).
///
/// The bucket's stream is declared here, as `create_key_value` would (`KV_{bucket}` on
/// `$KV.{bucket}.>`, one message per subject, rollups allowed, deletes denied, direct get),
/// because async-nats' `create_key_value` first asks for the account's info, whose 2.9 answer
/// it cannot parse.
async fn declare_bucket(
    js: &async_nats::jetstream::Context,
    prefix: &str,
    bucket: Bucket,
    replicas: usize,
) -> Result<Store, BusError> {
    let name = bucket.name(prefix);
    let config = stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age: bucket.max_age(),
        storage: StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        allow_direct: true,
        discard: DiscardPolicy::New,
        num_replicas: replicas,
        ..Default::default()
    };
    if let Err(e) = js.get_or_create_stream(config).await {
        tracing::warn!(bucket = %name, error = %e, "bucket not declared; opening it as it is");
    }
    js.get_key_value(&name)
        .await
        .map_err(|e| BusError::Nats(format!("opening the bucket {name}: {e}")))
}

impl NatsBus {
    /// Connects (bounded) and declares the replay stream and the buckets.
    pub async fn connect(
        nats: &NatsConfig,
        prefix: &str,
        name: &str,
        roots: &TlsRoots,
    ) -> Result<NatsBus, BusError> {
        let client = crate::nats::connect(nats, name, roots)
            .await
            .map_err(|e| BusError::Connection(e.to_string()))?;
        let jetstream = async_nats::jetstream::new(client.clone());
        let replicas = usize::from(nats.replicas.max(1));
        let stream = declare_stream(&jetstream, prefix, replicas).await?;
        let bucket = |b| declare_bucket(&jetstream, prefix, b, replicas);
        Ok(NatsBus {
            owners: bucket(Bucket::Owners).await?,
            readers: bucket(Bucket::Readers).await?,
            rates: bucket(Bucket::Rates).await?,
            tenants: bucket(Bucket::Tenants).await?,
            cancelled: bucket(Bucket::Cancelled).await?,
            client,
            jetstream,
            prefix: prefix.to_string(),
            name: name.to_string(),
            stream,
        })
    }

    /// The ingress's subscriber on this connection; `buffer` bounds each reader's queue.
    pub fn subscriber(&self, buffer: usize) -> NatsSubscriber {
        NatsSubscriber::new(self.client.clone(), &self.prefix, &self.name, buffer)
    }

    pub fn control(&self) -> NatsControl {
        NatsControl {
            client: self.client.clone(),
            jetstream: self.jetstream.clone(),
            stream: self.stream.clone(),
            prefix: self.prefix.clone(),
            owners: self.owners.clone(),
            readers: self.readers.clone(),
            rates: self.rates.clone(),
            tenants: self.tenants.clone(),
            cancelled: self.cancelled.clone(),
        }
    }

    pub fn publisher(&self) -> NatsPublisher {
        NatsPublisher {
            client: self.client.clone(),
            jetstream: self.jetstream.clone(),
            stream: self.stream.clone(),
            prefix: self.prefix.clone(),
        }
    }

    /// Subscribes to the cancel signals and starts the worker's listener.
    pub async fn cancel_watcher(&self) -> Result<CancelWatcher, BusError> {
        cancel::start(&self.client, self.cancelled.clone(), &self.prefix).await
    }

    /// The underlying connection (for tests and diagnostics).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Deletes the replay stream and every bucket of this prefix (tests' teardown). Missing
    /// ones are not an error.
    pub async fn delete_all(&self) -> Result<(), BusError> {
        let mut streams = vec![names::events_stream(&self.prefix)];
        // A bucket is the stream `KV_{bucket}`.
        streams.extend(Bucket::ALL.map(|b| format!("KV_{}", b.name(&self.prefix))));
        let mut failures = Vec::new();
        for name in streams {
            match self.jetstream.delete_stream(&name).await {
                Ok(_) => {}
                Err(e) => match e.kind() {
                    GetStreamErrorKind::JetStream(j)
                        if j.error_code() == ErrorCode::STREAM_NOT_FOUND => {}
                    _ => failures.push(format!("{name}: {e}")),
                },
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(BusError::Nats(format!("deleting: {}", failures.join("; "))))
        }
    }
}
