//! Simulator configuration: the latencies and answer length every request starts from.
//!
//! [`SimConfig`] is a plain struct (all fields public) so tests can build one in code, and a
//! [`clap::Args`] so the binary can fill it from flags or `RAGQ_SIM_*` environment variables.
//! Individual requests can still override the chat values through model-name flags (see
//! [`crate::flags`]).

use std::time::Duration;

/// Latencies and answer shape of the simulated upstream models.
///
/// Defaults ([`SimConfig::default`]) approximate a hosted model: a 250 ms time to first token and
/// about 65 tokens/s afterwards. [`SimConfig::fast`] is for tests that care about behaviour, not
/// timing.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct SimConfig {
    /// Latency of one embeddings request, in milliseconds.
    #[arg(long, env = "RAGQ_SIM_EMBED_MS", default_value_t = 15)]
    pub embed_ms: u64,
    /// Latency of one rerank request, in milliseconds.
    #[arg(long, env = "RAGQ_SIM_RERANK_MS", default_value_t = 80)]
    pub rerank_ms: u64,
    /// Time to first token of a chat completion, in milliseconds.
    #[arg(long, env = "RAGQ_SIM_TTFT_MS", default_value_t = 250)]
    pub ttft_ms: u64,
    /// Number of tokens (words) in each chat answer.
    #[arg(long, env = "RAGQ_SIM_TOKENS", default_value_t = 48)]
    pub tokens: usize,
    /// Gap between two streamed tokens, in milliseconds.
    #[arg(long, env = "RAGQ_SIM_TOKEN_GAP_MS", default_value_t = 15)]
    pub token_gap_ms: u64,
    /// Upper bound, in seconds, for a request whose model carries the `stall` flag.
    #[arg(long, env = "RAGQ_SIM_STALL_MAX_S", default_value_t = 600)]
    pub stall_max_s: u64,
}

impl Default for SimConfig {
    /// The same values as the command-line defaults.
    fn default() -> Self {
        Self {
            embed_ms: 15,
            rerank_ms: 80,
            ttft_ms: 250,
            tokens: 48,
            token_gap_ms: 15,
            stall_max_s: 600,
        }
    }
}

impl SimConfig {
    /// Near-zero latencies for functional tests: no embed or rerank delay, a 5 ms time to first
    /// token, 1 ms between tokens, 48 tokens per answer. Stalls are capped at 30 s so that a test
    /// that forgets to time out still ends.
    pub fn fast() -> Self {
        Self {
            embed_ms: 0,
            rerank_ms: 0,
            ttft_ms: 5,
            tokens: 48,
            token_gap_ms: 1,
            stall_max_s: 30,
        }
    }

    pub(crate) fn embed_latency(&self) -> Duration {
        Duration::from_millis(self.embed_ms)
    }

    pub(crate) fn rerank_latency(&self) -> Duration {
        Duration::from_millis(self.rerank_ms)
    }

    pub(crate) fn stall_max(&self) -> Duration {
        Duration::from_secs(self.stall_max_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimConfig,
    }

    #[test]
    fn clap_defaults_match_default_impl() {
        // Only meaningful when no RAGQ_SIM_* variable is set in the test environment.
        if std::env::vars().any(|(k, _)| k.starts_with("RAGQ_SIM_")) {
            return;
        }
        let cli = Cli::parse_from(["ragq-sim"]);
        assert_eq!(cli.sim, SimConfig::default());
    }

    #[test]
    fn kebab_case_flags() {
        let cli = Cli::parse_from([
            "ragq-sim",
            "--embed-ms=1",
            "--rerank-ms=2",
            "--ttft-ms=3",
            "--tokens=4",
            "--token-gap-ms=5",
            "--stall-max-s=6",
        ]);
        let expected = SimConfig {
            embed_ms: 1,
            rerank_ms: 2,
            ttft_ms: 3,
            tokens: 4,
            token_gap_ms: 5,
            stall_max_s: 6,
        };
        assert_eq!(cli.sim, expected);
    }
}
