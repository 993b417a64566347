//! Step 1: load what a job needs from PostgreSQL — the chat's settings, its models and the
//! session's history — in one statement, which also confirms that the chat is live and the
//! session is the chat's (the ingress may have answered that from its cache). No connection is
//! kept after this step.

use ragq_common::job::{ChatMessage, Job, JobKind, Role};
use serde_json::Value;
use sqlx::PgPool;

use crate::job::error::StepError;
use ragq_common::models::StoredModel;
use ragq_common::providers::{ModelKind, ModelSpec};
use ragq_common::secret::SecretKeys;

/// A chat assistant's settings (the `chats` row).
#[derive(Clone, Debug, serde::Deserialize)]
pub struct ChatSettings {
    pub id: String,
    pub llm_model: String,
    pub llm_setting: Value,
    pub prompt_config: Value,
    pub similarity_threshold: f32,
    pub vector_similarity_weight: f32,
    pub top_n: i32,
    pub top_k: i32,
    pub rerank_model: String,
    pub dataset_ids: Vec<String>,
    /// Distinct embedding models of the chat's datasets (one is required).
    pub embedding_models: Vec<String>,
}

impl ChatSettings {
    fn prompt_str(&self, key: &str) -> Option<&str> {
        self.prompt_config.get(key).and_then(Value::as_str)
    }
    /// The system prompt template (with `{knowledge}`).
    pub fn system(&self) -> &str {
        self.prompt_str("system").unwrap_or("")
    }
    /// Answer given when retrieval finds nothing; `None` (or empty) = ask the model anyway.
    pub fn empty_response(&self) -> Option<&str> {
        self.prompt_str("empty_response").filter(|s| !s.is_empty())
    }
    /// Cite sources (`quote`, default true).
    pub fn quote(&self) -> bool {
        self.prompt_config
            .get("quote")
            .and_then(Value::as_bool)
            .unwrap_or(true)
    }
    /// Rewrite follow-up questions before retrieval (`refine_multiturn`, default true).
    pub fn refine_multiturn(&self) -> bool {
        self.prompt_config
            .get("refine_multiturn")
            .and_then(Value::as_bool)
            .unwrap_or(true)
    }
    /// Declared prompt variables: (name, optional).
    pub fn parameters(&self) -> Vec<(String, bool)> {
        self.prompt_config
            .get("parameters")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|p| {
                        let key = p.get("key")?.as_str()?.to_string();
                        let optional = p.get("optional").and_then(Value::as_bool).unwrap_or(false);
                        Some((key, optional))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One earlier question and its answer.
#[derive(Clone, Debug, sqlx::FromRow, serde::Deserialize)]
pub struct Turn {
    pub question: String,
    pub answer: String,
}

/// Everything loaded for a job.
pub struct JobContext {
    pub chat: ChatSettings,
    pub llm: ModelSpec,
    pub rerank: Option<ModelSpec>,
    pub embedding: Option<ModelSpec>,
    pub history: Vec<Turn>,
}

/// How many earlier turns are loaded (the prompt builder then fits them to the model's budget).
const HISTORY_TURNS: i64 = 50;

/// The statement [`load`] runs (as `to_json` of its row) and that `super::early_search` runs
/// beside the chat's search: the chat's settings, the session's recent turns and the tenant's
/// models, one row (none when the tenant has no such live chat). Parameters: `$1` chat, `$2`
/// tenant, `$3` session (NULL when the job has none), `$4` the job (its own turn is not
/// history), `$5` [`HISTORY_TURNS`]; bound by [`bind`].
pub const CONTEXT_SQL: &str = "SELECT c.id, c.llm_model, c.llm_setting, c.prompt_config, c.similarity_threshold,
                c.vector_similarity_weight, c.top_n, c.top_k, c.rerank_model, c.dataset_ids,
                ARRAY(SELECT DISTINCT d.embedding_model FROM datasets d
                      WHERE d.id = ANY(c.dataset_ids) AND d.tenant_id = c.tenant_id) AS embedding_models,
                COALESCE((SELECT json_agg(json_build_object('question', t.question, 'answer', t.answer)
                                          ORDER BY t.seq)
                          FROM (SELECT seq, question, answer FROM turns
                                WHERE session_id = $3 AND status IN ('done', 'stopped') AND job_id <> $4
                                ORDER BY seq DESC LIMIT $5) t), '[]') AS history,
                -- The tenant's models are few: take them all and pick in memory. The fields are
                -- those of `models::StoredModel`.
                COALESCE((SELECT json_agg(json_build_object('tenant_id', m.tenant_id,
                                  'name', m.name, 'kind', m.kind,
                                  'provider', m.provider, 'base_url', m.base_url, 'model', m.model,
                                  'api_key', m.api_key, 'max_tokens', m.max_tokens))
                          FROM models m WHERE m.tenant_id = c.tenant_id), '[]') AS models,
                -- The ingress checked the session too, but may have trusted its cache of
                -- recent checks (api/src/caches.rs, AccessCache): a session deleted through
                -- another replica is refused here.
                (SELECT true FROM sessions s WHERE s.id = $3 AND s.chat_id = c.id) AS session_ok
         FROM chats c WHERE c.id = $1 AND c.tenant_id = $2 AND c.status = '1'";

/// [`CONTEXT_SQL`]'s row, read as JSON (`to_json` of the row).
#[derive(serde::Deserialize)]
struct ContextRow {
    #[serde(flatten)]
    chat: ChatSettings,
    history: Vec<Turn>,
    models: Vec<StoredModel>,
    /// The job's session is the chat's (NULL when the job has none, or the session is gone).
    session_ok: Option<bool>,
}

/// The session whose turns are the job's history: none for OpenAI requests and batch lines,
/// which carry their history in the job.
fn session_of(job: &Job) -> Option<&str> {
    match job.kind {
        JobKind::OpenaiChat | JobKind::BatchLine => None,
        _ => job.session_id.as_deref(),
    }
}

/// Binds [`CONTEXT_SQL`]'s parameters for `job`, after those `query` already has.
pub fn bind<'a, O>(
    query: sqlx::query::QueryAs<'a, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    job: &'a Job,
) -> sqlx::query::QueryAs<'a, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(&job.chat_id)
        .bind(&job.tenant_id)
        .bind(session_of(job))
        .bind(job.id)
        .bind(HISTORY_TURNS)
}

/// Loads the job's context; the API keys of the models it uses are decrypted with `keys`.
pub async fn load(db: &PgPool, keys: &SecretKeys, job: &Job) -> Result<JobContext, StepError> {
    static SQL: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("SELECT to_json(ctx)::text FROM ({CONTEXT_SQL}) ctx"));
    let row: Option<(String,)> = bind(sqlx::query_as(SQL.as_str()), job)
        .fetch_optional(db)
        .await?;
    from_row(row.map(|(json,)| json).as_deref(), keys, job)
}

/// The job's context from [`CONTEXT_SQL`]'s row as JSON text (`None`: no row — not the
/// tenant's live chat); checks the session and picks and decrypts the chat's models.
pub fn from_row(row: Option<&str>, keys: &SecretKeys, job: &Job) -> Result<JobContext, StepError> {
    let Some(row) = row else {
        return Err(StepError::BadRequest(format!(
            "You don't own the chat {}",
            job.chat_id
        )));
    };
    let ContextRow {
        chat,
        history,
        models,
        session_ok,
    } = serde_json::from_str(row)
        .map_err(|e| StepError::Internal(format!("the chat's context row did not decode: {e}")))?;
    let session_id = session_of(job);
    if let Some(session) = session_id
        && session_ok != Some(true)
    {
        return Err(StepError::BadRequest(format!(
            "You don't own the session {session}"
        )));
    }
    let history = match job.kind {
        JobKind::OpenaiChat | JobKind::BatchLine => turns_from_messages(&job.messages),
        _ => history,
    };
    let models = models.into_iter().filter(|m| match m.kind.as_str() {
        "chat" => m.name == chat.llm_model,
        "rerank" => m.name == chat.rerank_model,
        _ => chat.embedding_models.contains(&m.name),
    });

    let mut llm = None;
    let mut rerank = None;
    let mut embeddings = Vec::new();
    for stored in models {
        let m = stored.spec(keys)?;
        match m.kind {
            ModelKind::Chat => llm = Some(m),
            ModelKind::Rerank => rerank = Some(m),
            ModelKind::Embedding => embeddings.push(m),
        }
    }
    let llm = llm.ok_or_else(|| {
        StepError::BadRequest(format!("`llm.model_name` {} doesn't exist", chat.llm_model))
    })?;
    if !chat.rerank_model.is_empty() && rerank.is_none() {
        return Err(StepError::BadRequest(format!(
            "`rerank_model` {} doesn't exist",
            chat.rerank_model
        )));
    }
    if embeddings.len() > 1 {
        return Err(StepError::BadRequest(
            "Datasets use different embedding models.".into(),
        ));
    }
    let embedding = embeddings.pop();
    if !chat.dataset_ids.is_empty() && embedding.is_none() {
        return Err(StepError::BadRequest(
            "The chat's datasets have no usable embedding model.".into(),
        ));
    }
    Ok(JobContext {
        chat,
        llm,
        rerank,
        embedding,
        history,
    })
}

/// Earlier turns of a conversation carried in the job (OpenAI requests): each user message with
/// the assistant message that follows it. System messages and leading assistant messages are
/// dropped, as RAGFlow does.
pub fn turns_from_messages(messages: &[ChatMessage]) -> Vec<Turn> {
    let mut turns = Vec::new();
    let mut question: Option<&str> = None;
    for m in messages {
        match m.role {
            Role::User => {
                if let Some(q) = question.take() {
                    turns.push(Turn {
                        question: q.to_string(),
                        answer: String::new(),
                    });
                }
                question = Some(&m.content);
            }
            Role::Assistant => {
                if let Some(q) = question.take() {
                    turns.push(Turn {
                        question: q.to_string(),
                        answer: m.content.clone(),
                    });
                }
            }
            Role::System => {}
        }
    }
    if let Some(q) = question {
        turns.push(Turn {
            question: q.to_string(),
            answer: String::new(),
        });
    }
    turns
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(role: Role, c: &str) -> ChatMessage {
        ChatMessage {
            role,
            content: c.into(),
        }
    }

    #[test]
    fn pairs_user_and_assistant_messages() {
        let turns = turns_from_messages(&[
            m(Role::Assistant, "hello"),
            m(Role::System, "sys"),
            m(Role::User, "q1"),
            m(Role::Assistant, "a1"),
            m(Role::User, "q2"),
        ]);
        assert_eq!(turns.len(), 2);
        assert_eq!(
            (turns[0].question.as_str(), turns[0].answer.as_str()),
            ("q1", "a1")
        );
        assert_eq!(
            (turns[1].question.as_str(), turns[1].answer.as_str()),
            ("q2", "")
        );
    }
}
