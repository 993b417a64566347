//! Live counters and the once-per-second progress line on stderr.
//!
//! Request tasks bump a few relaxed atomics ([`Counters`]); a reporter task
//! samples them every second and prints
//!
//! ```text
//! [  12.0s] started 1200  done 1150  ok 1150  fail 0  in-flight 50  95.3 req/s
//! ```
//!
//! `req/s` is the completion rate over the last interval, not the average
//! since the start. On a terminal the line is redrawn in place (`\r`);
//! otherwise (CI logs, redirected stderr) one line per second is printed.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Run-wide request counters, shared by all request tasks.
#[derive(Debug, Default)]
pub struct Counters {
    started: AtomicU64,
    completed: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
}

/// A consistent-enough copy of [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Requests sent so far.
    pub started: u64,
    /// Requests finished so far (ok + failed).
    pub completed: u64,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests.
    pub failed: u64,
}

impl Snapshot {
    /// Started but not yet finished.
    pub fn in_flight(&self) -> u64 {
        self.started.saturating_sub(self.completed)
    }
}

impl Counters {
    /// A request is about to be sent.
    pub fn start(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    /// A request finished.
    pub fn finish(&self, ok: bool) {
        if ok {
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.completed.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads all counters.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            completed: self.completed.load(Ordering::Relaxed),
            started: self.started.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// Formats one progress line (without line ending).
pub fn format_line(elapsed: Duration, s: Snapshot, rate: f64) -> String {
    format!(
        "[{:>7.1}s] started {}  done {}  ok {}  fail {}  in-flight {}  {:.1} req/s",
        elapsed.as_secs_f64(),
        s.started,
        s.completed,
        s.ok,
        s.failed,
        s.in_flight(),
        rate
    )
}

/// The running reporter; call [`Progress::stop`] when the phase ends.
pub struct Progress {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts printing (unless `quiet`, in which case nothing runs).
    pub fn spawn(counters: Arc<Counters>, start: Instant, quiet: bool) -> Progress {
        if quiet {
            return Progress {
                stop: None,
                task: None,
            };
        }
        let (tx, mut rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let tty = std::io::stderr().is_terminal();
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await; // the first tick is immediate
            let mut last = (Instant::now(), 0u64);
            let mut printed = false;
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    _ = ticker.tick() => {}
                }
                let now = Instant::now();
                let snap = counters.snapshot();
                let dt = now.duration_since(last.0).as_secs_f64();
                let rate = if dt > 0.0 {
                    snap.completed.saturating_sub(last.1) as f64 / dt
                } else {
                    0.0
                };
                last = (now, snap.completed);
                let line = format_line(now.duration_since(start), snap, rate);
                let mut err = std::io::stderr().lock();
                let _ = if tty {
                    write!(err, "\r{line}\x1b[K")
                } else {
                    writeln!(err, "{line}")
                };
                let _ = err.flush();
                printed = true;
            }
            if tty && printed {
                eprintln!();
            }
        });
        Progress {
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the reporter and waits until it has finished its line.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_line() {
        let c = Counters::default();
        c.start();
        c.start();
        c.start();
        c.finish(true);
        c.finish(false);
        let s = c.snapshot();
        assert_eq!(
            (s.started, s.completed, s.ok, s.failed, s.in_flight()),
            (3, 2, 1, 1, 1)
        );
        let line = format_line(Duration::from_millis(1500), s, 2.0);
        assert_eq!(
            line,
            "[    1.5s] started 3  done 2  ok 1  fail 1  in-flight 1  2.0 req/s"
        );
    }
}
