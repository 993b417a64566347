//! Splitting a document's text into chunks of about a token budget, the step of indexing
//! between [`super::html`] and embedding.

use super::Format;
use super::html::html_to_text;
use crate::text::approx_tokens;

/// Splits text into chunks of about `max_tokens`: paragraphs are kept whole when they fit,
/// markdown headings start a new chunk, long paragraphs are split on sentence ends. Linear in
/// the input: sizes are kept as running counts, never recounted over a growing chunk.
pub fn chunk(text: &str, format: Format, max_tokens: usize) -> Vec<String> {
    let text = match format {
        Format::Html => html_to_text(text),
        _ => text.replace("\r\n", "\n"),
    };
    let mut pieces: Vec<String> = Vec::new();
    for para in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        if approx_tokens(para) <= max_tokens {
            pieces.push(para.to_string());
            continue;
        }
        let mut current = String::new();
        let mut size = Size::default();
        for sentence in para.split_inclusive(['.', '!', '?', '\n']) {
            let s = Size::of(sentence);
            if !current.is_empty() && size.tokens() + s.tokens() > max_tokens {
                pieces.push(current.trim().to_string());
                current.clear();
                size = Size::default();
            }
            current.push_str(sentence);
            size = size.plus(s);
        }
        if !current.trim().is_empty() {
            pieces.push(current.trim().to_string());
        }
    }
    let mut chunks: Vec<(String, Size)> = Vec::new();
    for piece in pieces {
        let heading = format == Format::Markdown && piece.starts_with('#');
        let s = Size::of(&piece);
        match chunks.last_mut() {
            Some((last, size)) if !heading && size.tokens() + s.tokens() <= max_tokens => {
                last.push_str("\n\n");
                last.push_str(&piece);
                *size = size.plus(s).plus(Size { words: 0, bytes: 2 });
            }
            _ => chunks.push((piece, s)),
        }
    }
    chunks.into_iter().map(|(c, _)| c).collect()
}

/// Words and bytes of a text, added up piecewise, so [`Size::tokens`] is [`approx_tokens`] of
/// the concatenation (or slightly more, when a word was split across pieces).
#[derive(Clone, Copy, Debug, Default)]
struct Size {
    words: usize,
    bytes: usize,
}

impl Size {
    fn of(text: &str) -> Size {
        Size {
            words: text.split_whitespace().count(),
            bytes: text.len(),
        }
    }

    fn plus(self, other: Size) -> Size {
        Size {
            words: self.words + other.words,
            bytes: self.bytes + other.bytes,
        }
    }

    fn tokens(self) -> usize {
        self.words.max(self.bytes / 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_size_and_headings() {
        let md = "# One\n\nalpha beta.\n\ngamma.\n\n# Two\n\ndelta.";
        let c = chunk(md, Format::Markdown, 100);
        assert_eq!(c, vec!["# One\n\nalpha beta.\n\ngamma.", "# Two\n\ndelta."]);
        let long = "word. ".repeat(100);
        let c = chunk(&long, Format::Text, 20);
        assert!(c.len() >= 5 && c.iter().all(|x| approx_tokens(x) <= 20));
    }

    #[test]
    fn html_and_chunking_are_linear() {
        // Many tags with multi-byte text right after them (the old code lowercased the whole
        // rest of the document at each such tag) and many unterminated scripts.
        let mut html = String::new();
        for _ in 0..100_000 {
            html.push_str("<p>é déjà vu. </p><script>x</script>");
        }
        let started = std::time::Instant::now();
        let text = html_to_text(&html);
        assert!(text.contains("déjà vu."));
        let chunks = chunk(&html, Format::Html, 8192);
        // (Joining paragraphs adds their "\n\n", which the size check does not count.)
        let largest = chunks.iter().map(|c| approx_tokens(c)).max().unwrap_or(0);
        assert!(chunks.len() > 10 && largest <= 8192 + 8, "{largest}");
        let long_para = "a b c. ".repeat(300_000);
        let chunks = chunk(&long_para, Format::Text, 8192);
        assert!(chunks.len() > 10 && chunks.iter().all(|c| approx_tokens(c) <= 8192));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}
