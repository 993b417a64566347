//! The NATS bus against a real server (`nats-server -js` at 127.0.0.1:4222). Every test uses
//! its own prefix `test.{uuid}` (its own subjects, stream and buckets), deletes them at the end
//! (also when it fails), and is bounded by a timeout.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use ragq_common::bus::control::{Control, TenantAdmission, TenantJobLimits};
use ragq_common::bus::nats::NatsBus;
use ragq_common::bus::{BusError, Closed, EventPublisher, EventSubscriber, Subscription};
use ragq_common::config::NatsConfig;
use ragq_common::event::{Done, EventBody, StreamEvent, Usage};
use ragq_common::tls::TlsRoots;
use uuid::Uuid;

const URL: &str = "nats://127.0.0.1:4222";
const TEST_TIMEOUT: Duration = Duration::from_secs(60);
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

fn config(url: &str) -> NatsConfig {
    NatsConfig {
        url: url.to_string(),
        ack_wait_ms: 10_000,
        max_ack_pending: 1000,
        replicas: 1,
    }
}

async fn bus_at(url: &str, prefix: &str, name: &str) -> NatsBus {
    NatsBus::connect(&config(url), prefix, name, &TlsRoots::public())
        .await
        .expect("connect to nats-server at 127.0.0.1:4222")
}

/// Two connections on one fresh prefix: `a` plays the api, `b` the worker.
struct Env {
    prefix: String,
    a: NatsBus,
    b: NatsBus,
}

async fn run<F, Fut>(test: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = ()>,
{
    let prefix = format!("test.{}", Uuid::new_v4().simple());
    let a = bus_at(URL, &prefix, "test-a").await;
    let b = bus_at(URL, &prefix, "test-b").await;
    let env = Env {
        prefix,
        a: a.clone(),
        b,
    };
    let out = AssertUnwindSafe(tokio::time::timeout(TEST_TIMEOUT, test(env)))
        .catch_unwind()
        .await;
    a.delete_all().await.expect("teardown");
    match out {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("test timed out after {TEST_TIMEOUT:?}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn delta(seq: u64) -> StreamEvent {
    StreamEvent {
        seq,
        attempt: 0,
        body: EventBody::Delta {
            text: format!("t{seq} "),
        },
    }
}

fn done(seq: u64) -> StreamEvent {
    StreamEvent {
        seq,
        attempt: 0,
        body: EventBody::Done(Box::new(Done::new(
            "m".into(),
            "answer".into(),
            String::new(),
            Usage::default(),
            false,
        ))),
    }
}

/// `n - 1` deltas then a terminal event.
async fn publish_job(p: &impl EventPublisher, job: Uuid, n: u64) {
    for seq in 1..n {
        p.publish(job, &delta(seq)).await.unwrap();
    }
    p.publish(job, &done(n)).await.unwrap();
}

async fn recv(sub: &mut Subscription) -> Result<Vec<u8>, Closed> {
    tokio::time::timeout(RECV_TIMEOUT, sub.recv())
        .await
        .expect("no event within 5 s")
}

/// Reads events until the terminal one; returns their seqs.
async fn read_to_end(sub: &mut Subscription) -> Vec<u64> {
    let mut seqs = Vec::new();
    loop {
        let payload = recv(sub).await.expect("stream ended early");
        if payload.is_empty() {
            continue; // a resync request
        }
        let event = StreamEvent::decode(&payload).expect("decodable event");
        seqs.push(event.seq);
        if event.body.is_terminal() {
            return seqs;
        }
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within 5 s: {what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn events_arrive_in_order_and_are_replayed() {
    run(|env| async move {
        let subscriber = env.a.subscriber(64);
        let publisher = env.b.publisher();
        let job = Uuid::new_v4();
        let mut sub = subscriber.subscribe(job).await.unwrap();
        publish_job(&publisher, job, 20).await;
        assert_eq!(read_to_end(&mut sub).await, (1..=20).collect::<Vec<_>>());

        let replay = env.a.control().replay(job).await.unwrap();
        let seqs: Vec<u64> = replay
            .iter()
            .map(|p| StreamEvent::decode(p).unwrap().seq)
            .collect();
        assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
        assert!(
            StreamEvent::decode(replay.last().unwrap())
                .unwrap()
                .body
                .is_terminal()
        );

        assert_eq!(publisher.last_seq(job).await.unwrap(), 20);
        let last = publisher.last_event(job).await.unwrap().unwrap();
        assert_eq!(last.seq, 20);
        assert!(matches!(last.body, EventBody::Done(_)));

        let unknown = Uuid::new_v4();
        assert_eq!(publisher.last_seq(unknown).await.unwrap(), 0);
        assert!(publisher.last_event(unknown).await.unwrap().is_none());
        assert!(env.a.control().replay(unknown).await.unwrap().is_empty());
    })
    .await;
}

/// `subscribe` returns only when the server has the subscription: an event published by
/// another connection right after the return is always delivered.
#[tokio::test(flavor = "multi_thread")]
async fn subscription_is_active_when_subscribe_returns() {
    run(|env| async move {
        let subscriber = env.a.subscriber(8);
        let publisher = env.b.publisher();
        for _ in 0..30 {
            let job = Uuid::new_v4();
            let mut sub = subscriber.subscribe(job).await.unwrap();
            publisher.publish(job, &delta(1)).await.unwrap();
            let event = StreamEvent::decode(&recv(&mut sub).await.unwrap()).unwrap();
            assert_eq!(event.seq, 1);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_readers_of_one_job_each_get_every_event() {
    run(|env| async move {
        let subscriber = env.a.subscriber(64);
        let publisher = env.b.publisher();
        let job = Uuid::new_v4();
        let mut first = subscriber.subscribe(job).await.unwrap();
        let mut second = subscriber.subscribe(job).await.unwrap();
        let other = subscriber.subscribe(Uuid::new_v4()).await.unwrap();
        assert_eq!(subscriber.readers_of(job), 2);
        assert_eq!(subscriber.open_streams(), 3);

        publish_job(&publisher, job, 10).await;
        assert_eq!(read_to_end(&mut first).await, (1..=10).collect::<Vec<_>>());
        assert_eq!(read_to_end(&mut second).await, (1..=10).collect::<Vec<_>>());

        drop(first);
        assert_eq!(subscriber.readers_of(job), 1);
        assert_eq!(subscriber.open_streams(), 2);
        drop(other);
        assert_eq!(subscriber.open_streams(), 1);

        // The remaining reader still gets the job's events (a second attempt, say).
        publish_job(&publisher, job, 3).await;
        assert_eq!(read_to_end(&mut second).await, vec![1, 2, 3]);
        drop(second);
        assert_eq!(subscriber.readers_of(job), 0);
        assert_eq!(subscriber.open_streams(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_reader_is_cut_off_and_the_others_go_on() {
    run(|env| async move {
        let small = env.a.subscriber(2);
        let large = env.a.subscriber(256);
        let publisher = env.b.publisher();
        let job = Uuid::new_v4();
        let mut slow = small.subscribe(job).await.unwrap();
        let mut fast = large.subscribe(job).await.unwrap();

        publish_job(&publisher, job, 50).await;
        assert_eq!(read_to_end(&mut fast).await, (1..=50).collect::<Vec<_>>());

        eventually("slow reader removed", || small.readers_of(job) == 0).await;
        assert_eq!(small.open_streams(), 0);
        // What was buffered before the cut is still read, then the reason.
        let mut got = 0;
        let why = loop {
            match recv(&mut slow).await {
                Ok(_) => got += 1,
                Err(why) => break why,
            }
        };
        assert_eq!(why, Closed::SlowReader);
        assert!(got <= 2, "read {got} events from a buffer of 2");
        assert_eq!(large.readers_of(job), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_a_running_job_and_marks_a_queued_one() {
    run(|env| async move {
        let watcher = env.b.cancel_watcher().await.unwrap();
        let running = Uuid::new_v4();
        let watch = watcher.watch(running).await;
        assert!(!watch.token.is_cancelled());
        let unrelated = watcher.watch(Uuid::new_v4()).await;

        env.a.control().cancel(running).await.unwrap();
        tokio::time::timeout(RECV_TIMEOUT, watch.token.cancelled())
            .await
            .expect("running job's token cancelled");
        assert!(!unrelated.token.is_cancelled());

        let queued = Uuid::new_v4();
        env.a.control().cancel(queued).await.unwrap();
        assert!(watcher.watch(queued).await.token.is_cancelled());
        assert!(!watcher.watch(Uuid::new_v4()).await.token.is_cancelled());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn owner_is_shared_and_per_job() {
    run(|env| async move {
        let job = Uuid::new_v4();
        env.a
            .control()
            .set_owner(job, "tenant-1 record", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            env.b.control().owner(job).await.unwrap().as_deref(),
            Some("tenant-1 record")
        );
        assert_eq!(env.b.control().owner(Uuid::new_v4()).await.unwrap(), None);
        env.b
            .control()
            .set_owner(job, "tenant-2", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            env.a.control().owner(job).await.unwrap().as_deref(),
            Some("tenant-2")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attached_readers_are_counted_across_replicas() {
    run(|env| async move {
        let (a, b) = (env.a.control(), env.b.control());
        let job = Uuid::new_v4();
        assert_eq!(a.attached_readers(job).await.unwrap(), 0);
        let (r1, r2, r3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        a.attach_reader(job, r1, Duration::from_secs(30))
            .await
            .unwrap();
        b.attach_reader(job, r2, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(a.attached_readers(job).await.unwrap(), 2);
        assert_eq!(b.attached_readers(job).await.unwrap(), 2);
        // Refreshing an attachment does not count it twice.
        a.attach_reader(job, r1, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(b.attached_readers(job).await.unwrap(), 2);

        b.detach_reader(job, r1).await.unwrap();
        assert_eq!(a.attached_readers(job).await.unwrap(), 1);
        b.detach_reader(job, r1).await.unwrap(); // already gone: nothing happens

        // An attachment past its ttl does not count.
        a.attach_reader(job, r3, Duration::from_millis(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(b.attached_readers(job).await.unwrap(), 1);
        assert_eq!(a.attached_readers(Uuid::new_v4()).await.unwrap(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_are_counted_across_replicas() {
    run(|env| async move {
        let (a, b) = (env.a.control(), env.b.control());
        let mut counts = Vec::new();
        for i in 0..6 {
            let c = if i % 2 == 0 { &a } else { &b };
            counts.push(
                c.count_request("token.with/odd chars", 7, 60)
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(counts, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(
            a.count_request("token.with/odd chars", 8, 60)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            b.count_request("token.with_odd chars", 7, 60)
                .await
                .unwrap(),
            1
        );

        // Concurrent increments are never lost.
        let mut tasks = Vec::new();
        for i in 0..20 {
            let c = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                c.count_request("busy", 1, 60).await.unwrap()
            }));
        }
        let mut seen: Vec<u64> = Vec::new();
        for t in tasks {
            seen.push(t.await.unwrap());
        }
        seen.sort();
        assert_eq!(seen, (1..=20).collect::<Vec<_>>());
    })
    .await;
}

fn limits(rate: Option<u32>, max_jobs: Option<u32>) -> TenantJobLimits {
    TenantJobLimits {
        rate,
        window_s: 60,
        max_jobs,
    }
}

fn in_a_minute() -> i64 {
    ragq_common::now_ms() + 60_000
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_slots_are_never_oversold() {
    run(|env| async move {
        let (a, b) = (env.a.control(), env.b.control());
        let mut tasks = Vec::new();
        for i in 0..20 {
            let c = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                let job = Uuid::new_v4();
                let verdict = c
                    .admit_tenant_job("tenant/1", job, in_a_minute(), limits(None, Some(4)))
                    .await
                    .unwrap();
                (job, verdict)
            }));
        }
        let mut admitted = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                (job, TenantAdmission::Admitted) => admitted.push(job),
                (_, TenantAdmission::TooManyJobs(n)) => assert_eq!(n, 4),
                (_, other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(admitted.len(), 4);

        // Another tenant has its own slots.
        assert_eq!(
            a.admit_tenant_job(
                "tenant/2",
                Uuid::new_v4(),
                in_a_minute(),
                limits(None, Some(4))
            )
            .await
            .unwrap(),
            TenantAdmission::Admitted
        );

        // Releasing frees exactly one slot.
        b.release_tenant_job("tenant/1", admitted[0]).await.unwrap();
        let l = limits(None, Some(4));
        assert_eq!(
            a.admit_tenant_job("tenant/1", Uuid::new_v4(), in_a_minute(), l)
                .await
                .unwrap(),
            TenantAdmission::Admitted
        );
        assert_eq!(
            b.admit_tenant_job("tenant/1", Uuid::new_v4(), in_a_minute(), l)
                .await
                .unwrap(),
            TenantAdmission::TooManyJobs(4)
        );

        // Entries past their deadline do not hold a slot.
        let short = ragq_common::now_ms() + 50;
        for _ in 0..2 {
            assert_eq!(
                a.admit_tenant_job("tenant/3", Uuid::new_v4(), short, limits(None, Some(2)))
                    .await
                    .unwrap(),
                TenantAdmission::Admitted
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            a.admit_tenant_job(
                "tenant/3",
                Uuid::new_v4(),
                in_a_minute(),
                limits(None, Some(2))
            )
            .await
            .unwrap(),
            TenantAdmission::Admitted
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_rate_is_shared_and_a_refused_job_takes_nothing() {
    run(|env| async move {
        let (a, b) = (env.a.control(), env.b.control());
        let l = limits(Some(3), Some(10));
        let mut verdicts = Vec::new();
        for i in 0..4 {
            let c = if i % 2 == 0 { &a } else { &b };
            verdicts.push(
                c.admit_tenant_job("t", Uuid::new_v4(), in_a_minute(), l)
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(
            verdicts,
            vec![
                TenantAdmission::Admitted,
                TenantAdmission::Admitted,
                TenantAdmission::Admitted,
                TenantAdmission::RateLimited
            ]
        );
        // The refused job took no slot: with the rate out of the way, 7 more fit (3 + 7 = 10).
        let no_rate = limits(None, Some(10));
        for _ in 0..7 {
            assert_eq!(
                a.admit_tenant_job("t", Uuid::new_v4(), in_a_minute(), no_rate)
                    .await
                    .unwrap(),
                TenantAdmission::Admitted
            );
        }
        assert_eq!(
            b.admit_tenant_job("t", Uuid::new_v4(), in_a_minute(), no_rate)
                .await
                .unwrap(),
            TenantAdmission::TooManyJobs(10)
        );
        // No limits at all: always admitted.
        assert_eq!(
            a.admit_tenant_job("t", Uuid::new_v4(), in_a_minute(), limits(None, None))
                .await
                .unwrap(),
            TenantAdmission::Admitted
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ping_and_connection_state() {
    run(|env| async move {
        assert!(env.a.control().ping().await);
        let subscriber = env.a.subscriber(4);
        assert!(subscriber.is_connected());
        let _ = &env.prefix;
    })
    .await;
}

/// After a reconnect every open reader is asked to resync, and its subscription still works.
#[tokio::test(flavor = "multi_thread")]
async fn a_reconnect_makes_every_reader_resync() {
    run(|env| async move {
        let subscriber = env.a.subscriber(16);
        let publisher = env.b.publisher();
        let job = Uuid::new_v4();
        let mut sub = subscriber.subscribe(job).await.unwrap();
        env.a.client().force_reconnect().await.unwrap();
        let marker = recv(&mut sub).await.unwrap();
        assert!(marker.is_empty(), "expected a resync request");
        eventually("reconnected", || subscriber.is_connected()).await;
        // Re-subscribed by the client: live events flow again (retry: the re-SUB may still be
        // on its way right after the reconnect).
        let mut seq = 0;
        let got = loop {
            seq += 1;
            publisher.publish(job, &delta(seq)).await.unwrap();
            match tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
                Ok(Ok(p)) if !p.is_empty() => break StreamEvent::decode(&p).unwrap().seq,
                Ok(Ok(_)) => {}
                Ok(Err(why)) => panic!("closed: {why:?}"),
                Err(_) => assert!(seq < 20, "no live event after the reconnect"),
            }
        };
        assert!(got >= 1);
    })
    .await;
}

/// A TCP proxy in front of the server whose connections can be cut (and refused) at will.
struct Proxy {
    url: String,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pipes: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("nats://{}", listener.local_addr().unwrap());
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let pipes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (o, p) = (open.clone(), pipes.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !o.load(Ordering::SeqCst) {
                    continue; // refused: dropped at once
                }
                let pipe = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:4222").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                p.lock().unwrap().push(pipe.abort_handle());
            }
        });
        Proxy {
            url,
            open,
            pipes,
            accept,
        }
    }

    /// Drops every proxied connection and refuses new ones.
    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for pipe in self.pipes.lock().unwrap().drain(..) {
            pipe.abort();
        }
    }

    fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

async fn eventually_within(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while start.elapsed() < limit {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within {limit:?}: {what}");
}

/// While the connection is down new subscribes fail and `is_connected` is false; after the
/// outage bound (3 s) every open reader ends with `Disconnected`; once the server is back,
/// new streams work again.
#[tokio::test(flavor = "multi_thread")]
async fn an_outage_fails_new_streams_and_ends_open_ones_after_the_bound() {
    run(|env| async move {
        let proxy = Proxy::start().await;
        let proxied = bus_at(&proxy.url, &env.prefix, "test-proxied").await;
        let subscriber = proxied.subscriber(16);
        let publisher = env.b.publisher();
        let job = Uuid::new_v4();
        let mut sub = subscriber.subscribe(job).await.unwrap();
        assert!(subscriber.is_connected());

        proxy.cut();
        let cut_at = tokio::time::Instant::now();
        eventually("connection seen down", || !subscriber.is_connected()).await;
        match subscriber.subscribe(Uuid::new_v4()).await {
            Err(BusError::Connection(_)) => {}
            Err(other) => panic!("expected a connection error, got {other}"),
            Ok(_) => panic!("subscribed while disconnected"),
        }
        assert_eq!(recv(&mut sub).await, Err(Closed::Disconnected));
        assert!(cut_at.elapsed() >= Duration::from_millis(2900));
        assert_eq!(subscriber.open_streams(), 0);
        assert_eq!(subscriber.readers_of(job), 0);

        proxy.restore();
        eventually_within(Duration::from_secs(15), "reconnected", || {
            subscriber.is_connected()
        })
        .await;
        let again = Uuid::new_v4();
        let mut sub = subscriber.subscribe(again).await.unwrap();
        publish_job(&publisher, again, 3).await;
        assert_eq!(read_to_end(&mut sub).await, vec![1, 2, 3]);
    })
    .await;
}

/// Keys made from outside ids are valid key-value keys and never collide.
#[test]
fn keys_are_valid_and_distinct() {
    use ragq_common::bus::nats::names::{key, rate_key};
    let ids = ["", "=", "a.b", "a=2Eb", "tenant/1", "ü", "plain-id_1"];
    let keys: Vec<String> = ids.iter().map(|i| key(i)).collect();
    for k in &keys {
        assert!(!k.is_empty());
        assert!(
            k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b)),
            "{k}"
        );
    }
    let mut unique = keys.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), keys.len());
    assert_eq!(key("plain-id_1"), "plain-id_1");
    assert_eq!(rate_key("a.b", 7), "a=2Eb.7");
}
