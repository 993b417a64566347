//! Ingestion job: parse documents (chunk, embed, index), writing progress to `documents`.

use ragq_common::job::Job;
use tokio_util::sync::CancellationToken;

use crate::pipeline::Pipeline;
use crate::pipeline::error::StepError;

pub async fn run(_p: &Pipeline, _job: &Job, _cancel: &CancellationToken) -> Result<(), StepError> {
    Err(StepError::BadRequest(
        "ingestion is not available yet".into(),
    ))
}
