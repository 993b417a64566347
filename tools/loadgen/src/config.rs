//! What a run should do: the validated, CLI-independent configuration.
//!
//! [`crate::cli::Cli`] turns command-line flags into a [`Config`]; tests
//! build one directly with [`Config::new`] and adjust the public fields.
//!
//! Two load models exist:
//!
//! * **Closed loop** (default): `users` tasks, each sending `requests`
//!   requests one after another. A new request starts only when the previous
//!   one finished, so a slow server automatically receives less load — good
//!   for "N concurrent users" questions, bad for latency-under-load questions.
//! * **Open loop** ([`OpenLoop`], `--rate` + `--duration`): requests arrive
//!   at a fixed rate no matter how fast the server answers. Latency is
//!   measured from each request's *intended* start time, so a server that
//!   stalls cannot hide the queueing it causes ("coordinated omission").
//!   Arrivals are evenly spaced ([`Arrivals::Uniform`], the default) or a Poisson process
//!   ([`Arrivals::Poisson`]: exponential gaps from a seeded generator), which is how independent
//!   users arrive and which, unlike a metronome, also tests the bursts.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::scenario::Kind;

/// The question asked when `--question` is not given.
pub const DEFAULT_QUESTION: &str = "What is the delivery limit of the job queue?";

/// Which requests to send (`--test-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TestType {
    /// RAGFlow API, `"stream": true` (SSE).
    #[value(name = "stream")]
    Stream,
    /// RAGFlow API, `"stream": false` (one JSON document).
    #[value(name = "nonstream")]
    NonStream,
    /// RAGFlow API, alternating stream and non-stream requests per user.
    #[value(name = "both")]
    Both,
    /// OpenAI-compatible API, streaming.
    #[value(name = "openai-stream")]
    OpenAiStream,
    /// OpenAI-compatible API, non-streaming.
    #[value(name = "openai-nonstream")]
    OpenAiNonStream,
}

impl TestType {
    /// The request kinds this test type sends, in report order.
    pub fn kinds(self) -> &'static [Kind] {
        match self {
            TestType::Stream => &[Kind::Stream],
            TestType::NonStream => &[Kind::NonStream],
            TestType::Both => &[Kind::Stream, Kind::NonStream],
            TestType::OpenAiStream => &[Kind::OpenAiStream],
            TestType::OpenAiNonStream => &[Kind::OpenAiNonStream],
        }
    }

    /// The kind of the `n`-th request (alternates for [`TestType::Both`]).
    pub fn kind_for(self, n: usize) -> Kind {
        let kinds = self.kinds();
        kinds[n % kinds.len()]
    }

    /// Whether a RAGFlow chat session must be created first.
    pub fn needs_session(self) -> bool {
        self.kinds().iter().any(|k| k.needs_session())
    }

    /// The CLI spelling.
    pub fn name(self) -> &'static str {
        match self {
            TestType::Stream => "stream",
            TestType::NonStream => "nonstream",
            TestType::Both => "both",
            TestType::OpenAiStream => "openai-stream",
            TestType::OpenAiNonStream => "openai-nonstream",
        }
    }
}

/// How open-loop arrivals are spaced (`--arrivals`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Arrivals {
    /// Every `1 / rate` seconds.
    #[default]
    #[value(name = "uniform")]
    Uniform,
    /// A Poisson process of the same mean rate: exponentially distributed gaps, drawn from a
    /// generator seeded with [`Config::seed`] (the same seed gives the same schedule).
    #[value(name = "poisson")]
    Poisson,
}

impl Arrivals {
    /// The CLI spelling.
    pub fn name(self) -> &'static str {
        match self {
            Arrivals::Uniform => "uniform",
            Arrivals::Poisson => "poisson",
        }
    }
}

/// Parameters of an open-loop run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpenLoop {
    /// Arrival rate in requests per second.
    pub rate: f64,
    /// How long requests keep arriving.
    pub duration: Duration,
}

/// A complete run configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Base URL of ragq, without a trailing slash, e.g. `http://127.0.0.1:9380`.
    pub url: String,
    /// Sent as `Authorization: Bearer <api_key>`.
    pub api_key: String,
    /// The chat (assistant) to talk to.
    pub chat_id: String,
    /// Closed loop: concurrent users. Open loop: number of sessions the
    /// requests are spread over (round-robin).
    pub users: usize,
    /// Closed loop: sequential requests per user.
    pub requests: usize,
    /// Closed loop: the users start spread evenly over this time (user `i` of `n` after
    /// `i × ramp / n`), so thousands of connections are not opened in one burst. Zero: all at
    /// once.
    pub ramp: Duration,
    /// Local addresses connections are opened from, one HTTP client per address, users
    /// round-robin over them (empty: the OS chooses). Each address has its own ephemeral port
    /// range (32768–60999 here), so several `127.0.0.x` addresses hold more connections to one
    /// server than one address can.
    pub source_addrs: Vec<IpAddr>,
    /// `Some` selects the open-loop model.
    pub open_loop: Option<OpenLoop>,
    /// Open loop: at most this many requests in flight; further arrivals
    /// wait (their latency still counts from the intended start).
    pub max_in_flight: usize,
    /// Open loop: how arrivals are spaced.
    pub arrivals: Arrivals,
    /// Open loop: seed of the Poisson arrivals.
    pub seed: u64,
    /// Which requests to send.
    pub test_type: TestType,
    /// Questions, cycled through by users / arrivals. Never empty.
    pub questions: Vec<String>,
    /// Bound for one request, from sending it to the end of its body.
    pub timeout: Duration,
    /// Bound for the measured phase: no new requests start after it.
    pub max_duration: Duration,
    /// Requests sent (and discarded) before measuring.
    pub warmup: usize,
    /// No progress line.
    pub quiet: bool,
}

impl Config {
    /// A closed-loop, single-user, single-request `stream` configuration
    /// with the CLI defaults.
    pub fn new(
        url: impl Into<String>,
        api_key: impl Into<String>,
        chat_id: impl Into<String>,
    ) -> Self {
        Config {
            url: url.into().trim_end_matches('/').to_owned(),
            api_key: api_key.into(),
            chat_id: chat_id.into(),
            users: 1,
            requests: 1,
            ramp: Duration::ZERO,
            source_addrs: Vec::new(),
            open_loop: None,
            max_in_flight: 10_000,
            arrivals: Arrivals::Uniform,
            seed: 1,
            test_type: TestType::Stream,
            questions: vec![DEFAULT_QUESTION.to_owned()],
            timeout: Duration::from_secs(60),
            max_duration: Duration::from_secs(600),
            warmup: 0,
            quiet: false,
        }
    }

    /// Checks the invariants the runner relies on.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.url.starts_with("http://")) {
            return Err(format!(
                "--url must be a plain http:// URL (this build has no TLS), got {:?}",
                self.url
            ));
        }
        if self.chat_id.is_empty() {
            return Err("--chat-id must not be empty".into());
        }
        if self.users == 0 || self.requests == 0 || self.max_in_flight == 0 {
            return Err("--users, --requests and --max-in-flight must be at least 1".into());
        }
        if self.questions.is_empty() || self.questions.iter().any(|q| q.is_empty()) {
            return Err("--question must not be empty".into());
        }
        if self.timeout.is_zero() || self.max_duration.is_zero() {
            return Err("--timeout and --max-duration must be positive".into());
        }
        if let Some(ol) = self.open_loop
            && (!(ol.rate.is_finite() && ol.rate > 0.0) || ol.duration.is_zero())
        {
            return Err("--rate and --duration must be positive".into());
        }
        if self.open_loop.is_some() && !self.ramp.is_zero() {
            return Err("--ramp applies to the closed loop only".into());
        }
        Ok(())
    }

    /// `"closed"` or `"open"`.
    pub fn mode(&self) -> &'static str {
        if self.open_loop.is_some() {
            "open"
        } else {
            "closed"
        }
    }

    /// The configuration as it appears in the JSON report (no API key).
    pub fn to_json(&self) -> Value {
        json!({
            "url": self.url,
            "chat_id": self.chat_id,
            "mode": self.mode(),
            "test_type": self.test_type.name(),
            "users": self.users,
            "requests": if self.open_loop.is_none() { json!(self.requests) } else { Value::Null },
            "ramp_s": self.ramp.as_secs_f64(),
            "source_addrs": self.source_addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "rate": self.open_loop.map(|o| o.rate),
            "duration_s": self.open_loop.map(|o| o.duration.as_secs_f64()),
            "max_in_flight": self.max_in_flight,
            "arrivals": self.open_loop.map(|_| self.arrivals.name()),
            "seed": if self.open_loop.is_some() && self.arrivals == Arrivals::Poisson { json!(self.seed) } else { Value::Null },
            "questions": self.questions,
            "timeout_s": self.timeout.as_secs_f64(),
            "max_duration_s": self.max_duration.as_secs_f64(),
            "warmup": self.warmup,
        })
    }
}
