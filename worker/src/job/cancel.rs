//! The worker's side of a cancel: every job gets a token (cancelled when its client leaves or
//! calls stop, see `ragq_common::bus::cancel`), and the steps that wait on something race it
//! with [`until_cancelled`].

use tokio_util::sync::CancellationToken;

/// Runs `fut` unless the job is cancelled first (`None`: cancelled, `fut` dropped).
pub async fn until_cancelled<T>(
    cancel: &CancellationToken,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => None,
        r = fut => Some(r),
    }
}
