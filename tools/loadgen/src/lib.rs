//! `ragq-loadgen`: drives ragq's chat-completion APIs under load and
//! measures what users feel — time to first chunk, smoothness of the token
//! stream, total answer time — plus throughput and failure reasons.
//!
//! The binary (`src/main.rs`) only parses flags and prints; everything else
//! is this library, so tests can run a complete load test in-process
//! against a fake server:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use ragq_loadgen::{Config, run};
//! let mut cfg = Config::new("http://127.0.0.1:9380", "api-key", "chat-id");
//! cfg.users = 5;
//! cfg.requests = 2;
//! let report = run(cfg).await?;
//! print!("{}", report.table());
//! # Ok(()) }
//! ```
//!
//! Modules, in reading order:
//!
//! * [`config`] — what to run ([`Config`], [`TestType`], closed vs open loop);
//! * [`cli`] — the flags that produce a [`Config`];
//! * [`scenario`] — one request of each kind, how it is timed and judged;
//! * [`sse`] — the incremental Server-Sent Events parser the streams use;
//! * [`runner`] — sessions, warmup, closed and open loop;
//! * [`stats`] — HDR histograms, the text table and the JSON report;
//! * [`progress`] — live counters and the per-second progress line.
//!
//! # JSON report
//!
//! ```text
//! {"config":{...},"wall_s":12.345,"users_ok":50,"session_failures":{},
//!  "warmup":null,"too_many_open_files":false,
//!  "types":{"stream":{"requests":200,"ok":200,"failed":0,"rps":16.2,
//!     "failures":{"timeout":0,...},"failure_examples":{...},
//!     "ttfc_ms":{"count","p50","p90","p99","p999","max","mean"},
//!     "gap_ms":{...},"total_ms":{...},          (null when no samples)
//!     "answer_events_mean":41.5,"answer_chars_mean":812.0}}}
//! ```

pub mod cli;
pub mod config;
pub mod progress;
pub mod runner;
pub mod scenario;
pub mod sse;
pub mod stats;

pub use config::{Arrivals, Config, OpenLoop, TestType};
pub use runner::run;
pub use scenario::{Kind, Reason};
pub use stats::{KindStats, Report, Stats};
