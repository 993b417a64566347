//! Model-name flags: per-request fault injection and latency overrides.
//!
//! Clients cannot easily add custom headers to an OpenAI request, but they always send a `model`
//! string, so the simulator reads its knobs from there: `name[:flag[:flag...]]`.
//!
//! | flag            | effect                                                                 |
//! |-----------------|------------------------------------------------------------------------|
//! | `error`         | HTTP 500 with an OpenAI error body, immediately                        |
//! | `status=NNN`    | that HTTP status (400..=599) with the same error body                  |
//! | `stall`         | chat stream: headers, then silence; others: sleep `stall_max_s`        |
//! | `error-after=N` | chat stream: N tokens, then a broken body; non-stream chat: HTTP 500   |
//! | `fail-first=N`  | only the first N requests with this exact `model` string fail (with    |
//! |                 | `status`/`error`), later ones succeed: a provider that recovers        |
//! | `ttft=MS`       | chat: time to first token                                              |
//! | `tokens=N`      | chat: answer length                                                    |
//! | `gap=MS`        | chat: gap between tokens                                               |
//!
//! Examples: `sim`, `sim:error`, `sim:status=429`, `sim:ttft=1000:tokens=10:gap=2`. Unknown flags
//! and flags with unparsable values are ignored, so a real model name such as `gpt-4o` is simply
//! a model without flags.

use std::time::Duration;

use axum::http::StatusCode;

use crate::config::SimConfig;

/// The flags parsed from one `model` string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelFlags {
    /// `error`: fail with HTTP 500.
    pub error: bool,
    /// `status=NNN`: fail with this status (only 400..=599 are accepted).
    pub status: Option<StatusCode>,
    /// `stall`: never answer (until the client leaves or `stall_max_s` passes).
    pub stall: bool,
    /// `error-after=N`: break the chat stream after N tokens.
    pub error_after: Option<usize>,
    /// `fail-first=N`: only the first N requests of this model string fail.
    pub fail_first: Option<u64>,
    /// `ttft=MS`.
    pub ttft_ms: Option<u64>,
    /// `tokens=N`.
    pub tokens: Option<usize>,
    /// `gap=MS`.
    pub gap_ms: Option<u64>,
}

impl ModelFlags {
    /// Parses the flags of `model` (everything after the first `:`).
    pub fn parse(model: &str) -> Self {
        let mut flags = Self::default();
        for raw in model.split(':').skip(1) {
            let flag = raw.trim();
            let (key, value) = match flag.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (flag, None),
            };
            match (key, value) {
                ("error", None) => flags.error = true,
                ("stall", None) => flags.stall = true,
                ("status", Some(v)) => {
                    flags.status = v
                        .parse::<u16>()
                        .ok()
                        .and_then(|code| StatusCode::from_u16(code).ok())
                        .filter(|s| s.is_client_error() || s.is_server_error())
                        .or(flags.status);
                }
                ("error-after", Some(v)) => {
                    flags.error_after = v.parse().ok().or(flags.error_after)
                }
                ("fail-first", Some(v)) => flags.fail_first = v.parse().ok().or(flags.fail_first),
                ("ttft", Some(v)) => flags.ttft_ms = v.parse().ok().or(flags.ttft_ms),
                ("tokens", Some(v)) => flags.tokens = v.parse().ok().or(flags.tokens),
                ("gap", Some(v)) => flags.gap_ms = v.parse().ok().or(flags.gap_ms),
                _ => {}
            }
        }
        flags
    }

    /// The status to fail with right away, if any: `status=NNN` wins over `error` (500).
    pub fn failure_status(&self) -> Option<StatusCode> {
        self.status
            .or(self.error.then_some(StatusCode::INTERNAL_SERVER_ERROR))
    }

    /// Chat timing and length for this request: the flags over the config.
    pub fn chat_timing(&self, cfg: &SimConfig) -> ChatTiming {
        ChatTiming {
            ttft: Duration::from_millis(self.ttft_ms.unwrap_or(cfg.ttft_ms)),
            gap: Duration::from_millis(self.gap_ms.unwrap_or(cfg.token_gap_ms)),
            tokens: self.tokens.unwrap_or(cfg.tokens),
        }
    }
}

/// Effective chat timing of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChatTiming {
    /// Delay from the request's arrival to the first token.
    pub ttft: Duration,
    /// Delay between consecutive tokens.
    pub gap: Duration,
    /// Answer length in tokens (before knowledge citations are appended).
    pub tokens: usize,
}

impl ChatTiming {
    /// When token `i` (0-based) is due, as an offset from the request's arrival:
    /// `ttft + i * gap`, saturating instead of overflowing.
    pub fn token_offset(&self, i: usize) -> Duration {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        self.ttft.saturating_add(self.gap.saturating_mul(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_have_no_flags() {
        assert_eq!(ModelFlags::parse("sim"), ModelFlags::default());
        assert_eq!(ModelFlags::parse("gpt-4o"), ModelFlags::default());
        assert_eq!(ModelFlags::parse(""), ModelFlags::default());
    }

    #[test]
    fn parses_every_flag() {
        let f =
            ModelFlags::parse("sim:error:stall:status=429:error-after=5:ttft=1000:tokens=10:gap=2");
        assert!(f.error && f.stall);
        assert_eq!(f.status, Some(StatusCode::TOO_MANY_REQUESTS));
        assert_eq!(f.error_after, Some(5));
        assert_eq!(
            (f.ttft_ms, f.tokens, f.gap_ms),
            (Some(1000), Some(10), Some(2))
        );
        assert_eq!(f.failure_status(), Some(StatusCode::TOO_MANY_REQUESTS));
        assert_eq!(
            ModelFlags::parse("sim:status=429:fail-first=3").fail_first,
            Some(3)
        );
    }

    #[test]
    fn ignores_unknown_and_malformed_flags() {
        let f = ModelFlags::parse("sim:bogus:ttft=soon:status=200:status=99999:tokens=-1:error=1");
        assert_eq!(f, ModelFlags::default());
        assert_eq!(
            ModelFlags::parse("sim:error").failure_status(),
            Some(StatusCode::INTERNAL_SERVER_ERROR)
        );
    }

    #[test]
    fn flags_override_config() {
        let cfg = SimConfig::default();
        let t = ModelFlags::parse("sim:tokens=3:gap=2").chat_timing(&cfg);
        assert_eq!(t.ttft, Duration::from_millis(cfg.ttft_ms));
        assert_eq!(t.gap, Duration::from_millis(2));
        assert_eq!(t.tokens, 3);
        assert_eq!(t.token_offset(2), Duration::from_millis(cfg.ttft_ms + 4));
    }
}
