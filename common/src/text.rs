//! Text utilities shared by the worker, the CLI and the upstream simulator.
//!
//! Two things live here:
//! - [`terms`]: the tokenizer used for keyword (term) similarity. Lower-cased alphanumeric words,
//!   English stop words dropped, a light suffix strip so that "workers" matches "worker".
//! - [`hash_embed`]: the built-in *local embedder*. It is a feature-hashing bag of words
//!   (unigrams and bigrams hashed into [`EMBED_DIM`] signed buckets, L2-normalised). It needs no
//!   network and no model weights, and two texts that share words get a positive cosine. It knows
//!   nothing about synonyms or meaning: treat it as a lexical embedder, good for demos, tests and
//!   air-gapped installs, not a replacement for a neural embedding model.

/// Dimension of vectors produced by [`hash_embed`].
pub const EMBED_DIM: usize = 384;

const STOP_WORDS: &[&str] = &[
    "a", "about", "an", "and", "are", "as", "at", "be", "been", "but", "by", "can", "do", "does",
    "for", "from", "had", "has", "have", "how", "i", "if", "in", "into", "is", "it", "its", "me",
    "my", "of", "on", "or", "our", "so", "than", "that", "the", "their", "them", "then", "there",
    "these", "they", "this", "to", "was", "we", "were", "what", "when", "where", "which", "who",
    "why", "will", "with", "you", "your",
];

/// Splits `text` into normalised terms (see the module docs).
pub fn terms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for_each_term(text, |t| out.push(t.to_string()));
    out
}

/// Calls `f` with each term of `text`, in order — [`terms`] without allocating a `String` per
/// word: one buffer is reused for the lower-cased word and its stem. Scoring a question against
/// every candidate chunk tokenises tens of thousands of words per question; this is that path.
pub fn for_each_term(text: &str, mut f: impl FnMut(&str)) {
    terms_while(text, |t| {
        f(t);
        true
    });
}

/// [`for_each_term`] until `f` returns `false`.
fn terms_while(text: &str, mut f: impl FnMut(&str) -> bool) {
    let mut buf = String::new();
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        buf.clear();
        if word.is_ascii() {
            buf.push_str(word);
            buf.make_ascii_lowercase();
        } else {
            buf.push_str(&word.to_lowercase());
        }
        if STOP_WORDS.contains(&buf.as_str()) {
            continue;
        }
        stem_in_place(&mut buf);
        if !f(&buf) {
            return;
        }
    }
}

/// A deliberately light stemmer: strips a plural or verb suffix from words long enough to keep a
/// stem of three or more letters ("queries" → "query").
fn stem_in_place(word: &mut String) {
    for suffix in ["ies", "es", "s", "ing", "ed"] {
        if let Some(stem) = word.strip_suffix(suffix)
            && stem.chars().count() >= 3
        {
            let keep = stem.len();
            word.truncate(keep);
            if suffix == "ies" {
                word.push('y');
            }
            return;
        }
    }
}

/// The distinct terms of a query, to score many documents against ([`QueryTerms::overlap`]).
#[derive(Clone, Debug, Default)]
pub struct QueryTerms {
    terms: Vec<String>,
}

impl QueryTerms {
    pub fn new(query: &str) -> Self {
        let mut terms = terms(query);
        terms.sort();
        terms.dedup();
        QueryTerms { terms }
    }

    /// [`term_overlap`] of the query and `doc`'s terms, tokenising `doc` on the fly and stopping
    /// as soon as every query term was seen.
    pub fn overlap(&self, doc: &str) -> f32 {
        if self.terms.is_empty() {
            return 0.0;
        }
        let mut seen = vec![false; self.terms.len()];
        let mut hits = 0;
        terms_while(doc, |t| {
            if let Ok(i) = self.terms.binary_search_by(|q| q.as_str().cmp(t))
                && !seen[i]
            {
                seen[i] = true;
                hits += 1;
            }
            hits < self.terms.len()
        });
        hits as f32 / self.terms.len() as f32
    }
}

/// FNV-1a, 64 bit: stable across processes and versions (unlike `std`'s hasher).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn add_feature(v: &mut [f32], feature: &str, weight: f32) {
    let h = fnv1a(feature.as_bytes());
    let idx = (h % EMBED_DIM as u64) as usize;
    let sign = if (h >> 63) == 0 { 1.0 } else { -1.0 };
    v[idx] += sign * weight;
}

/// Embeds `text` with the local hashing embedder; the result has unit length (or is all zeros
/// for a text without terms).
pub fn hash_embed(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; EMBED_DIM];
    let t = terms(text);
    for w in &t {
        add_feature(&mut v, w, 1.0);
    }
    for pair in t.windows(2) {
        add_feature(&mut v, &format!("{} {}", pair[0], pair[1]), 0.5);
    }
    normalize(&mut v);
    v
}

/// Scales `v` to unit length in place (leaves a zero vector alone).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x /= norm;
        }
    }
}

/// Dot product; the cosine similarity of two unit vectors.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Fraction of the distinct query terms that occur in `doc_terms` (0..=1). This is the keyword
/// ("term") similarity used by hybrid retrieval and by the simulator's reranker.
pub fn term_overlap(query_terms: &[String], doc_terms: &[String]) -> f32 {
    let mut q: Vec<&String> = query_terms.iter().collect();
    q.sort();
    q.dedup();
    if q.is_empty() {
        return 0.0;
    }
    let hits = q.iter().filter(|t| doc_terms.contains(t)).count();
    hits as f32 / q.len() as f32
}

/// Rough token count used for budgets: about one token per four bytes, at least one per word.
pub fn approx_tokens(text: &str) -> usize {
    let words = text.split_whitespace().count();
    words.max(text.len() / 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_drop_stop_words_and_stem() {
        assert_eq!(terms("The Workers are running!"), vec!["worker", "runn"]);
        assert_eq!(terms("Queries, policies"), vec!["query", "policy"]);
    }

    #[test]
    fn embedding_is_unit_and_similar_texts_are_closer() {
        let a = hash_embed("RabbitMQ quorum queue delivery limit");
        let b = hash_embed("the delivery limit of a quorum queue");
        let c = hash_embed("PostgreSQL full text search ranking");
        assert!((dot(&a, &a) - 1.0).abs() < 1e-5);
        assert!(dot(&a, &b) > 0.4, "{}", dot(&a, &b));
        assert!(dot(&a, &c).abs() < dot(&a, &b));
        assert_eq!(hash_embed("   "), vec![0.0; EMBED_DIM]);
    }

    #[test]
    fn query_terms_score_as_term_overlap_does() {
        let docs = [
            "a quorum queue",
            "Queries and policies of the QUORUM queues; limits?",
            "",
            "Größe der Warteschlangen: queue limit",
            "nothing shared",
        ];
        for q in ["quorum queue queue limit", "the", "Größe queries"] {
            let query = QueryTerms::new(q);
            for d in docs {
                assert_eq!(
                    query.overlap(d),
                    term_overlap(&terms(q), &terms(d)),
                    "{q:?} in {d:?}"
                );
            }
        }
    }

    #[test]
    fn overlap_counts_distinct_query_terms() {
        let q = terms("quorum queue queue limit");
        let d = terms("a quorum queue");
        assert!((term_overlap(&q, &d) - 2.0 / 3.0).abs() < 1e-6);
        assert_eq!(term_overlap(&[], &d), 0.0);
    }
}
