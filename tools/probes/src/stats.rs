//! Latency recording and the short tables every probe prints.
//!
//! Latencies are recorded in **microseconds** into an HDR histogram (3 significant digits, so a
//! percentile is exact to 0.1 %), from 1 µs up to 10 minutes; anything longer is clamped rather
//! than lost. A probe records into one [`Latency`] per task and merges them at the end, so no
//! lock sits on the measured path.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Upper bound of a recorded latency: 10 minutes, in µs.
const MAX_US: u64 = 600_000_000;

/// A latency histogram in microseconds.
#[derive(Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        Latency {
            // The bounds are constants that hdrhistogram accepts; this cannot fail.
            hist: Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds"),
        }
    }

    /// Records one latency in µs (0 is counted as 1 µs, above 10 minutes as 10 minutes).
    pub fn record_us(&mut self, us: u64) {
        self.hist.saturating_record(us.clamp(1, MAX_US));
    }

    pub fn record(&mut self, d: Duration) {
        self.record_us(u64::try_from(d.as_micros()).unwrap_or(MAX_US));
    }

    pub fn merge(&mut self, other: &Latency) {
        // Both histograms have the same bounds, so adding never fails.
        let _ = self.hist.add(&other.hist);
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    pub fn summary(&self) -> Summary {
        let q = |p: f64| {
            if self.hist.is_empty() {
                0
            } else {
                self.hist.value_at_quantile(p)
            }
        };
        Summary {
            count: self.hist.len(),
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            max: if self.hist.is_empty() {
                0
            } else {
                self.hist.max()
            },
            mean: if self.hist.is_empty() {
                0.0
            } else {
                self.hist.mean()
            },
        }
    }
}

/// Percentiles of a [`Latency`], in µs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: f64,
}

impl Summary {
    /// `{"count", "p50_us", "p90_us", "p99_us", "max_us", "mean_us"}`.
    pub fn to_json(self) -> Value {
        json!({
            "count": self.count,
            "p50_us": self.p50,
            "p90_us": self.p90,
            "p99_us": self.p99,
            "max_us": self.max,
            "mean_us": (self.mean * 10.0).round() / 10.0,
        })
    }
}

/// Formats µs as milliseconds with two decimals.
pub fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// A plain text table: a header row and right-aligned columns.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut width: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(cols) {
                width[i] = width[i].max(cell.len());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, w) in width.iter().enumerate() {
                let cell = cells.get(i).map_or("", String::as_str);
                if i == 0 {
                    s.push_str(&format!("{cell:<w$}"));
                } else {
                    s.push_str(&format!("  {cell:>w$}"));
                }
            }
            s.push('\n');
            s
        };
        let mut out = line(&self.header);
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// "PASS" or "FAIL" against a target.
pub fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut l = Latency::new();
        for us in 1..=1000 {
            l.record_us(us);
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        assert!((499..=501).contains(&s.p50), "p50 {}", s.p50);
        assert!((989..=991).contains(&s.p99), "p99 {}", s.p99);
        assert_eq!(s.max, 1000);
        let mut other = Latency::new();
        other.record(Duration::from_millis(50));
        l.merge(&other);
        assert_eq!(l.count(), 1001);
        assert!(l.summary().max >= 49_990);
    }

    #[test]
    fn empty_summary_is_zero_and_table_aligns() {
        assert_eq!(Latency::new().summary(), Summary::default());
        let mut t = Table::new(&["name", "p99"]);
        t.row(vec!["a".into(), ms(1500)]);
        assert_eq!(t.render(), "name   p99\na     1.50\n");
    }
}
