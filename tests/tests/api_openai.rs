//! The OpenAI-compatible endpoint `POST /api/v1/chats_openai/{chat_id}/chat/completions`, end to
//! end: streamed chunks, the final chunk's usage/reference, the non-stream body, conversations,
//! and OpenAI-style errors (HTTP 4xx/5xx + `{"error": {…}}`) that make the `openai` SDK raise.

use ragq_common::job::Lane;
use ragq_tests::{EnvOptions, TestEnv};
use serde_json::{Value, json};

const QUESTION: &str = "What is the delivery limit of the job queue?";

fn path(chat_id: &str) -> String {
    format!("/api/v1/chats_openai/{chat_id}/chat/completions")
}

/// POSTs `body` with `auth` (none when `None`); returns status, content type and body text.
async fn send(
    env: &TestEnv,
    chat_id: &str,
    auth: Option<&str>,
    body: Value,
) -> (u16, String, String) {
    let mut req = env
        .http
        .post(format!("{}{}", env.url, path(chat_id)))
        .json(&body);
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ctype, resp.text().await.expect("body"))
}

/// The `data:` payloads of an OpenAI SSE body; `[DONE]` becomes the string "[DONE]".
fn events(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|e| e.strip_prefix("data:"))
        .map(|d| {
            if d == "[DONE]" {
                Value::from("[DONE]")
            } else {
                serde_json::from_str(d).unwrap_or_else(|e| panic!("bad chunk {d}: {e}"))
            }
        })
        .collect()
}

/// Streams `body` (with `stream: true`) and checks the framing every stream shares. Returns the
/// content chunks' deltas and the final chunk.
async fn stream(env: &TestEnv, chat_id: &str, mut body: Value) -> (Vec<String>, Value) {
    body["stream"] = json!(true);
    let (status, ctype, text) = send(env, chat_id, Some(&env.auth()), body).await;
    assert_eq!(status, 200, "{text}");
    assert!(ctype.starts_with("text/event-stream"), "{ctype}");
    assert!(text.ends_with("data:[DONE]\n\n"), "{text}");
    let events = events(&text);
    assert!(events.len() >= 3, "{events:?}");
    assert_eq!(events[events.len() - 1], "[DONE]");
    let last = events[events.len() - 2].clone();
    let mut deltas = Vec::new();
    for e in &events[..events.len() - 2] {
        assert_eq!(e["id"], format!("chatcmpl-{chat_id}"));
        assert_eq!(e["object"], "chat.completion.chunk");
        assert_eq!(e["model"], "model");
        assert_eq!(e["usage"], Value::Null);
        assert_eq!(e["created"], last["created"]);
        let choice = &e["choices"][0];
        assert_eq!(choice["finish_reason"], Value::Null);
        assert_eq!(choice["delta"]["role"], "assistant");
        deltas.push(
            choice["delta"]["content"]
                .as_str()
                .expect("content chunk")
                .to_string(),
        );
    }
    assert_eq!(last["choices"][0]["finish_reason"], "stop", "{last}");
    assert_eq!(last["choices"][0]["delta"]["content"], Value::Null);
    (deltas, last)
}

fn user(q: &str) -> Value {
    json!({"model": "ragq", "messages": [{"role": "user", "content": q}]})
}

/// Streamed deltas add up to the answer; the final chunk carries usage (characters) and, when
/// asked for at the top level or in `extra_body`, the reference and the decorated answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_chunks_usage_and_reference() {
    let env = TestEnv::start(EnvOptions::default()).await;

    let mut top = user(QUESTION);
    top["reference"] = json!(true);
    let mut extra = user(QUESTION);
    extra["extra_body"] = json!({"reference": true});
    for body in [top, extra] {
        let (deltas, last) = stream(&env, &env.chat_id, body.clone()).await;
        assert!(deltas.len() >= 2, "{deltas:?}");
        assert!(deltas.iter().all(|d| !d.is_empty()));
        let text: String = deltas.concat();
        assert!(
            text.contains("delivery limit of the job queue is five attempts"),
            "{text}"
        );
        let delta = &last["choices"][0]["delta"];
        // The simulated model cites on its own, so decoration inserts nothing: the streamed text
        // is the whole decorated answer (an inserted citation would only be in final_content).
        assert_eq!(delta["final_content"], text.as_str(), "{body}");
        let chunks = delta["reference"].as_array().expect("reference list");
        assert!(!chunks.is_empty());
        assert_eq!(chunks[0]["document_name"], "job-queue.md");
        assert!(
            chunks[0]["content"]
                .as_str()
                .unwrap()
                .contains("five attempts")
        );
        for key in [
            "id",
            "document_id",
            "dataset_id",
            "similarity",
            "vector_similarity",
            "term_similarity",
            "positions",
            "image_id",
            "url",
            "doc_type",
        ] {
            assert!(
                chunks[0].get(key).is_some(),
                "chunk lacks {key}: {}",
                chunks[0]
            );
        }
        let prompt = QUESTION.chars().count() as u64;
        let completion = text.chars().count() as u64;
        assert_eq!(
            last["usage"],
            json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
        );
    }

    // Without reference: no reference, no final_content, and no citation decoration.
    let (deltas, last) = stream(&env, &env.chat_id, user(QUESTION)).await;
    assert!(deltas.concat().contains("five attempts"));
    let delta = last["choices"][0]["delta"].as_object().unwrap();
    assert!(!delta.contains_key("reference"), "{last}");
    assert!(!delta.contains_key("final_content"), "{last}");

    // Nothing is saved: no session, no turn.
    let turns: i64 = sqlx::query_scalar("SELECT count(*) FROM turns")
        .fetch_one(&env.db)
        .await
        .unwrap();
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!((turns, sessions), (0, 0));
    env.stop().await;
}

/// `stream` omitted → one `chat.completion` JSON body; a conversation is accepted and the last
/// user message is the question.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_stream_answers_and_conversations() {
    let env = TestEnv::start(EnvOptions::default()).await;

    let mut body = user(QUESTION);
    body["reference"] = json!(true);
    let (status, ctype, text) = send(&env, &env.chat_id, Some(&env.auth()), body).await;
    assert_eq!(status, 200, "{text}");
    assert!(ctype.starts_with("application/json"), "{ctype}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["id"], format!("chatcmpl-{}", env.chat_id));
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "ragq");
    assert!(v.get("code").is_none(), "no RAGFlow envelope: {v}");
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["message"]["role"], "assistant");
    let content = choice["message"]["content"].as_str().unwrap();
    assert!(content.contains("five attempts"), "{content}");
    assert!(content.contains("[ID:0]"), "{content}");
    assert_eq!(
        choice["message"]["reference"][0]["document_name"],
        "job-queue.md"
    );
    let n = content.chars().count() as u64;
    let p = QUESTION.chars().count() as u64;
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": p, "completion_tokens": n, "total_tokens": p + n,
               "completion_tokens_details": {"reasoning_tokens": 0, "accepted_prediction_tokens": n,
               "rejected_prediction_tokens": 0}})
    );

    // Without reference: the message has no reference key.
    let (status, _, text) = send(&env, &env.chat_id, Some(&env.auth()), user(QUESTION)).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(v["choices"][0]["message"].get("reference").is_none(), "{v}");
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("five attempts")
    );

    // A conversation: system and leading assistant messages are dropped, the last user message
    // is answered (about the event stream, not the job queue of the first question).
    let body = json!({"model": "m", "stream": false, "reference": true, "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "assistant", "content": "Hi! I'm your assistant, what can I do for you?"},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "Five attempts."},
        {"role": "user", "content": "How are answer events streamed?"},
    ]});
    let (status, _, text) = send(&env, &env.chat_id, Some(&env.auth()), body).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["reference"][0]["document_name"], "event-stream.md",
        "{v}"
    );
    assert_eq!(
        v["usage"]["prompt_tokens"],
        "How are answer events streamed?".chars().count()
    );
    env.stop().await;
}

/// (name, chat id, `Authorization` header, body, HTTP status, error `code`, error `message`)
type ErrorCase<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    Value,
    u16,
    &'a str,
    String,
);

/// Every invalid request is an HTTP 4xx with an OpenAI error body, and none publishes a job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_openai_style_and_publish_nothing() {
    let env = TestEnv::start(EnvOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let auth = env.auth();
    let ok_body = user(QUESTION);
    let other = ragq_cli::admin::create_tenant(&env.db, "other")
        .await
        .unwrap();
    let other_auth = format!("Bearer {}", other.api_key);
    let chat = env.chat_id.as_str();
    let not_owned = format!("You don't own the chat {chat}");

    let cases: Vec<ErrorCase> = vec![
        (
            "no auth",
            chat,
            None,
            ok_body.clone(),
            401,
            "invalid_api_key",
            "`Authorization` can't be empty".into(),
        ),
        (
            "one word",
            chat,
            Some("Bearer"),
            ok_body.clone(),
            401,
            "invalid_api_key",
            "Please check your authorization format.".into(),
        ),
        (
            "bad key",
            chat,
            Some("Bearer ragq-wrong"),
            ok_body.clone(),
            401,
            "invalid_api_key",
            "Authentication error: API key is invalid!".into(),
        ),
        (
            "no model",
            chat,
            Some(auth.as_str()),
            json!({"messages": [{"role": "user", "content": "q"}]}),
            400,
            "missing_required_parameter",
            "required argument are missing: model; ".into(),
        ),
        // Presence is checked before auth, as RAGFlow.
        (
            "no messages, no auth",
            chat,
            None,
            json!({"model": "m"}),
            400,
            "missing_required_parameter",
            "required argument are missing: messages; ".into(),
        ),
        (
            "empty",
            chat,
            Some(auth.as_str()),
            json!({"model": "m", "messages": []}),
            400,
            "invalid_value",
            "You have to provide messages.".into(),
        ),
        (
            "last not user",
            chat,
            Some(auth.as_str()),
            json!({"model": "m", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}),
            400,
            "invalid_value",
            "The last content of this conversation is not from user.".into(),
        ),
        (
            "list content",
            chat,
            Some(auth.as_str()),
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]}]}),
            400,
            "invalid_type",
            "The `content` of message 0 must be a string.".into(),
        ),
        (
            "null content",
            chat,
            Some(auth.as_str()),
            json!({"model": "m", "messages": [{"role": "assistant", "content": null}, {"role": "user", "content": "q"}]}),
            400,
            "invalid_type",
            "The `content` of message 0 must be a string.".into(),
        ),
        (
            "bad stream",
            chat,
            Some(auth.as_str()),
            json!({"model": "m", "stream": "yes", "messages": [{"role": "user", "content": "q"}]}),
            400,
            "invalid_type",
            "`stream` must be a boolean.".into(),
        ),
        (
            "other tenant",
            chat,
            Some(other_auth.as_str()),
            ok_body.clone(),
            404,
            "chat_not_found",
            not_owned.clone(),
        ),
        (
            "other tenant, stream",
            chat,
            Some(other_auth.as_str()),
            json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "q"}]}),
            404,
            "chat_not_found",
            not_owned.clone(),
        ),
        (
            "unknown chat",
            "nope",
            Some(auth.as_str()),
            ok_body.clone(),
            404,
            "chat_not_found",
            "You don't own the chat nope".into(),
        ),
    ];
    for (name, chat_id, auth, body, status, code, message) in cases {
        let (got, ctype, text) = send(&env, chat_id, auth, body).await;
        assert_eq!(got, status, "{name}: {text}");
        assert!(ctype.starts_with("application/json"), "{name}: {ctype}");
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}: {text}"));
        let kind = "invalid_request_error";
        assert_eq!(v["error"]["type"], kind, "{name}: {v}");
        assert_eq!(v["error"]["code"], code, "{name}: {v}");
        assert_eq!(v["error"]["message"], message.as_str(), "{name}: {v}");
    }
    // Not JSON at all.
    let resp = env
        .http
        .post(format!("{}{}", env.url, path(chat)))
        .header("Authorization", &auth)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_json");

    // Nothing reached the queue (no worker runs here, so anything published would still be there).
    let broker = env.broker().await;
    assert_eq!(broker.depth(Lane::Interactive).await.unwrap(), 0);
    broker.close().await;
    env.stop().await;
}

/// An upstream model failure: the stream gets an `**ERROR**` chunk, then the final chunk and
/// `[DONE]`; non-stream gets HTTP 502 with a `server_error` body (so the SDK raises).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failure_is_an_error_chunk_or_502() {
    let env = TestEnv::start(EnvOptions::default()).await;
    let chat = env.chat_with_model("e", "sim-error").await;

    let (deltas, last) = stream(&env, &chat, user(QUESTION)).await;
    assert_eq!(deltas.len(), 1, "{deltas:?}");
    assert!(deltas[0].starts_with("**ERROR**: "), "{deltas:?}");
    // A fixed message with an error id; the upstream's own answer stays in the worker's log.
    assert!(
        deltas[0].starts_with("**ERROR**: the model service returned an error (error id err_"),
        "{deltas:?}"
    );
    assert_eq!(last["usage"]["completion_tokens"], 0);

    let (status, _, text) = send(&env, &chat, Some(&env.auth()), user(QUESTION)).await;
    assert_eq!(status, 502, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["type"], "server_error");
    assert_eq!(v["error"]["code"], "upstream_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("**ERROR**: ")
    );
    env.stop().await;
}
