//! Admission control: refuse new work rather than queue it past what can be served in time.
//!
//! Where this sits in the job path: the first step of [`super::start::start_job`], after the
//! route's own checks and before anything is subscribed or published. A refusal is HTTP 429
//! with `Retry-After` (code 429 in RAGFlow's envelope, `rate_limit_exceeded` for OpenAI).

use ragq_common::job::Lane;

use crate::envelope::ApiError;
use crate::state::AppState;

/// Admits a job on `lane`, or refuses it: too many open streams on this ingress
/// (`RAGQ_MAX_OPEN_STREAMS`), or — for the interactive lane — too many jobs already waiting in
/// the broker (`RAGQ_MAX_QUEUE_DEPTH`, refreshed twice a second by `watch_queue_depth`).
pub fn admit(state: &AppState, lane: Lane) -> Result<(), ApiError> {
    let metrics = &*crate::observe::METRICS;
    if state.events.open_streams() >= state.cfg.max_open_streams {
        metrics.rejected_open_streams.increment(1);
        return Err(ApiError::busy(
            "Too many open streams on this server, retry later.",
        ));
    }
    if lane == Lane::Interactive
        && state.queue_depth.load(std::sync::atomic::Ordering::Relaxed) > state.cfg.max_queue_depth
    {
        metrics.rejected_queue_depth.increment(1);
        return Err(ApiError::busy(
            "Too many questions are waiting, retry later.",
        ));
    }
    Ok(())
}
