//! Per-tenant fairness at the ingress (issue 12, item 5): a tenant's rate limit and cap on
//! concurrent jobs, shared by every api replica, answered with 429 + `Retry-After` in each API
//! style; a flooding tenant cannot slow another tenant's answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use ragq_cli::admin::{self, NewChat, NewModel};
use ragq_common::tenant_limits::Change;
use ragq_tests::{EnvOptions, TestEnv, parse_sse};

/// The tests of this file run one at a time: the flood test measures latency, and the others'
/// load would be measured with it.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
use serde_json::{Value, json};

/// A tenant of its own with the chat models `sim`, `sim-medium` and `sim-b` (first text after
/// 150 ms), a chat on `llm` without datasets, its limits set, and a session.
struct Tenant {
    id: String,
    key: String,
    chat: String,
    session: String,
}

async fn tenant(env: &TestEnv, name: &str, llm: &str, rate: Change, jobs: Change) -> Tenant {
    let t = admin::create_tenant(&env.db, name).await.expect("tenant");
    let base = env.sim.api_base();
    for (name, model) in [
        ("sim", "sim"),
        ("sim-medium", "sim:tokens=60:gap=20"),
        ("sim-b", "sim:ttft=150:tokens=8"),
    ] {
        let spec = NewModel {
            name,
            kind: "chat",
            provider: "openai",
            base_url: &base,
            model,
            api_key: "",
            max_tokens: 8192,
        };
        admin::put_model(&env.db, &env.secrets, &t.tenant_id, &spec)
            .await
            .expect("model");
    }
    let chat = admin::create_chat(
        &env.db,
        &t.tenant_id,
        &NewChat {
            name,
            llm_model: llm,
            dataset_ids: &[],
            rerank_model: "",
            top_n: 6,
            similarity_threshold: 0.2,
            vector_similarity_weight: 0.3,
        },
    )
    .await
    .expect("chat");
    admin::set_tenant_limits(&env.db, &t.tenant_id, rate, jobs)
        .await
        .expect("limits");
    let v = env
        .call(
            &t.api_key,
            reqwest::Method::POST,
            &format!("/api/v1/chats/{chat}/sessions"),
            Some(json!({"name": "s"})),
        )
        .await;
    assert_eq!(v["code"], 0, "{v}");
    Tenant {
        id: t.tenant_id,
        key: t.api_key,
        chat,
        session: v["data"]["id"].as_str().unwrap().to_string(),
    }
}

/// Starts a streamed completion through `url`; returns the response with its body unread.
async fn start(env: &TestEnv, url: &str, t: &Tenant, question: &str) -> reqwest::Response {
    env.http
        .post(format!("{url}/api/v1/chats/{}/completions", t.chat))
        .header("Authorization", format!("Bearer {}", t.key))
        .json(&json!({"question": question, "stream": true, "session_id": t.session}))
        .send()
        .await
        .expect("request")
}

/// A 429 in RAGFlow's envelope with `Retry-After`: returns (retry-after seconds, message).
async fn refused(resp: reqwest::Response) -> (u64, String) {
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let v: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(v["code"], 429, "{v}");
    (retry, v["message"].as_str().unwrap().to_string())
}

/// Reads an SSE answer to its end (bounded); returns its events.
async fn read_all(resp: reqwest::Response) -> Vec<Value> {
    assert_eq!(resp.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(30), resp.text())
        .await
        .expect("answer ends in time")
        .expect("body");
    parse_sse(&text)
}

fn answered(events: &[Value]) -> bool {
    events.last().is_some_and(|e| e["data"] == json!(true))
        && events.iter().all(|e| e["code"] == 0)
        && events.len() >= 2
}

/// Time to first chunk of one streamed question: request sent → first event with answer text.
async fn ttfc(env: &TestEnv, t: &Tenant, question: &str) -> Duration {
    let began = Instant::now();
    let resp = start(env, &env.url, t, question).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let mut first = None;
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), body.next())
        .await
        .expect("stream goes on")
    {
        text.push_str(&String::from_utf8_lossy(&chunk.expect("body")));
        if first.is_none()
            && parse_sse(&text)
                .iter()
                .any(|e| e["data"]["answer"].as_str().is_some_and(|a| !a.is_empty()))
        {
            first = Some(began.elapsed());
        }
    }
    assert!(answered(&parse_sse(&text)), "{text}");
    first.expect("answer text")
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// B's TTFCs for `n` questions asked one after another.
async fn b_round(env: &TestEnv, b: &Tenant, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(ttfc(env, b, &format!("b question {i}")).await);
    }
    out
}

#[derive(Default)]
struct FloodStats {
    refused: AtomicUsize,
    admitted: AtomicUsize,
    completed: AtomicUsize,
    open: AtomicU32,
    max_open: AtomicU32,
}

/// `clients` of tenant A asking in a closed loop until `stop`: a refused request waits its
/// `Retry-After` (as the `openai` SDK does) and asks again.
fn flood(
    env: &Arc<TestEnv>,
    a: &Arc<Tenant>,
    clients: usize,
    stop: &Arc<AtomicBool>,
    stats: &Arc<FloodStats>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|c| {
            let (env, a, stop, stats) = (env.clone(), a.clone(), stop.clone(), stats.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let resp = start(&env, &env.url, &a, &format!("flood {c}.{i}")).await;
                    if resp.status() == 429 {
                        let (retry, msg) = refused(resp).await;
                        assert!(retry >= 1, "{retry}");
                        assert!(msg.contains("concurrent jobs"), "{msg}");
                        stats.refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_secs(retry)).await;
                        continue;
                    }
                    stats.admitted.fetch_add(1, Ordering::Relaxed);
                    let now = stats.open.fetch_add(1, Ordering::SeqCst) + 1;
                    stats.max_open.fetch_max(now, Ordering::SeqCst);
                    let events = read_all(resp).await;
                    stats.open.fetch_sub(1, Ordering::SeqCst);
                    assert!(
                        answered(&events),
                        "an admitted flood job failed: {events:?}"
                    );
                    stats.completed.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect()
}

/// Tenant A (cap 4) floods with 40 clients; tenant B's TTFC is measured alone, during the flood
/// and alone again, alternating, in one run. The workers have 8 slots: without A's cap its 40
/// jobs would take every one of them and B would queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flooding_tenant_does_not_slow_another() {
    let _serial = SERIAL.lock().await;
    let env = Arc::new(
        TestEnv::start(EnvOptions {
            prefetch: Some(8),
            ..EnvOptions::default()
        })
        .await,
    );
    const CAP: usize = 4;
    let a = Arc::new(
        tenant(
            &env,
            "flooder",
            "sim-medium",
            Change::Keep,
            Change::Set(CAP as i32),
        )
        .await,
    );
    let b = tenant(&env, "quiet", "sim-b", Change::Keep, Change::Keep).await;
    // Warm-up (connections, caches, prepared statements).
    b_round(&env, &b, 3).await;

    const N: usize = 15;
    const ROUNDS: usize = 3;
    let (mut alone, mut during) = (Vec::new(), Vec::new());
    let stats = Arc::new(FloodStats::default());
    // The slots A holds, as every api counts them (its Redis set), sampled every 10 ms.
    let most_slots = Arc::new(AtomicU32::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (most, on) = (most_slots.clone(), sampling.clone());
        let key = ragq_common::bus::redis::keys::tenant_jobs_key(&env.queue_prefix, &a.id);
        let client = redis::Client::open(env.services.redis_url.as_str()).unwrap();
        tokio::spawn(async move {
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            while on.load(Ordering::Relaxed) {
                let n: u32 = redis::cmd("ZCARD")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                most.fetch_max(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    // Per round: (B's p99 alone, B's p99 during the flood).
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        let quiet = b_round(&env, &b, N).await;
        let stop = Arc::new(AtomicBool::new(false));
        let clients = flood(&env, &a, CAP * 10, &stop, &stats);
        // Let the flood fill A's slots before measuring.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let loud = b_round(&env, &b, N).await;
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            tokio::time::timeout(Duration::from_secs(60), c)
                .await
                .expect("flood client ends")
                .expect("flood client");
        }
        let mut q = quiet.clone();
        q.sort();
        let mut l = loud.clone();
        l.sort();
        println!(
            "round {round}: B alone p50 {:.1} ms p99 {:.1} ms | during flood p50 {:.1} ms p99 {:.1} ms",
            ms(pct(&q, 0.5)),
            ms(pct(&q, 0.99)),
            ms(pct(&l, 0.5)),
            ms(pct(&l, 0.99))
        );
        rounds.push((pct(&q, 0.99), pct(&l, 0.99)));
        alone.extend(quiet);
        during.extend(loud);
    }
    alone.extend(b_round(&env, &b, N).await);
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    let most_slots = most_slots.load(Ordering::Relaxed);
    alone.sort();
    during.sort();
    let (alone_p50, alone_p99) = (pct(&alone, 0.5), pct(&alone, 0.99));
    let (during_p50, during_p99) = (pct(&during, 0.5), pct(&during, 0.99));
    let refused = stats.refused.load(Ordering::Relaxed);
    let admitted = stats.admitted.load(Ordering::Relaxed);
    let completed = stats.completed.load(Ordering::Relaxed);
    let max_open = stats.max_open.load(Ordering::SeqCst);
    println!(
        "B TTFC alone ({} questions): p50 {:.1} ms, p99 {:.1} ms; during A's flood ({} questions): p50 {:.1} ms, p99 {:.1} ms; p99 ratio {:.3}",
        alone.len(),
        ms(alone_p50),
        ms(alone_p99),
        during.len(),
        ms(during_p50),
        ms(during_p99),
        during_p99.as_secs_f64() / alone_p99.as_secs_f64()
    );
    println!(
        "A's flood ({} clients, cap {CAP}): {admitted} admitted, {completed} completed, {refused} refused with 429; at most {most_slots} slots held (Redis), {max_open} streams being read by clients at once",
        CAP * 10
    );
    assert!(refused > 0, "the flood's excess was refused");
    assert_eq!(admitted, completed, "every admitted flood job completed");
    // The slot is freed when the terminal event is produced, a moment before the client has
    // read the end: a client may still read one answer while the next is admitted.
    assert!(most_slots as usize <= CAP, "{most_slots} > {CAP}");
    assert!(most_slots > 0);
    // The bound, on the median over the alternations of each round's p99 (a single CPU hiccup
    // of this shared 2-core machine is one sample, and a p99 of 15 is their maximum).
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let alone_med = median(rounds.iter().map(|r| r.0).collect());
    let during_med = median(rounds.iter().map(|r| r.1).collect());
    println!(
        "median over {ROUNDS} rounds of B's TTFC p99: alone {:.1} ms, during the flood {:.1} ms, ratio {:.3}",
        ms(alone_med),
        ms(during_med),
        during_med.as_secs_f64() / alone_med.as_secs_f64()
    );
    assert!(
        during_med.as_secs_f64() <= 1.2 * alone_med.as_secs_f64(),
        "B's TTFC p99 during the flood {:.1} ms > 1.2 × alone {:.1} ms (median of {ROUNDS} rounds)",
        ms(during_med),
        ms(alone_med)
    );
    // What the cap prevents: the same flood from a tenant without a cap takes every worker
    // slot, and B's questions wait behind its jobs.
    let c = Arc::new(tenant(&env, "uncapped", "sim-medium", Change::Keep, Change::Keep).await);
    let stop = Arc::new(AtomicBool::new(false));
    let uncapped = Arc::new(FloodStats::default());
    let clients = flood(&env, &c, CAP * 10, &stop, &uncapped);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut starved = b_round(&env, &b, 3).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        tokio::time::timeout(Duration::from_secs(90), c)
            .await
            .expect("flood client ends")
            .expect("flood client");
    }
    starved.sort();
    println!(
        "without a cap (tenant C, same flood): B TTFC p50 {:.1} ms, max {:.1} ms; C had {} jobs open at once",
        ms(pct(&starved, 0.5)),
        ms(pct(&starved, 1.0)),
        uncapped.max_open.load(Ordering::SeqCst)
    );
    assert!(
        pct(&starved, 0.5).as_secs_f64() > 1.2 * alone_p99.as_secs_f64(),
        "the flood without a cap should slow B (else this test measures nothing)"
    );
    let metrics = env
        .http
        .get(format!("{}/metrics", env.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ragq_admission_rejections_total{reason=\"tenant_concurrency\"}"),
        "{metrics}"
    );
    Arc::try_unwrap(env).ok().expect("env").stop().await;
}

/// A capped tenant's slot is held while its stream runs and freed when it ends; a second api
/// process sees the same slots; the OpenAI endpoint answers the refusal OpenAI's way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_slots_are_released_and_shared_by_replicas() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start(EnvOptions::default()).await;
    let (second, _stop) = env.spawn_api("second").await;
    let a = tenant(&env, "capped", "sim-medium", Change::Keep, Change::Set(1)).await;

    let first = start(&env, &env.url, &a, "one").await;
    assert_eq!(first.status(), 200);
    let (retry, msg) = refused(start(&env, &env.url, &a, "two").await).await;
    assert_eq!(retry, 1);
    assert!(
        msg.contains("This tenant already runs its limit of 1 concurrent jobs"),
        "{msg}"
    );
    // Another api process counts the same slot.
    let (_, msg) = refused(start(&env, &second, &a, "three").await).await;
    assert!(msg.contains("concurrent jobs"), "{msg}");
    // OpenAI style: HTTP 429, rate_limit_exceeded, Retry-After.
    let resp = env
        .http
        .post(format!(
            "{}/api/v1/chats_openai/{}/chat/completions",
            env.url, a.chat
        ))
        .header("Authorization", format!("Bearer {}", a.key))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().get("retry-after").is_some());
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("concurrent jobs"),
        "{v}"
    );

    // The stream ends → the slot is free at once, through either api.
    assert!(answered(&read_all(first).await));
    assert!(answered(
        &read_all(start(&env, &second, &a, "four").await).await
    ));
    assert!(answered(
        &read_all(start(&env, &env.url, &a, "five").await).await
    ));

    // A client that leaves early keeps the slot until its job is given up on (the disconnect
    // grace, 2 s here), then it is free again.
    let left = start(&env, &env.url, &a, "six").await;
    assert_eq!(left.status(), 200);
    drop(left);
    tokio::time::sleep(Duration::from_millis(300)).await;
    refused(start(&env, &env.url, &a, "seven").await).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = start(&env, &env.url, &a, "eight").await;
        if resp.status() == 200 {
            assert!(answered(&read_all(resp).await));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned job's slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.stop().await;
}

/// A tenant's rate limit counts jobs per minute across api processes; another tenant is not
/// affected; the set-tenant-limits command prints what it stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_per_tenant_and_shared() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start(EnvOptions::default()).await;
    let (second, _stop) = env.spawn_api("second").await;
    let r = tenant(&env, "rated", "sim", Change::Set(3), Change::Keep).await;
    let other = tenant(&env, "free", "sim", Change::Keep, Change::Keep).await;
    // Stay inside one minute window.
    let in_minute = ragq_common::now_ms() / 1000 % 60;
    if in_minute > 45 {
        tokio::time::sleep(Duration::from_secs((61 - in_minute) as u64)).await;
    }
    for url in [&env.url, &second, &env.url] {
        assert!(answered(&read_all(start(&env, url, &r, "q").await).await));
    }
    for url in [&env.url, &second] {
        let (retry, msg) = refused(start(&env, url, &r, "q").await).await;
        assert!((1..=60).contains(&retry), "{retry}");
        assert!(
            msg.contains("This tenant's rate limit (3 jobs per minute) is exceeded"),
            "{msg}"
        );
    }
    for _ in 0..5 {
        assert!(answered(
            &read_all(start(&env, &env.url, &other, "q").await).await
        ));
    }

    // The CLI: set, print, list.
    let tenant_id: String = sqlx::query_scalar("SELECT t.id FROM tenants t WHERE t.name = 'rated'")
        .fetch_one(&env.db)
        .await
        .unwrap();
    let out = env
        .ragq_cli()
        .args([
            "set-tenant-limits",
            "--tenant",
            &tenant_id,
            "--max-concurrent-jobs",
            "7",
        ])
        .output()
        .expect("ragq");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("RAGQ_TENANT_ID={tenant_id}")),
        "{text}"
    );
    assert!(text.contains("RATE_PER_MINUTE=3\n"), "{text}");
    assert!(text.contains("MAX_CONCURRENT_JOBS=7\n"), "{text}");
    let out = env
        .ragq_cli()
        .args([
            "set-tenant-limits",
            "--tenant",
            &tenant_id,
            "--rate-per-minute",
            "default",
        ])
        .output()
        .expect("ragq");
    assert!(String::from_utf8_lossy(&out.stdout).contains("RATE_PER_MINUTE=default\n"));
    let out = env.ragq_cli().arg("list-tenants").output().expect("ragq");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "id={tenant_id} name=\"rated\" rate_per_minute=default max_concurrent_jobs=7"
        )),
        "{text}"
    );
    let out = env
        .ragq_cli()
        .args([
            "set-tenant-limits",
            "--tenant",
            &tenant_id,
            "--rate-per-minute",
            "-3",
        ])
        .output()
        .expect("ragq");
    assert!(!out.status.success());
    env.stop().await;
}

/// The workers' side: with `RAGQ_TENANT_WORKER_JOBS`, a tenant whose jobs fill the queue runs at
/// most its share of a worker's slots at once; its excess is handed back to the tail of the
/// queue, so another tenant's question, queued behind, gets a slot at once — here with no
/// ingress cap at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_leaves_slots_to_other_tenants() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start(EnvOptions {
        prefetch: Some(4),
        tenant_worker_jobs: Some(2),
        ..Default::default()
    })
    .await;
    let a = tenant(&env, "busy", "sim-medium", Change::Keep, Change::Keep).await;
    let b = tenant(&env, "other", "sim-b", Change::Keep, Change::Keep).await;
    let handed = || {
        ragq_common::metrics::install()
            .render()
            .lines()
            .filter(|l| l.starts_with("ragq_jobs_handed_back_total") && l.contains("tenant_share"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let before = handed();
    // A queues 12 answers of ~1.3 s each: four slots would be A's for ~4 s without the share.
    let mut floods = Vec::new();
    for i in 0..12 {
        floods.push(start(&env, &env.url, &a, &format!("question {i}")).await);
    }
    let b_ttfc = ttfc(&env, &b, "What is the delivery limit of the job queue?").await;
    let mut answered_a = 0;
    for resp in floods {
        if answered(&read_all(resp).await) {
            answered_a += 1;
        }
    }
    let handed_back = handed() - before;
    println!(
        "worker share: B's TTFC {b_ttfc:?} behind 12 queued answers of A (share 2 of 4 slots); A: {answered_a}/12 answered; {handed_back} hand-backs"
    );
    assert_eq!(answered_a, 12, "every one of A's jobs is answered");
    assert!(handed_back >= 1.0, "A's excess was handed back");
    assert!(
        b_ttfc < Duration::from_millis(1000),
        "B got a slot at once (its model answers in ~150 ms): {b_ttfc:?}"
    );
    env.stop().await;
}
