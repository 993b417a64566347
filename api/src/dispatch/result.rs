//! Waiting for a job's one `result`: the end of the job path for work whose answer is not
//! streamed (retrieval, adding or re-embedding a chunk, related questions, mind maps).
//!
//! Where this sits: it starts the job like a streamed one ([`super::start::start_job`]) and
//! reads the relay's items until the terminal one; the route then writes `data` in its format.

use ragq_common::event::ErrorCode;
use ragq_common::job::{Job, Lane};
use serde_json::Value;

use super::KEEP_ALIVE;
use super::start::start_job;
use crate::envelope::{ApiError, code};
use crate::relay::Item;
use crate::state::AppState;

/// Publishes `job` on `lane` (subscribe first) and waits for its `result`. A worker's
/// `bad_request` failure is RAGFlow's code 102 with the worker's message; any other failure
/// (upstream model, timeout) is code 100 with the failure's fixed message and error id.
pub async fn await_result(state: &AppState, job: &Job, lane: Lane) -> Result<Value, ApiError> {
    let mut stream = start_job(state, job, lane).await?;
    let mut result = None;
    while let Some(item) = stream.next(KEEP_ALIVE).await {
        match item {
            Item::Result(v) => result = Some(v),
            Item::Reset => result = None,
            Item::Done(_) => {
                return result.ok_or_else(|| {
                    ApiError::new(code::EXCEPTION, "The worker finished without a result.")
                });
            }
            Item::Failed(failure) if failure.code() == ErrorCode::BadRequest => {
                return Err(ApiError::data(failure.message));
            }
            Item::Failed(failure) => return Err(ApiError::new(code::EXCEPTION, failure.message)),
            _ => {}
        }
    }
    Err(ApiError::new(
        code::EXCEPTION,
        "The job's event stream ended early.",
    ))
}
