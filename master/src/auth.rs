//! Password hashing and failed-login limits (spec 3.1.3).
//!
//! The client never sends its password: it sends a client-side hash of it, opaque bytes of
//! [`CLIENT_PASSWORD_BYTES_MIN`] to [`CLIENT_PASSWORD_BYTES_MAX`]. The master hashes those bytes
//! again with argon2id (a random 16-byte salt per account from the OS generator, the configured
//! costs) and stores only the PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`).
//!
//! argon2 is deliberately slow, so [`PasswordHasher`] runs it on a few dedicated threads fed by
//! a bounded queue: a burst of logins never delays the async threads, and when the queue is
//! full a request fails at once with [`AuthError::Busy`]. Logins for unknown usernames run
//! [`PasswordHasher::verify_dummy`], which costs the same as a real verification, so timing does
//! not tell which usernames exist.
//!
//! [`LoginLimiter`] rate-limits failed logins per username and per client IP, in bounded memory,
//! with `now` passed in. Nothing here logs a password, a hash or a salt.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::phc::{Output, ParamsString, Salt};
use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use engine::{PasswordHash, Timestamp, Username};
use tokio::sync::oneshot;

use crate::config::{
    ARGON2_M_COST_KIB_MAX, ARGON2_P_COST_MAX, ARGON2_T_COST_MAX, Argon2Config, AuthConfig,
    FailedLoginsConfig, RegistrationsConfig,
};

/// Shortest client-side password hash accepted, in bytes.
pub const CLIENT_PASSWORD_BYTES_MIN: usize = 16;
/// Longest client-side password hash accepted, in bytes.
pub const CLIENT_PASSWORD_BYTES_MAX: usize = 128;
/// Salt length, in bytes.
pub const SALT_BYTES: usize = 16;
/// argon2 output length, in bytes.
const OUTPUT_BYTES: usize = 32;

/// Why hashing or verifying failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Every hashing thread is busy and the queue is full: refuse the login, try later.
    #[error("password hashing is busy, try again later")]
    Busy,
    /// The client-side hash is not 16 to 128 bytes.
    #[error("client password hash has {0} bytes, it must have 16 to 128")]
    BadPasswordLength(usize),
    /// A stored hash that does not parse, or whose costs exceed this server's caps.
    #[error("stored password hash is malformed or its costs exceed the caps")]
    MalformedHash,
    /// The OS random generator failed.
    #[error("the OS random generator failed")]
    Random,
    /// argon2 refused (bad parameters).
    #[error("password hashing failed: {0}")]
    Hashing(String),
    /// The hashing threads are gone.
    #[error("password hashing has stopped")]
    Stopped,
}

/// The client-side hash of a password: opaque bytes of 16 to 128. `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientPassword(Vec<u8>);

impl ClientPassword {
    /// Checks the length and wraps the bytes.
    pub fn new(bytes: &[u8]) -> Result<Self, AuthError> {
        if !(CLIENT_PASSWORD_BYTES_MIN..=CLIENT_PASSWORD_BYTES_MAX).contains(&bytes.len()) {
            return Err(AuthError::BadPasswordLength(bytes.len()));
        }
        Ok(Self(bytes.to_vec()))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for ClientPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientPassword(<redacted>)")
    }
}

impl Drop for ClientPassword {
    fn drop(&mut self) {
        // Best effort: clear the bytes before the allocation is freed.
        self.0.iter_mut().for_each(|b| *b = 0);
    }
}

enum Job {
    Hash {
        password: ClientPassword,
        reply: oneshot::Sender<Result<PasswordHash, AuthError>>,
    },
    Verify {
        password: ClientPassword,
        phc: Arc<str>,
        reply: oneshot::Sender<Result<bool, AuthError>>,
    },
}

/// argon2id hashing on a bounded pool of dedicated threads. Cheap to clone; the threads stop
/// when the last clone is dropped and the queue is drained.
#[derive(Clone)]
pub struct PasswordHasher {
    sender: SyncSender<Job>,
    params: Params,
    /// A PHC string with the configured costs and a hash no password gives.
    dummy: Arc<str>,
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHasher").finish_non_exhaustive()
    }
}

fn argon2_params(config: &Argon2Config) -> Result<Params, AuthError> {
    Params::new(config.m_cost_kib, config.t_cost, config.p_cost, Some(OUTPUT_BYTES))
        .map_err(|e| AuthError::Hashing(e.to_string()))
}

fn random<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|_| AuthError::Random)?;
    Ok(bytes)
}

impl PasswordHasher {
    /// Starts `config.hash_threads` threads behind a queue of `config.hash_queue_max`.
    pub fn new(config: &AuthConfig) -> Result<Self, AuthError> {
        let params = argon2_params(&config.argon2)?;
        let dummy = argon2::PasswordHash {
            algorithm: argon2::ARGON2ID_IDENT,
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params)
                .map_err(|e| AuthError::Hashing(e.to_string()))?,
            salt: Some(Salt::new(&random::<SALT_BYTES>()?).map_err(|_| AuthError::Random)?),
            hash: Some(Output::new(&random::<OUTPUT_BYTES>()?).map_err(|_| AuthError::Random)?),
        };
        let queue = usize::try_from(config.hash_queue_max).unwrap_or(usize::MAX).max(1);
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Job>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..config.hash_threads.max(1) {
            let receiver = Arc::clone(&receiver);
            let params = params.clone();
            std::thread::Builder::new()
                .name(format!("pt-hash-{i}"))
                .spawn(move || run_worker(&receiver, &params))
                .map_err(|e| AuthError::Hashing(format!("cannot start a hashing thread: {e}")))?;
        }
        Ok(Self { sender, params, dummy: Arc::from(dummy.to_string()) })
    }

    fn submit<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Job,
    ) -> Result<oneshot::Receiver<T>, AuthError> {
        let (reply, answer) = oneshot::channel();
        match self.sender.try_send(make(reply)) {
            Ok(()) => Ok(answer),
            Err(TrySendError::Full(_)) => Err(AuthError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(AuthError::Stopped),
        }
    }

    /// Hashes a client password with a fresh random salt: the PHC string to store. The request
    /// is queued when this is called, not when the future is first polled, so a full queue
    /// gives [`AuthError::Busy`] at once.
    pub fn hash(
        &self,
        password: &ClientPassword,
    ) -> impl Future<Output = Result<PasswordHash, AuthError>> + Send + 'static {
        let password = password.clone();
        let submitted = self.submit(|reply| Job::Hash { password, reply });
        async move { submitted?.await.map_err(|_| AuthError::Stopped)? }
    }

    /// True when `password` matches the stored hash (argon2's comparison is constant-time).
    /// Queued at the call, like [`hash`](Self::hash).
    pub fn verify(
        &self,
        password: &ClientPassword,
        stored: &PasswordHash,
    ) -> impl Future<Output = Result<bool, AuthError>> + Send + 'static {
        self.verify_phc(password, Arc::from(stored.as_str()))
    }

    /// Costs what [`verify`](Self::verify) costs and always answers `false`: for logins with
    /// an unknown username, so that timing does not reveal which usernames exist.
    pub fn verify_dummy(
        &self,
        password: &ClientPassword,
    ) -> impl Future<Output = Result<bool, AuthError>> + Send + 'static {
        let verified = self.verify_phc(password, Arc::clone(&self.dummy));
        async move { verified.await.map(|_| false) }
    }

    fn verify_phc(
        &self,
        password: &ClientPassword,
        phc: Arc<str>,
    ) -> impl Future<Output = Result<bool, AuthError>> + Send + 'static {
        let password = password.clone();
        let submitted = self.submit(|reply| Job::Verify { password, phc, reply });
        async move { submitted?.await.map_err(|_| AuthError::Stopped)? }
    }

    /// True when a stored hash was made with other costs than the configured ones (or is not
    /// argon2id): a successful login then stores a new hash of the same password
    /// (docs/MASTER.md, "Rehash at login"), so that the costs of every account that logs in
    /// follow the configuration.
    pub fn needs_rehash(&self, stored: &PasswordHash) -> bool {
        let Ok(parsed) = argon2::PasswordHash::new(stored.as_str()) else { return true };
        let Ok(params) = Params::try_from(&parsed) else { return true };
        parsed.algorithm != argon2::ARGON2ID_IDENT
            || params.m_cost() != self.params.m_cost()
            || params.t_cost() != self.params.t_cost()
            || params.p_cost() != self.params.p_cost()
    }
}

fn run_worker(receiver: &Mutex<Receiver<Job>>, params: &Params) {
    // Hashing is the one CPU-heavy job besides settlement: at the lowest priority, a login
    // storm takes only the CPU that orders leave (lowering a priority needs no privilege).
    if let Err(e) =
        thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min)
    {
        tracing::warn!(cause = ?e, "cannot lower the priority of a password-hashing thread");
    }
    let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    loop {
        let job = {
            let receiver = receiver.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            receiver.recv()
        };
        match job {
            // A dropped reply means the caller gave up; nothing to do.
            Ok(Job::Hash { password, reply }) => {
                let _ = reply.send(hash_now(&hasher, &password));
            }
            Ok(Job::Verify { password, phc, reply }) => {
                let _ = reply.send(verify_now(&hasher, &password, &phc));
            }
            Err(_) => return,
        }
    }
}

fn hash_now(hasher: &Argon2<'_>, password: &ClientPassword) -> Result<PasswordHash, AuthError> {
    let salt = random::<SALT_BYTES>()?;
    let phc = hasher
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(|e| AuthError::Hashing(e.to_string()))?;
    PasswordHash::new(&phc.to_string()).map_err(|e| AuthError::Hashing(e.to_string()))
}

fn verify_now(
    hasher: &Argon2<'_>,
    password: &ClientPassword,
    phc: &str,
) -> Result<bool, AuthError> {
    let parsed = argon2::PasswordHash::new(phc).map_err(|_| AuthError::MalformedHash)?;
    // A stored hash's own costs are used: cap them so a bad record cannot exhaust memory.
    let params = Params::try_from(&parsed).map_err(|_| AuthError::MalformedHash)?;
    if params.m_cost() > ARGON2_M_COST_KIB_MAX
        || params.t_cost() > ARGON2_T_COST_MAX
        || params.p_cost() > ARGON2_P_COST_MAX
    {
        return Err(AuthError::MalformedHash);
    }
    match hasher.verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(_) => Err(AuthError::MalformedHash),
    }
}

/// A registration refused for too many recent registrations from its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many registrations from this address; retry in {}s", retry_after.as_secs().max(1))]
pub struct RegistrationBlocked {
    /// How long until one more registration is allowed.
    pub retry_after: Duration,
}

/// Rate-limits registrations per client address (IPv6 per /64), in bounded memory, with `now`
/// passed in (`auth.registrations`).
#[derive(Debug)]
pub struct RegistrationLimiter {
    ips: RateTable<IpAddr>,
}

impl RegistrationLimiter {
    /// A limiter with the configured limits.
    pub fn new(config: &RegistrationsConfig) -> Self {
        let entries = usize::try_from(config.entries_max).unwrap_or(usize::MAX).max(1);
        Self { ips: RateTable::new(config.per_ip_max, config.window, entries) }
    }

    /// May this address register now? If so, the registration is counted (taken or not).
    pub fn begin(&mut self, ip: IpAddr, now: Timestamp) -> Result<(), RegistrationBlocked> {
        let key = ip_key(ip);
        if let Some(retry_after) = self.ips.blocked(&key, now) {
            return Err(RegistrationBlocked { retry_after });
        }
        self.ips.fail(key, now);
        Ok(())
    }
}

/// A login refused for too many recent failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many failed logins for this {by}; retry in {}s", retry_after.as_secs().max(1))]
pub struct LoginBlocked {
    /// Which limit: the username's or the client IP's.
    pub by: LimitedBy,
    /// How long until one more attempt is allowed.
    pub retry_after: Duration,
}

/// Which failed-login limit applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitedBy {
    /// Failures for the username.
    Username,
    /// Failures from the client IP (IPv6: its /64).
    Ip,
}

impl fmt::Display for LimitedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Username => "username",
            Self::Ip => "address",
        })
    }
}

/// Failed-login rate limits, per username and per client IP. Each key may fail `max` times in
/// a burst, then once per `window / max` (a GCRA leaky bucket: one timestamp per key). Memory
/// is bounded: at most `entries_max` keys per table; keys whose failures have fully leaked away
/// are dropped first, then those with the fewest failures still counted, so a blocked key is the
/// last to go. Pure: `now` comes in.
#[derive(Debug)]
pub struct LoginLimiter {
    usernames: RateTable<Username>,
    ips: RateTable<IpAddr>,
}

impl LoginLimiter {
    /// A limiter with the configured limits.
    pub fn new(config: &FailedLoginsConfig) -> Self {
        let entries = usize::try_from(config.entries_max).unwrap_or(usize::MAX).max(1);
        Self {
            usernames: RateTable::new(config.per_username_max, config.window, entries),
            ips: RateTable::new(config.per_ip_max, config.window, entries),
        }
    }

    /// May this username try to log in from this IP now? Check before verifying the password.
    pub fn check(
        &self,
        username: &Username,
        ip: IpAddr,
        now: Timestamp,
    ) -> Result<(), LoginBlocked> {
        if let Some(retry_after) = self.ips.blocked(&ip_key(ip), now) {
            return Err(LoginBlocked { by: LimitedBy::Ip, retry_after });
        }
        if let Some(retry_after) = self.usernames.blocked(username, now) {
            return Err(LoginBlocked { by: LimitedBy::Username, retry_after });
        }
        Ok(())
    }

    /// [`LoginLimiter::check`], and if the attempt may go on, counted against the username at
    /// once (under the caller's lock): concurrent attempts on one username cannot all pass the
    /// check before any is counted. Then exactly one of [`LoginLimiter::attempt_failed`] (which
    /// also counts it against the address), [`LoginLimiter::record_success`] or
    /// [`LoginLimiter::attempt_cancelled`] (not decided: the hashing pool was busy, or failed).
    ///
    /// The address is counted when an attempt fails, not when it begins: many people behind
    /// one address (an office's NAT) log in at once, and their attempts in flight are not
    /// failures. A burst of concurrent guesses from one address is bounded by the hashing
    /// queue (`hash_threads + hash_queue_max`, the rest answered busy), then by the limit.
    pub fn begin_attempt(
        &mut self,
        username: &Username,
        ip: IpAddr,
        now: Timestamp,
    ) -> Result<(), LoginBlocked> {
        self.check(username, ip, now)?;
        self.usernames.fail(username.clone(), now);
        Ok(())
    }

    /// An attempt begun with [`LoginLimiter::begin_attempt`] failed: it counts against the
    /// address too.
    pub fn attempt_failed(&mut self, ip: IpAddr, now: Timestamp) {
        self.ips.fail(ip_key(ip), now);
    }

    /// An attempt begun with [`LoginLimiter::begin_attempt`] was not decided: it does not count.
    pub fn attempt_cancelled(&mut self, username: &Username) {
        self.usernames.refund(username);
    }

    /// Records a failed login (wrong password or unknown username).
    pub fn record_failure(&mut self, username: &Username, ip: IpAddr, now: Timestamp) {
        self.ips.fail(ip_key(ip), now);
        self.usernames.fail(username.clone(), now);
    }

    /// An attempt begun with [`LoginLimiter::begin_attempt`] succeeded: that attempt is taken
    /// back, and only it. The failures counted before stay (they leak away with time): the
    /// owner logging in must not hand whoever guesses the password a fresh burst (and the
    /// address's failures stay, so one known password does not reset an address that guesses
    /// others).
    pub fn record_success(&mut self, username: &Username) {
        self.usernames.refund(username);
    }

    /// Keys tracked: (usernames, IPs).
    pub fn len(&self) -> (usize, usize) {
        (self.usernames.entries.len(), self.ips.entries.len())
    }
}

/// The key an address is limited by: IPv4 as is (IPv4-mapped IPv6 as IPv4), IPv6 by its /64,
/// since one host usually holds a whole /64. The master's login and registration limits and the
/// worker's connections per address all count by it.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

#[derive(Debug, Clone, Copy)]
struct RateEntry {
    /// Theoretical arrival time of the next failure, in microseconds.
    tat: i64,
    /// Position in the eviction order: (`tat`, sequence).
    order: (i64, u64),
}

/// A bounded table of per-key failure rates (GCRA). When it is full, the key evicted is the
/// one with the fewest failures still counted (the earliest `tat`), never one blocked while
/// others are not: filling the table with fresh keys cannot hand a blocked key a fresh burst.
#[derive(Debug)]
struct RateTable<K> {
    entries: HashMap<K, RateEntry>,
    /// (`tat`, sequence) -> key: the eviction order, and the leaked keys first.
    order: BTreeMap<(i64, u64), K>,
    sequence: u64,
    emission_micros: i64,
    window_micros: i64,
    entries_max: usize,
}

impl<K: Hash + Eq + Clone> RateTable<K> {
    fn new(max: u32, window: Duration, entries_max: usize) -> Self {
        let window_micros = i64::try_from(window.as_micros()).unwrap_or(i64::MAX).max(1);
        let emission_micros = (window_micros / i64::from(max.max(1))).max(1);
        Self {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            sequence: 0,
            emission_micros,
            window_micros,
            entries_max,
        }
    }

    fn blocked(&self, key: &K, now: Timestamp) -> Option<Duration> {
        let entry = self.entries.get(key)?;
        let ahead = entry.tat.saturating_sub(now.0).saturating_add(self.emission_micros);
        let wait = ahead.saturating_sub(self.window_micros);
        (wait > 0).then(|| Duration::from_micros(u64::try_from(wait).unwrap_or(u64::MAX)))
    }

    fn fail(&mut self, key: K, now: Timestamp) {
        self.drop_leaked(now);
        let tat = match self.entries.get(&key) {
            Some(entry) => entry.tat.max(now.0),
            None => now.0,
        };
        self.set_tat(key.clone(), tat.saturating_add(self.emission_micros));
        // Full: the key with the fewest failures counted goes, but never the one just counted
        // (a table full of blocked keys would otherwise stop counting every new one).
        while self.entries.len() > self.entries_max {
            let Some(least) = self.order.iter().find(|(_, k)| **k != key).map(|(order, _)| *order)
            else {
                break;
            };
            if let Some(evicted) = self.order.remove(&least) {
                self.entries.remove(&evicted);
            }
        }
    }

    /// Sets `key`'s `tat`, keeping the eviction order in step.
    fn set_tat(&mut self, key: K, tat: i64) {
        if let Some(entry) = self.entries.get(&key) {
            self.order.remove(&entry.order);
        }
        self.sequence = self.sequence.wrapping_add(1);
        let order = (tat, self.sequence);
        self.order.insert(order, key.clone());
        self.entries.insert(key, RateEntry { tat, order });
    }

    /// Takes back one failure of `key` (counted ahead of an outcome that was not a failure).
    fn refund(&mut self, key: &K) {
        if let Some(entry) = self.entries.get(key) {
            let tat = entry.tat.saturating_sub(self.emission_micros);
            self.set_tat(key.clone(), tat);
        }
    }

    /// Drops the keys whose failures have all leaked away (`tat` passed): the front of the
    /// order.
    fn drop_leaked(&mut self, now: Timestamp) {
        while let Some(entry) = self.order.first_entry() {
            if entry.key().0 > now.0 {
                break;
            }
            let key = entry.remove();
            self.entries.remove(&key);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000;

    fn cheap() -> AuthConfig {
        AuthConfig {
            argon2: Argon2Config { m_cost_kib: 64, t_cost: 1, p_cost: 1 },
            hash_threads: 2,
            hash_queue_max: 4,
            ..AuthConfig::default()
        }
    }

    fn user(name: &str) -> Username {
        Username::new(name).unwrap()
    }

    #[test]
    fn client_passwords_are_16_to_128_bytes() {
        assert_eq!(ClientPassword::new(&[1; 15]), Err(AuthError::BadPasswordLength(15)));
        assert!(ClientPassword::new(&[1; 16]).is_ok());
        assert!(ClientPassword::new(&[1; 128]).is_ok());
        assert_eq!(ClientPassword::new(&[1; 129]), Err(AuthError::BadPasswordLength(129)));
        assert!(!format!("{:?}", ClientPassword::new(&[b'x'; 16]).unwrap()).contains("xx"));
    }

    #[tokio::test]
    async fn hashes_and_verifies() {
        let hasher = PasswordHasher::new(&cheap()).unwrap();
        let right = ClientPassword::new(&[7; 32]).unwrap();
        let wrong = ClientPassword::new(&[8; 32]).unwrap();
        let stored = hasher.hash(&right).await.unwrap();
        assert!(stored.as_str().starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{}", stored.as_str());
        assert!(hasher.verify(&right, &stored).await.unwrap());
        assert!(!hasher.verify(&wrong, &stored).await.unwrap());
        assert!(!hasher.verify_dummy(&right).await.unwrap());
        // Same password, fresh salt, different string.
        assert_ne!(hasher.hash(&right).await.unwrap(), stored);
        assert!(!hasher.needs_rehash(&stored));
        let other = PasswordHasher::new(&AuthConfig {
            argon2: Argon2Config { m_cost_kib: 128, t_cost: 1, p_cost: 1 },
            ..cheap()
        })
        .unwrap();
        assert!(other.needs_rehash(&stored));
        // The stored hash's own costs are used for verification.
        assert!(other.verify(&right, &stored).await.unwrap());
    }

    #[tokio::test]
    async fn malformed_or_greedy_stored_hashes_are_refused() {
        let hasher = PasswordHasher::new(&cheap()).unwrap();
        let password = ClientPassword::new(&[7; 32]).unwrap();
        let greedy = "$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        for phc in ["!", "$argon2id$v=19$m=nope", greedy] {
            let stored = PasswordHash::new(phc).unwrap();
            assert_eq!(
                hasher.verify(&password, &stored).await,
                Err(AuthError::MalformedHash),
                "{phc}"
            );
        }
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy_at_once() {
        // One thread and a queue of one hold at most two requests: of three submitted
        // together, at least one is refused at once, and every accepted one completes.
        let config = AuthConfig { hash_threads: 1, hash_queue_max: 1, ..cheap() };
        let hasher = PasswordHasher::new(&config).unwrap();
        let password = ClientPassword::new(&[7; 32]).unwrap();
        let pending: Vec<_> = (0..3).map(|_| hasher.hash(&password)).collect();
        let mut results = Vec::new();
        for future in pending {
            results.push(future.await);
        }
        let busy = results.iter().filter(|r| matches!(r, Err(AuthError::Busy))).count();
        let done = results.iter().filter(|r| r.is_ok()).count();
        assert!(busy >= 1, "{results:?}");
        assert!(done >= 1, "{results:?}");
        assert_eq!(busy + done, 3);
        // Once drained, the pool accepts again.
        assert!(hasher.hash(&password).await.is_ok());
    }

    /// A limiter of 3 failures per username and 100 per address a minute.
    fn three_per_username() -> LoginLimiter {
        LoginLimiter::new(&FailedLoginsConfig {
            per_username_max: 3,
            per_ip_max: 100,
            window: Duration::from_secs(60),
            entries_max: 10,
        })
    }

    /// Attempts on one username count from the moment they begin: concurrent attempts cannot
    /// all pass the check before any failed. A success or an undecided attempt takes its count
    /// back; a failure counts against the address too.
    #[test]
    fn concurrent_attempts_count_before_their_outcome() {
        let mut limiter = three_per_username();
        let alice = user("alice");
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Timestamp(1_000 * SECOND);
        for _ in 0..3 {
            assert!(limiter.begin_attempt(&alice, ip, t0).is_ok());
        }
        // Three in flight, none decided: the fourth is refused.
        assert_eq!(limiter.begin_attempt(&alice, ip, t0).unwrap_err().by, LimitedBy::Username);
        // One was not decided (busy): its place comes back.
        limiter.attempt_cancelled(&alice);
        assert!(limiter.begin_attempt(&alice, ip, t0).is_ok());
        // One succeeds: its place comes back, and only its: the two others stay counted.
        limiter.record_success(&alice);
        assert!(limiter.begin_attempt(&alice, ip, t0).is_ok());
        assert_eq!(limiter.begin_attempt(&alice, ip, t0).unwrap_err().by, LimitedBy::Username);
        // No address failure was counted; a failure counts against the address.
        assert_eq!(limiter.len(), (1, 0));
        limiter.attempt_failed(ip, t0);
        assert_eq!(limiter.len(), (1, 1));
    }

    #[test]
    fn limiter_blocks_after_max_failures_per_username() {
        let mut limiter = three_per_username();
        let alice = user("alice");
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Timestamp(1_000 * SECOND);
        for _ in 0..3 {
            assert!(limiter.check(&alice, ip, t0).is_ok());
            limiter.record_failure(&alice, ip, t0);
        }
        let blocked = limiter.check(&alice, ip, t0).unwrap_err();
        assert_eq!(blocked.by, LimitedBy::Username);
        assert_eq!(blocked.retry_after, Duration::from_secs(20));
        // Another username is not affected.
        assert!(limiter.check(&user("bob"), ip, t0).is_ok());
        // One failure leaks away every window / max.
        let later = Timestamp(t0.0 + 20 * SECOND);
        assert!(limiter.check(&alice, ip, later).is_ok());
        limiter.record_failure(&alice, ip, later);
        assert!(limiter.check(&alice, ip, later).is_err());
    }

    #[test]
    fn limiter_blocks_per_ip_and_groups_ipv6_by_64() {
        let config = FailedLoginsConfig {
            per_username_max: 100,
            per_ip_max: 2,
            window: Duration::from_secs(60),
            entries_max: 10,
        };
        let mut limiter = LoginLimiter::new(&config);
        let now = Timestamp(0);
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        limiter.record_failure(&user("u1"), a, now);
        limiter.record_failure(&user("u2"), b, now);
        let blocked = limiter.check(&user("u3"), a, now).unwrap_err();
        assert_eq!(blocked.by, LimitedBy::Ip);
        assert!(limiter.check(&user("u3"), "2001:db9::1".parse().unwrap(), now).is_ok());
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        limiter.record_failure(&user("u4"), v4, now);
        limiter.record_failure(&user("u5"), mapped, now);
        assert!(limiter.check(&user("u6"), v4, now).is_err());
    }

    #[test]
    fn limiter_memory_is_bounded() {
        let config = FailedLoginsConfig {
            per_username_max: 5,
            per_ip_max: 5,
            window: Duration::from_secs(60),
            entries_max: 50,
        };
        let mut limiter = LoginLimiter::new(&config);
        for i in 0..1000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            limiter.record_failure(&user(&format!("u{i}")), ip, Timestamp(i64::from(i)));
        }
        assert_eq!(limiter.len(), (50, 50));
        // The most recent keys are kept.
        let last = user("u999");
        for _ in 0..4 {
            limiter.record_failure(&last, "10.9.9.9".parse().unwrap(), Timestamp(1000));
        }
        assert!(limiter.check(&last, "10.8.8.8".parse().unwrap(), Timestamp(1000)).is_err());
        // Keys whose failures have leaked away are dropped first.
        limiter.record_failure(
            &user("late"),
            "10.7.7.7".parse().unwrap(),
            Timestamp(3600 * SECOND),
        );
        assert_eq!(limiter.len(), (1, 1));
    }

    /// Filling the table with fresh keys does not evict a blocked one: the key evicted is the
    /// one with the fewest failures still counted, so a username blocked after guesses from
    /// many addresses stays blocked however many other usernames are tried.
    #[test]
    fn filling_the_table_does_not_unblock_a_blocked_username() {
        let config = FailedLoginsConfig {
            per_username_max: 5,
            per_ip_max: 1_000_000,
            window: Duration::from_secs(3600),
            entries_max: 3,
        };
        let mut limiter = LoginLimiter::new(&config);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let alice = user("alice");
        for _ in 0..5 {
            limiter.record_failure(&alice, ip, Timestamp(0));
        }
        assert!(limiter.check(&alice, ip, Timestamp(SECOND)).is_err());
        // Many other usernames, failed and attempted (begun then cancelled), later on.
        for i in 0..100 {
            let other = user(&format!("u{i}"));
            let now = Timestamp(SECOND + i64::from(i));
            limiter.record_failure(&other, ip, now);
            limiter.begin_attempt(&other, ip, now).unwrap();
            limiter.attempt_cancelled(&other);
        }
        assert_eq!(limiter.len().0, 3);
        assert!(
            limiter.check(&alice, ip, Timestamp(SECOND + 100)).is_err(),
            "alice got a fresh burst"
        );
    }

    /// A table full of blocked keys still counts a new one: the key evicted is never the one
    /// just counted, so filling the table cannot make a new username (or address) unlimited.
    #[test]
    fn a_table_full_of_blocked_keys_still_counts_a_new_one() {
        let config = FailedLoginsConfig {
            per_username_max: 3,
            per_ip_max: 1_000_000,
            window: Duration::from_secs(3600),
            entries_max: 3,
        };
        let mut limiter = LoginLimiter::new(&config);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for name in ["a", "b", "c"] {
            for _ in 0..10 {
                limiter.record_failure(&user(name), ip, Timestamp(0));
            }
        }
        let bob = user("bob");
        for _ in 0..3 {
            limiter.record_failure(&bob, ip, Timestamp(SECOND));
        }
        assert_eq!(limiter.len().0, 3);
        assert!(limiter.check(&bob, ip, Timestamp(SECOND)).is_err(), "bob was not counted");
    }
}
