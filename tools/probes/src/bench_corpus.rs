//! `ragq-probe bench-corpus`: a deterministic, realistic corpus and questions for
//! `scripts/bench.sh`.
//!
//! The demo dataset (`demo/docs`, four short documents) makes retrieval trivially cheap: every
//! question matches most of a handful of chunks. This writes a corpus shaped like a real
//! technical documentation set instead:
//!
//! - **Vocabulary.** [`crate::corpus::Vocabulary`] with Zipf exponent 1: the English stop words
//!   first, then real technical words (the retrieval probe's domain words and [`EXTRA_WORDS`]),
//!   then pronounceable pseudo-words (product names, identifiers) up to [`VOCABULARY`] words.
//! - **Topics (burstiness).** Real documents repeat their own rare words: a page about one
//!   feature names it in most paragraphs. Documents come in *areas* of [`DOCS_PER_AREA`]; each
//!   area has [`AREA_WORDS`] words and each document [`DOC_WORDS`] more, drawn from the mid and
//!   rare ranks ([`TOPIC_RANKS`]). A word of running text is a document word with probability
//!   [`P_DOC`], an area word with [`P_AREA`], otherwise a Zipf draw from the whole vocabulary.
//! - **Layout.** Markdown (and some plain-text) files: a title, 4–8 sections with headings,
//!   paragraphs of 2–7 sentences, some bullet lists and configuration sentences with inline code.
//!   ragq ingests them with its usual 128-token budget ([`CHUNK_TOKENS`]) into roughly 20 chunks
//!   per document.
//! - **Questions.** Each question is about one document: a template made only of stop words
//!   ([`TEMPLATES`]), filled with that document's and its area's words and sometimes one general
//!   technical word. Its terms therefore match a few percent of the chunks, as a real question's
//!   do, rather than none or all of them.
//!
//! The generator chunks its own documents with ragq's chunker (`ragq_common::indexing::chunk`,
//! the budget `ragq load-dataset` uses) and tokenises them with `ragq_common::text::terms`, so
//! it reports exactly the chunks ragq will store and, per question, the fraction of those chunks
//! that contain any of the question's terms (the selectivity; written to `corpus.json`).
//!
//! Output, all from [`Rng`] seeded with `--seed` (same seed and counts → the same bytes):
//!
//! ```text
//! OUT/docs/doc-NNN-<slug>.md|txt   the documents (the folder to pass to `ragq load-dataset`)
//! OUT/questions.txt               one question per line
//! OUT/corpus.json                 parameters, chunk counts and sizes, measured selectivity
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ragq_common::indexing::{Format, chunk};
use ragq_common::text;
use serde_json::{Value, json};

use crate::corpus::{Rng, Vocabulary};

/// Bumped whenever the generated text changes for a given seed (scripts key reuse on it).
pub const VERSION: u32 = 1;
/// The chunk budget of ragq's ingest (`cli/src/admin.rs::add_document`).
pub const CHUNK_TOKENS: usize = 128;
/// Words in the vocabulary.
pub const VOCABULARY: usize = 8000;
const ZIPF_S: f64 = 1.0;
/// Share of the vocabulary's tail made of two technical words joined (identifiers, setting
/// names); the rest are pseudo-words (product and project names).
const COMPOUNDS: f64 = 0.7;
/// Ranks topic words are drawn from (log-uniformly): rarer than the everyday technical words,
/// more frequent than the long tail.
pub const TOPIC_RANKS: (usize, usize) = (400, VOCABULARY);
pub const DOCS_PER_AREA: usize = 4;
pub const AREA_WORDS: usize = 6;
pub const DOC_WORDS: usize = 6;
/// Probability that a word of running text is one of the document's own words.
pub const P_DOC: f64 = 0.06;
/// Probability that a word of running text is one of the area's words.
pub const P_AREA: f64 = 0.04;
/// The worker leaves a query word out of the keyword query when it occurs in at least
/// `max(COMMON_FREQUENCY, KEYWORD_SCAN / chunks)` of the chunks
/// (`ragq_worker::search::common_terms`).
const COMMON_FREQUENCY: f64 = 0.005;
/// The worker's `search::KEYWORD_SCAN`: most keyword matches ranked per query.
const KEYWORD_SCAN: f64 = 500.0;
/// The bench chat's `top_n`: fewer keyword matches make the worker add vector-scan candidates.
const TOP_N: usize = 6;
/// General words in questions: Zipf draws within these ranks, the real technical words below
/// the most frequent ones ("configure", "timeout", "replication").
const GENERAL_RANKS: (usize, usize) = (100, 400);

/// Real technical words ranked after the retrieval probe's domain words.
pub const EXTRA_WORDS: &[&str] = &[
    "configure",
    "install",
    "upgrade",
    "migrate",
    "rollback",
    "rollout",
    "endpoint",
    "route",
    "gateway",
    "proxy",
    "ingress",
    "egress",
    "certificate",
    "handshake",
    "socket",
    "port",
    "address",
    "resolver",
    "lookup",
    "hostname",
    "container",
    "image",
    "registry",
    "volume",
    "mount",
    "namespace",
    "pod",
    "sidecar",
    "daemon",
    "scheduler",
    "cron",
    "trigger",
    "hook",
    "webhook",
    "callback",
    "handler",
    "middleware",
    "plugin",
    "extension",
    "module",
    "crate",
    "dependency",
    "artifact",
    "pipeline",
    "stage",
    "runner",
    "agent",
    "probe",
    "heartbeat",
    "lease",
    "lock",
    "mutex",
    "semaphore",
    "barrier",
    "backoff",
    "jitter",
    "throttle",
    "quota",
    "budget",
    "burst",
    "window",
    "bucket",
    "counter",
    "gauge",
    "histogram",
    "percentile",
    "sample",
    "span",
    "exporter",
    "collector",
    "dashboard",
    "panel",
    "query",
    "filter",
    "sort",
    "merge",
    "join",
    "aggregate",
    "projection",
    "column",
    "row",
    "tuple",
    "transaction",
    "commit",
    "abort",
    "isolation",
    "snapshot",
    "vacuum",
    "analyze",
    "planner",
    "optimizer",
    "statistics",
    "cardinality",
    "selectivity",
    "lexeme",
    "dictionary",
    "stemmer",
    "tokenizer",
    "corpus",
    "passage",
    "citation",
    "reference",
    "summary",
    "abstract",
    "title",
    "heading",
    "paragraph",
    "sentence",
    "markdown",
    "attachment",
    "bitmap",
    "compression",
    "checksum",
    "digest",
    "signature",
    "secret",
    "credential",
    "rotation",
    "revocation",
    "audit",
    "compliance",
    "retention",
    "archive",
    "purge",
    "expiry",
    "eviction",
    "warmup",
    "cold",
    "hot",
    "tier",
    "replication",
    "failover",
    "promotion",
    "fencing",
    "split",
    "rebalance",
    "migration",
    "cutover",
    "drain",
    "cordon",
    "taint",
    "affinity",
    "priority",
    "preemption",
    "fairness",
    "starvation",
    "deadlock",
    "contention",
    "saturation",
    "overload",
    "shedding",
    "admission",
    "rejection",
    "circuit",
    "breaker",
    "fallback",
    "degradation",
    "recovery",
    "durability",
    "consistency",
    "availability",
    "ordering",
    "idempotency",
    "deduplication",
    "redelivery",
    "acknowledgement",
    "offset",
    "cursor",
    "watermark",
    "checkpoint",
    "journal",
    "segment",
    "compaction",
    "flush",
    "fsync",
    "buffer",
    "pool",
    "allocator",
    "arena",
    "heap",
    "stack",
    "frame",
    "coroutine",
    "executor",
    "reactor",
    "poller",
    "epoll",
    "syscall",
    "kernel",
    "scheduler",
    "core",
    "pipe",
    "signal",
    "shutdown",
    "graceful",
    "deadline",
    "cancel",
    "resume",
    "replay",
    "reconnect",
    "subscriber",
    "topic",
    "exchange",
    "binding",
    "routing",
    "mirror",
    "federation",
    "shovel",
    "stream",
    "jetstream",
    "ack",
    "nack",
    "prefetch",
    "credit",
    "flow",
    "pressure",
    "watchdog",
    "operator",
    "runbook",
    "incident",
    "postmortem",
    "oncall",
    "paging",
    "escalation",
    "severity",
    "sla",
    "slo",
    "error",
    "canary",
    "bluegreen",
    "feature",
    "flag",
    "experiment",
];

/// Question templates: every literal word is a stop word of `text::terms`, so a question's
/// terms are exactly the words filled into its `{}` slots.
pub const TEMPLATES: &[&str] = &[
    "What is the {} of the {} {}?",
    "How do I {} the {} {}?",
    "Why does the {} {} when {}?",
    "Where can I {} {} {}?",
    "How does {} {} with {}?",
    "Which {} {} the {}?",
    "What does {} {} do?",
    "Can you {} the {} for {}?",
    "When is {} {} by the {}?",
    "How can we {} {} in {}?",
    "What are the {} {} for {}?",
    "Is there {} {} in the {}?",
    "Who {} the {} {}?",
    "Why is my {} {}?",
    "How do {} and {} {}?",
    "What will {} {} do if {}?",
];

pub struct Args {
    pub out: PathBuf,
    pub docs: usize,
    pub seed: u64,
    pub questions: usize,
}

/// The words one document is about.
struct Topic {
    area: Vec<usize>,
    doc: Vec<usize>,
}

/// One generated document.
struct Doc {
    name: String,
    format: Format,
    text: String,
}

struct Writer<'a> {
    vocab: &'a Vocabulary,
    rng: Rng,
}

impl Writer<'_> {
    fn word<'w>(&'w mut self, topic: &Topic) -> &'w str {
        let u = self.rng.next_f64();
        let rank = if u < P_DOC {
            topic.doc[self.rng.range(0, topic.doc.len() - 1)]
        } else if u < P_DOC + P_AREA {
            topic.area[self.rng.range(0, topic.area.len() - 1)]
        } else {
            self.vocab.sample_rank(&mut self.rng)
        };
        self.vocab.word(rank)
    }

    /// A content word (never a stop word) of the topic or the everyday technical vocabulary.
    fn content_word(&mut self, topic: &Topic) -> String {
        loop {
            let w = self.word(topic).to_string();
            if !text::terms(&w).is_empty() {
                return w;
            }
        }
    }

    /// A sentence of `len` words ending with `end`, appended to `out` (after a space unless
    /// `out` is empty or ends a line).
    fn sentence(&mut self, topic: &Topic, len: usize, end: char, out: &mut String) {
        if !(out.is_empty() || out.ends_with('\n') || out.ends_with(' ')) {
            out.push(' ');
        }
        for i in 0..len {
            let w = self.word(topic).to_string();
            if i == 0 {
                push_capitalised(out, &w);
            } else {
                out.push(' ');
                out.push_str(&w);
            }
        }
        out.push(end);
    }

    /// "Set `area.doc` to 30." and the like: configuration reads like this.
    fn config_sentence(&mut self, topic: &Topic, out: &mut String) {
        const VALUES: &[&str] = &[
            "1", "3", "5", "10", "30", "60", "128", "256", "1000", "true",
        ];
        let a = self
            .vocab
            .word(topic.area[self.rng.range(0, topic.area.len() - 1)]);
        let d = self
            .vocab
            .word(topic.doc[self.rng.range(0, topic.doc.len() - 1)]);
        let v = VALUES[self.rng.range(0, VALUES.len() - 1)];
        let verb = ["Set", "Raise", "Lower", "Keep"][self.rng.range(0, 3)];
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "{verb} `{a}.{d}` to {v}.");
    }

    fn paragraph(&mut self, topic: &Topic) -> String {
        let mut out = String::new();
        if self.rng.next_f64() < 0.12 {
            // A bullet list: one paragraph, one item per line.
            for _ in 0..self.rng.range(3, 5) {
                out.push_str("- ");
                let n = self.rng.range(4, 10);
                self.sentence(topic, n, '.', &mut out);
                out.push('\n');
            }
            return out.trim_end().to_string();
        }
        let target = self.rng.range(35, 70);
        let mut words = 0;
        while words < target {
            if self.rng.next_f64() < 0.08 {
                self.config_sentence(topic, &mut out);
                words += 4;
                continue;
            }
            let len = self.rng.range(6, 18);
            self.sentence(topic, len, '.', &mut out);
            words += len;
        }
        out
    }

    fn heading(&mut self, topic: &Topic, words: usize) -> String {
        let mut out = String::new();
        for i in 0..words {
            let w = self.content_word(topic);
            if i == 0 {
                push_capitalised(&mut out, &w);
            } else {
                out.push(' ');
                out.push_str(&w);
            }
        }
        out
    }

    fn document(&mut self, index: usize, topic: &Topic) -> Doc {
        let format = if self.rng.next_f64() < 0.15 {
            Format::Text
        } else {
            Format::Markdown
        };
        let title = {
            let first = self.vocab.word(topic.doc[0]).to_string();
            let mut t = String::new();
            push_capitalised(&mut t, &first);
            t.push(' ');
            t.push_str(self.vocab.word(topic.area[0]));
            t.push(' ');
            let tail = self.heading(topic, 1).to_lowercase();
            t.push_str(&tail);
            t
        };
        let (h1, h2) = match format {
            Format::Markdown => ("# ", "## "),
            _ => ("", ""),
        };
        let mut text = format!("{h1}{title}\n\n{}\n\n", self.paragraph(topic));
        for _ in 0..self.rng.range(3, 6) {
            let n = self.rng.range(2, 4);
            let _ = write!(text, "{h2}{}\n\n", self.heading(topic, n));
            for _ in 0..self.rng.range(2, 4) {
                let _ = write!(text, "{}\n\n", self.paragraph(topic));
            }
        }
        let slug: String = text::terms(&title)
            .into_iter()
            .take(3)
            .collect::<Vec<_>>()
            .join("-");
        let ext = if format == Format::Text { "txt" } else { "md" };
        Doc {
            name: format!("doc-{:03}-{slug}.{ext}", index + 1),
            format,
            text: text.trim_end().to_string() + "\n",
        }
    }

    fn question(&mut self, topic: &Topic) -> String {
        let template = TEMPLATES[self.rng.range(0, TEMPLATES.len() - 1)];
        let slots = template.matches("{}").count();
        let mut words: Vec<String> = vec![
            self.vocab
                .word(topic.doc[self.rng.range(0, topic.doc.len() - 1)])
                .to_string(),
            self.vocab
                .word(topic.area[self.rng.range(0, topic.area.len() - 1)])
                .to_string(),
        ];
        while words.len() < slots {
            let w = if self.rng.next_f64() < 0.7 {
                self.general_word()
            } else {
                self.vocab
                    .word(topic.doc[self.rng.range(0, topic.doc.len() - 1)])
                    .to_string()
            };
            if !words.contains(&w) {
                words.push(w);
            }
        }
        // Shuffle (Fisher–Yates) so the document's word is not always first.
        for i in (1..words.len()).rev() {
            let j = self.rng.range(0, i);
            words.swap(i, j);
        }
        let mut out = String::new();
        let mut parts = template.split("{}");
        out.push_str(parts.next().unwrap_or_default());
        for (w, rest) in words.iter().zip(parts) {
            out.push_str(w);
            out.push_str(rest);
        }
        out
    }

    /// An everyday technical word: a Zipf draw within [`GENERAL_RANKS`].
    fn general_word(&mut self) -> String {
        loop {
            let r = self.vocab.sample_rank(&mut self.rng);
            if (GENERAL_RANKS.0..GENERAL_RANKS.1).contains(&r) {
                return self.vocab.word(r).to_string();
            }
        }
    }
}

fn push_capitalised(out: &mut String, w: &str) {
    let mut c = w.chars();
    if let Some(first) = c.next() {
        out.extend(first.to_uppercase());
        out.push_str(c.as_str());
    }
}

/// A log-uniform rank in `lo..hi` not yet in `taken`.
fn topic_rank(rng: &mut Rng, taken: &mut HashSet<usize>) -> usize {
    let (lo, hi) = (TOPIC_RANKS.0 as f64, TOPIC_RANKS.1 as f64);
    loop {
        let r = (lo * (hi / lo).powf(rng.next_f64())) as usize;
        let r = r.clamp(TOPIC_RANKS.0, TOPIC_RANKS.1 - 1);
        if taken.insert(r) {
            return r;
        }
    }
}

/// The corpus: documents and questions, all in memory.
pub struct Corpus {
    docs: Vec<Doc>,
    questions: Vec<String>,
}

pub fn generate(docs: usize, seed: u64, questions: usize) -> Corpus {
    let vocab = Vocabulary::with_words(VOCABULARY, ZIPF_S, seed, EXTRA_WORDS, COMPOUNDS);
    let mut w = Writer {
        vocab: &vocab,
        rng: Rng::new(seed ^ 0xbe7c_0c0a_u64),
    };
    let mut taken = HashSet::new();
    let areas: Vec<Vec<usize>> = (0..docs.div_ceil(DOCS_PER_AREA))
        .map(|_| {
            (0..AREA_WORDS)
                .map(|_| topic_rank(&mut w.rng, &mut taken))
                .collect()
        })
        .collect();
    let topics: Vec<Topic> = (0..docs)
        .map(|d| Topic {
            area: areas[d / DOCS_PER_AREA].clone(),
            doc: (0..DOC_WORDS)
                .map(|_| topic_rank(&mut w.rng, &mut taken))
                .collect(),
        })
        .collect();
    let documents: Vec<Doc> = topics
        .iter()
        .enumerate()
        .map(|(i, t)| w.document(i, t))
        .collect();
    let mut qs = Vec::with_capacity(questions);
    let mut seen = HashSet::new();
    while qs.len() < questions && !topics.is_empty() {
        let t = &topics[w.rng.range(0, topics.len() - 1)];
        let q = w.question(t);
        if seen.insert(q.clone()) {
            qs.push(q);
        }
    }
    Corpus {
        docs: documents,
        questions: qs,
    }
}

/// Nearest-rank quantile of sorted values (0 for none).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn round5(x: f64) -> f64 {
    (x * 100_000.0).round() / 100_000.0
}

fn summary(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    let mean = if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    };
    json!({
        "p10": round5(quantile(&v, 0.1)),
        "p50": round5(quantile(&v, 0.5)),
        "p90": round5(quantile(&v, 0.9)),
        "max": round5(v.last().copied().unwrap_or(0.0)),
        "mean": round5(mean),
    })
}

/// What ragq will store and how selective the questions are (see the module docs).
pub fn measure(corpus: &Corpus) -> Value {
    let mut chunk_chars = Vec::new();
    let mut per_doc = Vec::new();
    let mut chunk_terms: Vec<HashSet<String>> = Vec::new();
    for d in &corpus.docs {
        let chunks = chunk(&d.text, d.format, CHUNK_TOKENS);
        per_doc.push(chunks.len() as f64);
        for c in chunks {
            chunk_chars.push(c.chars().count() as f64);
            chunk_terms.push(text::terms(&c).into_iter().collect());
        }
    }
    let n = chunk_terms.len().max(1) as f64;
    let mut df: HashMap<&str, usize> = HashMap::new();
    for set in &chunk_terms {
        for t in set {
            *df.entry(t.as_str()).or_default() += 1;
        }
    }
    let frac = |t: &str| df.get(t).copied().unwrap_or(0) as f64 / n;
    let common = COMMON_FREQUENCY.max(KEYWORD_SCAN / n);
    let (mut any, mut per_term, mut keyword, mut terms_per_q) = (vec![], vec![], vec![], vec![]);
    let (mut matched_none, mut below_top_n) = (0, 0);
    for q in &corpus.questions {
        let mut terms = text::terms(q);
        terms.sort();
        terms.dedup();
        terms_per_q.push(terms.len() as f64);
        per_term.extend(terms.iter().map(|t| frac(t)));
        let hits = chunk_terms
            .iter()
            .filter(|c| terms.iter().any(|t| c.contains(t)))
            .count();
        if hits == 0 {
            matched_none += 1;
        }
        any.push(hits as f64 / n);
        // The worker's keyword query: the rare terms OR-ed, or all of them AND-ed when every
        // one is common.
        let rare: Vec<&String> = terms.iter().filter(|t| frac(t) < common).collect();
        let kw = if rare.is_empty() {
            chunk_terms
                .iter()
                .filter(|c| terms.iter().all(|t| c.contains(t)))
                .count()
        } else {
            chunk_terms
                .iter()
                .filter(|c| rare.iter().any(|t| c.contains(*t)))
                .count()
        };
        if kw < TOP_N {
            below_top_n += 1;
        }
        keyword.push(kw as f64 / n);
    }
    let bytes: usize = corpus.docs.iter().map(|d| d.text.len()).sum();
    json!({
        "chunks": chunk_terms.len(),
        "bytes": bytes,
        "chunk_chars": summary(chunk_chars),
        "chunks_per_doc": summary(per_doc),
        "distinct_terms": df.len(),
        "selectivity": {
            "what": "fraction of the chunks (ragq's chunker, 128 tokens) containing the terms (text::terms) of each question",
            "question_any_term": summary(any),
            "question_keyword_query": summary(keyword),
            "term": summary(per_term),
            "terms_per_question": summary(terms_per_q),
            "questions_matching_no_chunk": matched_none,
            "keyword_query_below_top_n": below_top_n,
        },
    })
}

/// Writes the documents and the questions under `out` (see the module docs).
fn write(out: &Path, corpus: &Corpus) -> anyhow::Result<()> {
    let docs_dir = out.join("docs");
    std::fs::create_dir_all(&docs_dir)
        .with_context(|| format!("cannot create {}", docs_dir.display()))?;
    // A previous generation with other counts may have left other documents.
    for e in std::fs::read_dir(&docs_dir)?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("doc-") && (name.ends_with(".md") || name.ends_with(".txt")) {
            std::fs::remove_file(e.path())?;
        }
    }
    for d in &corpus.docs {
        std::fs::write(docs_dir.join(&d.name), &d.text)?;
    }
    let mut qs = corpus.questions.join("\n");
    qs.push('\n');
    std::fs::write(out.join("questions.txt"), qs)?;
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<Value> {
    if args.docs == 0 || args.docs > 100_000 {
        bail!("--docs must be between 1 and 100000");
    }
    if args.questions == 0 || args.questions > 100_000 {
        bail!("--questions must be between 1 and 100000");
    }
    let corpus = generate(args.docs, args.seed, args.questions);
    let measured = measure(&corpus);
    write(&args.out, &corpus)?;
    let report = json!({
        "generator": "ragq-probe bench-corpus",
        "version": VERSION,
        "seed": args.seed,
        "docs": args.docs,
        "questions": corpus.questions.len(),
        "vocabulary": VOCABULARY,
        "zipf_s": ZIPF_S,
        "chunk_tokens": CHUNK_TOKENS,
        "measured": measured,
    });
    let text = serde_json::to_string_pretty(&report)? + "\n";
    std::fs::write(args.out.join("corpus.json"), text)?;
    let m = &report["measured"];
    let s = &m["selectivity"];
    let pct = |v: &Value| format!("{:.2}%", v.as_f64().unwrap_or(0.0) * 100.0);
    println!(
        "bench corpus (seed {}, version {VERSION}) in {}",
        args.seed,
        args.out.display()
    );
    println!(
        "  {} documents, {} bytes -> {} chunks of {:.0} characters on average (p50 {:.0}, max {:.0}), {} distinct terms",
        args.docs,
        m["bytes"],
        m["chunks"],
        m["chunk_chars"]["mean"].as_f64().unwrap_or(0.0),
        m["chunk_chars"]["p50"].as_f64().unwrap_or(0.0),
        m["chunk_chars"]["max"].as_f64().unwrap_or(0.0),
        m["distinct_terms"],
    );
    println!(
        "  {} questions; chunks matched by any of a question's terms: p10 {} p50 {} p90 {} max {}",
        corpus.questions.len(),
        pct(&s["question_any_term"]["p10"]),
        pct(&s["question_any_term"]["p50"]),
        pct(&s["question_any_term"]["p90"]),
        pct(&s["question_any_term"]["max"]),
    );
    println!(
        "  chunks matched by the worker's keyword query (rare terms OR-ed): p50 {} p90 {} ({} questions below top_n {TOP_N}: vector fallback); by one term: p50 {} p90 {}; questions matching nothing: {}",
        pct(&s["question_keyword_query"]["p50"]),
        pct(&s["question_keyword_query"]["p90"]),
        s["keyword_query_below_top_n"],
        pct(&s["term"]["p50"]),
        pct(&s["term"]["p90"]),
        s["questions_matching_no_chunk"],
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_add_no_terms() {
        for t in TEMPLATES {
            assert!(text::terms(&t.replace("{}", " ")).is_empty(), "{t}");
            assert!((2..=3).contains(&t.matches("{}").count()), "{t}");
        }
    }

    #[test]
    fn same_seed_same_corpus() {
        let a = generate(8, 5, 20);
        let b = generate(8, 5, 20);
        assert_eq!(a.questions, b.questions);
        for (x, y) in a.docs.iter().zip(&b.docs) {
            assert_eq!((&x.name, &x.text), (&y.name, &y.text));
        }
        let c = generate(8, 6, 20);
        assert_ne!(a.questions, c.questions);
        assert_eq!(a.questions.len(), 20);
        assert!(
            a.questions
                .iter()
                .all(|q| q.ends_with('?') && !q.contains('\n'))
        );
    }

    #[test]
    fn realistic_shape_and_selectivity() {
        let corpus = generate(100, 42, 200);
        let m = measure(&corpus);
        let chunks = m["chunks"].as_u64().unwrap();
        assert!((1500..=3000).contains(&chunks), "{chunks} chunks");
        let s = &m["selectivity"];
        let p50 = s["question_any_term"]["p50"].as_f64().unwrap();
        assert!((0.01..=0.10).contains(&p50), "median selectivity {p50}");
        assert_eq!(s["questions_matching_no_chunk"].as_u64(), Some(0));
    }
}
