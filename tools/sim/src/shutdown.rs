//! Shutdown signal shared by every waiting request and stream.
//!
//! Simulated latencies can be long (a `stall` lasts up to `stall_max_s`), and axum's graceful
//! shutdown waits for in-flight responses. So every wait in the simulator goes through
//! [`Shutdown::sleep_until`], which returns early once [`crate::serve`]'s shutdown future has
//! resolved: waiting handlers answer 503 and open streams end with an error, letting the server
//! stop promptly.
//!
//! The signal is a `tokio::sync::watch` channel; its receivers are cheap to clone and its notifier
//! is sharded, so thousands of concurrent streams waiting on it do not contend.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

/// Longest simulated wait; larger offsets (say `ttft=18446744073709551615`) are clamped to it.
const MAX_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// `from + after`, with `after` clamped to a year so that absurd request values cannot overflow
/// the clock.
pub(crate) fn deadline(from: Instant, after: Duration) -> Instant {
    from.checked_add(after.min(MAX_WAIT)).unwrap_or(from)
}

/// A cloneable view of the server's shutdown state.
#[derive(Clone, Debug, Default)]
pub(crate) struct Shutdown {
    /// `None` for a router served by someone else ([`crate::router`]): never fires.
    rx: Option<watch::Receiver<bool>>,
}

impl Shutdown {
    /// Follows `rx`: shutdown has begun once it holds `true` (or its sender is gone).
    pub(crate) fn new(rx: watch::Receiver<bool>) -> Self {
        Self { rx: Some(rx) }
    }

    /// Sleeps until `deadline`. Returns `true` when the deadline was reached and `false` when
    /// shutdown began first (or had already begun).
    pub(crate) async fn sleep_until(&mut self, deadline: Instant) -> bool {
        let Some(rx) = self.rx.as_mut() else {
            if deadline > Instant::now() {
                sleep_until(deadline).await;
            }
            return true;
        };
        if deadline <= Instant::now() {
            return !*rx.borrow();
        }
        tokio::select! {
            biased;
            _ = rx.wait_for(|down| *down) => false,
            () = sleep_until(deadline) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_saturate() {
        let now = Instant::now();
        assert_eq!(
            deadline(now, Duration::from_millis(5)),
            now + Duration::from_millis(5)
        );
        assert_eq!(deadline(now, Duration::MAX), now + MAX_WAIT);
    }

    #[tokio::test]
    async fn wakes_early_on_shutdown() {
        let (tx, rx) = watch::channel(false);
        let mut s = Shutdown::new(rx);
        assert!(
            s.sleep_until(Instant::now() + Duration::from_millis(1))
                .await
        );
        let far = Instant::now() + Duration::from_secs(60);
        let waiter = tokio::spawn(async move { s.sleep_until(far).await });
        let _ = tx.send(true);
        let reached = tokio::time::timeout(Duration::from_secs(2), waiter).await;
        assert!(matches!(reached, Ok(Ok(false))));
    }

    #[tokio::test]
    async fn default_never_fires() {
        let mut s = Shutdown::default();
        assert!(s.sleep_until(Instant::now()).await);
    }
}
