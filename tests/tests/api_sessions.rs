//! Session list, update and delete (`/api/v1/chats/{chat_id}/sessions`) against the real api,
//! PostgreSQL and (for the answered turn) a worker: RAGFlow's shapes and messages, and tenant
//! isolation.

use ragq_tests::{EnvOptions, TestEnv};
use reqwest::Method;
use serde_json::{Value, json};

fn no_workers() -> EnvOptions {
    EnvOptions {
        workers: 0,
        ..Default::default()
    }
}

/// Calls the api with `key`; asserts HTTP 200 and a JSON body.
async fn call(env: &TestEnv, key: &str, method: Method, path: &str, body: Option<Value>) -> Value {
    let mut req = env
        .http
        .request(method, format!("{}{path}", env.url))
        .header("Authorization", format!("Bearer {key}"));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

async fn get(env: &TestEnv, path: &str) -> Value {
    call(env, &env.api_key, Method::GET, path, None).await
}
async fn post(env: &TestEnv, path: &str, body: Value) -> Value {
    call(env, &env.api_key, Method::POST, path, Some(body)).await
}
async fn put(env: &TestEnv, path: &str, body: Value) -> Value {
    call(env, &env.api_key, Method::PUT, path, Some(body)).await
}
async fn delete(env: &TestEnv, path: &str, body: Value) -> Value {
    call(env, &env.api_key, Method::DELETE, path, Some(body)).await
}

#[track_caller]
fn assert_err(v: &Value, code: i64, message: &str) {
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["message"], message, "{v}");
}

/// Names of the listed sessions, in order.
fn names(v: &Value) -> Vec<String> {
    assert_eq!(v["code"], 0, "{v}");
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

async fn new_session(env: &TestEnv, body: Value) -> String {
    let v = post(
        env,
        &format!("/api/v1/chats/{}/sessions", env.chat_id),
        body,
    )
    .await;
    assert_eq!(v["code"], 0, "{v}");
    v["data"]["id"].as_str().unwrap().to_string()
}

async fn session_count(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(&env.db)
        .await
        .unwrap()
}

/// Saves a turn directly (as a worker would) with the given status.
async fn save_turn(env: &TestEnv, session: &str, question: &str, status: &str) {
    sqlx::query(
        "INSERT INTO turns (session_id, job_id, message_id, question, answer, reference, status)
         VALUES ($1, gen_random_uuid(), gen_random_uuid()::text, $2, 'answer to ' || $2, '{}'::jsonb, $3)",
    )
    .bind(session)
    .bind(question)
    .bind(status)
    .execute(&env.db)
    .await
    .unwrap();
}

/// List with filters, ordering and paging; rename; delete by id, partially and all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_crud() {
    let env = TestEnv::start(no_workers()).await;
    let base = format!("/api/v1/chats/{}/sessions", env.chat_id);
    let a = new_session(&env, json!({"name": "a", "user_id": "u1"})).await;
    let b = new_session(&env, json!({"name": "b"})).await;
    let c = new_session(&env, json!({"name": "c"})).await;

    let all = get(&env, &base).await;
    assert_eq!(names(&all), ["c", "b", "a"]);
    let s = &all["data"][2];
    assert_eq!(s["id"], a.as_str());
    assert_eq!(s["chat_id"], env.chat_id.as_str());
    assert_eq!(s["user_id"], "u1");
    assert_eq!(
        s["messages"],
        json!([{"role": "assistant", "content": ragq_common::chat_defaults::PROLOGUE}])
    );
    assert!(s["create_time"].as_i64().unwrap() > 1_700_000_000_000);
    assert!(s["update_date"].as_str().unwrap().ends_with(" GMT"));

    assert_eq!(
        names(&get(&env, &format!("{base}?desc=false")).await),
        ["a", "b", "c"]
    );
    assert_eq!(
        names(&get(&env, &format!("{base}?page=2&page_size=1")).await),
        ["b"]
    );
    assert_eq!(names(&get(&env, &format!("{base}?name=b")).await), ["b"]);
    assert_eq!(
        names(&get(&env, &format!("{base}?user_id=u1")).await),
        ["a"]
    );
    assert_eq!(names(&get(&env, &format!("{base}?id={c}")).await), ["c"]);
    assert_eq!(
        get(&env, &format!("{base}?id=nope")).await,
        json!({"code": 0, "data": []})
    );
    assert_eq!(get(&env, &format!("{base}?page=x")).await["code"], 101);
    assert_err(
        &get(&env, "/api/v1/chats/nope/sessions").await,
        102,
        "You don't own the assistant nope.",
    );

    // Saved turns become messages; failed turns are not shown.
    save_turn(&env, &a, "q1", "done").await;
    save_turn(&env, &a, "q2", "error").await;
    save_turn(&env, &a, "q3", "stopped").await;
    let listed = get(&env, &format!("{base}?id={a}")).await;
    let msgs = listed["data"][0]["messages"].as_array().unwrap().clone();
    let contents: Vec<&str> = msgs
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        [
            ragq_common::chat_defaults::PROLOGUE,
            "q1",
            "answer to q1",
            "q3",
            "answer to q3"
        ]
    );
    assert_eq!(msgs[1]["role"], "user");
    assert_eq!(msgs[2]["role"], "assistant");
    assert_eq!(msgs[1]["id"], msgs[2]["id"]);
    assert_eq!(msgs[2]["reference"], json!([]));

    // Update: name and user_id; the messages cannot be changed.
    let path_a = format!("{base}/{a}");
    assert_eq!(
        put(&env, &path_a, json!({"name": "renamed", "user_id": "u2"})).await,
        json!({"code": 0})
    );
    let s = get(&env, &format!("{base}?id={a}")).await["data"][0].clone();
    assert_eq!(
        (s["name"].as_str(), s["user_id"].as_str()),
        (Some("renamed"), Some("u2"))
    );
    assert!(s["update_time"].as_i64() > s["create_time"].as_i64());
    for (body, code, message) in [
        (json!({"messages": []}), 102, "`message` can not be change"),
        (
            json!({"message": [], "name": "x"}),
            102,
            "`message` can not be change",
        ),
        (
            json!({"reference": []}),
            102,
            "`reference` can not be change",
        ),
        (json!({"name": ""}), 102, "`name` can not be empty."),
        (json!({"name": "  "}), 102, "`name` can not be empty."),
        (json!({"name": 5}), 101, "`name` must be a string."),
        (json!({"user_id": []}), 101, "`user_id` must be a string."),
    ] {
        let v = put(&env, &path_a, body.clone()).await;
        assert_eq!(v["code"], code, "{body} → {v}");
        assert_eq!(v["message"], message, "{body} → {v}");
    }
    assert_err(
        &put(&env, &format!("{base}/nope"), json!({"name": "x"})).await,
        102,
        "Session does not exist",
    );
    let resp = env
        .http
        .put(format!("{}{path_a}", env.url))
        .header("Authorization", env.auth())
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], 101);
    assert_eq!(
        get(&env, &format!("{base}?id={a}")).await["data"][0]["name"],
        "renamed"
    );

    // Delete by id (the turns go with the session), errors, partial, then all.
    assert_eq!(
        delete(&env, &base, json!({"ids": [a]})).await,
        json!({"code": 0})
    );
    let turns: i64 = sqlx::query_scalar("SELECT count(*) FROM turns WHERE session_id = $1")
        .bind(&a)
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(turns, 0);
    assert_err(
        &delete(&env, &base, json!({"ids": ["nope"]})).await,
        102,
        "The chat doesn't own the session nope",
    );
    assert_eq!(
        delete(&env, &base, json!({"ids": [b, "nope"]})).await,
        json!({"code": 0, "data": {"success_count": 1, "errors": ["The chat doesn't own the session nope"]}})
    );
    assert_eq!(delete(&env, &base, json!({"ids": "x"})).await["code"], 101);
    assert_eq!(names(&get(&env, &base).await), ["c"]);
    // null ids → every session of this chat (RAGFlow), but not another chat's.
    let other_chat = env.chat_with_model("other", "sim").await;
    let kept = post(
        &env,
        &format!("/api/v1/chats/{other_chat}/sessions"),
        json!({}),
    )
    .await;
    assert_eq!(
        delete(&env, &base, json!({"ids": null})).await,
        json!({"code": 0})
    );
    assert_eq!(get(&env, &base).await, json!({"code": 0, "data": []}));
    assert_eq!(session_count(&env).await, 1);
    let listed = get(&env, &format!("/api/v1/chats/{other_chat}/sessions")).await;
    assert_eq!(listed["data"][0]["id"], kept["data"]["id"]);

    // A deleted chat's sessions are out of reach.
    let s = new_session(&env, json!({"name": "late"})).await;
    let del = delete(&env, "/api/v1/chats", json!({"ids": [env.chat_id]})).await;
    assert_eq!(del, json!({"code": 0}));
    assert_err(
        &get(&env, &base).await,
        102,
        &format!("You don't own the assistant {}.", env.chat_id),
    );
    assert_err(
        &put(&env, &format!("{base}/{s}"), json!({"name": "x"})).await,
        102,
        "You do not own the session",
    );
    assert_err(
        &delete(&env, &base, json!({})).await,
        102,
        "You don't own the chat",
    );
    env.stop().await;
}

/// A second tenant gets 102 on every verb and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_tenant_is_isolated() {
    let env = TestEnv::start(no_workers()).await;
    let base = format!("/api/v1/chats/{}/sessions", env.chat_id);
    let sid = new_session(&env, json!({"name": "mine"})).await;
    let other = ragq_cli::admin::create_tenant(&env.db, "other")
        .await
        .unwrap();
    let key = other.api_key.as_str();

    let v = call(&env, key, Method::GET, &base, None).await;
    assert_err(
        &v,
        102,
        &format!("You don't own the assistant {}.", env.chat_id),
    );
    let v = call(&env, key, Method::GET, &format!("{base}?id={sid}"), None).await;
    assert_err(
        &v,
        102,
        &format!("You don't own the assistant {}.", env.chat_id),
    );
    let v = call(&env, key, Method::POST, &base, Some(json!({"name": "x"}))).await;
    assert_err(&v, 102, "You do not own the assistant.");
    let v = call(
        &env,
        key,
        Method::PUT,
        &format!("{base}/{sid}"),
        Some(json!({"name": "x"})),
    )
    .await;
    assert_err(&v, 102, "Session does not exist");
    for body in [json!({"ids": [sid]}), json!({}), json!({"ids": null})] {
        let v = call(&env, key, Method::DELETE, &base, Some(body)).await;
        assert_err(&v, 102, "You don't own the chat");
    }

    assert_eq!(session_count(&env).await, 1);
    let listed = get(&env, &base).await;
    assert_eq!(names(&listed), ["mine"]);
    assert_eq!(listed["data"][0]["id"], sid.as_str());
    env.stop().await;
}

/// After a real answered turn, the session lists the user and assistant messages with the
/// message id, the time and the reference chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_an_answered_turn() {
    let env = TestEnv::start(EnvOptions::default()).await;
    let sid = env.create_session(&env.chat_id).await;
    let question = "What is the delivery limit of the job queue?";
    let answer = env.ask(&env.chat_id, &sid, question).await;
    assert_eq!(answer["code"], 0, "{answer}");
    let a = &answer["data"];

    let listed = get(
        &env,
        &format!("/api/v1/chats/{}/sessions?id={sid}", env.chat_id),
    )
    .await;
    assert_eq!(listed["code"], 0, "{listed}");
    let msgs = listed["data"][0]["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "{listed}");
    assert_eq!(msgs[0]["role"], "assistant");
    assert_eq!(
        msgs[1],
        json!({"role": "user", "content": question, "id": a["id"]})
    );
    let m = &msgs[2];
    assert_eq!(m["role"], "assistant");
    assert_eq!(m["content"], a["answer"]);
    assert_eq!(m["id"], a["id"]);
    let created = m["created_at"].as_f64().unwrap();
    assert!(
        (created - a["created_at"].as_f64().unwrap()).abs() < 30.0,
        "{m}"
    );
    let refs = m["reference"].as_array().unwrap();
    assert!(!refs.is_empty(), "{m}");
    assert_eq!(
        refs.len(),
        a["reference"]["chunks"].as_array().unwrap().len()
    );
    let r = &refs[0];
    let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "id",
            "content",
            "document_id",
            "document_name",
            "dataset_id",
            "image_id",
            "positions"
        ]
    );
    assert_eq!(r["id"], a["reference"]["chunks"][0]["id"]);
    assert_eq!(r["document_name"], "job-queue.md");
    assert_eq!(r["dataset_id"], env.dataset_id.as_str());
    assert!(
        r["content"].as_str().unwrap().contains("five attempts"),
        "{r}"
    );
    env.stop().await;
}

/// The error event that ends a streamed answer, if it ended with one.
fn stream_error(events: &[Value]) -> Option<String> {
    events
        .iter()
        .filter(|e| e["code"] != 0)
        .find_map(|e| e["message"].as_str().map(str::to_string))
}

/// A new session of `chat`, answered once through `env`'s api (which now remembers that the
/// session is the chat's).
async fn answered_session(env: &TestEnv, chat: &str) -> String {
    let s = env.create_session(chat).await;
    let answered = env
        .ask_stream(chat, &s, "What is the delivery limit?")
        .await;
    assert_eq!(stream_error(&answered), None, "{answered:?}");
    s
}

/// `DELETE path` with `body` through the api at `url`; asserts RAGFlow's success.
async fn delete_through(env: &TestEnv, url: &str, path: &str, body: Value) {
    let resp = env
        .http
        .delete(format!("{url}{path}"))
        .header("Authorization", env.auth())
        .json(&body)
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"code": 0}));
}

/// Asks again in session `s` through `env`'s api; returns the error that ends the stream.
async fn refused(env: &TestEnv, chat: &str, s: &str) -> String {
    let events = env.ask_stream(chat, s, "And again?").await;
    stream_error(&events).unwrap_or_else(|| panic!("the stream ends with an error: {events:?}"))
}

/// A completion's ownership check is remembered by the api that made it (no statement per
/// question): a session deleted through the same api is refused at once with RAGFlow's 102;
/// one deleted through another api replica (or by hand) is refused by the worker's context
/// statement, ending the stream with the same words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_sessions_are_refused_whichever_replica_deleted_them() {
    let env = TestEnv::start(EnvOptions::default()).await;
    let chat = env.chat_id.clone();
    let base = format!("/api/v1/chats/{chat}/sessions");

    // Through this api: answered once (the check is now remembered), deleted, refused.
    let s = answered_session(&env, &chat).await;
    assert_eq!(
        delete(&env, &base, json!({"ids": [s]})).await,
        json!({"code": 0})
    );
    assert_err(
        &env.ask(&chat, &s, "And again?").await,
        102,
        &format!("You don't own the session {s}"),
    );

    // Through another replica: this api still remembers the session, the worker refuses it.
    let (other, stop_other) = env.spawn_api("other").await;
    let s = answered_session(&env, &chat).await;
    delete_through(&env, &other, &base, json!({"ids": [s]})).await;
    let message = refused(&env, &chat, &s).await;
    assert!(
        message.contains(&format!("You don't own the session {s}")),
        "{message}"
    );
    // Nothing was saved for the refused question.
    let turns: i64 = sqlx::query_scalar("SELECT count(*) FROM turns WHERE session_id = $1")
        .bind(&s)
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(turns, 0);

    // A chat deleted through the other replica: the worker refuses it too.
    let s = answered_session(&env, &chat).await;
    delete_through(&env, &other, "/api/v1/chats", json!({"ids": [chat]})).await;
    let message = refused(&env, &chat, &s).await;
    assert!(
        message.contains(&format!("You don't own the chat {chat}")),
        "{message}"
    );
    stop_other.cancel();
    env.stop().await;
}
