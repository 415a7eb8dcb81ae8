//! The master's configuration: one TOML file (`--config`), every key optional with a documented
//! default, so `pt-master` runs with no file at all. `docs/CONFIG.md` lists every key.
//!
//! Loading happens in two steps: [`MasterConfig::from_toml_str`] (serde: unknown keys, bad types,
//! bad durations, bad decimals and bad addresses are refused with the position and key of the
//! problem) and [`MasterConfig::validate`] (ranges and cross-key rules, each error naming its key
//! as a dotted path such as `auth.argon2.m_cost_kib`). [`MasterConfig::load`] does both, plus a
//! few environment overrides (see [`ENV_LISTEN`] and friends).

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use engine::limits::TICKS_PER_INTERVAL_MAX;
use engine::{Cash, Symbol};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// Environment variable overriding `listen`.
pub const ENV_LISTEN: &str = "PT_LISTEN";
/// Environment variable overriding `data_dir`.
pub const ENV_DATA_DIR: &str = "PT_DATA_DIR";
/// Environment variable overriding `update_interval`.
pub const ENV_UPDATE_INTERVAL: &str = "PT_UPDATE_INTERVAL";
/// Default name of the environment variable holding the HTTP price source's API key.
pub const ENV_PRICES_API_KEY_DEFAULT: &str = "PT_PRICES_API_KEY";

/// What is wrong with an API key, if anything: it must be 1 to 256 printable ASCII characters
/// without spaces (it goes into a URL's query).
fn api_key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() || key.len() > 256 {
        Some("must be 1 to 256 bytes")
    } else if !key.bytes().all(|b| b.is_ascii_graphic()) {
        Some("must be printable ASCII without spaces")
    } else {
        None
    }
}

/// What is wrong with a data directory's path, if anything: empty, or only white space (a
/// template's empty value, say), which would make a directory named by spaces.
fn data_dir_problem(dir: &Path) -> Option<&'static str> {
    if dir.as_os_str().is_empty() {
        Some("is empty")
    } else if dir.to_str().is_some_and(|text| text.trim().is_empty()) {
        Some("is only white space")
    } else {
        None
    }
}

/// Largest configuration file read, in bytes.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// Largest argon2 memory cost accepted, in KiB (1 GiB), in the config and in stored hashes.
pub const ARGON2_M_COST_KIB_MAX: u32 = 1024 * 1024;
/// Largest argon2 time cost (passes) accepted, in the config and in stored hashes.
pub const ARGON2_T_COST_MAX: u32 = 64;
/// Largest argon2 parallelism accepted, in the config and in stored hashes.
pub const ARGON2_P_COST_MAX: u32 = 16;
/// Most threads the password hashing pool may have.
pub const HASH_THREADS_MAX: u32 = 64;
/// Most memory the hash threads may need at once (`hash_threads` × `argon2.m_cost_kib`), in
/// KiB: 16 GiB. Each key has its own range; together they could ask for 64 GiB, which would get
/// the master killed at its first burst of logins.
pub const HASH_POOL_KIB_MAX: u64 = 16 * 1024 * 1024;
/// Longest update interval accepted.
pub const UPDATE_INTERVAL_MAX: Duration = Duration::from_secs(24 * 60 * 60);
/// Most retries of one HTTP price request.
pub const HTTP_RETRIES_MAX: u32 = 10;
/// Largest HTTP price response accepted, in bytes, as a bound on `prices.response_bytes_max`.
pub const HTTP_RESPONSE_BYTES_MAX: u32 = 16 * 1024 * 1024;
/// Most in-memory log entries (`log.memory_entries_max` is checked against it).
pub const LOG_MEMORY_ENTRIES_MAX: u32 = 10_000_000;
/// Most memory the in-memory log may hold, as `log.memory_entries_max` ×
/// `log.entry_bytes_max` (an entry's message is cut at `entry_bytes_max`, its allocation with
/// it; its time, level and place add a few dozen bytes): a crash dump's memory must not be
/// what kills the process.
pub const LOG_MEMORY_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// Room a log line takes besides its message (time, level, place, target), at most.
const LOG_LINE_OVERHEAD_BYTES: u64 = 1024;

/// What is wrong with `log.file_bytes_max` beside `log.entry_bytes_max`, if anything: a file
/// smaller than one whole line would be rotated at every line, keeping two lines in all. The
/// master's and the worker's `[log]` share it.
pub fn log_file_problem(file_bytes_max: u64, entry_bytes_max: u32) -> Option<String> {
    let line = u64::from(entry_bytes_max) + LOG_LINE_OVERHEAD_BYTES;
    (file_bytes_max < line).then(|| {
        format!(
            "must be at least log.entry_bytes_max + {LOG_LINE_OVERHEAD_BYTES} ({line}): room \
             for one whole line"
        )
    })
}

/// What is wrong with the in-memory log's bound (`log.memory_entries_max` ×
/// `log.entry_bytes_max`), if anything; the master's and the worker's `[log]` share it.
pub fn log_memory_problem(memory_entries_max: u32, entry_bytes_max: u32) -> Option<String> {
    let bytes = u64::from(memory_entries_max) * u64::from(entry_bytes_max);
    (bytes > LOG_MEMORY_BYTES_MAX).then(|| {
        format!(
            "log.memory_entries_max × log.entry_bytes_max ({memory_entries_max} × \
             {entry_bytes_max}) must be at most {LOG_MEMORY_BYTES_MAX} bytes of memory"
        )
    })
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file is larger than [`CONFIG_FILE_BYTES_MAX`].
    #[error(
        "config file {path} is {bytes} bytes or more, at most {CONFIG_FILE_BYTES_MAX} are allowed"
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (for a pipe or a device, what was read before the limit stopped it).
        bytes: u64,
    },
    /// Not valid TOML, an unknown key, or a value of the wrong type or format. The message
    /// names the line, the key and the problem.
    #[error("config file {origin}: {message}")]
    Parse {
        /// The file, or `<text>` for a string.
        origin: String,
        /// The parser's message.
        message: String,
    },
    /// A value out of range or inconsistent with another.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// The dotted key, e.g. `auth.argon2.m_cost_kib`.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// An environment override that does not parse.
    #[error("environment variable {var}: {reason}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.to_owned(), reason: reason.into() }
}

/// The whole configuration of the master.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MasterConfig {
    /// Address workers connect to. Default `0.0.0.0:2048`.
    pub listen: SocketAddr,
    /// Directory of the journal, the log file and crash dumps. Default `./pt-data`.
    pub data_dir: PathBuf,
    /// Time between two price updates, i.e. two settlements (spec 2.3.4). Default `1s`.
    #[serde(deserialize_with = "duration")]
    pub update_interval: Duration,
    /// Cash each new account starts with. Default `100000`.
    #[serde(deserialize_with = "cash")]
    pub initial_cash: Cash,
    /// Assets to retrieve (spec 2.3.1). Empty: every symbol of the recorded price file (the HTTP
    /// source needs an explicit list).
    #[serde(deserialize_with = "symbols")]
    pub assets: Vec<Symbol>,
    /// Where prices come from.
    pub prices: PriceSourceConfig,
    /// Password hashing and login limits.
    pub auth: AuthConfig,
    /// Session lifetimes and bounds.
    pub sessions: SessionsConfig,
    /// Journal settings.
    pub journal: JournalConfig,
    /// The log system (spec 2.3.3, 3.1.4).
    pub log: LogConfig,
    /// Bounds on connections and queues.
    pub limits: LimitsConfig,
    /// Registered workers (spec 2.4.5); empty means no worker can connect.
    pub workers: Vec<WorkerConfig>,
}

impl Default for MasterConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 2048)),
            data_dir: PathBuf::from("./pt-data"),
            update_interval: Duration::from_secs(1),
            initial_cash: Cash::from_units(100_000).unwrap_or(Cash::ZERO),
            assets: Vec::new(),
            prices: PriceSourceConfig::default(),
            auth: AuthConfig::default(),
            sessions: SessionsConfig::default(),
            journal: JournalConfig::default(),
            log: LogConfig::default(),
            limits: LimitsConfig::default(),
            workers: Vec::new(),
        }
    }
}

/// The price source (spec 3.1.6), chosen by the `source` key of the `[prices]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "PricesTable")]
pub enum PriceSourceConfig {
    /// Recorded prices from a CSV file, replayed one period per interval, looping forever.
    Recorded(RecordedSourceConfig),
    /// Live quotes over HTTP (Alpha Vantage `GLOBAL_QUOTE`).
    Http(HttpSourceConfig),
}

impl Default for PriceSourceConfig {
    fn default() -> Self {
        Self::Recorded(RecordedSourceConfig::default())
    }
}

/// Which price source a `[prices]` table configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SourceKind {
    Recorded,
    Http,
}

/// The `[prices]` table as written: one flat table whose `source` picks the source. It is read
/// key by key, not as serde's internally tagged enum, which buffers the whole table first and
/// then reports a bad value at the `[prices]` line instead of at its key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PricesTable {
    source: SourceKind,
    file: Option<PathBuf>,
    splits: Option<PathBuf>,
    base_url: Option<String>,
    api_key: Option<ApiKey>,
    api_key_env: Option<String>,
    calls_per_minute_max: Option<u32>,
    #[serde(default, deserialize_with = "optional_duration")]
    timeout: Option<Duration>,
    retries_max: Option<u32>,
    #[serde(default, deserialize_with = "optional_duration")]
    retry_backoff: Option<Duration>,
    response_bytes_max: Option<u32>,
    #[serde(default, deserialize_with = "optional_duration")]
    quote_age_max: Option<Duration>,
}

impl TryFrom<PricesTable> for PriceSourceConfig {
    type Error = String;

    fn try_from(table: PricesTable) -> Result<Self, String> {
        let PricesTable {
            source,
            file,
            splits,
            base_url,
            api_key,
            api_key_env,
            calls_per_minute_max,
            timeout,
            retries_max,
            retry_backoff,
            response_bytes_max,
            quote_age_max,
        } = table;
        match source {
            SourceKind::Recorded => {
                let http_keys = [
                    ("base_url", base_url.is_some()),
                    ("api_key", api_key.is_some()),
                    ("api_key_env", api_key_env.is_some()),
                    ("calls_per_minute_max", calls_per_minute_max.is_some()),
                    ("timeout", timeout.is_some()),
                    ("retries_max", retries_max.is_some()),
                    ("retry_backoff", retry_backoff.is_some()),
                    ("response_bytes_max", response_bytes_max.is_some()),
                    ("quote_age_max", quote_age_max.is_some()),
                ];
                match http_keys.iter().find(|(_, given)| *given) {
                    Some((key, _)) => Err(format!(
                        "prices.{key} is a setting of source = \"http\", not of \"recorded\" \
                         (whose other keys are `file` and `splits`)"
                    )),
                    None => Ok(Self::Recorded(RecordedSourceConfig { file, splits })),
                }
            }
            SourceKind::Http => {
                let recorded_keys = [("file", file.is_some()), ("splits", splits.is_some())];
                if let Some((key, _)) = recorded_keys.iter().find(|(_, given)| *given) {
                    return Err(format!(
                        "prices.{key} is a setting of source = \"recorded\", not of \"http\""
                    ));
                }
                let default = HttpSourceConfig::default();
                Ok(Self::Http(HttpSourceConfig {
                    base_url: base_url.unwrap_or(default.base_url),
                    api_key,
                    api_key_env: api_key_env.unwrap_or(default.api_key_env),
                    api_key_from_env: false,
                    calls_per_minute_max: calls_per_minute_max
                        .unwrap_or(default.calls_per_minute_max),
                    timeout: timeout.unwrap_or(default.timeout),
                    retries_max: retries_max.unwrap_or(default.retries_max),
                    retry_backoff: retry_backoff.unwrap_or(default.retry_backoff),
                    response_bytes_max: response_bytes_max.unwrap_or(default.response_bytes_max),
                    quote_age_max: quote_age_max.unwrap_or(default.quote_age_max),
                }))
            }
        }
    }
}

/// Settings of the recorded price source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordedSourceConfig {
    /// A price file in the recorded format; `None` uses the shipped file
    /// (`data/stocks-2000-2013.csv`, embedded in the binary).
    pub file: Option<PathBuf>,
    /// A split list (`time,symbol,ratio`) the prices are adjusted for; `None` uses the shipped
    /// list (`data/splits-2000-2013.csv`) with the shipped file, and no list with another file.
    pub splits: Option<PathBuf>,
}

/// An API key. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key, for building a request URL only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Settings of the HTTP price source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSourceConfig {
    /// Base URL; requests go to `{base_url}/query`. Default `https://www.alphavantage.co`.
    pub base_url: String,
    /// The API key. Prefer `api_key_env`: a key in a file is easy to leak.
    pub api_key: Option<ApiKey>,
    /// Environment variable read for the key when `api_key` is absent. Default
    /// `PT_PRICES_API_KEY`.
    pub api_key_env: String,
    /// Whether `api_key` was read from `api_key_env` (set by the loading), so that a bad key
    /// is reported against the variable, not against a file key that does not exist.
    pub api_key_from_env: bool,
    /// Most requests per minute (the provider's quota). Default 5.
    pub calls_per_minute_max: u32,
    /// Timeout of one request. Default `10s`.
    pub timeout: Duration,
    /// Retries of a failed request (server error, timeout, connection error). Default 2.
    pub retries_max: u32,
    /// Wait before the first retry; doubled before each next one. Default `500ms`.
    pub retry_backoff: Duration,
    /// Largest response body accepted, in bytes. Default 65536.
    pub response_bytes_max: u32,
    /// Oldest quote used: one whose latest trading day started longer ago than this is not
    /// traded on (a delisted or suspended symbol's last close). Default `7d` (a long weekend
    /// and a holiday fit).
    pub quote_age_max: Duration,
}

impl Default for HttpSourceConfig {
    fn default() -> Self {
        Self {
            base_url: "https://www.alphavantage.co".to_owned(),
            api_key: None,
            api_key_env: ENV_PRICES_API_KEY_DEFAULT.to_owned(),
            api_key_from_env: false,
            calls_per_minute_max: 5,
            timeout: Duration::from_secs(10),
            retries_max: 2,
            retry_backoff: Duration::from_millis(500),
            response_bytes_max: 64 * 1024,
            quote_age_max: Duration::from_secs(7 * 86_400),
        }
    }
}

/// Password hashing and failed-login limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// argon2id parameters.
    pub argon2: Argon2Config,
    /// Threads hashing passwords, off the async runtime. Default 2.
    pub hash_threads: u32,
    /// Hash requests that may wait for a thread; beyond, logins are refused as busy.
    /// Default 64.
    pub hash_queue_max: u32,
    /// Failed-login rate limits.
    pub failed_logins: FailedLoginsConfig,
    /// Registration rate limits.
    pub registrations: RegistrationsConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            argon2: Argon2Config::default(),
            hash_threads: 2,
            hash_queue_max: 64,
            failed_logins: FailedLoginsConfig::default(),
            registrations: RegistrationsConfig::default(),
        }
    }
}

/// Registration rate limits: each client address may register `per_ip_max` accounts per
/// `window` in a burst, then one every `window / per_ip_max`. Accounts are never deleted and
/// each costs an argon2 hash: without a limit, one address could fill `limits.accounts_max`
/// for good, or ask whether any username exists as fast as it likes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationsConfig {
    /// Registrations per client IP (IPv6: per /64) per window, taken or not. Default 100: a
    /// class behind one address registers at once.
    pub per_ip_max: u32,
    /// The window. Default `1h`.
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    /// Addresses tracked; those whose registrations have leaked away are forgotten first, then
    /// those with the fewest still counted (never the one just counted). Default 100000.
    pub entries_max: u32,
}

impl Default for RegistrationsConfig {
    fn default() -> Self {
        Self { per_ip_max: 100, window: Duration::from_secs(60 * 60), entries_max: 100_000 }
    }
}

/// argon2id parameters; the defaults are OWASP's (m=19456 KiB, t=2, p=1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Argon2Config {
    /// Memory cost, in KiB.
    pub m_cost_kib: u32,
    /// Time cost (passes).
    pub t_cost: u32,
    /// Parallelism (lanes).
    pub p_cost: u32,
}

impl Default for Argon2Config {
    fn default() -> Self {
        Self { m_cost_kib: 19_456, t_cost: 2, p_cost: 1 }
    }
}

/// Failed-login rate limits: each key may fail `*_max` times per `window`, then waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailedLoginsConfig {
    /// Failures allowed per username per window. Default 5.
    pub per_username_max: u32,
    /// Failures allowed per client IP (IPv6: per /64) per window. Default 20.
    pub per_ip_max: u32,
    /// The window. Default `15m`.
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    /// Usernames and IPs tracked, each; those whose failures have leaked away are forgotten
    /// first, then those with the fewest still counted (never the one just counted), so a
    /// blocked key is the last to go. Default 100000.
    pub entries_max: u32,
}

impl Default for FailedLoginsConfig {
    fn default() -> Self {
        Self {
            per_username_max: 5,
            per_ip_max: 20,
            window: Duration::from_secs(15 * 60),
            entries_max: 100_000,
        }
    }
}

/// Session lifetimes and bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// An expirable session ends this long after its last use. Default `30m`.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// A remembered session ends this long after its creation. Default `30d`.
    #[serde(deserialize_with = "duration")]
    pub remembered_lifetime: Duration,
    /// Most live sessions in total. Default 100000.
    pub sessions_max: u32,
    /// Most live sessions per account; a new one ends the least recently used. Default 16.
    pub per_account_max: u32,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30 * 60),
            remembered_lifetime: Duration::from_secs(30 * 24 * 60 * 60),
            sessions_max: 100_000,
            per_account_max: 16,
        }
    }
}

/// Largest `journal.cache_bytes`.
const JOURNAL_CACHE_BYTES_MAX: u64 = 64 << 30;

/// Journal settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Write a state snapshot every this many events. Default 1,000,000: a snapshot encodes the
    /// whole state (every account's history), a restart replays at most this many events
    /// (about a second), and one snapshot is written at a time.
    pub snapshot_every_events: u64,
    /// Most memory redb may use to cache the journal's pages, in bytes. Default 16 MiB: the
    /// master reads back little (docs/PERFORMANCE.md). 0 turns the cache off.
    pub cache_bytes: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self { snapshot_every_events: 1_000_000, cache_bytes: 16 * 1024 * 1024 }
    }
}

/// The log system.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Entries kept in memory for a crash dump (spec 2.3.3). Default 1000.
    pub memory_entries_max: u32,
    /// Log file; a relative path is inside `data_dir`. Default `master.log`.
    pub file: PathBuf,
    /// Size at which the log file is renamed to `<file>.1` and a new one started.
    /// Default 67108864 (64 MiB).
    pub file_bytes_max: u64,
    /// Longest entry kept, in bytes; longer messages are cut. Default 4096.
    pub entry_bytes_max: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            memory_entries_max: 1000,
            file: PathBuf::from("master.log"),
            file_bytes_max: 64 * 1024 * 1024,
            entry_bytes_max: 4096,
        }
    }
}

/// Bounds on connections and queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Worker connections at once. Default 64.
    pub worker_connections_max: u32,
    /// Orders queued for one interval, all accounts together. Default 100000.
    pub orders_per_interval_max: u32,
    /// Orders one account may queue for one interval. Default 100.
    pub orders_per_account_per_interval_max: u32,
    /// Accounts that may be registered. Default 1000000.
    pub accounts_max: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            worker_connections_max: 64,
            orders_per_interval_max: 100_000,
            orders_per_account_per_interval_max: 100,
            accounts_max: 1_000_000,
        }
    }
}

/// A registered worker (spec 2.4.5): just the data; verifying it is the worker manager's job.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// The worker's UUID.
    pub id: uuid::Uuid,
    /// A name for logs and the server list. Default: the UUID.
    #[serde(default)]
    pub name: Option<String>,
    /// Path of the worker's public OpenPGP certificate.
    pub cert: PathBuf,
    /// Addresses the worker may connect from: IPs or CIDR ranges (`10.0.0.0/8`, `::1`).
    pub allowed_ips: Vec<IpNet>,
}

/// An IP address range in CIDR notation; a bare address is a range of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix_len: u8,
}

/// Why a CIDR range does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR range (e.g. 10.0.0.0/8, 2001:db8::/32, 127.0.0.1)")]
pub struct IpNetError(String);

impl IpNet {
    /// A range from an address and a prefix length (at most 32 for IPv4, 128 for IPv6).
    pub fn new(addr: IpAddr, prefix_len: u8) -> Option<Self> {
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        (prefix_len <= bits).then_some(Self { addr, prefix_len })
    }

    /// The address as written.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// True when the range is one address (`/32`, `/128`).
    pub fn is_single_address(&self) -> bool {
        self.prefix_len == if self.addr.is_ipv4() { 32 } else { 128 }
    }

    /// True when `ip` is in the range. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), as a
    /// peer's address or as the range's (as a dual-stack listener logs a peer), is compared as
    /// the IPv4 address: `::ffff:10.0.0.0/104` is `10.0.0.0/8`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (net_addr, prefix_len) = match self.addr {
            IpAddr::V6(v6) if self.prefix_len >= 96 => v6
                .to_ipv4_mapped()
                .map_or((self.addr, self.prefix_len), |v4| (IpAddr::V4(v4), self.prefix_len - 96)),
            addr => (addr, self.prefix_len),
        };
        match (net_addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(u128::from(u32::from(net)), u128::from(u32::from(ip)), 32, prefix_len)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), 128, prefix_len)
            }
            _ => false,
        }
    }
}

/// True when the top `prefix_len` of `width` bits of `a` and `b` agree.
fn prefix_eq(a: u128, b: u128, width: u32, prefix_len: u8) -> bool {
    let prefix_len = u32::from(prefix_len).min(width);
    let shift = width - prefix_len;
    if shift >= 128 { true } else { (a >> shift) == (b >> shift) }
}

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || IpNetError(text.to_owned());
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let full = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
            None => full,
        };
        Self::new(addr, prefix_len).ok_or_else(bad)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// Makes every argument of `command` (and of its subcommands) that reads an environment
/// variable treat that variable as unset when it is set but empty, so that `PT_MASTER= pt ...`
/// means the default, as in most command-line tools, and not an empty address. clap itself takes
/// an empty value as given.
pub fn empty_env_as_unset(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| {
            let empty = arg.get_env().and_then(std::env::var_os).is_some_and(|v| v.is_empty());
            if empty { arg.env(None::<&'static str>) } else { arg }
        })
        .mut_subcommands(empty_env_as_unset)
}

/// Parses a duration written for humans (`1s`, `500ms`, `30m`, `30d`, `1h 30m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("{text:?} is not a duration ({e}); write e.g. \"500ms\", \"1s\", \"30m\", \"30d\"")
    })
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(de::Error::custom)
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn cash<'de, D: Deserializer<'de>>(d: D) -> Result<Cash, D::Error> {
    struct CashVisitor;
    impl Visitor<'_> for CashVisitor {
        type Value = Cash;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a decimal string such as \"100000\" or \"2500.50\", or an integer")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<Cash, E> {
            Cash::parse(text).map_err(|e| E::custom(format!("{text:?} is not an amount: {e}")))
        }
        fn visit_u64<E: de::Error>(self, units: u64) -> Result<Cash, E> {
            Cash::from_units(units).ok_or_else(|| E::custom("amount is too large"))
        }
        fn visit_i64<E: de::Error>(self, units: i64) -> Result<Cash, E> {
            let units = u64::try_from(units).map_err(|_| E::custom("amount is negative"))?;
            self.visit_u64(units)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Cash, E> {
            Err(E::custom("write decimal amounts as a string, e.g. \"2500.50\", never a float"))
        }
    }
    d.deserialize_any(CashVisitor)
}

fn symbols<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Symbol>, D::Error> {
    let texts = Vec::<String>::deserialize(d)?;
    texts
        .iter()
        .map(|t| Symbol::new(t).map_err(|e| de::Error::custom(format!("asset {t:?}: {e}"))))
        .collect()
}

impl MasterConfig {
    /// Loads the configuration: the file at `path` (or all defaults without one), then the
    /// environment overrides ([`ENV_LISTEN`], [`ENV_DATA_DIR`], [`ENV_UPDATE_INTERVAL`], and
    /// the HTTP source's `api_key_env`), then [`validate`](Self::validate).
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(path, |name| std::env::var(name).ok())
    }

    /// [`load`](Self::load) with the environment given as a function (for tests).
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let config = Self::load_unchecked_with_env(path, env)?;
        config.validate()?;
        Ok(config)
    }

    /// [`load`](Self::load) without [`validate`](Self::validate): for a caller that changes
    /// the configuration further (command-line flags) and validates the result once, or that
    /// needs only part of it (`pt-master worker ...` needs `data_dir` and `[[workers]]`, not a
    /// price source's API key).
    pub fn load_unchecked(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_unchecked_with_env(path, |name| std::env::var(name).ok())
    }

    fn load_unchecked_with_env(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(path) => {
                Self::from_toml_str(&read_config_file(path)?, &path.display().to_string())?
            }
            None => Self::default(),
        };
        config.apply_env(env)?;
        Ok(config)
    }

    /// Parses TOML text (no environment, no validation). `origin` names the text in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text)
            .map_err(|e| ConfigError::Parse { origin: origin.to_owned(), message: e.to_string() })
    }

    /// Applies the environment overrides. A variable set but empty counts as unset.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let env = |name: &str| env(name).filter(|value| !value.is_empty());
        let env_error =
            |var: &str, reason: String| ConfigError::Env { var: var.to_owned(), reason };
        if let Some(text) = env(ENV_LISTEN) {
            self.listen = text.trim().parse().map_err(|_| {
                env_error(ENV_LISTEN, format!("{text:?} is not an address like 0.0.0.0:2048"))
            })?;
        }
        if let Some(text) = env(ENV_DATA_DIR) {
            // Named here: the file's `data_dir` is not what is wrong.
            if let Some(problem) = data_dir_problem(Path::new(&text)) {
                return Err(env_error(ENV_DATA_DIR, problem.to_owned()));
            }
            self.data_dir = PathBuf::from(text);
        }
        if let Some(text) = env(ENV_UPDATE_INTERVAL) {
            self.update_interval =
                parse_duration(&text).map_err(|reason| env_error(ENV_UPDATE_INTERVAL, reason))?;
        }
        if let PriceSourceConfig::Http(http) = &mut self.prices
            && http.api_key.is_none()
            && !http.api_key_env.is_empty()
            && let Some(key) = env(&http.api_key_env)
        {
            // Checked with the rest (`validate`), which only the server runs: `--prices FILE`
            // and the worker commands do not need the key.
            http.api_key = Some(ApiKey::new(key));
            http.api_key_from_env = true;
        }
        Ok(())
    }

    /// Checks ranges and cross-key rules; the error names the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.update_interval < Duration::from_millis(1) {
            return Err(invalid("update_interval", "must be at least 1ms"));
        }
        if self.update_interval > UPDATE_INTERVAL_MAX {
            return Err(invalid("update_interval", "must be at most 1 day"));
        }
        if self.initial_cash.is_zero() {
            return Err(invalid("initial_cash", "must be more than zero"));
        }
        if let Some(problem) = data_dir_problem(&self.data_dir) {
            return Err(invalid("data_dir", problem));
        }
        let mut seen = BTreeSet::new();
        if let Some(dup) = self.assets.iter().find(|s| !seen.insert(**s)) {
            return Err(invalid("assets", format!("{dup} is listed twice")));
        }
        if self.assets.len() > TICKS_PER_INTERVAL_MAX {
            return Err(invalid("assets", format!("at most {TICKS_PER_INTERVAL_MAX} assets")));
        }
        match &self.prices {
            PriceSourceConfig::Recorded(recorded) => {
                if recorded.file.as_ref().is_some_and(|f| f.as_os_str().is_empty()) {
                    return Err(invalid("prices.file", "is empty"));
                }
                if recorded.splits.as_ref().is_some_and(|f| f.as_os_str().is_empty()) {
                    return Err(invalid("prices.splits", "is empty"));
                }
            }
            PriceSourceConfig::Http(http) => {
                http.validate()?;
                if self.assets.is_empty() {
                    return Err(invalid("assets", "the http price source needs a list of assets"));
                }
            }
        }
        self.auth.validate()?;
        self.sessions.validate()?;
        if self.journal.snapshot_every_events == 0 {
            return Err(invalid("journal.snapshot_every_events", "must be at least 1"));
        }
        if self.journal.cache_bytes > JOURNAL_CACHE_BYTES_MAX {
            return Err(invalid("journal.cache_bytes", "must be at most 64 GiB"));
        }
        self.log.validate()?;
        self.limits.validate()?;
        self.validate_workers()
    }

    /// Checks that the files the configuration names exist (`workers[i].cert`, `prices.file`,
    /// `prices.splits`), so that a wrong path is a configuration error naming its key before
    /// anything starts, not a failure after the data directory and the journal were set up.
    /// Kept apart from [`validate`](Self::validate), which reads no file.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        let missing = |key: &str, path: &Path| {
            (!path.is_file()).then(|| invalid(key, format!("no file at {}", path.display())))
        };
        if let PriceSourceConfig::Recorded(recorded) = &self.prices {
            let files = [("prices.file", &recorded.file), ("prices.splits", &recorded.splits)];
            for (key, path) in files {
                if let Some(err) = path.as_deref().and_then(|path| missing(key, path)) {
                    return Err(err);
                }
            }
        }
        for (i, worker) in self.workers.iter().enumerate() {
            if let Some(err) = missing(&format!("workers[{i}].cert"), &worker.cert) {
                return Err(err);
            }
        }
        Ok(())
    }

    /// The checks `pt-master worker ...` needs: `data_dir` and the `[[workers]]` entries, not
    /// the settings only the server uses (a price source's API key, say).
    pub fn validate_for_admin(&self) -> Result<(), ConfigError> {
        if let Some(problem) = data_dir_problem(&self.data_dir) {
            return Err(invalid("data_dir", problem));
        }
        self.validate_workers()
    }

    fn validate_workers(&self) -> Result<(), ConfigError> {
        let mut ids = BTreeSet::new();
        for (i, worker) in self.workers.iter().enumerate() {
            if worker.id.is_nil() {
                return Err(invalid(&format!("workers[{i}].id"), "the nil UUID is not a worker"));
            }
            if !ids.insert(worker.id) {
                return Err(invalid(&format!("workers[{i}].id"), format!("{} twice", worker.id)));
            }
            if worker.cert.as_os_str().is_empty() {
                return Err(invalid(&format!("workers[{i}].cert"), "is empty"));
            }
            if worker.allowed_ips.is_empty() {
                return Err(invalid(
                    &format!("workers[{i}].allowed_ips"),
                    "is empty; list addresses or ranges (\"0.0.0.0/0\" allows any IPv4)",
                ));
            }
            if worker.name.as_ref().is_some_and(|n| n.is_empty() || n.len() > 64) {
                return Err(invalid(&format!("workers[{i}].name"), "must be 1 to 64 bytes"));
            }
        }
        Ok(())
    }

    /// The log file's path: `log.file`, inside `data_dir` when relative.
    pub fn log_file_path(&self) -> PathBuf {
        self.data_dir.join(&self.log.file)
    }

    /// The logbook's settings (for [`crate::logbook::init_tracing`]).
    pub fn logbook_config(&self) -> crate::logbook::LogbookConfig {
        crate::logbook::LogbookConfig {
            memory_entries_max: usize::try_from(self.log.memory_entries_max).unwrap_or(usize::MAX),
            file: Some(self.log_file_path()),
            file_bytes_max: self.log.file_bytes_max,
            entry_bytes_max: usize::try_from(self.log.entry_bytes_max).unwrap_or(usize::MAX),
        }
    }
}

/// Creates a data directory (and its missing parents) readable by its owner only (mode 0700 on
/// Unix): it holds the journal, whose accounts carry every user's email and password hash, and
/// logs. A directory that exists already is left as it is.
pub fn create_data_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| {
        // "File exists" for a path that is a file says nothing useful.
        if dir.exists() && !dir.is_dir() {
            std::io::Error::new(std::io::ErrorKind::AlreadyExists, "it is a file, not a directory")
        } else {
            e
        }
    })
}

/// Reads a configuration file of at most [`CONFIG_FILE_BYTES_MAX`] bytes (the worker reads its
/// own with this too).
pub fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    let read_error = |source| ConfigError::Read { path: path.to_owned(), source };
    match read_text_bounded(path, CONFIG_FILE_BYTES_MAX).map_err(read_error)? {
        Ok(text) => Ok(text),
        Err(bytes) => Err(ConfigError::TooLarge { path: path.to_owned(), bytes }),
    }
}

/// Reads the whole UTF-8 file at `path` if it holds at most `bytes_max` bytes; when it holds
/// more, `Err` of its size (at least `bytes_max + 1`). Bounded by the read itself, not by the
/// file's length, so a FIFO (`--config <(...)`), a device (`/dev/zero`, whose length reads 0) or
/// a file growing meanwhile cannot make it read without end.
pub fn read_text_bounded(path: &Path, bytes_max: u64) -> std::io::Result<Result<String, u64>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let length = file.metadata()?.len();
    if length > bytes_max {
        return Ok(Err(length));
    }
    let mut bytes = Vec::new();
    file.take(bytes_max.saturating_add(1)).read_to_end(&mut bytes)?;
    let read = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if read > bytes_max {
        // Too large, whatever its last (perhaps cut) character.
        return Ok(Err(read.max(length)));
    }
    String::from_utf8(bytes)
        .map(Ok)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

impl HttpSourceConfig {
    /// Checks the HTTP source's settings; the key must be present by now.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match reqwest::Url::parse(&self.base_url) {
            // A fragment would swallow the `/query` path appended to it; user info would send
            // a password with every request.
            Ok(url)
                if matches!(url.scheme(), "http" | "https")
                    && url.query().is_none()
                    && url.fragment().is_none()
                    && url.username().is_empty()
                    && url.password().is_none() => {}
            _ => {
                return Err(invalid(
                    "prices.base_url",
                    format!(
                        "{:?} is not an http(s) URL without a query, a fragment or user info",
                        self.base_url
                    ),
                ));
            }
        }
        match &self.api_key {
            None if self.api_key_env.is_empty() => {
                return Err(invalid("prices.api_key", "missing (and api_key_env is empty)"));
            }
            None => {
                return Err(invalid(
                    "prices.api_key",
                    format!("missing; set it or the environment variable {}", self.api_key_env),
                ));
            }
            Some(key) => {
                if let Some(problem) = api_key_problem(&key.0) {
                    // A key read from a file with `$(...)` loses its line break; one from an
                    // environment file may keep it, as may a key written in the file.
                    let ending = if key.0.ends_with(|c: char| c.is_ascii_whitespace()) {
                        " (it ends with a space or a line break)"
                    } else {
                        ""
                    };
                    let reason = format!("the key {problem}{ending}");
                    if self.api_key_from_env {
                        return Err(ConfigError::Env { var: self.api_key_env.clone(), reason });
                    }
                    return Err(invalid("prices.api_key", reason));
                }
            }
        }
        if self.calls_per_minute_max == 0 {
            return Err(invalid("prices.calls_per_minute_max", "must be at least 1"));
        }
        if self.timeout.is_zero() {
            return Err(invalid("prices.timeout", "must be more than zero"));
        }
        if self.retries_max > HTTP_RETRIES_MAX {
            return Err(invalid("prices.retries_max", format!("at most {HTTP_RETRIES_MAX}")));
        }
        // Retries back to back would spend the provider's call budget at once; the wait is
        // capped at 30 s anyway.
        if !(Duration::from_millis(10)..=Duration::from_secs(30)).contains(&self.retry_backoff) {
            return Err(invalid("prices.retry_backoff", "must be 10ms to 30s"));
        }
        if self.quote_age_max < Duration::from_secs(86_400) {
            // A quote's time is its trading day at 00:00 UTC: a day old by its evening.
            return Err(invalid("prices.quote_age_max", "must be at least 1 day"));
        }
        if !(1024..=HTTP_RESPONSE_BYTES_MAX).contains(&self.response_bytes_max) {
            return Err(invalid(
                "prices.response_bytes_max",
                format!("must be 1024 to {HTTP_RESPONSE_BYTES_MAX}"),
            ));
        }
        Ok(())
    }
}

impl AuthConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.argon2.validate()?;
        if !(1..=HASH_THREADS_MAX).contains(&self.hash_threads) {
            return Err(invalid("auth.hash_threads", format!("must be 1 to {HASH_THREADS_MAX}")));
        }
        let pool_kib = u64::from(self.hash_threads) * u64::from(self.argon2.m_cost_kib);
        if pool_kib > HASH_POOL_KIB_MAX {
            return Err(invalid(
                "auth.hash_threads",
                format!(
                    "{} threads of {} KiB each (auth.argon2.m_cost_kib) would need {} MiB at \
                     once; at most {} MiB",
                    self.hash_threads,
                    self.argon2.m_cost_kib,
                    pool_kib / 1024,
                    HASH_POOL_KIB_MAX / 1024
                ),
            ));
        }
        if !(1..=1_000_000).contains(&self.hash_queue_max) {
            return Err(invalid("auth.hash_queue_max", "must be 1 to 1000000"));
        }
        let limits = &self.failed_logins;
        if limits.per_username_max == 0 {
            return Err(invalid("auth.failed_logins.per_username_max", "must be at least 1"));
        }
        if limits.per_ip_max == 0 {
            return Err(invalid("auth.failed_logins.per_ip_max", "must be at least 1"));
        }
        if limits.window < Duration::from_secs(1) {
            return Err(invalid("auth.failed_logins.window", "must be at least 1s"));
        }
        if limits.entries_max == 0 {
            return Err(invalid("auth.failed_logins.entries_max", "must be at least 1"));
        }
        let registrations = &self.registrations;
        if registrations.per_ip_max == 0 {
            return Err(invalid("auth.registrations.per_ip_max", "must be at least 1"));
        }
        if registrations.window < Duration::from_secs(1) {
            return Err(invalid("auth.registrations.window", "must be at least 1s"));
        }
        if registrations.entries_max == 0 {
            return Err(invalid("auth.registrations.entries_max", "must be at least 1"));
        }
        Ok(())
    }
}

impl Argon2Config {
    /// Checks the parameters against argon2's rules and this server's caps.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(8..=ARGON2_M_COST_KIB_MAX).contains(&self.m_cost_kib) {
            return Err(invalid(
                "auth.argon2.m_cost_kib",
                format!("must be 8 to {ARGON2_M_COST_KIB_MAX}"),
            ));
        }
        if !(1..=ARGON2_T_COST_MAX).contains(&self.t_cost) {
            return Err(invalid("auth.argon2.t_cost", format!("must be 1 to {ARGON2_T_COST_MAX}")));
        }
        if !(1..=ARGON2_P_COST_MAX).contains(&self.p_cost) {
            return Err(invalid("auth.argon2.p_cost", format!("must be 1 to {ARGON2_P_COST_MAX}")));
        }
        if self.m_cost_kib < 8 * self.p_cost {
            return Err(invalid("auth.argon2.m_cost_kib", "must be at least 8 * p_cost"));
        }
        Ok(())
    }
}

impl SessionsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        // Durations are kept in i64 microseconds alongside timestamps.
        let year_100 = Duration::from_secs(100 * 365 * 24 * 60 * 60);
        if self.idle_timeout < Duration::from_secs(1) || self.idle_timeout > year_100 {
            return Err(invalid("sessions.idle_timeout", "must be 1s to 100 years"));
        }
        if self.remembered_lifetime < Duration::from_secs(1) || self.remembered_lifetime > year_100
        {
            return Err(invalid("sessions.remembered_lifetime", "must be 1s to 100 years"));
        }
        if self.sessions_max == 0 {
            return Err(invalid("sessions.sessions_max", "must be at least 1"));
        }
        if self.per_account_max == 0 || self.per_account_max > self.sessions_max {
            return Err(invalid("sessions.per_account_max", "must be 1 to sessions.sessions_max"));
        }
        Ok(())
    }
}

impl LogConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=LOG_MEMORY_ENTRIES_MAX).contains(&self.memory_entries_max) {
            return Err(invalid(
                "log.memory_entries_max",
                format!("must be 1 to {LOG_MEMORY_ENTRIES_MAX}"),
            ));
        }
        if self.file.as_os_str().is_empty() {
            return Err(invalid("log.file", "is empty"));
        }
        if self.file_bytes_max < 4096 {
            return Err(invalid("log.file_bytes_max", "must be at least 4096"));
        }
        if !(256..=1024 * 1024).contains(&self.entry_bytes_max) {
            return Err(invalid("log.entry_bytes_max", "must be 256 to 1048576"));
        }
        if let Some(problem) = log_memory_problem(self.memory_entries_max, self.entry_bytes_max) {
            return Err(invalid("log.memory_entries_max", problem));
        }
        if let Some(problem) = log_file_problem(self.file_bytes_max, self.entry_bytes_max) {
            return Err(invalid("log.file_bytes_max", problem));
        }
        Ok(())
    }
}

/// The largest `limits.orders_per_interval_max`: an interval's header and outcomes are one
/// journal batch of at most `journal::limits::BATCH_EVENTS_MAX` events.
const ORDERS_PER_INTERVAL_MAX: u64 = journal::limits::BATCH_EVENTS_MAX as u64 - 1;
/// The largest `limits.worker_connections_max` (the unidentified pools are four times as large).
const WORKER_CONNECTIONS_MAX: u32 = 65_536;

impl LimitsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("limits.worker_connections_max", u64::from(self.worker_connections_max)),
            ("limits.orders_per_interval_max", u64::from(self.orders_per_interval_max)),
            (
                "limits.orders_per_account_per_interval_max",
                u64::from(self.orders_per_account_per_interval_max),
            ),
            ("limits.accounts_max", self.accounts_max),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(invalid(key, "must be at least 1"));
        }
        // An interval's outcomes and its header are one journal batch, and the retry memory's
        // tables are sized at start for two whole queues (the interval settling and the next):
        // a larger value could never be settled and would ask for memory the machine does not
        // have.
        if u64::from(self.orders_per_interval_max) > ORDERS_PER_INTERVAL_MAX {
            return Err(invalid(
                "limits.orders_per_interval_max",
                format!("must be at most {ORDERS_PER_INTERVAL_MAX} (one journal batch)"),
            ));
        }
        if self.worker_connections_max > WORKER_CONNECTIONS_MAX {
            return Err(invalid(
                "limits.worker_connections_max",
                format!("must be at most {WORKER_CONNECTIONS_MAX}"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// A file is read at most one byte past its limit, whatever its length says: a device that
    /// never ends (`/dev/zero`, length 0) or a pipe is refused as too large, not read until
    /// memory runs out; a regular file over the limit is refused before it is read.
    #[test]
    fn files_are_read_up_to_their_limit_whatever_their_length_says() {
        #[cfg(unix)]
        {
            assert!(matches!(read_text_bounded(Path::new("/dev/zero"), 1000), Ok(Err(1001))));
            let config = read_config_file(Path::new("/dev/zero"));
            assert!(matches!(config, Err(ConfigError::TooLarge { .. })), "{config:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "x".repeat(1000)).unwrap();
        assert_eq!(read_text_bounded(&path, 1000).unwrap().unwrap().len(), 1000);
        assert!(matches!(read_text_bounded(&path, 999), Ok(Err(1000))));
    }

    fn parse(text: &str) -> Result<MasterConfig, ConfigError> {
        let config = MasterConfig::from_toml_str(text, "<test>")?;
        config.validate()?;
        Ok(config)
    }

    fn key_of(err: ConfigError) -> String {
        match err {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("expected an invalid key, got {other}"),
        }
    }

    #[test]
    fn no_file_gives_the_documented_defaults() {
        let config = MasterConfig::load_with_env(None, |_| None).unwrap();
        assert_eq!(config.listen, "0.0.0.0:2048".parse::<SocketAddr>().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("./pt-data"));
        assert_eq!(config.update_interval, Duration::from_secs(1));
        assert_eq!(config.initial_cash, Cash::parse("100000").unwrap());
        let shipped = RecordedSourceConfig { file: None, splits: None };
        assert_eq!(config.prices, PriceSourceConfig::Recorded(shipped));
        assert_eq!(config.auth.argon2, Argon2Config { m_cost_kib: 19456, t_cost: 2, p_cost: 1 });
        assert_eq!(config.sessions.idle_timeout, Duration::from_secs(1800));
        assert_eq!(config.sessions.remembered_lifetime, Duration::from_secs(30 * 86_400));
        assert_eq!(config.log_file_path(), PathBuf::from("./pt-data/master.log"));
        // An empty file is the same as no file.
        assert_eq!(parse("").unwrap().listen, config.listen);
    }

    #[test]
    fn a_full_file_parses() {
        let text = r#"
            listen = "127.0.0.1:4000"
            update_interval = "250ms"
            initial_cash = "2500.50"
            assets = ["AAPL", "IBM"]
            [prices]
            source = "http"
            base_url = "http://127.0.0.1:9"
            api_key = "demo"
            timeout = "2s"
            [auth.argon2]
            m_cost_kib = 64
            [[workers]]
            id = "67e55044-10b1-426f-9247-bb680e5fe0c8"
            cert = "workers/eu.asc"
            allowed_ips = ["10.0.0.0/8", "::1"]
        "#;
        let config = parse(text).unwrap();
        assert_eq!(config.update_interval, Duration::from_millis(250));
        assert_eq!(config.initial_cash.to_string(), "2500.50");
        assert_eq!(config.assets.len(), 2);
        let PriceSourceConfig::Http(http) = &config.prices else { panic!("not http") };
        assert_eq!(http.timeout, Duration::from_secs(2));
        assert_eq!(http.calls_per_minute_max, 5);
        assert_eq!(config.auth.argon2.m_cost_kib, 64);
        assert_eq!(config.auth.argon2.t_cost, 2);
        let worker = &config.workers[0];
        assert!(worker.allowed_ips[0].contains("10.1.2.3".parse().unwrap()));
        assert!(!worker.allowed_ips[0].contains("11.1.2.3".parse().unwrap()));
        assert!(worker.allowed_ips[1].contains("::1".parse().unwrap()));
    }

    #[test]
    fn garbage_is_refused_naming_the_key() {
        let parse_errors = [
            ("colour = \"blue\"", "colour"),
            ("[auth]\nhash_thread = 2", "hash_thread"),
            ("update_interval = \"soon\"", "update_interval"),
            ("initial_cash = \"12.3.4\"", "initial_cash"),
            ("initial_cash = 1.5", "initial_cash"),
            ("listen = \"localhost\"", "listen"),
            ("assets = [\"aapl\"]", "assets"),
            ("[prices]\nsource = \"carrier-pigeon\"", "carrier-pigeon"),
            ("[prices]\nsource = \"recorded\"\nbase_url = \"x\"", "base_url"),
            ("[prices]\nsource = \"http\"\nfile = \"x.csv\"", "prices.file"),
            ("[prices]\nfile = \"x.csv\"", "source"),
            ("[prices]\nsource = \"http\"\ntimeot = \"1s\"", "timeot"),
            ("[[workers]]\nid = \"x\"\ncert = \"a\"\nallowed_ips = []", "id"),
            (
                "[[workers]]\nid = \"67e55044-10b1-426f-9247-bb680e5fe0c8\"\ncert = \"a\"\nallowed_ips = [\"10.0.0.0/33\"]",
                "allowed_ips",
            ),
        ];
        for (text, key) in parse_errors {
            match parse(text) {
                Err(ConfigError::Parse { message, .. }) => {
                    assert!(message.contains(key), "{text}: {message}");
                }
                other => panic!("{text}: expected a parse error, got {other:?}"),
            }
        }
        let invalid = [
            ("update_interval = \"0s\"", "update_interval"),
            ("initial_cash = \"0\"", "initial_cash"),
            ("assets = [\"IBM\", \"IBM\"]", "assets"),
            ("[auth.argon2]\nm_cost_kib = 4", "auth.argon2.m_cost_kib"),
            ("[auth.argon2]\np_cost = 0", "auth.argon2.p_cost"),
            ("[auth]\nhash_threads = 0", "auth.hash_threads"),
            ("[auth]\nhash_threads = 17\n[auth.argon2]\nm_cost_kib = 1048576", "auth.hash_threads"),
            ("[auth.registrations]\nper_ip_max = 0", "auth.registrations.per_ip_max"),
            ("[auth.registrations]\nwindow = \"10ms\"", "auth.registrations.window"),
            ("[sessions]\nper_account_max = 0", "sessions.per_account_max"),
            ("[journal]\nsnapshot_every_events = 0", "journal.snapshot_every_events"),
            ("[journal]\ncache_bytes = 68719476737", "journal.cache_bytes"),
            ("[log]\nmemory_entries_max = 0", "log.memory_entries_max"),
            (
                "[log]\nmemory_entries_max = 10000000\nentry_bytes_max = 1048576",
                "log.memory_entries_max",
            ),
            // 1 GiB at the default 4096 bytes an entry is 262,144 entries.
            ("[log]\nmemory_entries_max = 262145", "log.memory_entries_max"),
            // Not one line of the default 4096 bytes.
            ("[log]\nfile_bytes_max = 5000", "log.file_bytes_max"),
            ("[limits]\nworker_connections_max = 0", "limits.worker_connections_max"),
            ("[limits]\nworker_connections_max = 65537", "limits.worker_connections_max"),
            ("[limits]\norders_per_interval_max = 1000000", "limits.orders_per_interval_max"),
            ("[limits]\norders_per_interval_max = 4000000000", "limits.orders_per_interval_max"),
            ("[prices]\nsource = \"http\"\napi_key = \"k\"", "assets"),
            ("assets = [\"IBM\"]\n[prices]\nsource = \"http\"", "prices.api_key"),
            (
                "assets = [\"IBM\"]\n[prices]\nsource = \"http\"\napi_key = \"k\"\nretry_backoff = \"0s\"",
                "prices.retry_backoff",
            ),
            (
                "assets = [\"IBM\"]\n[prices]\nsource = \"http\"\napi_key = \"k\"\nretry_backoff = \"1m\"",
                "prices.retry_backoff",
            ),
            (
                "assets = [\"IBM\"]\n[prices]\nsource = \"http\"\napi_key = \"k\"\nbase_url = \"ftp://x\"",
                "prices.base_url",
            ),
            (
                "assets = [\"IBM\"]\n[prices]\nsource = \"http\"\napi_key = \"k\"\nbase_url = \"https://x/#a\"",
                "prices.base_url",
            ),
            (
                "assets = [\"IBM\"]\n[prices]\nsource = \"http\"\napi_key = \"k\"\nbase_url = \"https://u:p@x\"",
                "prices.base_url",
            ),
            (
                "assets = [\"IBM\"]\n[prices]\nsource = \"http\"\napi_key = \"k\"\ncalls_per_minute_max = 0",
                "prices.calls_per_minute_max",
            ),
            (
                "[[workers]]\nid = \"67e55044-10b1-426f-9247-bb680e5fe0c8\"\ncert = \"a\"\nallowed_ips = []",
                "workers[0].allowed_ips",
            ),
        ];
        for (text, key) in invalid {
            let err = parse(text).expect_err(text);
            let message = err.to_string();
            assert_eq!(key_of(err), key, "{text}");
            assert!(message.contains(key), "{message}");
        }
        // The in-memory log's bound is inclusive.
        assert!(parse("[log]\nmemory_entries_max = 262144").is_ok());
    }

    #[test]
    fn a_bad_value_in_prices_is_reported_at_its_key() {
        // serde's internally tagged enums point every error of the table at its first line.
        for (text, line) in [
            ("[prices]\nsource = \"http\"\ntimeout = \"abc\"", "3 | timeout = \"abc\""),
            ("[prices]\nsource = \"http\"\nretries_max = -1", "3 | retries_max = -1"),
            ("[prices]\nsource = \"recorded\"\nfile = 7", "3 | file = 7"),
        ] {
            match parse(text) {
                Err(ConfigError::Parse { message, .. }) => {
                    assert!(message.contains(line), "{text}: {message}");
                }
                other => panic!("{text}: expected a parse error, got {other:?}"),
            }
        }
    }

    #[test]
    fn an_empty_variable_counts_as_unset() {
        let env = |name: &str| {
            [ENV_LISTEN, ENV_DATA_DIR, ENV_UPDATE_INTERVAL].contains(&name).then(String::new)
        };
        let config = MasterConfig::load_with_env(None, env).unwrap();
        let default = MasterConfig::default();
        assert_eq!(
            (config.listen, &config.data_dir, config.update_interval),
            (default.listen, &default.data_dir, default.update_interval)
        );
    }

    #[test]
    fn environment_overrides() {
        let env = |name: &str| match name {
            ENV_LISTEN => Some("127.0.0.1:7000".to_owned()),
            ENV_UPDATE_INTERVAL => Some("5s".to_owned()),
            ENV_DATA_DIR => Some("/tmp/pt".to_owned()),
            _ => None,
        };
        let config = MasterConfig::load_with_env(None, env).unwrap();
        assert_eq!(config.listen, "127.0.0.1:7000".parse::<SocketAddr>().unwrap());
        assert_eq!(config.update_interval, Duration::from_secs(5));
        assert_eq!(config.data_dir, PathBuf::from("/tmp/pt"));

        let bad = |name: &str| (name == ENV_UPDATE_INTERVAL).then(|| "fast".to_owned());
        let err = MasterConfig::load_with_env(None, bad).unwrap_err();
        assert!(matches!(&err, ConfigError::Env { var, .. } if var == ENV_UPDATE_INTERVAL));

        // A data directory of spaces (a template's empty value) is refused, not made; from the
        // variable, the variable is named.
        let blank = |name: &str| (name == ENV_DATA_DIR).then(|| "  ".to_owned());
        let err = MasterConfig::load_with_env(None, blank).unwrap_err();
        assert!(matches!(&err, ConfigError::Env { var, .. } if var == ENV_DATA_DIR), "{err}");
        let err = parse("data_dir = \" \"").unwrap_err();
        assert!(err.to_string().contains("white space"), "{err}");
        assert_eq!(key_of(err), "data_dir");
    }

    #[test]
    fn api_key_comes_from_the_named_variable_and_is_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.toml");
        std::fs::write(
            &path,
            "assets = [\"IBM\"]\n[prices]\nsource = \"http\"\napi_key_env = \"MY_KEY\"\n",
        )
        .unwrap();
        let env = |name: &str| (name == "MY_KEY").then(|| "sekrit-123".to_owned());
        let config = MasterConfig::load_with_env(Some(&path), env).unwrap();
        let PriceSourceConfig::Http(http) = &config.prices else { panic!("not http") };
        assert_eq!(http.api_key.as_ref().unwrap().expose(), "sekrit-123");
        assert!(!format!("{config:?}").contains("sekrit"));

        let missing = MasterConfig::load_with_env(Some(&path), |_| None).unwrap_err();
        assert_eq!(key_of(missing), "prices.api_key");
        // A bad key from the variable names the variable, never the key.
        for (bad, says) in
            [("sekrit-123\n", "ends with a space or a line break"), ("sek rit", "printable ASCII")]
        {
            let env = |name: &str| (name == "MY_KEY").then(|| bad.to_owned());
            let err = MasterConfig::load_with_env(Some(&path), env).unwrap_err();
            let text = err.to_string();
            assert!(matches!(&err, ConfigError::Env { var, .. } if var == "MY_KEY"), "{text}");
            assert!(text.contains(says) && !text.contains("sek"), "{text}");
            // Checked by the server's validation only: `--prices FILE` replaces the source
            // and the worker commands skip it, both after this unchecked load.
            assert!(MasterConfig::load_unchecked_with_env(Some(&path), env).is_ok());
        }
        // A bad key in the file is the file's `prices.api_key`.
        std::fs::write(
            &path,
            "assets = [\"IBM\"]\n[prices]\nsource = \"http\"\napi_key = \"sekrit-123 \"\n",
        )
        .unwrap();
        let err = MasterConfig::load_with_env(Some(&path), |_| None).unwrap_err();
        let text = err.to_string();
        assert_eq!(key_of(err), "prices.api_key");
        assert!(text.contains("ends with a space") && !text.contains("sek"), "{text}");
        let absent = MasterConfig::load_with_env(Some(&dir.path().join("nope.toml")), |_| None);
        assert!(matches!(absent, Err(ConfigError::Read { .. })));
    }

    #[test]
    fn ip_ranges() {
        let net: IpNet = "192.168.1.0/24".parse().unwrap();
        assert!(net.contains("192.168.1.200".parse().unwrap()));
        assert!(net.contains("::ffff:192.168.1.7".parse().unwrap()));
        assert!(!net.contains("192.168.2.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let any: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(any.contains("8.8.8.8".parse().unwrap()));
        let v6: IpNet = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db9::".parse().unwrap()));
        assert_eq!("10.0.0.1".parse::<IpNet>().unwrap().prefix_len(), 32);
        // A range written as IPv4-mapped IPv6 (as a dual-stack listener logs a peer) is its
        // IPv4 range, for peers of either form.
        let mapped: IpNet = "::ffff:10.0.0.7".parse().unwrap();
        assert!(mapped.contains("10.0.0.7".parse().unwrap()));
        assert!(mapped.contains("::ffff:10.0.0.7".parse().unwrap()));
        assert!(!mapped.contains("10.0.0.8".parse().unwrap()));
        let mapped_range: IpNet = "::ffff:10.0.0.0/104".parse().unwrap();
        assert!(mapped_range.contains("10.200.0.1".parse().unwrap()));
        assert!(!mapped_range.contains("11.0.0.1".parse().unwrap()));
        for bad in ["", "10.0.0.0/", "10.0.0.0/+8", "10.0.0.0/33", "::/129", "host", "1.2.3.4/8/8"]
        {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("../../docs/CONFIG.md");
        let start = doc.find("```toml\n").expect("CONFIG.md has a toml example") + 8;
        let end = start + doc[start..].find("```").expect("the example ends");
        let config = MasterConfig::from_toml_str(&doc[start..end], "CONFIG.md").unwrap();
        let defaults = MasterConfig::default();
        // The example spells out the defaults.
        assert_eq!(config.listen, defaults.listen);
        assert_eq!(config.update_interval, defaults.update_interval);
        assert_eq!(config.auth, defaults.auth);
        assert_eq!(config.sessions, defaults.sessions);
        assert_eq!(config.journal, defaults.journal);
        assert_eq!(config.log, defaults.log);
        assert_eq!(config.limits, defaults.limits);
    }
}
