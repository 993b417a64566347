//! Step 5: decorate the final answer, as RAGFlow's `decorate_answer` does.
//!
//! Citation forms models like to invent (`[ID: 3]`, `(ID: 3)`, `【ID:3】`) are normalised to
//! `[ID:3]`. When the model cited nothing, a citation is inserted after each sentence whose terms
//! overlap a retrieved chunk strongly enough. Citations to chunks that do not exist are removed.

use ragq_common::event::{DocAgg, RefChunk};
use ragq_common::text;

/// Minimum fraction of a sentence's terms found in a chunk for a citation to be inserted.
const INSERT_THRESHOLD: f32 = 0.5;

/// Normalises and, if needed, inserts citations. Returns the answer and the cited chunk indexes.
pub fn decorate(answer: &str, chunks: &[RefChunk]) -> (String, Vec<usize>) {
    let normalised = normalise(answer, chunks.len());
    let cited = cited_ids(&normalised);
    if !cited.is_empty() || chunks.is_empty() {
        return (normalised, cited);
    }
    let chunk_terms: Vec<Vec<String>> = chunks.iter().map(|c| text::terms(&c.content)).collect();
    let mut out = String::with_capacity(normalised.len() + 16);
    let mut cited = Vec::new();
    for sentence in split_sentences(&normalised) {
        out.push_str(sentence);
        let terms = text::terms(sentence);
        if terms.len() < 3 {
            continue;
        }
        let best = chunk_terms
            .iter()
            .enumerate()
            .map(|(i, ct)| (i, text::term_overlap(&terms, ct)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((i, score)) = best
            && score >= INSERT_THRESHOLD
        {
            // Put the marker before the sentence's closing punctuation and whitespace.
            let body = out.trim_end();
            let body_len = body.trim_end_matches(['.', '!', '?', '。']).len();
            let tail = out[body_len..].to_string();
            out.truncate(body_len);
            out.push_str(&format!(" [ID:{i}]"));
            out.push_str(&tail);
            if !cited.contains(&i) {
                cited.push(i);
            }
        }
    }
    (out, cited)
}

/// Keeps the document aggregates of cited chunks only (all of them when nothing is cited).
pub fn cited_doc_aggs(aggs: &[DocAgg], chunks: &[RefChunk], cited: &[usize]) -> Vec<DocAgg> {
    if cited.is_empty() {
        return aggs.to_vec();
    }
    aggs.iter()
        .filter(|a| {
            cited
                .iter()
                .any(|&i| chunks.get(i).is_some_and(|c| c.document_id == a.doc_id))
        })
        .cloned()
        .collect()
}

fn split_sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, ch) in text.char_indices() {
        if matches!(ch, '.' | '!' | '?' | '。' | '\n') {
            let mut end = i + ch.len_utf8();
            while end < bytes.len() && bytes[end] == b' ' {
                end += 1;
            }
            out.push(&text[start..end]);
            start = end;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out.retain(|s| !s.is_empty());
    out
}

/// Rewrites `[ID: n]`, `(ID: n)`, `(ID:n)`, `【ID:n】` to `[ID:n]`; drops markers whose n is not
/// a retrieved chunk.
fn normalise(answer: &str, n_chunks: usize) -> String {
    let mut out = String::with_capacity(answer.len());
    let mut rest = answer;
    loop {
        let next = ["[ID:", "(ID:", "【ID:"]
            .iter()
            .filter_map(|p| rest.find(p).map(|i| (i, *p)))
            .min();
        let Some((pos, open)) = next else { break };
        let close = match open {
            "[ID:" => ']',
            "(ID:" => ')',
            _ => '】',
        };
        let after = &rest[pos + open.len()..];
        let parsed = after.find(close).and_then(|end| {
            let n: usize = after[..end].trim().parse().ok()?;
            Some((n, end))
        });
        match parsed {
            Some((n, end)) => {
                if n < n_chunks {
                    out.push_str(&rest[..pos]);
                    out.push_str(&format!("[ID:{n}]"));
                } else {
                    out.push_str(rest[..pos].trim_end_matches(' '));
                }
                rest = &after[end + close.len_utf8()..];
            }
            None => {
                out.push_str(&rest[..pos + open.len()]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Indexes cited as `[ID:n]`, in order of first appearance.
pub fn cited_ids(text: &str) -> Vec<usize> {
    let mut ids = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find("[ID:") {
        let after = &rest[pos + 4..];
        if let Some(end) = after.find(']')
            && let Ok(n) = after[..end].parse::<usize>()
            && !ids.contains(&n)
        {
            ids.push(n);
        }
        rest = after;
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(text: &str, doc: &str) -> RefChunk {
        RefChunk {
            content: text.into(),
            document_id: doc.into(),
            ..Default::default()
        }
    }

    #[test]
    fn normalises_model_citation_forms() {
        let chunks = vec![chunk("a", "d1"), chunk("b", "d2")];
        let (a, cited) = decorate("One (ID: 1). Two [ID: 0]. Bad [ID:7].", &chunks);
        assert_eq!(a, "One [ID:1]. Two [ID:0]. Bad.");
        assert_eq!(cited, vec![1, 0]);
    }

    #[test]
    fn inserts_citations_when_missing() {
        let chunks = vec![
            chunk(
                "The delivery limit of the quorum queue is five attempts.",
                "d1",
            ),
            chunk("Redis carries answer events to the ingress.", "d2"),
        ];
        let (a, cited) = decorate(
            "The quorum queue delivery limit is five. Hello there!",
            &chunks,
        );
        assert_eq!(
            a,
            "The quorum queue delivery limit is five [ID:0]. Hello there!"
        );
        assert_eq!(cited, vec![0]);
        let aggs = vec![
            DocAgg {
                doc_name: "1".into(),
                doc_id: "d1".into(),
                count: 1,
            },
            DocAgg {
                doc_name: "2".into(),
                doc_id: "d2".into(),
                count: 1,
            },
        ];
        assert_eq!(cited_doc_aggs(&aggs, &chunks, &cited).len(), 1);
    }
}
