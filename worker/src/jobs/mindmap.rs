//! Mind-map job (`POST /api/v1/sessions/mindmap`, `POST /api/v1/searchbots/mindmap`; RAGFlow's
//! `gen_mindmap`): the 12 best chunks of the datasets for the question (threshold 0.2, vector
//! weight 0.3) are given to the tenant's default chat model with RAGFlow's mind-map prompt
//! (`MindMapExtractor`), asked to answer JSON instead of Markdown. The answer is parsed into a
//! nested tree `{"id": …, "children": [ … ]}` (a node's `name` is accepted for `id`; code fences
//! around the JSON are ignored) and sent as one `result` event, then `done`. An answer that is
//! not such a tree fails the job with `bad_request` and [`NOT_A_MIND_MAP`].

use ragq_common::event::EventBody;
use ragq_common::job::Job;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::datasets::{self, DatasetParams};
use crate::chat::generate;
use crate::job::cancel::until_cancelled;
use crate::job::deps::Deps;
use crate::job::error::StepError;
use crate::job::events::JobEvents;
use ragq_common::providers::{GenConf, Message};

/// The client text of a model answer that is not a mind map.
pub const NOT_A_MIND_MAP: &str = "The model's answer is not a valid mind map (JSON of nested {\"id\", \"children\"} nodes expected).";

/// Deepest tree accepted.
const MAX_DEPTH: usize = 32;

/// The line heading each document's text in the prompt.
pub const DOCUMENT_HEADING: &str = "### Document: ";

pub const PROMPT: &str = "- Role: You're a talent text processor to summarize a piece of text into a mind map.

- Step of task:
  1. Generate a title for user's 'TEXT'.
  2. Classify the 'TEXT' into sections of a mind map.
  3. If the subject matter is really complex, split them into sub-sections and sub-subsections.
  4. Add a shot content summary of the bottom level section.

- Output requirement:
  - Generate at least 4 levels.
  - Always try to maximize the number of sub-sections.
  - In language of 'Text'
  - MUST BE JSON and nothing else: every node is {\"id\": \"<title>\", \"children\": [<nodes>]}, the root is the title.

-TEXT-
";

/// Parses the model's answer into a normalised tree (`id`, `children` on every node).
pub fn parse(answer: &str) -> Option<Value> {
    let text = answer.trim();
    let text = text
        .strip_prefix("```json")
        .or_else(|| text.strip_prefix("```"))
        .map(|t| t.trim_end().trim_end_matches("```"))
        .unwrap_or(text);
    let value: Value = serde_json::from_str(text.trim()).ok()?;
    node(&value, 0)
}

fn node(v: &Value, depth: usize) -> Option<Value> {
    if depth > MAX_DEPTH {
        return None;
    }
    let obj: &Map<String, Value> = v.as_object()?;
    let id = obj.get("id").or_else(|| obj.get("name"))?.as_str()?;
    let children = match obj.get("children") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|c| node(c, depth + 1))
            .collect::<Option<Vec<_>>>()?,
        Some(_) => return None,
    };
    Some(json!({"id": id, "children": children}))
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
    let params = DatasetParams::of(job)?;
    let prepared = async {
        let embedder = datasets::embedder(p, &job.tenant_id, &params.dataset_ids).await?;
        let (spec, model) = datasets::default_chat(p, &job.tenant_id).await?;
        let reference =
            datasets::search(p, embedder, &params.dataset_ids, 0.2, &job.question).await?;
        Ok::<_, StepError>((spec, model, reference))
    };
    let Some(prepared) = until_cancelled(cancel, prepared).await else {
        return Err(StepError::Cancelled);
    };
    let (spec, model, reference) = prepared?;
    if reference.chunks.is_empty() {
        // Nothing to summarise: an empty map, without asking the model.
        events.send(EventBody::Result { data: json!({}) }).await?;
        return datasets::done(job, events, "", String::new(), 0).await;
    }
    let budget = spec.max_tokens.max(256) as usize * 80 / 100;
    let mut text = String::new();
    for c in &reference.chunks {
        let entry = format!("{DOCUMENT_HEADING}{}\n{}\n\n", c.document_name, c.content);
        if !text.is_empty()
            && ragq_common::text::approx_tokens(&text) + ragq_common::text::approx_tokens(&entry)
                > budget
        {
            break;
        }
        text.push_str(&entry);
    }
    let messages = vec![
        Message {
            role: "system",
            content: format!("{PROMPT}{text}"),
        },
        Message {
            role: "user",
            content: "Output:".into(),
        },
    ];
    let conf = GenConf {
        temperature: Some(0.5),
        ..Default::default()
    };
    let generated = generate::generate(model, &messages, &conf, events, &p.limits, cancel).await?;
    if generated.stopped {
        return Err(StepError::Cancelled);
    }
    let Some(tree) = parse(&generated.answer) else {
        return Err(StepError::BadRequest(NOT_A_MIND_MAP.into()));
    };
    events.send(EventBody::Result { data: tree }).await?;
    datasets::done(job, events, "", String::new(), 0).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_trees_and_refuses_the_rest() {
        let t = parse("```json\n{\"name\": \"r\", \"children\": [{\"id\": \"a\"}]}\n```").unwrap();
        assert_eq!(
            t,
            json!({"id": "r", "children": [{"id": "a", "children": []}]})
        );
        assert!(parse("{\"id\": \"r\", \"children\": [").is_none());
        assert!(parse("[1, 2]").is_none());
        assert!(parse("{\"id\": 3}").is_none());
        assert!(parse("{\"id\": \"r\", \"children\": [{\"x\": 1}]}").is_none());
        assert!(parse("not json").is_none());
    }
}
