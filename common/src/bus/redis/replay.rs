//! Reading a job's replay stream (`{prefix}:replay:{job_id}`, field `e` = one event's JSON).

use redis::aio::ConnectionLike;
use uuid::Uuid;

use super::keys::replay_key;
use crate::bus::BusError;

fn payloads(reply: redis::streams::StreamRangeReply) -> Vec<Vec<u8>> {
    reply
        .ids
        .into_iter()
        .filter_map(|mut entry| match entry.map.remove("e") {
            Some(redis::Value::BulkString(b)) => Some(b),
            _ => None,
        })
        .collect()
}

/// Every event of the stream, oldest first (empty when it expired or never existed).
pub async fn all<C: ConnectionLike + Send>(
    conn: &mut C,
    prefix: &str,
    job_id: Uuid,
) -> Result<Vec<Vec<u8>>, BusError> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(replay_key(prefix, job_id))
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await?;
    Ok(payloads(reply))
}

/// The newest event of the stream, if any.
pub async fn last<C: ConnectionLike + Send>(
    conn: &mut C,
    prefix: &str,
    job_id: Uuid,
) -> Result<Option<Vec<u8>>, BusError> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(replay_key(prefix, job_id))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    Ok(payloads(reply).into_iter().next())
}
