//! Retries with jittered exponential backoff (backon) for transient upstream failures.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use super::ProviderError;

/// Runs `op` until it succeeds, fails permanently, or `retries` retries were spent.
pub async fn with_retry<T, F, Fut>(retries: usize, op: F) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    op.retry(
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(retries)
            .with_jitter(),
    )
    .sleep(tokio::time::sleep)
    .when(ProviderError::is_transient)
    .notify(|err, after| tracing::warn!(error = %err, retry_in = ?after, "upstream call failed; retrying"))
    .await
}
