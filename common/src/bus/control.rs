//! Ingress side of job control, beside the event stream: reading a job's replay stream,
//! remembering who owns a job, and cancelling it (see [`super::cancel`] for the worker's side).

use std::time::Duration;

use redis::aio::ConnectionManager;
use uuid::Uuid;

use super::BusError;
use super::endpoint::RedisEndpoint;
use super::keys::{
    CANCELLED_TTL_S, REPLAY_TTL_S, cancel_channel, cancelled_key, owner_key, rate_key, readers_key,
};
use super::replay;

/// Replay reads, job ownership and cancel signals over one multiplexed, reconnecting connection.
#[derive(Clone)]
pub struct RedisControl {
    conn: ConnectionManager,
    prefix: String,
}

impl RedisControl {
    pub async fn connect(endpoint: &RedisEndpoint, prefix: &str) -> Result<Self, BusError> {
        Ok(RedisControl {
            conn: ConnectionManager::new(endpoint.client().clone()).await?,
            prefix: prefix.to_string(),
        })
    }

    /// Raw events of a job's replay stream, in order (empty when it expired or never existed).
    pub async fn replay(&self, job_id: Uuid) -> Result<Vec<Vec<u8>>, BusError> {
        let mut conn = self.conn.clone();
        replay::all(&mut conn, &self.prefix, job_id).await
    }

    /// Records that `owner` (the tenant, and what stop/resume need to know) owns the job, for
    /// `ttl` plus the replay stream's lifetime.
    pub async fn set_owner(
        &self,
        job_id: Uuid,
        owner: &str,
        ttl: Duration,
    ) -> Result<(), BusError> {
        let mut conn = self.conn.clone();
        let _: () = redis::cmd("SET")
            .arg(owner_key(&self.prefix, job_id))
            .arg(owner)
            .arg("EX")
            .arg(ttl.as_secs().max(1) + REPLAY_TTL_S as u64)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    pub async fn owner(&self, job_id: Uuid) -> Result<Option<String>, BusError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("GET")
            .arg(owner_key(&self.prefix, job_id))
            .query_async(&mut conn)
            .await?)
    }

    /// Cancels a job, queued or running: marks it (a worker that receives it later skips it)
    /// and tells every worker (the one running it stops at once).
    pub async fn cancel(&self, job_id: Uuid) -> Result<(), BusError> {
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
    pub async fn attach_reader(
        &self,
        job_id: Uuid,
        reader: Uuid,
        ttl: Duration,
    ) -> Result<(), BusError> {
        let mut conn = self.conn.clone();
        let key = readers_key(&self.prefix, job_id);
        let until = crate::now_ms() + ttl.as_millis() as i64;
        let _: () = redis::pipe()
            .cmd("ZADD")
            .arg(&key)
            .arg(until)
            .arg(reader.to_string())
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl.as_millis() as u64)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Removes reader `reader` from the job's attached readers.
    pub async fn detach_reader(&self, job_id: Uuid, reader: Uuid) -> Result<(), BusError> {
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
    pub async fn attached_readers(&self, job_id: Uuid) -> Result<u64, BusError> {
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
    pub async fn count_request(
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

    /// True while the connection answers.
    pub async fn ping(&self) -> bool {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok()
    }
}
