//! Command-line interface: flags, environment fallbacks and their mapping to
//! a [`Config`].
//!
//! The environment variable names match `.ragq/run.env` as written by
//! `scripts/up.sh`, so a smoke run is just:
//!
//! ```text
//! set -a; . .ragq/run.env; set +a
//! ragq-loadgen --users 50 --requests 4 --require-success
//! ```
//!
//! Usage errors (unknown flag, bad value, missing `--url`) exit with code 2,
//! as clap does.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use clap::builder::RangedU64ValueParser;

use crate::config::{Arrivals, Config, DEFAULT_QUESTION, OpenLoop, TestType};

/// Load generator for ragq's chat-completion APIs (RAGFlow- and
/// OpenAI-compatible, streaming and not).
#[derive(Debug, Parser)]
#[command(
    name = "ragq-loadgen",
    version,
    after_help = "Closed loop (default): --users tasks each send --requests requests back to back.\n\
                  Open loop: --rate RPS --duration SECS sends requests at a fixed arrival rate \
                  (evenly spaced, or --arrivals poisson); latencies count from each request's \
                  intended start (coordinated-omission safe).\n\
                  Exit codes: 0 run completed (even with failures), 1 run could not complete or \
                  --require-success saw a failure, 2 bad arguments."
)]
pub struct Cli {
    /// Base URL of ragq, e.g. http://127.0.0.1:9380
    #[arg(long, env = "RAGQ_API_URL", value_name = "URL")]
    pub url: String,

    /// API key, sent as `Authorization: Bearer <KEY>`
    #[arg(long, env = "RAGQ_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub api_key: String,

    /// Chat (assistant) id
    #[arg(long, env = "RAGQ_CHAT_ID", value_name = "ID")]
    pub chat_id: String,

    /// Concurrent users (closed loop); number of sessions to spread requests over (open loop)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub users: usize,

    /// Sequential requests per user (closed loop)
    #[arg(long, value_name = "R", default_value_t = 1, conflicts_with = "rate",
          value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub requests: usize,

    /// Closed loop: start the users spread evenly over this many seconds (0: all at once)
    #[arg(long, value_name = "SECS", default_value_t = 0.0, conflicts_with = "rate", value_parser = non_negative_secs)]
    pub ramp: f64,

    /// Open connections from these local addresses, round-robin per user (comma-separated,
    /// e.g. 127.0.0.2,127.0.0.3): each address has its own ephemeral port range
    #[arg(long, value_name = "ADDRS", value_delimiter = ',')]
    pub source_addrs: Vec<IpAddr>,

    /// Open loop: fixed arrival rate in requests per second (needs --duration)
    #[arg(long, value_name = "RPS", requires = "duration", value_parser = positive_secs)]
    pub rate: Option<f64>,

    /// Open loop: how long requests arrive, in seconds (needs --rate)
    #[arg(long, value_name = "SECS", requires = "rate", value_parser = positive_secs)]
    pub duration: Option<f64>,

    /// Open loop: evenly spaced arrivals, or a Poisson process of the same mean rate
    #[arg(long, value_enum, value_name = "KIND", default_value_t = Arrivals::Uniform, requires = "rate")]
    pub arrivals: Arrivals,

    /// Open loop: seed of the Poisson arrivals (same seed, same schedule)
    #[arg(long, value_name = "N", default_value_t = 1, requires = "rate")]
    pub seed: u64,

    /// Open loop: at most this many requests in flight; later arrivals wait
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_in_flight: usize,

    /// Which requests to send
    #[arg(long, value_enum, default_value_t = TestType::Stream)]
    pub test_type: TestType,

    /// Question to ask; repeat the flag for several, users cycle through them
    #[arg(long = "question", value_name = "TEXT", default_value = DEFAULT_QUESTION)]
    pub questions: Vec<String>,

    /// Per-request timeout in seconds (connect + whole body)
    #[arg(long, value_name = "SECS", default_value_t = 60.0, value_parser = positive_secs)]
    pub timeout: f64,

    /// Bound for the measured phase in seconds: no new requests after it
    #[arg(long, value_name = "SECS", default_value_t = 600.0, value_parser = positive_secs)]
    pub max_duration: f64,

    /// Requests to send before measuring (results discarded)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub warmup: usize,

    /// Write the results as JSON to this file
    #[arg(long, value_name = "PATH")]
    pub json_out: Option<PathBuf>,

    /// No progress line on stderr
    #[arg(long)]
    pub quiet: bool,

    /// Exit with code 1 if any request (or session creation) failed
    #[arg(long)]
    pub require_success: bool,
}

/// Positive, finite number of seconds (or requests per second) that fits a
/// `Duration`.
fn positive_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("{s:?} must be a positive number"));
    }
    Duration::try_from_secs_f64(v).map_err(|_| format!("{s:?} is out of range"))?;
    Ok(v)
}

/// Zero or a positive, finite number of seconds that fits a `Duration`.
fn non_negative_secs(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(0.0) => Ok(0.0),
        _ => positive_secs(s),
    }
}

impl Cli {
    /// The run configuration; the error is a usage message.
    pub fn config(&self) -> Result<Config, String> {
        let mut cfg = Config::new(self.url.trim(), self.api_key.trim(), self.chat_id.trim());
        cfg.users = self.users;
        cfg.requests = self.requests;
        cfg.ramp = Duration::from_secs_f64(self.ramp);
        cfg.source_addrs = self.source_addrs.clone();
        cfg.max_in_flight = self.max_in_flight;
        cfg.arrivals = self.arrivals;
        cfg.seed = self.seed;
        cfg.test_type = self.test_type;
        cfg.questions = self.questions.clone();
        cfg.timeout = Duration::from_secs_f64(self.timeout);
        cfg.max_duration = Duration::from_secs_f64(self.max_duration);
        cfg.warmup = self.warmup;
        cfg.quiet = self.quiet;
        cfg.open_loop = match (self.rate, self.duration) {
            (Some(rate), Some(duration)) => Some(OpenLoop {
                rate,
                duration: Duration::from_secs_f64(duration),
            }),
            _ => None,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let mut argv = vec![
            "ragq-loadgen",
            "--url",
            "http://h:1/",
            "--api-key",
            "k",
            "--chat-id",
            "c",
        ];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
    }

    #[test]
    fn command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let cfg = parse(&[]).expect("parse").config().expect("config");
        assert_eq!(cfg.url, "http://h:1");
        assert_eq!((cfg.users, cfg.requests), (1, 1));
        assert_eq!(cfg.test_type, TestType::Stream);
        assert_eq!(cfg.questions, vec![DEFAULT_QUESTION.to_owned()]);
        assert_eq!(cfg.timeout, Duration::from_secs(60));
        assert!(cfg.open_loop.is_none());
        assert_eq!(cfg.ramp, Duration::ZERO);
        assert!(cfg.source_addrs.is_empty());
    }

    #[test]
    fn ramp_and_source_addresses() {
        let cfg = parse(&[
            "--users",
            "20000",
            "--ramp",
            "30",
            "--source-addrs",
            "127.0.0.2,127.0.0.3",
            "--source-addrs",
            "::1",
        ])
        .expect("parse")
        .config()
        .expect("config");
        assert_eq!(cfg.ramp, Duration::from_secs(30));
        let addrs: Vec<String> = cfg.source_addrs.iter().map(ToString::to_string).collect();
        assert_eq!(addrs, ["127.0.0.2", "127.0.0.3", "::1"]);
        assert_eq!(cfg.to_json()["ramp_s"], 30.0);
        assert_eq!(cfg.to_json()["source_addrs"][1], "127.0.0.3");
    }

    #[test]
    fn open_loop_and_repeated_questions() {
        let cli = parse(&[
            "--rate",
            "20",
            "--duration",
            "1.5",
            "--question",
            "a",
            "--question",
            "b",
        ])
        .expect("parse");
        let cfg = cli.config().expect("config");
        assert_eq!(
            cfg.open_loop,
            Some(OpenLoop {
                rate: 20.0,
                duration: Duration::from_millis(1500)
            })
        );
        assert_eq!(cfg.questions, vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(cfg.arrivals, Arrivals::Uniform);
        let poisson = parse(&[
            "--rate",
            "20",
            "--duration",
            "1",
            "--arrivals",
            "poisson",
            "--seed",
            "9",
        ])
        .expect("parse")
        .config()
        .expect("config");
        assert_eq!((poisson.arrivals, poisson.seed), (Arrivals::Poisson, 9));
        assert_eq!(poisson.to_json()["arrivals"], "poisson");
        assert_eq!(poisson.to_json()["seed"], 9);
    }

    #[test]
    fn usage_errors_exit_2() {
        for bad in [
            &["--rate", "10"][..],
            &["--users", "0"],
            &["--rate", "1", "--duration", "1", "--requests", "3"],
            &["--test-type", "sideways"],
            &["--timeout", "-1"],
            &["--arrivals", "poisson"],
            &["--rate", "1", "--duration", "1", "--arrivals", "sometimes"],
            &["--rate", "1", "--duration", "1", "--ramp", "5"],
            &["--ramp", "-1"],
            &["--source-addrs", "127.0.0.300"],
        ] {
            let err = parse(bad).expect_err("must fail");
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
        let both = parse(&["--test-type", "both"]).expect("parse");
        assert_eq!(both.test_type, TestType::Both);
        let https = Cli::try_parse_from([
            "x",
            "--url",
            "https://h",
            "--api-key",
            "k",
            "--chat-id",
            "c",
        ])
        .expect("parse");
        assert!(https.config().is_err());
    }
}
