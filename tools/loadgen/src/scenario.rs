//! The requests a load run sends, and how each one is judged and timed.
//!
//! There are four request [`Kind`]s, two per API:
//!
//! | kind               | endpoint                                            | body                      |
//! |--------------------|-----------------------------------------------------|---------------------------|
//! | `stream`           | `POST /api/v1/chats/{chat}/completions`             | `{"question","stream":true,"session_id"}` |
//! | `nonstream`        | same                                                | `"stream":false`          |
//! | `openai-stream`    | `POST /api/v1/chats_openai/{chat}/chat/completions` | `{"model","messages","stream":true}` |
//! | `openai-nonstream` | same                                                | `"stream":false`          |
//!
//! [`execute`] sends one request and returns an [`Outcome`]: either a
//! [`Success`] with its timings or a [`Failure`] with a [`Reason`].
//!
//! # Timings
//!
//! All latencies are measured from an *origin*: the moment just before the
//! request is sent (closed loop) or the request's intended start time (open
//! loop, see [`crate::config::OpenLoop`]).
//!
//! * **TTFC** (time to first chunk): origin → first event carrying answer
//!   text. This is what a user perceives as "it started answering".
//! * **gap**: time between consecutive answer events of one stream —
//!   the smoothness of the token flow.
//! * **total**: origin → the stream's terminal event (or the end of the
//!   non-stream body).
//!
//! Event times are taken once per received HTTP chunk: events that arrive in
//! the same chunk share a timestamp (and produce a gap of 0).
//!
//! # Timeouts
//!
//! The HTTP client has no overall timeout (it would cut long streams); each
//! request is instead wrapped in `tokio::time::timeout(cfg.timeout)`,
//! covering connect, headers and the whole body.

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Value, json};

use crate::sse::SseParser;

/// One kind of request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// RAGFlow API, SSE stream of cumulative answers.
    Stream,
    /// RAGFlow API, single JSON response.
    NonStream,
    /// OpenAI-compatible API, SSE stream of `chat.completion.chunk`s.
    OpenAiStream,
    /// OpenAI-compatible API, single `chat.completion`.
    OpenAiNonStream,
}

impl Kind {
    /// Name used in the table and the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Stream => "stream",
            Kind::NonStream => "nonstream",
            Kind::OpenAiStream => "openai-stream",
            Kind::OpenAiNonStream => "openai-nonstream",
        }
    }

    /// RAGFlow requests belong to a chat session; OpenAI ones do not.
    pub fn needs_session(self) -> bool {
        matches!(self, Kind::Stream | Kind::NonStream)
    }

    /// Whether the response is an SSE stream (and TTFC/gaps exist).
    pub fn is_streaming(self) -> bool {
        matches!(self, Kind::Stream | Kind::OpenAiStream)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a request failed. [`Reason::label`] is the key in reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The HTTP status was not 200.
    Http(u16),
    /// TCP connect failed (refused, unreachable, ...).
    Connect,
    /// Connect failed with EMFILE/ENFILE: raise `ulimit -n`.
    TooManyOpenFiles,
    /// The request did not finish within `--timeout`.
    Timeout,
    /// A stream event reported an error (`code != 0`, or an `"error"` key).
    ErrorEvent,
    /// A non-stream response reported an error (`code != 0` / `"error"`).
    ApiError,
    /// The stream ended (or broke) before its terminal event.
    IncompleteStream,
    /// A body or event was not the expected JSON.
    BadJson,
    /// Everything else looked fine, but no answer text arrived.
    EmptyAnswer,
    /// Any other client-side error while sending the request.
    Request,
    /// Open loop: the request was due but never started because the run hit
    /// `--max-duration` while `--max-in-flight` requests were outstanding.
    NotIssued,
}

impl Reason {
    /// Stable, machine-friendly name, e.g. `http_503`, `timeout`.
    pub fn label(self) -> String {
        match self {
            Reason::Http(status) => format!("http_{status}"),
            other => other.static_label().to_owned(),
        }
    }

    fn static_label(self) -> &'static str {
        match self {
            Reason::Http(_) => "http",
            Reason::Connect => "connect_error",
            Reason::TooManyOpenFiles => "too_many_open_files",
            Reason::Timeout => "timeout",
            Reason::ErrorEvent => "error_event",
            Reason::ApiError => "api_error",
            Reason::IncompleteStream => "incomplete_stream",
            Reason::BadJson => "bad_json",
            Reason::EmptyAnswer => "empty_answer",
            Reason::Request => "request_error",
            Reason::NotIssued => "not_issued",
        }
    }
}

/// A failed request: the category plus a human-readable detail (the first
/// detail per reason is shown in the report).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Category.
    pub reason: Reason,
    /// Error message, truncated.
    pub detail: String,
}

impl Failure {
    fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Failure {
            reason,
            detail: detail.into(),
        }
    }
}

/// Timings and size of a successful request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Success {
    /// Origin → first answer text; `None` for non-stream requests.
    pub ttfc: Option<Duration>,
    /// Gaps between consecutive answer events (streams only).
    pub gaps: Vec<Duration>,
    /// Origin → terminal event / end of body.
    pub total: Duration,
    /// Number of events carrying answer text (1 for non-stream).
    pub answer_events: u32,
    /// Length of the final answer in characters.
    pub answer_chars: u64,
}

/// The result of one request.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// What was sent.
    pub kind: Kind,
    /// How it went.
    pub result: Result<Success, Failure>,
}

impl Outcome {
    /// Whether the request succeeded.
    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }
}

/// Where and how to send requests: the shared HTTP client plus the
/// pre-built endpoint URLs. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Target {
    /// One client (one connection pool) per source address; a single one when the OS
    /// chooses the source.
    clients: Vec<reqwest::Client>,
    api_key: String,
    sessions_url: String,
    completions_url: String,
    openai_url: String,
    timeout: Duration,
}

/// How long to wait for the rest of a body after its terminal event before
/// giving up on reusing the connection.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

impl Target {
    /// Builds the HTTP clients: one connection pool for all tasks (one per
    /// address of `source_addrs`, each binding its connections to that local
    /// address), unlimited idle connections per host (every concurrent user
    /// keeps its keep-alive connection), `TCP_NODELAY` (small SSE writes
    /// must not be delayed by Nagle), no proxy from the environment.
    pub fn new(
        base_url: &str,
        api_key: &str,
        chat_id: &str,
        timeout: Duration,
        source_addrs: &[IpAddr],
    ) -> anyhow::Result<Self> {
        // reqwest is built with rustls but no provider: ring, as everywhere in ragq.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let build = |local: Option<IpAddr>| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(usize::MAX)
                .tcp_nodelay(true)
                .no_proxy()
                .connect_timeout(timeout)
                .local_address(local)
                .build()
        };
        let clients = if source_addrs.is_empty() {
            vec![build(None)?]
        } else {
            source_addrs
                .iter()
                .map(|a| build(Some(*a)))
                .collect::<Result<_, _>>()?
        };
        let base = base_url.trim_end_matches('/');
        Ok(Target {
            clients,
            api_key: api_key.to_owned(),
            sessions_url: format!("{base}/api/v1/chats/{chat_id}/sessions"),
            completions_url: format!("{base}/api/v1/chats/{chat_id}/completions"),
            openai_url: format!("{base}/api/v1/chats_openai/{chat_id}/chat/completions"),
            timeout,
        })
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The client of user (or arrival) `n`: source addresses are used round-robin.
    fn client(&self, n: usize) -> &reqwest::Client {
        &self.clients[n % self.clients.len()]
    }
}

/// Creates a RAGFlow chat session and returns its id.
///
/// The error is a message fit for the report: the API's `message` when it
/// answered `code != 0`, else a description of the HTTP/JSON problem.
/// `user` picks the source address (see [`Target::new`]).
pub async fn create_session(target: &Target, user: usize) -> Result<String, String> {
    let attempt = async {
        let resp = target
            .client(user)
            .post(&target.sessions_url)
            .bearer_auth(&target.api_key)
            .json(&json!({ "name": "loadgen" }))
            .send()
            .await
            .map_err(|e| {
                format!(
                    "session request failed: {}",
                    classify(&e, Phase::Send).detail
                )
            })?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("session response failed: {}", error_chain(&e)))?;
        if status != reqwest::StatusCode::OK {
            return Err(format!("session: HTTP {status}: {}", snippet(&body)));
        }
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("session: bad JSON ({e}): {}", snippet(&body)))?;
        let code = v.get("code").and_then(Value::as_i64).unwrap_or(0);
        if code != 0 {
            return Err(format!("session: code {code}: {}", message_of(&v)));
        }
        match v.pointer("/data/id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => Ok(id.to_owned()),
            _ => Err(format!(
                "session: response has no data.id: {}",
                snippet(&body)
            )),
        }
    };
    match tokio::time::timeout(target.timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("session: no response within {:?}", target.timeout)),
    }
}

/// Sends one request of `kind` and judges the response.
///
/// `session` is required for RAGFlow kinds (and ignored for OpenAI ones).
/// `origin` is the instant latencies are measured from; `None` means "now,
/// just before sending". `user` (the user, or the arrival's number) picks
/// the source address.
pub async fn execute(
    target: &Target,
    user: usize,
    kind: Kind,
    question: &str,
    session: Option<&str>,
    origin: Option<Instant>,
) -> Outcome {
    let started = Instant::now();
    let origin = origin.unwrap_or(started);
    let result = match tokio::time::timeout(
        target.timeout,
        attempt(target, user, kind, question, session, origin),
    )
    .await
    {
        Ok(Ok((success, leftover))) => {
            if let Some(resp) = leftover {
                drain(resp).await;
            }
            Ok(success)
        }
        Ok(Err(failure)) => Err(failure),
        Err(_) => Err(Failure::new(
            Reason::Timeout,
            format!("no complete response within {:?}", target.timeout),
        )),
    };
    Outcome { kind, result }
}

/// A successful result plus, for streams that ended at their terminal
/// event, the response whose remaining body should be drained.
type Attempt = Result<(Success, Option<reqwest::Response>), Failure>;

async fn attempt(
    target: &Target,
    user: usize,
    kind: Kind,
    question: &str,
    session: Option<&str>,
    origin: Instant,
) -> Attempt {
    let (url, body) = match kind {
        Kind::Stream | Kind::NonStream => (
            &target.completions_url,
            json!({
                "question": question,
                "stream": kind == Kind::Stream,
                "session_id": session.unwrap_or_default(),
            }),
        ),
        Kind::OpenAiStream | Kind::OpenAiNonStream => (
            &target.openai_url,
            json!({
                "model": "ragq",
                "messages": [{ "role": "user", "content": question }],
                "stream": kind == Kind::OpenAiStream,
            }),
        ),
    };
    let resp = target
        .client(user)
        .post(url)
        .bearer_auth(&target.api_key)
        .json(&body)
        .send()
        .await
        .map_err(|e| classify(&e, Phase::Send))?;
    let status = resp.status();
    if status != reqwest::StatusCode::OK {
        // The body usually explains the status; reading it is bounded by the
        // surrounding timeout.
        let detail = match resp.bytes().await {
            Ok(body) => format!("HTTP {status}: {}", snippet(&body)),
            Err(_) => format!("HTTP {status}"),
        };
        return Err(Failure::new(Reason::Http(status.as_u16()), detail));
    }
    match kind {
        Kind::Stream => read_stream(resp, Protocol::RagFlow, origin).await,
        Kind::OpenAiStream => read_stream(resp, Protocol::OpenAi, origin).await,
        Kind::NonStream | Kind::OpenAiNonStream => {
            let body = resp.bytes().await.map_err(|e| classify(&e, Phase::Body))?;
            let total = origin.elapsed();
            let answer = if kind == Kind::NonStream {
                ragflow_answer(&body)?
            } else {
                openai_answer(&body)?
            };
            if answer.is_empty() {
                return Err(Failure::new(
                    Reason::EmptyAnswer,
                    "response has an empty answer",
                ));
            }
            let success = Success {
                ttfc: None,
                gaps: Vec::new(),
                total,
                answer_events: 1,
                answer_chars: answer.chars().count() as u64,
            };
            Ok((success, None))
        }
    }
}

/// Reads the rest of a body so its connection can go back to the pool.
async fn drain(mut resp: reqwest::Response) {
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Ok(Some(_)) = resp.chunk().await {}
    })
    .await;
}

// ---------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    RagFlow,
    OpenAi,
}

/// Everything learned from the events of one stream so far.
struct StreamState {
    protocol: Protocol,
    first: Option<Instant>,
    last: Option<Instant>,
    gaps: Vec<Duration>,
    answer_events: u32,
    /// RagFlow: the latest cumulative answer (moved, not copied).
    answer: String,
    /// OpenAI: characters of all deltas so far.
    chars: u64,
    /// OpenAI: a chunk with a `finish_reason` was seen.
    finished: bool,
    /// When the terminal event arrived.
    done: Option<Instant>,
    failure: Option<Failure>,
}

impl StreamState {
    fn new(protocol: Protocol) -> Self {
        StreamState {
            protocol,
            first: None,
            last: None,
            gaps: Vec::new(),
            answer_events: 0,
            answer: String::new(),
            chars: 0,
            finished: false,
            done: None,
            failure: None,
        }
    }

    fn stopped(&self) -> bool {
        self.done.is_some() || self.failure.is_some()
    }

    fn on_event(&mut self, data: &[u8], now: Instant) {
        if self.stopped() {
            return; // anything after the terminal event or an error is ignored
        }
        match self.protocol {
            Protocol::RagFlow => self.on_ragflow(data, now),
            Protocol::OpenAi => self.on_openai(data, now),
        }
    }

    fn on_answer_text(&mut self, now: Instant) {
        self.answer_events += 1;
        match self.last {
            None => self.first = Some(now),
            Some(last) => self.gaps.push(now.saturating_duration_since(last)),
        }
        self.last = Some(now);
    }

    fn on_ragflow(&mut self, data: &[u8], now: Instant) {
        let event: RagFlowEnvelope = match serde_json::from_slice(data) {
            Ok(event) => event,
            Err(e) => {
                return self.fail(
                    Reason::BadJson,
                    format!("bad event JSON ({e}): {}", snippet(data)),
                );
            }
        };
        if event.code != 0 {
            let message = event.message.as_ref().map(value_text).unwrap_or_default();
            return self.fail(
                Reason::ErrorEvent,
                format!("code {}: {message}", event.code),
            );
        }
        match event.data {
            Some(RagFlowData::Bool(true)) => self.done = Some(now),
            Some(RagFlowData::Answer(Some(answer))) if !answer.is_empty() => {
                self.on_answer_text(now);
                self.answer = answer;
            }
            _ => {}
        }
    }

    fn on_openai(&mut self, data: &[u8], now: Instant) {
        if data.trim_ascii() == b"[DONE]" {
            if self.finished {
                self.done = Some(now);
            } else {
                self.fail(
                    Reason::IncompleteStream,
                    "[DONE] before a chunk with finish_reason",
                );
            }
            return;
        }
        let chunk: OpenAiChunk = match serde_json::from_slice(data) {
            Ok(chunk) => chunk,
            Err(e) => {
                return self.fail(
                    Reason::BadJson,
                    format!("bad chunk JSON ({e}): {}", snippet(data)),
                );
            }
        };
        if let Some(error) = chunk.error {
            return self.fail(Reason::ErrorEvent, value_text(&error));
        }
        let Some(choice) = chunk.choices.into_iter().next() else {
            return;
        };
        if let Some(content) = choice.delta.and_then(|d| d.content)
            && !content.is_empty()
        {
            // RAGFlow's OpenAI route reports a failure as a content chunk, not an error object.
            if content.starts_with("**ERROR**") {
                return self.fail(Reason::ErrorEvent, content);
            }
            self.on_answer_text(now);
            self.chars += content.chars().count() as u64;
        }
        if choice.finish_reason.is_some() {
            self.finished = true;
        }
    }

    fn fail(&mut self, reason: Reason, detail: impl Into<String>) {
        self.failure = Some(Failure::new(reason, truncate(detail.into())));
    }

    fn into_result(self, origin: Instant) -> Result<Success, Failure> {
        if let Some(failure) = self.failure {
            return Err(failure);
        }
        let Some(done) = self.done else {
            return Err(Failure::new(
                Reason::IncompleteStream,
                "stream ended without its terminal event",
            ));
        };
        let Some(first) = self.first else {
            return Err(Failure::new(
                Reason::EmptyAnswer,
                "stream carried no answer text",
            ));
        };
        let answer_chars = match self.protocol {
            Protocol::RagFlow => self.answer.chars().count() as u64,
            Protocol::OpenAi => self.chars,
        };
        Ok(Success {
            ttfc: Some(first.saturating_duration_since(origin)),
            gaps: self.gaps,
            total: done.saturating_duration_since(origin),
            answer_events: self.answer_events,
            answer_chars,
        })
    }
}

async fn read_stream(mut resp: reqwest::Response, protocol: Protocol, origin: Instant) -> Attempt {
    let mut parser = SseParser::new();
    let mut state = StreamState::new(protocol);
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => return Err(classify(&e, Phase::Body)),
        };
        let now = Instant::now();
        parser
            .feed(&chunk, &mut |ev| state.on_event(ev.data, now))
            .map_err(|e| Failure::new(Reason::BadJson, e.to_string()))?;
        if state.stopped() {
            let leftover = state.failure.is_none().then_some(resp);
            return state.into_result(origin).map(|s| (s, leftover));
        }
    }
    let now = Instant::now();
    parser
        .finish(&mut |ev| state.on_event(ev.data, now))
        .map_err(|e| Failure::new(Reason::BadJson, e.to_string()))?;
    state.into_result(origin).map(|s| (s, None))
}

// ---------------------------------------------------------------------------
// Response documents
// ---------------------------------------------------------------------------

/// `{"code":0,"message":"...","data":...}` — both a RAGFlow stream event and
/// a non-stream response.
#[derive(Deserialize)]
struct RagFlowEnvelope {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: Option<Value>,
    #[serde(default)]
    data: Option<RagFlowData>,
}

/// RAGFlow's `data`: `true` for the terminal event, an object with an
/// `answer` for partial events. Hand-written so that everything except
/// `answer` (notably the large `reference` object) is skipped without
/// building a `serde_json::Value`.
enum RagFlowData {
    Bool(bool),
    Answer(Option<String>),
    Other,
}

impl<'de> Deserialize<'de> for RagFlowData {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RagFlowDataVisitor)
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum DataField {
    Answer,
    #[serde(other)]
    Other,
}

struct RagFlowDataVisitor;

impl<'de> Visitor<'de> for RagFlowDataVisitor {
    type Value = RagFlowData;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a boolean or an object")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RagFlowData, E> {
        Ok(RagFlowData::Bool(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RagFlowData, A::Error> {
        let mut answer = None;
        while let Some(field) = map.next_key::<DataField>()? {
            match field {
                DataField::Answer => answer = map.next_value::<Option<String>>()?,
                DataField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(RagFlowData::Answer(answer))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RagFlowData, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(RagFlowData::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<RagFlowData, E> {
        Ok(RagFlowData::Other)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<RagFlowData, E> {
        Ok(RagFlowData::Other)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<RagFlowData, E> {
        Ok(RagFlowData::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RagFlowData, E> {
        Ok(RagFlowData::Other)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<RagFlowData, E> {
        Ok(RagFlowData::Other)
    }
}

/// A `chat.completion.chunk` (only the fields we judge).
#[derive(Deserialize)]
struct OpenAiChunk {
    #[serde(default)]
    choices: Vec<OpenAiChunkChoice>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct OpenAiChunkChoice {
    #[serde(default)]
    delta: Option<OpenAiMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

/// A non-stream `chat.completion`.
#[derive(Deserialize)]
struct OpenAiCompletion {
    #[serde(default)]
    choices: Vec<OpenAiCompletionChoice>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct OpenAiCompletionChoice {
    #[serde(default)]
    message: Option<OpenAiMessage>,
}

#[derive(Deserialize)]
struct OpenAiMessage {
    #[serde(default)]
    content: Option<String>,
}

fn ragflow_answer(body: &[u8]) -> Result<String, Failure> {
    let doc: RagFlowEnvelope = serde_json::from_slice(body).map_err(|e| {
        Failure::new(
            Reason::BadJson,
            format!("bad JSON ({e}): {}", snippet(body)),
        )
    })?;
    if doc.code != 0 {
        let message = doc.message.as_ref().map(value_text).unwrap_or_default();
        return Err(Failure::new(
            Reason::ApiError,
            truncate(format!("code {}: {message}", doc.code)),
        ));
    }
    match doc.data {
        Some(RagFlowData::Answer(answer)) => Ok(answer.unwrap_or_default()),
        _ => Ok(String::new()),
    }
}

fn openai_answer(body: &[u8]) -> Result<String, Failure> {
    let doc: OpenAiCompletion = serde_json::from_slice(body).map_err(|e| {
        Failure::new(
            Reason::BadJson,
            format!("bad JSON ({e}): {}", snippet(body)),
        )
    })?;
    if let Some(error) = doc.error {
        return Err(Failure::new(Reason::ApiError, truncate(value_text(&error))));
    }
    Ok(doc
        .choices
        .into_iter()
        .next()
        .and_then(|c| c.message)
        .and_then(|m| m.content)
        .unwrap_or_default())
}

// ---------------------------------------------------------------------------
// Errors and helpers
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Send,
    Body,
}

static EMFILE_WARNED: AtomicBool = AtomicBool::new(false);

/// Whether any connect so far failed with EMFILE/ENFILE.
pub fn too_many_open_files_seen() -> bool {
    EMFILE_WARNED.load(Ordering::Relaxed)
}

/// The hint printed when sockets run out.
pub const EMFILE_HINT: &str = "connect failed with \"Too many open files\" (EMFILE): the process \
     ran out of file descriptors. Raise the limit in the shell before running, e.g. \
     `ulimit -n 65536`, or lower --users / --max-in-flight.";

fn classify(err: &reqwest::Error, phase: Phase) -> Failure {
    let detail = truncate(error_chain(err));
    if is_too_many_open_files(err) {
        if !EMFILE_WARNED.swap(true, Ordering::Relaxed) {
            eprintln!("ragq-loadgen: error: {EMFILE_HINT}");
        }
        return Failure::new(Reason::TooManyOpenFiles, detail);
    }
    let reason = if err.is_timeout() {
        Reason::Timeout
    } else if err.is_connect() {
        Reason::Connect
    } else if phase == Phase::Body {
        Reason::IncompleteStream
    } else {
        Reason::Request
    };
    Failure::new(reason, detail)
}

fn is_too_many_open_files(err: &(dyn std::error::Error + 'static)) -> bool {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(EMFILE | ENFILE))
        {
            return true;
        }
        if e.to_string().contains("Too many open files") {
            return true;
        }
        current = e.source();
    }
    false
}

/// `outer: cause: root cause` — reqwest's own message alone ("error sending
/// request") hides the interesting part.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        current = e.source();
    }
    text
}

const SNIPPET_CHARS: usize = 200;

fn truncate(mut text: String) -> String {
    if let Some((cut, _)) = text.char_indices().nth(SNIPPET_CHARS) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn snippet(bytes: &[u8]) -> String {
    truncate(String::from_utf8_lossy(bytes).into_owned())
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(map) => match map.get("message") {
            Some(Value::String(s)) => s.clone(),
            _ => v.to_string(),
        },
        other => other.to_string(),
    }
}

fn message_of(v: &Value) -> String {
    v.get("message")
        .map(value_text)
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(protocol: Protocol, events: &[&str]) -> Result<Success, Failure> {
        let origin = Instant::now();
        let mut state = StreamState::new(protocol);
        for data in events {
            state.on_event(data.as_bytes(), Instant::now());
        }
        state.into_result(origin)
    }

    #[test]
    fn ragflow_stream_success() {
        let s = feed(
            Protocol::RagFlow,
            &[
                r#"{"code":0,"data":{"answer":"","reference":{}}}"#,
                r#"{"code":0,"data":{"answer":"Hé","reference":{"chunks":[1,2]},"id":"x"}}"#,
                r#"{"code":0,"message":"","data":{"answer":"Héllo","reference":{}}}"#,
                r#"{"code": 0, "data": true}"#,
            ],
        )
        .expect("success");
        assert_eq!(s.answer_events, 2);
        assert_eq!(s.answer_chars, 5);
        assert_eq!(s.gaps.len(), 1);
        assert!(s.ttfc.is_some());
    }

    #[test]
    fn ragflow_error_event() {
        let f = feed(
            Protocol::RagFlow,
            &[
                r#"{"code":0,"data":{"answer":"a"}}"#,
                r#"{"code":500,"message":"boom","data":{"answer":"**ERROR**: boom","reference":[]}}"#,
                r#"{"code":0,"data":true}"#,
            ],
        )
        .expect_err("failure");
        assert_eq!(f.reason, Reason::ErrorEvent);
        assert!(f.detail.contains("boom"));
    }

    #[test]
    fn ragflow_incomplete_empty_and_bad_json() {
        let f = feed(Protocol::RagFlow, &[r#"{"code":0,"data":{"answer":"a"}}"#])
            .expect_err("incomplete");
        assert_eq!(f.reason, Reason::IncompleteStream);
        let f = feed(Protocol::RagFlow, &[r#"{"code":0,"data":true}"#]).expect_err("empty");
        assert_eq!(f.reason, Reason::EmptyAnswer);
        let f = feed(Protocol::RagFlow, &["{not json"]).expect_err("bad");
        assert_eq!(f.reason, Reason::BadJson);
    }

    #[test]
    fn openai_stream_rules() {
        let role = r#"{"choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}"#;
        let text = r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#;
        let stop = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
        let s = feed(Protocol::OpenAi, &[role, text, text, stop, "[DONE]"]).expect("success");
        assert_eq!((s.answer_events, s.answer_chars), (2, 4));

        let f = feed(Protocol::OpenAi, &[text, "[DONE]"]).expect_err("no finish");
        assert_eq!(f.reason, Reason::IncompleteStream);
        let f = feed(Protocol::OpenAi, &[text, stop]).expect_err("no done");
        assert_eq!(f.reason, Reason::IncompleteStream);
        let f = feed(Protocol::OpenAi, &[text, r#"{"error":{"message":"x"}}"#]).expect_err("error");
        assert_eq!(f.reason, Reason::ErrorEvent);
        let error_chunk = r#"{"choices":[{"delta":{"content":"**ERROR**: upstream failed"},"finish_reason":null,"index":0}]}"#;
        let f = feed(Protocol::OpenAi, &[error_chunk]).expect_err("error chunk");
        assert_eq!(f.reason, Reason::ErrorEvent);
    }

    #[test]
    fn non_stream_documents() {
        assert_eq!(
            ragflow_answer(br#"{"code":0,"data":{"answer":"ok","reference":{}}}"#).ok(),
            Some("ok".to_owned())
        );
        assert_eq!(
            ragflow_answer(br#"{"code":102,"message":"nope","data":false}"#).map_err(|f| f.reason),
            Err(Reason::ApiError)
        );
        assert_eq!(
            openai_answer(br#"{"choices":[{"message":{"role":"assistant","content":"yes"}}]}"#)
                .ok(),
            Some("yes".to_owned())
        );
        assert_eq!(
            openai_answer(b"<html>").map_err(|f| f.reason),
            Err(Reason::BadJson)
        );
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        let long = "é".repeat(300);
        let t = truncate(long);
        assert_eq!(t.chars().count(), SNIPPET_CHARS + 1);
    }
}
