//! The limits a worker puts on its jobs, set from its configuration ([`crate::WorkerConfig`]):
//! how long a chat stream may stay silent ([`Limits`], used by `chat::generate`), and the
//! per-tenant batch slots with their 429 backoff ([`BatchLimits`], used by `jobs::batch_line`),
//! and each tenant's share of the interactive slots ([`TenantJobs`], used by the consumer).

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

/// How many interactive jobs each tenant runs in this worker, against a cap (0 = none).
pub struct TenantJobs {
    cap: usize,
    running: Arc<Mutex<HashMap<String, usize>>>,
}

/// One running job of a tenant; dropping it frees the place.
pub struct TenantJob {
    tenant: String,
    running: Arc<Mutex<HashMap<String, usize>>>,
}

impl TenantJobs {
    pub fn new(cap: usize) -> Self {
        TenantJobs {
            cap,
            running: Arc::default(),
        }
    }

    /// A place for one more of `tenant`'s jobs, or `None` when the tenant is at the cap.
    pub fn enter(&self, tenant: &str) -> Option<TenantJob> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let n = running.entry(tenant.to_string()).or_default();
        if self.cap > 0 && *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(TenantJob {
            tenant: tenant.to_string(),
            running: self.running.clone(),
        })
    }
}

impl Drop for TenantJob {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = running.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                running.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_at_its_cap_waits_for_one_of_its_own_to_end() {
        let t = TenantJobs::new(2);
        let a1 = t.enter("a").expect("first");
        let _a2 = t.enter("a").expect("second");
        assert!(t.enter("a").is_none(), "at the cap");
        assert!(t.enter("b").is_some(), "another tenant is not held back");
        drop(a1);
        assert!(t.enter("a").is_some(), "a place came free");
        let none = TenantJobs::new(0);
        let _all: Vec<_> = (0..100).map(|_| none.enter("a").expect("no cap")).collect();
    }
}
