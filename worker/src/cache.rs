//! The asset data cache (spec 3.2.6, 4.7.7): answers to `get...` asset requests that the worker
//! can give again without asking the master.
//!
//! Sans IO: every method takes `now` (a monotonic [`Instant`]), so tests drive time.
//!
//! Policy (documented in `docs/WORKER.md`):
//! - Keys are (request kind, symbol, period, date): [`CacheKey::for_request`]. Only asset
//!   requests are cached; user data never is (it depends on the session).
//! - Only successful `data` answers of the right payload kind and symbol are stored; failures
//!   are never cached.
//! - `getAssetInfo`, `getAssetValueCurrent` and `getAssetValueAllTime` live for `ttl` (one
//!   update interval): the next interval brings a new price.
//! - A `getAssetValueDay/Week/Month/Year` whose whole period ends before the latest price time
//!   seen for the asset (from any current value that went through the cache) *when the request
//!   was relayed* is *closed*: the master had stored that later price before it read the
//!   period's, so no later tick can fall in it, and it lives for `closed_ttl`. An open period
//!   lives for `ttl`.
//!   The period's end is over-estimated (a month as 31 days, a year as 366), so a period is
//!   never taken as closed too early.
//! - Bounded by entries **and** bytes (the encoded answer plus [`ENTRY_OVERHEAD_BYTES`]); the
//!   least recently used entries are evicted first. An answer bigger than the byte bound is not
//!   stored.
//! - Answers are stored shared ([`std::sync::Arc`]): a hit is copied after the caller lets go of
//!   the cache's lock, and an answer is encoded (to count its bytes) and copied before it is
//!   taken ([`AssetCache::ready`]), so a series of megabytes never holds every other client's
//!   lookup behind it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{Symbol, Timestamp};
use net::{DataPayload, Period, Request, Response};

use crate::config::CacheConfig;
use crate::lru::Lru;

/// Bytes counted for each entry on top of its encoded answer (key, bookkeeping).
pub const ENTRY_OVERHEAD_BYTES: u64 = 128;

/// Most assets whose latest price time is remembered (to tell closed periods).
pub const LATEST_TIMES_MAX: usize = 100_000;

const DAY_MICROS: i64 = 86_400_000_000;

/// What a cached answer answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheKey {
    /// `getAssetInfo(symbol)`.
    Info(Symbol),
    /// `getAssetValueCurrent(symbol)`.
    Current(Symbol),
    /// `getAssetValueDay/Week/Month/Year(symbol, date)`.
    Series(Symbol, Period, Timestamp),
    /// `getAssetValueAllTime(symbol)`.
    AllTime(Symbol),
}

impl CacheKey {
    /// The key of a cacheable request; `None` for every other request.
    pub fn for_request(request: &Request) -> Option<Self> {
        Some(match request {
            Request::GetAssetInfo { symbol } => Self::Info(*symbol),
            Request::GetAssetValueCurrent { symbol } => Self::Current(*symbol),
            Request::GetAssetValue { symbol, period, date } => {
                Self::Series(*symbol, *period, *date)
            }
            Request::GetAssetValueAllTime { symbol } => Self::AllTime(*symbol),
            _ => return None,
        })
    }

    /// The asset.
    pub fn symbol(&self) -> Symbol {
        match self {
            Self::Info(s) | Self::Current(s) | Self::Series(s, ..) | Self::AllTime(s) => *s,
        }
    }

    /// True when `response` is a successful answer to this key's request: `data` of the right
    /// kind for the same symbol.
    pub fn answered_by(&self, response: &Response) -> bool {
        match (self, response) {
            (Self::Info(s) | Self::Current(s), Response::Data(DataPayload::AssetInfo(tick))) => {
                tick.symbol == *s
            }
            (
                Self::Series(s, ..) | Self::AllTime(s),
                Response::Data(DataPayload::PriceSeries(series)),
            ) => series.symbol == *s,
            _ => false,
        }
    }
}

/// An upper bound of the end of the period `[date, end)` of a series query: a day, 7 days,
/// 31 days or 366 days after `date`.
pub fn period_end_max(period: Period, date: Timestamp) -> Timestamp {
    let days = match period {
        Period::Day => 1,
        Period::Week => 7,
        Period::Month => 31,
        Period::Year => 366,
    };
    Timestamp(date.0.saturating_add(days * DAY_MICROS))
}

/// A request about to be relayed, with the latest price time the cache knew of its asset then
/// (from [`AssetCache::asked`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asked {
    key: CacheKey,
    latest: Option<Timestamp>,
    /// When it was asked: an answer's lifetime counts from then, not from its arrival (a slow
    /// answer is no fresher for it).
    at: Instant,
    /// How many times the cache had been emptied then: an answer asked before
    /// [`AssetCache::forget_all`] comes from the master before it and is not stored after.
    epoch: u64,
}

/// Counters of a cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that found nothing (or only an expired entry).
    pub misses: u64,
    /// Answers stored.
    pub inserts: u64,
    /// Entries removed to make room.
    pub evictions: u64,
    /// Entries now.
    pub entries: u64,
    /// Bytes counted now.
    pub bytes: u64,
}

#[derive(Debug)]
struct Entry {
    response: Arc<Response>,
    expires_at: Instant,
}

/// An answer made ready to be stored, outside the cache's lock: a series may be megabytes, and
/// copying or encoding it while the lock is held would make every other client's lookup wait.
#[derive(Debug, Clone)]
pub struct ReadyAnswer {
    response: Arc<Response>,
    /// Its encoded size plus [`ENTRY_OVERHEAD_BYTES`].
    bytes: u64,
}

impl ReadyAnswer {
    /// `response` made ready to be stored as the answer for `key`, or `None` when it is not a
    /// successful answer to it (see [`CacheKey::answered_by`]) or cannot be encoded.
    fn new(key: &CacheKey, response: &Response) -> Option<Self> {
        if !key.answered_by(response) {
            return None;
        }
        let message = response.encode().ok()?;
        let bytes = u64::try_from(message.body.len())
            .unwrap_or(u64::MAX)
            .saturating_add(ENTRY_OVERHEAD_BYTES);
        Some(Self { response: Arc::new(response.clone()), bytes })
    }
}

/// The bounded asset data cache.
#[derive(Debug)]
pub struct AssetCache {
    entries: Lru<CacheKey, Entry>,
    latest: HashMap<Symbol, Timestamp>,
    entries_max: usize,
    bytes_max: u64,
    ttl: Duration,
    closed_ttl: Duration,
    stats: CacheStats,
    /// How many times [`AssetCache::forget_all`] emptied it.
    epoch: u64,
}

impl AssetCache {
    /// An empty cache with the configured bounds.
    pub fn new(config: &CacheConfig) -> Self {
        Self {
            entries: Lru::new(),
            latest: HashMap::new(),
            entries_max: usize::try_from(config.entries_max).unwrap_or(usize::MAX),
            bytes_max: config.bytes_max,
            ttl: config.ttl,
            closed_ttl: config.closed_ttl,
            stats: CacheStats::default(),
            epoch: 0,
        }
    }

    /// Forgets every answer and every price time learned: for a link that comes back, perhaps
    /// to another master (restarted on another data directory), whose prices may differ.
    /// Answers to requests asked before are not stored when they come.
    pub fn forget_all(&mut self) {
        self.entries = Lru::new();
        self.latest.clear();
        self.epoch = self.epoch.wrapping_add(1);
    }

    /// The cached answer for `key`, if there is one that has not expired at `now`, shared (the
    /// caller copies it after letting go of the lock). Counts a hit or a miss.
    pub fn get(&mut self, key: &CacheKey, now: Instant) -> Option<Arc<Response>> {
        let found = match self.entries.get_mut(key) {
            Some(entry) if entry.expires_at > now => Some(Arc::clone(&entry.response)),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        };
        match found {
            Some(_) => self.stats.hits = self.stats.hits.saturating_add(1),
            None => self.stats.misses = self.stats.misses.saturating_add(1),
        }
        found
    }

    /// Notes what the cache knows, before a request for `key` is relayed, of its asset's latest
    /// price time: [`AssetCache::insert_answer`] judges the answer closed by that, not by a later
    /// price learned (from another connection's answer) while the request was on its way, which
    /// the answer may not include.
    pub fn asked(&self, key: CacheKey, now: Instant) -> Asked {
        let latest = match key {
            CacheKey::Series(symbol, ..) => self.latest.get(&symbol).copied(),
            _ => None,
        };
        Asked { key, latest, at: now, epoch: self.epoch }
    }

    /// Makes `response` ready to be stored as the answer `asked` for, outside the lock: `None`
    /// when it is not a successful answer to that request (see [`CacheKey::answered_by`]) or
    /// cannot be encoded.
    pub fn ready(asked: &Asked, response: &Response) -> Option<ReadyAnswer> {
        ReadyAnswer::new(&asked.key, response)
    }

    /// [`AssetCache::insert_answer`] for an answer to a request relayed just now.
    pub fn insert(&mut self, key: CacheKey, response: &Response, now: Instant) -> bool {
        let asked = self.asked(key, now);
        self.insert_answer(asked, response)
    }

    /// Stores `response` as the answer for the key asked if it is a successful answer to it (see
    /// [`CacheKey::answered_by`]) and fits; returns whether it was stored. A successful answer
    /// that does not fit still removes the key's older answer. Current values also
    /// teach the cache the asset's latest price time, and never replace a newer one: answers
    /// read before and after an interval's commit can come back in either order. An answer
    /// lives `ttl` (or `closed_ttl`) from when it was asked.
    pub fn insert_answer(&mut self, asked: Asked, response: &Response) -> bool {
        match ReadyAnswer::new(&asked.key, response) {
            Some(ready) => self.insert_ready(asked, ready),
            None => false,
        }
    }

    /// [`AssetCache::insert_answer`] of an answer made ready outside the lock (for the key
    /// asked: `ReadyAnswer::new` with another key would store an answer under the wrong key).
    pub fn insert_ready(&mut self, asked: Asked, ready: ReadyAnswer) -> bool {
        let Asked { key, latest, at, epoch } = asked;
        let ReadyAnswer { response, bytes } = ready;
        debug_assert!(key.answered_by(&response), "an answer made ready for another key");
        if !key.answered_by(&response) || epoch != self.epoch {
            return false;
        }
        if let Response::Data(DataPayload::AssetInfo(tick)) = response.as_ref() {
            self.learn_latest(tick.symbol, tick.time);
            let newer_kept = self.entries.get_mut(&key).is_some_and(|kept| {
                matches!(kept.response.as_ref(), Response::Data(DataPayload::AssetInfo(old))
                    if old.time > tick.time)
            });
            if newer_kept {
                return false;
            }
        }
        // The new answer supersedes the old one, even if it cannot be stored.
        self.entries.remove(&key);
        if self.entries_max == 0 {
            return false;
        }
        if bytes > self.bytes_max {
            return false;
        }
        let ttl = match key {
            CacheKey::Series(_, period, date)
                if latest.is_some_and(|latest| period_end_max(period, date) <= latest) =>
            {
                self.closed_ttl
            }
            _ => self.ttl,
        };
        while self.entries.len() >= self.entries_max
            || self.entries.weight().saturating_add(bytes) > self.bytes_max
        {
            if self.entries.pop_oldest().is_none() {
                break;
            }
            self.stats.evictions = self.stats.evictions.saturating_add(1);
        }
        let expires_at = at.checked_add(ttl).unwrap_or(at);
        self.entries.insert(key, Entry { response, expires_at }, bytes);
        self.stats.inserts = self.stats.inserts.saturating_add(1);
        true
    }

    fn learn_latest(&mut self, symbol: Symbol, time: Timestamp) {
        // (The latest times only grow, so an answer judged by the time noted when it was asked
        // is never taken as closed too early.)
        if let Some(latest) = self.latest.get_mut(&symbol) {
            *latest = (*latest).max(time);
            return;
        }
        if self.latest.len() >= LATEST_TIMES_MAX {
            // Forgetting only makes later series open (short-lived) until learned again.
            self.latest.clear();
        }
        self.latest.insert(symbol, time);
    }

    /// The counters, with the current size.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            entries: u64::try_from(self.entries.len()).unwrap_or(u64::MAX),
            bytes: self.entries.weight(),
            ..self.stats
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use engine::{Price, Qty, Tick};
    use net::{Bar, Failure, PriceSeries, Reason};

    use super::*;

    /// The cached answer, copied (what `get` shares).
    fn got(cache: &mut AssetCache, key: &CacheKey, now: Instant) -> Option<Response> {
        cache.get(key, now).map(|answer| Response::clone(&answer))
    }

    fn sym(s: &str) -> Symbol {
        Symbol::new(s).unwrap()
    }

    fn tick(symbol: &str, time: i64) -> Response {
        let price = Price::parse("10").unwrap();
        Response::Data(DataPayload::AssetInfo(Tick {
            symbol: sym(symbol),
            open: price,
            high: price,
            low: price,
            close: price,
            volume: Qty::from_raw(1),
            time: Timestamp(time),
        }))
    }

    fn series(symbol: &str, bars: usize) -> Response {
        let price = Price::parse("10").unwrap();
        let bar = |day: usize| Bar {
            open: price,
            high: price,
            low: price,
            close: price,
            volume: Qty::from_raw(1),
            time: Timestamp(i64::try_from(day).unwrap() * 86_400_000_000),
        };
        Response::Data(DataPayload::PriceSeries(PriceSeries {
            symbol: sym(symbol),
            bars: (0..bars).map(bar).collect(),
        }))
    }

    fn config() -> CacheConfig {
        CacheConfig {
            entries_max: 3,
            bytes_max: 1 << 20,
            ttl: Duration::from_secs(1),
            closed_ttl: Duration::from_secs(3600),
        }
    }

    #[test]
    fn a_current_value_is_served_until_its_interval_ends() {
        let mut cache = AssetCache::new(&config());
        let t0 = Instant::now();
        let key = CacheKey::Current(sym("AAPL"));
        assert_eq!(got(&mut cache, &key, t0), None);
        assert!(cache.insert(key, &tick("AAPL", 5), t0));
        assert_eq!(got(&mut cache, &key, t0 + Duration::from_millis(999)), Some(tick("AAPL", 5)));
        assert_eq!(got(&mut cache, &key, t0 + Duration::from_secs(1)), None);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.inserts, stats.entries), (1, 2, 1, 0));
    }

    #[test]
    fn only_matching_successful_answers_are_stored() {
        let mut cache = AssetCache::new(&config());
        let now = Instant::now();
        let key = CacheKey::Current(sym("AAPL"));
        assert!(!cache.insert(key, &tick("IBM", 5), now));
        assert!(!cache.insert(key, &series("AAPL", 1), now));
        let fail = Response::DataFail(Failure::new(Reason::NotFound, "no"));
        assert!(!cache.insert(key, &fail, now));
        assert!(!cache.insert(CacheKey::AllTime(sym("AAPL")), &tick("AAPL", 5), now));
        assert!(cache.insert(CacheKey::AllTime(sym("AAPL")), &series("AAPL", 2), now));
        let request = Request::GetUserInfo {
            session: net::SessionId([0; 32]),
            username: engine::Username::new("alice").unwrap(),
        };
        assert_eq!(CacheKey::for_request(&request), None);
    }

    /// Answers read before and after an interval's commit can come back in either order: the
    /// current price in the cache never goes back, and an answer lives from when it was asked.
    /// An answer asked before the cache was emptied (a relink, perhaps to another master)
    /// is the old master's: it is not stored when it arrives after, and teaches no price time.
    #[test]
    fn an_answer_asked_before_the_cache_was_emptied_is_not_stored() {
        let mut cache = AssetCache::new(&config());
        let t0 = Instant::now();
        let key = CacheKey::Info(sym("AAPL"));
        let old = cache.asked(key, t0);
        cache.forget_all();
        assert!(!cache.insert_answer(old, &tick("AAPL", 2 * DAY_MICROS)));
        assert_eq!(got(&mut cache, &key, t0), None);
        // Asked after, it is stored as usual.
        let new = cache.asked(key, t0);
        assert!(cache.insert_answer(new, &tick("AAPL", DAY_MICROS)));
        assert_eq!(got(&mut cache, &key, t0), Some(tick("AAPL", DAY_MICROS)));
    }

    #[test]
    fn the_current_price_never_goes_back_and_lives_from_its_question() {
        let mut cache = AssetCache::new(&config());
        let t0 = Instant::now();
        let key = CacheKey::Info(sym("AAPL"));
        let before = cache.asked(key, t0);
        let after = cache.asked(key, t0 + Duration::from_millis(10));
        // The newer answer (asked second) comes back first, then the older one.
        assert!(cache.insert_answer(after, &tick("AAPL", 2 * DAY_MICROS)));
        assert!(!cache.insert_answer(before, &tick("AAPL", DAY_MICROS)));
        let kept = got(&mut cache, &key, t0 + Duration::from_millis(20)).unwrap();
        assert_eq!(kept, tick("AAPL", 2 * DAY_MICROS));
        // It lives `ttl` (1s in this config) from its question, not from its arrival.
        let slow = cache.asked(CacheKey::Info(sym("IBM")), t0);
        assert!(cache.insert_answer(slow, &tick("IBM", DAY_MICROS)));
        assert!(
            got(&mut cache, &CacheKey::Info(sym("IBM")), t0 + Duration::from_millis(999)).is_some()
        );
        assert_eq!(
            got(&mut cache, &CacheKey::Info(sym("IBM")), t0 + Duration::from_millis(1001)),
            None
        );
    }

    #[test]
    fn closed_periods_live_longer_than_open_ones() {
        let mut cache = AssetCache::new(&config());
        let t0 = Instant::now();
        let day = Timestamp(10 * DAY_MICROS);
        let closed = CacheKey::Series(sym("AAPL"), Period::Week, day);
        let open = CacheKey::Series(sym("AAPL"), Period::Month, day);
        // Nothing known about AAPL's latest price: everything is open.
        assert!(cache.insert(closed, &series("AAPL", 7), t0));
        assert_eq!(got(&mut cache, &closed, t0 + Duration::from_secs(2)), None);
        // Asked while nothing was known; a later price learned from another answer meanwhile
        // does not make this answer closed (it may lack the period's last ticks).
        let asked = cache.asked(closed, t0);
        assert!(cache.insert(CacheKey::Info(sym("AAPL")), &tick("AAPL", 30 * DAY_MICROS), t0));
        assert!(cache.insert_answer(asked, &series("AAPL", 6)));
        assert_eq!(
            got(&mut cache, &closed, t0 + Duration::from_secs(2)),
            None,
            "open: short-lived"
        );
        // The current price is 20 days after the date: the week is over, the month is not.
        assert!(cache.insert(CacheKey::Info(sym("AAPL")), &tick("AAPL", 30 * DAY_MICROS), t0));
        assert!(cache.insert(closed, &series("AAPL", 7), t0));
        assert!(cache.insert(open, &series("AAPL", 20), t0));
        let later = t0 + Duration::from_secs(60);
        assert!(got(&mut cache, &closed, later).is_some());
        assert_eq!(got(&mut cache, &open, later), None);
    }

    #[test]
    fn bounded_by_entries_and_bytes_least_recently_used_first() {
        let mut cache = AssetCache::new(&config());
        let now = Instant::now();
        let keys: Vec<_> = ["A", "B", "C", "D"].map(|s| CacheKey::Current(sym(s))).into();
        for (key, s) in keys.iter().zip(["A", "B", "C"]) {
            assert!(cache.insert(*key, &tick(s, 1), now));
        }
        assert!(got(&mut cache, &keys[0], now).is_some()); // A is now the most recent.
        assert!(cache.insert(keys[3], &tick("D", 1), now));
        assert!(got(&mut cache, &keys[1], now).is_none(), "B was the least recently used");
        assert!(got(&mut cache, &keys[0], now).is_some());
        assert_eq!(cache.stats().entries, 3);
        assert_eq!(cache.stats().evictions, 1);

        // Bytes: each series of 100 bars is ~5 KB; room for two.
        let one = series("A", 100).encode().unwrap().body.len() as u64 + ENTRY_OVERHEAD_BYTES;
        let mut cache =
            AssetCache::new(&CacheConfig { entries_max: 100, bytes_max: 2 * one + 10, ..config() });
        let all = |s| CacheKey::AllTime(sym(s));
        assert!(cache.insert(all("A"), &series("A", 100), now));
        assert!(cache.insert(all("B"), &series("B", 100), now));
        assert!(cache.insert(all("C"), &series("C", 100), now));
        assert_eq!(cache.stats().entries, 2);
        assert!(cache.stats().bytes <= 2 * one + 10);
        assert!(got(&mut cache, &all("A"), now).is_none());
        // Bigger than the whole cache: not stored, nothing evicted.
        assert!(!cache.insert(all("D"), &series("D", 1000), now));
        assert_eq!(cache.stats().entries, 2);
        // A cache of zero entries stores nothing.
        let mut off = AssetCache::new(&CacheConfig { entries_max: 0, ..config() });
        assert!(!off.insert(all("A"), &series("A", 1), now));
    }

    mod model {
        use std::collections::HashMap;

        use proptest::prelude::*;

        use super::*;

        #[derive(Debug, Clone)]
        enum Op {
            /// Store a series of `bars` bars for symbol number `key`.
            Insert { key: u8, bars: u8 },
            /// Look symbol number `key` up.
            Get { key: u8 },
            /// Let this many milliseconds pass.
            Wait { ms: u16 },
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0..8u8, 0..40u8).prop_map(|(key, bars)| Op::Insert { key, bars }),
                (0..8u8).prop_map(|key| Op::Get { key }),
                (0..700u16).prop_map(|ms| Op::Wait { ms }),
            ]
        }

        proptest! {
            /// Against a model that remembers the last answer stored per key and when: the
            /// cache never exceeds its bounds, never answers with anything but the last answer
            /// stored for the key, and never answers after the entry's lifetime.
            #[test]
            fn bounded_and_never_stale(
                ops in proptest::collection::vec(op(), 1..200),
                entries_max in 1..6u32,
                bytes_max in 200..3000u64,
            ) {
                let ttl = Duration::from_secs(1);
                let mut cache = AssetCache::new(&CacheConfig {
                    entries_max,
                    bytes_max,
                    ttl,
                    closed_ttl: ttl,
                });
                let symbols: Vec<String> = (0..8).map(|i| format!("S{i}")).collect();
                let mut model: HashMap<u8, (Response, Instant)> = HashMap::new();
                let mut now = Instant::now();
                for op in ops {
                    match op {
                        Op::Insert { key, bars } => {
                            let symbol = &symbols[usize::from(key)];
                            let response = series(symbol, usize::from(bars));
                            let cache_key = CacheKey::AllTime(sym(symbol));
                            if cache.insert(cache_key, &response, now) {
                                model.insert(key, (response, now));
                            } else {
                                model.remove(&key);
                            }
                        }
                        Op::Get { key } => {
                            let cache_key = CacheKey::AllTime(sym(&symbols[usize::from(key)]));
                            if let Some(found) = got(&mut cache, &cache_key, now) {
                                let (expected, at) = model.get(&key).expect("stored");
                                prop_assert_eq!(&found, expected);
                                prop_assert!(now.duration_since(*at) < ttl);
                            }
                        }
                        Op::Wait { ms } => now += Duration::from_millis(u64::from(ms)),
                    }
                    let stats = cache.stats();
                    prop_assert!(stats.entries <= u64::from(entries_max));
                    prop_assert!(stats.bytes <= bytes_max);
                }
            }
        }
    }
}
