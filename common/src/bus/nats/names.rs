//! Every NATS name the bus uses, in one place: subjects start with `RAGQ_CHANNEL_PREFIX`
//! (`{prefix}.stream.{job_id}`, `{prefix}.cancel`); the stream and the key-value buckets are
//! named by [`crate::nats::stream_name`] (`{prefix}_events`, `{prefix}_owners`, …: JetStream
//! names may not contain `.`). Keys are made of `[-/_=.a-zA-Z0-9]`; ids that come from outside
//! (token and tenant ids) go through [`key`], which escapes every other byte.

use std::time::Duration;

use uuid::Uuid;

use crate::nats::stream_name;

/// How long an event stays in the replay stream (the stream's `max_age`).
pub const REPLAY_TTL_S: u64 = 600;
/// How long a cancel mark lives (a job cancelled while queued is skipped when it starts).
pub const CANCELLED_TTL_S: u64 = 3600;
/// Lifetime of an owner or tenant entry since its last write. An owner record carries its own
/// expiry (`ttl` + [`REPLAY_TTL_S`]), honoured on read; this bound only has to be longer than
/// that (jobs' deadlines are minutes), and it is what finally removes the entry.
pub const STATE_MAX_AGE: Duration = Duration::from_secs(2 * 3600);
/// Lifetime of a job's attached-readers entry since its last write (readers refresh it).
pub const READERS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Lifetime of a rate counter since its last increment (windows are a minute or so).
pub const RATES_MAX_AGE: Duration = Duration::from_secs(600);

/// Core subject of a job's events (the replay stream captures it too).
pub fn event_subject(prefix: &str, job_id: Uuid) -> String {
    format!("{prefix}.stream.{job_id}")
}

/// What the replay stream captures: every job's event subject.
pub fn event_subjects(prefix: &str) -> String {
    format!("{prefix}.stream.*")
}

/// Core subject every worker listens on for cancel signals (payload: the job id).
pub fn cancel_subject(prefix: &str) -> String {
    format!("{prefix}.cancel")
}

/// The replay stream.
pub fn events_stream(prefix: &str) -> String {
    stream_name(prefix, "events")
}

/// The key-value buckets, by role.
#[derive(Clone, Copy, Debug)]
pub enum Bucket {
    /// job id → owner record (`set_owner`).
    Owners,
    /// job id → `{reader: until_ms}`.
    Readers,
    /// `{token}.{window}` → count.
    Rates,
    /// tenant → running jobs and the current window's count.
    Tenants,
    /// job id → cancel mark.
    Cancelled,
}

impl Bucket {
    pub const ALL: [Bucket; 5] = [
        Bucket::Owners,
        Bucket::Readers,
        Bucket::Rates,
        Bucket::Tenants,
        Bucket::Cancelled,
    ];

    pub fn name(self, prefix: &str) -> String {
        let what = match self {
            Bucket::Owners => "owners",
            Bucket::Readers => "readers",
            Bucket::Rates => "rates",
            Bucket::Tenants => "tenants",
            Bucket::Cancelled => "cancelled",
        };
        stream_name(prefix, what)
    }

    pub fn max_age(self) -> Duration {
        match self {
            Bucket::Owners | Bucket::Tenants => STATE_MAX_AGE,
            Bucket::Readers => READERS_MAX_AGE,
            Bucket::Rates => RATES_MAX_AGE,
            Bucket::Cancelled => Duration::from_secs(CANCELLED_TTL_S),
        }
    }
}

/// A key-value key for an id from outside: `[A-Za-z0-9_-]` stay, every other byte becomes
/// `=XX` (hex), the empty id becomes `=`. Injective, so two ids never share a key, and never
/// contains `.` (so `{key}.{window}` cannot collide either).
pub fn key(id: &str) -> String {
    if id.is_empty() {
        return "=".to_string();
    }
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

/// Key of a token's request counter in one fixed window.
pub fn rate_key(token_id: &str, window: u64) -> String {
    format!("{}.{window}", key(token_id))
}
