//! `ragq-probe rabbitmq`: the broker's ceiling for job-sized messages, the way ragq uses it.
//!
//! A temporary durable **quorum** queue `probe.<uuid>` (with `x-expires`, so a crashed probe
//! leaves nothing behind) gets ~600-byte JSON messages published with confirms on one connection
//! (persistent, `mandatory`, a per-message `expiration`, like `RabbitMq::publish`), and consumed
//! on a second connection with `prefetch = --inflight`, acking each.
//!
//! A semaphore bounds the messages between "publish started" and "ack sent", so the probe
//! measures the broker's sustainable round trip rate instead of filling the queue. Two phases:
//! - **inflight 1** (up to 3 s): one message at a time, the latency floor a lone job sees;
//! - **inflight `--inflight`** (`--seconds`): the ceiling. Latency there is mostly queueing
//!   (Little's law: inflight / rate).
//!
//! - **paced** (`--rate R`, optional, `--seconds`): R messages per second evenly spaced, the load
//!   ragq puts on it at R questions per second — to compare the broker's CPU per message with
//!   ragq's at the same rate (an idle-ish Erlang VM spends CPU on its schedulers' busy waiting,
//!   so the CPU per message depends on the rate).
//!
//! Reported per phase: completed round trips (publish → confirm → deliver → ack) per second, the
//! latency of publish → confirm and of publish → deliver, and the broker's CPU per round trip
//! (utime + stime of every local `beam.smp` process from `/proc`, over the phase, divided by the
//! round trips; the whole server's, so run it on an otherwise idle broker). The queue is deleted
//! at the end.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::stamp::{latency_us, now_micros, stamp};
use crate::stats::{Latency, Summary, Table, ms};

pub struct Args {
    pub amqp_url: String,
    pub seconds: u64,
    pub inflight: usize,
    pub payload_bytes: usize,
    pub rate: Option<f64>,
}

/// CPU seconds (user + system) of every process named `beam.smp` on this machine, from `/proc`;
/// `None` where there is no `/proc`.
fn broker_cpu_s() -> Option<f64> {
    let ticks_per_s = 100.0; // USER_HZ: the unit of /proc/<pid>/stat on every Linux
    let mut ticks = 0u64;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ..." — comm may hold spaces; fields after ')' are fixed.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if &stat[open + 1..close] != "beam.smp" {
            continue;
        }
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line; after the comm, field 3 is index 0.
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        ticks += field(11) + field(12);
    }
    Some(ticks as f64 / ticks_per_s)
}

/// A job-shaped JSON payload of about `size` bytes, ending with the publish stamp.
fn payload(size: usize) -> Vec<u8> {
    job_payload(
        size,
        "What is the delivery limit of a quorum queue and how do retries work? ",
    )
}

/// A job-shaped JSON payload of about `size` bytes whose question repeats `text`, ending with
/// the publish stamp (shared by the broker probes).
pub(crate) fn job_payload(size: usize, text: &str) -> Vec<u8> {
    let id = uuid::Uuid::now_v7();
    let head = json!({
        "v": 1, "id": id.to_string(), "kind": "chat",
        "tenant_id": "64e0879f2d8c4128b5d7db55be20ff13", "chat_id": "55ca0d08bf584a5b83f8f6c8296f3e4f",
        "session_id": "0c9d3e1b2a4f4e6d8c7b5a3f1e2d4c6b", "message_id": uuid::Uuid::new_v4().to_string(),
        "options": {"quote": true}, "deadline_ms": 1_764_200_000_000u64,
    })
    .to_string();
    let stamp = stamp(now_micros());
    // head is `{…}`: insert the question and the trace (which carries the stamp) before `}`.
    let fixed = head.len() + stamp.len() + r#","question":"","trace":""}"#.len();
    let question: String = text
        .chars()
        .cycle()
        .take(size.saturating_sub(fixed))
        .collect();
    let mut s = head;
    s.pop();
    s.push_str(&format!(r#","question":"{question}","trace":"{stamp}"}}"#));
    s.into_bytes()
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    crate::net::ensure_loopback("--amqp-url", &args.amqp_url)?;
    if args.inflight == 0 || args.inflight > 65_535 {
        bail!("--inflight must be between 1 and 65535");
    }
    if args.seconds == 0 || args.seconds > 600 {
        bail!("--seconds must be between 1 and 600");
    }
    let queue = format!("probe.{}", uuid::Uuid::new_v4());
    let connect = |name: &'static str| {
        let url = args.amqp_url.clone();
        async move {
            let props = ConnectionProperties::default()
                .with_connection_name(LongString::from(name.to_string()));
            tokio::time::timeout(Duration::from_secs(10), Connection::connect(&url, props))
                .await
                .context("RabbitMQ connect timed out")?
                .context("RabbitMQ connect")
        }
    };
    let pub_conn = connect("ragq-probe publish").await?;
    let con_conn = connect("ragq-probe consume").await?;
    let pch = pub_conn.create_channel().await?;
    let mut qargs = FieldTable::default();
    qargs.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    qargs.insert("x-expires".into(), AMQPValue::LongUInt(120_000));
    pch.queue_declare(
        ShortString::from(queue.clone()),
        QueueDeclareOptions::durable(),
        qargs,
    )
    .await?;
    pch.confirm_select(ConfirmSelectOptions::default()).await?;

    // The floor (one message at a time: the latency a lone job sees) and the ceiling.
    let mut phases = Vec::new();
    let mut failure = None;
    let mut plan = vec![
        (1, args.seconds.min(3), None),
        (args.inflight, args.seconds, None),
    ];
    if let Some(rate) = args.rate.filter(|r| r.is_finite() && *r > 0.0) {
        plan.push((args.inflight, args.seconds, Some(rate)));
    }
    for (inflight, seconds, rate) in plan {
        eprintln!("[rabbitmq] inflight {inflight} for {seconds} s, paced at {rate:?}/s");
        match measure(&args, inflight, seconds, rate, &queue, &pch, &con_conn).await {
            Ok(phase) => phases.push(phase),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }

    let _ = pch
        .queue_delete(
            ShortString::from(queue.clone()),
            QueueDeleteOptions::default(),
        )
        .await;
    let _ = pub_conn.close(200, "probe done".into()).await;
    let _ = con_conn.close(200, "probe done".into()).await;
    match failure {
        Some(e) => Err(e),
        None => Ok(report(&args, &phases)),
    }
}

struct Phase {
    inflight: usize,
    paced: Option<f64>,
    /// The broker's CPU ms per completed round trip over the phase.
    cpu_ms_per_trip: Option<f64>,
    seconds: u64,
    payload_bytes: usize,
    rate: f64,
    published: u64,
    acked: u64,
    nacked: u64,
    confirm: Summary,
    deliver: Summary,
}

fn report(args: &Args, phases: &[Phase]) -> Value {
    let mut table = Table::new(&[
        "rabbitmq",
        "round_trips/s",
        "confirm_p50_ms",
        "confirm_p99_ms",
        "deliver_p50_ms",
        "deliver_p99_ms",
        "deliver_max_ms",
        "acked",
        "nacked",
        "broker_cpu_ms/trip",
    ]);
    for p in phases {
        let name = match p.paced {
            Some(r) => format!("paced {r:.0}/s ({} s)", p.seconds),
            None => format!("inflight {} ({} s)", p.inflight, p.seconds),
        };
        table.row(vec![
            name,
            format!("{:.0}", p.rate),
            ms(p.confirm.p50),
            ms(p.confirm.p99),
            ms(p.deliver.p50),
            ms(p.deliver.p99),
            ms(p.deliver.max),
            p.acked.to_string(),
            p.nacked.to_string(),
            p.cpu_ms_per_trip
                .map_or_else(|| "-".to_string(), |c| format!("{c:.3}")),
        ]);
    }
    let bytes = phases
        .first()
        .map_or(args.payload_bytes, |p| p.payload_bytes);
    print!(
        "rabbitmq: quorum queue, {bytes}-byte persistent messages, publisher confirms, consumer prefetch = inflight, ack each\n\
         round trip = publish -> confirm -> deliver -> ack\n{}",
        table.render()
    );
    json!({
        "probe": "rabbitmq",
        "queue_type": "quorum",
        "payload_bytes": bytes,
        "phases": phases.iter().map(|p| json!({
            "inflight": p.inflight,
            "paced_per_s": p.paced,
            "broker_cpu_ms_per_round_trip": p.cpu_ms_per_trip,
            "seconds": p.seconds,
            "round_trips_per_s": p.rate,
            "published": p.published,
            "acked": p.acked,
            "nacked": p.nacked,
            "publish_confirm": p.confirm.to_json(),
            "publish_deliver": p.deliver.to_json(),
        })).collect::<Vec<_>>(),
    })
}

async fn measure(
    args: &Args,
    inflight: usize,
    seconds: u64,
    paced: Option<f64>,
    queue: &str,
    pch: &lapin::Channel,
    con_conn: &Connection,
) -> anyhow::Result<Phase> {
    let cch = con_conn.create_channel().await?;
    cch.basic_qos(
        u16::try_from(inflight).unwrap_or(u16::MAX),
        BasicQosOptions { global: false },
    )
    .await?;
    let mut consumer = cch
        .basic_consume(
            ShortString::from(queue.to_string()),
            ShortString::from("ragq-probe"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let sem = Arc::new(Semaphore::new(inflight));
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let cpu_before = broker_cpu_s();
    let start = Instant::now();
    let window = Duration::from_secs(seconds);

    // Consumer: deliver latency, ack, release a permit.
    let consumer_task = {
        let (sem, stop, published) = (sem.clone(), stop.clone(), published.clone());
        tokio::spawn(async move {
            let mut deliver = Latency::new();
            let (mut acked, mut in_window) = (0u64, 0u64);
            let mut last = Instant::now();
            loop {
                // Done when every published message came back, or (a nack or a lost message)
                // nothing arrived for 2 s after the publisher stopped.
                if stop.load(Ordering::Acquire)
                    && (acked >= published.load(Ordering::Acquire)
                        || last.elapsed() > Duration::from_secs(2))
                {
                    break;
                }
                let next = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await;
                let delivery = match next {
                    Ok(Some(Ok(d))) => d,
                    Ok(Some(Err(e))) => return Err(anyhow::anyhow!("consume: {e}")),
                    Ok(None) => break,
                    Err(_) => continue, // re-check the stop condition
                };
                last = Instant::now();
                if let Some(us) = latency_us(&delivery.data, now_micros()) {
                    deliver.record_us(us);
                }
                delivery.acker.ack(BasicAckOptions::default()).await?;
                acked += 1;
                if start.elapsed() <= window {
                    in_window += 1;
                }
                sem.add_permits(1);
            }
            Ok((deliver, acked, in_window))
        })
    };

    // Publisher: one confirmed channel, up to `inflight` messages in flight.
    let confirms = Arc::new(Mutex::new(Latency::new()));
    let nacked = Arc::new(AtomicU64::new(0));
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_expiration("120000".into());
    let mut confirm_tasks = Vec::new();
    let mut sample_size = 0;
    let gap = paced.map(|r| Duration::from_secs_f64(1.0 / r));
    let mut sent = 0u32;
    while start.elapsed() < window {
        if let Some(gap) = gap {
            tokio::time::sleep_until((start + gap * sent).into()).await;
            sent = sent.saturating_add(1);
        }
        let permit = tokio::time::timeout(Duration::from_millis(200), sem.acquire()).await;
        match permit {
            Ok(Ok(p)) => p.forget(),
            Ok(Err(_)) => break,
            Err(_) => continue,
        }
        let body = payload(args.payload_bytes);
        sample_size = body.len();
        let t0 = Instant::now();
        let confirm = pch
            .basic_publish(
                ShortString::from(""),
                ShortString::from(queue.to_string()),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                props
                    .clone()
                    .with_message_id(ShortString::from(uuid::Uuid::now_v7().to_string())),
            )
            .await?;
        published.fetch_add(1, Ordering::AcqRel);
        let (confirms, nacked) = (confirms.clone(), nacked.clone());
        confirm_tasks.push(tokio::spawn(async move {
            let acked = match confirm.await {
                Ok(c) => !c.is_nack() && c.take_message().is_none(),
                Err(_) => false,
            };
            if acked {
                if let Ok(mut h) = confirms.lock() {
                    h.record(t0.elapsed());
                }
            } else {
                nacked.fetch_add(1, Ordering::Relaxed);
            }
        }));
        if confirm_tasks.len() >= 4096 {
            confirm_tasks.retain(|t| !t.is_finished());
        }
    }
    stop.store(true, Ordering::Release);
    for t in confirm_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let (deliver, acked, in_window) = tokio::time::timeout(Duration::from_secs(30), consumer_task)
        .await
        .context("draining the probe queue timed out")?
        .context("consumer task")??;
    let cpu_s = broker_cpu_s()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let _ = cch.close(200, "phase done".into()).await;
    let confirm = confirms.lock().map(|h| h.summary()).unwrap_or_default();
    Ok(Phase {
        inflight,
        paced,
        cpu_ms_per_trip: cpu_s.filter(|_| acked > 0).map(|s| 1e3 * s / acked as f64),
        seconds,
        payload_bytes: sample_size,
        rate: in_window as f64 / window.as_secs_f64(),
        published: published.load(Ordering::Acquire),
        acked,
        nacked: nacked.load(Ordering::Relaxed),
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
}
