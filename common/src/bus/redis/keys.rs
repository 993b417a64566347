//! Every Redis name the bus uses, in one place. All start with `RAGQ_CHANNEL_PREFIX`.

use uuid::Uuid;

/// How long a job's replay stream lives after its last event.
pub const REPLAY_TTL_S: i64 = 600;

/// How long a cancel mark lives (a job cancelled while queued is skipped when it starts).
pub const CANCELLED_TTL_S: u64 = 3600;

/// Pub/sub channel of a job's live events.
pub fn channel(prefix: &str, job_id: Uuid) -> String {
    format!("{prefix}:stream:{job_id}")
}

/// Redis Stream holding a copy of every event of a job (gap fill, resume, `last_seq`).
pub fn replay_key(prefix: &str, job_id: Uuid) -> String {
    format!("{prefix}:replay:{job_id}")
}

/// Set when a job is cancelled.
pub fn cancelled_key(prefix: &str, job_id: Uuid) -> String {
    format!("{prefix}:cancelled:{job_id}")
}

/// Who owns a job (checked by stop and resume).
pub fn owner_key(prefix: &str, job_id: Uuid) -> String {
    format!("{prefix}:job:{job_id}")
}

/// Pub/sub channel every worker listens on for cancel signals (payload: the job id).
pub fn cancel_channel(prefix: &str) -> String {
    format!("{prefix}:cancel")
}

/// Sorted set of the readers attached to a job's stream, on any ingress process: member = reader
/// id, score = epoch ms until which the reader counts as attached (refreshed while it reads).
/// A disconnected client's job is cancelled only when this is empty after the grace period.
pub fn readers_key(prefix: &str, job_id: Uuid) -> String {
    format!("{prefix}:readers:{job_id}")
}

/// Requests of an embed token in one fixed window (the api's rate limit, shared by replicas).
pub fn rate_key(prefix: &str, token_id: &str, window: u64) -> String {
    format!("{prefix}:rate:{token_id}:{window}")
}

/// Sorted set of a tenant's running jobs, on every ingress process: member = job id, score =
/// epoch ms of the job's deadline (plus the relay's margin). `ZADD` when a job is admitted, `ZREM`
/// when its stream ends; entries past their score are dropped before each count, so a crashed
/// api cannot leak slots. Expires with its latest deadline.
pub fn tenant_jobs_key(prefix: &str, tenant_id: &str) -> String {
    format!("{prefix}:tenant_jobs:{tenant_id}")
}

/// Jobs a tenant started in one fixed one-minute window (its rate limit, shared by replicas).
pub fn tenant_rate_key(prefix: &str, tenant_id: &str, window: u64) -> String {
    format!("{prefix}:tenant_rate:{tenant_id}:{window}")
}
