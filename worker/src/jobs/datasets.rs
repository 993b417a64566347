//! What the dataset-level model jobs (ask, mind map) share: the isolation checks on the job's
//! datasets, the embedder they use, the tenant's default chat model, and a search with fixed
//! settings.

use std::collections::HashSet;
use std::sync::Arc;

use ragq_common::event::{Done, EventBody, Reference, Usage};
use ragq_common::job::Job;
use ragq_common::text::approx_tokens;

use crate::job::deps::Deps;
use crate::job::error::StepError;
use crate::job::events::JobEvents;
use crate::search;
use ragq_common::models;
use ragq_common::providers::{ChatModel, Embedder, ModelKind, ModelSpec};

/// `params` of an ask or mind-map job.
#[derive(Debug, serde::Deserialize)]
pub struct DatasetParams {
    pub dataset_ids: Vec<String>,
}

impl DatasetParams {
    pub fn of(job: &Job) -> Result<Self, StepError> {
        serde_json::from_value(job.params.clone())
            .map_err(|e| StepError::BadRequest(format!("bad job parameters: {e}")))
    }
}

/// The embedder of `dataset_ids`, after checking (again: a job is only as trustworthy as its
/// queue) that they are the tenant's and share one embedding model.
pub async fn embedder(
    p: &Deps,
    tenant_id: &str,
    dataset_ids: &[String],
) -> Result<Arc<dyn Embedder>, StepError> {
    if dataset_ids.is_empty() {
        return Err(StepError::BadRequest("`dataset_ids` is required.".into()));
    }
    let owned: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, embedding_model FROM datasets WHERE id = ANY($1) AND tenant_id = $2",
    )
    .bind(dataset_ids)
    .bind(tenant_id)
    .fetch_all(&p.db)
    .await?;
    if let Some(missing) = dataset_ids
        .iter()
        .find(|id| !owned.iter().any(|(o, _)| o == *id))
    {
        return Err(StepError::BadRequest(format!(
            "You don't own the dataset {missing}."
        )));
    }
    let names: HashSet<&str> = owned.iter().map(|(_, m)| m.as_str()).collect();
    let Some(name) = names.iter().next().filter(|_| names.len() == 1) else {
        return Err(StepError::BadRequest(
            "Datasets use different embedding models.".into(),
        ));
    };
    let spec = models::load(&p.db, &p.secrets, tenant_id, ModelKind::Embedding, name)
        .await?
        .ok_or_else(|| {
            StepError::BadRequest(format!(
                "The embedding model `{name}` of the datasets does not exist."
            ))
        })?;
    Ok(p.providers.embedder(&spec)?)
}

/// The tenant's default chat model (`is_default`, else the first by name) and its client.
pub async fn default_chat(
    p: &Deps,
    tenant_id: &str,
) -> Result<(ModelSpec, Arc<dyn ChatModel>), StepError> {
    let spec = models::default_chat(&p.db, &p.secrets, tenant_id)
        .await?
        .ok_or_else(|| StepError::BadRequest("The tenant has no chat model.".into()))?;
    let model = p.providers.chat(&spec)?;
    Ok((spec, model))
}

/// RAGFlow's fixed search of `ask` and `mindmap`: the 12 best chunks above `threshold`
/// (vector weight 0.3, top_k 1024, no rerank).
pub async fn search(
    p: &Deps,
    embedder: Arc<dyn Embedder>,
    dataset_ids: &[String],
    threshold: f32,
    question: &str,
) -> Result<Reference, StepError> {
    let params = search::Params {
        dataset_ids: dataset_ids.to_vec(),
        top_n: 12,
        top_k: 1024,
        similarity_threshold: threshold,
        vector_similarity_weight: 0.3,
        document_ids: Vec::new(),
    };
    Ok(search::retrieve(&p.db, &p.common_terms, embedder, None, &params, question).await?)
}

/// The `done` event of a job that saves nothing.
pub async fn done(
    job: &Job,
    events: &mut JobEvents,
    answer: &str,
    prompt: String,
    prompt_tokens: u64,
) -> Result<(), StepError> {
    events
        .send(EventBody::Done(Box::new(Done::new(
            job.message_id.clone(),
            answer.to_string(),
            prompt,
            Usage {
                prompt_tokens,
                completion_tokens: approx_tokens(answer) as u64,
            },
            false,
        ))))
        .await?;
    Ok(())
}
