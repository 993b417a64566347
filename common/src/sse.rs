//! Server-Sent Events: the one incremental parser of `text/event-stream` bodies in ragq, used by
//! the model clients (`providers::openai_chat` reads an upstream's answer with it) and by the
//! end-to-end test harness (which reads ragq's own streams). It reads untrusted upstreams, so
//! every line, and every event, is bounded ([`MAX_LINE`]).
//!
//! Per the SSE spec a body is lines (ending in `\n`, `\r\n` or a lone `\r`), grouped into events
//! by blank lines:
//!
//! ```text
//! : keep-alive            <- comment, ignored
//! event: message          <- the event's type (optional)
//! data: {"a":             <- one optional space after the colon is dropped
//! data: 1}                <- several data lines are joined with "\n": `{"a":\n1}`
//!                         <- blank line: the event is dispatched
//! ```
//!
//! `id:`, `retry:` and unknown fields are ignored (nothing here reconnects). Bytes arrive in
//! arbitrary pieces ([`SseParser::push`] keeps the unfinished line between them); at the end of
//! the body [`SseParser::finish`] dispatches a last event whose blank line never came.

use memchr::{memchr, memchr2};

/// The longest line — and the largest event — accepted (1 MiB): an upstream that never sends a
/// newline (or never ends an event) fails the read instead of growing a buffer without bound.
pub const MAX_LINE: usize = 1 << 20;

/// A line or an event grew past the bound.
#[derive(Debug, thiserror::Error)]
#[error("an event-stream line exceeded {0} bytes")]
pub struct LineTooLong(pub usize);

/// One dispatched event; the slices borrow the parser's buffers for the callback's duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `event:` field, empty when absent (the spec's default type, "message").
    pub event: &'a [u8],
    /// The event's `data:` values joined with `\n`.
    pub data: &'a [u8],
}

/// Buffers the unfinished line and the event being assembled between `push` calls.
pub struct SseParser {
    line: Vec<u8>,
    data: Vec<u8>,
    event: Vec<u8>,
    /// The event has a `data` field (an empty `data:` still makes an event).
    has_data: bool,
    /// The last line ended with `\r`: a `\n` first in the next piece belongs to it.
    skip_lf: bool,
    max: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        SseParser::with_max_line(MAX_LINE)
    }
}

impl SseParser {
    /// A parser whose lines and events may be at most `max` bytes.
    pub fn with_max_line(max: usize) -> Self {
        SseParser {
            line: Vec::new(),
            data: Vec::new(),
            event: Vec::new(),
            has_data: false,
            skip_lf: false,
            max,
        }
    }

    /// Feeds bytes; calls `on_event` for each event they complete. Fails once a line or an event
    /// is longer than the bound (the parser is then unusable).
    pub fn push(
        &mut self,
        mut bytes: &[u8],
        mut on_event: impl FnMut(Event<'_>),
    ) -> Result<(), LineTooLong> {
        loop {
            if self.skip_lf {
                let Some((&first, rest)) = bytes.split_first() else {
                    return Ok(());
                };
                self.skip_lf = false;
                if first == b'\n' {
                    bytes = rest;
                }
            }
            let Some(end) = memchr2(b'\n', b'\r', bytes) else {
                // Only the unfinished line is kept: the bound holds even for one huge read.
                if self.line.len() + bytes.len() > self.max {
                    return Err(self.fail());
                }
                self.line.extend_from_slice(bytes);
                return Ok(());
            };
            self.skip_lf = bytes[end] == b'\r';
            if self.line.is_empty() {
                self.line_done(&bytes[..end], &mut on_event)?;
            } else {
                if self.line.len() + end > self.max {
                    return Err(self.fail());
                }
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&bytes[..end]);
                let done = self.line_done(&line, &mut on_event);
                line.clear();
                self.line = line;
                done?;
            }
            bytes = &bytes[end + 1..];
        }
    }

    /// The body ended: processes an unfinished last line and dispatches a last event that had no
    /// blank line after it (lenient, as OpenAI-compatible clients are).
    pub fn finish(&mut self, mut on_event: impl FnMut(Event<'_>)) -> Result<(), LineTooLong> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, &mut on_event)?;
        }
        self.dispatch(&mut on_event);
        self.skip_lf = false;
        Ok(())
    }

    fn fail(&mut self) -> LineTooLong {
        self.line = Vec::new();
        self.data = Vec::new();
        LineTooLong(self.max)
    }

    fn line_done(
        &mut self,
        line: &[u8],
        on_event: &mut impl FnMut(Event<'_>),
    ) -> Result<(), LineTooLong> {
        if line.is_empty() {
            self.dispatch(on_event);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.data.len() + value.len() + usize::from(self.has_data) > self.max {
                    return Err(self.fail());
                }
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(Event<'_>)) {
        if self.has_data {
            on_event(Event {
                event: &self.event,
                data: &self.data,
            });
        }
        self.data.clear();
        self.event.clear();
        self.has_data = false;
    }
}

/// Every event of a complete body, in order, as owned data (the test harness's reader).
pub fn events_of(body: &[u8]) -> Result<Vec<Vec<u8>>, LineTooLong> {
    let mut out = Vec::new();
    let mut parser = SseParser::default();
    parser.push(body, |e| out.push(e.data.to_vec()))?;
    parser.finish(|e| out.push(e.data.to_vec()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(body: &[u8], split: usize) -> Vec<Vec<u8>> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        p.push(&body[..split], |e| out.push(e.data.to_vec()))
            .unwrap();
        p.push(&body[split..], |e| out.push(e.data.to_vec()))
            .unwrap();
        p.finish(|e| out.push(e.data.to_vec())).unwrap();
        out
    }

    #[test]
    fn parses_across_any_split_point() {
        let body = b"data: {\"a\":1}\n\n: comment\r\ndata:{\"b\":2}\r\n\r\ndata: [DONE]\n\n";
        for split in 0..body.len() {
            assert_eq!(
                all(body, split),
                vec![
                    b"{\"a\":1}".to_vec(),
                    b"{\"b\":2}".to_vec(),
                    b"[DONE]".to_vec()
                ]
            );
        }
    }

    #[test]
    fn joins_multi_line_data_and_accepts_every_line_ending() {
        let body = b"event: x\ndata: {\"a\":\r\ndata: 1}\r\rdata:2\n\ndata\n\n";
        for split in 0..body.len() {
            assert_eq!(
                all(body, split),
                vec![b"{\"a\":\n1}".to_vec(), b"2".to_vec(), b"".to_vec()]
            );
        }
        let mut types = Vec::new();
        let mut p = SseParser::default();
        p.push(b"event: delta\ndata: 1\n\ndata: 2\n\n", |e| {
            types.push(e.event.to_vec())
        })
        .unwrap();
        assert_eq!(types, vec![b"delta".to_vec(), Vec::new()]);
    }

    #[test]
    fn a_last_event_without_its_blank_line_is_dispatched_at_the_end() {
        assert_eq!(
            events_of(b"data: 1\n\ndata: 2").unwrap(),
            vec![b"1".to_vec(), b"2".to_vec()]
        );
    }

    #[test]
    fn a_line_without_end_is_bounded() {
        let mut p = SseParser::with_max_line(16);
        p.push(b"data: short\n\n", |_| {}).unwrap();
        assert!(p.push(b"data: 0123456", |_| {}).is_ok());
        assert!(p.push(b"789abcdef", |_| {}).is_err());
        let mut p = SseParser::with_max_line(16);
        let mut n = 0;
        // Complete events in one large read are fine; only the unfinished tail counts.
        p.push(&b"data: x\n\n".repeat(100), |_| n += 1).unwrap();
        assert_eq!(n, 100);
        assert!(p.push(&[b'y'; 17], |_| {}).is_err());
    }

    #[test]
    fn an_event_that_never_ends_is_bounded() {
        let mut p = SseParser::with_max_line(16);
        assert!(p.push(&b"data: x\n".repeat(100), |_| {}).is_err());
    }
}
