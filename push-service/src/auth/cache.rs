//! What notifier authentication remembers between requests: the notifiers
//! themselves (for at most a second) and, for notifiers that reuse tokens, the
//! tokens already verified (until they expire).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::Notifier;

/// How long a notifier read from the store is used before it is read again. A
/// change made through another node (a deleted notifier, new scopes) is seen
/// here within this time; a change made through this node, at once.
pub const NOTIFIER_TTL: Duration = Duration::from_secs(1);

/// Entries past which a cache is emptied rather than grown.
const MAX_ENTRIES: usize = 100_000;

/// (app, notifier id).
type NotifierKey = (String, String);

/// A notifier as read at an instant (`None`: there was none).
type Read = (Instant, Option<Notifier>);

/// Notifiers by (app, id), absent ones included (an unknown `iss` costs one
/// read per second, not one per request).
#[derive(Default)]
pub struct NotifierCache {
    entries: Mutex<HashMap<NotifierKey, Read>>,
}

impl NotifierCache {
    /// The cached answer for (app, id), if it is fresh.
    pub fn get(&self, app_id: &str, id: &str) -> Option<Option<Notifier>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(&(app_id.to_owned(), id.to_owned()))
            .filter(|(at, _)| at.elapsed() < NOTIFIER_TTL)
            .map(|(_, notifier)| notifier.clone())
    }

    pub fn put(&self, app_id: &str, id: &str, notifier: Option<Notifier>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (at, _)| at.elapsed() < NOTIFIER_TTL);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            (app_id.to_owned(), id.to_owned()),
            (Instant::now(), notifier),
        );
    }

    /// Forgets one notifier (created or deleted through this node).
    pub fn forget(&self, app_id: &str, id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.remove(&(app_id.to_owned(), id.to_owned()));
    }

    /// Forgets every notifier of an app (the app was deleted).
    pub fn forget_app(&self, app_id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|(app, _), _| app != app_id);
    }
}

/// A reusable token that passed every check once: what a later use still needs.
#[derive(Clone)]
pub struct VerifiedToken {
    pub app_id: String,
    pub notifier_id: String,
    /// Seconds since the epoch.
    pub exp: i64,
    /// The scopes the token asked for.
    pub scopes: Vec<String>,
    /// Its `cnf.x5t#S256`, checked against each connection's certificate.
    pub x5t: Option<String>,
}

/// Reusable tokens by SHA-256 of the whole token, until their `exp`.
#[derive(Default)]
pub struct VerifiedTokens {
    entries: Mutex<HashMap<[u8; 32], VerifiedToken>>,
}

impl VerifiedTokens {
    pub fn get(&self, digest: &[u8; 32]) -> Option<VerifiedToken> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(digest).cloned()
    }

    pub fn put(&self, digest: [u8; 32], token: VerifiedToken, now: i64) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, t| t.exp >= now);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(digest, token);
    }

    pub fn forget(&self, digest: &[u8; 32]) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.remove(digest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notifier(id: &str) -> Notifier {
        Notifier {
            id: id.into(),
            app_id: "app_1".into(),
            name: "n".into(),
            scopes: "notify".into(),
            jwks: None,
            jwks_url: None,
            created_at: 0,
            client_cert: None,
            token_reuse: false,
        }
    }

    #[test]
    fn notifiers_are_remembered_for_a_second_and_forgotten_on_demand() {
        let cache = NotifierCache::default();
        assert!(cache.get("app_1", "n1").is_none(), "nothing yet");
        cache.put("app_1", "n1", Some(notifier("n1")));
        cache.put("app_1", "n2", None);
        cache.put("app_2", "n3", None);
        assert!(matches!(cache.get("app_1", "n1"), Some(Some(n)) if n.id == "n1"));
        assert!(
            matches!(cache.get("app_1", "n2"), Some(None)),
            "absence too"
        );
        assert!(cache.get("app_2", "n1").is_none(), "per app");
        cache.forget("app_1", "n1");
        assert!(cache.get("app_1", "n1").is_none());
        cache.forget_app("app_1");
        assert!(cache.get("app_1", "n2").is_none());
        assert!(cache.get("app_2", "n3").is_some());
        std::thread::sleep(NOTIFIER_TTL);
        assert!(cache.get("app_2", "n3").is_none(), "stale after the TTL");
    }
}
