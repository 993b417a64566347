//! Steps 1 and 2 in one statement: a chat's context and its search, read together.
//!
//! The search needs the chat's settings (its datasets, `top_n`, `top_k`, whether a rerank model
//! scores the candidates), which the context statement reads — so, done in order, every question
//! costs two statements and two round trips to PostgreSQL. But a chat's settings rarely change
//! between its questions. This worker remembers, per chat, what its last question was searched
//! with (`crate::search::plans`), and for the next question runs the context
//! statement and the search on that plan as **one** statement
//! (`crate::search::candidates_beside`). The plan is only a guess: the context it reads in the
//! same snapshot decides. When that context calls for another search — the settings changed,
//! or the question must first be refined from the history — the early candidates are dropped
//! and the chat searches again as it would have ([`super::retrieve`]); nothing a client sees
//! depends on the guess.

use ragq_common::job::{Job, JobKind, Role};
use tracing::Instrument;

use super::context::{self, CONTEXT_SQL, JobContext};
use crate::job::deps::Deps;
use crate::job::error::StepError;
use crate::search::plans::{Remembered, SearchPlan};
use crate::search::{self, Candidates, Semantic};

/// The plan of `ctx`'s search, if the chat searches at all (datasets, an embedding model,
/// `top_n` > 0).
pub fn plan_of(ctx: &JobContext) -> Option<SearchPlan> {
    let embedding = ctx.embedding.clone()?;
    let params = super::retrieve::params(ctx);
    if params.dataset_ids.is_empty() || params.top_n == 0 {
        return None;
    }
    Some(SearchPlan {
        dataset_ids: params.dataset_ids,
        top_n: params.top_n,
        top_k: params.top_k,
        reranked: ctx.rerank.is_some(),
        embedding,
    })
}

/// The plan to search `job`'s question with early: the one remembered for its chat — and, when
/// the chat refines follow-up questions, only for a job known to have no history (an OpenAI
/// request without earlier user messages): a follow-up is searched as its refined question,
/// which needs the history first, and a session's history is only known once read.
fn early_plan(deps: &Deps, job: &Job) -> Option<SearchPlan> {
    let Remembered { plan, refines } = deps.search_plans.get(&job.tenant_id, &job.chat_id)?;
    let no_history = match job.kind {
        JobKind::OpenaiChat | JobKind::BatchLine => {
            !job.messages.iter().any(|m| m.role == Role::User)
        }
        _ => false,
    };
    (!refines || no_history).then_some(plan)
}

/// Candidates found in the context's statement, and the plan they were searched with.
pub struct Early {
    pub plan: SearchPlan,
    /// `None` when the question's embedding failed (with the plan's model, which may not be
    /// the chat's any more): the chat searches again, and reports a failure of its own model.
    pub found: Option<Candidates>,
}

impl Early {
    /// The candidates, if `ctx`'s own search would have been this one: the same plan, and the
    /// question searched as asked (not refined).
    /// Counted in `ragq_early_searches_total{outcome}`.
    pub fn usable(self, ctx: &JobContext, refined: bool) -> Option<Candidates> {
        let usable = !refined && plan_of(ctx).as_ref() == Some(&self.plan);
        let metrics = &*crate::metrics::METRICS;
        match self.found {
            Some(found) if usable => {
                metrics.early_search_used.increment(1);
                Some(found)
            }
            _ => {
                metrics.early_search_dropped.increment(1);
                None
            }
        }
    }
}

/// Step 1 (and, with a remembered plan, step 2): the job's context, and the candidates of its
/// question when this worker knows the chat's plan. Remembers the plan the context calls for.
pub async fn load(deps: &Deps, job: &Job) -> Result<(JobContext, Option<Early>), StepError> {
    let (ctx, early) = match early_plan(deps, job) {
        None => (context::load(&deps.db, &deps.secrets, job).await?, None),
        Some(plan) => {
            let (ctx, found) = load_with_search(deps, job, &plan)
                .instrument(tracing::info_span!(
                    "retrieval",
                    gen_ai.operation.name = "retrieval",
                    gen_ai.data_source.id = %plan.dataset_ids.join(","),
                ))
                .await?;
            (ctx, Some(Early { plan, found }))
        }
    };
    let remembered = plan_of(&ctx).map(|plan| Remembered {
        plan,
        refines: ctx.chat.refine_multiturn(),
    });
    deps.search_plans
        .put(&job.tenant_id, &job.chat_id, remembered);
    Ok((ctx, early))
}

/// The context statement and the search on `plan`, as one statement.
async fn load_with_search(
    deps: &Deps,
    job: &Job,
    plan: &SearchPlan,
) -> Result<(JobContext, Option<Candidates>), StepError> {
    static SQL: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| search::sql::beside(CONTEXT_SQL));
    let semantic = if plan.reranked {
        Semantic::Rerank
    } else {
        match deps.providers.embedder(&plan.embedding) {
            Ok(embedder) => Semantic::Cosine(embedder),
            // The plan's model cannot be used: whether the chat's can is for its own search.
            Err(_) => return Ok((context::load(&deps.db, &deps.secrets, job).await?, None)),
        }
    };
    let common = deps.common_terms.get(&deps.db).await;
    let params = plan.params();
    let (row, found) = search::candidates_beside(
        &deps.db,
        &common,
        semantic,
        &params,
        &job.question,
        SQL.as_str(),
        |q| context::bind(q, job),
    )
    .await?;
    let ctx = context::from_row(row.as_deref(), &deps.secrets, job)?;
    Ok((ctx, found))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::context::ChatSettings;
    use ragq_common::providers::{ModelKind, ModelSpec, Provider};

    fn spec(kind: ModelKind) -> ModelSpec {
        ModelSpec {
            name: "m".into(),
            kind,
            provider: Provider::Local,
            base_url: String::new(),
            model: "m".into(),
            api_key: String::new(),
            max_tokens: 512,
        }
    }

    fn ctx(top_n: i32) -> JobContext {
        JobContext {
            chat: ChatSettings {
                id: "c".into(),
                llm_model: "m".into(),
                llm_setting: serde_json::json!({}),
                prompt_config: serde_json::json!({}),
                similarity_threshold: 0.2,
                vector_similarity_weight: 0.3,
                top_n,
                top_k: 1024,
                rerank_model: String::new(),
                dataset_ids: vec!["d".into()],
                embedding_models: vec!["m".into()],
            },
            llm: spec(ModelKind::Chat),
            rerank: None,
            embedding: Some(spec(ModelKind::Embedding)),
            history: Vec::new(),
        }
    }

    #[test]
    fn a_chat_without_datasets_or_top_n_has_no_plan() {
        assert!(plan_of(&ctx(6)).is_some());
        assert!(plan_of(&ctx(0)).is_none());
        let mut none = ctx(6);
        none.chat.dataset_ids.clear();
        assert!(plan_of(&none).is_none());
        let mut no_model = ctx(6);
        no_model.embedding = None;
        assert!(plan_of(&no_model).is_none());
    }

    #[test]
    fn early_candidates_are_used_only_for_the_same_plan_and_an_unrefined_question() {
        let early = || Early {
            plan: plan_of(&ctx(6)).expect("searches"),
            found: Some(Candidates::default()),
        };
        assert!(early().usable(&ctx(6), false).is_some());
        assert!(early().usable(&ctx(6), true).is_none());
        assert!(early().usable(&ctx(1), false).is_none());
        let mut reranked = ctx(6);
        reranked.rerank = Some(spec(ModelKind::Rerank));
        assert!(early().usable(&reranked, false).is_none());
        // The question's embedding failed: searched again.
        let failed = Early {
            plan: plan_of(&ctx(6)).expect("searches"),
            found: None,
        };
        assert!(failed.usable(&ctx(6), false).is_none());
    }
}
