//! End-to-end tests: `ragq_loadgen::run` against an in-process axum server
//! that imitates ragq's session, RAGFlow and OpenAI endpoints.
//!
//! The chat id selects the server's behaviour:
//!
//! * `ok`         — well-formed streams, deliberately split into odd-sized
//!   chunks with keep-alive comments and mixed `data:` / `data: ` spelling;
//! * `crlf`       — same, with `\r\n` line endings;
//! * `err`        — the RAGFlow stream contains an error event;
//! * `cut`        — the RAGFlow stream ends without its terminal event;
//! * `hang`       — one event, then silence;
//! * `http500`    — completions answer HTTP 500;
//! * `badsession` — session creation answers `code: 102`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Json, Path};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use ragq_loadgen::{Config, Kind, OpenLoop, Report, TestType, run};

const KEY: &str = "test-key";

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {KEY}"))
}

async fn session(
    Path(chat): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    assert_eq!(body["name"], "loadgen");
    if chat == "badsession" {
        return Json(json!({"code": 102, "message": "You don't own the assistant."}))
            .into_response();
    }
    Json(json!({"code": 0, "data": {"id": "sess-1", "name": "loadgen", "chat_id": chat}}))
        .into_response()
}

/// Sends `body` as an SSE response in `piece`-byte chunks, pausing
/// between chunks so events arrive at distinct times.
fn sse(body: String, piece: usize, hang_after: Option<usize>) -> Response {
    let bytes = body.into_bytes();
    let chunks: Vec<Bytes> = bytes.chunks(piece).map(Bytes::copy_from_slice).collect();
    let stream = futures::stream::unfold(
        (chunks.into_iter(), 0usize),
        move |(mut it, n)| async move {
            if hang_after == Some(n) {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            let chunk = it.next()?;
            tokio::time::sleep(Duration::from_millis(2)).await;
            Some((Ok::<_, Infallible>(chunk), (it, n + 1)))
        },
    );
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

fn ragflow_events(chat: &str) -> String {
    let nl = if chat == "crlf" { "\r\n" } else { "\n" };
    let mut body = format!(": keep-alive{nl}{nl}");
    let partial = |answer: &str| json!({"code": 0, "message": "", "data": {"answer": answer, "reference": {"chunks": []}, "id": "m1", "session_id": "sess-1"}});
    body += &format!("data:{}{nl}{nl}", partial(""));
    for (i, answer) in ["The", "The delivery", "The delivery limit is 5."]
        .iter()
        .enumerate()
    {
        let space = if i % 2 == 0 { " " } else { "" };
        body += &format!("data:{space}{}{nl}{nl}", partial(answer));
        body += &format!(": ping{nl}");
    }
    if chat == "err" {
        body += &format!(
            "data:{}{nl}{nl}",
            json!({"code": 500, "message": "LLM exploded", "data": {"answer": "**ERROR**: LLM exploded", "reference": []}})
        );
    }
    if chat != "cut" {
        body += &format!("data: {{\"code\": 0, \"data\": true}}{nl}{nl}");
    }
    body
}

async fn completions(
    Path(chat): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if chat == "http500" {
        return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
    }
    assert_eq!(body["session_id"], "sess-1");
    assert!(body["question"].as_str().is_some_and(|q| !q.is_empty()));
    if body["stream"] == json!(true) {
        let hang = (chat == "hang").then_some(3);
        sse(ragflow_events(&chat), 37, hang)
    } else {
        Json(json!({"code": 0, "data": {"answer": "The delivery limit is 5.", "reference": {}}}))
            .into_response()
    }
}

async fn openai(Path(chat): Path<String>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    assert_eq!(body["messages"][0]["role"], "user");
    let nl = if chat == "crlf" { "\r\n" } else { "\n" };
    if body["stream"] == json!(true) {
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "c1", "object": "chat.completion.chunk", "model": "ragq",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let mut out = String::new();
        out += &format!(
            "data: {}{nl}{nl}",
            chunk(json!({"role": "assistant"}), Value::Null)
        );
        for word in ["The ", "limit ", "is 5."] {
            out += &format!(
                "data: {}{nl}{nl}",
                chunk(json!({"content": word}), Value::Null)
            );
        }
        out += &format!("data: {}{nl}{nl}", chunk(json!({}), json!("stop")));
        out += &format!("data: [DONE]{nl}{nl}");
        sse(out, 23, None)
    } else {
        Json(json!({"object": "chat.completion", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": "The limit is 5."}, "finish_reason": "stop"}]}))
        .into_response()
    }
}

async fn start_server() -> SocketAddr {
    let app = Router::new()
        .route("/api/v1/chats/{chat}/sessions", post(session))
        .route("/api/v1/chats/{chat}/completions", post(completions))
        .route("/api/v1/chats_openai/{chat}/chat/completions", post(openai));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    addr
}

async fn config(chat: &str, test_type: TestType) -> Config {
    let addr = start_server().await;
    let mut cfg = Config::new(format!("http://{addr}"), KEY, chat);
    cfg.users = 5;
    cfg.requests = 2;
    cfg.test_type = test_type;
    cfg.quiet = true;
    cfg.timeout = Duration::from_secs(10);
    cfg.questions = vec!["q1".into(), "q2".into()];
    cfg
}

async fn run_ok(cfg: Config) -> Report {
    tokio::time::timeout(Duration::from_secs(30), run(cfg))
        .await
        .expect("run finished in time")
        .expect("run")
}

fn assert_all_ok(report: &Report, kind: Kind, n: u64) {
    let ks = report.stats.kind(kind).expect("kind present");
    assert_eq!(
        (ks.requests, ks.ok, ks.failed),
        (n, n, 0),
        "{kind}: {:?}\n{}",
        ks.failure_examples,
        report.table()
    );
    assert_eq!(ks.total.len(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ragflow_stream_all_succeed() {
    for chat in ["ok", "crlf"] {
        let report = run_ok(config(chat, TestType::Stream).await).await;
        assert_all_ok(&report, Kind::Stream, 10);
        let ks = report.stats.kind(Kind::Stream).expect("stream");
        assert_eq!(ks.ttfc.len(), 10, "{chat}");
        assert!(!ks.gap.is_empty(), "{chat}");
        assert_eq!(
            ks.answer_events_sum, 30,
            "{chat}: 3 non-empty answers per stream"
        );
        assert_eq!(
            ks.answer_chars_sum,
            10 * "The delivery limit is 5.".len() as u64
        );
        assert!(report.all_succeeded());
        assert_eq!(report.users_ok, 5);

        let json = report.to_json();
        let stream = &json["types"]["stream"];
        assert_eq!(stream["ok"], 10);
        assert_eq!(stream["ttfc_ms"]["count"], 10);
        assert!(stream["ttfc_ms"]["p50"].as_f64().is_some_and(|v| v > 0.0));
        assert_eq!(stream["answer_events_mean"], 3.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_stream_and_nonstream_succeed() {
    for chat in ["ok", "crlf"] {
        let report = run_ok(config(chat, TestType::OpenAiStream).await).await;
        assert_all_ok(&report, Kind::OpenAiStream, 10);
        let ks = report
            .stats
            .kind(Kind::OpenAiStream)
            .expect("openai-stream");
        assert_eq!(ks.ttfc.len(), 10);
        assert_eq!(ks.answer_chars_sum, 10 * "The limit is 5.".len() as u64);
    }
    let report = run_ok(config("ok", TestType::OpenAiNonStream).await).await;
    assert_all_ok(&report, Kind::OpenAiNonStream, 10);
    assert_eq!(
        report
            .stats
            .kind(Kind::OpenAiNonStream)
            .map(|k| k.ttfc.len()),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_alternates_and_reports_separately() {
    let mut cfg = config("ok", TestType::Both).await;
    cfg.warmup = 3;
    let report = run_ok(cfg).await;
    assert_all_ok(&report, Kind::Stream, 5);
    assert_all_ok(&report, Kind::NonStream, 5);
    assert_eq!(report.warmup.map(|w| (w.ok, w.failed)), Some((3, 0)));
    let table = report.table();
    assert!(
        table.contains("\nstream ") && table.contains("\nnonstream "),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_event_is_a_failure() {
    let report = run_ok(config("err", TestType::Stream).await).await;
    let ks = report.stats.kind(Kind::Stream).expect("stream");
    assert_eq!((ks.requests, ks.ok, ks.failed), (10, 0, 10));
    assert_eq!(ks.failures.get("error_event"), Some(&10));
    assert!(ks.failure_examples["error_event"].contains("LLM exploded"));
    assert_eq!(
        ks.ttfc.len(),
        0,
        "failures are not in the latency histograms"
    );
    assert!(!report.all_succeeded());
    assert_eq!(
        report.to_json()["types"]["stream"]["failures"]["error_event"],
        10
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_failure_reasons() {
    let report = run_ok(config("cut", TestType::Stream).await).await;
    assert_eq!(
        report
            .stats
            .kind(Kind::Stream)
            .and_then(|k| k.failures.get("incomplete_stream").copied()),
        Some(10)
    );

    let report = run_ok(config("http500", TestType::NonStream).await).await;
    assert_eq!(
        report
            .stats
            .kind(Kind::NonStream)
            .and_then(|k| k.failures.get("http_500").copied()),
        Some(10)
    );

    let mut cfg = config("hang", TestType::Stream).await;
    cfg.users = 2;
    cfg.requests = 1;
    cfg.timeout = Duration::from_millis(300);
    let report = run_ok(cfg).await;
    assert_eq!(
        report
            .stats
            .kind(Kind::Stream)
            .and_then(|k| k.failures.get("timeout").copied()),
        Some(2)
    );

    let mut cfg = config("ok", TestType::Stream).await;
    cfg.api_key = "wrong".into();
    cfg.test_type = TestType::OpenAiNonStream;
    let report = run_ok(cfg).await;
    assert_eq!(
        report
            .stats
            .kind(Kind::OpenAiNonStream)
            .and_then(|k| k.failures.get("http_401").copied()),
        Some(10)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_failure_fails_the_user() {
    let report = run_ok(config("badsession", TestType::Stream).await).await;
    assert_eq!(report.users_ok, 0);
    assert_eq!(report.stats.requests(), 0);
    let (message, count) = report.session_failures.iter().next().expect("one message");
    assert_eq!(*count, 5);
    assert!(
        message.contains("You don't own the assistant."),
        "{message}"
    );
    assert!(!report.all_succeeded());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_connect_error() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut cfg = Config::new(format!("http://127.0.0.1:{port}"), KEY, "ok");
    cfg.test_type = TestType::OpenAiStream;
    cfg.quiet = true;
    cfg.requests = 3;
    let report = run_ok(cfg).await;
    assert_eq!(
        report
            .stats
            .kind(Kind::OpenAiStream)
            .and_then(|k| k.failures.get("connect_error").copied()),
        Some(3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_at_fixed_rate() {
    let mut cfg = config("ok", TestType::Stream).await;
    cfg.users = 2;
    cfg.open_loop = Some(OpenLoop {
        rate: 40.0,
        duration: Duration::from_millis(250),
    });
    let report = run_ok(cfg).await;
    assert_all_ok(&report, Kind::Stream, 10);
    assert_eq!(
        report.stats.kind(Kind::Stream).map(|k| k.ttfc.len()),
        Some(10)
    );
    assert!(
        report.wall >= Duration::from_millis(225),
        "{:?}",
        report.wall
    );
    assert_eq!(report.to_json()["config"]["mode"], "open");
}

/// Where and when each OpenAI request arrived, as the server saw it.
type Arrivals = std::sync::Arc<std::sync::Mutex<Vec<(std::net::IpAddr, std::time::Instant)>>>;

/// The OpenAI route of [`start_server`], recording every request's peer address and arrival.
async fn start_recording_server(seen: Arrivals) -> SocketAddr {
    use axum::extract::ConnectInfo;
    let app = Router::new().route(
        "/api/v1/chats_openai/{chat}/chat/completions",
        post(
            move |ConnectInfo(peer): ConnectInfo<SocketAddr>,
                  path: Path<String>,
                  headers: HeaderMap,
                  body: Json<Value>| {
                let seen = seen.clone();
                async move {
                    if let Ok(mut s) = seen.lock() {
                        s.push((peer.ip(), std::time::Instant::now()));
                    }
                    openai(path, headers, body).await
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .expect("serve");
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_addresses_are_used_round_robin() {
    let seen = Arrivals::default();
    let addr = start_recording_server(seen.clone()).await;
    let mut cfg = Config::new(format!("http://{addr}"), KEY, "ok");
    cfg.test_type = TestType::OpenAiStream;
    cfg.quiet = true;
    cfg.users = 6;
    // Any 127.0.0.x is this machine's loopback on Linux: connections from 127.0.0.2 and
    // 127.0.0.3 reach a server listening on 127.0.0.1.
    cfg.source_addrs = vec!["127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap()];
    let report = run_ok(cfg).await;
    assert_all_ok(&report, Kind::OpenAiStream, 6);
    let mut peers: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(ip, _)| ip.to_string())
        .collect();
    peers.sort();
    assert_eq!(
        peers,
        [
            "127.0.0.2",
            "127.0.0.2",
            "127.0.0.2",
            "127.0.0.3",
            "127.0.0.3",
            "127.0.0.3"
        ]
    );
    assert_eq!(
        report.to_json()["config"]["source_addrs"],
        json!(["127.0.0.2", "127.0.0.3"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramp_spreads_the_users_start() {
    let seen = Arrivals::default();
    let addr = start_recording_server(seen.clone()).await;
    let mut cfg = Config::new(format!("http://{addr}"), KEY, "ok");
    cfg.test_type = TestType::OpenAiStream;
    cfg.quiet = true;
    cfg.users = 5;
    cfg.ramp = Duration::from_millis(500);
    let report = run_ok(cfg).await;
    assert_all_ok(&report, Kind::OpenAiStream, 5);
    let mut at: Vec<std::time::Instant> = seen.lock().unwrap().iter().map(|(_, t)| *t).collect();
    at.sort();
    // Users start 0, 100, 200, 300 and 400 ms into the phase: each arrives ~100 ms after the
    // one before (the timer may fire late, never early).
    for pair in at.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(60),
            "arrivals too close: {gap:?}"
        );
    }
    assert!(at[4] - at[0] >= Duration::from_millis(380), "{at:?}");
    assert_eq!(report.to_json()["config"]["ramp_s"], 0.5);
}
