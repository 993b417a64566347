//! Publish timestamps carried inside payloads: `t=<µs since the Unix epoch>;`.
//!
//! Every probe that measures "published → received" writes the publish time into the payload
//! itself, so the receiver needs no shared state with the sender. Publisher and receiver run in
//! the same process (one clock), so wall-clock microseconds are comparable.
//!
//! RAGFlow's streamed answers are **cumulative**: the SSE event for the n-th delta carries the
//! text of all n deltas, hence n stamps. [`last_stamp`] therefore returns the *last* well-formed
//! stamp in a payload, which is the newest one.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The stamp text for `us`: `t=<us>;`.
pub fn stamp(us: u64) -> String {
    format!("t={us};")
}

/// The value of the last well-formed stamp (`t=`, one or more digits, `;`) in `payload`.
/// Malformed candidates (`t=;`, `t=12x`, digits without the closing `;`) are skipped.
pub fn last_stamp(payload: &[u8]) -> Option<u64> {
    let mut end = payload.len();
    while end >= 2 {
        // Find the last "t=" that starts before `end`.
        let at = payload[..end].windows(2).rposition(|w| w == b"t=")?;
        let digits = &payload[at + 2..];
        let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
        if n > 0 && n <= 20 && digits.get(n) == Some(&b';') {
            // At most 20 ASCII digits: valid UTF-8; only overflow can fail the parse.
            if let Some(v) = std::str::from_utf8(&digits[..n])
                .ok()
                .and_then(|s| s.parse().ok())
            {
                return Some(v);
            }
        }
        end = at + 1;
    }
    None
}

/// Latency in µs of a payload received at `now_us`: `now_us − last stamp`, clamped at 0 (a
/// clock step backwards must not underflow).
pub fn latency_us(payload: &[u8], now_us: u64) -> Option<u64> {
    last_stamp(payload).map(|t| now_us.saturating_sub(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_stamp_of_a_cumulative_answer_is_the_newest() {
        let sse = br#"{"code": 0, "data": {"answer": "t=100;t=250;t=31337;", "reference": {"chunks": []}, "id": "m", "session_id": "s"}}"#;
        assert_eq!(last_stamp(sse), Some(31337));
        assert_eq!(latency_us(sse, 31_400), Some(63));
        assert_eq!(latency_us(sse, 1), Some(0), "clock going back clamps at 0");
    }

    #[test]
    fn malformed_stamps_are_skipped() {
        assert_eq!(last_stamp(b"t=5; then t=; and t=12x and t=99"), Some(5));
        assert_eq!(last_stamp(b"no stamp at all"), None);
        assert_eq!(last_stamp(b""), None);
        assert_eq!(last_stamp(b"t="), None);
        // Overflowing u64 is not a stamp.
        assert_eq!(last_stamp(b"t=7;t=99999999999999999999;"), Some(7));
        let s = stamp(1_764_200_000_123_456);
        assert_eq!(s, "t=1764200000123456;");
        assert_eq!(
            last_stamp(format!("pad {s} pad").as_bytes()),
            Some(1_764_200_000_123_456)
        );
    }
}
