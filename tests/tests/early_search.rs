//! A chat's context and its search in one statement (`worker/src/chat/early_search.rs`): the
//! second question of a chat is searched in its context's statement on the settings the first
//! one used; the answer is the one a separate search gives; a settings change between two
//! questions is honoured (the early candidates are dropped and the chat searches again); a
//! follow-up question that must be refined first is not searched early once the chat's plan
//! says it refines.
//!
//! `ragq_early_searches_total` is read from the process's one metrics recorder (the api and the
//! worker run in this process), so this binary holds a single test.

use std::time::Duration;

use ragq_tests::{EnvOptions, TestEnv};
use reqwest::Method;
use serde_json::{Value, json};

/// The sum of the samples of `name` whose labels include `label`.
fn sample(page: &str, name: &str, label: &str) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

struct Counts {
    used: f64,
    dropped: f64,
    embeddings: f64,
    refines: f64,
}

async fn counts(env: &TestEnv) -> Counts {
    let page = env
        .http
        .get(format!("{}/metrics", env.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("page");
    let upstream = |kind: &str| {
        page.lines()
            .filter(|l| l.starts_with("ragq_upstream_requests_total{"))
            .filter(|l| l.contains(&format!("kind=\"{kind}\"")) && l.contains("status=\"ok\""))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    Counts {
        used: sample(&page, "ragq_early_searches_total", "outcome=\"used\""),
        dropped: sample(&page, "ragq_early_searches_total", "outcome=\"dropped\""),
        embeddings: upstream("embedding"),
        refines: sample(&page, "ragq_job_step_seconds_count", "step=\"refine\""),
    }
}

/// Asks in `session` and returns the final answer's reference chunk ids (in order), once the
/// worker has counted the job (its metrics move after the `done` event went out).
async fn ask(env: &TestEnv, session: &str, question: &str) -> Vec<String> {
    let events = env.ask_stream(&env.chat_id, session, question).await;
    let last = events
        .iter()
        .rev()
        .find(|e| e["data"]["answer"].is_string())
        .unwrap_or_else(|| panic!("no answer: {events:?}"));
    assert!(
        !last["data"]["answer"]
            .as_str()
            .unwrap_or("")
            .contains("**ERROR**"),
        "{last}"
    );
    // The job is counted once its turn is saved.
    for _ in 0..100 {
        let saved: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM turns WHERE session_id = $1 AND question = $2",
        )
        .bind(session)
        .bind(question)
        .fetch_one(&env.db)
        .await
        .expect("turns");
        if saved > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    last["data"]["reference"]["chunks"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|c| c["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn update_chat(env: &TestEnv, prompt: Value) {
    let v = env
        .call(
            &env.api_key,
            Method::PUT,
            &format!("/api/v1/chats/{}", env.chat_id),
            Some(json!({ "prompt": prompt })),
        )
        .await;
    assert_eq!(v["code"], 0, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_is_searched_in_its_context_statement_and_settings_changes_are_honoured() {
    let env = TestEnv::start(EnvOptions::default()).await;
    // Questions are searched as asked (no follow-up rewriting), so every one may go early.
    update_chat(&env, json!({"refine_multiturn": false})).await;
    let session = env.create_session(&env.chat_id).await;
    let q = "What is the delivery limit?";

    // The first question reads the context, then searches: nothing early.
    let c0 = counts(&env).await;
    let first = ask(&env, &session, q).await;
    assert!(!first.is_empty(), "the demo question finds chunks");
    let c1 = counts(&env).await;
    assert_eq!((c1.used - c0.used, c1.dropped - c0.dropped), (0.0, 0.0));

    // The same question again: searched in the context's statement, and the same answer.
    let second = ask(&env, &session, q).await;
    let c2 = counts(&env).await;
    assert_eq!((c2.used - c1.used, c2.dropped - c1.dropped), (1.0, 0.0));
    assert_eq!(
        second, first,
        "the early search finds what a separate one finds"
    );
    // The demo chat reranks: no embedding call either way.
    assert_eq!(c2.embeddings - c0.embeddings, 0.0);

    // Fewer chunks wanted: the early candidates (searched for 6) are dropped, the chat
    // searches again, and the answer has the one chunk now asked for.
    update_chat(&env, json!({"top_n": 1})).await;
    let third = ask(&env, &session, q).await;
    let c3 = counts(&env).await;
    assert_eq!((c3.used - c2.used, c3.dropped - c2.dropped), (0.0, 1.0));
    assert_eq!(third, first[..1].to_vec());
    // … and the next question goes early again, on the new settings.
    let fourth = ask(&env, &session, q).await;
    let c4 = counts(&env).await;
    assert_eq!((c4.used - c3.used, c4.dropped - c3.dropped), (1.0, 0.0));
    assert_eq!(fourth, third);

    // Without the reranker the cosine is the semantic score: dropped once (the plan changed),
    // then searched early while the question is embedded, one embedding call per question.
    update_chat(&env, json!({"rerank_model": "", "top_n": 6})).await;
    let fifth = ask(&env, &session, q).await;
    let c5 = counts(&env).await;
    assert_eq!((c5.used - c4.used, c5.dropped - c4.dropped), (0.0, 1.0));
    assert_eq!(c5.embeddings - c4.embeddings, 1.0);
    let sixth = ask(&env, &session, q).await;
    let c6 = counts(&env).await;
    assert_eq!((c6.used - c5.used, c6.dropped - c5.dropped), (1.0, 0.0));
    assert_eq!(c6.embeddings - c5.embeddings, 1.0);
    assert_eq!(
        sixth, fifth,
        "the early cosine search finds what a separate one finds"
    );

    // A chat that refines follow-ups: this session has history, so questions are refined
    // (the refine step runs). The first after the change is still searched early, on the
    // plan of a chat that did not refine; the simulator's rewrite is the question as asked, so
    // those candidates are the right ones and are used. From then on the chat's plan says it
    // refines, and a session's follow-up is not searched early at all.
    update_chat(&env, json!({"refine_multiturn": true})).await;
    ask(&env, &session, "And how is it retried?").await;
    let c7 = counts(&env).await;
    assert_eq!((c7.used - c6.used, c7.dropped - c6.dropped), (1.0, 0.0));
    assert_eq!(c7.refines - c6.refines, 1.0, "refined");
    ask(&env, &session, "And when does it give up?").await;
    let c8 = counts(&env).await;
    assert_eq!((c8.used - c7.used, c8.dropped - c7.dropped), (0.0, 0.0));
    assert_eq!(c8.refines - c7.refines, 1.0, "refined");
    env.stop().await;
}
