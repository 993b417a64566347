//! Request and stream counters, served as JSON on `GET /stats`.
//!
//! The counters are plain atomics so tests holding the [`SimStats`] (for example through
//! [`crate::SimHandle::stats`]) can read them without HTTP. The interesting one is
//! [`SimStats::chat_streams_dropped`]: a stream whose body is dropped before the final
//! `data: [DONE]` was produced, which is how the simulator sees a client (the ragq worker)
//! abandoning a generation. It is detected by a `StreamGuard` owned by the body stream: when
//! hyper drops the body, the guard's `Drop` looks at how far the stream got.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Live counters of one simulator instance.
#[derive(Debug, Default)]
pub struct SimStats {
    /// Requests received on `/v1/chat/completions` (including failed and malformed ones).
    pub chat_requests: AtomicU64,
    /// Streamed chat responses whose body is still alive.
    pub chat_streams_active: AtomicU64,
    /// Streams that produced their final `data: [DONE]`.
    pub chat_streams_completed: AtomicU64,
    /// Streams dropped before `[DONE]` because the client went away.
    pub chat_streams_dropped: AtomicU64,
    /// Streams the simulator ended on purpose without `[DONE]` (`error-after`, an elapsed
    /// `stall`, shutdown). Not counted as dropped.
    pub chat_streams_aborted: AtomicU64,
    /// Requests received on `/v1/embeddings`.
    pub embedding_requests: AtomicU64,
    /// Requests received on `/v1/rerank` and `/rerank`.
    pub rerank_requests: AtomicU64,
    /// Unix time in milliseconds of the last dropped stream, 0 if none.
    pub last_drop_unix_ms: AtomicU64,
}

/// A point-in-time copy of [`SimStats`]; also the JSON shape of `GET /stats`, so HTTP clients can
/// deserialize into it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatsSnapshot {
    pub chat_requests: u64,
    pub chat_streams_active: u64,
    pub chat_streams_completed: u64,
    pub chat_streams_dropped: u64,
    pub chat_streams_aborted: u64,
    pub embedding_requests: u64,
    pub rerank_requests: u64,
    pub last_drop_unix_ms: u64,
}

impl SimStats {
    /// Reads every counter (each read is atomic; the set as a whole is not a transaction).
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            chat_requests: get(&self.chat_requests),
            chat_streams_active: get(&self.chat_streams_active),
            chat_streams_completed: get(&self.chat_streams_completed),
            chat_streams_dropped: get(&self.chat_streams_dropped),
            chat_streams_aborted: get(&self.chat_streams_aborted),
            embedding_requests: get(&self.embedding_requests),
            rerank_requests: get(&self.rerank_requests),
            last_drop_unix_ms: get(&self.last_drop_unix_ms),
        }
    }

    /// Increments `counter` and returns its previous value.
    pub(crate) fn bump(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed)
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How a chat stream ended, as far as it got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StreamOutcome {
    /// Still producing: if dropped now, the client went away.
    Running,
    /// `[DONE]` was produced.
    Completed,
    /// The simulator ended the stream on purpose.
    Aborted,
}

/// Tracks one streamed chat response; owned by the body stream so its `Drop` runs exactly when
/// hyper lets go of the body (finished, failed or abandoned by the client).
pub(crate) struct StreamGuard {
    stats: Arc<SimStats>,
    pub(crate) outcome: StreamOutcome,
}

impl StreamGuard {
    /// Counts a new active stream.
    pub(crate) fn new(stats: Arc<SimStats>) -> Self {
        stats.chat_streams_active.fetch_add(1, Ordering::Relaxed);
        Self {
            stats,
            outcome: StreamOutcome::Running,
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let s = &self.stats;
        s.chat_streams_active.fetch_sub(1, Ordering::Relaxed);
        match self.outcome {
            StreamOutcome::Completed => SimStats::bump(&s.chat_streams_completed),
            StreamOutcome::Aborted => SimStats::bump(&s.chat_streams_aborted),
            StreamOutcome::Running => {
                s.last_drop_unix_ms.store(unix_ms(), Ordering::Relaxed);
                SimStats::bump(&s.chat_streams_dropped)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_counts_each_outcome() {
        let stats = Arc::new(SimStats::default());
        let mut done = StreamGuard::new(stats.clone());
        let mut aborted = StreamGuard::new(stats.clone());
        let dropped = StreamGuard::new(stats.clone());
        assert_eq!(stats.snapshot().chat_streams_active, 3);
        done.outcome = StreamOutcome::Completed;
        aborted.outcome = StreamOutcome::Aborted;
        drop((done, aborted, dropped));
        let s = stats.snapshot();
        assert_eq!(s.chat_streams_active, 0);
        assert_eq!(
            (
                s.chat_streams_completed,
                s.chat_streams_aborted,
                s.chat_streams_dropped
            ),
            (1, 1, 1)
        );
        assert!(s.last_drop_unix_ms > 0);
    }
}
