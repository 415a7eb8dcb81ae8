//! The worker's session cache (spec 3.2.3): which sessions the master has confirmed, and which it
//! has refused or ended.
//!
//! Sans IO: every method takes `now`. The master validates the session of every relayed request
//! anyway; this cache lets the worker answer `switchState` itself and refuse a session it knows
//! is dead without a round trip:
//! - a session becomes **valid** when the master answers `sessionID` with it (login or
//!   `loginSession`) or answers a request carrying it successfully; it stays valid for
//!   `validity`, after which it is **unknown** again and the next `switchState` asks the master
//!   (by relaying `loginSession`);
//! - a session becomes **invalid** on `logoutSuccess`, when the master refuses it
//!   (`bad_session`, `not_logged_in`), or when its expirable owner disconnects. Session ids are
//!   32 random bytes chosen by the master and never reused, so an invalid session stays invalid;
//!   it is kept until evicted.
//!
//! Bounded by `entries_max` (valid and invalid together), least recently used first.

use std::time::{Duration, Instant};

use net::SessionId;

use crate::config::SessionsConfig;
use crate::lru::Lru;

/// What the worker knows about a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    /// The master confirmed it less than `validity` ago.
    Valid,
    /// The master refused or ended it; it will not come back.
    Invalid,
    /// Never seen, forgotten, or confirmed too long ago: ask the master.
    Unknown,
}

#[derive(Debug, Clone, Copy)]
enum Known {
    ValidSince(Instant),
    Invalid,
}

/// The bounded session cache.
#[derive(Debug)]
pub struct SessionCache {
    entries: Lru<SessionId, Known>,
    entries_max: usize,
    validity: Duration,
}

impl SessionCache {
    /// An empty cache.
    pub fn new(config: &SessionsConfig) -> Self {
        Self {
            entries: Lru::new(),
            entries_max: usize::try_from(config.entries_max).unwrap_or(usize::MAX).max(1),
            validity: config.validity,
        }
    }

    /// What is known about `session` at `now`.
    pub fn status(&mut self, session: &SessionId, now: Instant) -> SessionStatus {
        match self.entries.get_mut(session) {
            Some(Known::Invalid) => SessionStatus::Invalid,
            Some(Known::ValidSince(at)) if now.saturating_duration_since(*at) < self.validity => {
                SessionStatus::Valid
            }
            Some(Known::ValidSince(_)) => {
                self.entries.remove(session);
                SessionStatus::Unknown
            }
            None => SessionStatus::Unknown,
        }
    }

    /// The master confirmed `session` at `now`. A session known to have ended stays ended: a
    /// success the master answered before the session ended (another connection's request with
    /// it, answered after its logout) does not bring it back.
    pub fn confirm(&mut self, session: SessionId, now: Instant) {
        if matches!(self.entries.get_mut(&session), Some(Known::Invalid)) {
            return;
        }
        self.put(session, Known::ValidSince(now));
    }

    /// The master refused or ended `session`.
    pub fn end(&mut self, session: SessionId) {
        self.put(session, Known::Invalid);
    }

    fn put(&mut self, session: SessionId, known: Known) {
        self.entries.remove(&session);
        while self.entries.len() >= self.entries_max {
            if self.entries.pop_oldest().is_none() {
                break;
            }
        }
        self.entries.insert(session, known, 1);
    }

    /// Sessions remembered (valid and invalid).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no session is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn config(entries_max: u32) -> SessionsConfig {
        SessionsConfig {
            entries_max,
            validity: Duration::from_secs(60),
            ..SessionsConfig::default()
        }
    }

    #[test]
    fn confirmed_sessions_expire_and_ended_ones_stay_ended() {
        let mut cache = SessionCache::new(&config(10));
        let t0 = Instant::now();
        let s = SessionId([1; 32]);
        assert_eq!(cache.status(&s, t0), SessionStatus::Unknown);
        cache.confirm(s, t0);
        assert_eq!(cache.status(&s, t0 + Duration::from_secs(59)), SessionStatus::Valid);
        assert_eq!(cache.status(&s, t0 + Duration::from_secs(60)), SessionStatus::Unknown);
        assert!(cache.is_empty());
        cache.confirm(s, t0);
        cache.end(s);
        assert_eq!(cache.status(&s, t0 + Duration::from_secs(3600)), SessionStatus::Invalid);
        // An answer the master gave before the logout, arriving after it, does not revive it.
        cache.confirm(s, t0 + Duration::from_secs(3601));
        assert_eq!(cache.status(&s, t0 + Duration::from_secs(3602)), SessionStatus::Invalid);
    }

    #[test]
    fn bounded_least_recently_used_first() {
        let mut cache = SessionCache::new(&config(2));
        let now = Instant::now();
        let [a, b, c] = [1, 2, 3].map(|i| SessionId([i; 32]));
        cache.confirm(a, now);
        cache.end(b);
        assert_eq!(cache.status(&a, now), SessionStatus::Valid);
        cache.confirm(c, now);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.status(&b, now), SessionStatus::Unknown, "b was least recently used");
        assert_eq!(cache.status(&a, now), SessionStatus::Valid);
        assert_eq!(cache.status(&c, now), SessionStatus::Valid);
    }
}
