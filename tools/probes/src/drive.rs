//! Drives a bus probe's publishers for one phase: either **saturated** (a fixed number of
//! publisher tasks, each sending whenever the in-flight semaphore has a permit — the subscriber
//! gives the permit back when the event arrives) or **paced** (a 1 ms ticker sending the events
//! due at `rate` per second, each in its own task). Shared by the Redis and NATS bus probes, so
//! that both measure with the same load shape.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// Sends event number `i` (the target channel or subject is `i % targets`).
pub trait EventSender: std::marker::Send + Sync + 'static {
    fn send(&self, i: usize) -> impl Future<Output = anyhow::Result<()>> + std::marker::Send;
}

/// Counters a phase reads after the drive.
#[derive(Clone, Default)]
pub struct Counts {
    pub published: Arc<AtomicU64>,
    pub errors: Arc<AtomicU64>,
}

/// Publisher tasks at most.
pub const PUBLISHERS: usize = 64;

/// Publishes until `window` has passed since `start`. `paced = None` saturates (bounded by
/// `sem`), `Some(rate)` paces at `rate` events/s.
#[allow(clippy::too_many_arguments)]
pub async fn drive<P: EventSender>(
    publisher: Arc<P>,
    sem: Arc<Semaphore>,
    counts: &Counts,
    targets: usize,
    inflight: usize,
    paced: Option<u64>,
    start: Instant,
    window: Duration,
) {
    let targets = targets.max(1);
    match paced {
        None => {
            let next = Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for _ in 0..PUBLISHERS.min(inflight) {
                let (sem, publisher, counts, next) =
                    (sem.clone(), publisher.clone(), counts.clone(), next.clone());
                tasks.push(tokio::spawn(async move {
                    while start.elapsed() < window {
                        match tokio::time::timeout(Duration::from_millis(100), sem.acquire()).await
                        {
                            Ok(Ok(p)) => p.forget(),
                            Ok(Err(_)) => break,
                            Err(_) => continue,
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed) % targets;
                        send_counted(&*publisher, &counts, &sem, i).await;
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        }
        Some(rate) => {
            let mut tasks = tokio::task::JoinSet::new();
            let mut sent = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            'paced: while start.elapsed() < window {
                tick.tick().await;
                let due = (rate as f64 * start.elapsed().as_secs_f64()) as u64;
                while sent < due {
                    // Bounded like the saturated phase: a bus that falls behind the rate shows
                    // as a lower events/s, not as an unbounded backlog.
                    let permit = loop {
                        if start.elapsed() >= window {
                            break 'paced;
                        }
                        match tokio::time::timeout(Duration::from_millis(100), sem.acquire()).await
                        {
                            Ok(Ok(p)) => break p,
                            Ok(Err(_)) => break 'paced,
                            Err(_) => continue,
                        }
                    };
                    permit.forget();
                    while tasks.len() >= inflight {
                        let _ = tasks.join_next().await;
                    }
                    let (publisher, counts, sem) = (publisher.clone(), counts.clone(), sem.clone());
                    let i = (sent % targets as u64) as usize;
                    tasks.spawn(async move { send_counted(&*publisher, &counts, &sem, i).await });
                    sent += 1;
                }
                while tasks.try_join_next().is_some() {}
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                while tasks.join_next().await.is_some() {}
            })
            .await;
        }
    }
}

/// Sends event `i` and counts it; a failed send gives its in-flight permit back (no event will
/// arrive to release it).
async fn send_counted<P: EventSender>(publisher: &P, counts: &Counts, sem: &Semaphore, i: usize) {
    match publisher.send(i).await {
        Ok(()) => {
            counts.published.fetch_add(1, Ordering::AcqRel);
        }
        Err(_) => {
            counts.errors.fetch_add(1, Ordering::Relaxed);
            sem.add_permits(1);
        }
    }
}
