//! Aggregation of outcomes into HDR histograms, and the final report
//! (text table and JSON).
//!
//! # Why HDR histograms
//!
//! Latency distributions are long-tailed; averages hide exactly the
//! requests that matter. An [`hdrhistogram::Histogram`] records every value
//! with a bounded *relative* error (3 significant figures here: ±0.1%) over
//! a huge range (1 µs … 1 h) in fixed memory, and answers any percentile
//! afterwards. Values are recorded in microseconds and reported in
//! milliseconds.
//!
//! # Who records
//!
//! Request tasks do not touch the histograms. Each finished request is sent
//! as a small [`Outcome`] over a channel to a single collector task that owns
//! the [`Stats`] (see [`crate::run`]). That keeps locks off the hot path
//! *and* keeps memory flat: one histogram of this range costs ~190 KB, so
//! per-task histograms for 2000 users × 3 metrics would need over 1 GB.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

use crate::config::Config;
use crate::scenario::{Kind, Outcome, Reason};

/// Largest recordable value: one hour, in microseconds.
pub const MAX_MICROS: u64 = 3_600_000_000;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant histogram bounds are valid")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Everything recorded for one request [`Kind`].
#[derive(Clone, Debug)]
pub struct KindStats {
    /// Finished requests (ok + failed).
    pub requests: u64,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests.
    pub failed: u64,
    /// Failure counts by [`Reason::label`].
    pub failures: BTreeMap<String, u64>,
    /// The first failure detail seen per reason label.
    pub failure_examples: BTreeMap<String, String>,
    /// Time to first chunk of successful streams, µs.
    pub ttfc: Histogram<u64>,
    /// Gaps between answer events of successful streams, µs.
    pub gap: Histogram<u64>,
    /// Total time of successful requests, µs.
    pub total: Histogram<u64>,
    /// Sum of answer events over successful requests.
    pub answer_events_sum: u64,
    /// Sum of final answer lengths (chars) over successful requests.
    pub answer_chars_sum: u64,
}

impl KindStats {
    fn new() -> Self {
        KindStats {
            requests: 0,
            ok: 0,
            failed: 0,
            failures: BTreeMap::new(),
            failure_examples: BTreeMap::new(),
            ttfc: new_histogram(),
            gap: new_histogram(),
            total: new_histogram(),
            answer_events_sum: 0,
            answer_chars_sum: 0,
        }
    }

    fn record_failure(&mut self, reason: Reason, detail: &str, count: u64) {
        let label = reason.label();
        self.requests += count;
        self.failed += count;
        if !self.failure_examples.contains_key(&label) {
            self.failure_examples
                .insert(label.clone(), detail.to_owned());
        }
        *self.failures.entry(label).or_insert(0) += count;
    }

    fn merge(&mut self, other: &KindStats) {
        self.requests += other.requests;
        self.ok += other.ok;
        self.failed += other.failed;
        for (label, count) in &other.failures {
            *self.failures.entry(label.clone()).or_insert(0) += count;
        }
        for (label, example) in &other.failure_examples {
            self.failure_examples
                .entry(label.clone())
                .or_insert_with(|| example.clone());
        }
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.ttfc.add(&other.ttfc);
        let _ = self.gap.add(&other.gap);
        let _ = self.total.add(&other.total);
        self.answer_events_sum += other.answer_events_sum;
        self.answer_chars_sum += other.answer_chars_sum;
    }
}

/// Statistics of a run, per request kind.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    kinds: BTreeMap<Kind, KindStats>,
}

impl Stats {
    /// Empty statistics with a (zero) row for each of `kinds`, so the report
    /// lists every requested kind even if none of its requests ran.
    pub fn new(kinds: &[Kind]) -> Self {
        Stats {
            kinds: kinds.iter().map(|&k| (k, KindStats::new())).collect(),
        }
    }

    /// Records one finished request.
    pub fn record(&mut self, outcome: &Outcome) {
        let ks = self
            .kinds
            .entry(outcome.kind)
            .or_insert_with(KindStats::new);
        match &outcome.result {
            Ok(s) => {
                ks.requests += 1;
                ks.ok += 1;
                if let Some(ttfc) = s.ttfc {
                    ks.ttfc.saturating_record(micros(ttfc));
                }
                for &gap in &s.gaps {
                    ks.gap.saturating_record(micros(gap));
                }
                ks.total.saturating_record(micros(s.total));
                ks.answer_events_sum += u64::from(s.answer_events);
                ks.answer_chars_sum += s.answer_chars;
            }
            Err(f) => ks.record_failure(f.reason, &f.detail, 1),
        }
    }

    /// Counts `count` requests of `kind` that failed without being sent.
    pub fn record_not_issued(&mut self, kind: Kind, count: u64) {
        if count > 0 {
            let ks = self.kinds.entry(kind).or_insert_with(KindStats::new);
            ks.record_failure(
                Reason::NotIssued,
                "due but not started before --max-duration (max-in-flight reached)",
                count,
            );
        }
    }

    /// Adds another set of statistics into this one.
    pub fn merge(&mut self, other: &Stats) {
        for (kind, ks) in &other.kinds {
            self.kinds
                .entry(*kind)
                .or_insert_with(KindStats::new)
                .merge(ks);
        }
    }

    /// The statistics of one kind, if it was part of the run.
    pub fn kind(&self, kind: Kind) -> Option<&KindStats> {
        self.kinds.get(&kind)
    }

    /// All kinds in report order.
    pub fn iter(&self) -> impl Iterator<Item = (Kind, &KindStats)> {
        self.kinds.iter().map(|(k, v)| (*k, v))
    }

    /// Finished requests over all kinds.
    pub fn requests(&self) -> u64 {
        self.kinds.values().map(|k| k.requests).sum()
    }

    /// Failed requests over all kinds.
    pub fn failed(&self) -> u64 {
        self.kinds.values().map(|k| k.failed).sum()
    }
}

/// Warmup results (not part of the measurements).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WarmupSummary {
    /// Successful warmup requests.
    pub ok: u64,
    /// Failed warmup requests.
    pub failed: u64,
}

/// The result of [`crate::run`].
#[derive(Clone, Debug)]
pub struct Report {
    /// The configuration that ran.
    pub config: Config,
    /// Wall time of the measured phase (first request start → last finish).
    pub wall: Duration,
    /// Per-kind statistics of the measured phase.
    pub stats: Stats,
    /// Users whose session could be created.
    pub users_ok: usize,
    /// Session creation errors by message (each failed user skips all its
    /// requests).
    pub session_failures: BTreeMap<String, u64>,
    /// Warmup results, if a warmup ran.
    pub warmup: Option<WarmupSummary>,
    /// Whether any connect failed with EMFILE.
    pub too_many_open_files: bool,
}

/// Milliseconds, rounded to 3 decimals (= microsecond resolution).
fn ms(us: f64) -> f64 {
    us.round() / 1000.0
}

fn histogram_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    let q = |q: f64| ms(h.value_at_quantile(q) as f64);
    json!({
        "count": h.len(),
        "p50": q(0.5),
        "p90": q(0.9),
        "p99": q(0.99),
        "p999": q(0.999),
        "max": ms(h.max() as f64),
        "mean": ms(h.mean()),
    })
}

fn fmt_ms(h: &Histogram<u64>, quantile: Option<f64>) -> String {
    if h.is_empty() {
        return "-".into();
    }
    let us = match quantile {
        Some(q) => h.value_at_quantile(q),
        None => h.max(),
    };
    format!("{:.1}ms", us as f64 / 1000.0)
}

impl Report {
    /// Completed requests per second of one kind over the measured wall
    /// time (open-loop arrivals that were never sent do not count).
    pub fn rps(&self, ks: &KindStats) -> f64 {
        let wall = self.wall.as_secs_f64();
        let not_issued = ks
            .failures
            .get(&Reason::NotIssued.label())
            .copied()
            .unwrap_or(0);
        let completed = ks.requests.saturating_sub(not_issued);
        if wall > 0.0 {
            completed as f64 / wall
        } else {
            0.0
        }
    }

    /// Failed requests plus users that never ran (session errors).
    pub fn failures(&self) -> u64 {
        self.stats.failed() + self.session_failures.values().sum::<u64>()
    }

    /// Whether every user got a session and every request succeeded.
    pub fn all_succeeded(&self) -> bool {
        self.failures() == 0
    }

    /// The human-readable result: a table row per kind, then failure reasons.
    pub fn table(&self) -> String {
        const HEADER: [&str; 13] = [
            "type",
            "reqs",
            "ok",
            "fail",
            "req/s",
            "ttfc_p50",
            "ttfc_p90",
            "ttfc_p99",
            "ttfc_max",
            "gap_p50",
            "gap_p99",
            "total_p50",
            "total_p99",
        ];
        let mut rows: Vec<Vec<String>> = vec![HEADER.iter().map(|s| (*s).to_owned()).collect()];
        for (kind, ks) in self.stats.iter() {
            rows.push(vec![
                kind.name().to_owned(),
                ks.requests.to_string(),
                ks.ok.to_string(),
                ks.failed.to_string(),
                format!("{:.1}", self.rps(ks)),
                fmt_ms(&ks.ttfc, Some(0.5)),
                fmt_ms(&ks.ttfc, Some(0.9)),
                fmt_ms(&ks.ttfc, Some(0.99)),
                fmt_ms(&ks.ttfc, None),
                fmt_ms(&ks.gap, Some(0.5)),
                fmt_ms(&ks.gap, Some(0.99)),
                fmt_ms(&ks.total, Some(0.5)),
                fmt_ms(&ks.total, Some(0.99)),
            ]);
        }
        let mut widths = vec![0usize; HEADER.len()];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &rows {
            let mut line = String::new();
            for (cell, w) in row.iter().zip(&widths) {
                let _ = write!(line, "{cell:<w$}  ");
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "wall {:.2}s, {} requests ({} mode, test type {})",
            self.wall.as_secs_f64(),
            self.stats.requests(),
            self.config.mode(),
            self.config.test_type.name()
        );
        for (kind, ks) in self.stats.iter() {
            for (label, count) in &ks.failures {
                let example = ks
                    .failure_examples
                    .get(label)
                    .map(String::as_str)
                    .unwrap_or("");
                let _ = writeln!(out, "failures {kind}: {label} x{count} (e.g. {example})");
            }
        }
        if !self.session_failures.is_empty() {
            let failed: u64 = self.session_failures.values().sum();
            let _ = writeln!(
                out,
                "session creation failed for {failed} of {} users (their requests were not sent):",
                self.config.users
            );
            for (message, count) in &self.session_failures {
                let _ = writeln!(out, "  x{count}: {message}");
            }
        }
        if self.too_many_open_files {
            let _ = writeln!(out, "error: {}", crate::scenario::EMFILE_HINT);
        }
        out
    }

    /// The machine-readable result (see the crate docs for the shape).
    pub fn to_json(&self) -> Value {
        let mut types = Map::new();
        for (kind, ks) in self.stats.iter() {
            let mean = |sum: u64| {
                if ks.ok == 0 {
                    Value::Null
                } else {
                    json!(((sum as f64 / ks.ok as f64) * 1000.0).round() / 1000.0)
                }
            };
            types.insert(
                kind.name().to_owned(),
                json!({
                    "requests": ks.requests,
                    "ok": ks.ok,
                    "failed": ks.failed,
                    "rps": (self.rps(ks) * 1000.0).round() / 1000.0,
                    "failures": ks.failures,
                    "failure_examples": ks.failure_examples,
                    "ttfc_ms": histogram_json(&ks.ttfc),
                    "gap_ms": histogram_json(&ks.gap),
                    "total_ms": histogram_json(&ks.total),
                    "answer_events_mean": if kind.is_streaming() { mean(ks.answer_events_sum) } else { Value::Null },
                    "answer_chars_mean": mean(ks.answer_chars_sum),
                }),
            );
        }
        json!({
            "config": self.config.to_json(),
            "wall_s": (self.wall.as_secs_f64() * 1000.0).round() / 1000.0,
            "users_ok": self.users_ok,
            "session_failures": self.session_failures,
            "warmup": self.warmup.map(|w| json!({ "ok": w.ok, "failed": w.failed })),
            "too_many_open_files": self.too_many_open_files,
            "types": types,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Failure, Success};

    fn ok(kind: Kind, ttfc_ms: u64, total_ms: u64) -> Outcome {
        Outcome {
            kind,
            result: Ok(Success {
                ttfc: Some(Duration::from_millis(ttfc_ms)),
                gaps: vec![Duration::from_millis(10), Duration::from_millis(20)],
                total: Duration::from_millis(total_ms),
                answer_events: 3,
                answer_chars: 12,
            }),
        }
    }

    #[test]
    fn records_merges_and_reports() {
        let mut a = Stats::new(&[Kind::Stream]);
        a.record(&ok(Kind::Stream, 100, 300));
        let mut b = Stats::new(&[Kind::Stream]);
        b.record(&ok(Kind::Stream, 200, 400));
        b.record(&Outcome {
            kind: Kind::Stream,
            result: Err(Failure {
                reason: Reason::Http(503),
                detail: "busy".into(),
            }),
        });
        a.merge(&b);
        let ks = a.kind(Kind::Stream).expect("stream row");
        assert_eq!((ks.requests, ks.ok, ks.failed), (3, 2, 1));
        assert_eq!(ks.ttfc.len(), 2);
        assert_eq!(ks.gap.len(), 4);
        assert_eq!(ks.failures.get("http_503"), Some(&1));

        let report = Report {
            config: Config::new("http://x", "k", "c"),
            wall: Duration::from_secs(2),
            stats: a,
            users_ok: 1,
            session_failures: BTreeMap::new(),
            warmup: None,
            too_many_open_files: false,
        };
        let j = report.to_json();
        let stream = &j["types"]["stream"];
        assert_eq!(stream["requests"], 3);
        assert_eq!(stream["rps"], 1.5);
        assert_eq!(stream["failures"]["http_503"], 1);
        let p50 = stream["ttfc_ms"]["p50"].as_f64().expect("p50");
        assert!((99.0..=101.0).contains(&p50), "{p50}");
        assert_eq!(stream["answer_events_mean"], 3.0);
        let table = report.table();
        assert!(table.starts_with("type"), "{table}");
        assert!(table.contains("http_503 x1"), "{table}");
        assert!(!report.all_succeeded());
    }
}
