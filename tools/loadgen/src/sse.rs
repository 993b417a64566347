//! Incremental Server-Sent Events (SSE) parser.
//!
//! An SSE body is a sequence of *lines*. A line ends with `\n`, `\r\n` or a
//! lone `\r`. Lines are grouped into *events*; a blank line ends an event:
//!
//! ```text
//! : keep-alive            <- comment (starts with ':'), ignored
//! data:{"code":0,...}     <- field "data", value `{"code":0,...}`
//! data: second line       <- one optional space after the colon is dropped
//!                         <- blank line: dispatch the event
//! ```
//!
//! Several `data:` lines in one event are joined with `\n`. The `event:`
//! field names the event type; `id:` and `retry:` are accepted and ignored
//! (a load generator never reconnects).
//!
//! # Why incremental
//!
//! HTTP delivers the body in chunks whose boundaries have nothing to do with
//! SSE framing: one chunk may hold three events, or half a line, or end
//! between the `\r` and `\n` of a CRLF. [`SseParser::feed`] therefore keeps
//! the unfinished tail of the previous chunk and continues where it stopped.
//!
//! # Cost
//!
//! Newlines are located with `memchr2` (SIMD), never byte by byte. Complete
//! lines are processed straight out of the caller's chunk; only an unfinished
//! line is copied into an internal buffer. The buffers keep their capacity,
//! so after the first few events the parser does not allocate at all.
//!
//! # Example
//!
//! ```
//! use ragq_loadgen::sse::SseParser;
//!
//! let mut parser = SseParser::new();
//! let mut seen = Vec::new();
//! let mut on_event = |ev: ragq_loadgen::sse::Event<'_>| seen.push(ev.data.to_vec());
//! parser.feed(b"data: hel", &mut on_event).unwrap();
//! parser.feed(b"lo\n\ndata:[DONE]\n\n", &mut on_event).unwrap();
//! assert_eq!(seen, vec![b"hello".to_vec(), b"[DONE]".to_vec()]);
//! ```

use memchr::{memchr, memchr2};

/// Default upper bound for one event (or one line) in bytes: 16 MiB.
///
/// A broken server that never sends a newline must not make the load
/// generator eat all memory.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// One dispatched event. The slices borrow the parser's buffers and are only
/// valid inside the callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `event:` field, empty when absent (the SSE default type "message").
    pub event: &'a [u8],
    /// All `data:` values of the event joined with `\n`.
    pub data: &'a [u8],
}

/// Errors the parser can report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseError {
    /// A line or an event grew beyond the configured limit.
    EventTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
}

impl std::fmt::Display for SseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SseError::EventTooLarge { limit } => {
                write!(f, "SSE event larger than {limit} bytes")
            }
        }
    }
}

impl std::error::Error for SseError {}

/// Streaming SSE parser; feed it body chunks in order.
#[derive(Debug)]
pub struct SseParser {
    /// Unfinished line carried over from the previous chunk.
    line: Vec<u8>,
    /// Data buffer of the event being assembled.
    data: Vec<u8>,
    /// Event type of the event being assembled.
    event: Vec<u8>,
    /// Whether the current event has seen at least one `data` field
    /// (`data:` with an empty value still makes an event with empty data).
    has_data: bool,
    /// The previous line ended with `\r`; a `\n` right after it belongs to
    /// the same line ending (CRLF split across two chunks).
    skip_lf: bool,
    max_event_bytes: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SseParser {
    /// A parser with the [`DEFAULT_MAX_EVENT_BYTES`] limit.
    pub fn new() -> Self {
        Self::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }

    /// A parser that fails with [`SseError::EventTooLarge`] when a line or
    /// an event exceeds `max` bytes.
    pub fn with_max_event_bytes(max: usize) -> Self {
        SseParser {
            line: Vec::new(),
            data: Vec::new(),
            event: Vec::new(),
            has_data: false,
            skip_lf: false,
            max_event_bytes: max,
        }
    }

    /// Feeds the next chunk of the body, calling `on_event` for every event
    /// completed by it (zero, one or many).
    pub fn feed<F>(&mut self, mut chunk: &[u8], on_event: &mut F) -> Result<(), SseError>
    where
        F: FnMut(Event<'_>),
    {
        loop {
            if self.skip_lf {
                match chunk.split_first() {
                    None => return Ok(()),
                    Some((&first, rest)) => {
                        self.skip_lf = false;
                        if first == b'\n' {
                            chunk = rest;
                        }
                    }
                }
            }
            match memchr2(b'\n', b'\r', chunk) {
                None => {
                    if self.line.len() + chunk.len() > self.max_event_bytes {
                        return Err(SseError::EventTooLarge {
                            limit: self.max_event_bytes,
                        });
                    }
                    self.line.extend_from_slice(chunk);
                    return Ok(());
                }
                Some(end) => {
                    self.skip_lf = chunk[end] == b'\r';
                    if self.line.is_empty() {
                        // Fast path: the whole line is inside this chunk.
                        self.process_line(&chunk[..end], on_event)?;
                    } else {
                        // Complete the carried-over line. Take the buffer out
                        // so `process_line` can borrow `self` mutably, then
                        // put it back to keep its capacity.
                        if self.line.len() + end > self.max_event_bytes {
                            return Err(SseError::EventTooLarge {
                                limit: self.max_event_bytes,
                            });
                        }
                        let mut line = std::mem::take(&mut self.line);
                        line.extend_from_slice(&chunk[..end]);
                        let result = self.process_line(&line, on_event);
                        line.clear();
                        self.line = line;
                        result?;
                    }
                    chunk = &chunk[end + 1..];
                }
            }
        }
    }

    /// Signals the end of the body.
    ///
    /// Browsers drop a final event that lacks its terminating blank line;
    /// this parser is lenient and dispatches it (like Python's
    /// `iter_lines`-based clients do), so the caller can decide whether a
    /// missing blank line matters. The parser is reset afterwards.
    pub fn finish<F>(&mut self, on_event: &mut F) -> Result<(), SseError>
    where
        F: FnMut(Event<'_>),
    {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, on_event)?;
        }
        self.dispatch(on_event);
        self.skip_lf = false;
        Ok(())
    }

    fn process_line<F>(&mut self, line: &[u8], on_event: &mut F) -> Result<(), SseError>
    where
        F: FnMut(Event<'_>),
    {
        if line.is_empty() {
            self.dispatch(on_event);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(()); // comment / keep-alive
        }
        let (field, value) = match memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                let value = value.strip_prefix(b" ").unwrap_or(value);
                (&line[..colon], value)
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                let extra = value.len() + usize::from(self.has_data);
                if self.data.len() + extra > self.max_event_bytes {
                    return Err(SseError::EventTooLarge {
                        limit: self.max_event_bytes,
                    });
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
            _ => {} // id, retry and unknown fields
        }
        Ok(())
    }

    fn dispatch<F>(&mut self, on_event: &mut F)
    where
        F: FnMut(Event<'_>),
    {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// (event type, data) pairs, owned, for comparisons.
    type Owned = Vec<(String, String)>;

    fn collect(chunks: &[&[u8]]) -> Owned {
        let mut out = Vec::new();
        let mut parser = SseParser::new();
        let mut push = |ev: Event<'_>| {
            out.push((
                String::from_utf8_lossy(ev.event).into_owned(),
                String::from_utf8_lossy(ev.data).into_owned(),
            ))
        };
        for chunk in chunks {
            parser.feed(chunk, &mut push).expect("feed");
        }
        parser.finish(&mut push).expect("finish");
        out
    }

    fn ev(data: &str) -> (String, String) {
        (String::new(), data.to_owned())
    }

    const SAMPLE: &str = ": keep-alive\n\
        \n\
        data:{\"code\":0,\"data\":{\"answer\":\"He\"}}\n\
        \n\
        data: {\"code\":0,\"data\":{\"answer\":\"Hello\"}}\n\
        \n\
        : ping\n\
        event: update\n\
        id: 7\n\
        data: line one\n\
        data:line two\n\
        \n\
        data\n\
        \n\
        data: {\"code\":0,\"data\":true}\n\
        \n";

    fn sample_expected() -> Owned {
        vec![
            ev("{\"code\":0,\"data\":{\"answer\":\"He\"}}"),
            ev("{\"code\":0,\"data\":{\"answer\":\"Hello\"}}"),
            ("update".to_owned(), "line one\nline two".to_owned()),
            ev(""),
            ev("{\"code\":0,\"data\":true}"),
        ]
    }

    fn variants() -> Vec<(&'static str, String)> {
        vec![
            ("lf", SAMPLE.to_owned()),
            ("crlf", SAMPLE.replace('\n', "\r\n")),
            ("cr", SAMPLE.replace('\n', "\r")),
        ]
    }

    #[test]
    fn whole_body_in_one_chunk() {
        for (name, body) in variants() {
            assert_eq!(collect(&[body.as_bytes()]), sample_expected(), "{name}");
        }
    }

    #[test]
    fn every_single_split_point() {
        for (name, body) in variants() {
            let bytes = body.as_bytes();
            for split in 0..=bytes.len() {
                let (a, b) = bytes.split_at(split);
                assert_eq!(
                    collect(&[a, b]),
                    sample_expected(),
                    "{name} split at {split}"
                );
            }
        }
    }

    #[test]
    fn every_pair_of_split_points() {
        for (name, body) in variants() {
            let bytes = body.as_bytes();
            for i in 0..=bytes.len() {
                for j in i..=bytes.len() {
                    let chunks = [&bytes[..i], &bytes[i..j], &bytes[j..]];
                    assert_eq!(
                        collect(&chunks),
                        sample_expected(),
                        "{name} split at {i},{j}"
                    );
                }
            }
        }
    }

    #[test]
    fn byte_by_byte() {
        for (name, body) in variants() {
            let chunks: Vec<&[u8]> = body.as_bytes().chunks(1).collect();
            assert_eq!(collect(&chunks), sample_expected(), "{name}");
        }
    }

    #[test]
    fn data_with_and_without_space() {
        let got = collect(&[b"data:a\n\ndata: b\n\ndata:  c\n\n"]);
        // Only one leading space is removed.
        assert_eq!(got, vec![ev("a"), ev("b"), ev(" c")]);
    }

    #[test]
    fn comments_only_produce_nothing() {
        assert!(collect(&[b": keep-alive\n\n: another\r\n\r\n"]).is_empty());
    }

    #[test]
    fn blank_lines_without_data_dispatch_nothing() {
        assert!(collect(&[b"\n\n\nevent: x\n\n"]).is_empty());
    }

    #[test]
    fn trailing_event_without_blank_line_is_dispatched_on_finish() {
        assert_eq!(collect(&[b"data: [DONE]"]), vec![ev("[DONE]")]);
        assert_eq!(collect(&[b"data: [DONE]\n"]), vec![ev("[DONE]")]);
    }

    #[test]
    fn crlf_split_between_cr_and_lf_is_one_line_ending() {
        // Were the LF treated as a second line ending, "a" would be
        // dispatched on its own before "b" was appended.
        let got = collect(&[b"data: a\r", b"\ndata: b\r\n\r\n"]);
        assert_eq!(got, vec![ev("a\nb")]);
    }

    #[test]
    fn oversized_line_is_rejected() {
        let mut parser = SseParser::with_max_event_bytes(12);
        let mut sink = |_: Event<'_>| {};
        assert!(parser.feed(b"data: 0123", &mut sink).is_ok());
        assert_eq!(
            parser.feed(b"456789", &mut sink),
            Err(SseError::EventTooLarge { limit: 12 })
        );
    }

    #[test]
    fn oversized_event_is_rejected() {
        let mut parser = SseParser::with_max_event_bytes(8);
        let mut sink = |_: Event<'_>| {};
        assert!(parser.feed(b"data: 0123\n", &mut sink).is_ok());
        assert!(parser.feed(b"data: 4567\n", &mut sink).is_err());
    }
}
