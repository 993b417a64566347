//! Process-local memory of the auth extractors: recently verified API keys, and the fallback
//! count of embed-token requests while Redis does not answer.
//!
//! Where this sits in the job path: before it. Every request is authenticated first
//! ([`crate::auth`]); these keep that step off the database for a busy client. They live in
//! [`crate::state::AppState`], one per process.

/// Recently verified keys (hash → tenant), so that a busy client's every request does not cost a
/// database query. Only successful lookups are cached, for [`KeyCache::TTL`]: a new key works at
/// once; a key deleted from `api_keys` stops working within the TTL.
#[derive(Default)]
pub struct KeyCache {
    entries: std::sync::Mutex<std::collections::HashMap<String, (String, std::time::Instant)>>,
}

impl KeyCache {
    pub const TTL: std::time::Duration = std::time::Duration::from_secs(30);
    /// Entries kept at most; the cache is emptied when it would grow past this.
    const CAPACITY: usize = 100_000;

    pub(crate) fn get(&self, hash: &str) -> Option<String> {
        let entries = self.entries.lock().ok()?;
        let (tenant, at) = entries.get(hash)?;
        (at.elapsed() < Self::TTL).then(|| tenant.clone())
    }

    pub(crate) fn put(&self, hash: String, tenant: String) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= Self::CAPACITY {
                entries.clear();
            }
            entries.insert(hash, (tenant, std::time::Instant::now()));
        }
    }
}

/// Requests per embed token per minute, counted in fixed one-minute windows. The count is kept in
/// Redis, shared by every api replica; this in-process counter is the fallback while Redis does
/// not answer (each replica then counts its own requests).
#[derive(Default)]
pub struct RateLimiter {
    windows: std::sync::Mutex<std::collections::HashMap<String, (u64, u32)>>,
}

impl RateLimiter {
    /// Entries kept at most; older windows are dropped when it would grow past this.
    const CAPACITY: usize = 100_000;

    /// Counts one request of `token_id` against `limit` per minute at `now_s` (epoch seconds).
    /// `Err(s)`: over the limit; retry in `s` seconds (the end of the current window).
    pub fn check(&self, token_id: &str, limit: u32, now_s: u64) -> Result<(), u32> {
        let window = now_s / 60;
        let Ok(mut windows) = self.windows.lock() else {
            return Ok(());
        };
        if windows.len() >= Self::CAPACITY && !windows.contains_key(token_id) {
            windows.retain(|_, (w, _)| *w == window);
        }
        let entry = windows.entry(token_id.to_string()).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        if entry.1 >= limit {
            return Err((60 - now_s % 60).max(1) as u32);
        }
        entry.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_counts_per_token_per_minute() {
        let r = RateLimiter::default();
        assert!(r.check("a", 2, 120).is_ok());
        assert!(r.check("a", 2, 130).is_ok());
        assert_eq!(r.check("a", 2, 135), Err(45));
        assert!(r.check("b", 2, 135).is_ok());
        assert!(r.check("a", 2, 180).is_ok());
    }
}
