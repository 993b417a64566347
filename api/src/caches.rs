//! Process-local memory of the ingress's checks: recently verified API keys, recently confirmed
//! chat and session ownership, and the fallback count of embed-token requests while Redis does
//! not answer.
//!
//! Where this sits in the job path: before it. Every request is authenticated first
//! ([`crate::auth`]) and a completion's chat (and session) ownership is checked next; these
//! keep both steps off the database for a busy client. They live in
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

/// Recently confirmed ownership: the tenant's live chat, or a session of it, so that a busy
/// client's every completion does not cost a database statement at the ingress. Only
/// confirmations are cached, for [`AccessCache::TTL`]; a refusal is always asked again.
///
/// A chat or session deleted through this process is forgotten at once ([`AccessCache::forget_all`]).
/// One deleted through another api replica may still pass this check for up to the TTL; the
/// worker's context statement checks the chat and the session again
/// (`worker/src/chat/context.rs`), so such a question ends with RAGFlow's "You don't own …"
/// as the stream's error event instead of the envelope.
#[derive(Default)]
pub struct AccessCache {
    entries: std::sync::Mutex<std::collections::HashMap<AccessKey, std::time::Instant>>,
}

/// What was confirmed: `session` empty = the chat itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct AccessKey {
    tenant: String,
    chat: String,
    session: String,
}

impl AccessKey {
    fn new(tenant: &str, chat: &str, session: Option<&str>) -> Self {
        AccessKey {
            tenant: tenant.to_string(),
            chat: chat.to_string(),
            session: session.unwrap_or("").to_string(),
        }
    }
}

impl AccessCache {
    pub const TTL: std::time::Duration = std::time::Duration::from_secs(30);
    /// Entries kept at most; the cache is emptied when it would grow past this.
    const CAPACITY: usize = 100_000;

    /// True when `tenant`'s ownership of `chat` (and of `session` of it, when given) was
    /// confirmed within the TTL.
    pub(crate) fn confirmed(&self, tenant: &str, chat: &str, session: Option<&str>) -> bool {
        let Ok(entries) = self.entries.lock() else {
            return false;
        };
        entries
            .get(&AccessKey::new(tenant, chat, session))
            .is_some_and(|at| at.elapsed() < Self::TTL)
    }

    /// Remembers that the database confirmed it.
    pub(crate) fn confirm(&self, tenant: &str, chat: &str, session: Option<&str>) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= Self::CAPACITY {
                entries.clear();
            }
            entries.insert(
                AccessKey::new(tenant, chat, session),
                std::time::Instant::now(),
            );
        }
    }

    /// Forgets every confirmation: a chat or a session was deleted through this process.
    pub(crate) fn forget_all(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
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
    fn access_is_confirmed_per_tenant_chat_and_session_until_forgotten() {
        let c = AccessCache::default();
        assert!(!c.confirmed("t", "c", Some("s")));
        c.confirm("t", "c", Some("s"));
        assert!(c.confirmed("t", "c", Some("s")));
        // Another session, the chat alone, another tenant: not confirmed by it.
        assert!(!c.confirmed("t", "c", Some("s2")));
        assert!(!c.confirmed("t", "c", None));
        assert!(!c.confirmed("u", "c", Some("s")));
        c.confirm("t", "c", None);
        assert!(c.confirmed("t", "c", None));
        c.forget_all();
        assert!(!c.confirmed("t", "c", Some("s")));
        assert!(!c.confirmed("t", "c", None));
    }

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
