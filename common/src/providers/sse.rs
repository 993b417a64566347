//! A minimal incremental parser for the `data:` lines of a Server-Sent Events body, as OpenAI-
//! compatible servers stream them. Bytes arrive in arbitrary pieces; complete `data:` payloads
//! come out. A line may be at most [`MAX_LINE`] bytes: an upstream that never sends a newline
//! fails the read instead of growing the buffer without bound.

/// The longest line accepted (1 MiB).
pub const MAX_LINE: usize = 1 << 20;

/// A line grew past its bound without a newline.
#[derive(Debug, thiserror::Error)]
#[error("an event-stream line exceeded {0} bytes")]
pub struct LineTooLong(pub usize);

/// Buffers partial lines between `push` calls.
pub struct SseLines {
    buf: Vec<u8>,
    max_line: usize,
}

impl Default for SseLines {
    fn default() -> Self {
        SseLines::with_max_line(MAX_LINE)
    }
}

impl SseLines {
    /// A parser whose lines may be at most `max_line` bytes.
    pub fn with_max_line(max_line: usize) -> Self {
        SseLines {
            buf: Vec::new(),
            max_line,
        }
    }

    /// Feeds bytes; calls `on_data` with each complete `data:` payload (leading space trimmed).
    /// Fails once the unfinished line is longer than the bound (the parser is then unusable).
    pub fn push(
        &mut self,
        bytes: &[u8],
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<(), LineTooLong> {
        // Only the unfinished line is kept: the bound holds even for one huge read.
        if !bytes.contains(&b'\n') && self.buf.len() + bytes.len() > self.max_line {
            self.buf = Vec::new();
            return Err(LineTooLong(self.max_line));
        }
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
        if self.buf.len() > self.max_line {
            self.buf = Vec::new();
            return Err(LineTooLong(self.max_line));
        }
        Ok(())
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
            p.push(&body[..split], |d| out.push(d.to_vec())).unwrap();
            p.push(&body[split..], |d| out.push(d.to_vec())).unwrap();
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

    #[test]
    fn a_line_without_end_is_bounded() {
        let mut p = SseLines::with_max_line(16);
        p.push(b"data: short\n", |_| {}).unwrap();
        assert!(p.push(b"data: 0123456", |_| {}).is_ok());
        assert!(p.push(b"789abcdef", |_| {}).is_err());
        let mut p = SseLines::with_max_line(16);
        let mut n = 0;
        // Complete lines in one large read are fine; only the unfinished tail counts.
        p.push(&b"data: x\n".repeat(100), |_| n += 1).unwrap();
        assert_eq!(n, 100);
        assert!(p.push(&[b'y'; 17], |_| {}).is_err());
    }
}
