//! The limits a worker puts on its jobs, set from its configuration ([`crate::WorkerConfig`]):
//! how long a chat stream may stay silent ([`Limits`], used by `chat::generate`), and the
//! per-tenant batch slots with their 429 backoff ([`BatchLimits`], used by `jobs::batch_line`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Time bounds of a streamed answer.
pub struct Limits {
    pub first_token: Duration,
    pub idle: Duration,
    /// Pieces arriving within this window after a delta are sent together in the next one
    /// (zero: one event per piece).
    pub coalesce: Duration,
}

/// Per-tenant concurrency and rate-limit backoff of batch lines in one worker.
pub struct BatchLimits {
    tenant_cap: usize,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// First backoff after a 429; doubled each time, capped at 30 s.
    pub backoff: Duration,
    /// 429 retries of one line before it is recorded as failed.
    pub rate_limit_retries: u32,
}

impl BatchLimits {
    pub fn new(tenant_cap: usize, backoff: Duration, rate_limit_retries: u32) -> Self {
        BatchLimits {
            tenant_cap: tenant_cap.max(1),
            slots: Mutex::default(),
            backoff,
            rate_limit_retries,
        }
    }

    pub(crate) async fn slot(&self, tenant: &str) -> Option<OwnedSemaphorePermit> {
        let sem = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots
                .entry(tenant.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.tenant_cap)))
                .clone()
        };
        sem.acquire_owned().await.ok()
    }
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self::new(4, Duration::from_millis(500), 6)
    }
}
