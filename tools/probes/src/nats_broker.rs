//! `ragq-probe nats`: the ceiling of NATS JetStream as ragq's job broker, for job-sized
//! messages, the way `common/src/broker/nats/` uses it.
//!
//! A temporary **work-queue** stream `probe_<uuid>` (file storage, subject `probe.<uuid>`, a
//! 2-minute duplicate window and a 5-minute `max_age`, so a crashed probe leaves little behind)
//! gets ~600-byte job-shaped JSON messages (the same shape as the `rabbitmq` probe's), each
//! published on one connection with ragq's headers (`Nats-Msg-Id`, `Ragq-Job-Id`, `Ragq-Lane`,
//! `Ragq-Deadline-Ms`) and its PubAck awaited — the stream's confirm, what `publish_confirmed`
//! waits for before a job counts as queued.
//!
//! A second connection consumes through a **durable pull consumer** (explicit acks,
//! `max_ack_pending` above the in-flight bound) the way ragq's `Puller` does: it takes every free
//! slot, sends one pull request (`request_batch` on a fresh inbox, with `expires` and an idle
//! heartbeat) for exactly that many messages, and asks again when the request is filled or
//! expired. Each message is settled as ragq settles it, with `double_ack` (the ack is confirmed
//! by the server), in its own task, like concurrent jobs; a last phase uses a plain ack (fire and
//! forget) to show what the confirmation costs.
//!
//! A semaphore bounds the messages between "publish started" and "ack done", so the probe
//! measures the sustainable round trip rate instead of filling the stream. Phases:
//! - **inflight 1** (up to 3 s): one message at a time, the latency floor a lone job sees;
//! - **inflight `--inflight`** (`--seconds`): the ceiling with `double_ack`. Latency there is
//!   mostly queueing (Little's law: inflight / rate);
//! - **inflight `--inflight`, plain ack** (`--seconds`).
//!
//! Reported per phase: completed round trips (publish → PubAck → deliver → ack) per second, and
//! the latency of publish → PubAck and of publish → deliver. Each phase gets its own durable
//! (deleted after it, which also drops its pending pull request, so a stale request cannot
//! swallow the next phase's messages) and a purged stream. The stream is deleted at the end,
//! also when a phase failed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::{HeaderMap, StatusCode, jetstream};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::stamp::{latency_us, now_micros};
use crate::stats::{Latency, Summary, Table, ms};

pub struct Args {
    pub nats_url: String,
    pub seconds: u64,
    pub inflight: usize,
    pub payload_bytes: usize,
}

/// How long the server keeps one pull request (ragq's `PULL_EXPIRES`).
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// The idle heartbeat asked of the server while a pull request waits (ragq's `HEARTBEAT`).
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Bound on one PubAck, one double ack and one JetStream API call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The stream's safety net: what a crashed probe leaves expires after this.
const STREAM_MAX_AGE: Duration = Duration::from_secs(5 * 60);

/// Connects to a loopback NATS server like ragq does (`ragq_common::nats::connect`, without TLS
/// and without retrying the first connect): named, bounded, large subscription buffers.
pub(crate) async fn connect(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    let opts = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(CALL_TIMEOUT))
        .subscription_capacity(65_536);
    tokio::time::timeout(Duration::from_secs(10), opts.connect(url))
        .await
        .context("NATS connect timed out")?
        .with_context(|| format!("NATS connect to {url}"))
}

/// A job-shaped JSON payload of about `size` bytes, ending with the publish stamp (the shape
/// of the `rabbitmq` probe's).
fn payload(size: usize) -> Vec<u8> {
    crate::rabbitmq::job_payload(
        size,
        "How does a work-queue stream hand a job to exactly one worker? ",
    )
}

/// ragq's job headers for one message (`publish_job`).
fn job_headers() -> HeaderMap {
    let id = uuid::Uuid::now_v7().to_string();
    let deadline = now_micros() / 1000 + 120_000;
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", id.as_str());
    h.insert("Ragq-Job-Id", id.as_str());
    h.insert("Ragq-Lane", "interactive");
    h.insert("Ragq-Deadline-Ms", deadline.to_string().as_str());
    h
}

#[derive(Clone, Copy, PartialEq)]
enum AckStyle {
    /// `double_ack`: the ack is confirmed by the server (ragq's `confirmed`).
    Double,
    /// A plain ack: sent, not confirmed.
    Plain,
}

impl AckStyle {
    fn name(self) -> &'static str {
        match self {
            AckStyle::Double => "double_ack",
            AckStyle::Plain => "ack",
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    crate::net::ensure_loopback("--nats-url", &args.nats_url)?;
    if args.inflight == 0 || args.inflight > 10_000 {
        bail!("--inflight must be between 1 and 10000");
    }
    if args.seconds == 0 || args.seconds > 600 {
        bail!("--seconds must be between 1 and 600");
    }
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (stream_name, subject) = (format!("probe_{tag}"), format!("probe.{tag}"));
    let pub_client = connect(&args.nats_url, "ragq-probe publish").await?;
    let con_client = connect(&args.nats_url, "ragq-probe consume").await?;
    let pub_js = jetstream::new(pub_client.clone());
    let con_js = jetstream::new(con_client.clone());
    let config = stream::Config {
        name: stream_name.clone(),
        subjects: vec![subject.clone()],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        duplicate_window: Duration::from_secs(120),
        max_age: STREAM_MAX_AGE,
        ..Default::default()
    };
    tokio::time::timeout(CALL_TIMEOUT, pub_js.create_stream(config))
        .await
        .context("creating the probe stream timed out")?
        .context("creating the probe stream (is JetStream enabled?)")?;

    let mut phases = Vec::new();
    let mut failure = None;
    for (i, (inflight, seconds, ack)) in [
        (1, args.seconds.min(3), AckStyle::Double),
        (args.inflight, args.seconds, AckStyle::Double),
        (args.inflight, args.seconds, AckStyle::Plain),
    ]
    .into_iter()
    .enumerate()
    {
        eprintln!("[nats] inflight {inflight}, {} for {seconds} s", ack.name());
        let durable = format!("probe-{i}");
        let result = measure(
            &args,
            inflight,
            seconds,
            ack,
            &pub_js,
            &con_js,
            &con_client,
            &stream_name,
            &subject,
            &durable,
        )
        .await;
        // Whatever happened, the next phase starts with no consumer and an empty stream.
        if let Ok(s) = pub_js.get_stream(&stream_name).await {
            let _ = s.delete_consumer(&durable).await;
            let _ = s.purge().await;
        }
        match result {
            Ok(phase) => phases.push(phase),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }

    let deleted = tokio::time::timeout(CALL_TIMEOUT, pub_js.delete_stream(&stream_name)).await;
    if !matches!(deleted, Ok(Ok(_))) {
        eprintln!("[nats] could not delete the stream {stream_name} (it expires in 5 minutes)");
    }
    let _ = pub_client.flush().await;
    drop((pub_js, con_js));
    let _ = pub_client.drain().await;
    let _ = con_client.drain().await;
    match failure {
        Some(e) => Err(e),
        None => Ok(report(&args, &phases)),
    }
}

struct Phase {
    inflight: usize,
    seconds: u64,
    ack: AckStyle,
    payload_bytes: usize,
    rate: f64,
    published: u64,
    acked: u64,
    publish_errors: u64,
    ack_errors: u64,
    redelivered: u64,
    pulls: u64,
    confirm: Summary,
    deliver: Summary,
}

fn report(args: &Args, phases: &[Phase]) -> Value {
    let mut table = Table::new(&[
        "nats",
        "round_trips/s",
        "confirm_p50_ms",
        "confirm_p99_ms",
        "confirm_max_ms",
        "deliver_p50_ms",
        "deliver_p99_ms",
        "deliver_max_ms",
        "acked",
        "errors",
    ]);
    for p in phases {
        table.row(vec![
            format!("inflight {} {} ({} s)", p.inflight, p.ack.name(), p.seconds),
            format!("{:.0}", p.rate),
            ms(p.confirm.p50),
            ms(p.confirm.p99),
            ms(p.confirm.max),
            ms(p.deliver.p50),
            ms(p.deliver.p99),
            ms(p.deliver.max),
            p.acked.to_string(),
            (p.publish_errors + p.ack_errors).to_string(),
        ]);
    }
    let bytes = phases
        .first()
        .map_or(args.payload_bytes, |p| p.payload_bytes);
    print!(
        "nats: JetStream work-queue stream (file storage), {bytes}-byte messages with ragq's headers, PubAck awaited,\n\
         durable pull consumer (explicit ack, pulls of the free slots), ack in a task per message\n\
         round trip = publish -> PubAck -> deliver -> ack (double_ack: the server confirms the ack)\n{}",
        table.render()
    );
    json!({
        "probe": "nats",
        "stream": "work-queue, file storage",
        "payload_bytes": bytes,
        "phases": phases.iter().map(|p| json!({
            "inflight": p.inflight,
            "seconds": p.seconds,
            "ack": p.ack.name(),
            "round_trips_per_s": p.rate,
            "published": p.published,
            "acked": p.acked,
            "publish_errors": p.publish_errors,
            "ack_errors": p.ack_errors,
            "redelivered": p.redelivered,
            "pull_requests": p.pulls,
            "publish_confirm": p.confirm.to_json(),
            "publish_deliver": p.deliver.to_json(),
        })).collect::<Vec<_>>(),
    })
}

/// Counters shared by the consumer and its ack tasks.
#[derive(Default)]
struct Acks {
    acked: AtomicU64,
    in_window: AtomicU64,
    errors: AtomicU64,
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    args: &Args,
    inflight: usize,
    seconds: u64,
    ack: AckStyle,
    pub_js: &jetstream::Context,
    con_js: &jetstream::Context,
    con_client: &async_nats::Client,
    stream_name: &str,
    subject: &str,
    durable: &str,
) -> anyhow::Result<Phase> {
    let stream = con_js
        .get_stream(stream_name)
        .await
        .context("looking up the probe stream")?;
    let consumer: PullConsumer = tokio::time::timeout(
        CALL_TIMEOUT,
        stream.create_consumer(pull::Config {
            durable_name: Some(durable.to_string()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: i64::try_from(inflight.max(1024) * 2).unwrap_or(i64::MAX),
            filter_subject: subject.to_string(),
            ..Default::default()
        }),
    )
    .await
    .context("creating the durable timed out")?
    .context("creating the durable")?;

    let sem = Arc::new(Semaphore::new(inflight));
    let stop = Arc::new(AtomicBool::new(false));
    // Messages the stream confirmed (PubAck): the ones the consumer must see.
    let stored = Arc::new(AtomicU64::new(0));
    let acks = Arc::new(Acks::default());
    let start = Instant::now();
    let window = Duration::from_secs(seconds);

    // Consumer: ragq's pull loop, a task per ack.
    let consumer_task = {
        let (sem, stop, stored, acks) = (sem.clone(), stop.clone(), stored.clone(), acks.clone());
        let (client, js) = (con_client.clone(), con_js.clone());
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(inflight));
            let mut deliver = Latency::new();
            let (mut redelivered, mut pulls) = (0u64, 0u64);
            let mut last = Instant::now();
            // The outstanding pull request: its inbox and the permits of its unfilled slots.
            let mut pull: Option<(async_nats::Subscriber, tokio::sync::OwnedSemaphorePermit)> =
                None;
            let mut acking = tokio::task::JoinSet::new();
            loop {
                while acking.try_join_next().is_some() {}
                // Done when every stored message was settled, or (a lost message) nothing
                // arrived for 2 s after the publisher stopped.
                if stop.load(Ordering::Acquire)
                    && (acks.acked.load(Ordering::Acquire) + acks.errors.load(Ordering::Acquire)
                        >= stored.load(Ordering::Acquire)
                        || last.elapsed() > Duration::from_secs(2))
                {
                    break;
                }
                if pull.is_none() {
                    let held = match tokio::time::timeout(
                        Duration::from_millis(200),
                        slots.clone().acquire_owned(),
                    )
                    .await
                    {
                        Ok(Ok(p)) => p,
                        Ok(Err(_)) => break,
                        Err(_) => continue, // re-check the stop condition
                    };
                    let mut held = held;
                    while let Ok(more) = slots.clone().try_acquire_owned() {
                        held.merge(more);
                    }
                    let inbox = client.new_inbox();
                    let sub = client
                        .subscribe(inbox.clone())
                        .await
                        .map_err(|e| anyhow!("subscribing to a pull inbox: {e}"))?;
                    let request = pull::BatchConfig {
                        batch: held.num_permits(),
                        expires: Some(PULL_EXPIRES),
                        idle_heartbeat: HEARTBEAT,
                        ..Default::default()
                    };
                    consumer
                        .request_batch(request, inbox.into())
                        .await
                        .map_err(|e| anyhow!("pull request: {e}"))?;
                    pulls += 1;
                    pull = Some((sub, held));
                }
                let Some((sub, held)) = pull.as_mut() else {
                    continue;
                };
                let msg = match tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
                    Ok(Some(m)) => m,
                    Ok(None) => bail!("the consumer's connection closed"),
                    Err(_) => continue,
                };
                match msg.status {
                    None | Some(StatusCode::OK) => {}
                    Some(StatusCode::IDLE_HEARTBEAT) => continue,
                    // The request expired (408) or found nothing (404): ask again.
                    Some(StatusCode::TIMEOUT) | Some(StatusCode::NOT_FOUND) => {
                        pull = None;
                        continue;
                    }
                    Some(status) => bail!(
                        "pull request answered {status} {}",
                        msg.description.unwrap_or_default()
                    ),
                }
                last = Instant::now();
                if let Some(us) = latency_us(&msg.payload, now_micros()) {
                    deliver.record_us(us);
                }
                // More messages than asked for should not happen; stay bounded anyway.
                let slot = match held.split(1) {
                    Some(p) => p,
                    None => slots
                        .clone()
                        .acquire_owned()
                        .await
                        .map_err(|_| anyhow!("slots closed"))?,
                };
                if held.num_permits() == 0 {
                    pull = None; // every slot filled: the request is complete
                }
                let msg = jetstream::Message {
                    message: msg,
                    context: js.clone(),
                };
                if msg.info().is_ok_and(|i| i.delivered > 1) {
                    redelivered += 1;
                }
                let (sem, acks) = (sem.clone(), acks.clone());
                acking.spawn(async move {
                    let result = match ack {
                        AckStyle::Double => {
                            tokio::time::timeout(CALL_TIMEOUT, msg.double_ack()).await
                        }
                        AckStyle::Plain => tokio::time::timeout(CALL_TIMEOUT, msg.ack()).await,
                    };
                    if matches!(result, Ok(Ok(()))) {
                        acks.acked.fetch_add(1, Ordering::AcqRel);
                        if start.elapsed() <= window {
                            acks.in_window.fetch_add(1, Ordering::Relaxed);
                        }
                    } else {
                        acks.errors.fetch_add(1, Ordering::AcqRel);
                    }
                    drop(slot);
                    sem.add_permits(1);
                });
            }
            while acking.join_next().await.is_some() {}
            Ok::<_, anyhow::Error>((deliver, redelivered, pulls))
        })
    };

    // Publisher: one connection, each PubAck awaited in its own task (concurrent jobs).
    let confirms = Arc::new(Mutex::new(Latency::new()));
    let publish_errors = Arc::new(AtomicU64::new(0));
    let mut confirm_tasks = tokio::task::JoinSet::new();
    let mut published = 0u64;
    let mut sample_size = 0;
    let mut publish_failure = None;
    while start.elapsed() < window {
        match tokio::time::timeout(Duration::from_millis(200), sem.acquire()).await {
            Ok(Ok(p)) => p.forget(),
            Ok(Err(_)) => break,
            Err(_) => continue,
        }
        let body = payload(args.payload_bytes);
        sample_size = body.len();
        let t0 = Instant::now();
        let pending = match pub_js
            .publish_with_headers(subject.to_string(), job_headers(), Bytes::from(body))
            .await
        {
            Ok(p) => p,
            Err(e) => {
                publish_failure = Some(anyhow!("publish: {e}"));
                break;
            }
        };
        published += 1;
        let (confirms, publish_errors, stored, sem) = (
            confirms.clone(),
            publish_errors.clone(),
            stored.clone(),
            sem.clone(),
        );
        confirm_tasks.spawn(async move {
            match tokio::time::timeout(CALL_TIMEOUT, pending).await {
                Ok(Ok(_ack)) => {
                    stored.fetch_add(1, Ordering::AcqRel);
                    if let Ok(mut h) = confirms.lock() {
                        h.record(t0.elapsed());
                    }
                }
                // Not confirmed: counted as lost, its slot given back.
                _ => {
                    publish_errors.fetch_add(1, Ordering::Relaxed);
                    sem.add_permits(1);
                }
            }
        });
        while confirm_tasks.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(CALL_TIMEOUT, async {
        while confirm_tasks.join_next().await.is_some() {}
    })
    .await;
    stop.store(true, Ordering::Release);
    let (deliver, redelivered, pulls) =
        tokio::time::timeout(Duration::from_secs(30), consumer_task)
            .await
            .context("draining the probe stream timed out")?
            .context("consumer task")??;
    if let Some(e) = publish_failure {
        return Err(e);
    }
    let confirm = confirms.lock().map(|h| h.summary()).unwrap_or_default();
    Ok(Phase {
        inflight,
        seconds,
        ack,
        payload_bytes: sample_size,
        rate: acks.in_window.load(Ordering::Relaxed) as f64 / window.as_secs_f64(),
        published,
        acked: acks.acked.load(Ordering::Acquire),
        publish_errors: publish_errors.load(Ordering::Relaxed),
        ack_errors: acks.errors.load(Ordering::Acquire),
        redelivered,
        pulls,
        confirm,
        deliver: deliver.summary(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_job_sized_json_with_a_stamp() {
        let p = payload(600);
        assert!((590..=610).contains(&p.len()), "{} bytes", p.len());
        let v: Value = serde_json::from_slice(&p).expect("valid JSON");
        assert_eq!(v["kind"], "chat");
        assert!(crate::stamp::last_stamp(&p).is_some());
    }

    #[test]
    fn job_headers_carry_a_dedup_id_and_a_deadline() {
        let h = job_headers();
        let id = h.get("Nats-Msg-Id").map(|v| v.as_str().to_string());
        assert!(id.is_some_and(|i| uuid::Uuid::parse_str(&i).is_ok()));
        assert_ne!(
            job_headers()
                .get("Nats-Msg-Id")
                .map(|v| v.as_str().to_string()),
            h.get("Nats-Msg-Id").map(|v| v.as_str().to_string()),
            "every message has its own de-duplication key"
        );
        assert!(
            h.get("Ragq-Deadline-Ms")
                .and_then(|v| v.as_str().parse::<u64>().ok())
                .is_some()
        );
    }
}
