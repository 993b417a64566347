//! The isolation check of a search: the datasets are the tenant's (and share one embedding model),
//! and the documents asked for are in them.
//!
//! Where this sits in the job path: the ingress runs it before it publishes a `retrieval` job
//! (`POST /api/v1/retrieval`, the search page's `retrieval_test`), so a request for another
//! tenant's dataset is answered at once and never queued. The retrieval worker repeats the same
//! check when it takes the job, since a job is only as trustworthy as its queue.

use sqlx::PgPool;

/// Why a search may not run. The messages are RAGFlow's (code 102 on the ingress).
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    #[error("You don't own the dataset {0}.")]
    NotYourDataset(String),
    #[error("Datasets use different embedding models.")]
    MixedEmbeddingModels,
    #[error("The datasets don't own the document {0}")]
    DocumentNotInDatasets(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Checks that every one of `dataset_ids` (non-empty) is `tenant`'s and that they all use one
/// embedding model; returns that model's name.
pub async fn search_datasets(
    db: &PgPool,
    tenant: &str,
    dataset_ids: &[String],
) -> Result<String, OwnershipError> {
    let owned: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, embedding_model FROM datasets WHERE id = ANY($1) AND tenant_id = $2",
    )
    .bind(dataset_ids)
    .bind(tenant)
    .fetch_all(db)
    .await?;
    if let Some(missing) = dataset_ids
        .iter()
        .find(|id| !owned.iter().any(|(o, _)| o == *id))
    {
        return Err(OwnershipError::NotYourDataset(missing.clone()));
    }
    let Some((_, model)) = owned.first() else {
        // No dataset at all: callers require at least one; like the worker, this is refused.
        return Err(OwnershipError::MixedEmbeddingModels);
    };
    if owned.iter().any(|(_, m)| m != model) {
        return Err(OwnershipError::MixedEmbeddingModels);
    }
    Ok(model.clone())
}

/// Checks that each of `document_ids` is in one of `dataset_ids` (an empty list passes).
pub async fn documents_in_datasets(
    db: &PgPool,
    document_ids: &[String],
    dataset_ids: &[String],
) -> Result<(), OwnershipError> {
    if document_ids.is_empty() {
        return Ok(());
    }
    let found: Vec<String> =
        sqlx::query_scalar("SELECT id FROM documents WHERE id = ANY($1) AND dataset_id = ANY($2)")
            .bind(document_ids)
            .bind(dataset_ids)
            .fetch_all(db)
            .await?;
    match document_ids.iter().find(|d| !found.contains(d)) {
        Some(missing) => Err(OwnershipError::DocumentNotInDatasets(missing.clone())),
        None => Ok(()),
    }
}
