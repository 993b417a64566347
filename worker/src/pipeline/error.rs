//! Why a pipeline step failed, and how that maps onto the client-visible error event.

use ragq_common::bus::BusError;
use ragq_common::event::ErrorCode;

use crate::models::ModelError;
use crate::providers::ProviderError;

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The job refers to something missing or misconfigured (chat deleted, unknown model…).
    #[error("{0}")]
    BadRequest(String),
    #[error("upstream model error: {0}")]
    Upstream(#[from] ProviderError),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// The event bus is down: the client cannot be told anything, so the job is requeued.
    #[error("event bus error: {0}")]
    Bus(#[from] BusError),
    #[error("the job's deadline passed")]
    Deadline,
    #[error("the job was cancelled")]
    Cancelled,
}

impl From<ModelError> for StepError {
    /// A model row that cannot be used (unknown provider, undecryptable key) is a
    /// misconfiguration; the message names the model, never its key.
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Db(e) => StepError::Db(e),
            e => StepError::BadRequest(e.to_string()),
        }
    }
}

impl StepError {
    pub fn code(&self) -> ErrorCode {
        match self {
            StepError::BadRequest(_) => ErrorCode::BadRequest,
            StepError::Upstream(_) => ErrorCode::Upstream,
            StepError::Deadline => ErrorCode::Timeout,
            StepError::Cancelled => ErrorCode::Cancelled,
            StepError::Db(_) | StepError::Bus(_) => ErrorCode::Internal,
        }
    }
}
