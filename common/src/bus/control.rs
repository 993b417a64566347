//! Ingress side of job control, beside the event stream: reading a job's replay stream,
//! remembering who owns a job, and cancelling it (see [`super::cancel`] for the worker's side).

use std::time::Duration;

use redis::aio::ConnectionManager;
use uuid::Uuid;

use super::BusError;
use super::endpoint::RedisEndpoint;
use super::keys::{CANCELLED_TTL_S, REPLAY_TTL_S, cancel_channel, cancelled_key, owner_key};
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

    /// True while the connection answers.
    pub async fn ping(&self) -> bool {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok()
    }
}
