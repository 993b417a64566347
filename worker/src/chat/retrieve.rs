//! Chat step: retrieve. The (possibly refined) question's candidates from the chat's datasets,
//! by the hybrid search of [`crate::search`]; [`super::rerank`] then rescores them and
//! [`reference()`] keeps the best `top_n` for the prompt. Dropped on cancel.

use ragq_common::event::Reference;
use ragq_common::providers::ModelSpec;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::context::JobContext;
use crate::job::cancel::until_cancelled;
use crate::job::deps::Deps;
use crate::job::error::StepError;
use crate::search::{self, Candidates, Params, Semantic};

/// The chat's retrieval settings.
pub fn params(ctx: &JobContext) -> Params {
    Params {
        dataset_ids: ctx.chat.dataset_ids.clone(),
        top_n: ctx.chat.top_n.max(0) as usize,
        top_k: i64::from(ctx.chat.top_k),
        similarity_threshold: ctx.chat.similarity_threshold,
        vector_similarity_weight: ctx.chat.vector_similarity_weight,
        document_ids: Vec::new(),
    }
}

/// The candidates for `question` (none when `top_n` is 0); `None` when the job was cancelled.
pub async fn retrieve(
    deps: &Deps,
    ctx: &JobContext,
    embedding: &ModelSpec,
    params: &Params,
    question: &str,
    cancel: &CancellationToken,
) -> Result<Option<Candidates>, StepError> {
    let embedder = deps.providers.embedder(embedding)?;
    if params.dataset_ids.is_empty() || params.top_n == 0 {
        return Ok(Some(Candidates::default()));
    }
    // With a rerank model ([`super::rerank`]) its score is the semantic one: no embedding.
    let semantic = Semantic::of(embedder, ctx.rerank.is_some());
    // The embedding call is part of it: dropped on cancel too.
    let found = search::candidates(&deps.db, &deps.common_terms, semantic, params, question)
        .instrument(tracing::info_span!(
            "retrieval",
            gen_ai.operation.name = "retrieval",
            gen_ai.data_source.id = %ctx.chat.dataset_ids.join(","),
        ));
    match until_cancelled(cancel, found).await {
        Some(found) => Ok(Some(found?)),
        None => Ok(None),
    }
}

/// The best `top_n` of the ranked candidates, with their per-document counts.
pub fn reference(found: Candidates, params: &Params) -> Reference {
    search::reference(found.rank(params), params.top_n)
}
