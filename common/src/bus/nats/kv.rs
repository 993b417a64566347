//! Read-modify-write on one key-value entry by compare-and-set, the bus's only way to change
//! shared state (there is no server-side script as with Redis' Lua).
//!
//! [`update`] reads the entry and its revision, lets a pure `decide` function look at the value,
//! and writes the new value with `kv.update(key, value, revision)` (`kv.create` when the key is
//! absent). When another writer got in between, the server rejects the write (wrong last
//! revision / already exists) and the whole decision is taken again on the fresh value. So a
//! decision is as atomic as a Lua script: it is applied only if the value it was taken on is
//! still the current one. Contention is resolved by retrying with a small random pause, for at
//! most [`CAS_DEADLINE`].

use std::time::Duration;

use async_nats::jetstream::kv::{CreateErrorKind, Operation, Store, UpdateErrorKind};
use bytes::Bytes;
use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bus::BusError;

/// How long [`update`] keeps retrying a contended key before it gives up.
pub const CAS_DEADLINE: Duration = Duration::from_secs(10);

/// What `decide` wants done with the value it saw.
pub enum Step<T, R> {
    /// Write this value, then return `R` (if the write wins).
    Write(T, R),
    /// Leave the entry as it is and return `R`.
    Keep(R),
}

/// The entry's decoded value (the default when absent, deleted or not decodable) and its
/// revision (`None` when the key has never been written or has expired).
pub async fn read<T: DeserializeOwned + Default>(
    store: &Store,
    key: &str,
) -> Result<(T, Option<u64>), BusError> {
    let entry = store
        .entry(key)
        .await
        .map_err(|e| BusError::Nats(format!("reading {key}: {e}")))?;
    Ok(match entry {
        None => (T::default(), None),
        Some(e) => {
            let value = match e.operation {
                Operation::Put => serde_json::from_slice(&e.value).unwrap_or_else(|err| {
                    tracing::warn!(key, error = %err, "undecodable key-value entry; reset");
                    T::default()
                }),
                Operation::Delete | Operation::Purge => T::default(),
            };
            (value, Some(e.revision))
        }
    })
}

/// Applies `decide` to the entry atomically (see the module docs).
pub async fn update<T, R, F>(store: &Store, key: &str, mut decide: F) -> Result<R, BusError>
where
    T: Serialize + DeserializeOwned + Default,
    F: FnMut(T) -> Step<T, R>,
{
    let started = tokio::time::Instant::now();
    let mut attempt: u32 = 0;
    loop {
        let (value, revision) = read::<T>(store, key).await?;
        let (new, result) = match decide(value) {
            Step::Keep(r) => return Ok(r),
            Step::Write(new, r) => (new, r),
        };
        let bytes = Bytes::from(
            serde_json::to_vec(&new).map_err(|e| BusError::Nats(format!("encoding {key}: {e}")))?,
        );
        // Falling through the match = a conflict: someone else wrote first.
        match revision {
            Some(rev) => match store.update(key, bytes, rev).await {
                Ok(_) => return Ok(result),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {}
                Err(e) => return Err(BusError::Nats(format!("updating {key}: {e}"))),
            },
            None => match store.create(key, bytes).await {
                Ok(_) => return Ok(result),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(BusError::Nats(format!("creating {key}: {e}"))),
            },
        }
        attempt = attempt.saturating_add(1);
        if started.elapsed() >= CAS_DEADLINE {
            return Err(BusError::Nats(format!(
                "{key}: still contended after {attempt} attempts"
            )));
        }
        // Spread the contenders out: a random pause that grows with the attempts (≤ 20 ms).
        let cap = 1 + u64::from(attempt.min(20));
        let pause = rand::rng().random_range(0..=cap);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}
