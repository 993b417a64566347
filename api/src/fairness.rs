//! Per-tenant fairness, the process's side: each tenant's limits (cached), the fallback counts
//! used while Redis does not answer, and [`TenantSlot`], a tenant's hold on one of its
//! concurrent jobs for as long as the job's stream lasts.
//!
//! Where this sits in the job path: the deciding is in
//! [`crate::dispatch::admission::admit_tenant`] (the first step of `start_job`, after the
//! ingress-wide limits); the slot it returns travels with the job's [`crate::relay::JobStream`]
//! and is released when that stream ends (its terminal item, or its drop — after the disconnect
//! grace when a client left early).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ragq_common::bus::control::Control;
use ragq_common::tenant_limits::Overrides;
use uuid::Uuid;

/// Each tenant's stored overrides, remembered for [`LimitsCache::TTL`] so that a request costs
/// no SQL round trip (one per tenant per TTL). A `ragq set-tenant-limits` takes effect within it.
#[derive(Default)]
pub struct LimitsCache {
    entries: Mutex<HashMap<String, (Overrides, Instant)>>,
}

impl LimitsCache {
    pub const TTL: Duration = Duration::from_secs(10);
    const CAPACITY: usize = 100_000;

    pub fn get(&self, tenant: &str) -> Option<Overrides> {
        let entries = self.entries.lock().ok()?;
        let (o, at) = entries.get(tenant)?;
        (at.elapsed() < Self::TTL).then_some(*o)
    }

    pub fn put(&self, tenant: &str, o: Overrides) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= Self::CAPACITY {
                entries.clear();
            }
            entries.insert(tenant.to_string(), (o, Instant::now()));
        }
    }
}

/// The fallback while Redis does not answer: each tenant's running jobs counted in this
/// process only (each replica then allows the cap on its own). The rate's fallback is a
/// [`crate::caches::RateLimiter`] keyed by tenant.
#[derive(Default)]
pub struct LocalJobs {
    running: Mutex<HashMap<String, u32>>,
}

impl LocalJobs {
    /// Takes a slot if fewer than `cap` are taken; `Err(running)` otherwise.
    pub fn try_take(&self, tenant: &str, cap: u32) -> Result<(), u32> {
        let Ok(mut running) = self.running.lock() else {
            return Ok(());
        };
        let n = running.entry(tenant.to_string()).or_insert(0);
        if *n >= cap {
            return Err(*n);
        }
        *n += 1;
        Ok(())
    }

    fn give_back(&self, tenant: &str) {
        if let Ok(mut running) = self.running.lock()
            && let Some(n) = running.get_mut(tenant)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                running.remove(tenant);
            }
        }
    }
}

/// Where a slot was taken.
enum Held {
    /// In the tenant's Redis set (every replica counts it).
    Shared {
        control: Arc<dyn Control>,
        tenant: String,
        job_id: Uuid,
    },
    /// In this process's fallback count.
    Local {
        local: Arc<LocalJobs>,
        tenant: String,
    },
}

/// A tenant's hold on one concurrent job. [`TenantSlot::release`] frees it (awaited, so the
/// tenant can start its next job as soon as the client has seen the end); dropping it unreleased
/// frees it in the background.
pub struct TenantSlot {
    held: Option<Held>,
}

impl TenantSlot {
    /// No slot (the tenant's concurrency is unlimited).
    pub fn none() -> Self {
        TenantSlot { held: None }
    }

    pub fn shared(control: Arc<dyn Control>, tenant: &str, job_id: Uuid) -> Self {
        TenantSlot {
            held: Some(Held::Shared {
                control,
                tenant: tenant.to_string(),
                job_id,
            }),
        }
    }

    pub fn local(local: Arc<LocalJobs>, tenant: &str) -> Self {
        TenantSlot {
            held: Some(Held::Local {
                local,
                tenant: tenant.to_string(),
            }),
        }
    }

    /// Frees the slot now.
    pub async fn release(mut self) {
        if let Some(held) = self.held.take() {
            free(held).await;
        }
    }
}

async fn free(held: Held) {
    match held {
        Held::Shared {
            control,
            tenant,
            job_id,
        } => {
            if let Err(e) = control.release_tenant_job(&tenant, job_id).await {
                // The entry expires at the job's deadline anyway.
                tracing::warn!(job = %job_id, %tenant, error = %e, "releasing the tenant's job slot failed");
            }
        }
        Held::Local { local, tenant } => local.give_back(&tenant),
    }
}

impl Drop for TenantSlot {
    fn drop(&mut self) {
        let Some(held) = self.held.take() else {
            return;
        };
        match held {
            Held::Local { local, tenant } => local.give_back(&tenant),
            shared => {
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(free(shared));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_slots_are_counted_and_given_back() {
        let local = Arc::new(LocalJobs::default());
        assert!(local.try_take("a", 2).is_ok());
        let slot = TenantSlot::local(local.clone(), "a");
        assert!(local.try_take("a", 2).is_ok());
        let _other = TenantSlot::local(local.clone(), "a");
        assert_eq!(local.try_take("a", 2), Err(2));
        assert!(local.try_take("b", 2).is_ok());
        drop(slot);
        assert!(local.try_take("a", 2).is_ok());
    }
}
