//! Orchestration of a run: sessions, warmup, then the measured phase in
//! either the closed-loop or the open-loop model.
//!
//! ```text
//! create sessions ──► warmup (discarded) ──► measured phase ──► Report
//!   (≤64 at once)      (min(users, N)        closed: `users` tasks × `requests`
//!                        workers)            open:   one task per arrival
//! ```
//!
//! Every measured request sends its [`Outcome`] over an unbounded channel to
//! one collector task, which owns the [`Stats`]; the phase is over when all
//! senders are gone and the collector returns.
//!
//! # Coordinated omission
//!
//! In the open loop the [`Schedule`] computes when each request *should*
//! start (`start + k / rate`, or the arrival times of a seeded Poisson
//! process) and hands that instant to [`execute`] as the latency origin. If
//! the server (or `--max-in-flight`) holds requests back, the due arrivals
//! pile up (they are sent back-to-back later) and the waiting time is part
//! of the measured latency — as it would be for real users arriving at that
//! rate. No further `record_correct` is applied, which would count the stall
//! twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::config::{Arrivals, Config, OpenLoop};
use crate::progress::{Counters, Progress};
use crate::scenario::{self, Outcome, Target, execute};
use crate::stats::{Report, Stats, WarmupSummary};

/// A user's session: `None` for the OpenAI API, which has no sessions.
type Session = Option<Arc<str>>;

/// How many sessions are created concurrently.
const SESSION_CONCURRENCY: usize = 64;

/// Runs the whole load test described by `cfg` and returns its report.
///
/// Fails only when the run cannot happen at all (invalid configuration, no
/// usable session in open-loop mode); individual request failures are part of
/// the report.
pub async fn run(cfg: Config) -> anyhow::Result<Report> {
    cfg.validate().map_err(anyhow::Error::msg)?;
    let target = Arc::new(Target::new(
        &cfg.url,
        &cfg.api_key,
        &cfg.chat_id,
        cfg.timeout,
        &cfg.source_addrs,
    )?);
    warn_if_open_files_limit_low(&cfg);

    // 1. Sessions (not timed).
    let per_user: Vec<Result<Session, String>> = if cfg.test_type.needs_session() {
        futures::stream::iter(0..cfg.users)
            .map(|user| {
                let target = Arc::clone(&target);
                async move {
                    scenario::create_session(&target, user)
                        .await
                        .map(|id| Some(Arc::from(id)))
                }
            })
            .buffered(SESSION_CONCURRENCY)
            .collect()
            .await
    } else {
        vec![Ok(None); cfg.users]
    };
    let mut session_failures = BTreeMap::new();
    for err in per_user.iter().filter_map(|r| r.as_ref().err()) {
        *session_failures.entry(err.clone()).or_insert(0u64) += 1;
    }
    let sessions: Vec<(usize, Session)> = per_user
        .into_iter()
        .enumerate()
        .filter_map(|(user, r)| r.ok().map(|s| (user, s)))
        .collect();
    if !session_failures.is_empty() && !cfg.quiet {
        eprintln!(
            "ragq-loadgen: session creation failed for {} of {} users",
            cfg.users - sessions.len(),
            cfg.users
        );
    }

    // 2. Warmup (discarded).
    let warmup = if cfg.warmup > 0 && !sessions.is_empty() {
        let summary = warmup(&target, &cfg, &sessions).await;
        if !cfg.quiet {
            eprintln!(
                "ragq-loadgen: warmup: {} requests, {} ok, {} failed",
                cfg.warmup, summary.ok, summary.failed
            );
        }
        Some(summary)
    } else {
        None
    };

    // 3. Measured phase.
    let cfg = Arc::new(cfg);
    let (stats, wall) = match cfg.open_loop {
        None => closed_loop(&target, &cfg, &sessions).await?,
        Some(ol) => {
            if sessions.is_empty() {
                let first = session_failures.keys().next().cloned().unwrap_or_default();
                anyhow::bail!("no session could be created, nothing to send: {first}");
            }
            open_loop(&target, &cfg, ol, &sessions).await?
        }
    };

    let users_ok = sessions.len();
    Ok(Report {
        config: Arc::unwrap_or_clone(cfg),
        wall,
        stats,
        users_ok,
        session_failures,
        warmup,
        too_many_open_files: scenario::too_many_open_files_seen(),
    })
}

/// Spawns the task that owns the statistics.
fn spawn_collector(
    cfg: &Config,
) -> (
    mpsc::UnboundedSender<Outcome>,
    tokio::task::JoinHandle<Stats>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Outcome>();
    let mut stats = Stats::new(cfg.test_type.kinds());
    let handle = tokio::spawn(async move {
        while let Some(outcome) = rx.recv().await {
            stats.record(&outcome);
        }
        stats
    });
    (tx, handle)
}

/// `users` tasks, each sending `requests` requests back to back.
async fn closed_loop(
    target: &Arc<Target>,
    cfg: &Arc<Config>,
    sessions: &[(usize, Session)],
) -> anyhow::Result<(Stats, Duration)> {
    let counters = Arc::new(Counters::default());
    let (tx, collector) = spawn_collector(cfg);
    let start = Instant::now();
    let progress = Progress::spawn(Arc::clone(&counters), start, cfg.quiet);
    let deadline = start + cfg.max_duration;

    let mut tasks = JoinSet::new();
    let users = cfg.users.max(1) as f64;
    for (user, session) in sessions.iter().cloned() {
        let (target, cfg, counters, tx) = (
            Arc::clone(target),
            Arc::clone(cfg),
            Arc::clone(&counters),
            tx.clone(),
        );
        // User `i` of `n` starts `i × ramp / n` into the phase.
        let begin = start + cfg.ramp.mul_f64(user as f64 / users);
        tasks.spawn(async move {
            tokio::time::sleep_until(begin.into()).await;
            for i in 0..cfg.requests {
                if Instant::now() >= deadline {
                    break;
                }
                // Offsetting by the user index mixes kinds and questions
                // across users at any moment, not only over time.
                let n = user + i;
                let kind = cfg.test_type.kind_for(n);
                let question = &cfg.questions[n % cfg.questions.len()];
                counters.start();
                let outcome =
                    execute(&target, user, kind, question, session.as_deref(), None).await;
                counters.finish(outcome.is_ok());
                let _ = tx.send(outcome);
            }
        });
    }
    drop(tx);
    while let Some(joined) = tasks.join_next().await {
        joined?;
    }
    let wall = start.elapsed();
    progress.stop().await;
    Ok((collector.await?, wall))
}

/// When open-loop arrivals are due, as offsets from the start of the phase.
#[derive(Clone, Debug)]
pub struct Schedule {
    arrivals: Arrivals,
    rate: f64,
    /// Arrivals handed out so far.
    k: u64,
    /// Poisson: the offset of the last arrival, in seconds.
    t: f64,
    /// Poisson: SplitMix64 state.
    state: u64,
}

impl Schedule {
    pub fn new(arrivals: Arrivals, rate: f64, seed: u64) -> Self {
        Schedule {
            arrivals,
            rate,
            k: 0,
            t: 0.0,
            state: seed,
        }
    }

    /// Uniform in [0, 1) (SplitMix64: small, fast, reproducible; not for secrets).
    fn next_f64(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The offset of the next arrival: `k / rate` for uniform arrivals (the first at 0);
    /// for Poisson ones the previous offset plus an exponential gap of mean `1 / rate`.
    pub fn next_offset(&mut self) -> Duration {
        let secs = match self.arrivals {
            Arrivals::Uniform => self.k as f64 / self.rate,
            Arrivals::Poisson => {
                let u = self.next_f64();
                self.t += -(1.0 - u).ln() / self.rate;
                self.t
            }
        };
        self.k += 1;
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    }
}

/// Requests at `ol.rate` spaced as `cfg.arrivals` says, each measured from its intended start.
async fn open_loop(
    target: &Arc<Target>,
    cfg: &Arc<Config>,
    ol: OpenLoop,
    sessions: &[(usize, Session)],
) -> anyhow::Result<(Stats, Duration)> {
    let counters = Arc::new(Counters::default());
    let (tx, collector) = spawn_collector(cfg);
    let window = ol.duration.min(cfg.max_duration);
    let start = Instant::now();
    let hard_deadline = start + cfg.max_duration;
    let progress = Progress::spawn(Arc::clone(&counters), start, cfg.quiet);
    let in_flight = Arc::new(Semaphore::new(
        cfg.max_in_flight.min(Semaphore::MAX_PERMITS),
    ));

    let mut schedule = Schedule::new(cfg.arrivals, ol.rate, cfg.seed);
    let mut next = schedule.next_offset();
    let mut tasks = JoinSet::new();
    let mut issued = 0usize;
    let mut cut_short = false;
    while next < window {
        let intended = start + next;
        // Arrivals already due (the loop fell behind) go out back-to-back.
        if Instant::now() < intended {
            tokio::time::sleep_until(intended.into()).await;
        }
        let permit = tokio::select! {
            permit = Arc::clone(&in_flight).acquire_owned() => permit?,
            _ = tokio::time::sleep_until(hard_deadline.into()) => {
                cut_short = true;
                break;
            }
        };
        if Instant::now() >= hard_deadline {
            cut_short = true;
            break;
        }
        // Reap finished tasks so the set only holds in-flight requests.
        while let Some(joined) = tasks.try_join_next() {
            joined?;
        }
        let kind = cfg.test_type.kind_for(issued);
        let question_index = issued % cfg.questions.len();
        let session = sessions[issued % sessions.len()].1.clone();
        let (target, cfg2, counters, tx) = (
            Arc::clone(target),
            Arc::clone(cfg),
            Arc::clone(&counters),
            tx.clone(),
        );
        counters.start();
        tasks.spawn(async move {
            let question = &cfg2.questions[question_index];
            let outcome = execute(
                &target,
                issued,
                kind,
                question,
                session.as_deref(),
                Some(intended),
            )
            .await;
            counters.finish(outcome.is_ok());
            let _ = tx.send(outcome);
            drop(permit);
        });
        issued += 1;
        next = schedule.next_offset();
    }
    drop(tx);
    while let Some(joined) = tasks.join_next().await {
        joined?;
    }
    let wall = start.elapsed();
    progress.stop().await;
    let mut stats = collector.await?;
    if cut_short {
        // The arrivals due before the window's end that never started.
        let mut missing: BTreeMap<_, u64> = BTreeMap::new();
        let mut n = issued;
        while next < window {
            *missing.entry(cfg.test_type.kind_for(n)).or_insert(0) += 1;
            n += 1;
            next = schedule.next_offset();
        }
        for (kind, count) in missing {
            stats.record_not_issued(kind, count);
        }
    }
    Ok((stats, wall))
}

/// Sends `cfg.warmup` requests with up to `users` workers; results are only
/// counted, not measured.
async fn warmup(
    target: &Arc<Target>,
    cfg: &Config,
    sessions: &[(usize, Session)],
) -> WarmupSummary {
    let next = Arc::new(AtomicUsize::new(0));
    let total = cfg.warmup;
    let questions: Arc<[String]> = cfg.questions.clone().into();
    let test_type = cfg.test_type;
    let mut tasks = JoinSet::new();
    for (_, session) in sessions.iter().take(total) {
        let session = session.clone();
        let (target, next, questions) = (
            Arc::clone(target),
            Arc::clone(&next),
            Arc::clone(&questions),
        );
        tasks.spawn(async move {
            let mut summary = WarmupSummary::default();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break summary;
                }
                let question = &questions[n % questions.len()];
                let outcome = execute(
                    &target,
                    n,
                    test_type.kind_for(n),
                    question,
                    session.as_deref(),
                    None,
                )
                .await;
                if outcome.is_ok() {
                    summary.ok += 1;
                } else {
                    summary.failed += 1;
                }
            }
        });
    }
    let mut summary = WarmupSummary::default();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(part) = joined {
            summary.ok += part.ok;
            summary.failed += part.failed;
        }
    }
    summary
}

/// The soft `RLIMIT_NOFILE`, read from `/proc/self/limits` (Linux; `None`
/// elsewhere or when unlimited).
pub fn open_files_soft_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Each concurrent request needs a socket; warn before connects start
/// failing with EMFILE.
fn warn_if_open_files_limit_low(cfg: &Config) {
    let Some(limit) = open_files_soft_limit() else {
        return;
    };
    let concurrency = match cfg.open_loop {
        None => cfg.users as u64,
        Some(ol) => {
            let by_rate = (ol.rate * cfg.timeout.as_secs_f64()).ceil();
            let by_rate = if by_rate.is_finite() {
                by_rate as u64
            } else {
                u64::MAX
            };
            by_rate.min(cfg.max_in_flight as u64)
        }
    };
    let needed = concurrency.saturating_add(SESSION_CONCURRENCY as u64 + 32);
    if needed > limit {
        eprintln!(
            "ragq-loadgen: warning: up to {concurrency} concurrent connections, but the open-files \
             limit is {limit}; connects may fail with EMFILE. Run `ulimit -n {}` first.",
            needed.max(65536)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(arrivals: Arrivals, rate: f64, seed: u64, n: usize) -> Vec<Duration> {
        let mut s = Schedule::new(arrivals, rate, seed);
        (0..n).map(|_| s.next_offset()).collect()
    }

    #[test]
    fn uniform_arrivals_are_evenly_spaced() {
        let o = offsets(Arrivals::Uniform, 40.0, 1, 11);
        assert_eq!(o[0], Duration::ZERO);
        assert_eq!(o[1], Duration::from_millis(25));
        assert_eq!(o[10], Duration::from_millis(250));
    }

    #[test]
    fn poisson_arrivals_are_seeded_and_exponential() {
        let rate = 200.0;
        let n = 20_000;
        let a = offsets(Arrivals::Poisson, rate, 7, n);
        assert_eq!(a, offsets(Arrivals::Poisson, rate, 7, n));
        assert_ne!(a, offsets(Arrivals::Poisson, rate, 8, n));
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
        let gaps: Vec<f64> = std::iter::once(a[0].as_secs_f64())
            .chain(a.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()))
            .collect();
        let mean = gaps.iter().sum::<f64>() / n as f64;
        assert!((mean * rate - 1.0).abs() < 0.03, "mean gap {mean}");
        // Exponential: the standard deviation equals the mean, and P(gap > mean) = 1/e.
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(
            (var.sqrt() / mean - 1.0).abs() < 0.05,
            "sd/mean {}",
            var.sqrt() / mean
        );
        let above = gaps.iter().filter(|g| **g > mean).count() as f64 / n as f64;
        assert!(
            (above - (-1.0f64).exp()).abs() < 0.02,
            "P(gap > mean) {above}"
        );
    }
}
