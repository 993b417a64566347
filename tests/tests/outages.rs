//! Outage tests: they stop and restart the shared RabbitMQ, Redis and PostgreSQL of this machine,
//! so they are `#[ignore]`d in the normal run and executed alone, one at a time, by
//! `scripts/test.sh` (`cargo test --test outages -- --ignored --test-threads=1`). Each is bounded
//! in time and count, sends traffic only to 127.0.0.1 and prints its figures.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ragq_tests::{EnvOptions, TestEnv};
use serde_json::{Value, json};

const QUESTION: &str = "What is the delivery limit of the job queue?";

fn sh(cmd: &str) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .expect("shell");
    assert!(status.success(), "`{cmd}` failed");
}

/// Outcome counters of a load loop.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    refused: AtomicUsize,      // 503 / 429 before the job was accepted
    failed_clean: AtomicUsize, // accepted, then ended with an error event / envelope
    hung: AtomicUsize,         // no answer within the bound
}

impl Tally {
    fn line(&self) -> String {
        format!(
            "ok {}, refused (503/429) {}, ended with an error {}, hung {}",
            self.ok.load(Ordering::SeqCst),
            self.refused.load(Ordering::SeqCst),
            self.failed_clean.load(Ordering::SeqCst),
            self.hung.load(Ordering::SeqCst)
        )
    }
}

async fn ask_once(env: &TestEnv, session: &str, bound: Duration) -> Result<Value, String> {
    let fut = env
        .http
        .post(format!(
            "{}/api/v1/chats/{}/completions",
            env.url, env.chat_id
        ))
        .header("Authorization", env.auth())
        .json(&json!({"question": QUESTION, "stream": false, "session_id": session}))
        .send();
    match tokio::time::timeout(bound, async {
        let resp = fut.await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(json!({"status": status, "body": body}))
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err("hung".into()),
    }
}

/// Waits until a question is answered again; returns how long that took.
async fn time_to_recover(env: &TestEnv, session: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok(v) = ask_once(env, session, Duration::from_secs(10)).await
            && v["body"]["code"] == 0
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "service did not recover within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the shared RabbitMQ; run alone by scripts/test.sh"]
async fn rabbitmq_restart_loses_no_confirmed_job() {
    let env = Arc::new(
        TestEnv::start(EnvOptions {
            job_deadline_s: 20,
            ..Default::default()
        })
        .await,
    );
    let session = env.create_session(&env.chat_id).await;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let accepted = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    // Load: 8 users asking in a loop; each reply is classified.
    let loops: Vec<_> = (0..8)
        .map(|_| {
            let (env, session, stop, tally, accepted, answered) = (
                env.clone(),
                session.clone(),
                stop.clone(),
                tally.clone(),
                accepted.clone(),
                answered.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    match ask_once(&env, &session, Duration::from_secs(30)).await {
                        Err(e) if e == "hung" => {
                            tally.hung.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => {
                            tally.failed_clean.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(v) if v["status"] == 503 || v["status"] == 429 => {
                            tally.refused.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Ok(v) => {
                            accepted.fetch_add(1, Ordering::SeqCst);
                            if v["body"]["code"] == 0 {
                                answered.fetch_add(1, Ordering::SeqCst);
                                tally.ok.fetch_add(1, Ordering::SeqCst);
                            } else {
                                tally.failed_clean.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = tally.ok.load(Ordering::SeqCst);
    sh("rabbitmqctl stop_app >/dev/null");
    tokio::time::sleep(Duration::from_secs(3)).await;
    sh("rabbitmqctl start_app >/dev/null && rabbitmqctl await_startup >/dev/null");
    let restarted = Instant::now();
    let recovered = time_to_recover(&env, &session, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    for l in loops {
        let _ = l.await;
    }
    println!(
        "RabbitMQ stop_app 3 s: {} (ok before the outage {before}); full service {recovered:?} after start_app ({:?} since)",
        tally.line(),
        restarted.elapsed()
    );
    assert_eq!(tally.hung.load(Ordering::SeqCst), 0, "no request may hang");
    assert!(recovered < Duration::from_secs(15));
    // Every accepted (confirmed) job was answered or ended with a clean error; none vanished.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM turns")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert!(n as usize >= answered.load(Ordering::SeqCst));
    if let Ok(env) = Arc::try_unwrap(env) {
        env.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the shared Redis; run alone by scripts/test.sh"]
async fn redis_restart_ends_or_resumes_every_stream() {
    let env = TestEnv::start(EnvOptions {
        job_deadline_s: 15,
        ..Default::default()
    })
    .await;
    let chat = env.chat_with_model("long", "sim-long").await; // 400 tokens, 8 s
    let session = env.create_session(&chat).await;
    let started = Instant::now();
    let streams = futures::future::join_all((0..20).map(|_| async {
        let t = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(25),
            env.ask_stream(&chat, &session, QUESTION),
        )
        .await;
        (t.elapsed(), r)
    }));
    let restart = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        sh("redis-cli -h 127.0.0.1 shutdown nosave >/dev/null 2>&1 || true");
        tokio::time::sleep(Duration::from_millis(500)).await;
        sh(
            "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log",
        );
        for _ in 0..50 {
            if Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "ping"])
                .output()
                .is_ok_and(|o| o.stdout.starts_with(b"PONG"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (results, ()) = tokio::join!(streams, restart);
    let mut complete = 0;
    let mut errored = 0;
    let mut longest = Duration::ZERO;
    for (took, r) in &results {
        longest = longest.max(*took);
        let events = r.as_ref().expect("a stream outlived its deadline");
        assert_eq!(
            events.last(),
            Some(&json!({"code": 0, "data": true})),
            "every stream ends with the end line"
        );
        if events[events.len() - 2]["code"] == 0 {
            complete += 1;
        } else {
            errored += 1;
        }
    }
    println!(
        "Redis restart: {complete} streams complete, {errored} ended with an error event, longest {longest:?}, total {:?}",
        started.elapsed()
    );
    assert!(
        longest < Duration::from_secs(15 + 5),
        "none outlives its deadline"
    );
    // Service is back.
    let again = env
        .ask(
            &env.chat_id,
            &env.create_session(&env.chat_id).await,
            QUESTION,
        )
        .await;
    assert_eq!(again["code"], 0, "{again}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the shared PostgreSQL; run alone by scripts/test.sh"]
async fn postgres_outage_is_survived() {
    let env = TestEnv::start(EnvOptions::default()).await;
    let session = env.create_session(&env.chat_id).await;
    let ready = |env: &TestEnv| {
        let url = format!("{}/readyz", env.url);
        let http = env.http.clone();
        async move {
            http.get(url)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    assert_eq!(ready(&env).await, 200);
    let cluster = std::fs::read_dir("/etc/postgresql")
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let cluster = cluster.to_string_lossy().to_string();
    sh(&format!(
        "pg_ctlcluster --skip-systemctl-redirect {cluster} main stop -m fast"
    ));
    let down = Instant::now();
    let mut during = Vec::new();
    while down.elapsed() < Duration::from_secs(10) {
        let r = ask_once(&env, &session, Duration::from_secs(10)).await;
        during.push(r.map(|v| (v["status"].clone(), v["body"]["code"].clone())));
        assert_eq!(
            ready(&env).await,
            503,
            "readiness must be false while PostgreSQL is down"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    sh(&format!(
        "pg_ctlcluster --skip-systemctl-redirect {cluster} main start"
    ));
    let recovered = time_to_recover(&env, &session, Duration::from_secs(30)).await;
    println!(
        "PostgreSQL down 10 s: answers meanwhile {during:?}; full service {recovered:?} after restart"
    );
    assert!(
        during.iter().all(|r| r.is_ok()),
        "every request got an answer (an error envelope is fine)"
    );
    assert!(
        during
            .iter()
            .all(|r| r.as_ref().is_ok_and(|(_, code)| *code != 0))
    );
    assert_eq!(ready(&env).await, 200);
    env.stop().await;
}
