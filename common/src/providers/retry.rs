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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use super::*;

    fn status(status: u16) -> ProviderError {
        ProviderError::Status {
            status,
            body: String::new(),
        }
    }

    /// One scripted answer of the operation under retry.
    type Step = fn() -> Result<u32, ProviderError>;

    /// Runs `with_retry(retries, ..)` over an operation that answers from `script` in turn
    /// (the last answer repeats); returns the result and the number of calls.
    async fn run(retries: usize, script: &[Step]) -> (Result<u32, ProviderError>, usize) {
        let calls = AtomicUsize::new(0);
        let res = with_retry(retries, || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let answer = script[n.min(script.len() - 1)]();
            async move { answer }
        })
        .await;
        (res, calls.load(Ordering::SeqCst))
    }

    #[test]
    fn transient_errors_are_connect_timeout_and_retryable_statuses() {
        for s in [408, 425, 429, 500, 502, 503, 504, 599] {
            assert!(status(s).is_transient(), "{s} is transient");
        }
        for s in [400, 401, 403, 404, 413, 422] {
            assert!(!status(s).is_transient(), "{s} is permanent");
        }
        assert!(ProviderError::Http("connection refused".into()).is_transient());
        assert!(ProviderError::Timeout("request").is_transient());
        assert!(!ProviderError::Decode("bad json".into()).is_transient());
        assert!(
            !ProviderError::Unsupported {
                kind: crate::providers::ModelKind::Rerank,
                provider: crate::providers::Provider::OpenAi,
            }
            .is_transient()
        );
    }

    #[tokio::test]
    async fn succeeds_after_transient_failures() {
        let (res, calls) = run(3, &[|| Err(status(503)), || Err(status(429)), || Ok(7)]).await;
        assert_eq!(res.expect("third call succeeds"), 7);
        assert_eq!(calls, 3);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let (res, calls) = run(3, &[|| Err(status(404)), || Ok(1)]).await;
        assert!(matches!(
            res,
            Err(ProviderError::Status { status: 404, .. })
        ));
        assert_eq!(calls, 1);
        let (res, calls) = run(3, &[|| Err(ProviderError::Decode("x".into())), || Ok(1)]).await;
        assert!(matches!(res, Err(ProviderError::Decode(_))));
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn gives_up_after_the_retry_budget_with_the_last_error() {
        let started = Instant::now();
        let (res, calls) = run(
            2,
            &[
                || Err(status(502)),
                || Err(ProviderError::Timeout("request")),
            ],
        )
        .await;
        assert!(
            matches!(res, Err(ProviderError::Timeout("request"))),
            "{res:?}"
        );
        assert_eq!(calls, 3, "first attempt + 2 retries");
        // Backoff starts at 50 ms and doubles (with jitter): two waits stay well under a second.
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn zero_retries_means_one_attempt() {
        let (res, calls) = run(0, &[|| Err(status(503)), || Ok(1)]).await;
        assert!(matches!(
            res,
            Err(ProviderError::Status { status: 503, .. })
        ));
        assert_eq!(calls, 1);
    }
}
