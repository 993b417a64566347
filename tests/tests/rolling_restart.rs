//! Rolling restart under load: every worker, then every api, replaced one at a time while
//! clients keep asking (streamed RAGFlow completions). Workers drain on SIGTERM; an api that
//! shuts down tells its open streams to resume elsewhere, and the clients do (through another
//! api, as a client behind a load balancer would). Nothing accepted may fail, be lost or be
//! answered twice.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use ragq_tests::{EnvOptions, TestEnv, parse_sse};
use serde_json::{Value, json};

const CLIENTS: usize = 8;
const END: &str = "data:{\"code\": 0, \"data\": true}\n\n";

/// The api addresses a load balancer would currently send to.
type Live = Arc<Mutex<Vec<String>>>;

#[derive(Default)]
struct Tally {
    /// (session, job, final answer) of every completed question.
    completed: Mutex<Vec<(String, String, String)>>,
    /// Questions accepted (HTTP 200) that did not end with a complete answer.
    failed: Mutex<Vec<String>>,
    /// Requests refused before acceptance (connection refused, 503 from a stopping api) and
    /// retried elsewhere.
    retried: AtomicUsize,
    /// Streams told to resume elsewhere, and resumed.
    resumed: AtomicUsize,
}

fn pick(live: &Live, n: usize) -> String {
    let l = live.lock().unwrap_or_else(|e| e.into_inner());
    l[n % l.len()].clone()
}

async fn read_to_end(resp: reqwest::Response) -> Result<String, String> {
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(until, body.next()).await {
            Err(_) => return Err(format!("no end in 30 s: {text}")),
            Ok(None) => return Ok(text),
            Ok(Some(Ok(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(Some(Err(e))) => return Err(format!("body: {e}: {text}")),
        }
    }
}

/// One question, asked and followed to its answer through whichever apis are live.
async fn ask(env: &TestEnv, live: &Live, chat: &str, n: usize, tally: &Tally) {
    let auth = env.auth();
    let mut attempt = n;
    let (session, mut resp) = loop {
        attempt += 1;
        let base = pick(live, attempt);
        let created = env
            .http
            .post(format!("{base}/api/v1/chats/{chat}/sessions"))
            .header("Authorization", &auth)
            .header("Connection", "close")
            .json(&json!({"name": format!("roll-{n}")}))
            .send()
            .await;
        let session = match created {
            Ok(r) if r.status() == 200 => match r.json::<Value>().await {
                Ok(v) => v["data"]["id"].as_str().unwrap_or("").to_string(),
                Err(_) => String::new(),
            },
            _ => String::new(),
        };
        if session.is_empty() {
            tally.retried.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let sent = env
            .http
            .post(format!("{base}/api/v1/chats/{chat}/completions"))
            .header("Authorization", &auth)
            .json(&json!({"question": "What is the delivery limit of the job queue?", "stream": true, "session_id": session}))
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == 200 => break (session, r),
            _ => {
                tally.retried.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let job = resp.headers()["x-ragq-job-id"]
        .to_str()
        .unwrap_or("")
        .to_string();
    for _ in 0..5 {
        let text = match read_to_end(resp).await {
            Ok(t) => t,
            Err(e) => {
                tally.failed.lock().unwrap().push(format!("{job}: {e}"));
                return;
            }
        };
        let events = parse_sse(&text);
        let told_to_resume = events.iter().any(|e| e["code"] == 503);
        if !told_to_resume {
            let last = events.len().checked_sub(2).map(|i| &events[i]);
            match last {
                Some(last)
                    if text.ends_with(END)
                        && last["code"] == 0
                        && !last["data"]["answer"].as_str().unwrap_or("").is_empty() =>
                {
                    let answer = last["data"]["answer"].as_str().unwrap_or("").to_string();
                    tally.completed.lock().unwrap().push((session, job, answer));
                }
                _ => tally.failed.lock().unwrap().push(format!("{job}: {text}")),
            }
            return;
        }
        // Resume elsewhere (any live api serves any job's stream).
        tally.resumed.fetch_add(1, Ordering::SeqCst);
        resp = loop {
            attempt += 1;
            let base = pick(live, attempt);
            match env
                .http
                .get(format!("{base}/api/v1/chats/{chat}/completions/{job}"))
                .header("Authorization", &auth)
                .send()
                .await
            {
                Ok(r) if r.status() == 200 => break r,
                _ => {
                    tally.retried.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
    }
    tally
        .failed
        .lock()
        .unwrap()
        .push(format!("{job}: told to resume 5 times"));
}

fn sigterm_and_wait(child: &mut std::process::Child) -> Duration {
    let t0 = Instant::now();
    let pid = child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "a drained worker exits 0: {status}");
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "worker did not drain in 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restart_of_workers_then_apis_fails_nothing() {
    let env = TestEnv::start(EnvOptions {
        workers: 0,
        // No grace: every stream still open on a stopping api is told to resume elsewhere at
        // once (with a grace, answers shorter than it would simply finish there).
        shutdown_grace_s: 0,
        ..Default::default()
    })
    .await;
    let chat = env.chat_with_model("rolling", "sim-medium").await;
    let (b_url, b_stop) = env.spawn_api("b").await;
    let live: Live = Arc::new(Mutex::new(vec![env.url.clone(), b_url.clone()]));
    let mut workers = vec![
        env.spawn_worker_process("w1"),
        env.spawn_worker_process("w2"),
    ];
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let env = Arc::new(env);
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (env, live, chat, tally, stop) = (
            env.clone(),
            live.clone(),
            chat.clone(),
            tally.clone(),
            stop.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut n = c * 1000;
            while !stop.load(Ordering::SeqCst) {
                ask(&env, &live, &chat, n, &tally).await;
                n += 1;
            }
        }));
    }
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Workers, one at a time: drain, then a replacement.
    for (i, name) in ["w1-new", "w2-new"].into_iter().enumerate() {
        let mut old = std::mem::replace(&mut workers[i], env.spawn_worker_process(name));
        let drained = tokio::task::block_in_place(|| sigterm_and_wait(&mut old));
        println!("rolling restart: worker {} drained in {drained:?}", i + 1);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // Apis, one at a time: a replacement joins the pool, the old one leaves it and shuts down.
    let (c_url, _c_stop) = env.spawn_api("c").await;
    live.lock().unwrap().push(c_url.clone());
    live.lock().unwrap().retain(|u| u != &env.url);
    env.shutdown_api();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (d_url, _d_stop) = env.spawn_api("d").await;
    live.lock().unwrap().push(d_url);
    live.lock().unwrap().retain(|u| u != &b_url);
    b_stop.cancel();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("clients end")
            .expect("client task");
    }
    let elapsed = t0.elapsed();
    let completed = tally.completed.lock().unwrap().clone();
    let failed = tally.failed.lock().unwrap().clone();
    println!(
        "rolling restart: {} questions answered in {elapsed:?}, {} failed, {} streams resumed elsewhere, {} requests retried before acceptance",
        completed.len(),
        failed.len(),
        tally.resumed.load(Ordering::SeqCst),
        tally.retried.load(Ordering::SeqCst)
    );
    assert!(
        failed.is_empty(),
        "accepted questions that failed: {failed:?}"
    );
    assert!(
        completed.len() >= CLIENTS * 4,
        "the load went on: {}",
        completed.len()
    );
    assert!(
        tally.resumed.load(Ordering::SeqCst) >= 1,
        "an api shut down with open streams"
    );
    // Every answer saved exactly once, as the client saw it.
    for (session, job, answer) in &completed {
        let turns: Vec<(String, String, String)> =
            sqlx::query_as("SELECT job_id::text, status, answer FROM turns WHERE session_id = $1")
                .bind(session)
                .fetch_all(&env.db)
                .await
                .expect("turns");
        assert_eq!(turns.len(), 1, "session {session}: {turns:?}");
        assert_eq!(
            (&turns[0].0, turns[0].1.as_str(), &turns[0].2),
            (job, "done", answer)
        );
    }
    for mut w in workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    match Arc::try_unwrap(env) {
        Ok(env) => env.stop().await,
        Err(_) => panic!("the environment is still shared"),
    }
}
