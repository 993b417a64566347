//! `ragq batch run`: a questions file answered through a chat as a batch, interrupted (Ctrl-C,
//! then kill -9 with a torn last line) and resumed until every line is in the results file
//! exactly once; the hit-rate summary; `status`, `results` and `cancel`; a rate-limited
//! provider slows the batch, not the chat.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ragq_tests::{EnvOptions, TestEnv};
use serde_json::{Value, json};

const QUESTIONS: [(&str, &str); 4] = [
    (
        "What is the delivery limit of the job queue?",
        "job-queue.md",
    ),
    (
        "How does hybrid retrieval combine keyword search and vector similarity?",
        "retrieval.txt",
    ),
    (
        "Do interactive chats and batch questions travel on separate lanes?",
        "job-queue",
    ),
    (
        "What is the delivery limit of the job queue?",
        "no-such-document.md",
    ),
];

fn write_questions(dir: &Path, n: usize) -> std::path::PathBuf {
    let path = dir.join("questions.jsonl");
    let text: String = (0..n)
        .map(|i| {
            let (q, doc) = QUESTIONS[i % QUESTIONS.len()];
            format!(
                "{}\n",
                json!({"id": format!("q-{i}"), "question": q, "expected": doc})
            )
        })
        .collect();
    std::fs::write(&path, text).expect("questions");
    path
}

fn result_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn spawn_run(env: &TestEnv, questions: &Path, chat: &str, out: &Path) -> Child {
    let mut cmd: Command = env.ragq_cli();
    cmd.args(["batch", "run"])
        .arg(questions)
        .args(["--chat", chat, "--poll-ms", "100", "--no-progress", "--out"])
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("spawn ragq batch run")
}

/// Waits (bounded) until the results file has at least `n` lines.
async fn wait_lines(out: &Path, n: usize) {
    let t0 = Instant::now();
    while result_lines(out).len() < n {
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "no {n} results in 90 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The child's exit code and stdout as NAME=value pairs, bounded in time.
async fn finish(mut child: Child) -> (Option<i32>, HashMap<String, String>, String) {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            let kv = stdout
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            return (
                status.code(),
                kv,
                String::from_utf8_lossy(&out.stderr).to_string(),
            );
        }
        if t0.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            panic!("ragq batch run did not end in 180 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_runs_resume_to_every_line_once() {
    let env = TestEnv::start(EnvOptions::default()).await;
    let chat = env.chat_with_model("batch-cli", "sim-medium").await;
    let dir = tempdir();
    let n = 24;
    let questions = write_questions(&dir, n);
    let out = dir.join("results.jsonl");

    // 1. Ctrl-C after a few lines: a clean stop, the batch goes on without the CLI.
    let child = spawn_run(&env, &questions, &chat, &out);
    wait_lines(&out, 2).await;
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let (code, kv, stderr) = finish(child).await;
    assert_eq!(code, Some(130), "{kv:?} {stderr}");
    assert_eq!(
        kv.get("INTERRUPTED").map(String::as_str),
        Some("1"),
        "{kv:?}"
    );
    assert!(
        stderr.contains("run the same command again to resume"),
        "{stderr}"
    );
    let batch_id = kv["BATCH_ID"].clone();

    // 2. kill -9 mid-run, with a torn last line in the file.
    let mut child = spawn_run(&env, &questions, &chat, &out);
    let before = result_lines(&out).len();
    wait_lines(&out, before + 1).await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&out)
        .expect("open")
        .write_all(b"{\"custom_id\":\"q-")
        .expect("torn line");
    let written = result_lines(&out).len();
    assert!(
        written < n,
        "the batch should still be running: {written} of {n}"
    );

    // 3. The rerun finishes it.
    let (code, kv, stderr) = finish(spawn_run(&env, &questions, &chat, &out)).await;
    assert_eq!(code, Some(0), "{kv:?} {stderr}");
    assert_eq!(kv["BATCH_ID"], batch_id, "the same batch, resumed");
    assert_eq!(kv["STATUS"], "completed");
    assert_eq!(
        (kv["TOTAL"].as_str(), kv["COMPLETED"].as_str()),
        ("24", "24"),
        "{kv:?}"
    );
    let lines = result_lines(&out);
    let text = std::fs::read_to_string(&out).expect("results");
    assert_eq!(text.lines().count(), n, "no torn line left: {text}");
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for l in &lines {
        *seen
            .entry(l["custom_id"].as_str().expect("custom_id"))
            .or_default() += 1;
        assert_eq!(l["status"], "completed", "{l}");
        assert!(!l["answer"].as_str().unwrap_or("").is_empty(), "{l}");
    }
    assert!(
        (0..n).all(|i| seen.get(format!("q-{i}").as_str()) == Some(&1)),
        "{seen:?}"
    );
    // Hit rate: consistent with the documents each answer cites; the impossible one misses.
    let hits = lines.iter().filter(|l| l["hit"] == json!(true)).count();
    assert_eq!(kv["EXPECTED"], n.to_string());
    assert_eq!(kv["HITS"], hits.to_string(), "{kv:?}");
    for l in &lines {
        let cited: Vec<String> = serde_json::from_value(l["documents"].clone()).expect("documents");
        let expected = l["expected"][0].as_str().expect("expected");
        let stem = |s: &str| s.split('.').next().unwrap_or("").to_lowercase();
        assert_eq!(
            l["hit"],
            json!(cited.iter().any(|c| stem(c) == stem(expected))),
            "{l}"
        );
    }
    assert!(
        hits >= n / 4,
        "the answers cite the right documents: {hits} of {n}"
    );
    assert!(
        hits <= n - n / 4,
        "no-such-document.md is never cited: {hits}"
    );
    // One batch, each line answered once.
    let (batches, turns): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM batches WHERE chat_id = $1),
                (SELECT count(*) FROM batch_lines l JOIN batches b ON b.id = l.batch_id
                 WHERE b.chat_id = $1 AND l.status = 'completed')",
    )
    .bind(&chat)
    .fetch_one(&env.db)
    .await
    .expect("counts");
    assert_eq!((batches, turns), (1, n as i64));

    // status and results of the same batch.
    let status = env
        .ragq_cli()
        .args(["batch", "status", &batch_id])
        .output()
        .expect("status");
    assert!(
        String::from_utf8_lossy(&status.stdout)
            .contains("STATUS=completed\nTOTAL=24\nCOMPLETED=24\nFAILED=0")
    );
    let results = env
        .ragq_cli()
        .args(["batch", "results", &batch_id])
        .output()
        .expect("results");
    let ids: Vec<String> = String::from_utf8_lossy(&results.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("json")["custom_id"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(
        ids,
        (0..n).map(|i| format!("q-{i}")).collect::<Vec<_>>(),
        "input order"
    );
    let _ = std::fs::remove_dir_all(&dir);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_the_run_with_every_line_once_and_bad_files_are_refused() {
    let env = TestEnv::start(EnvOptions::default()).await;
    let chat = env.chat_with_model("batch-cancel", "sim-medium").await;
    let dir = tempdir();
    let n = 40;
    let questions = write_questions(&dir, n);
    let out = dir.join("results.jsonl");
    let child = spawn_run(&env, &questions, &chat, &out);
    wait_lines(&out, 1).await;
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.join("results.jsonl.state")).expect("state"))
            .expect("json");
    let id = state["batch_id"].as_str().expect("batch id").to_string();
    let cancel = env
        .ragq_cli()
        .args(["batch", "cancel", &id])
        .output()
        .expect("cancel");
    assert!(cancel.status.success(), "{cancel:?}");
    let (code, kv, stderr) = finish(child).await;
    assert_eq!(kv["STATUS"], "cancelled", "{kv:?} {stderr}");
    assert_eq!(code, Some(0));
    let lines = result_lines(&out);
    assert_eq!(lines.len(), n, "every line once, answered or skipped");
    let skipped = lines.iter().filter(|l| l["status"] == "skipped").count();
    assert!(
        skipped > 0 && kv["SKIPPED"] == skipped.to_string(),
        "{kv:?}"
    );
    // A second cancel: the batch has ended.
    let again = env
        .ragq_cli()
        .args(["batch", "cancel", &id])
        .output()
        .expect("cancel");
    assert!(!again.status.success());

    // A bad questions file: line-numbered errors, nothing created.
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"id\": \"a\", \"question\": \"q\"}\n{\"id\": \"a\", \"question\": \"q\"}\n{\"id\": \"b\"}\n").expect("bad");
    let (code, _, stderr) = finish(spawn_run(&env, &bad, &chat, &dir.join("bad.out"))).await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("\"line\":2") && stderr.contains("duplicate_custom_id"),
        "{stderr}"
    );
    assert!(
        stderr.contains("\"line\":3") && stderr.contains("`question` must be a non-empty string."),
        "{stderr}"
    );
    let batches: i64 = sqlx::query_scalar("SELECT count(*) FROM batches WHERE chat_id = $1")
        .bind(&chat)
        .fetch_one(&env.db)
        .await
        .expect("count");
    assert_eq!(batches, 1);
    // An unknown chat.
    let (code, _, stderr) = finish(spawn_run(&env, &questions, "nochat", &dir.join("x.out"))).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no active chat nochat"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_batches_back_off_while_chat_answers_at_once() {
    let env = TestEnv::start(EnvOptions::default()).await;
    // The provider answers the first 9 requests of this model with HTTP 429, then recovers:
    // the client's own 3 attempts per call are not enough, so lines back off (RAGQ_BATCH_BACKOFF_MS,
    // 500 ms doubled: 1 s before the first retry).
    let spec = ragq_cli::admin::NewModel {
        name: "sim-429",
        kind: "chat",
        provider: "openai",
        base_url: &env.sim.api_base(),
        model: "sim:status=429:fail-first=9:tokens=5",
        api_key: "",
        max_tokens: 8192,
    };
    ragq_cli::admin::put_model(&env.db, &env.secrets, &env.tenant_id, &spec)
        .await
        .expect("model");
    let limited = env.chat_with_model("limited", "sim-429").await;
    let dir = tempdir();
    let questions = write_questions(&dir, 3);
    let out = dir.join("results.jsonl");
    let calls = || env.sim.stats.snapshot().chat_requests;
    let before = calls();
    let t0 = Instant::now();
    let child = spawn_run(&env, &questions, &limited, &out);
    // Once the provider's 429s are used up, the lines are still backing off …
    while calls() < before + 9 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the batch never reached the provider"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        result_lines(&out).is_empty(),
        "no line answered before its backoff"
    );
    // … and a person chatting meanwhile is answered at once.
    let session = env.create_session(&env.chat_id).await;
    let asked = Instant::now();
    let answer = env
        .ask(
            &env.chat_id,
            &session,
            "What is the delivery limit of the job queue?",
        )
        .await;
    let chat_took = asked.elapsed();
    assert_eq!(answer["code"], 0, "{answer}");
    assert!(
        result_lines(&out).is_empty(),
        "the chat answer came while the batch backed off"
    );
    assert!(
        chat_took < Duration::from_millis(900),
        "chat took {chat_took:?} during the batch's backoff"
    );
    let (code, kv, stderr) = finish(child).await;
    let batch_took = t0.elapsed();
    assert_eq!(code, Some(0), "{kv:?} {stderr}");
    assert_eq!(
        (kv["COMPLETED"].as_str(), kv["FAILED"].as_str()),
        ("3", "0"),
        "{kv:?}"
    );
    assert!(
        batch_took >= Duration::from_secs(1),
        "the batch backed off: {batch_took:?}"
    );
    // 9 refused calls, 3 answers, 1 interactive answer: nothing asked twice after it succeeded.
    assert_eq!(calls() - before, 13);
    println!(
        "429 backoff: batch of 3 took {batch_took:?}; chat answered in {chat_took:?} meanwhile"
    );
    let _ = std::fs::remove_dir_all(&dir);
    env.stop().await;
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ragq-batch-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("tempdir");
    dir
}
