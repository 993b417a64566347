//! Document parsing on pathological HTML: `html_to_text` and the chunker over documents of
//! 1, 2, 5 and 10 MiB made of thousands of unclosed `<script` fragments, tags, entities and
//! multi-byte text. Linear parsing shows as a constant time per MiB; the old quadratic
//! `html_to_text` (it lowercased the rest of the document at every tag) grew with the square.

use std::time::Instant;

use ragq_common::indexing::{Format, chunk, html_to_text};
use serde_json::json;

pub struct Args {
    /// Largest document, MiB.
    pub max_mib: usize,
}

/// A pathological document of about `bytes` bytes.
fn document(bytes: usize) -> String {
    const PIECES: [&str; 8] = [
        "<p CLASS=x>Grüße, 東京 — naïve café: retry with backoff, dead letter after five attempts. ",
        "<script type=\"x\">var a = '<p>' + '</scr' + 'ipt';</script>",
        "a < b <scripts are not scripts> and <scriptx> ",
        "&amp;&lt;&#x41;&unknown; &#128512; ",
        "<SCRIPT>if (a<b) {}</SCRIPT >",
        "<div><span>worker drains on SIGTERM</span></div>\n",
        "<style>p{color:red}</style><!-- <script --> ",
        "<sCrIpT",
    ];
    let mut out = String::with_capacity(bytes + 64);
    let mut i = 0;
    while out.len() < bytes {
        out.push_str(PIECES[i % PIECES.len()]);
        i += 1;
    }
    out
}

pub fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let mut rows = Vec::new();
    println!(
        "{:>6} {:>12} {:>12} {:>12} {:>8}",
        "MiB", "to_text ms", "chunk ms", "ms per MiB", "chunks"
    );
    for mib in [1, 2, 5, 10]
        .into_iter()
        .filter(|m| *m <= args.max_mib.max(1))
    {
        let doc = document(mib << 20);
        let t = Instant::now();
        let text = html_to_text(&doc);
        let to_text = t.elapsed();
        let t = Instant::now();
        let chunks = chunk(&text, Format::Text, 128);
        let chunking = t.elapsed();
        let total_ms = (to_text + chunking).as_secs_f64() * 1e3;
        println!(
            "{mib:>6} {:>12.1} {:>12.1} {:>12.1} {:>10} {:>8}",
            to_text.as_secs_f64() * 1e3,
            chunking.as_secs_f64() * 1e3,
            total_ms / mib as f64,
            text.len() >> 10,
            chunks.len()
        );
        rows.push(json!({
            "mib": mib, "html_to_text_ms": to_text.as_secs_f64() * 1e3,
            "chunk_ms": chunking.as_secs_f64() * 1e3, "chunks": chunks.len(), "text_bytes": text.len(),
            "ms_per_mib": total_ms / mib as f64,
        }));
    }
    Ok(json!({"probe": "html", "rows": rows}))
}
