//! Chat step: rerank. With a rerank model configured for the chat, every candidate of
//! [`super::retrieve`] is scored by it against the question, and that score replaces the cosine
//! in the ranking (`ragq_common::providers::rerank` holds the clients). Dropped on cancel.

use ragq_common::providers::ModelSpec;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::job::cancel::until_cancelled;
use crate::job::deps::Deps;
use crate::job::error::StepError;
use crate::search::Candidates;

/// Reranks `found` with `model` (unchanged without one); `None` when the job was cancelled.
pub async fn rerank(
    deps: &Deps,
    model: Option<&ModelSpec>,
    mut found: Candidates,
    question: &str,
    cancel: &CancellationToken,
) -> Result<Option<Candidates>, StepError> {
    let Some(model) = model else {
        return Ok(Some(found));
    };
    let reranker = deps.providers.reranker(model)?;
    let scored = found
        .rerank(reranker.as_ref(), question)
        .instrument(tracing::info_span!("rerank", gen_ai.request.model = %model.model));
    match until_cancelled(cancel, scored).await {
        Some(r) => {
            r?;
            Ok(Some(found))
        }
        None => Ok(None),
    }
}
