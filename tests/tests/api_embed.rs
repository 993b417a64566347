//! Embedded chatbots and search pages: embed tokens created, listed and revoked with the API
//! key (HTTP and the `ragq` CLI's module); chatbot completions with a live embed token only;
//! the API key refused there; an embed token refused on every other route family; the
//! token's own rate limit (429). Also RAGFlow's newer paths served beside the v0.22.1 ones.

use ragq_tests::{EnvOptions, TestEnv, parse_sse};
use serde_json::{Value, json};

const QUESTION: &str = "What is the delivery limit of the job queue?";

fn body(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

async fn send(
    env: &TestEnv,
    method: reqwest::Method,
    path: &str,
    auth: Option<&str>,
    payload: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = env.http.request(method, format!("{}{path}", env.url));
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    if let Some(p) = payload {
        req = req.json(&p);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.expect("body"))
}

/// Creates an embed token over HTTP with the API key: (id, token).
async fn new_token(env: &TestEnv, rate: Option<i64>) -> (String, String) {
    let mut req = json!({"label": "site"});
    if let Some(r) = rate {
        req["rate_per_minute"] = json!(r);
    }
    let (_, text) = env.post("/api/v1/embed_tokens", req).await;
    let v = body(&text);
    assert_eq!(v["code"], 0, "{text}");
    let token = v["data"]["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("ragq-embed-"));
    (v["data"]["id"].as_str().unwrap().to_string(), token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatbot_completion_needs_a_live_embed_token() {
    let env = TestEnv::start(EnvOptions::default()).await;
    let (id, token) = new_token(&env, None).await;
    let bearer = format!("Bearer {token}");
    let path = format!("/api/v1/chatbots/{}/completions", env.chat_id);
    use reqwest::Method;

    // No session: a new one and its prologue, as RAGFlow's iframe completion.
    let (_, _, text) = send(
        &env,
        Method::POST,
        &path,
        Some(&bearer),
        Some(json!({"question": "hi"})),
    )
    .await;
    let events = parse_sse(&text);
    let session = events[0]["data"]["session_id"]
        .as_str()
        .expect("session")
        .to_string();
    assert_eq!(events.last().unwrap(), &json!({"code": 0, "data": true}));

    let (status, _, text) = send(
        &env,
        Method::POST,
        &path,
        Some(&bearer),
        Some(json!({"question": QUESTION, "session_id": session, "stream": true})),
    )
    .await;
    assert_eq!(status, 200);
    let events = parse_sse(&text);
    let last = &events[events.len() - 2]["data"];
    assert!(
        last["answer"].as_str().unwrap().contains("five attempts"),
        "{text}"
    );
    // Embedded chatbots answer without citations unless `quote` is given (RAGFlow).
    assert_eq!(last["reference"], json!({}), "{text}");
    let (_, _, text) = send(
        &env,
        Method::POST,
        &path,
        Some(&bearer),
        Some(json!({"question": QUESTION, "session_id": session, "stream": false, "quote": true})),
    )
    .await;
    assert_eq!(
        body(&text)["data"]["reference"]["chunks"][0]["document_name"],
        "job-queue.md",
        "{text}"
    );

    let (_, _, text) = send(
        &env,
        Method::GET,
        &format!("/api/v1/chatbots/{}/info", env.chat_id),
        Some(&bearer),
        None,
    )
    .await;
    let v = body(&text);
    assert_eq!(v["code"], 0, "{text}");
    assert_eq!(v["data"]["title"], "demo");
    assert!(v["data"]["prologue"].is_string());

    // The tenant's API key is refused here, as is no token and a bad header.
    let ask = json!({"question": QUESTION, "session_id": session});
    let (_, _, text) = send(
        &env,
        Method::POST,
        &path,
        Some(&env.auth()),
        Some(ask.clone()),
    )
    .await;
    let v = body(&text);
    assert_eq!(v["code"], 102, "{text}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("API key is not accepted"),
        "{text}"
    );
    let (_, _, text) = send(&env, Method::POST, &path, None, Some(ask.clone())).await;
    assert_eq!(
        body(&text),
        json!({"code": 102, "message": "Authorization is not valid!"})
    );
    let (_, _, text) = send(
        &env,
        Method::POST,
        &path,
        Some("Bearer ragq-embed-nope"),
        Some(ask.clone()),
    )
    .await;
    assert_eq!(
        body(&text),
        json!({"code": 102, "message": "Authentication error: API key is invalid!"})
    );
    // Another tenant's chat is not found through this tenant's token.
    let other = ragq_cli::admin::create_tenant(&env.db, "other")
        .await
        .unwrap();
    let (_, theirs) = {
        let created = ragq_common::embed_token::create(&env.db, &other.tenant_id, "", None)
            .await
            .unwrap();
        (created.row.id, created.token)
    };
    let (_, _, text) = send(
        &env,
        Method::POST,
        &path,
        Some(&format!("Bearer {theirs}")),
        Some(ask.clone()),
    )
    .await;
    assert_eq!(
        body(&text),
        json!({"code": 102, "message": format!("You don't own the chat {}", env.chat_id)})
    );

    // Listed (without the token), revoked, then refused.
    let (_, _, text) = send(
        &env,
        Method::GET,
        "/api/v1/embed_tokens",
        Some(&env.auth()),
        None,
    )
    .await;
    let v = body(&text);
    assert_eq!(v["data"][0]["id"], id.as_str(), "{text}");
    assert_eq!(v["data"][0]["revoked"], false);
    assert!(v["data"][0].get("token").is_none());
    let (_, _, text) = send(
        &env,
        Method::DELETE,
        &format!("/api/v1/embed_tokens/{id}"),
        Some(&env.auth()),
        None,
    )
    .await;
    assert_eq!(body(&text), json!({"code": 0}));
    let (_, _, text) = send(
        &env,
        Method::DELETE,
        &format!("/api/v1/embed_tokens/{id}"),
        Some(&env.auth()),
        None,
    )
    .await;
    assert_eq!(body(&text)["code"], 102);
    let (_, _, text) = send(&env, Method::POST, &path, Some(&bearer), Some(ask)).await;
    assert_eq!(
        body(&text),
        json!({"code": 102, "message": "Authentication error: API key is invalid!"})
    );
    let (_, _, text) = send(
        &env,
        Method::GET,
        "/api/v1/embed_tokens",
        Some(&env.auth()),
        None,
    )
    .await;
    assert_eq!(body(&text)["data"][0]["revoked"], true);
    // Another tenant cannot revoke this tenant's tokens.
    let (mine, _) = new_token(&env, None).await;
    assert!(
        !ragq_common::embed_token::revoke(&env.db, &other.tenant_id, &mine)
            .await
            .unwrap()
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_token_is_refused_on_every_other_route_family() {
    let env = TestEnv::start(EnvOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let (_, token) = new_token(&env, Some(1000)).await;
    let bearer = format!("Bearer {token}");
    use reqwest::Method;
    let chat = &env.chat_id;
    let ds = &env.dataset_id;
    let job = uuid::Uuid::now_v7();
    let families: Vec<(&str, Method, String, Option<Value>)> = vec![
        ("chats", Method::GET, "/api/v1/chats".into(), None),
        (
            "chat update",
            Method::PUT,
            format!("/api/v1/chats/{chat}"),
            Some(json!({"name": "x"})),
        ),
        (
            "sessions",
            Method::GET,
            format!("/api/v1/chats/{chat}/sessions"),
            None,
        ),
        (
            "completions",
            Method::POST,
            format!("/api/v1/chats/{chat}/completions"),
            Some(json!({"question": "q"})),
        ),
        (
            "completion resume",
            Method::GET,
            format!("/api/v1/chats/{chat}/completions/{job}"),
            None,
        ),
        (
            "completion stop",
            Method::POST,
            format!("/api/v1/chats/{chat}/completions/{job}/stop"),
            None,
        ),
        (
            "newer completions",
            Method::POST,
            "/api/v1/chat/completions".into(),
            Some(json!({"chat_id": chat, "question": "q"})),
        ),
        ("datasets", Method::GET, "/api/v1/datasets".into(), None),
        (
            "documents",
            Method::GET,
            format!("/api/v1/datasets/{ds}/documents"),
            None,
        ),
        (
            "parse",
            Method::POST,
            format!("/api/v1/datasets/{ds}/chunks"),
            Some(json!({"document_ids": []})),
        ),
        (
            "chunks",
            Method::GET,
            format!("/api/v1/datasets/{ds}/documents/x/chunks"),
            None,
        ),
        (
            "retrieval",
            Method::POST,
            "/api/v1/retrieval".into(),
            Some(json!({"question": "q", "dataset_ids": [ds]})),
        ),
        (
            "sessions/ask",
            Method::POST,
            "/api/v1/sessions/ask".into(),
            Some(json!({"question": "q", "dataset_ids": [ds]})),
        ),
        (
            "related questions",
            Method::POST,
            "/api/v1/sessions/related_questions".into(),
            Some(json!({"question": "q"})),
        ),
        (
            "mind map",
            Method::POST,
            "/api/v1/sessions/mindmap".into(),
            Some(json!({"question": "q", "kb_ids": [ds]})),
        ),
        (
            "embed tokens",
            Method::GET,
            "/api/v1/embed_tokens".into(),
            None,
        ),
        (
            "embed token create",
            Method::POST,
            "/api/v1/embed_tokens".into(),
            Some(json!({})),
        ),
    ];
    for (family, method, path, payload) in families {
        let (status, _, text) = send(&env, method, &path, Some(&bearer), payload).await;
        assert_eq!(status, 200, "{family}: {text}");
        assert_eq!(
            body(&text),
            json!({"code": 109, "message": "Authentication error: API key is invalid!", "data": false}),
            "{family}"
        );
    }
    // The OpenAI endpoints answer OpenAI-style: HTTP 401.
    for path in [
        format!("/api/v1/chats_openai/{chat}/chat/completions"),
        format!("/api/v1/openai/{chat}/chat/completions"),
    ] {
        let (status, _, text) = send(
            &env,
            Method::POST,
            &path,
            Some(&bearer),
            Some(json!({"model": "m", "messages": [{"role": "user", "content": "q"}]})),
        )
        .await;
        assert_eq!(status, 401, "{path}: {text}");
    }
    // Nothing was published.
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_rate_limit_and_searchbots() {
    let env = TestEnv::start(EnvOptions::default()).await;
    use reqwest::Method;
    let (_, token) = new_token(&env, Some(20)).await;
    let bearer = format!("Bearer {token}");

    // The search page's routes, with the embed token (and not with the API key).
    let (_, _, text) = send(
        &env,
        Method::POST,
        "/api/v1/searchbots/ask",
        Some(&bearer),
        Some(json!({"question": QUESTION, "kb_ids": [env.dataset_id]})),
    )
    .await;
    let events = parse_sse(&text);
    let last = &events[events.len() - 2]["data"];
    assert!(
        last["answer"].as_str().unwrap().contains("five attempts"),
        "{text}"
    );
    assert_eq!(
        last["reference"]["chunks"][0]["document_name"],
        "job-queue.md"
    );
    let (_, _, text) = send(
        &env,
        Method::POST,
        "/api/v1/searchbots/related_questions",
        Some(&bearer),
        Some(json!({"question": "lanes"})),
    )
    .await;
    assert_eq!(body(&text)["data"][0], "lanes overview", "{text}");
    let (_, _, text) = send(
        &env,
        Method::POST,
        "/api/v1/searchbots/mindmap",
        Some(&bearer),
        Some(json!({"question": QUESTION, "kb_ids": [env.dataset_id]})),
    )
    .await;
    assert_eq!(body(&text)["data"]["id"], "root", "{text}");
    let (_, _, text) = send(
        &env,
        Method::POST,
        "/api/v1/searchbots/retrieval_test",
        Some(&bearer),
        Some(json!({"question": QUESTION, "kb_id": env.dataset_id, "size": 2})),
    )
    .await;
    let v = body(&text);
    assert_eq!(
        v["data"]["chunks"][0]["document_keyword"], "job-queue.md",
        "{text}"
    );
    assert!(v["data"]["chunks"].as_array().unwrap().len() <= 2);
    let (_, _, text) = send(
        &env,
        Method::POST,
        "/api/v1/searchbots/related_questions",
        Some(&env.auth()),
        Some(json!({"question": "lanes"})),
    )
    .await;
    assert_eq!(body(&text)["code"], 102, "{text}");

    // A token allowed 2 requests a minute: the third (at most the fifth, across a minute
    // boundary) is refused with 429 and Retry-After.
    let (_, slow) = new_token(&env, Some(2)).await;
    let slow = format!("Bearer {slow}");
    let info = format!("/api/v1/chatbots/{}/info", env.chat_id);
    let mut refused = None;
    for _ in 0..5 {
        let (status, headers, text) = send(&env, Method::GET, &info, Some(&slow), None).await;
        if status == 429 {
            refused = Some((headers, text));
            break;
        }
        assert_eq!(body(&text)["code"], 0, "{text}");
    }
    let (headers, text) = refused.expect("the rate limit never answered 429");
    let v = body(&text);
    assert_eq!(v["code"], 429, "{text}");
    assert!(
        v["message"].as_str().unwrap().contains("rate limit"),
        "{text}"
    );
    let retry: u32 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    // Other tokens are not affected.
    let (_, _, text) = send(&env, Method::GET, &info, Some(&bearer), None).await;
    assert_eq!(body(&text)["code"], 0, "{text}");

    // The count is shared by api replicas (Redis): 3 allowed through the first api, the 4th
    // through a second api is refused. (Retried once if a minute boundary fell in between.)
    let (second, second_stop) = env.spawn_api("rate").await;
    let status_at = |base: String, bearer: String| {
        let http = env.http.clone();
        let info = info.clone();
        async move {
            http.get(format!("{base}{info}"))
                .header("Authorization", bearer)
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }
    };
    let mut shared = false;
    for _ in 0..2 {
        let (_, three) = new_token(&env, Some(3)).await;
        let three = format!("Bearer {three}");
        let minute = ragq_common::now_ms() / 60_000;
        for _ in 0..3 {
            assert_eq!(status_at(env.url.clone(), three.clone()).await, 200);
        }
        let fourth = status_at(second.clone(), three.clone()).await;
        if ragq_common::now_ms() / 60_000 == minute {
            assert_eq!(
                fourth, 429,
                "the second api counts the first one's requests"
            );
            shared = true;
            break;
        }
    }
    assert!(shared, "two minute boundaries in a row");
    second_stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_ragflow_paths_beside_the_old_ones() {
    let env = TestEnv::start(EnvOptions::default()).await;
    use reqwest::Method;
    let session = env.create_session(&env.chat_id).await;
    // POST /api/v1/chat/completions with chat_id in the body.
    let (_, text) = env
        .post(
            "/api/v1/chat/completions",
            json!({"chat_id": env.chat_id, "question": QUESTION, "session_id": session, "stream": false}),
        )
        .await;
    let v = body(&text);
    assert!(
        v["data"]["answer"]
            .as_str()
            .unwrap()
            .contains("five attempts"),
        "{text}"
    );
    let (_, text) = env
        .post("/api/v1/chat/completions", json!({"question": QUESTION}))
        .await;
    assert_eq!(body(&text)["code"], 101, "{text}");
    // /api/v1/openai/{chat_id}/chat/completions.
    let (status, text) = env
        .post(
            &format!("/api/v1/openai/{}/chat/completions", env.chat_id),
            json!({"model": "m", "messages": [{"role": "user", "content": QUESTION}]}),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert!(
        body(&text)["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("five attempts")
    );
    // PATCH session and chat.
    let (_, _, text) = send(
        &env,
        Method::PATCH,
        &format!("/api/v1/chats/{}/sessions/{session}", env.chat_id),
        Some(&env.auth()),
        Some(json!({"name": "renamed"})),
    )
    .await;
    assert_eq!(body(&text), json!({"code": 0}), "{text}");
    let name: String = sqlx::query_scalar("SELECT name FROM sessions WHERE id = $1")
        .bind(&session)
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(name, "renamed");
    let (_, _, text) = send(
        &env,
        Method::PATCH,
        &format!("/api/v1/chats/{}", env.chat_id),
        Some(&env.auth()),
        Some(json!({"name": "demo2"})),
    )
    .await;
    assert_eq!(body(&text), json!({"code": 0}), "{text}");
    // Agents and memory: a RAGFlow envelope, not a 404 page.
    for path in [
        "/api/v1/agents",
        "/api/v1/agents/x/sessions",
        "/api/v1/memories",
    ] {
        let (status, headers, text) = send(&env, Method::GET, path, Some(&env.auth()), None).await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "application/json");
        let v = body(&text);
        assert_eq!(v["code"], 102);
        assert!(
            v["message"].as_str().unwrap().contains("not supported"),
            "{text}"
        );
    }
    env.stop().await;
}
