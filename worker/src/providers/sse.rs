//! A minimal incremental parser for the `data:` lines of a Server-Sent Events body, as OpenAI-
//! compatible servers stream them. Bytes arrive in arbitrary pieces; complete `data:` payloads
//! come out.

/// Buffers partial lines between `push` calls.
#[derive(Default)]
pub struct SseLines {
    buf: Vec<u8>,
}

impl SseLines {
    /// Feeds bytes; calls `on_data` with each complete `data:` payload (leading space trimmed).
    pub fn push(&mut self, bytes: &[u8], mut on_data: impl FnMut(&[u8])) {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(pos) = memchr::memchr(b'\n', &self.buf[start..]) {
            let mut line = &self.buf[start..start + pos];
            start += pos + 1;
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            if let Some(data) = line.strip_prefix(b"data:") {
                let data = data.strip_prefix(b" ").unwrap_or(data);
                on_data(data);
            }
        }
        self.buf.drain(..start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_across_any_split_point() {
        let body = b"data: {\"a\":1}\n\n: comment\r\ndata:{\"b\":2}\r\n\r\ndata: [DONE]\n\n";
        for split in 0..body.len() {
            let mut p = SseLines::default();
            let mut out = Vec::new();
            p.push(&body[..split], |d| out.push(d.to_vec()));
            p.push(&body[split..], |d| out.push(d.to_vec()));
            assert_eq!(
                out,
                vec![
                    b"{\"a\":1}".to_vec(),
                    b"{\"b\":2}".to_vec(),
                    b"[DONE]".to_vec()
                ]
            );
        }
    }
}
