//! Ingress side of job control, beside the event stream: reading a job's replay stream,
//! remembering who owns a job, and cancelling it (see [`super::cancel`] for the worker's side).

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use uuid::Uuid;

use super::endpoint::RedisEndpoint;
use super::keys::{
    CANCELLED_TTL_S, REPLAY_TTL_S, cancel_channel, cancelled_key, owner_key, rate_key, readers_key,
    tenant_jobs_key, tenant_rate_key,
};
use super::replay;
use crate::bus::BusError;
use crate::bus::control::{Control, TenantAdmission, TenantJobLimits};

/// Replay reads, job ownership and cancel signals over one multiplexed, reconnecting connection.
#[derive(Clone)]
pub struct RedisControl {
    conn: ConnectionManager,
    prefix: String,
}

impl RedisControl {
    pub async fn connect(endpoint: &RedisEndpoint, prefix: &str) -> Result<Self, BusError> {
        Ok(RedisControl {
            conn: endpoint.connection_manager().await?,
            prefix: prefix.to_string(),
        })
    }
}

impl RedisControl {
    /// The owner record: `SET {prefix}:owner:{id} owner EX ttl + the replay stream's lifetime`.
    fn push_set_owner(&self, pipe: &mut redis::Pipeline, job_id: Uuid, owner: &str, ttl: Duration) {
        pipe.cmd("SET")
            .arg(owner_key(&self.prefix, job_id))
            .arg(owner)
            .arg("EX")
            .arg(ttl.as_secs().max(1) + REPLAY_TTL_S as u64)
            .ignore();
    }

    /// A reader's attachment until `ttl` from now (see [`readers_key`]): its score is the
    /// moment it expires, and the set itself expires with its last reader.
    fn push_attach_reader(
        &self,
        pipe: &mut redis::Pipeline,
        job_id: Uuid,
        reader: Uuid,
        ttl: Duration,
    ) {
        let key = readers_key(&self.prefix, job_id);
        let until = crate::now_ms() + ttl.as_millis() as i64;
        pipe.cmd("ZADD")
            .arg(&key)
            .arg(until)
            .arg(reader.to_string())
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl.as_millis() as u64)
            .ignore();
    }
}

#[async_trait]
impl Control for RedisControl {
    /// Raw events of a job's replay stream, in order (empty when it expired or never existed).
    async fn replay(&self, job_id: Uuid) -> Result<Vec<Vec<u8>>, BusError> {
        let mut conn = self.conn.clone();
        replay::all(&mut conn, &self.prefix, job_id).await
    }

    /// Records that `owner` (the tenant, and what stop/resume need to know) owns the job, for
    /// `ttl` plus the replay stream's lifetime.
    async fn set_owner(&self, job_id: Uuid, owner: &str, ttl: Duration) -> Result<(), BusError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        self.push_set_owner(&mut pipe, job_id, owner, ttl);
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// The owner's `SET` and the reader's `ZADD` + `PEXPIRE`, in one round trip.
    async fn record_new_job(
        &self,
        job_id: Uuid,
        owner: &str,
        ttl: Duration,
        reader: Uuid,
        reader_ttl: Duration,
    ) -> Result<(), BusError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        self.push_set_owner(&mut pipe, job_id, owner, ttl);
        self.push_attach_reader(&mut pipe, job_id, reader, reader_ttl);
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    async fn owner(&self, job_id: Uuid) -> Result<Option<String>, BusError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("GET")
            .arg(owner_key(&self.prefix, job_id))
            .query_async(&mut conn)
            .await?)
    }

    /// Cancels a job, queued or running: marks it (a worker that receives it later skips it)
    /// and tells every worker (the one running it stops at once).
    async fn cancel(&self, job_id: Uuid) -> Result<(), BusError> {
        let mut conn = self.conn.clone();
        let _: () = redis::pipe()
            .cmd("SET")
            .arg(cancelled_key(&self.prefix, job_id))
            .arg(1)
            .arg("EX")
            .arg(CANCELLED_TTL_S)
            .ignore()
            .cmd("PUBLISH")
            .arg(cancel_channel(&self.prefix))
            .arg(job_id.to_string())
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Marks reader `reader` as attached to the job's stream until `ttl` from now (any ingress
    /// process sees it; see [`readers_key`]).
    async fn attach_reader(
        &self,
        job_id: Uuid,
        reader: Uuid,
        ttl: Duration,
    ) -> Result<(), BusError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        self.push_attach_reader(&mut pipe, job_id, reader, ttl);
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// Removes reader `reader` from the job's attached readers.
    async fn detach_reader(&self, job_id: Uuid, reader: Uuid) -> Result<(), BusError> {
        let mut conn = self.conn.clone();
        let _: () = redis::cmd("ZREM")
            .arg(readers_key(&self.prefix, job_id))
            .arg(reader.to_string())
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// How many readers are attached to the job's stream now, on every ingress process
    /// (expired attachments are dropped first).
    async fn attached_readers(&self, job_id: Uuid) -> Result<u64, BusError> {
        let mut conn = self.conn.clone();
        let key = readers_key(&self.prefix, job_id);
        let (n,): (u64,) = redis::pipe()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(crate::now_ms())
            .ignore()
            .cmd("ZCARD")
            .arg(&key)
            .query_async(&mut conn)
            .await?;
        Ok(n)
    }

    /// Counts one request of `token_id` in the fixed window `window` (its number since the epoch)
    /// and returns the window's count so far, across every api replica (`INCR` + `EXPIRE`).
    async fn count_request(
        &self,
        token_id: &str,
        window: u64,
        window_s: u64,
    ) -> Result<u64, BusError> {
        let mut conn = self.conn.clone();
        let key = rate_key(&self.prefix, token_id, window);
        let (count,): (u64,) = redis::pipe()
            .cmd("INCR")
            .arg(&key)
            .cmd("EXPIRE")
            .arg(&key)
            .arg(window_s * 2)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(count)
    }

    /// Admits one job of `tenant_id` against its limits, atomically across every api replica
    /// (one Lua script): first the concurrency cap (`max_jobs`; expired entries are dropped
    /// before counting), then the rate in the fixed window `window` of `window_s` seconds. Only
    /// an admitted job is counted and takes a slot (the job id, scored by `until_ms`). `None`
    /// for a limit = unlimited.
    async fn admit_tenant_job(
        &self,
        tenant_id: &str,
        job_id: Uuid,
        until_ms: i64,
        limits: TenantJobLimits,
    ) -> Result<TenantAdmission, BusError> {
        static SCRIPT: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new(ADMIT_TENANT_JOB));
        let mut conn = self.conn.clone();
        let now = crate::now_ms();
        let window = u64::try_from(now / 1000).unwrap_or(0) / limits.window_s.max(1);
        let (verdict, count): (i64, i64) = SCRIPT
            .key(tenant_jobs_key(&self.prefix, tenant_id))
            .key(tenant_rate_key(&self.prefix, tenant_id, window))
            .arg(now)
            .arg(limits.max_jobs.unwrap_or(0))
            .arg(limits.rate.unwrap_or(0))
            .arg(job_id.to_string())
            .arg(until_ms)
            .arg(limits.window_s * 2)
            .invoke_async(&mut conn)
            .await?;
        Ok(match verdict {
            1 => TenantAdmission::RateLimited,
            2 => TenantAdmission::TooManyJobs(u64::try_from(count).unwrap_or(0)),
            _ => TenantAdmission::Admitted,
        })
    }

    /// Frees the slot job `job_id` took in its tenant's running jobs.
    async fn release_tenant_job(&self, tenant_id: &str, job_id: Uuid) -> Result<(), BusError> {
        let mut conn = self.conn.clone();
        let _: () = redis::cmd("ZREM")
            .arg(tenant_jobs_key(&self.prefix, tenant_id))
            .arg(job_id.to_string())
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// True while the connection answers.
    async fn ping(&self) -> bool {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok()
    }
}

/// KEYS[1] running jobs (sorted set), KEYS[2] the window's counter; ARGV now_ms, max_jobs,
/// rate (0 = unlimited), job id, until_ms, counter TTL in seconds. Returns {verdict, count}:
/// 0 admitted, 1 rate limited, 2 too many jobs (count = running jobs).
const ADMIT_TENANT_JOB: &str = r"
local now = tonumber(ARGV[1])
local max_jobs = tonumber(ARGV[2])
local rate = tonumber(ARGV[3])
if max_jobs > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  local running = redis.call('ZCARD', KEYS[1])
  if running >= max_jobs then return {2, running} end
end
if rate > 0 then
  local n = tonumber(redis.call('GET', KEYS[2]) or '0')
  if n >= rate then return {1, n} end
  redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], ARGV[6])
end
if max_jobs > 0 then
  redis.call('ZADD', KEYS[1], ARGV[5], ARGV[4])
  local ttl = tonumber(ARGV[5]) - now
  if ttl > 0 and redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
end
return {0, 0}
";
