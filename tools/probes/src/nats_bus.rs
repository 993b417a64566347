//! `ragq-probe nats-bus`: how many events NATS carries to ONE subscriber connection, and how
//! fast, for ~200-byte delta events over `--subjects` job subjects — the shape of ragq's
//! ingress on the NATS bus (one connection per api process, one core subscription per open
//! stream, `common/src/bus/nats/subscriber.rs`).
//!
//! As in ragq, a temporary **limits** stream `probe_<uuid>_events` (file storage, `max_age`
//! 60 s, old messages discarded, direct get: ragq's replay stream, with a shorter life) captures
//! `probe.<uuid>.stream.*`, so every event is both delivered live and stored for replay: the
//! probe measures the bus with the cost of the replay stream on the server. Events are
//! `StreamEvent` deltas (JSON, the worker's encoding) published on a second connection by 64
//! concurrent publishers (jobs), on the subjects round robin. Two publish paths
//! (`common/src/bus/nats/publisher.rs`):
//! - `core`: a plain core publish, ragq's delta path (no round trip per event);
//! - `jetstream`: a JetStream publish awaiting its PubAck, ragq's terminal-event path (the
//!   durable end marker), for comparison: what an event costs when its storage is confirmed.
//!   Same payloads, so only the path differs.
//!
//! Each path in two phases:
//! - **paced**: `--rate` events/s spread evenly (a 1 ms tick), far below the ceiling: the
//!   latency one event sees on a busy but unsaturated bus;
//! - **saturated**: as fast as the bus takes them, with at most `--inflight` events between
//!   "publish started" and "received by the subscriber" (a semaphore; without it the client's
//!   buffers would grow until the server cuts the subscriber off as a slow consumer). The
//!   ceiling in events/s; latency there is mostly queueing (Little's law: inflight / rate).
//!
//! Subscriptions are made active before publishing with ragq's own server round trip
//! (`subscriber::round_trip`). Each event carries its publish time (`t=<µs>;`); the subscriber
//! records receive − publish, and the `jetstream` path also publish → PubAck. `lost` counts
//! events published but not received (core NATS drops instead of blocking). The stream is
//! purged between phases and deleted at the end, also when a phase failed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use async_nats::jetstream;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use bytes::Bytes;
use futures::StreamExt;
use ragq_common::bus::nats::subscriber::round_trip;
use ragq_common::event::{EventBody, StreamEvent};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::drive::{self, EventSender};
use crate::nats_broker::connect;
use crate::stamp::{latency_us, now_micros, stamp};
use crate::stats::{Latency, Summary, Table, ms};

pub struct Args {
    pub nats_url: String,
    pub seconds: u64,
    pub subjects: usize,
    pub inflight: usize,
    pub rate: u64,
    pub payload_bytes: usize,
    /// The replay stream in memory (ragq stores it in files).
    pub memory: bool,
}

/// Concurrent publishers in the saturated phases (all on one connection).
/// JSON around a delta's text: `{"seq":NNNN,"type":"delta","text":""}`.
const EVENT_OVERHEAD: usize = 37;
/// The probe's replay stream keeps events this long (ragq's keeps them 10 minutes).
const REPLAY_MAX_AGE: Duration = Duration::from_secs(60);
/// A bound on the replay stream's disk use (old events are discarded beyond it).
const REPLAY_MAX_BYTES: i64 = 1 << 30;
/// Bound on one PubAck and one JetStream API call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq)]
enum Path {
    /// A core publish (ragq's deltas).
    Core,
    /// A JetStream publish awaiting its PubAck (ragq's terminal event).
    JetStream,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Core => "core",
            Path::JetStream => "jetstream",
        }
    }
}

/// Publishes stamped delta events on the job subjects.
#[derive(Clone)]
struct Publisher {
    path: Path,
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: Arc<Vec<String>>,
    seqs: Arc<Vec<AtomicU64>>,
    pad: Arc<str>,
    acks: Arc<Mutex<Latency>>,
}

impl EventSender for Publisher {
    /// Publishes one stamped event on subject `i`.
    async fn send(&self, i: usize) -> anyhow::Result<()> {
        let seq = self.seqs[i].fetch_add(1, Ordering::Relaxed) + 1;
        let event = StreamEvent {
            seq,
            attempt: 0,
            body: EventBody::Delta {
                text: format!("{}{}", stamp(now_micros()), self.pad),
            },
        };
        let payload = Bytes::from(event.encode());
        let subject = self.subjects[i].clone();
        match self.path {
            Path::Core => self
                .client
                .publish(subject, payload)
                .await
                .map_err(|e| anyhow!("publish: {e}")),
            Path::JetStream => {
                let t0 = Instant::now();
                let stored = async {
                    self.js
                        .publish(subject, payload)
                        .await
                        .map_err(|e| anyhow!("publish: {e}"))?
                        .await
                        .map_err(|e| anyhow!("not stored: {e}"))
                };
                tokio::time::timeout(CALL_TIMEOUT, stored)
                    .await
                    .map_err(|_| anyhow!("no PubAck within {CALL_TIMEOUT:?}"))??;
                if let Ok(mut h) = self.acks.lock() {
                    h.record(t0.elapsed());
                }
                Ok(())
            }
        }
    }
}

struct Phase {
    name: String,
    path: Path,
    paced: Option<u64>,
    published: u64,
    received: u64,
    rate: f64,
    latency: Summary,
    ack: Summary,
    errors: u64,
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    crate::net::ensure_loopback("--nats-url", &args.nats_url)?;
    if args.subjects == 0 || args.subjects > 100_000 {
        bail!("--subjects must be between 1 and 100000");
    }
    if args.seconds == 0 || args.seconds > 600 {
        bail!("--seconds must be between 1 and 600");
    }
    if args.inflight == 0 || args.inflight > 60_000 || args.rate == 0 || args.rate > 1_000_000 {
        bail!("--inflight must be between 1 and 60000 and --rate between 1 and 1000000");
    }
    let tag = Uuid::new_v4().simple().to_string();
    let prefix = format!("probe.{tag}");
    let stream_name = format!("probe_{tag}_events");
    let pub_client = connect(&args.nats_url, "ragq-probe bus publish").await?;
    let sub_client = connect(&args.nats_url, "ragq-probe bus subscribe").await?;
    let js = jetstream::new(pub_client.clone());
    let config = stream::Config {
        name: stream_name.clone(),
        subjects: vec![format!("{prefix}.stream.*")],
        retention: RetentionPolicy::Limits,
        storage: if args.memory {
            StorageType::Memory
        } else {
            StorageType::File
        },
        max_age: REPLAY_MAX_AGE,
        max_bytes: REPLAY_MAX_BYTES,
        discard: DiscardPolicy::Old,
        allow_direct: true,
        ..Default::default()
    };
    tokio::time::timeout(CALL_TIMEOUT, js.create_stream(config))
        .await
        .context("creating the probe's replay stream timed out")?
        .context("creating the probe's replay stream (is JetStream enabled?)")?;

    let mut phases = Vec::new();
    let mut failure = None;
    for (path, paced) in [
        (Path::Core, Some(args.rate)),
        (Path::Core, None),
        (Path::JetStream, Some(args.rate)),
        (Path::JetStream, None),
    ] {
        let result = phase(&args, path, paced, &pub_client, &js, &sub_client, &prefix).await;
        if let Ok(s) = js.get_stream(&stream_name).await {
            let _ = s.purge().await;
        }
        match result {
            Ok(p) => phases.push(p),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let deleted = tokio::time::timeout(CALL_TIMEOUT, js.delete_stream(&stream_name)).await;
    if !matches!(deleted, Ok(Ok(_))) {
        eprintln!(
            "[nats-bus] could not delete the stream {stream_name} (its events expire in 60 s)"
        );
    }
    drop(js);
    let _ = pub_client.drain().await;
    let _ = sub_client.drain().await;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(report(&args, &phases))
}

fn report(args: &Args, phases: &[Phase]) -> Value {
    let mut table = Table::new(&[
        "nats-bus",
        "events",
        "events/s",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "max_ms",
        "ack_p50_ms",
        "ack_p99_ms",
        "ack_max_ms",
        "lost",
        "errors",
    ]);
    for p in phases {
        let ack = |v: u64| {
            if p.path == Path::JetStream {
                ms(v)
            } else {
                "-".to_string()
            }
        };
        table.row(vec![
            p.name.clone(),
            p.received.to_string(),
            format!("{:.0}", p.rate),
            ms(p.latency.p50),
            ms(p.latency.p90),
            ms(p.latency.p99),
            ms(p.latency.max),
            ack(p.ack.p50),
            ack(p.ack.p99),
            ack(p.ack.max),
            p.published.saturating_sub(p.received).to_string(),
            p.errors.to_string(),
        ]);
    }
    print!(
        "nats-bus: ~{}-byte delta events over {} subjects, ONE subscriber connection, one publisher connection,\n\
         replay stream (limits, {}, max_age 60 s) capturing every event, {} s per phase\n\
         latency = publish -> received by the subscriber; ack = publish -> PubAck (jetstream path)\n{}",
        args.payload_bytes,
        args.subjects,
        if args.memory { "memory" } else { "file" },
        args.seconds,
        table.render()
    );
    json!({
        "probe": "nats-bus",
        "payload_bytes": args.payload_bytes,
        "subjects": args.subjects,
        "seconds": args.seconds,
        "inflight": args.inflight,
        "replay_stream": {"retention": "limits", "storage": if args.memory { "memory" } else { "file" }, "max_age_s": REPLAY_MAX_AGE.as_secs()},
        "phases": phases.iter().map(|p| json!({
            "phase": p.name,
            "path": p.path.name(),
            "paced_rate": p.paced,
            "published": p.published,
            "received": p.received,
            "lost": p.published.saturating_sub(p.received),
            "events_per_s": p.rate,
            "latency": p.latency.to_json(),
            "publish_ack": if p.path == Path::JetStream { p.ack.to_json() } else { Value::Null },
            "errors": p.errors,
        })).collect::<Vec<_>>(),
    })
}

async fn phase(
    args: &Args,
    path: Path,
    paced: Option<u64>,
    pub_client: &async_nats::Client,
    js: &jetstream::Context,
    sub_client: &async_nats::Client,
    prefix: &str,
) -> anyhow::Result<Phase> {
    let name = format!(
        "{} {}",
        path.name(),
        paced.map_or_else(
            || format!("saturated (inflight {})", args.inflight),
            |r| format!("paced {r}/s")
        )
    );
    eprintln!("[nats-bus] {name}");
    let subjects: Arc<Vec<String>> = Arc::new(
        (0..args.subjects)
            .map(|_| format!("{prefix}.stream.{}", Uuid::now_v7()))
            .collect(),
    );

    // The one subscriber connection: a core subscription per job subject, like the ingress.
    let mut subs = Vec::with_capacity(subjects.len());
    for s in subjects.iter() {
        subs.push(
            sub_client
                .subscribe(s.clone())
                .await
                .map_err(|e| anyhow!("subscribing to {s}: {e}"))?,
        );
    }
    round_trip(sub_client)
        .await
        .map_err(|e| anyhow!("making the subscriptions active: {e}"))?;
    let mut messages = futures::stream::select_all(subs);

    let publisher = Publisher {
        path,
        client: pub_client.clone(),
        js: js.clone(),
        subjects: subjects.clone(),
        seqs: Arc::new((0..args.subjects).map(|_| AtomicU64::new(0)).collect()),
        pad: pad(args.payload_bytes.saturating_sub(19 + EVENT_OVERHEAD)),
        acks: Arc::new(Mutex::new(Latency::new())),
    };

    let sem = Arc::new(Semaphore::new(args.inflight));
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let window = Duration::from_secs(args.seconds);
    let start = Instant::now();

    let subscriber = {
        let (sem, stop, published) = (sem.clone(), stop.clone(), published.clone());
        tokio::spawn(async move {
            let mut latency = Latency::new();
            let (mut received, mut in_window) = (0u64, 0u64);
            let mut last = Instant::now();
            loop {
                if stop.load(Ordering::Acquire)
                    && (received >= published.load(Ordering::Acquire)
                        || last.elapsed() > Duration::from_secs(2))
                {
                    break;
                }
                let msg =
                    match tokio::time::timeout(Duration::from_millis(100), messages.next()).await {
                        Ok(Some(m)) => m,
                        Ok(None) => break,
                        Err(_) => continue,
                    };
                last = Instant::now();
                if let Some(us) = latency_us(&msg.payload, now_micros()) {
                    latency.record_us(us);
                }
                received += 1;
                if start.elapsed() <= window {
                    in_window += 1;
                }
                sem.add_permits(1);
            }
            // Dropping the subscriptions unsubscribes.
            (latency, received, in_window)
        })
    };

    let counts = drive::Counts {
        published: published.clone(),
        errors: errors.clone(),
    };
    let publisher = Arc::new(publisher);
    drive::drive(
        publisher.clone(),
        sem.clone(),
        &counts,
        args.subjects,
        args.inflight,
        paced,
        start,
        window,
    )
    .await;
    // Core publishes are buffered by the client: make sure they left.
    let _ = tokio::time::timeout(CALL_TIMEOUT, pub_client.flush()).await;
    stop.store(true, Ordering::Release);
    let (latency, received, in_window) = tokio::time::timeout(Duration::from_secs(15), subscriber)
        .await
        .context("subscriber did not finish")?
        .context("subscriber task")?;
    let ack = publisher
        .acks
        .lock()
        .map(|h| h.summary())
        .unwrap_or_default();
    Ok(Phase {
        name,
        path,
        paced,
        published: published.load(Ordering::Acquire),
        received,
        rate: in_window as f64 / window.as_secs_f64(),
        latency: latency.summary(),
        ack,
        errors: errors.load(Ordering::Relaxed),
    })
}

/// `n` bytes of filler text (no `t=` in it).
fn pad(n: usize) -> Arc<str> {
    " lorem ipsum dolor sit amet, consectetur adipiscing elit"
        .chars()
        .cycle()
        .take(n)
        .collect::<String>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_event_is_about_the_requested_size_and_stamped() {
        let text = format!("{}{}", stamp(now_micros()), pad(200 - 19 - EVENT_OVERHEAD));
        let event = StreamEvent {
            seq: 1234,
            attempt: 0,
            body: EventBody::Delta { text },
        };
        let n = event.encode().len();
        assert!((195..=205).contains(&n), "{n} bytes");
        assert!(crate::stamp::last_stamp(&event.encode()).is_some());
    }
}
