//! Fault injection for the end-to-end tests: a hook the job path consults at a few points
//! ([`injected`]). In
//! production no hook is ever installed (nothing in a job, its payload or the configuration
//! can install one); only code that builds a [`Worker`](crate::Worker) in-process with the
//! `fault-injection` feature can, through `Worker::with_faults`.

use std::sync::Arc;
use std::time::Duration;

use ragq_common::job::Job;

use crate::job::error::StepError;

/// Where the job path asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPoint {
    /// Before the job runs.
    Start,
    /// After the turn was saved, before `done` is published.
    AfterSave,
}

/// What happens there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Nothing.
    None,
    /// The job's task panics.
    Panic,
    /// Publishing the job's events fails (as when Redis is unreachable).
    BusFailure,
    /// The database has no connection free in time (its pool timed out).
    DbBusy,
    /// The step takes this much longer.
    Delay(Duration),
}

/// Decides, per job, delivery attempt and point, which fault happens.
pub type FaultHook = Arc<dyn Fn(FaultPoint, &Job, u32) -> Fault + Send + Sync>;

/// Asks the test-only fault `hook`, if any; never fails in production (no hook).
pub async fn injected(
    hook: Option<&FaultHook>,
    point: FaultPoint,
    job: &Job,
    attempt: u32,
) -> Result<(), StepError> {
    let Some(hook) = hook else {
        return Ok(());
    };
    match hook(point, job, attempt) {
        Fault::None => Ok(()),
        Fault::Panic => panic!("injected fault: job {} panics", job.id),
        Fault::BusFailure => Err(StepError::Bus(ragq_common::bus::BusError::Connection(
            "injected fault: publish failed".into(),
        ))),
        Fault::DbBusy => Err(StepError::Db(sqlx::Error::PoolTimedOut)),
        Fault::Delay(d) => {
            tokio::time::sleep(d).await;
            Ok(())
        }
    }
}
