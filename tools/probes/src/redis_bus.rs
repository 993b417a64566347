//! `ragq-probe redis`: how many events Redis pub/sub carries to ONE subscriber connection, and
//! how fast, for ~200-byte payloads over `--channels` channels — the shape of ragq's ingress
//! (one pub/sub connection per api process, one channel per open stream).
//!
//! Two publish paths, each in two phases:
//! - `PUBLISH`: one plain `PUBLISH` per event over a multiplexed connection;
//! - `ragq`: `RedisPublisher::publish`, the worker's real path (`XADD` to the job's replay
//!   stream, `EXPIRE` on the first event, `PUBLISH`, in one pipelined round trip), with
//!   `StreamEvent` delta payloads, to show what the replay stream costs.
//!
//! Phases:
//! - **saturated**: 64 concurrent publishers on one multiplexed connection (so commands are
//!   pipelined), with at most `--inflight` events between "publish started" and "received by the
//!   subscriber" (a semaphore; without it the subscriber's output buffer would grow until Redis
//!   drops the connection). Gives the ceiling in events/s; latency there is mostly queueing
//!   (Little's law: inflight / rate).
//! - **paced**: `--rate` events/s spread evenly (a 1 ms tick), far below the ceiling: the latency
//!   one event sees on a busy but not saturated bus.
//!
//! Each event carries its publish time (`t=<µs>;`); the subscriber records receive − publish.
//! Replay streams written by the `ragq` path are deleted at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use ragq_common::bus::EventPublisher;
use ragq_common::bus::redis::endpoint::RedisEndpoint;
use ragq_common::bus::redis::keys::{channel, replay_key};
use ragq_common::bus::redis::publisher::RedisPublisher;
use ragq_common::event::{EventBody, StreamEvent};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::drive::{self, EventSender};
use crate::stamp::{latency_us, now_micros, stamp};
use crate::stats::{Latency, Summary, Table, ms};

pub struct Args {
    pub redis_url: String,
    pub seconds: u64,
    pub channels: usize,
    pub inflight: usize,
    pub rate: u64,
    pub payload_bytes: usize,
}

/// Concurrent publishers in the saturated phase (all on one multiplexed connection).
/// JSON around a delta's text: `{"seq":NNNN,"type":"delta","text":""}`.
const EVENT_OVERHEAD: usize = 37;

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Publish,
    Ragq,
}

#[derive(Clone)]
enum Publisher {
    Plain {
        conn: redis::aio::MultiplexedConnection,
        names: Arc<Vec<String>>,
        pad: Arc<str>,
    },
    Ragq {
        publisher: RedisPublisher,
        jobs: Arc<Vec<Uuid>>,
        seqs: Arc<Vec<AtomicU64>>,
        pad: Arc<str>,
    },
}

impl EventSender for Publisher {
    /// Publishes one stamped event on channel `i`.
    async fn send(&self, i: usize) -> anyhow::Result<()> {
        let st = stamp(now_micros());
        match self {
            Publisher::Plain { conn, names, pad } => {
                let mut conn = conn.clone();
                let _: i64 = redis::cmd("PUBLISH")
                    .arg(&names[i])
                    .arg(format!("{st}{pad}"))
                    .query_async(&mut conn)
                    .await?;
            }
            Publisher::Ragq {
                publisher,
                jobs,
                seqs,
                pad,
            } => {
                let seq = seqs[i].fetch_add(1, Ordering::Relaxed) + 1;
                let event = StreamEvent {
                    seq,
                    attempt: 0,
                    body: EventBody::Delta {
                        text: format!("{st}{pad}"),
                    },
                };
                publisher.publish(jobs[i], &event).await?;
            }
        }
        Ok(())
    }
}

struct Phase {
    name: String,
    events: u64,
    rate: f64,
    latency: Summary,
    errors: u64,
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    crate::net::ensure_loopback("--redis-url", &args.redis_url)?;
    if args.channels == 0 || args.channels > 100_000 {
        bail!("--channels must be between 1 and 100000");
    }
    if args.seconds == 0 || args.seconds > 600 {
        bail!("--seconds must be between 1 and 600");
    }
    if args.inflight == 0 || args.rate == 0 || args.rate > 1_000_000 {
        bail!("--inflight must be positive and --rate between 1 and 1000000");
    }
    let mut phases = Vec::new();
    for (path, paced) in [
        (Path::Publish, None),
        (Path::Publish, Some(args.rate)),
        (Path::Ragq, None),
        (Path::Ragq, Some(args.rate)),
    ] {
        phases.push(phase(&args, path, paced).await?);
    }

    let mut table = Table::new(&[
        "redis", "events", "events/s", "p50_ms", "p90_ms", "p99_ms", "max_ms", "errors",
    ]);
    for p in &phases {
        table.row(vec![
            p.name.clone(),
            p.events.to_string(),
            format!("{:.0}", p.rate),
            ms(p.latency.p50),
            ms(p.latency.p90),
            ms(p.latency.p99),
            ms(p.latency.max),
            p.errors.to_string(),
        ]);
    }
    print!(
        "redis: ~{}-byte events over {} channels, ONE subscriber connection, multiplexed publisher, {} s per phase\n{}",
        args.payload_bytes,
        args.channels,
        args.seconds,
        table.render()
    );
    Ok(json!({
        "probe": "redis",
        "payload_bytes": args.payload_bytes,
        "channels": args.channels,
        "seconds": args.seconds,
        "inflight": args.inflight,
        "phases": phases.iter().map(|p| json!({
            "phase": p.name, "events": p.events, "events_per_s": p.rate,
            "latency": p.latency.to_json(), "errors": p.errors,
        })).collect::<Vec<_>>(),
    }))
}

async fn phase(args: &Args, path: Path, paced: Option<u64>) -> anyhow::Result<Phase> {
    let name = format!(
        "{} {}",
        if path == Path::Publish {
            "PUBLISH"
        } else {
            "ragq XADD+PUBLISH"
        },
        paced.map_or_else(
            || format!("saturated (inflight {})", args.inflight),
            |r| format!("paced {r}/s")
        )
    );
    eprintln!("[redis] {name}");
    let client = redis::Client::open(args.redis_url.as_str())?;
    let prefix = format!("probe-{}", Uuid::new_v4().simple());
    let jobs: Arc<Vec<Uuid>> = Arc::new((0..args.channels).map(|_| Uuid::now_v7()).collect());
    let names: Arc<Vec<String>> = Arc::new(jobs.iter().map(|j| channel(&prefix, *j)).collect());

    // The one subscriber connection.
    let mut pubsub = client.get_async_pubsub().await?;
    for n in names.iter() {
        pubsub.subscribe(n).await?;
    }
    let mut messages = pubsub.into_on_message();

    let publisher = match path {
        Path::Publish => Publisher::Plain {
            conn: client.get_multiplexed_async_connection().await?,
            names: names.clone(),
            pad: pad(args.payload_bytes.saturating_sub(19)),
        },
        Path::Ragq => Publisher::Ragq {
            publisher: RedisPublisher::connect(
                &RedisEndpoint::new(&args.redis_url, &ragq_common::tls::TlsRoots::public())?,
                &prefix,
            )
            .await?,
            jobs: jobs.clone(),
            seqs: Arc::new((0..args.channels).map(|_| AtomicU64::new(0)).collect()),
            pad: pad(args.payload_bytes.saturating_sub(19 + EVENT_OVERHEAD)),
        },
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
                if let Some(us) = latency_us(msg.get_payload_bytes(), now_micros()) {
                    latency.record_us(us);
                }
                received += 1;
                if start.elapsed() <= window {
                    in_window += 1;
                }
                // The event arrived: its in-flight slot is free (both phases are bounded).
                sem.add_permits(1);
            }
            (latency, in_window)
        })
    };

    let counts = drive::Counts {
        published: published.clone(),
        errors: errors.clone(),
    };
    drive::drive(
        Arc::new(publisher),
        sem.clone(),
        &counts,
        args.channels,
        args.inflight,
        paced,
        start,
        window,
    )
    .await;
    stop.store(true, Ordering::Release);
    let (latency, in_window) = tokio::time::timeout(Duration::from_secs(15), subscriber)
        .await
        .context("subscriber did not finish")?
        .context("subscriber task")?;

    if path == Path::Ragq {
        cleanup(&client, &prefix, &jobs).await;
    }
    Ok(Phase {
        name,
        events: latency.count(),
        rate: in_window as f64 / window.as_secs_f64(),
        latency: latency.summary(),
        errors: errors.load(Ordering::Relaxed),
    })
}

/// Deletes the replay streams of a `ragq` phase.
async fn cleanup(client: &redis::Client, prefix: &str, jobs: &[Uuid]) {
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    for batch in jobs.chunks(500) {
        let mut cmd = redis::cmd("DEL");
        for j in batch {
            cmd.arg(replay_key(prefix, *j));
        }
        let _: Result<i64, _> = cmd.query_async(&mut conn).await;
    }
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
    fn ragq_event_payload_is_about_the_requested_size() {
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
