//! HTML to plain text, the first step of indexing an HTML document (see [`super::chunker`]).

/// Removes tags, scripts and styles; keeps block boundaries as blank lines. Linear in the
/// input: every byte is looked at a bounded number of times (no per-tag copy of the rest).
pub fn html_to_text(html: &str) -> String {
    const BLOCKS: [&str; 13] = [
        "p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section", "article",
    ];
    let bytes = html.as_bytes();
    let mut out = String::with_capacity(html.len());
    let mut pos = 0;
    while let Some(open) = memchr::memchr(b'<', &bytes[pos..]).map(|i| pos + i) {
        out.push_str(&html[pos..open]);
        // `<script …>` and `<style …>` (not `<scripts>`, `<scriptx>`) hide everything up to their
        // end tag, which may have white space before its `>` (`</SCRIPT >`).
        let raw = [&b"script"[..], &b"style"[..]]
            .into_iter()
            .find(|name| opens_element(&bytes[open..], name));
        if let Some(name) = raw {
            pos = find_end_tag(bytes, open + 1, name).unwrap_or(bytes.len());
            continue;
        }
        match memchr::memchr(b'>', &bytes[open..]).map(|i| open + i) {
            Some(close) => {
                let tag = html[open + 1..close].trim_start_matches('/');
                let name = tag.split([' ', '\t', '\n', '\r', '/']).next().unwrap_or("");
                if BLOCKS.iter().any(|t| name.eq_ignore_ascii_case(t))
                    && (tag.len() == name.len() || tag.as_bytes()[name.len()] == b' ')
                {
                    out.push_str("\n\n");
                }
                pos = close + 1;
            }
            None => {
                pos = bytes.len();
            }
        }
    }
    out.push_str(&html[pos..]);
    out.replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
}

/// True when `hay` starts with `<name` followed by the end of a tag name (white space, `>`,
/// `/` or the end of the text), ASCII case insensitively.
fn opens_element(hay: &[u8], name: &[u8]) -> bool {
    hay.len() > name.len()
        && hay[1..=name.len()].eq_ignore_ascii_case(name)
        && hay
            .get(name.len() + 1)
            .is_none_or(|c| c.is_ascii_whitespace() || *c == b'>' || *c == b'/')
}

/// The position just after the first `</name…>` end tag at or after `from` (`</name` then
/// optional white space and `>`), ASCII case insensitively. One forward scan: linear.
fn find_end_tag(hay: &[u8], from: usize, name: &[u8]) -> Option<usize> {
    let mut at = from;
    while let Some(i) = memchr::memchr(b'<', &hay[at..]) {
        let p = at + i;
        let rest = &hay[p..];
        if rest.len() >= name.len() + 2
            && rest[1] == b'/'
            && rest[2..2 + name.len()].eq_ignore_ascii_case(name)
        {
            let mut q = p + 2 + name.len();
            while q < hay.len() && hay[q].is_ascii_whitespace() {
                q += 1;
            }
            if hay.get(q) == Some(&b'>') {
                return Some(q + 1);
            }
        }
        at = p + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_html() {
        let t = html_to_text(
            "<html><style>p{}</style><p>Hello &amp; <b>bye</b></p><script>x()</script><p>next</p>",
        );
        assert_eq!(
            t.split_whitespace().collect::<Vec<_>>(),
            vec!["Hello", "&", "bye", "next"]
        );
        // Only real script/style elements hide text; their end tag may carry white space.
        let t = html_to_text(
            "a <scripts> b <scriptx>c</scriptx> <SCRIPT>x</SCRIPT >d <style\n>s</style\t> e",
        );
        assert_eq!(
            t.split_whitespace().collect::<Vec<_>>(),
            vec!["a", "b", "c", "d", "e"]
        );
        // An unclosed script hides the rest, as a browser would.
        assert_eq!(html_to_text("keep<script>lost").trim(), "keep");
    }
}
