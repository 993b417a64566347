//! Ask job (`POST /api/v1/sessions/ask`, `POST /api/v1/searchbots/ask`; RAGFlow's `ask`):
//! answer a question from datasets without a chat or a session.
//!
//! As RAGFlow v0.22.1 `dialog_service.ask`: the 12 best chunks of the datasets (similarity
//! threshold 0.1, vector weight 0.3), each formatted as in a chat's knowledge block and joined
//! with newlines into RAGFlow's ask prompt ("Role: You're a smart assistant. Your name is
//! Miss R. …"), the question as the only user message, the tenant's default chat model at
//! temperature 0.1. The answer streams as `delta` events; citations are then normalised or
//! inserted and the final `reference` keeps the cited documents (all of them when none is
//! cited, as RAGFlow). Nothing is saved.

use ragq_common::event::{EventBody, Reference};
use ragq_common::job::Job;
use ragq_common::text::approx_tokens;
use tokio_util::sync::CancellationToken;

use super::datasets::{self, DatasetParams};
use crate::chat::{citations, generate, prompt};
use crate::job::cancel::until_cancelled;
use crate::job::deps::Deps;
use crate::job::error::StepError;
use crate::job::events::JobEvents;
use ragq_common::providers::{GenConf, Message};

/// RAGFlow's ask prompt; `{knowledge}` is the knowledge entries joined with newlines.
pub const ASK_PROMPT: &str = "
Role: You're a smart assistant. Your name is Miss R.
Task: Summarize the information from knowledge bases and answer user's question.
Requirements and restriction:
  - DO NOT make things up, especially for numbers.
  - If the information from knowledge is irrelevant with user's question, JUST SAY: Sorry, no relevant information provided.
  - Answer with markdown format text.
  - Answer in language of user's question.
  - DO NOT make things up, especially for numbers.

### Information from knowledge bases
{knowledge}

The above is information from knowledge bases.

";

/// Similarity threshold of RAGFlow's ask search.
const THRESHOLD: f32 = 0.1;

/// The system prompt for `knowledge`.
pub fn system_prompt(knowledge: &[String]) -> String {
    ASK_PROMPT.replace("{knowledge}", &knowledge.join("\n"))
}

pub async fn run(
    p: &Deps,
    job: &Job,
    events: &mut JobEvents,
    cancel: &CancellationToken,
) -> Result<(), StepError> {
    if cancel.is_cancelled() {
        return Err(StepError::Cancelled);
    }
    if events.attempt() > 0 {
        // Nothing is saved: a redelivery answers again from the start.
        events.continue_after(p.bus.last_seq(job.id).await?);
        events.send(EventBody::Reset).await?;
    }
    let params = DatasetParams::of(job)?;
    let prepared = async {
        let embedder = datasets::embedder(p, &job.tenant_id, &params.dataset_ids).await?;
        let (spec, model) = datasets::default_chat(p, &job.tenant_id).await?;
        let reference =
            datasets::search(p, embedder, &params.dataset_ids, THRESHOLD, &job.question).await?;
        Ok::<_, StepError>((spec, model, reference))
    };
    let Some(prepared) = until_cancelled(cancel, prepared).await else {
        return datasets::done(job, events, "", String::new(), 0).await;
    };
    let (spec, model, reference) = prepared?;
    if !reference.chunks.is_empty() {
        events
            .send(EventBody::Reference {
                reference: reference.clone(),
            })
            .await?;
    }
    let max_tokens = spec.max_tokens.max(256) as usize;
    let knowledge = prompt::knowledge(&reference.chunks, max_tokens * 97 / 100);
    let system = system_prompt(&knowledge);
    let messages = vec![
        Message {
            role: "system",
            content: system.clone(),
        },
        Message {
            role: "user",
            content: job.question.clone(),
        },
    ];
    let conf = GenConf {
        temperature: Some(0.1),
        max_tokens: Some((max_tokens as u32).min(2048)),
        ..Default::default()
    };
    let generated = generate::generate(model, &messages, &conf, events, &p.limits, cancel).await?;
    let prompt_tokens: u64 = messages
        .iter()
        .map(|m| approx_tokens(&m.content) as u64)
        .sum();
    if generated.stopped {
        return datasets::done(job, events, &generated.answer, system, prompt_tokens).await;
    }
    let (answer, cited) = citations::decorate(&generated.answer, &reference.chunks);
    if !reference.chunks.is_empty() {
        let cited_aggs = citations::cited_doc_aggs(&reference.doc_aggs, &reference.chunks, &cited);
        if !cited_aggs.is_empty() && cited_aggs.len() != reference.doc_aggs.len() {
            events
                .send(EventBody::Reference {
                    reference: Reference {
                        doc_aggs: cited_aggs,
                        ..reference
                    },
                })
                .await?;
        }
    }
    datasets::done(job, events, &answer, system, prompt_tokens).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_has_ragflow_shape() {
        let s = system_prompt(&["\nID: 0\n├── Title: a\n└── Content:\nx".into()]);
        assert!(s.contains("Your name is Miss R."));
        assert!(s.contains("### Information from knowledge bases\n\nID: 0"));
        assert!(
            s.trim_end()
                .ends_with("The above is information from knowledge bases.")
        );
    }
}
