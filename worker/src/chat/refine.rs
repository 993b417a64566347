//! Multi-turn question refinement, as RAGFlow's `full_question`: when a session already has
//! questions and the chat's `refine_multiturn` is on, the latest question is rewritten by the
//! chat's own model into a standalone question ("and for batch?" → "What is the delivery limit
//! for batch jobs?"), and *that* is what retrieval searches for. The conversation sent to the
//! model for the answer is unchanged.
//!
//! The rewrite costs one short LLM call before retrieval. If it fails or times out, the original
//! question is used: refinement improves retrieval, it must never fail a job.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::context::Turn;
use ragq_common::providers::{ChatModel, GenConf, Message};

/// Earlier turns shown to the model for the rewrite (RAGFlow uses the last three questions).
const TURNS: usize = 2;

pub const SYSTEM: &str = "You are a helpful assistant. Rewrite the user's latest question into a complete, standalone question, using the conversation for context (resolve pronouns and references). If the latest question is already complete, return it unchanged. Answer with the question only, in the user's language.";

/// The rewrite request: a transcript ending with `Refined question:`.
pub fn request(history: &[Turn], question: &str) -> Vec<Message> {
    let mut transcript = String::from("Conversation:\n");
    for turn in &history[history.len().saturating_sub(TURNS)..] {
        transcript.push_str(&format!(
            "USER: {}\nASSISTANT: {}\n",
            turn.question,
            super::prompt::strip_citations(&turn.answer)
        ));
    }
    transcript.push_str(&format!("USER: {question}\n\nRefined question:"));
    vec![
        Message {
            role: "system",
            content: SYSTEM.into(),
        },
        Message {
            role: "user",
            content: transcript,
        },
    ]
}

/// The question to search for: the rewrite, or `question` itself when the rewrite fails.
pub async fn refine(
    model: Arc<dyn ChatModel>,
    history: &[Turn],
    question: &str,
    limit: Duration,
) -> String {
    let messages = request(history, question);
    let conf = GenConf {
        temperature: Some(0.0),
        max_tokens: Some(128),
        ..Default::default()
    };
    let rewrite = async {
        let mut stream = model.stream(&messages, &conf).await?;
        let mut text = String::new();
        while let Some(piece) = stream.next().await {
            text.push_str(&piece?);
        }
        Ok::<_, ragq_common::providers::ProviderError>(text)
    };
    match tokio::time::timeout(limit, rewrite).await {
        Ok(Ok(text)) if !text.trim().is_empty() => text.trim().to_string(),
        Ok(Ok(_)) => question.to_string(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "question refinement failed; searching with the question as asked");
            question.to_string()
        }
        Err(_) => {
            tracing::warn!("question refinement timed out; searching with the question as asked");
            question.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_keeps_the_last_turns_without_citations() {
        let history = vec![
            Turn {
                question: "q0".into(),
                answer: "a0".into(),
            },
            Turn {
                question: "q1".into(),
                answer: "a1 [ID:0]".into(),
            },
            Turn {
                question: "q2".into(),
                answer: "a2".into(),
            },
        ];
        let m = request(&history, "and then?");
        assert_eq!(
            m[1].content,
            "Conversation:\nUSER: q1\nASSISTANT: a1\nUSER: q2\nASSISTANT: a2\nUSER: and then?\n\nRefined question:"
        );
    }
}
