//! Search plans: the settings a chat's search runs with, remembered per chat by each worker so
//! that its next question can be searched before its settings are read again
//! (`crate::chat::early_search` runs that search and checks the plan against the settings it
//! reads in the same statement).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ragq_common::providers::ModelSpec;

use super::Params;

/// What a chat's search runs with: the settings the search statement reads by, and how the
/// candidates are scored. Two plans are equal when they give the same candidates.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchPlan {
    pub dataset_ids: Vec<String>,
    pub top_n: usize,
    pub top_k: i64,
    /// A rerank model scores the candidates: no question embedding, no chunk embeddings read.
    pub reranked: bool,
    /// The model that embeds the question when the cosine is the semantic score.
    pub embedding: ModelSpec,
}

impl SearchPlan {
    /// The search parameters the statement binds. The thresholds play no part in it: they are
    /// applied to the candidates afterwards, from the settings that were read.
    pub fn params(&self) -> Params {
        Params {
            dataset_ids: self.dataset_ids.clone(),
            top_n: self.top_n,
            top_k: self.top_k,
            similarity_threshold: 0.0,
            vector_similarity_weight: 0.0,
            document_ids: Vec::new(),
        }
    }
}

/// A remembered plan, with whether the chat rewrites follow-up questions before searching
/// (`refine_multiturn`).
#[derive(Clone, Debug, PartialEq)]
pub struct Remembered {
    pub plan: SearchPlan,
    pub refines: bool,
}

/// Each chat's last plan, per worker process, keyed by tenant and chat.
#[derive(Default)]
pub struct SearchPlans {
    plans: Mutex<HashMap<(String, String), (Remembered, Instant)>>,
}

impl SearchPlans {
    /// A plan older than this is not used (a chat asked again after a pause reads its settings
    /// first).
    pub const TTL: Duration = Duration::from_secs(300);
    /// Chats remembered at most; the map is emptied when it would grow past this.
    const CAPACITY: usize = 10_000;

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), (Remembered, Instant)>> {
        // A plain cache: a panic elsewhere cannot leave it inconsistent.
        self.plans.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The plan remembered for the chat, if fresh.
    pub fn get(&self, tenant: &str, chat: &str) -> Option<Remembered> {
        let plans = self.lock();
        let (r, at) = plans.get(&(tenant.to_string(), chat.to_string()))?;
        (at.elapsed() < Self::TTL).then(|| r.clone())
    }

    /// Remembers the chat's plan (`None`: the chat does not search; forget it).
    pub fn put(&self, tenant: &str, chat: &str, plan: Option<Remembered>) {
        let key = (tenant.to_string(), chat.to_string());
        let mut plans = self.lock();
        match plan {
            Some(plan) => {
                if plans.len() >= Self::CAPACITY && !plans.contains_key(&key) {
                    plans.clear();
                }
                plans.insert(key, (plan, Instant::now()));
            }
            None => {
                plans.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ragq_common::providers::{ModelKind, Provider};

    fn plan(top_n: usize) -> Remembered {
        Remembered {
            plan: SearchPlan {
                dataset_ids: vec!["d".into()],
                top_n,
                top_k: 1024,
                reranked: false,
                embedding: ModelSpec {
                    name: "e".into(),
                    kind: ModelKind::Embedding,
                    provider: Provider::Local,
                    base_url: String::new(),
                    model: "e".into(),
                    api_key: String::new(),
                    max_tokens: 512,
                },
            },
            refines: false,
        }
    }

    #[test]
    fn a_plan_is_remembered_per_tenant_and_chat_until_replaced_or_forgotten() {
        let plans = SearchPlans::default();
        assert_eq!(plans.get("t", "c"), None);
        plans.put("t", "c", Some(plan(6)));
        assert_eq!(plans.get("t", "c"), Some(plan(6)));
        assert_eq!(plans.get("t", "c2"), None);
        assert_eq!(plans.get("t2", "c"), None);
        plans.put("t", "c", Some(plan(1)));
        assert_eq!(plans.get("t", "c"), Some(plan(1)));
        plans.put("t", "c", None);
        assert_eq!(plans.get("t", "c"), None);
    }
}
