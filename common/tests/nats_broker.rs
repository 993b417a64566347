//! The NATS JetStream broker against a real server (`RAGQ_NATS_URL`, default
//! `nats://127.0.0.1:4222`, JetStream enabled). Each test has its own subject prefix and deletes
//! its streams at the end; each is bounded by a timeout.

use std::future::Future;
use std::time::Duration;

use futures::FutureExt;

use ragq_common::broker::nats::NatsBroker;
use ragq_common::broker::{Broker, BrokerKind, Delivery, JobConsumer, JobPublisher};
use ragq_common::config::{BrokerConfig, NatsConfig};
use ragq_common::job::{JOB_VERSION, Job, JobKind, JobOptions, Lane};
use ragq_common::tls::TlsRoots;
use uuid::Uuid;

const TEST_BOUND: Duration = Duration::from_secs(60);

fn nats_url() -> String {
    std::env::var("RAGQ_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn configs(prefix: &str, delivery_limit: u32, ack_wait_ms: u64) -> (BrokerConfig, NatsConfig) {
    let broker = BrokerConfig {
        kind: BrokerKind::Nats,
        url: String::new(),
        prefix: prefix.to_string(),
        delivery_limit,
        publish_timeout_ms: 5_000,
        queue_expires_ms: None,
    };
    let nats = NatsConfig {
        url: nats_url(),
        ack_wait_ms,
        max_ack_pending: 1_000,
        replicas: 1,
    };
    (broker, nats)
}

async fn connect_with(prefix: &str, delivery_limit: u32, ack_wait_ms: u64) -> NatsBroker {
    let (b, n) = configs(prefix, delivery_limit, ack_wait_ms);
    NatsBroker::connect(&b, &n, "ragq-test", &TlsRoots::public())
        .await
        .expect("connect to NATS")
}

fn prefix() -> String {
    format!("test.{}", Uuid::new_v4().simple())
}

fn job(deadline_ms: i64) -> Job {
    Job {
        v: JOB_VERSION,
        id: Uuid::now_v7(),
        kind: JobKind::Chat,
        tenant_id: "t".into(),
        chat_id: "c".into(),
        session_id: None,
        message_id: "m".into(),
        question: "q?".into(),
        messages: vec![],
        options: JobOptions::default(),
        deadline_ms,
        params: serde_json::Value::Null,
        trace: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
    }
}

fn live_job() -> Job {
    job(ragq_common::now_ms() + 5 * 60 * 1000)
}

/// The next delivery within `within`, or `None` if there was none.
async fn next_within(c: &mut Box<dyn JobConsumer>, within: Duration) -> Option<Delivery> {
    match tokio::time::timeout(within, c.next()).await {
        Ok(Some(Ok(d))) => Some(d),
        Ok(Some(Err(e))) => panic!("consumer error: {e}"),
        Ok(None) => panic!("consumer ended"),
        Err(_) => None,
    }
}

async fn must_next(c: &mut Box<dyn JobConsumer>) -> Delivery {
    next_within(c, Duration::from_secs(10))
        .await
        .expect("a delivery within 10 s")
}

fn job_of(d: &Delivery) -> Job {
    Job::decode(&d.payload).expect("payload decodes")
}

/// Runs `body` with a fresh broker (limit 5, ack wait 30 s unless the test says otherwise),
/// bounded by [`TEST_BOUND`], then deletes the topology.
async fn with_broker<F, Fut>(delivery_limit: u32, ack_wait_ms: u64, body: F)
where
    F: FnOnce(NatsBroker) -> Fut,
    Fut: Future<Output = ()>,
{
    let broker = connect_with(&prefix(), delivery_limit, ack_wait_ms).await;
    // A failing body still tears down (its panic is caught, then resumed).
    let run = std::panic::AssertUnwindSafe(body(broker.clone())).catch_unwind();
    let outcome = tokio::time::timeout(TEST_BOUND, run).await;
    broker.delete_topology().await.expect("delete topology");
    broker.close().await;
    match outcome.expect("test finished within its bound") {
        Ok(()) => {}
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

#[tokio::test]
async fn publish_consume_ack_then_nothing_more() {
    with_broker(5, 30_000, |b| async move {
        let j = live_job();
        b.publish(Lane::Interactive, &j).await.unwrap();
        let mut c = b.consume(Lane::Interactive, 4, "t").await.unwrap();
        let d = must_next(&mut c).await;
        assert_eq!(job_of(&d), j);
        assert!(!d.redelivered);
        assert_eq!(d.delivery_count, 0);
        assert_eq!(d.message_id, Some(j.id.to_string()));
        assert_eq!(d.traceparent, j.trace);
        assert_eq!(d.death_reason, None);
        d.settle.ack().await.unwrap();
        assert!(next_within(&mut c, Duration::from_secs(3)).await.is_none());
        assert_eq!(b.depth(Lane::Interactive).await.unwrap(), 0);
        // Other lanes are separate streams.
        assert_eq!(b.depth(Lane::Batch).await.unwrap(), 0);
    })
    .await;
}

#[tokio::test]
async fn the_same_job_twice_is_delivered_once() {
    with_broker(5, 30_000, |b| async move {
        let j = live_job();
        b.publish(Lane::Batch, &j).await.unwrap();
        b.publish(Lane::Batch, &j).await.unwrap(); // a duplicate ack is a success
        assert_eq!(b.depth(Lane::Batch).await.unwrap(), 1);
        let mut c = b.consume(Lane::Batch, 4, "t").await.unwrap();
        let d = must_next(&mut c).await;
        assert_eq!(job_of(&d).id, j.id);
        d.settle.ack().await.unwrap();
        assert!(next_within(&mut c, Duration::from_secs(3)).await.is_none());
    })
    .await;
}

#[tokio::test]
async fn prefetch_bounds_unsettled_deliveries() {
    with_broker(5, 30_000, |b| async move {
        let jobs: Vec<Job> = (0..5).map(|_| live_job()).collect();
        for j in &jobs {
            b.publish(Lane::Interactive, j).await.unwrap();
        }
        let mut c = b.consume(Lane::Interactive, 2, "t").await.unwrap();
        let mut seen = Vec::new();
        let mut held: Vec<Delivery> = Vec::new();
        while seen.len() < jobs.len() {
            if held.len() == 2 {
                // Both permits taken: nothing more may arrive until one is settled.
                assert!(
                    next_within(&mut c, Duration::from_millis(1500))
                        .await
                        .is_none()
                );
                held.remove(0).settle.ack().await.unwrap();
                continue;
            }
            let d = must_next(&mut c).await;
            seen.push(job_of(&d).id);
            held.push(d);
            assert!(held.len() <= 2);
        }
        for d in held {
            d.settle.ack().await.unwrap();
        }
        seen.sort();
        let mut want: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
        want.sort();
        assert_eq!(seen, want);
        assert!(next_within(&mut c, Duration::from_secs(2)).await.is_none());
    })
    .await;
}

#[tokio::test]
async fn requeue_redelivers_with_a_count() {
    with_broker(5, 30_000, |b| async move {
        let j = live_job();
        b.publish(Lane::Interactive, &j).await.unwrap();
        let mut c = b.consume(Lane::Interactive, 1, "t").await.unwrap();
        let d = must_next(&mut c).await;
        d.settle.requeue().await.unwrap();
        let d = must_next(&mut c).await;
        assert_eq!(job_of(&d).id, j.id);
        assert!(d.redelivered);
        assert_eq!(d.delivery_count, 1);
        d.settle.ack().await.unwrap();
        assert!(next_within(&mut c, Duration::from_secs(2)).await.is_none());
    })
    .await;
}

#[tokio::test]
async fn delivery_limit_dead_letters_with_a_notice() {
    with_broker(2, 30_000, |b| async move {
        let mut notices = b.consume_dead_notices("n").await.unwrap();
        let j = live_job();
        b.publish(Lane::Interactive, &j).await.unwrap();
        let mut c = b.consume(Lane::Interactive, 1, "t").await.unwrap();
        for count in 0..2 {
            let d = must_next(&mut c).await;
            assert_eq!(d.delivery_count, count);
            d.settle.requeue().await.unwrap();
        }
        // The third delivery is past the limit: dead-lettered, not yielded.
        assert!(next_within(&mut c, Duration::from_secs(4)).await.is_none());
        let dead = b.dead_letters(10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].reason, "delivery_limit");
        assert_eq!(Job::decode(&dead[0].payload).unwrap().id, j.id);
        let n = must_next(&mut notices).await;
        assert_eq!(n.message_id, Some(j.id.to_string()));
        assert_eq!(n.death_reason.as_deref(), Some("delivery_limit"));
        n.settle.ack().await.unwrap();
        // Acking the notice leaves the letter for operators.
        assert_eq!(b.dead_letters(10).await.unwrap().len(), 1);
        assert_eq!(b.depth(Lane::Interactive).await.unwrap(), 0);
    })
    .await;
}

#[tokio::test]
async fn an_expired_job_is_dead_lettered_not_delivered() {
    with_broker(5, 30_000, |b| async move {
        let mut notices = b.consume_dead_notices("n").await.unwrap();
        let j = job(ragq_common::now_ms() - 1_000);
        b.publish(Lane::Interactive, &j).await.unwrap();
        let mut c = b.consume(Lane::Interactive, 2, "t").await.unwrap();
        assert!(next_within(&mut c, Duration::from_secs(3)).await.is_none());
        let dead = b.dead_letters(10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].reason, "expired");
        let n = must_next(&mut notices).await;
        assert_eq!(n.message_id, Some(j.id.to_string()));
        assert_eq!(n.death_reason.as_deref(), Some("expired"));
        n.settle.ack().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn dead_letter_is_rejected() {
    with_broker(5, 30_000, |b| async move {
        let j = live_job();
        b.publish(Lane::Ingest, &j).await.unwrap();
        let mut c = b.consume(Lane::Ingest, 1, "t").await.unwrap();
        let d = must_next(&mut c).await;
        d.settle.dead_letter().await.unwrap();
        let dead = b.dead_letters(10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].reason, "rejected");
        assert_eq!(Job::decode(&dead[0].payload).unwrap(), j);
        assert!(next_within(&mut c, Duration::from_secs(2)).await.is_none());
        assert_eq!(b.depth(Lane::Ingest).await.unwrap(), 0);
    })
    .await;
}

#[tokio::test]
async fn replay_one_then_all() {
    with_broker(5, 30_000, |b| async move {
        let jobs: Vec<Job> = (0..3).map(|_| live_job()).collect();
        for j in &jobs {
            b.publish(Lane::Batch, j).await.unwrap();
        }
        let mut c = b.consume(Lane::Batch, 3, "t").await.unwrap();
        for _ in 0..3 {
            must_next(&mut c).await.settle.dead_letter().await.unwrap();
        }
        assert_eq!(b.dead_letters(10).await.unwrap().len(), 3);
        assert_eq!(b.dead_letters(2).await.unwrap().len(), 2);

        let picked = jobs[1].id;
        assert_eq!(b.replay_dead_letters(Some(picked)).await.unwrap(), 1);
        let d = must_next(&mut c).await;
        let replayed = job_of(&d);
        assert_eq!(replayed.id, picked);
        assert_eq!(d.message_id, Some(picked.to_string()));
        assert_eq!(d.delivery_count, 0);
        assert!(replayed.deadline_ms > ragq_common::now_ms() + 9 * 60 * 1000);
        d.settle.ack().await.unwrap();
        let left: Vec<Uuid> = b
            .dead_letters(10)
            .await
            .unwrap()
            .iter()
            .map(|l| Job::decode(&l.payload).unwrap().id)
            .collect();
        assert_eq!(left, vec![jobs[0].id, jobs[2].id]);

        // An undecodable letter stays; the rest go back (to the lane they came from).
        let client = async_nats::connect(nats_url().as_str()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        js.publish(b.topology().dead_subject(), "not a job".into())
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(b.replay_dead_letters(None).await.unwrap(), 2);
        for _ in 0..2 {
            must_next(&mut c).await.settle.ack().await.unwrap();
        }
        let left = b.dead_letters(10).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].payload, b"not a job");
        assert_eq!(left[0].reason, "unknown");
        assert_eq!(b.replay_dead_letters(None).await.unwrap(), 0);
    })
    .await;
}

#[tokio::test]
async fn hand_back_does_not_count_against_the_limit() {
    with_broker(5, 30_000, |b| async move {
        let j = live_job();
        b.publish(Lane::Interactive, &j).await.unwrap();
        let mut c = b.consume(Lane::Interactive, 1, "t").await.unwrap();
        must_next(&mut c).await.settle.requeue().await.unwrap();
        let d = must_next(&mut c).await;
        assert_eq!(d.delivery_count, 1);
        d.settle.hand_back(&d.payload, 60_000).await.unwrap();
        let d = must_next(&mut c).await;
        assert_eq!(job_of(&d).id, j.id);
        assert_eq!(d.delivery_count, 0);
        assert!(!d.redelivered);
        assert_eq!(d.message_id, Some(j.id.to_string()));
        assert_eq!(d.traceparent, j.trace);
        d.settle.ack().await.unwrap();
        assert!(next_within(&mut c, Duration::from_secs(2)).await.is_none());
    })
    .await;
}

#[tokio::test]
async fn a_dropped_delivery_comes_back_promptly() {
    // Ack wait 30 s: a redelivery within 3 s is the drop's Nak, not the ack wait.
    with_broker(5, 30_000, |b| async move {
        let j = live_job();
        b.publish(Lane::Interactive, &j).await.unwrap();
        let mut c = b.consume(Lane::Interactive, 1, "t").await.unwrap();
        let d = must_next(&mut c).await;
        drop(d);
        let d = next_within(&mut c, Duration::from_secs(3))
            .await
            .expect("redelivered well under the ack wait");
        assert_eq!(job_of(&d).id, j.id);
        assert!(d.redelivered);
        d.settle.ack().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn progress_heartbeats_hold_a_long_job() {
    with_broker(5, 1_000, |b| async move {
        let j = live_job();
        b.publish(Lane::Interactive, &j).await.unwrap();
        let mut c = b.consume(Lane::Interactive, 2, "t").await.unwrap();
        let d = must_next(&mut c).await;
        // 3.5 ack waits with a free permit: a redelivery would arrive here.
        assert!(
            next_within(&mut c, Duration::from_millis(3500))
                .await
                .is_none()
        );
        d.settle.ack().await.unwrap();
        assert!(next_within(&mut c, Duration::from_secs(2)).await.is_none());
        assert_eq!(b.depth(Lane::Interactive).await.unwrap(), 0);
    })
    .await;
}

#[tokio::test]
async fn queue_stats_count_waiting_jobs() {
    with_broker(5, 30_000, |b| async move {
        for _ in 0..3 {
            b.publish(Lane::Batch, &live_job()).await.unwrap();
        }
        let stats = b.queue_stats(Lane::Batch).await.unwrap();
        assert_eq!(stats.messages, 3);
        assert_eq!(stats.consumers, 0);
        let mut c = b.consume(Lane::Batch, 1, "t").await.unwrap();
        let d = must_next(&mut c).await;
        // One in flight is not waiting; a consumer with no free permit has no pull waiting.
        let stats = b.queue_stats(Lane::Batch).await.unwrap();
        assert_eq!(stats.messages, 2);
        d.settle.ack().await.unwrap();
        for _ in 0..2 {
            must_next(&mut c).await.settle.ack().await.unwrap();
        }
        // Now idle: its pull request waits at the server.
        let idle = async {
            loop {
                let s = b.queue_stats(Lane::Batch).await.unwrap();
                if s.messages == 0 && s.consumers == 1 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let poll = async {
            // Keep the consumer pulling while the stats are read.
            assert!(next_within(&mut c, Duration::from_secs(5)).await.is_none());
        };
        tokio::select! {
            _ = idle => {}
            _ = poll => panic!("the idle consumer's pull was never counted"),
        }
    })
    .await;
}

#[tokio::test]
async fn reconnecting_with_another_ack_wait_updates_the_durable() {
    let p = prefix();
    let first = connect_with(&p, 5, 30_000).await;
    let second = connect_with(&p, 5, 2_000).await;
    let (_, n) = configs(&p, 5, 2_000);
    let client = async_nats::connect(n.url.as_str()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js
        .get_stream(first.topology().stream(Lane::Interactive))
        .await
        .unwrap();
    let info = stream.consumer_info("jobs-interactive").await.unwrap();
    assert_eq!(info.config.ack_wait, Duration::from_secs(2));
    assert_eq!(info.config.max_deliver, 6);
    second.delete_topology().await.unwrap();
    first.close().await;
    second.close().await;
}

#[tokio::test]
async fn a_consumer_deleted_under_a_pull_is_recreated() {
    with_broker(5, 30_000, |b| async move {
        let mut c = b.consume(Lane::Interactive, 1, "t").await.unwrap();
        let j = live_job();
        let meddle = async {
            // Let the pull request reach the server, then delete the durable under it.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let client = async_nats::connect(nats_url().as_str()).await.unwrap();
            let js = async_nats::jetstream::new(client);
            let stream = js
                .get_stream(b.topology().stream(Lane::Interactive))
                .await
                .unwrap();
            stream.delete_consumer("jobs-interactive").await.unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
            b.publish(Lane::Interactive, &j).await.unwrap();
        };
        let (d, ()) = tokio::join!(next_within(&mut c, Duration::from_secs(15)), meddle);
        let d = d.expect("delivered after the durable was re-created");
        assert_eq!(job_of(&d).id, j.id);
        d.settle.ack().await.unwrap();
    })
    .await;
}

/// A TCP proxy to the server. Bumping the returned sender cuts every connection through it;
/// while the flag is set it refuses new ones (the client keeps reconnecting).
async fn cutting_proxy() -> (
    String,
    tokio::sync::watch::Sender<u64>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let upstream = nats_url()
        .trim_start_matches("nats://")
        .trim_end_matches('/')
        .to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (cut, cuts) = tokio::sync::watch::channel(0u64);
    let down = std::sync::Arc::new(AtomicBool::new(false));
    let refusing = down.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if refusing.load(Ordering::SeqCst) {
                continue; // dropped: the client sees the server as down
            }
            let mut cuts = cuts.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                cuts.borrow_and_update();
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = cuts.changed() => {}
                }
            });
        }
    });
    (format!("nats://{addr}"), cut, down)
}

/// Connects a second broker to `b`'s topology through a [`cutting_proxy`].
async fn proxied(
    b: &NatsBroker,
    publish_timeout_ms: u64,
) -> (
    NatsBroker,
    tokio::sync::watch::Sender<u64>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let (url, cut, down) = cutting_proxy().await;
    let (mut cfg, mut nats) = configs(&b.topology().prefix, 5, 30_000);
    cfg.publish_timeout_ms = publish_timeout_ms;
    nats.url = url;
    let broker = NatsBroker::connect(&cfg, &nats, "ragq-test-proxied", &TlsRoots::public())
        .await
        .unwrap();
    (broker, cut, down)
}

#[tokio::test]
async fn pulling_survives_a_connection_cut() {
    with_broker(5, 30_000, |b| async move {
        let (proxied, cut, _) = proxied(&b, 5_000).await;
        let mut c = proxied.consume(Lane::Interactive, 1, "t").await.unwrap();
        let j = live_job();
        let meddle = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            cut.send_modify(|n| *n += 1);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            b.publish(Lane::Interactive, &j).await.unwrap();
        };
        let (d, ()) = tokio::join!(next_within(&mut c, Duration::from_secs(20)), meddle);
        let d = d.expect("delivered after the reconnect");
        assert_eq!(job_of(&d).id, j.id);
        d.settle.ack().await.unwrap();
        drop(c);
        proxied.close().await;
    })
    .await;
}

#[tokio::test]
async fn a_pull_request_lost_in_an_outage_is_replaced() {
    use std::sync::atomic::Ordering;
    with_broker(5, 30_000, |b| async move {
        let (proxied, cut, down) = proxied(&b, 5_000).await;
        let mut c = proxied.consume(Lane::Interactive, 1, "t").await.unwrap();
        let j = live_job();
        let meddle = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            // Down past the pull request's expiry: its end (408) goes to nobody, and only the
            // missing heartbeats tell the consumer to pull again.
            down.store(true, Ordering::SeqCst);
            cut.send_modify(|n| *n += 1);
            tokio::time::sleep(Duration::from_secs(6)).await;
            down.store(false, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(1)).await;
            b.publish(Lane::Interactive, &j).await.unwrap();
        };
        let (d, ()) = tokio::join!(next_within(&mut c, Duration::from_secs(30)), meddle);
        let d = d.expect("delivered after the outage");
        assert_eq!(job_of(&d).id, j.id);
        d.settle.ack().await.unwrap();
        drop(c);
        proxied.close().await;
    })
    .await;
}

#[tokio::test]
async fn an_unconfirmed_publish_times_out() {
    use std::sync::atomic::Ordering;
    with_broker(5, 30_000, |b| async move {
        let (proxied, cut, down) = proxied(&b, 1_000).await;
        down.store(true, Ordering::SeqCst);
        cut.send_modify(|n| *n += 1);
        let started = tokio::time::Instant::now();
        let got = proxied.publish(Lane::Interactive, &live_job()).await;
        assert!(
            matches!(
                got,
                Err(ragq_common::broker::BrokerError::ConfirmTimeout(1_000))
            ),
            "{:?}",
            got.err()
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        down.store(false, Ordering::SeqCst);
        proxied.close().await;
    })
    .await;
}
