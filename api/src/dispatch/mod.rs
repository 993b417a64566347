//! The hinge of the job path: how a checked request becomes a job on the broker and a stream of
//! its events.
//!
//! ```text
//! auth (crate::auth) → route checks (crate::routes) → admit → subscribe + record owner
//!   → publish (broker confirm) → relay (crate::relay) → format (crate::wire, crate::response)
//! ```
//!
//! Every route that starts a job goes through here:
//! - [`new_job`] builds the job (id, message id, deadline, trace context);
//! - [`admission::admit`] refuses new work when the ingress or the queue is full (HTTP 429);
//! - [`admission::admit_tenant`] refuses a tenant over its own rate or concurrent-jobs limit
//!   (HTTP 429, shared by every replica through Redis); the slot it takes is held by the job's
//!   stream ([`crate::fairness::TenantSlot`]) until the stream ends;
//! - [`start::start_job`] subscribes to the job's events **before** publishing it, so its first
//!   event cannot be missed, records who owns it (stop and resume check that,
//!   [`owner`]), publishes it and returns the client's [`crate::relay::JobStream`];
//! - [`result::await_result`] does the same for a job whose answer is one `result` event
//!   (retrieval, adding a chunk, related questions, mind maps);
//! - [`start::publish`] alone is for work nobody waits on here (document parsing: progress is
//!   read from the documents list).

pub mod admission;
pub mod owner;
pub mod result;
pub mod start;

use std::time::Duration;

use ragq_common::job::{JOB_VERSION, Job, JobKind, JobOptions};
use serde_json::Value;
use uuid::Uuid;

use crate::state::AppState;

pub use admission::admit;
pub use result::await_result;
pub use start::{client_stream, publish, start_job, subscribe};

/// How often an idle stream sends a keep-alive comment (and a waiting reader looks at the
/// replay stream for a lost event).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How long after the job's deadline the relay gives up (the worker's own timeout error
/// normally arrives first; a job that never reached a worker ends here).
pub const RELAY_MARGIN: Duration = Duration::from_secs(1);

/// A new job of `kind` for `tenant` with the ingress's deadline (`RAGQ_JOB_DEADLINE_S`): no
/// chat, no session, no history, default options; `params` carry the work. Chat jobs set
/// `chat_id`, `session_id`, `messages` and `options` on the result.
pub fn new_job(
    state: &AppState,
    kind: JobKind,
    tenant: &str,
    question: String,
    params: Value,
) -> Job {
    Job {
        v: JOB_VERSION,
        id: Uuid::now_v7(),
        kind,
        tenant_id: tenant.to_string(),
        chat_id: String::new(),
        session_id: None,
        message_id: Uuid::new_v4().to_string(),
        question,
        messages: Vec::new(),
        options: JobOptions::default(),
        deadline_ms: ragq_common::now_ms() + (state.cfg.job_deadline_s * 1000) as i64,
        params,
        trace: crate::observe::traceparent(),
    }
}
