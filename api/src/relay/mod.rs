//! Reading one job's events off the bus, in order, without gaps, with bounded waiting.
//!
//! Where this sits in the job path: after [`crate::dispatch`] has subscribed and published, and
//! before [`crate::wire`] writes each item in the client's format. Files: [`stream`] (the
//! [`JobStream`] and its ordering rules), [`failure`] (what a client may see of a failure),
//! [`readers`] (the job's reader set and the cancel after a disconnect).
//!
//! [`JobStream`] turns raw payloads into [`Item`]s:
//! - it drops duplicates (`seq` not above the last one seen) and events of a superseded delivery
//!   attempt (a redelivered job's events win, whatever their numbering);
//! - it fills gaps from the job's replay stream: when an event arrives with a `seq` beyond the
//!   next one, when the bus reconnected (an empty payload is the router's resync signal), and
//!   when nothing arrived for a keep-alive interval (a lost terminal event is found there);
//! - it turns every way a stream can die — deadline, lost bus, a reader too slow for its
//!   buffer — into a terminal [`Item::Failed`], so a client always gets a terminal event and
//!   never waits past the deadline;
//! - cut for reading too slowly, or past its deadline, it cancels the job, so the worker stops
//!   the model;
//! - dropped before its terminal event (the client went away), a stream marked
//!   [`JobStream::owned_by_client`] does **not** cancel at once: a disconnect is not a stop. It
//!   schedules a cancel after the disconnect grace (`RAGQ_DISCONNECT_GRACE_S`), which is skipped
//!   when another reader of the job is attached by then — in this process (the subscriber's
//!   readers of the channel) or in any other (the job's reader set in Redis, which every such
//!   stream joins while it reads);
//! - told the ingress is shutting down ([`JobStream::until_shutdown`]), it ends with
//!   [`Item::Interrupted`] — "resume this job elsewhere" — and leaves the job running.

pub mod failure;
pub mod readers;
pub mod stream;

use ragq_common::event::{Done, Reference};
use uuid::Uuid;

pub use failure::Failure;
pub(crate) use readers::PRESENCE_TTL;
pub use stream::JobStream;

/// What the formatters see.
#[derive(Debug)]
pub enum Item {
    Delta(String),
    Reference(Reference),
    /// The JSON result of a non-chat job (retrieval).
    Result(serde_json::Value),
    /// Discard the text so far (the job is being regenerated).
    Reset,
    Done(Box<Done>),
    /// Terminal: the job failed (or its stream died); only client text inside.
    Failed(Failure),
    /// Nothing arrived for the keep-alive interval.
    Idle,
    /// Terminal for this connection, not for the job: the ingress is shutting down (or lost its
    /// event bus) and the job goes on; the client should resume it (`message` says how).
    Interrupted {
        message: String,
    },
}

/// The message of [`Item::Interrupted`] (and of a lost bus), naming the route that resumes.
pub fn resume_message(job_id: Uuid, why: &str) -> String {
    format!(
        "{why} The answer goes on: resume it with GET /api/v1/chats/{{chat_id}}/completions/{job_id} (job {job_id})."
    )
}
