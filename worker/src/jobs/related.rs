//! Related-questions job (`POST /api/v1/sessions/related_questions`,
//! `POST /api/v1/searchbots/related_questions`): one call of the tenant's default chat model
//! with RAGFlow v0.22.1's prompt (temperature 0.9); the lines of the answer that start with a
//! number, a dot and a space (`^[0-9]+\. `) become the list, without that prefix. Sends one
//! `result` event (the list), then `done`.

use ragq_common::event::EventBody;
use ragq_common::job::Job;
use tokio_util::sync::CancellationToken;

use super::datasets;
use crate::chat::generate;
use crate::job::deps::Deps;
use crate::job::error::StepError;
use crate::job::events::JobEvents;
use ragq_common::providers::{GenConf, Message};

/// `params` of a related-questions job.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Params {
    #[serde(default)]
    pub industry: String,
}

/// RAGFlow's system prompt, with the industry line when one is given.
pub fn system_prompt(industry: &str) -> String {
    let mut prompt = String::from(
        "
Objective: To generate search terms related to the user's search keywords, helping users find more valuable information.
Instructions:
 - Based on the keywords provided by the user, generate 5-10 related search terms.
 - Each search term should be directly or indirectly related to the keyword, guiding the user to find more valuable information.
 - Use common, general terms as much as possible, avoiding obscure words or technical jargon.
 - Keep the term length between 2-4 words, concise and clear.
 - DO NOT translate, use the language of the original keywords.
",
    );
    if !industry.is_empty() {
        prompt.push_str(&format!(
            " - Ensure all search terms are relevant to the industry: {industry}.\n"
        ));
    }
    prompt.push_str(
        "
### Example:
Keywords: Chinese football
Related search terms:
1. Current status of Chinese football
2. Reform of Chinese football
3. Youth training of Chinese football
4. Chinese football in the Asian Cup
5. Chinese football in the World Cup

Reason:
 - When searching, users often only use one or two keywords, making it difficult to fully express their information needs.
 - Generating related search terms can help users dig deeper into relevant information and improve search efficiency.
 - At the same time, related terms can also help search engines better understand user needs and return more accurate search results.

",
    );
    prompt
}

/// The user message.
pub fn user_message(question: &str) -> String {
    format!("\nKeywords: {question}\nRelated search terms:\n    ")
}

/// The numbered lines of `answer`, without their `N. ` prefix.
pub fn parse(answer: &str) -> Vec<String> {
    answer
        .lines()
        .filter_map(|line| {
            let digits = line.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            line[digits..].strip_prefix(". ").map(str::to_string)
        })
        .collect()
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
    let params: Params = if job.params.is_null() {
        Params::default()
    } else {
        serde_json::from_value(job.params.clone())
            .map_err(|e| StepError::BadRequest(format!("bad job parameters: {e}")))?
    };
    let (_, model) = datasets::default_chat(p, &job.tenant_id).await?;
    let messages = vec![
        Message {
            role: "system",
            content: system_prompt(&params.industry),
        },
        Message {
            role: "user",
            content: user_message(&job.question),
        },
    ];
    let conf = GenConf {
        temperature: Some(0.9),
        ..Default::default()
    };
    let generated = generate::generate(model, &messages, &conf, events, &p.limits, cancel).await?;
    if generated.stopped {
        return Err(StepError::Cancelled);
    }
    let list = parse(&generated.answer);
    events
        .send(EventBody::Result {
            data: serde_json::json!(list),
        })
        .await?;
    datasets::done(job, events, "", String::new(), 0).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_lines_become_the_list() {
        assert_eq!(
            parse("Here:\n1. a b\n2. c\n10. d\n- e\n3.f\n 4. g"),
            vec!["a b", "c", "d"]
        );
        assert!(parse("").is_empty());
        assert!(system_prompt("retail").contains("relevant to the industry: retail."));
        assert!(!system_prompt("").contains("industry:"));
    }
}
