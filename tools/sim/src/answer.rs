//! Deterministic answer text for chat completions.
//!
//! The simulator never "thinks": the answer is a pure function of the messages and the token
//! budget, so an end-to-end test can predict every word.
//!
//! **With knowledge.** The ragq worker puts retrieved chunks into the prompt the way RAGFlow does:
//!
//! ```text
//! ID: 0
//! ├── Title: handbook.md
//! └── Content:
//! Workers pull jobs from the queue.
//! ------
//! ID: 1
//! ├── Title: faq.md
//! └── Content:
//! ...
//! ```
//!
//! When any message contains such a block, the answer is `According to <title of chunk 0>,`
//! followed by the content words of chunk 0, then chunk 1, ..., cut at `tokens - 1` words, then one
//! citation token `[ID:k]` per chunk whose content was used (`[ID:0]` alone when chunk 0 was
//! enough). An answer may therefore be shorter than `tokens` (not enough words) or longer (one
//! extra token per additional cited chunk). A chunk's content runs until a `------` line, the
//! next `ID:` header or the end of the message.
//!
//! **Without knowledge.** `You asked:` followed by the lower-cased words of the last user message,
//! padded with a fixed filler sentence repeated as needed: exactly `tokens` words.
//!
//! A *token* is one whitespace-separated word. [`Answer::text`] joins the tokens with single
//! spaces; streaming sends token `i` as `word + " "` (the last one without the space), so the
//! concatenated stream equals the non-streamed text.

/// Filler cycled after the echoed question when there is no knowledge block.
pub const FILLER: &str = "this simulated answer is deterministic and repeats so that every run \
                          streams the same number of tokens";

/// One message of a chat request, with its content flattened to text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, ...
    pub role: String,
    /// The text of the message (multi-part contents are joined with newlines).
    pub content: String,
}

impl ChatMessage {
    /// Convenience constructor.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// One retrieved chunk parsed from a knowledge block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnowledgeChunk<'a> {
    /// The text after `ID:`, e.g. `0`.
    pub id: &'a str,
    /// The `Title:` node, empty when absent.
    pub title: &'a str,
    /// Content lines, in order.
    pub content: Vec<&'a str>,
}

impl<'a> KnowledgeChunk<'a> {
    fn words(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.content.iter().flat_map(|line| line.split_whitespace())
    }
}

/// A deterministic answer: tokens joined by single spaces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// The full answer text, as returned by a non-streamed completion.
    pub text: String,
    /// Number of tokens (words) in `text`.
    pub tokens: usize,
}

impl Answer {
    fn from_words<S: AsRef<str>>(words: impl IntoIterator<Item = S>) -> Self {
        let mut text = String::new();
        let mut tokens = 0;
        for word in words {
            let word = word.as_ref();
            if word.is_empty() {
                continue;
            }
            if tokens > 0 {
                text.push(' ');
            }
            text.push_str(word);
            tokens += 1;
        }
        Self { text, tokens }
    }

    /// The streamed pieces: every word followed by one space, except the last.
    pub fn stream_tokens(&self) -> impl Iterator<Item = &str> + '_ {
        let mut pos = 0;
        std::iter::from_fn(move || {
            let (token, next) = next_token(&self.text, pos)?;
            pos = next;
            Some(token)
        })
    }
}

/// The streamed token starting at byte `pos` of an answer text and the position after it, or
/// `None` at the end. Tokens keep their trailing space so that they concatenate to the text.
pub(crate) fn next_token(text: &str, pos: usize) -> Option<(&str, usize)> {
    let rest = text.get(pos..).filter(|r| !r.is_empty())?;
    Some(match rest.find(' ') {
        Some(i) => (&rest[..=i], pos + i + 1),
        None => (rest, text.len()),
    })
}

/// Builds the answer for `messages` with a budget of `tokens` (see the module docs).
pub fn build(messages: &[ChatMessage], tokens: usize) -> Answer {
    if tokens == 0 {
        return Answer::default();
    }
    if let Some(question) = messages.last().and_then(|m| refine_request(&m.content)) {
        return Answer::from_words(question.split_whitespace());
    }
    if let Some(keywords) = messages.last().and_then(|m| related_request(&m.content)) {
        return budgeted(&related_answer(keywords), tokens);
    }
    if let Some(text) = messages.iter().find_map(|m| mindmap_request(&m.content)) {
        return budgeted(&mindmap_answer(text), tokens);
    }
    let chunks = messages
        .iter()
        .map(|m| parse_knowledge(&m.content))
        .find(|chunks| !chunks.is_empty());
    match chunks {
        Some(chunks) => knowledge_answer(&chunks, tokens),
        None => echo_answer(messages, tokens),
    }
}

/// Total whitespace-separated words of all messages: the simulated `prompt_tokens`.
pub fn prompt_tokens(messages: &[ChatMessage]) -> usize {
    messages
        .iter()
        .map(|m| m.content.split_whitespace().count())
        .sum()
}

fn knowledge_answer(chunks: &[KnowledgeChunk<'_>], tokens: usize) -> Answer {
    let budget = tokens - 1;
    let first = &chunks[0];
    let mut words: Vec<String> = vec!["According".into(), "to".into()];
    let mut title: Vec<String> = first.title.split_whitespace().map(String::from).collect();
    if title.is_empty() {
        title = vec!["the".into(), "knowledge".into()];
    }
    if let Some(last) = title.last_mut() {
        last.push(',');
    }
    words.extend(title);
    words.truncate(budget);

    let mut cited: Vec<&str> = Vec::new();
    'chunks: for chunk in chunks {
        for word in chunk.words() {
            if words.len() >= budget {
                break 'chunks;
            }
            if cited.last() != Some(&chunk.id) {
                cited.push(chunk.id);
            }
            words.push(word.to_string());
        }
    }
    if cited.is_empty() {
        cited.push(first.id);
    }
    words.extend(cited.iter().map(|id| format!("[ID:{id}]")));
    Answer::from_words(words)
}

fn echo_answer(messages: &[ChatMessage], tokens: usize) -> Answer {
    let question = messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map_or("", |m| m.content.as_str());
    let words = ["You", "asked:"]
        .into_iter()
        .map(String::from)
        .chain(question.split_whitespace().map(str::to_lowercase))
        .chain(FILLER.split_whitespace().cycle().map(String::from))
        .take(tokens);
    Answer::from_words(words)
}

/// Strips the box-drawing prefix of a tree node line (`├── `, `└── `, `│ `).
fn tree_node(line: &str) -> &str {
    line.trim_start_matches(|c: char| c.is_whitespace() || matches!(c, '├' | '└' | '│' | '─'))
}

/// `ID: <id>` with a single word id, as a chunk header.
fn chunk_header(line: &str) -> Option<&str> {
    let id = line.trim().strip_prefix("ID:")?.trim();
    let valid = !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_');
    valid.then_some(id)
}

/// A chunk separator: a line of at least six dashes.
fn is_separator(line: &str) -> bool {
    let t = line.trim();
    t.len() >= 6 && t.bytes().all(|b| b == b'-')
}

/// Parses the knowledge chunks in `text`; empty when it has no knowledge block. Only chunks that
/// have a `Content:` node count, so a stray `ID: 5` line in a question is not knowledge.
/// Lines that close the knowledge block in the prompts ragq (and RAGFlow) build: the default
/// template's "The above is the knowledge base." and ragq's citation instructions.
fn ends_knowledge(line: &str) -> bool {
    let line = line.trim_start();
    line.starts_with("The above is the knowledge base")
        || line.starts_with("The above is information from knowledge bases")
        || line.starts_with("# Citations")
}

pub fn parse_knowledge(text: &str) -> Vec<KnowledgeChunk<'_>> {
    struct Partial<'a> {
        chunk: KnowledgeChunk<'a>,
        has_content: bool,
    }
    let mut chunks = Vec::new();
    let mut current: Option<Partial<'_>> = None;
    fn finish<'a>(p: Option<Partial<'a>>, chunks: &mut Vec<KnowledgeChunk<'a>>) {
        if let Some(p) = p.filter(|p| p.has_content) {
            chunks.push(p.chunk);
        }
    }
    for line in text.lines() {
        if let Some(id) = chunk_header(line) {
            finish(current.take(), &mut chunks);
            current = Some(Partial {
                chunk: KnowledgeChunk {
                    id,
                    title: "",
                    content: Vec::new(),
                },
                has_content: false,
            });
            continue;
        }
        let Some(p) = current.as_mut() else { continue };
        if p.has_content {
            if is_separator(line) || ends_knowledge(line) {
                finish(current.take(), &mut chunks);
            } else {
                p.chunk.content.push(line);
            }
            continue;
        }
        let node = tree_node(line);
        if let Some(title) = node.strip_prefix("Title:") {
            p.chunk.title = title.trim();
        } else if let Some(rest) = node.strip_prefix("Content:") {
            p.has_content = true;
            if !rest.trim().is_empty() {
                p.chunk.content.push(rest);
            }
        } else if is_separator(line) {
            current = None;
        }
    }
    finish(current.take(), &mut chunks);
    chunks
}

/// A question-refinement request (the worker's multi-turn rewrite) ends with `Refined question:`
/// after a `USER:` / `ASSISTANT:` transcript. The simulator "refines" deterministically: it
/// answers with the latest `USER:` line unchanged.
fn refine_request(content: &str) -> Option<&str> {
    let body = content.trim_end().strip_suffix("Refined question:")?;
    body.lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER: "))
        .map(str::trim)
}

/// `text` cut to `tokens` space-separated tokens. Splitting on spaces only (not all whitespace)
/// keeps the newlines of a multi-line answer inside its tokens.
fn budgeted(text: &str, tokens: usize) -> Answer {
    Answer::from_words(text.split(' ').take(tokens))
}

/// A related-questions request (RAGFlow's prompt shape) ends with `Related search terms:` after
/// a `Keywords: …` line; returns the keywords.
fn related_request(content: &str) -> Option<&str> {
    let body = content.trim_end().strip_suffix("Related search terms:")?;
    body.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("Keywords:"))
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// Five numbered search terms built from the keywords, one per line.
fn related_answer(keywords: &str) -> String {
    let k = keywords.split_whitespace().collect::<Vec<_>>().join(" ");
    [
        "overview",
        "examples",
        "best practices",
        "troubleshooting",
        "in production",
    ]
    .iter()
    .enumerate()
    .map(|(i, suffix)| format!("{}. {k} {suffix}", i + 1))
    .collect::<Vec<_>>()
    .join("\n")
}

/// The line heading each document's text in a mind-map request.
pub const MINDMAP_DOCUMENT: &str = "### Document: ";

/// A mind-map request (the worker's prompt in RAGFlow's shape: "… into a mind map", then
/// `-TEXT-` and the text); returns the text.
fn mindmap_request(content: &str) -> Option<&str> {
    if !content.contains("into a mind map") {
        return None;
    }
    content.split_once("-TEXT-").map(|(_, text)| text)
}

/// A JSON mind map of the text: `{"id":"root","children":[…]}` with one node per
/// `### Document: <name>` section (first appearance order) and, under it, a leaf with the first
/// four words of the section's text. Compact JSON, so only the leaves' spaces split tokens.
fn mindmap_answer(text: &str) -> String {
    let mut sections: Vec<(String, String)> = Vec::new();
    let mut current: Option<usize> = None;
    for line in text.lines() {
        if let Some(name) = line.trim().strip_prefix(MINDMAP_DOCUMENT.trim_end()) {
            let name = name.trim().to_string();
            current = Some(match sections.iter().position(|(n, _)| *n == name) {
                Some(i) => i,
                None => {
                    sections.push((name, String::new()));
                    sections.len() - 1
                }
            });
            continue;
        }
        if let Some(i) = current
            && sections[i].1.is_empty()
        {
            let words: Vec<&str> = line
                .split_whitespace()
                .filter(|w| w.chars().any(char::is_alphanumeric))
                .take(4)
                .collect();
            sections[i].1 = words.join(" ");
        }
    }
    let children: Vec<serde_json::Value> = sections
        .into_iter()
        .map(|(name, leaf)| {
            if leaf.is_empty() {
                serde_json::json!({"id": name, "children": []})
            } else {
                serde_json::json!({"id": name, "children": [{"id": leaf, "children": []}]})
            }
        })
        .collect();
    serde_json::json!({"id": "root", "children": children}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn related_and_mindmap_requests_get_structured_answers() {
        let user = |c: &str| ChatMessage::new("user", c);
        let a = build(
            &[user("\nKeywords: job queue\nRelated search terms:\n    ")],
            48,
        );
        let lines: Vec<&str> = a.text.lines().collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0], "1. job queue overview");
        let m = build(
            &[
                ChatMessage::new(
                    "system",
                    "… into a mind map.\n-TEXT-\n### Document: a.md\nThe queue is durable.\n### Document: b.md\n# Lanes\nTwo lanes.",
                ),
                user("Output:"),
            ],
            48,
        );
        let v: serde_json::Value = serde_json::from_str(&m.text).unwrap();
        assert_eq!(v["id"], "root");
        assert_eq!(v["children"][0]["id"], "a.md");
        assert_eq!(
            v["children"][0]["children"][0]["id"],
            "The queue is durable."
        );
        assert_eq!(v["children"][1]["children"][0]["id"], "Lanes");
        // A small budget cuts the JSON: what an invalid answer looks like.
        assert!(serde_json::from_str::<serde_json::Value>(&build(&[m_req()], 2).text).is_err());
    }

    fn m_req() -> ChatMessage {
        ChatMessage::new(
            "system",
            "into a mind map -TEXT-\n### Document: a.md\nThe queue is durable.",
        )
    }

    const KB: &str = "Use the knowledge below.\n\
        \n\
        ID: 0\n\
        ├── Title: handbook.md\n\
        └── Content:\n\
        Workers pull jobs\n\
        from the queue.\n\
        ------\n\
        ID: 1\n\
        ├── Title: faq.md\n\
        ├── URL: http://x\n\
        └── Content:\n\
        Retries use backoff.\n";

    #[test]
    fn parses_chunks() {
        let chunks = parse_knowledge(KB);
        assert_eq!(chunks.len(), 2);
        assert_eq!((chunks[0].id, chunks[0].title), ("0", "handbook.md"));
        assert_eq!(
            chunks[0].content,
            vec!["Workers pull jobs", "from the queue."]
        );
        assert_eq!((chunks[1].id, chunks[1].title), ("1", "faq.md"));
        assert_eq!(chunks[1].content, vec!["Retries use backoff."]);
        assert!(parse_knowledge("ID: 5 is my ticket, why?").is_empty());
    }

    fn kb_messages() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new("system", KB),
            ChatMessage::new("user", "How do workers get jobs?"),
        ]
    }

    #[test]
    fn knowledge_answer_cites_chunk_zero() {
        let a = build(&kb_messages(), 7);
        assert_eq!(a.text, "According to handbook.md, Workers pull jobs [ID:0]");
        assert_eq!(a.tokens, 7);
    }

    #[test]
    fn knowledge_answer_spills_into_next_chunk() {
        let a = build(&kb_messages(), 11);
        assert_eq!(
            a.text,
            "According to handbook.md, Workers pull jobs from the queue. Retries [ID:0] [ID:1]"
        );
        // Runs out of words: shorter than the budget, still cited.
        let a = build(&kb_messages(), 48);
        assert!(
            a.text.ends_with("Retries use backoff. [ID:0] [ID:1]"),
            "{}",
            a.text
        );
        assert_eq!(a.tokens, 14);
    }

    #[test]
    fn tiny_budgets() {
        assert_eq!(build(&kb_messages(), 0), Answer::default());
        assert_eq!(build(&kb_messages(), 1).text, "[ID:0]");
        assert_eq!(build(&kb_messages(), 3).text, "According to [ID:0]");
    }

    #[test]
    fn echo_answer_pads_with_filler() {
        let msgs = vec![
            ChatMessage::new("user", "first"),
            ChatMessage::new("assistant", "ok"),
            ChatMessage::new("user", "Where is   the Queue?"),
        ];
        let a = build(&msgs, 9);
        assert_eq!(
            a.text,
            "You asked: where is the queue? this simulated answer"
        );
        assert_eq!(a.tokens, 9);
        let long = build(&msgs, 48);
        assert_eq!(long.tokens, 48);
        assert_eq!(build(&msgs, 2).text, "You asked:");
        assert_eq!(prompt_tokens(&msgs), 6);
    }

    #[test]
    fn stream_tokens_concatenate_to_text() {
        let a = build(&kb_messages(), 11);
        let toks: Vec<&str> = a.stream_tokens().collect();
        assert_eq!(toks.len(), a.tokens);
        assert_eq!(toks[0], "According ");
        assert_eq!(*toks.last().unwrap_or(&""), "[ID:1]");
        assert_eq!(toks.concat(), a.text);
    }

    #[test]
    fn refine_requests_return_the_latest_question() {
        let msg = |c: &str| ChatMessage {
            role: "user".into(),
            content: c.into(),
        };
        let a = build(
            &[msg(
                "Conversation:\nUSER: what is x?\nASSISTANT: y\nUSER: and z?\n\nRefined question:",
            )],
            48,
        );
        assert_eq!(a.text, "and z?");
        assert_eq!(refine_request("no marker"), None);
    }
}
