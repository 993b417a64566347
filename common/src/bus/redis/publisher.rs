//! Worker side of the bus: publishes a job's events. Every event is appended to the job's replay
//! stream (expiring [`REPLAY_TTL_S`] after the attempt's first and last events — an expiry, not
//! MAXLEN trimming, so a reader's cursor is never cut) and then published, in one round trip.

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use uuid::Uuid;

use super::endpoint::RedisEndpoint;
use super::keys::{REPLAY_TTL_S, channel, replay_key};
use super::replay;
use crate::bus::{BusError, EventPublisher};
use crate::event::{EventBody, StreamEvent};

/// Publishes over one multiplexed, reconnecting connection.
#[derive(Clone)]
pub struct RedisPublisher {
    conn: ConnectionManager,
    prefix: String,
}

impl RedisPublisher {
    pub async fn connect(endpoint: &RedisEndpoint, prefix: &str) -> Result<Self, BusError> {
        let conn = endpoint.connection_manager().await?;
        Ok(RedisPublisher {
            conn,
            prefix: prefix.to_string(),
        })
    }
}

#[async_trait]
impl EventPublisher for RedisPublisher {
    async fn publish(&self, job_id: Uuid, event: &StreamEvent) -> Result<(), BusError> {
        let mut conn = self.conn.clone();
        let payload = event.encode();
        let key = replay_key(&self.prefix, job_id);
        let mut pipe = redis::pipe();
        pipe.cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg("e")
            .arg(&payload)
            .ignore();
        // The expiry is set when an attempt starts and renewed by its terminal event — not on
        // every delta: a job's stream never lives longer than its deadline (minutes), well
        // under the TTL.
        if event.seq == 1 || matches!(event.body, EventBody::Reset) || event.body.is_terminal() {
            pipe.cmd("EXPIRE").arg(&key).arg(REPLAY_TTL_S).ignore();
        }
        pipe.cmd("PUBLISH")
            .arg(channel(&self.prefix, job_id))
            .arg(&payload)
            .ignore();
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    async fn last_seq(&self, job_id: Uuid) -> Result<u64, BusError> {
        Ok(self.last_event(job_id).await?.map_or(0, |e| e.seq))
    }

    async fn last_event(&self, job_id: Uuid) -> Result<Option<StreamEvent>, BusError> {
        let mut conn = self.conn.clone();
        let last = replay::last(&mut conn, &self.prefix, job_id).await?;
        Ok(last.and_then(|b| StreamEvent::decode(&b).ok()))
    }
}
