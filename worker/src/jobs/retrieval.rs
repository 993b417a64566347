//! Retrieval job: search datasets and send the result as one `result` event, then `done`.

use ragq_common::job::Job;

use crate::pipeline::Pipeline;
use crate::pipeline::error::StepError;
use crate::pipeline::events::JobEvents;

pub async fn run(_p: &Pipeline, _job: &Job, _events: &mut JobEvents) -> Result<(), StepError> {
    Err(StepError::BadRequest(
        "retrieval is not available yet".into(),
    ))
}
