//! W3C trace context (`traceparent`, <https://www.w3.org/TR/trace-context/>): the ingress honours
//! the one a request carries (or starts a trace), the job carries it to the worker
//! ([`crate::job::Job::trace`] and the AMQP header [`HEADER`]), and the worker's log lines for the
//! job carry its trace id.

use std::fmt;

use rand::Rng;

/// The HTTP and AMQP header name.
pub const HEADER: &str = "traceparent";

/// A parsed `traceparent`: `00-{trace id: 32 hex}-{parent span id: 16 hex}-{flags: 2 hex}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TraceParentError {
    #[error("traceparent is not `version-traceid-spanid-flags`")]
    Shape,
    #[error("traceparent has a field that is not lowercase hex of the right length")]
    Hex,
    #[error("traceparent version ff is invalid")]
    Version,
    #[error("traceparent has an all-zero trace id or span id")]
    Zero,
}

fn hex_field<const N: usize>(s: &str) -> Result<[u8; N], TraceParentError> {
    if s.len() != N * 2 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(TraceParentError::Hex);
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|_| TraceParentError::Hex)?;
    Ok(out)
}

impl TraceParent {
    /// Parses a header value (version 00, or a later version's first four fields).
    pub fn parse(value: &str) -> Result<TraceParent, TraceParentError> {
        let mut parts = value.trim().split('-');
        let (Some(version), Some(trace), Some(span), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TraceParentError::Shape);
        };
        let [version] = hex_field::<1>(version)?;
        if version == 0xff {
            return Err(TraceParentError::Version);
        }
        if version == 0 && parts.next().is_some() {
            return Err(TraceParentError::Shape);
        }
        let trace_id = hex_field::<16>(trace)?;
        let span_id = hex_field::<8>(span)?;
        let [flags] = hex_field::<1>(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return Err(TraceParentError::Zero);
        }
        Ok(TraceParent {
            trace_id,
            span_id,
            flags,
        })
    }

    /// A new trace (sampled), for a request that carries none.
    pub fn generate() -> TraceParent {
        let mut rng = rand::rng();
        let mut trace_id: [u8; 16] = rng.random();
        let mut span_id: [u8; 8] = rng.random();
        trace_id[0] |= 1; // never all zero
        span_id[0] |= 1;
        TraceParent {
            trace_id,
            span_id,
            flags: 1,
        }
    }

    /// The same trace with a new span id (this process's span, the parent of the next hop's).
    pub fn child(&self) -> TraceParent {
        let mut span_id: [u8; 8] = rand::rng().random();
        span_id[0] |= 1;
        TraceParent { span_id, ..*self }
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.span_id),
            self.flags
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_prints_the_spec_example() {
        let tp = TraceParent::parse(EXAMPLE).unwrap();
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.flags, 1);
        assert_eq!(tp.to_string(), EXAMPLE);
        let child = tp.child();
        assert_eq!(child.trace_id, tp.trace_id);
        assert_ne!(child.span_id, tp.span_id);
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47é6-00f067aa0ba902b7-01",
        ] {
            assert!(TraceParent::parse(bad).is_err(), "{bad}");
        }
        // A later version may append fields.
        assert!(TraceParent::parse(&format!("01{}-what", &EXAMPLE[2..])).is_ok());
        let g = TraceParent::generate();
        assert_eq!(TraceParent::parse(&g.to_string()), Ok(g));
    }
}
