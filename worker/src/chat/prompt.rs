//! Step 3: build the messages sent to the model, as RAGFlow does.
//!
//! - The knowledge block lists each retrieved chunk as `ID: i / Title / Content`, cut to 97% of
//!   the model's token budget.
//! - The chat's system prompt gets `{knowledge}` and the other `{variables}` filled in; when
//!   citations are on, the citation instruction is appended.
//! - History (earlier turns) is added newest-last and trimmed oldest-first to fit 95% of the
//!   budget.

use ragq_common::event::RefChunk;
use ragq_common::text::approx_tokens;
use serde_json::{Map, Value};

use ragq_common::providers::Message;

use super::context::Turn;

/// The citation instruction appended to the system prompt when quoting is on.
pub const CITATION_PROMPT: &str = "\n\n# Citations\n\
- Cite the knowledge you use by appending its ID in the form [ID:i] to the sentence, e.g. \
\"The queue is durable [ID:0].\"\n\
- Use at most 4 citations per sentence and only IDs that appear in the knowledge above.\n\
- Do not cite anything when the knowledge does not contain the answer.";

/// Formats retrieved chunks into the knowledge block, within `budget` tokens.
pub fn knowledge(chunks: &[RefChunk], budget: usize) -> Vec<String> {
    let mut used = 0;
    let mut out = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let entry = format!(
            "\nID: {i}\n├── Title: {}\n└── Content:\n{}",
            c.document_name, c.content
        );
        let cost = approx_tokens(&entry);
        if used + cost > budget && !out.is_empty() {
            break;
        }
        used += cost;
        out.push(entry);
    }
    out
}

/// Fills `{name}` placeholders in `template`; unknown placeholders are left as they are.
pub fn fill(template: &str, vars: &Map<String, Value>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close)
                if after[..close]
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_')
                    && close > 0 =>
            {
                let name = &after[..close];
                match vars.get(name) {
                    Some(Value::String(s)) => out.push_str(s),
                    Some(v) => out.push_str(&v.to_string()),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Inputs of [`build`].
pub struct PromptInput<'a> {
    pub system_template: &'a str,
    pub knowledge: &'a [String],
    pub variables: &'a Map<String, Value>,
    /// Declared variables (name, optional): optional ones that are missing become empty.
    pub parameters: &'a [(String, bool)],
    pub quote: bool,
    pub history: &'a [Turn],
    pub question: &'a str,
    pub max_tokens: usize,
}

/// Returns the messages for the model and the system prompt used.
pub fn build(input: &PromptInput<'_>) -> (Vec<Message>, String) {
    let mut vars = input.variables.clone();
    for (name, _) in input.parameters {
        if name != "knowledge" && !vars.contains_key(name) {
            vars.insert(name.clone(), Value::String(String::new()));
        }
    }
    let knowledge = if input.knowledge.is_empty() {
        String::new()
    } else {
        format!("\n------\n{}", input.knowledge.join("\n\n------\n\n"))
    };
    vars.insert("knowledge".into(), Value::String(knowledge));
    let mut system = fill(input.system_template, &vars);
    if input.quote && !input.knowledge.is_empty() {
        system.push_str(CITATION_PROMPT);
    }

    let budget = input.max_tokens * 95 / 100;
    let mut used = approx_tokens(&system) + approx_tokens(input.question);
    let mut kept = 0;
    for turn in input.history.iter().rev() {
        let cost = approx_tokens(&turn.question) + approx_tokens(&turn.answer);
        if used + cost > budget {
            break;
        }
        used += cost;
        kept += 1;
    }
    let mut messages = Vec::with_capacity(2 + kept * 2);
    messages.push(Message {
        role: "system",
        content: system.clone(),
    });
    for turn in &input.history[input.history.len() - kept..] {
        messages.push(Message {
            role: "user",
            content: turn.question.clone(),
        });
        messages.push(Message {
            role: "assistant",
            content: strip_citations(&turn.answer),
        });
    }
    messages.push(Message {
        role: "user",
        content: input.question.to_string(),
    });
    (messages, system)
}

/// Removes `[ID:n]` markers (earlier answers are shown to the model without them).
pub fn strip_citations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("[ID:") {
        let after = &rest[pos + 4..];
        match after.find(']') {
            Some(end) if after[..end].trim().chars().all(|c| c.is_ascii_digit()) && end > 0 => {
                out.push_str(rest[..pos].trim_end_matches(' '));
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str(&rest[..pos + 4]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(doc: &str, text: &str) -> RefChunk {
        RefChunk {
            document_name: doc.into(),
            content: text.into(),
            ..Default::default()
        }
    }

    #[test]
    fn fills_knowledge_and_variables() {
        let k = knowledge(&[chunk("a.md", "alpha"), chunk("b.md", "beta")], 1000);
        let mut vars = Map::new();
        vars.insert("lang".into(), Value::String("English".into()));
        let (msgs, system) = build(&PromptInput {
            system_template: "Answer in {lang}. Knowledge: {knowledge} {missing} {x y}",
            knowledge: &k,
            variables: &vars,
            parameters: &[("knowledge".into(), false)],
            quote: true,
            history: &[Turn {
                question: "q1".into(),
                answer: "a1 [ID:0]".into(),
            }],
            question: "q2",
            max_tokens: 1000,
        });
        assert!(system.starts_with(
            "Answer in English. Knowledge: \n------\n\nID: 0\n├── Title: a.md\n└── Content:\nalpha"
        ));
        assert!(system.contains("\n\n------\n\n\nID: 1\n├── Title: b.md"));
        assert!(system.contains("{missing} {x y}"));
        assert!(system.contains("[ID:i]"));
        assert_eq!(msgs.len(), 4);
        assert_eq!(msgs[2].content, "a1");
        assert_eq!(msgs[3].content, "q2");
    }

    #[test]
    fn history_is_trimmed_oldest_first() {
        let long = "word ".repeat(400);
        let history = vec![
            Turn {
                question: long.clone(),
                answer: long.clone(),
            },
            Turn {
                question: "recent".into(),
                answer: "yes".into(),
            },
        ];
        let (msgs, _) = build(&PromptInput {
            system_template: "s",
            knowledge: &[],
            variables: &Map::new(),
            parameters: &[],
            quote: false,
            history: &history,
            question: "q",
            max_tokens: 500,
        });
        assert_eq!(msgs.len(), 4);
        assert_eq!(msgs[1].content, "recent");
    }

    #[test]
    fn strips_citations() {
        assert_eq!(strip_citations("A [ID:0]. B [ID:12] [ID:x]"), "A. B [ID:x]");
    }
}
