//! Ingress side of job control on NATS: the replay stream (see [`super::replay`]) and
//! JetStream key-value buckets for the state every api replica shares.
//!
//! | bucket | key | value |
//! | --- | --- | --- |
//! | `{prefix}_owners` | job id | `{owner, until_ms}`: the record with its own expiry |
//! | `{prefix}_readers` | job id | `{reader id: until_ms}` |
//! | `{prefix}_rates` | `{token}.{window}` | the window's count |
//! | `{prefix}_tenants` | tenant | `{jobs: {job id: until_ms}, window, count}` |
//! | `{prefix}_cancelled` | job id | the cancel mark (see [`super::cancel`]) |
//!
//! Buckets keep one revision per key and expire keys some time after their last write
//! ([`super::names::Bucket::max_age`]); finer expiries (an owner's `ttl`, a reader's or a
//! job's `until_ms`) are stored in the value and honoured when it is read. Every change is a
//! compare-and-set on one key ([`super::kv::update`]), retried on conflict.
//!
//! A tenant's running jobs and its rate window live in **one** entry, so that admission —
//! concurrency cap, then rate, then take the slot and count the job — is one decision applied
//! by one compare-and-set: two replicas can never both take the last slot or the last unit of
//! the rate, and a refused job changes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::kv::Store;
use async_nats::jetstream::stream::Stream;
use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::kv::{Step, read, update};
use super::names::{REPLAY_TTL_S, event_subject, key, rate_key};
use crate::bus::BusError;
use crate::bus::control::{Control, TenantAdmission, TenantJobLimits};

/// Bound on [`Control::ping`].
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Replay reads and shared job state over the bus's one connection.
#[derive(Clone)]
pub struct NatsControl {
    pub(super) client: async_nats::Client,
    pub(super) jetstream: async_nats::jetstream::Context,
    pub(super) stream: Stream,
    pub(super) prefix: String,
    pub(super) owners: Store,
    pub(super) readers: Store,
    pub(super) rates: Store,
    pub(super) tenants: Store,
    pub(super) cancelled: Store,
}

#[derive(Serialize, Deserialize)]
struct OwnerRecord {
    owner: String,
    until_ms: i64,
}

/// A tenant's running jobs (id → until_ms) and its rate window's count.
#[derive(Default, Serialize, Deserialize)]
struct TenantState {
    #[serde(default)]
    jobs: BTreeMap<String, i64>,
    #[serde(default)]
    window: u64,
    #[serde(default)]
    count: u64,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl Control for NatsControl {
    async fn replay(&self, job_id: Uuid) -> Result<Vec<Vec<u8>>, BusError> {
        super::replay::all(&self.stream, &event_subject(&self.prefix, job_id)).await
    }

    async fn set_owner(&self, job_id: Uuid, owner: &str, ttl: Duration) -> Result<(), BusError> {
        let ttl = ttl.max(Duration::from_secs(1)) + Duration::from_secs(REPLAY_TTL_S);
        let record = OwnerRecord {
            owner: owner.to_string(),
            until_ms: crate::now_ms().saturating_add(ms(ttl)),
        };
        let value = serde_json::to_vec(&record)
            .map_err(|e| BusError::Nats(format!("encoding the owner of {job_id}: {e}")))?;
        self.owners
            .put(job_id.to_string(), Bytes::from(value))
            .await
            .map_err(|e| BusError::Nats(format!("setting the owner of {job_id}: {e}")))?;
        Ok(())
    }

    async fn owner(&self, job_id: Uuid) -> Result<Option<String>, BusError> {
        let (record, _) = read::<Option<OwnerRecord>>(&self.owners, &job_id.to_string()).await?;
        Ok(record
            .filter(|r| r.until_ms > crate::now_ms())
            .map(|r| r.owner))
    }

    async fn cancel(&self, job_id: Uuid) -> Result<(), BusError> {
        super::cancel::cancel(&self.client, &self.cancelled, &self.prefix, job_id).await
    }

    async fn attach_reader(
        &self,
        job_id: Uuid,
        reader: Uuid,
        ttl: Duration,
    ) -> Result<(), BusError> {
        let until = crate::now_ms().saturating_add(ms(ttl));
        update(
            &self.readers,
            &job_id.to_string(),
            |mut readers: BTreeMap<String, i64>| {
                let now = crate::now_ms();
                readers.retain(|_, u| *u > now);
                readers.insert(reader.to_string(), until);
                Step::Write(readers, ())
            },
        )
        .await
    }

    async fn detach_reader(&self, job_id: Uuid, reader: Uuid) -> Result<(), BusError> {
        update(
            &self.readers,
            &job_id.to_string(),
            |mut readers: BTreeMap<String, i64>| {
                if readers.remove(&reader.to_string()).is_none() {
                    return Step::Keep(());
                }
                let now = crate::now_ms();
                readers.retain(|_, u| *u > now);
                Step::Write(readers, ())
            },
        )
        .await
    }

    async fn attached_readers(&self, job_id: Uuid) -> Result<u64, BusError> {
        let (readers, _) =
            read::<BTreeMap<String, i64>>(&self.readers, &job_id.to_string()).await?;
        let now = crate::now_ms();
        Ok(readers.values().filter(|u| **u > now).count() as u64)
    }

    async fn count_request(
        &self,
        token_id: &str,
        window: u64,
        _window_s: u64,
    ) -> Result<u64, BusError> {
        update(&self.rates, &rate_key(token_id, window), |n: u64| {
            let n = n.saturating_add(1);
            Step::Write(n, n)
        })
        .await
    }

    async fn admit_tenant_job(
        &self,
        tenant_id: &str,
        job_id: Uuid,
        until_ms: i64,
        limits: TenantJobLimits,
    ) -> Result<TenantAdmission, BusError> {
        // As with Redis, 0 means unlimited too.
        let max_jobs = limits.max_jobs.filter(|m| *m > 0).map(u64::from);
        let rate = limits.rate.filter(|r| *r > 0).map(u64::from);
        if max_jobs.is_none() && rate.is_none() {
            return Ok(TenantAdmission::Admitted);
        }
        let job = job_id.to_string();
        update(&self.tenants, &key(tenant_id), |mut t: TenantState| {
            let now = crate::now_ms();
            let window = u64::try_from(now / 1000).unwrap_or(0) / limits.window_s.max(1);
            t.jobs.retain(|_, until| *until > now);
            if let Some(max) = max_jobs {
                let running = t.jobs.len() as u64;
                if running >= max {
                    return Step::Keep(TenantAdmission::TooManyJobs(running));
                }
            }
            if let Some(rate) = rate {
                if t.window != window {
                    t.window = window;
                    t.count = 0;
                }
                if t.count >= rate {
                    return Step::Keep(TenantAdmission::RateLimited);
                }
                t.count += 1;
            }
            if max_jobs.is_some() {
                t.jobs.insert(job.clone(), until_ms);
            }
            Step::Write(t, TenantAdmission::Admitted)
        })
        .await
    }

    async fn release_tenant_job(&self, tenant_id: &str, job_id: Uuid) -> Result<(), BusError> {
        let job = job_id.to_string();
        update(&self.tenants, &key(tenant_id), |mut t: TenantState| {
            if t.jobs.remove(&job).is_none() {
                return Step::Keep(());
            }
            let now = crate::now_ms();
            t.jobs.retain(|_, until| *until > now);
            Step::Write(t, ())
        })
        .await
    }

    async fn ping(&self) -> bool {
        // A JetStream request (the replay stream's info): proves the server and JetStream.
        let events = super::names::events_stream(&self.prefix);
        matches!(
            tokio::time::timeout(PING_TIMEOUT, self.jetstream.get_stream(events)).await,
            Ok(Ok(_))
        )
    }
}
