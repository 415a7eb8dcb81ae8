//! Session bookkeeping (spec 2.4.2, 3.1.3): pure, with `now` passed in.
//!
//! A session id is 32 random bytes from the OS generator, handed to the client once. The table
//! never stores it: it keys each session by `blake3(id)` ([`SessionKey`]), so a copy of the
//! table (or of the journal's session table) cannot be used to log in. A session is
//! *expirable* (it ends [`SessionsConfig::idle_timeout`] after its last use) or *remembered*
//! (it ends [`SessionsConfig::remembered_lifetime`] after its creation, however it is used).
//!
//! The table is bounded: at most `sessions_max` sessions, at most `per_account_max` per account
//! (a new session ends the account's least recently used one). [`SessionRecord::encode`] gives
//! the fixed binary layout the journal stores; decoding never panics.
//!
//! # Record layout (version 1, big-endian)
//!
//! | offset | bytes | field |
//! |-------:|------:|-------|
//! | 0 | 1 | version, `1` |
//! | 1 | 1 | flags: bit 0 set for a remembered session; other bits zero |
//! | 2 | 32 | key: `blake3(session id)` |
//! | 34 | 8 | account id, `u64` |
//! | 42 | 8 | created at, `i64` microseconds since the Unix epoch (UTC) |
//! | 50 | 8 | last seen at, `i64` microseconds since the Unix epoch (UTC), `>=` created at |
//! | 58 | 1 | client IP family: `4` or `6` |
//! | 59 | 4 or 16 | client IP address |
//!
//! 63 bytes with an IPv4 address, 75 with IPv6. The expiry is not stored: it follows from the
//! configured lifetimes, so changing them applies to existing sessions after a restart.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use engine::{AccountId, Timestamp};
use subtle::ConstantTimeEq;

use crate::config::SessionsConfig;

/// Bytes in a session id.
pub const SESSION_ID_BYTES: usize = 32;
/// Version byte of the session record layout.
pub const SESSION_RECORD_VERSION: u8 = 1;
/// Bytes in an encoded record with an IPv4 address.
pub const SESSION_RECORD_V4_BYTES: usize = 63;
/// Bytes in an encoded record with an IPv6 address.
pub const SESSION_RECORD_V6_BYTES: usize = 75;

const FLAG_REMEMBER: u8 = 0b0000_0001;

/// A session id: the secret the client presents. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId([u8; SESSION_ID_BYTES]);

impl SessionId {
    /// 32 fresh bytes from the OS generator.
    pub fn generate() -> Result<Self, CreateError> {
        let mut bytes = [0u8; SESSION_ID_BYTES];
        getrandom::fill(&mut bytes).map_err(|_| CreateError::Random)?;
        Ok(Self(bytes))
    }

    /// An id received from a client: exactly 32 bytes, or `None`.
    pub fn from_bytes(bytes: [u8; SESSION_ID_BYTES]) -> Self {
        Self(bytes)
    }

    /// A session id from a byte slice of exactly the right length.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; SESSION_ID_BYTES]>::try_from(bytes).ok().map(Self)
    }

    /// The bytes, to send to the client.
    pub fn as_bytes(&self) -> &[u8; SESSION_ID_BYTES] {
        &self.0
    }

    /// The key the table stores for this id.
    pub fn key(&self) -> SessionKey {
        SessionKey(*blake3::hash(&self.0).as_bytes())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

/// `blake3(session id)`: how the table and the journal know a session. Useless for logging
/// in; `Debug` and `Display` show its first four bytes, enough to tell sessions apart in logs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(pub [u8; 32]);

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..4] {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("…")
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey({self})")
    }
}

/// One session as stored: everything but the id and the expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRecord {
    /// `blake3(session id)`.
    pub key: SessionKey,
    /// Whose session.
    pub account: AccountId,
    /// The client's address at login.
    pub client_ip: IpAddr,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last used; never before `created_at`.
    pub last_seen_at: Timestamp,
    /// Remembered (absolute lifetime) rather than expirable (idle timeout).
    pub remember: bool,
}

/// A live session, as [`SessionTable::validate`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionInfo {
    /// The stored fields.
    pub record: SessionRecord,
    /// When it ends unless used (expirable) or however used (remembered).
    pub expires_at: Timestamp,
    /// Set by [`SessionTable::touch`] when this use should be stored: the last use of an
    /// expirable session is stored again each time it enters a new quarter of the idle timeout
    /// (counted from its creation), so after a restart the session ends at most a quarter of the
    /// idle timeout early.
    pub store_again: bool,
}

/// Why a session id is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// No such session (never existed, logged out, or swept after expiring).
    #[error("unknown session")]
    Unknown,
    /// The session has expired.
    #[error("session expired")]
    Expired,
}

/// Why a session could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    /// The OS random generator failed.
    #[error("the OS random generator failed")]
    Random,
}

/// Why bytes are not a session record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No bytes.
    #[error("empty session record")]
    Empty,
    /// A version this code does not know.
    #[error("session record version {0} is not supported")]
    Version(u8),
    /// The wrong number of bytes for the layout.
    #[error("session record has {found} bytes, expected {expected}")]
    Length {
        /// Bytes the layout needs.
        expected: usize,
        /// Bytes given.
        found: usize,
    },
    /// Unknown flag bits.
    #[error("session record has unknown flags {0:#04x}")]
    Flags(u8),
    /// An IP family other than 4 or 6.
    #[error("session record has IP family {0}")]
    Family(u8),
    /// Last seen before created.
    #[error("session record was last seen before it was created")]
    Times,
}

impl SessionRecord {
    /// The record in the version 1 layout (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SESSION_RECORD_V6_BYTES);
        out.push(SESSION_RECORD_VERSION);
        out.push(if self.remember { FLAG_REMEMBER } else { 0 });
        out.extend_from_slice(&self.key.0);
        out.extend_from_slice(&self.account.0.to_be_bytes());
        out.extend_from_slice(&self.created_at.0.to_be_bytes());
        out.extend_from_slice(&self.last_seen_at.0.to_be_bytes());
        match self.client_ip {
            IpAddr::V4(ip) => {
                out.push(4);
                out.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.push(6);
                out.extend_from_slice(&ip.octets());
            }
        }
        out
    }

    /// Decodes a record; any malformed input is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (&version, _) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if version != SESSION_RECORD_VERSION {
            return Err(DecodeError::Version(version));
        }
        let family = bytes.get(58).copied();
        let expected = match family {
            Some(6) => SESSION_RECORD_V6_BYTES,
            _ => SESSION_RECORD_V4_BYTES,
        };
        if bytes.len() != expected {
            return Err(DecodeError::Length { expected, found: bytes.len() });
        }
        let flags = bytes[1];
        if flags & !FLAG_REMEMBER != 0 {
            return Err(DecodeError::Flags(flags));
        }
        let array = |at: usize| -> [u8; 8] {
            let mut out = [0u8; 8];
            out.copy_from_slice(&bytes[at..at + 8]);
            out
        };
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes[2..34]);
        let client_ip = match family {
            Some(4) => {
                let mut octets = [0u8; 4];
                octets.copy_from_slice(&bytes[59..63]);
                IpAddr::V4(Ipv4Addr::from(octets))
            }
            Some(6) => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&bytes[59..75]);
                IpAddr::V6(Ipv6Addr::from(octets))
            }
            other => return Err(DecodeError::Family(other.unwrap_or(0))),
        };
        let record = Self {
            key: SessionKey(key),
            account: AccountId(u64::from_be_bytes(array(34))),
            created_at: Timestamp(i64::from_be_bytes(array(42))),
            last_seen_at: Timestamp(i64::from_be_bytes(array(50))),
            client_ip,
            remember: flags & FLAG_REMEMBER != 0,
        };
        if record.last_seen_at < record.created_at {
            return Err(DecodeError::Times);
        }
        Ok(record)
    }
}

/// A session just created.
#[derive(Debug)]
pub struct Created {
    /// The secret id, to send to the client once; the table does not keep it.
    pub id: SessionId,
    /// The new session.
    pub info: SessionInfo,
    /// Sessions ended to make room (the account's least recently used one, and any expired
    /// ones swept because the table was full): delete them from storage too.
    pub ended: Vec<SessionKey>,
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// The live sessions.
#[derive(Debug)]
pub struct SessionTable {
    idle_micros: i64,
    lifetime_micros: i64,
    sessions_max: usize,
    per_account_max: usize,
    sessions: HashMap<SessionKey, SessionRecord>,
    by_account: HashMap<AccountId, Vec<SessionKey>>,
}

impl SessionTable {
    /// An empty table with the configured lifetimes and bounds.
    pub fn new(config: &SessionsConfig) -> Self {
        Self {
            idle_micros: micros(config.idle_timeout),
            lifetime_micros: micros(config.remembered_lifetime),
            sessions_max: usize::try_from(config.sessions_max).unwrap_or(usize::MAX).max(1),
            per_account_max: usize::try_from(config.per_account_max).unwrap_or(usize::MAX).max(1),
            sessions: HashMap::new(),
            by_account: HashMap::new(),
        }
    }

    /// Live and not yet swept sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True when there is no session.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// When a record's session ends.
    pub fn expires_at(&self, record: &SessionRecord) -> Timestamp {
        if record.remember {
            Timestamp(record.created_at.0.saturating_add(self.lifetime_micros))
        } else {
            Timestamp(record.last_seen_at.0.saturating_add(self.idle_micros))
        }
    }

    fn info(&self, record: &SessionRecord) -> SessionInfo {
        SessionInfo { record: *record, expires_at: self.expires_at(record), store_again: false }
    }

    /// Creates a session for `account`, logged in from `client_ip`. Ends the account's least
    /// recently used session when it has `per_account_max` already; sweeps expired sessions
    /// when the table is full, and if it still is, ends the least recently used session of all.
    /// A full table never refuses a login: whoever fills it (many accounts logged in again and
    /// again) pushes out idle sessions, and cannot keep everyone else out.
    pub fn create(
        &mut self,
        account: AccountId,
        client_ip: IpAddr,
        remember: bool,
        now: Timestamp,
    ) -> Result<Created, CreateError> {
        let mut ended = Vec::new();
        let own = self.by_account.get(&account).map_or(0, Vec::len);
        if own >= self.per_account_max {
            if let Some(oldest) = self.least_recently_used(account) {
                self.remove_key(&oldest);
                ended.push(oldest);
            }
        } else if self.sessions.len() >= self.sessions_max {
            ended.extend(self.expire(now));
            if self.sessions.len() >= self.sessions_max {
                // A scan of the table: only when it is full of live sessions.
                let oldest = self
                    .sessions
                    .values()
                    .min_by_key(|r| (r.last_seen_at, r.created_at, r.key))
                    .map(|r| r.key);
                if let Some(oldest) = oldest {
                    tracing::warn!(
                        sessions_max = self.sessions_max,
                        "the session table is full: the least recently used session is ended"
                    );
                    self.remove_key(&oldest);
                    ended.push(oldest);
                }
            }
        }
        // A collision of 256-bit random ids does not happen; refuse rather than overwrite.
        let id = SessionId::generate()?;
        let key = id.key();
        if self.sessions.contains_key(&key) {
            return Err(CreateError::Random);
        }
        let record =
            SessionRecord { key, account, client_ip, created_at: now, last_seen_at: now, remember };
        self.insert(record);
        Ok(Created { id, info: self.info(&record), ended })
    }

    fn least_recently_used(&self, account: AccountId) -> Option<SessionKey> {
        let keys = self.by_account.get(&account)?;
        keys.iter()
            .filter_map(|k| self.sessions.get(k))
            .min_by_key(|r| (r.last_seen_at, r.created_at, r.key))
            .map(|r| r.key)
    }

    fn insert(&mut self, record: SessionRecord) {
        if self.sessions.insert(record.key, record).is_none() {
            self.by_account.entry(record.account).or_default().push(record.key);
        }
    }

    fn lookup(&self, id: &SessionId) -> Option<&SessionRecord> {
        let key = id.key();
        let record = self.sessions.get(&key)?;
        // The map found it by hash; compare the stored bytes without an early exit anyway.
        bool::from(record.key.0.ct_eq(&key.0)).then_some(record)
    }

    /// The session of `id`, if it is live at `now`. Changes nothing.
    pub fn validate(&self, id: &SessionId, now: Timestamp) -> Result<SessionInfo, SessionError> {
        let record = self.lookup(id).ok_or(SessionError::Unknown)?;
        let info = self.info(record);
        if now >= info.expires_at {
            return Err(SessionError::Expired);
        }
        Ok(info)
    }

    /// Validates `id` and records a use at `now`, which pushes an expirable session's expiry
    /// forward. An expired session is removed. The returned record is the one to store.
    pub fn touch(&mut self, id: &SessionId, now: Timestamp) -> Result<SessionInfo, SessionError> {
        let key = id.key();
        match self.validate(id, now) {
            Ok(_) => {}
            Err(SessionError::Expired) => {
                self.remove_key(&key);
                return Err(SessionError::Expired);
            }
            Err(e) => return Err(e),
        }
        let record = self.sessions.get_mut(&key).ok_or(SessionError::Unknown)?;
        let before = record.last_seen_at;
        record.last_seen_at = before.max(now);
        let record = *record;
        // Quarters counted from the session's creation, so that sessions do not all come due
        // at the same moment.
        let step = (self.idle_micros / 4).max(1);
        let quarter = |t: Timestamp| t.0.saturating_sub(record.created_at.0).div_euclid(step);
        let mut info = self.info(&record);
        info.store_again = !record.remember && quarter(before) != quarter(record.last_seen_at);
        Ok(info)
    }

    /// The live session stored under `key`, if there is one.
    pub fn record(&self, key: &SessionKey) -> Option<SessionRecord> {
        self.sessions.get(key).copied()
    }

    /// Ends the session of `id` (logout).
    pub fn remove(&mut self, id: &SessionId) -> Option<SessionRecord> {
        self.lookup(id)?;
        self.remove_key(&id.key())
    }

    /// Ends a session by its key.
    pub fn remove_key(&mut self, key: &SessionKey) -> Option<SessionRecord> {
        let record = self.sessions.remove(key)?;
        if let Entry::Occupied(mut keys) = self.by_account.entry(record.account) {
            keys.get_mut().retain(|k| k != key);
            if keys.get().is_empty() {
                keys.remove();
            }
        }
        Some(record)
    }

    /// Ends every session of an account (e.g. after a password change).
    pub fn remove_account(&mut self, account: AccountId) -> Vec<SessionKey> {
        let keys = self.by_account.remove(&account).unwrap_or_default();
        for key in &keys {
            self.sessions.remove(key);
        }
        keys
    }

    /// Removes every session expired at `now`; returns their keys, sorted, to delete from
    /// storage.
    pub fn expire(&mut self, now: Timestamp) -> Vec<SessionKey> {
        let mut expired: Vec<SessionKey> =
            self.sessions.values().filter(|r| now >= self.expires_at(r)).map(|r| r.key).collect();
        expired.sort_unstable();
        for key in &expired {
            self.remove_key(key);
        }
        expired
    }

    /// Puts back a stored record (at startup). Expired records, records beyond the bounds and
    /// duplicates are not restored; answers whether it was.
    pub fn restore(&mut self, record: SessionRecord, now: Timestamp) -> bool {
        let own = self.by_account.get(&record.account).map_or(0, Vec::len);
        if now >= self.expires_at(&record)
            || self.sessions.contains_key(&record.key)
            || self.sessions.len() >= self.sessions_max
            || own >= self.per_account_max
        {
            return false;
        }
        self.insert(record);
        true
    }

    /// Every session record, sorted by key (for storage and tests).
    pub fn records(&self) -> Vec<SessionRecord> {
        let mut records: Vec<SessionRecord> = self.sessions.values().copied().collect();
        records.sort_unstable_by_key(|r| r.key);
        records
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000_000;

    fn table(sessions_max: u32, per_account_max: u32) -> SessionTable {
        SessionTable::new(&SessionsConfig {
            idle_timeout: Duration::from_secs(30 * 60),
            remembered_lifetime: Duration::from_secs(30 * 24 * 3600),
            sessions_max,
            per_account_max,
        })
    }

    fn ip() -> IpAddr {
        "192.0.2.7".parse().unwrap()
    }

    #[test]
    fn expirable_sessions_end_after_idle_time() {
        let mut sessions = table(10, 4);
        let t0 = Timestamp(1_000 * MINUTE);
        let created = sessions.create(AccountId(1), ip(), false, t0).unwrap();
        let id = created.id;
        assert_eq!(created.info.expires_at, Timestamp(t0.0 + 30 * MINUTE));
        assert_eq!(sessions.validate(&id, t0).unwrap().record.account, AccountId(1));
        // Used at +20 min: lives until +50 min.
        let t20 = Timestamp(t0.0 + 20 * MINUTE);
        assert_eq!(sessions.touch(&id, t20).unwrap().expires_at, Timestamp(t0.0 + 50 * MINUTE));
        assert!(sessions.validate(&id, Timestamp(t0.0 + 49 * MINUTE)).is_ok());
        let t50 = Timestamp(t0.0 + 50 * MINUTE);
        assert_eq!(sessions.validate(&id, t50), Err(SessionError::Expired));
        assert_eq!(sessions.touch(&id, t50), Err(SessionError::Expired));
        assert_eq!(sessions.validate(&id, t50), Err(SessionError::Unknown));
    }

    /// An expirable session's use is due for storing once per quarter of the idle timeout
    /// (7.5 minutes here); a remembered session's never (its lifetime does not move).
    #[test]
    fn uses_are_stored_once_a_quarter_of_the_idle_timeout() {
        let mut sessions = table(10, 4);
        // Quarters are counted from the session's creation.
        let t0 = Timestamp(1_001 * MINUTE);
        let id = sessions.create(AccountId(1), ip(), false, t0).unwrap().id;
        let at = |minutes: i64| Timestamp(t0.0 + minutes * MINUTE);
        assert!(!sessions.touch(&id, at(1)).unwrap().store_again, "the same quarter");
        assert!(!sessions.touch(&id, at(7)).unwrap().store_again, "the same quarter");
        assert!(sessions.touch(&id, at(8)).unwrap().store_again, "a new quarter");
        assert!(!sessions.touch(&id, at(9)).unwrap().store_again);
        assert!(sessions.touch(&id, at(29)).unwrap().store_again, "two quarters later");
        let kept = sessions.create(AccountId(1), ip(), true, t0).unwrap().id;
        assert!(!sessions.touch(&kept, at(60)).unwrap().store_again);
    }

    #[test]
    fn remembered_sessions_end_after_their_lifetime_however_used() {
        let mut sessions = table(10, 4);
        let t0 = Timestamp(0);
        let id = sessions.create(AccountId(1), ip(), true, t0).unwrap().id;
        let day = 24 * 60 * MINUTE;
        for d in 1..30 {
            assert!(sessions.touch(&id, Timestamp(d * day)).is_ok(), "day {d}");
        }
        assert_eq!(sessions.validate(&id, Timestamp(30 * day)), Err(SessionError::Expired));
    }

    #[test]
    fn unknown_ids_logout_and_sweep() {
        let mut sessions = table(10, 4);
        let a = sessions.create(AccountId(1), ip(), false, Timestamp(0)).unwrap().id;
        let b = sessions.create(AccountId(2), ip(), true, Timestamp(0)).unwrap().id;
        let stranger = SessionId::from_slice(&[9; 32]).unwrap();
        assert_eq!(sessions.validate(&stranger, Timestamp(0)), Err(SessionError::Unknown));
        assert!(SessionId::from_slice(&[9; 31]).is_none());
        assert!(sessions.remove(&a).is_some());
        assert_eq!(sessions.validate(&a, Timestamp(0)), Err(SessionError::Unknown));
        assert!(sessions.remove(&a).is_none());
        let c = sessions.create(AccountId(3), ip(), false, Timestamp(0)).unwrap().id;
        let swept = sessions.expire(Timestamp(31 * MINUTE));
        assert_eq!(swept, vec![c.key()]);
        assert!(sessions.validate(&b, Timestamp(31 * MINUTE)).is_ok());
        assert_eq!(sessions.len(), 1);
        // The raw id is never stored.
        assert!(sessions.records().iter().all(|r| r.key.0 != *b.as_bytes()));
        // Nor shown.
        assert_eq!(format!("{b:?}"), "SessionId(<redacted>)");
    }

    #[test]
    fn bounds_per_account_and_in_total() {
        let mut sessions = table(3, 2);
        let first = sessions.create(AccountId(1), ip(), false, Timestamp(0)).unwrap().id;
        let second = sessions.create(AccountId(1), ip(), false, Timestamp(1)).unwrap().id;
        sessions.touch(&first, Timestamp(2)).unwrap();
        // A third session for the account ends its least recently used one.
        let third = sessions.create(AccountId(1), ip(), false, Timestamp(3)).unwrap();
        assert_eq!(third.ended, vec![second.key()]);
        assert_eq!(sessions.validate(&second, Timestamp(3)), Err(SessionError::Unknown));
        assert!(sessions.validate(&first, Timestamp(3)).is_ok());
        let other = sessions.create(AccountId(2), ip(), false, Timestamp(4)).unwrap().id;
        // The table is full of live sessions: a login still succeeds, ending the least recently
        // used session of all (the first one, last used at 2).
        let full = sessions.create(AccountId(3), ip(), false, Timestamp(5)).unwrap();
        assert_eq!(full.ended, vec![first.key()]);
        assert_eq!(sessions.validate(&first, Timestamp(5)), Err(SessionError::Unknown));
        assert!(sessions.validate(&other, Timestamp(5)).is_ok());
        assert_eq!(sessions.len(), 3);
        // Once they expire, the swept ones are reported.
        let later = Timestamp(31 * MINUTE + 5);
        let created = sessions.create(AccountId(4), ip(), false, later).unwrap();
        assert_eq!(created.ended.len(), 3);
        assert_eq!(sessions.remove_account(AccountId(4)), vec![created.id.key()]);
        assert!(sessions.is_empty());
    }

    #[test]
    fn records_round_trip_and_restore() {
        let mut sessions = table(10, 4);
        let v4 = sessions.create(AccountId(7), ip(), true, Timestamp(5)).unwrap();
        let v6 = sessions
            .create(AccountId(8), "2001:db8::1".parse().unwrap(), false, Timestamp(6))
            .unwrap();
        let a = v4.info.record.encode();
        let b = v6.info.record.encode();
        assert_eq!(a.len(), SESSION_RECORD_V4_BYTES);
        assert_eq!(b.len(), SESSION_RECORD_V6_BYTES);
        assert_eq!(a[0], 1);
        assert_eq!(a[1], 1);
        assert_eq!(&a[34..42], &7u64.to_be_bytes());
        assert_eq!(SessionRecord::decode(&a).unwrap(), v4.info.record);
        assert_eq!(SessionRecord::decode(&b).unwrap(), v6.info.record);

        let mut restarted = table(10, 4);
        assert!(restarted.restore(SessionRecord::decode(&a).unwrap(), Timestamp(10)));
        assert!(!restarted.restore(SessionRecord::decode(&a).unwrap(), Timestamp(10)));
        assert!(!restarted.restore(SessionRecord::decode(&b).unwrap(), Timestamp(31 * MINUTE + 6)));
        assert!(restarted.validate(&v4.id, Timestamp(10)).is_ok());
        assert_eq!(restarted.validate(&v6.id, Timestamp(10)), Err(SessionError::Unknown));
    }

    #[test]
    fn decoding_garbage_is_an_error() {
        let record = SessionRecord {
            key: SessionKey([3; 32]),
            account: AccountId(1),
            client_ip: ip(),
            created_at: Timestamp(1),
            last_seen_at: Timestamp(2),
            remember: false,
        };
        let good = record.encode();
        assert_eq!(SessionRecord::decode(&[]), Err(DecodeError::Empty));
        let mut bad = good.clone();
        bad[0] = 2;
        assert_eq!(SessionRecord::decode(&bad), Err(DecodeError::Version(2)));
        let mut bad = good.clone();
        bad[1] = 0x80;
        assert_eq!(SessionRecord::decode(&bad), Err(DecodeError::Flags(0x80)));
        let mut bad = good.clone();
        bad[58] = 5;
        assert_eq!(SessionRecord::decode(&bad), Err(DecodeError::Family(5)));
        let mut bad = good.clone();
        bad[58] = 6;
        assert!(matches!(
            SessionRecord::decode(&bad),
            Err(DecodeError::Length { expected: 75, .. })
        ));
        let swapped = SessionRecord { created_at: Timestamp(3), ..record }.encode();
        assert_eq!(SessionRecord::decode(&swapped), Err(DecodeError::Times));
        // Every truncation and every single-byte extension fails without panicking.
        for len in 0..good.len() {
            assert!(SessionRecord::decode(&good[..len]).is_err(), "{len}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(SessionRecord::decode(&longer).is_err());
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..100)) {
            let _ = SessionRecord::decode(&bytes);
        }

        #[test]
        fn records_round_trip(
            key in proptest::array::uniform32(proptest::num::u8::ANY),
            account in proptest::num::u64::ANY,
            created in proptest::num::i64::ANY,
            idle in 0i64..1_000_000,
            v4 in proptest::num::u32::ANY,
            v6 in proptest::num::u128::ANY,
            use_v6 in proptest::bool::ANY,
            remember in proptest::bool::ANY,
        ) {
            let client_ip = if use_v6 {
                IpAddr::V6(Ipv6Addr::from(v6))
            } else {
                IpAddr::V4(Ipv4Addr::from(v4))
            };
            let record = SessionRecord {
                key: SessionKey(key),
                account: AccountId(account),
                client_ip,
                created_at: Timestamp(created),
                last_seen_at: Timestamp(created.saturating_add(idle)),
                remember,
            };
            proptest::prop_assert_eq!(SessionRecord::decode(&record.encode()), Ok(record));
        }
    }
}
