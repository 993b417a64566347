//! Synthetic but realistic text for the retrieval probe.
//!
//! Full-text search cost depends on *selectivity*: how many chunks a question's lexemes match.
//! Uniformly random words would make every word rare and every query cheap; real text follows
//! Zipf's law (the r-th most frequent word appears with probability ∝ 1/r^s, s ≈ 1). So:
//!
//! - [`Vocabulary`] ranks a few thousand words: first the English function words that
//!   PostgreSQL's `english` configuration (and `ragq_common::text::terms`) drop as stop words,
//!   then real domain words, then pronounceable pseudo-words. With s = 1 and 4000 words the
//!   ~45 stop words carry about half of all tokens, as in real English prose.
//! - [`Vocabulary::chunk`] writes sentences of 6–18 words into chunks of 80–140 words (ragq's
//!   ingest cuts about 128 tokens per chunk).
//! - [`Vocabulary::question`] draws 4–10 words from the same distribution, so a question mixes
//!   stop words, common terms (matching many chunks) and rare ones, like a real one.
//!
//! Everything is driven by [`Rng`], a seeded SplitMix64, so a given seed always produces the
//! same corpus and the same questions (runs are comparable, the database can be reused).

use std::collections::HashSet;

/// SplitMix64: tiny, fast, and good enough for test data (not for anything secret).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `lo..=hi` (`lo` when `hi < lo`).
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        if hi <= lo {
            return lo;
        }
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
}

/// Stop words of both PostgreSQL's `english` dictionary and `text::terms`, most frequent first.
const STOP_WORDS: &[&str] = &[
    "the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "with", "was", "on",
    "be", "by", "this", "are", "or", "from", "at", "an", "which", "have", "has", "but", "were",
    "can", "will", "been", "their", "its", "they", "we", "when", "there", "what", "if", "so",
    "into", "than", "then", "these", "about", "how",
];

/// Domain words ranked right after the stop words (the corpus reads like technical docs).
const DOMAIN_WORDS: &[&str] = &[
    "queue",
    "worker",
    "message",
    "request",
    "server",
    "client",
    "data",
    "time",
    "system",
    "error",
    "model",
    "document",
    "chunk",
    "index",
    "search",
    "query",
    "answer",
    "question",
    "user",
    "session",
    "stream",
    "event",
    "token",
    "limit",
    "retry",
    "delivery",
    "broker",
    "database",
    "table",
    "connection",
    "network",
    "service",
    "cluster",
    "node",
    "memory",
    "cache",
    "latency",
    "throughput",
    "response",
    "result",
    "process",
    "thread",
    "task",
    "job",
    "deadline",
    "timeout",
    "failure",
    "restart",
    "config",
    "setting",
    "version",
    "release",
    "deploy",
    "update",
    "schema",
    "record",
    "field",
    "value",
    "key",
    "channel",
    "publish",
    "subscribe",
    "consumer",
    "producer",
    "batch",
    "page",
    "file",
    "upload",
    "parse",
    "text",
    "vector",
    "embedding",
    "rank",
    "score",
    "weight",
    "threshold",
    "prompt",
    "context",
    "history",
    "tenant",
    "account",
    "permission",
    "access",
    "policy",
    "storage",
    "disk",
    "backup",
    "snapshot",
    "replica",
    "leader",
    "election",
    "quorum",
    "partition",
    "shard",
    "load",
    "balance",
    "scale",
    "capacity",
    "metric",
    "monitor",
    "alert",
    "log",
    "trace",
    "debug",
    "test",
    "build",
    "compile",
    "package",
    "library",
    "function",
    "method",
    "interface",
    "protocol",
    "header",
    "payload",
    "format",
    "encoding",
    "language",
    "report",
];

const ONSETS: &[&str] = &[
    "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "cr",
    "st", "tr", "pl", "gr", "sh", "qu",
];
const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ou", "ea"];
const CODAS: &[&str] = &["", "", "n", "r", "l", "s", "x", "m", "nd", "rt"];

/// A ranked vocabulary with a Zipf sampler (see the module docs).
pub struct Vocabulary {
    words: Vec<String>,
    /// Cumulative probabilities by rank; the last is 1.0.
    cdf: Vec<f64>,
}

impl Vocabulary {
    /// `size` words (at least the stop and domain words), Zipf exponent `s`, pseudo-words from
    /// `seed`.
    pub fn new(size: usize, s: f64, seed: u64) -> Self {
        Self::with_words(size, s, seed, &[], 0.0)
    }

    /// Like [`Vocabulary::new`], with `extra` real words ranked right after the domain words
    /// (duplicates skipped), and a share `compounds` of the words after them made of two real
    /// (non-stop) words joined, like identifiers (`leaderlease`, `queuebudget`), the rest
    /// pseudo-words. `with_words(n, s, seed, &[], 0.0)` is `new(n, s, seed)`.
    pub fn with_words(size: usize, s: f64, seed: u64, extra: &[&str], compounds: f64) -> Self {
        let mut words: Vec<String> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        for w in STOP_WORDS.iter().chain(DOMAIN_WORDS).chain(extra) {
            if seen.insert(w.to_string()) {
                words.push(w.to_string());
            }
        }
        let real: Vec<String> = words[STOP_WORDS.len()..].to_vec();
        let mut rng = Rng::new(seed ^ 0x005e_ed0f_c0de);
        while words.len() < size {
            let mut w = String::new();
            if compounds > 0.0 && rng.next_f64() < compounds {
                w.push_str(&real[rng.range(0, real.len() - 1)]);
                w.push_str(&real[rng.range(0, real.len() - 1)]);
            } else {
                for _ in 0..rng.range(2, 3) {
                    w.push_str(ONSETS[rng.range(0, ONSETS.len() - 1)]);
                    w.push_str(VOWELS[rng.range(0, VOWELS.len() - 1)]);
                    w.push_str(CODAS[rng.range(0, CODAS.len() - 1)]);
                }
            }
            if w.len() >= 4 && seen.insert(w.clone()) {
                words.push(w);
            }
        }
        let weights: Vec<f64> = (1..=words.len())
            .map(|r| 1.0 / (r as f64).powf(s))
            .collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        if let Some(last) = cdf.last_mut() {
            *last = 1.0;
        }
        Vocabulary { words, cdf }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// The word of rank `r` (0 = most frequent).
    pub fn word(&self, r: usize) -> &str {
        &self.words[r.min(self.words.len() - 1)]
    }

    /// The rank of one Zipf draw.
    pub fn sample_rank(&self, rng: &mut Rng) -> usize {
        let u = rng.next_f64();
        self.cdf
            .partition_point(|c| *c <= u)
            .min(self.words.len() - 1)
    }

    pub fn sample(&self, rng: &mut Rng) -> &str {
        self.word(self.sample_rank(rng))
    }

    /// Appends one sentence of `len` words: capitalised, ending with `end`.
    fn sentence(&self, rng: &mut Rng, len: usize, end: char, out: &mut String) {
        for i in 0..len {
            if !out.is_empty() {
                out.push(' ');
            }
            let w = self.sample(rng);
            if i == 0 {
                let mut c = w.chars();
                if let Some(first) = c.next() {
                    out.extend(first.to_uppercase());
                    out.push_str(c.as_str());
                }
            } else {
                out.push_str(w);
            }
        }
        out.push(end);
    }

    /// A chunk of 80–140 words.
    pub fn chunk(&self, rng: &mut Rng) -> String {
        let mut left = rng.range(80, 140);
        let mut out = String::with_capacity(left * 7);
        while left > 0 {
            let len = rng.range(6, 18).min(left);
            self.sentence(rng, len, '.', &mut out);
            left -= len;
        }
        out
    }

    /// A question of 4–10 words, ending with `?`.
    pub fn question(&self, rng: &mut Rng) -> String {
        let n = rng.range(4, 10);
        let mut out = String::new();
        self.sentence(rng, n, '?', &mut out);
        out
    }
}

/// A question none of whose words is in any [`Vocabulary`] (digits never appear there): it
/// matches no chunk by keyword, so retrieval takes the vector fallback path.
pub fn miss_question(rng: &mut Rng) -> String {
    let n = rng.range(4, 6);
    let words: Vec<String> = (0..n)
        .map(|_| format!("zq{}x{}", rng.range(0, 9999), rng.range(0, 99)))
        .collect();
    format!("{}?", words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_is_ranked_unique_and_deterministic() {
        let v = Vocabulary::new(4000, 1.0, 7);
        assert_eq!(v.len(), 4000);
        assert_eq!(v.word(0), "the");
        assert_eq!(v.word(STOP_WORDS.len()), "queue");
        let unique: HashSet<&str> = (0..v.len()).map(|r| v.word(r)).collect();
        assert_eq!(unique.len(), 4000);
        let again = Vocabulary::new(4000, 1.0, 7);
        assert_eq!(v.word(3999), again.word(3999));
        let (mut a, mut b) = (Rng::new(1), Rng::new(1));
        assert_eq!(v.chunk(&mut a), again.chunk(&mut b));
    }

    #[test]
    fn draws_follow_zipf() {
        let v = Vocabulary::new(4000, 1.0, 7);
        let mut rng = Rng::new(42);
        let n = 200_000;
        let mut counts = vec![0u32; v.len()];
        for _ in 0..n {
            counts[v.sample_rank(&mut rng)] += 1;
        }
        // P(rank 1) = 1 / H(4000) ≈ 0.1127; rank r is about r times rarer.
        let p1 = f64::from(counts[0]) / n as f64;
        assert!((0.105..0.120).contains(&p1), "rank-1 share {p1}");
        let ratio = f64::from(counts[0]) / f64::from(counts[9]);
        assert!((8.0..12.5).contains(&ratio), "rank 1 / rank 10 = {ratio}");
        // The stop words carry about half of the tokens, as in English prose.
        let stop: u32 = counts[..STOP_WORDS.len()].iter().sum();
        let share = f64::from(stop) / n as f64;
        assert!((0.40..0.55).contains(&share), "stop-word share {share}");
    }

    #[test]
    fn chunks_and_questions_have_the_promised_lengths() {
        let v = Vocabulary::new(4000, 1.0, 7);
        let mut rng = Rng::new(3);
        for _ in 0..200 {
            let c = v.chunk(&mut rng);
            let words = c.split_whitespace().count();
            assert!((80..=140).contains(&words), "{words} words");
            assert!(c.ends_with('.'));
            let q = v.question(&mut rng);
            let words = q.split_whitespace().count();
            assert!((4..=10).contains(&words), "{q}");
            assert!(q.ends_with('?') && !q.contains('.'), "{q}");
        }
        let m = miss_question(&mut rng);
        assert!(m.split_whitespace().all(|w| w.starts_with("zq")), "{m}");
    }
}
