//! The operators' side of the dead-letter stream: listing and replaying.
//!
//! The dead stream has limits retention, so it is read by sequence (a `STREAM.MSG.GET` of the
//! next message on the dead subject at or after a sequence) without any consumer and without
//! removing anything; a replayed letter is removed by sequence once its job is back in a lane.

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{RawMessageErrorKind, Stream};

use super::{Shared, default_lane, header, headers, js_err, lane_named};
use crate::broker::{BrokerError, DeadLetter};
use crate::job::Job;

/// A replayed job's fresh time to live (its old deadline has usually passed).
const REPLAY_TTL_MS: i64 = 10 * 60 * 1000;

/// The dead stream and the sequences to read: first to last as they are now (letters that die
/// while a replay runs wait for the next one).
async fn open(shared: &Shared) -> Result<(Stream, u64, u64), BrokerError> {
    let stream = shared
        .js
        .get_stream(shared.topology.dead_stream())
        .await
        .map_err(js_err)?;
    let state = &stream.cached_info().state;
    let (first, last) = (state.first_sequence, state.last_sequence);
    Ok((stream, first, last))
}

/// The first dead letter at or after `seq` (up to `last`), if any.
async fn next_from(
    stream: &Stream,
    subject: &str,
    seq: u64,
    last: u64,
) -> Result<Option<StreamMessage>, BrokerError> {
    if seq == 0 || seq > last {
        return Ok(None);
    }
    let got = stream
        .raw_message_builder()
        .sequence(seq)
        .next_by_subject(subject)
        .send()
        .await;
    match got {
        Ok(m) if m.sequence <= last => Ok(Some(m)),
        Ok(_) => Ok(None),
        Err(e) if matches!(e.kind(), RawMessageErrorKind::NoMessageFound) => Ok(None),
        Err(e) => Err(js_err(e)),
    }
}

fn reason(m: &StreamMessage) -> String {
    header(Some(&m.headers), headers::DEATH)
        .unwrap_or("unknown")
        .to_string()
}

pub(super) async fn list(shared: &Shared, limit: usize) -> Result<Vec<DeadLetter>, BrokerError> {
    let (stream, first, last) = open(shared).await?;
    let subject = shared.topology.dead_subject();
    let mut out = Vec::new();
    let mut seq = first;
    while out.len() < limit {
        let Some(m) = next_from(&stream, &subject, seq, last).await? else {
            break;
        };
        seq = m.sequence + 1;
        out.push(DeadLetter {
            reason: reason(&m),
            payload: m.payload.to_vec(),
        });
    }
    Ok(out)
}

pub(super) async fn replay(
    shared: &Shared,
    only: Option<uuid::Uuid>,
) -> Result<usize, BrokerError> {
    let (stream, first, last) = open(shared).await?;
    let subject = shared.topology.dead_subject();
    let mut replayed = 0;
    let mut seq = first;
    while let Some(m) = next_from(&stream, &subject, seq, last).await? {
        seq = m.sequence + 1;
        // Undecodable letters stay: replaying cannot help them.
        let Ok(mut job) = Job::decode(&m.payload) else {
            continue;
        };
        if only.is_some_and(|id| id != job.id) {
            continue;
        }
        let lane = header(Some(&m.headers), headers::LANE)
            .and_then(lane_named)
            .unwrap_or_else(|| default_lane(&job));
        job.deadline_ms = crate::now_ms() + REPLAY_TTL_MS;
        // Its own de-duplication key: the job id may still be in the lane's window.
        let msg_id = format!("{}-r{}", job.id, m.sequence);
        shared.publish_job(lane, &job, &msg_id).await?;
        stream.delete_message(m.sequence).await.map_err(js_err)?;
        replayed += 1;
    }
    Ok(replayed)
}
