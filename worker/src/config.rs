//! The worker's configuration: one TOML file (`--config`), every key but `master_cert` optional
//! with a documented default; command-line flags override the file. `docs/WORKER.md` lists every
//! key.
//!
//! Loading happens in two steps, as for the master (`master::config`):
//! [`WorkerConfig::from_toml_str`] (serde: unknown keys, bad types, bad durations and bad
//! addresses are refused with the position and key of the problem) and
//! [`WorkerConfig::validate`] (ranges and cross-key rules, each error naming its key as a dotted
//! path such as `cache.bytes_max`). [`WorkerConfig::load`] reads the file and parses it; the
//! binary applies its flags ([`Overrides`]) and then validates.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

/// Most client connections at once that `clients.connections_max` may allow.
pub const CONNECTIONS_MAX: u32 = 1_000_000;
/// Most requests one client may have queued (read but not answered) that
/// `clients.pipeline_depth_max` may allow.
pub const PIPELINE_DEPTH_MAX: u32 = 1024;
/// Most relays waiting for the master that `link.relays_in_flight_max` may allow.
pub const RELAYS_IN_FLIGHT_MAX: u32 = 1_000_000;
/// Most in-memory log entries (`log.memory_entries_max` is checked against it).
pub const LOG_MEMORY_ENTRIES_MAX: u32 = 10_000_000;
/// Longest duration accepted for any timeout, interval or lifetime key.
pub const DURATION_MAX: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// Longest address (`host:port`) accepted for `master` and `advertise`, in bytes; the same limit
/// as the Hello's client address (`net::limits::WORKER_ADDRESS_BYTES_MAX`).
pub const ADDRESS_BYTES_MAX: usize = net::limits::WORKER_ADDRESS_BYTES_MAX;

/// Why the configuration could not be loaded: the master's reasons, so both binaries report
/// configuration problems alike (the worker has no environment overrides, so never `Env`).
pub use master::config::{CONFIG_FILE_BYTES_MAX, ConfigError};

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.to_owned(), reason: reason.into() }
}

/// The whole configuration of a worker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Address clients connect to (spec 4.3.2). Default `0.0.0.0:2049`.
    pub listen: SocketAddr,
    /// The `host:port` clients are told to use (sent to the master in the Hello, which hands it
    /// out in `getWorkers`). Default: the address actually listened on, with an unspecified IP
    /// (`0.0.0.0`, `::`) replaced by the loopback address.
    pub advertise: Option<String>,
    /// The master's worker port, `host:port` (spec 4.3.1). Default `127.0.0.1:2048`.
    pub master: String,
    /// Directory of the worker's identity (`pt-worker keygen --out DIR`). Default
    /// `./pt-worker-key`.
    pub key_dir: PathBuf,
    /// The master's public OpenPGP certificate, used to authenticate the master. Required (here
    /// or with `--master-cert`): there is no safe default.
    pub master_cert: Option<PathBuf>,
    /// Client connections.
    pub clients: ClientsConfig,
    /// The link to the master.
    pub link: LinkConfig,
    /// The asset data cache (spec 3.2.6).
    pub cache: CacheConfig,
    /// The session cache (spec 3.2.3).
    pub sessions: SessionsConfig,
    /// The log system (spec 2.3.3, 3.2.5).
    pub log: LogConfig,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 2049)),
            advertise: None,
            master: "127.0.0.1:2048".to_owned(),
            key_dir: PathBuf::from("./pt-worker-key"),
            master_cert: None,
            clients: ClientsConfig::default(),
            link: LinkConfig::default(),
            cache: CacheConfig::default(),
            sessions: SessionsConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// Limits on client connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientsConfig {
    /// Client connections at once; one more is answered `error(busy)` and closed. Default 1024.
    pub connections_max: u32,
    /// Client connections at once from one address (IPv6: one /64), so that one host cannot
    /// take every place; one more from it is answered `error(busy)` and closed. Default 256.
    pub connections_per_address_max: u32,
    /// A connection with no request for this long, and none being answered, is closed.
    /// Default `5m`.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// A new connection that sends no request for this long is closed: one that never says
    /// anything does not hold its place for the whole `idle_timeout` (the shorter of the two
    /// applies). Default `30s`.
    #[serde(deserialize_with = "duration")]
    pub first_request_timeout: Duration,
    /// Requests of one connection read ahead of their answer (pipelining); beyond, the worker
    /// stops reading that connection until an answer is sent. Default 32.
    pub pipeline_depth_max: u32,
    /// Data bytes per packet sent to clients (spec 4.7.1), 1 to 65536. Default 65536.
    pub packet_data_bytes: u32,
    /// How long a write to a client may take before the connection is dropped. Default `30s`.
    #[serde(deserialize_with = "duration")]
    pub write_timeout: Duration,
}

impl Default for ClientsConfig {
    fn default() -> Self {
        Self {
            connections_max: 1024,
            connections_per_address_max: 256,
            idle_timeout: Duration::from_secs(5 * 60),
            first_request_timeout: Duration::from_secs(30),
            pipeline_depth_max: 32,
            packet_data_bytes: 65_536,
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// The link to the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkConfig {
    /// Timeout of one TCP connection attempt. Default `5s`.
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Timeout of the whole handshake after the TCP connection. Default `10s`.
    #[serde(deserialize_with = "duration")]
    pub handshake_timeout: Duration,
    /// Wait before the first reconnection attempt; doubled after each failure. Default `100ms`.
    #[serde(deserialize_with = "duration")]
    pub reconnect_backoff_min: Duration,
    /// Longest wait between reconnection attempts. Default `30s`.
    #[serde(deserialize_with = "duration")]
    pub reconnect_backoff_max: Duration,
    /// Time between two heartbeats. Default `5s`.
    #[serde(deserialize_with = "duration")]
    pub heartbeat_interval: Duration,
    /// The link is dropped (and re-established) when nothing came from the master for this
    /// long. More than `heartbeat_interval`. Default `15s`.
    #[serde(deserialize_with = "duration")]
    pub heartbeat_timeout: Duration,
    /// How long a relayed request waits for the master's answer before the client is told
    /// `master_unavailable`. Must exceed the master's update interval, since orders are answered
    /// when their interval settles. Default `30s`.
    #[serde(deserialize_with = "duration")]
    pub relay_timeout: Duration,
    /// Relays waiting for an answer at once; beyond, requests are answered `busy`.
    /// Default 4096.
    pub relays_in_flight_max: u32,
    /// Messages queued for the link's writer. Default 1024.
    pub queue_depth_max: u32,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            reconnect_backoff_min: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(15),
            relay_timeout: Duration::from_secs(30),
            relays_in_flight_max: 4096,
            queue_depth_max: 1024,
        }
    }
}

/// The asset data cache (spec 3.2.6); the policy is in `docs/WORKER.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Most entries. 0 disables the cache. Default 10000.
    pub entries_max: u32,
    /// Most bytes of cached answers (encoded size plus a fixed overhead per entry).
    /// Default 67108864 (64 MiB).
    pub bytes_max: u64,
    /// Lifetime of a current value (`getAssetInfo`, `getAssetValueCurrent`,
    /// `getAssetValueAllTime`, and series still open): set it to the master's update interval.
    /// Default `1s`.
    #[serde(deserialize_with = "duration")]
    pub ttl: Duration,
    /// Lifetime of a series whose whole period is older than the latest price seen for its
    /// asset (a closed period, which cannot change). Default `24h`.
    #[serde(deserialize_with = "duration")]
    pub closed_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            entries_max: 10_000,
            bytes_max: 64 * 1024 * 1024,
            ttl: Duration::from_secs(1),
            closed_ttl: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// The session cache (spec 3.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// Sessions remembered (valid and known-invalid together); the least recently used are
    /// forgotten first. Default 100000.
    pub entries_max: u32,
    /// How long a session the master confirmed is trusted without asking again (for
    /// `switchState`, which the worker answers itself). Default `60s`.
    #[serde(deserialize_with = "duration")]
    pub validity: Duration,
    /// End a session logged in with `isExpirable = true` when its client disconnects (spec
    /// 4.6.1), by relaying a `logout` for it. Default true.
    pub logout_expirable_on_disconnect: bool,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            entries_max: 100_000,
            validity: Duration::from_secs(60),
            logout_expirable_on_disconnect: true,
        }
    }
}

/// The log system.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Entries kept in memory for a crash dump (spec 2.3.3). Default 1000.
    pub memory_entries_max: u32,
    /// Log file, relative to the working directory. Default `pt-worker.log`.
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
            file: PathBuf::from("pt-worker.log"),
            file_bytes_max: 64 * 1024 * 1024,
            entry_bytes_max: 4096,
        }
    }
}

/// Command-line values that override the file (`pt-worker run --listen ... --master ...`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--listen ADDR`.
    pub listen: Option<SocketAddr>,
    /// `--advertise HOST:PORT`.
    pub advertise: Option<String>,
    /// `--master HOST:PORT`.
    pub master: Option<String>,
    /// `--key-dir DIR`.
    pub key_dir: Option<PathBuf>,
    /// `--master-cert FILE`.
    pub master_cert: Option<PathBuf>,
    /// `--log-file FILE`.
    pub log_file: Option<PathBuf>,
}

/// Parses a duration written for humans (`1s`, `500ms`, `30m`, `1h 30m`): the master's rule,
/// so both configurations read durations alike.
pub use master::config::parse_duration;

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(de::Error::custom)
}

/// Checks a `host:port` address: 1 to [`ADDRESS_BYTES_MAX`] bytes, a non-empty host without
/// spaces or control characters, and a port from 1 to 65535.
pub fn check_host_port(text: &str) -> Result<(), String> {
    if text.is_empty() || text.len() > ADDRESS_BYTES_MAX {
        return Err(format!("must be 1 to {ADDRESS_BYTES_MAX} bytes of host:port"));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("{text:?} is not host:port (e.g. 127.0.0.1:2048)"));
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{text:?} has no valid host"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{text:?} has no valid port (1 to 65535)")),
        Ok(_) => Ok(()),
    }
}

fn check_duration(key: &str, value: Duration, min: Duration) -> Result<(), ConfigError> {
    if value < min || value > DURATION_MAX {
        return Err(invalid(key, format!("must be {min:?} to 7 days")));
    }
    Ok(())
}

impl WorkerConfig {
    /// Reads and parses the file at `path`, or gives all defaults without one. Does not
    /// validate: apply the flags first, then call [`validate`](Self::validate).
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            Some(path) => Self::from_toml_str(
                &master::config::read_config_file(path)?,
                &path.display().to_string(),
            ),
            None => Ok(Self::default()),
        }
    }

    /// Parses TOML text (no validation). `origin` names the text in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text)
            .map_err(|e| ConfigError::Parse { origin: origin.to_owned(), message: e.to_string() })
    }

    /// Applies command-line values over the file's.
    pub fn apply(&mut self, overrides: Overrides) {
        let Overrides { listen, advertise, master, key_dir, master_cert, log_file } = overrides;
        if let Some(listen) = listen {
            self.listen = listen;
        }
        if advertise.is_some() {
            self.advertise = advertise;
        }
        if let Some(master) = master {
            self.master = master;
        }
        if let Some(key_dir) = key_dir {
            self.key_dir = key_dir;
        }
        if master_cert.is_some() {
            self.master_cert = master_cert;
        }
        if let Some(file) = log_file {
            self.log.file = file;
        }
    }

    /// Checks ranges, required keys and cross-key rules; the error names the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(advertise) = &self.advertise {
            check_host_port(advertise).map_err(|reason| invalid("advertise", reason))?;
        }
        check_host_port(&self.master).map_err(|reason| invalid("master", reason))?;
        if self.key_dir.as_os_str().is_empty() {
            return Err(invalid("key_dir", "is empty"));
        }
        match &self.master_cert {
            None => {
                return Err(invalid(
                    "master_cert",
                    "missing: give the master's public certificate (master.pub.asc) with \
                     `master_cert = \"PATH\"` or --master-cert PATH",
                ));
            }
            Some(path) if path.as_os_str().is_empty() => {
                return Err(invalid("master_cert", "is empty"));
            }
            Some(_) => {}
        }
        self.clients.validate()?;
        self.link.validate()?;
        self.cache.validate()?;
        self.sessions.validate()?;
        self.log.validate()
    }

    /// The `host:port` to announce to clients, for a listener bound to `bound` (the real port
    /// when `listen` asked for port 0): `advertise` if set, else `bound` with an unspecified IP
    /// replaced by loopback.
    pub fn advertise_address(&self, bound: SocketAddr) -> String {
        if let Some(advertise) = &self.advertise {
            return advertise.clone();
        }
        let ip = match bound.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        SocketAddr::new(ip, bound.port()).to_string()
    }

    /// Why the address handed to clients is probably wrong, if it is: no `advertise`, a
    /// listener on every interface (so the default is the loopback address) and a master that
    /// is not on this machine, so clients elsewhere would be told to connect to themselves.
    pub fn advertise_warning(&self) -> Option<String> {
        if self.advertise.is_some() || !self.listen.ip().is_unspecified() {
            return None;
        }
        let host = self.master.rsplit_once(':').map_or(self.master.as_str(), |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let local = host.eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        (!local).then(|| {
            format!(
                "no `advertise` set: clients will be handed {} by the master's worker list, \
                 which only works on this machine; set advertise (or --advertise) to the \
                 host:port clients reach this worker at",
                self.advertise_address(self.listen)
            )
        })
    }

    /// The logbook's settings (for `master::logbook::init_tracing`).
    pub fn logbook_config(&self) -> master::logbook::LogbookConfig {
        master::logbook::LogbookConfig {
            memory_entries_max: usize::try_from(self.log.memory_entries_max).unwrap_or(usize::MAX),
            file: Some(self.log.file.clone()),
            file_bytes_max: self.log.file_bytes_max,
            entry_bytes_max: usize::try_from(self.log.entry_bytes_max).unwrap_or(usize::MAX),
        }
    }
}

impl ClientsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=CONNECTIONS_MAX).contains(&self.connections_max) {
            return Err(invalid(
                "clients.connections_max",
                format!("must be 1 to {CONNECTIONS_MAX}"),
            ));
        }
        if !(1..=CONNECTIONS_MAX).contains(&self.connections_per_address_max) {
            return Err(invalid(
                "clients.connections_per_address_max",
                format!("must be 1 to {CONNECTIONS_MAX}"),
            ));
        }
        check_duration("clients.idle_timeout", self.idle_timeout, Duration::from_millis(10))?;
        check_duration(
            "clients.first_request_timeout",
            self.first_request_timeout,
            Duration::from_millis(10),
        )?;
        if !(1..=PIPELINE_DEPTH_MAX).contains(&self.pipeline_depth_max) {
            return Err(invalid(
                "clients.pipeline_depth_max",
                format!("must be 1 to {PIPELINE_DEPTH_MAX}"),
            ));
        }
        let packet_max = u32::try_from(net::limits::FRAME_DATA_BYTES_MAX).unwrap_or(u32::MAX);
        if !(1..=packet_max).contains(&self.packet_data_bytes) {
            return Err(invalid("clients.packet_data_bytes", format!("must be 1 to {packet_max}")));
        }
        check_duration("clients.write_timeout", self.write_timeout, Duration::from_millis(10))
    }
}

impl LinkConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let ms = Duration::from_millis;
        check_duration("link.connect_timeout", self.connect_timeout, ms(10))?;
        check_duration("link.handshake_timeout", self.handshake_timeout, ms(10))?;
        check_duration("link.reconnect_backoff_min", self.reconnect_backoff_min, ms(1))?;
        check_duration("link.reconnect_backoff_max", self.reconnect_backoff_max, ms(1))?;
        if self.reconnect_backoff_max < self.reconnect_backoff_min {
            return Err(invalid(
                "link.reconnect_backoff_max",
                "must be at least link.reconnect_backoff_min",
            ));
        }
        check_duration("link.heartbeat_interval", self.heartbeat_interval, ms(10))?;
        // The master drops a link silent for LINK_IDLE_TIMEOUT: a heartbeat must come well
        // within it, even when one is late.
        let heartbeat_max = master::server::LINK_IDLE_TIMEOUT / 3;
        if self.heartbeat_interval > heartbeat_max {
            return Err(invalid(
                "link.heartbeat_interval",
                format!(
                    "must be at most {heartbeat_max:?}: the master closes a link silent for {:?}",
                    master::server::LINK_IDLE_TIMEOUT
                ),
            ));
        }
        check_duration("link.heartbeat_timeout", self.heartbeat_timeout, ms(10))?;
        if self.heartbeat_timeout <= self.heartbeat_interval {
            return Err(invalid(
                "link.heartbeat_timeout",
                "must be more than link.heartbeat_interval",
            ));
        }
        check_duration("link.relay_timeout", self.relay_timeout, ms(10))?;
        if !(1..=RELAYS_IN_FLIGHT_MAX).contains(&self.relays_in_flight_max) {
            return Err(invalid(
                "link.relays_in_flight_max",
                format!("must be 1 to {RELAYS_IN_FLIGHT_MAX}"),
            ));
        }
        if !(1..=RELAYS_IN_FLIGHT_MAX).contains(&self.queue_depth_max) {
            return Err(invalid(
                "link.queue_depth_max",
                format!("must be 1 to {RELAYS_IN_FLIGHT_MAX}"),
            ));
        }
        Ok(())
    }
}

impl CacheConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.entries_max > 10_000_000 {
            return Err(invalid("cache.entries_max", "must be at most 10000000"));
        }
        if self.bytes_max > 64 * 1024 * 1024 * 1024 {
            return Err(invalid("cache.bytes_max", "must be at most 64 GiB"));
        }
        check_duration("cache.ttl", self.ttl, Duration::from_millis(1))?;
        check_duration("cache.closed_ttl", self.closed_ttl, Duration::from_millis(1))?;
        if self.closed_ttl < self.ttl {
            return Err(invalid("cache.closed_ttl", "must be at least cache.ttl"));
        }
        Ok(())
    }
}

impl SessionsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=10_000_000).contains(&self.entries_max) {
            return Err(invalid("sessions.entries_max", "must be 1 to 10000000"));
        }
        check_duration("sessions.validity", self.validity, Duration::from_millis(1))
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
        if let Some(problem) =
            master::config::log_memory_problem(self.memory_entries_max, self.entry_bytes_max)
        {
            return Err(invalid("log.memory_entries_max", problem));
        }
        if let Some(problem) =
            master::config::log_file_problem(self.file_bytes_max, self.entry_bytes_max)
        {
            return Err(invalid("log.file_bytes_max", problem));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WorkerConfig, ConfigError> {
        let mut config = WorkerConfig::from_toml_str(text, "<test>")?;
        if config.master_cert.is_none() {
            config.master_cert = Some(PathBuf::from("master.pub.asc"));
        }
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
    fn defaults_are_the_documented_ones_and_need_a_master_cert() {
        let config = WorkerConfig::load(None).unwrap();
        assert_eq!(config.listen, "0.0.0.0:2049".parse::<SocketAddr>().unwrap());
        assert_eq!(config.master, "127.0.0.1:2048");
        assert_eq!(config.key_dir, PathBuf::from("./pt-worker-key"));
        assert_eq!(config.cache.ttl, Duration::from_secs(1));
        assert_eq!(config.link.relay_timeout, Duration::from_secs(30));
        let err = config.validate().unwrap_err();
        let message = err.to_string();
        assert_eq!(key_of(err), "master_cert");
        assert!(message.contains("--master-cert"), "{message}");
        // An empty file is the same as no file.
        assert_eq!(parse("").unwrap().listen, config.listen);
    }

    #[test]
    fn flags_override_the_file() {
        let mut config = WorkerConfig::from_toml_str(
            "listen = \"127.0.0.1:3000\"\nmaster = \"m.example:2048\"\nmaster_cert = \"a.asc\"",
            "<test>",
        )
        .unwrap();
        config.apply(Overrides {
            listen: Some("127.0.0.1:4000".parse().unwrap()),
            master_cert: Some(PathBuf::from("b.asc")),
            log_file: Some(PathBuf::from("w.log")),
            ..Overrides::default()
        });
        config.validate().unwrap();
        assert_eq!(config.listen.port(), 4000);
        assert_eq!(config.master, "m.example:2048");
        assert_eq!(config.master_cert, Some(PathBuf::from("b.asc")));
        assert_eq!(config.log.file, PathBuf::from("w.log"));
    }

    #[test]
    fn the_advertised_address_defaults_to_the_bound_one() {
        let config = WorkerConfig::default();
        let bound: SocketAddr = "0.0.0.0:4321".parse().unwrap();
        assert_eq!(config.advertise_address(bound), "127.0.0.1:4321");
        let bound: SocketAddr = "[::]:4321".parse().unwrap();
        assert_eq!(config.advertise_address(bound), "[::1]:4321");
        let bound: SocketAddr = "10.1.2.3:2049".parse().unwrap();
        assert_eq!(config.advertise_address(bound), "10.1.2.3:2049");
        let config =
            WorkerConfig { advertise: Some("w1.example:2049".into()), ..WorkerConfig::default() };
        assert_eq!(config.advertise_address(bound), "w1.example:2049");
    }

    #[test]
    fn a_remote_master_without_advertise_is_warned_about() {
        let with = |listen: &str, master: &str, advertise: Option<&str>| WorkerConfig {
            listen: listen.parse().unwrap(),
            master: master.into(),
            advertise: advertise.map(Into::into),
            ..WorkerConfig::default()
        };
        let warning = with("0.0.0.0:2049", "master.example:2048", None).advertise_warning();
        assert!(warning.unwrap().contains("127.0.0.1:2049"));
        assert!(with("0.0.0.0:2049", "10.0.0.1:2048", None).advertise_warning().is_some());
        for local in ["127.0.0.1:2048", "localhost:2048", "[::1]:2048"] {
            assert_eq!(with("0.0.0.0:2049", local, None).advertise_warning(), None, "{local}");
        }
        let advertised = with("0.0.0.0:2049", "master.example:2048", Some("w1.example:2049"));
        assert_eq!(advertised.advertise_warning(), None);
        assert_eq!(with("10.0.0.7:2049", "master.example:2048", None).advertise_warning(), None);
    }

    #[test]
    fn garbage_is_refused_naming_the_key() {
        let parse_errors = [
            ("colour = \"blue\"", "colour"),
            ("[clients]\nconnection_max = 2", "connection_max"),
            ("[cache]\nttl = \"soon\"", "ttl"),
            ("listen = \"localhost\"", "listen"),
            ("[link]\nrelay_timeout = 5", "relay_timeout"),
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
            ("master = \"nohost\"", "master"),
            ("master = \"host:0\"", "master"),
            ("master = \":2048\"", "master"),
            ("advertise = \"a b:1\"", "advertise"),
            ("key_dir = \"\"", "key_dir"),
            ("[clients]\nconnections_max = 0", "clients.connections_max"),
            ("[clients]\nidle_timeout = \"0s\"", "clients.idle_timeout"),
            ("[clients]\nfirst_request_timeout = \"1ms\"", "clients.first_request_timeout"),
            ("[clients]\npipeline_depth_max = 0", "clients.pipeline_depth_max"),
            ("[clients]\npacket_data_bytes = 65537", "clients.packet_data_bytes"),
            ("[link]\nreconnect_backoff_min = \"60s\"", "link.reconnect_backoff_max"),
            ("[link]\nheartbeat_timeout = \"1s\"", "link.heartbeat_timeout"),
            ("[link]\nrelay_timeout = \"365d\"", "link.relay_timeout"),
            ("[link]\nrelays_in_flight_max = 0", "link.relays_in_flight_max"),
            ("[cache]\nclosed_ttl = \"1ms\"", "cache.closed_ttl"),
            ("[sessions]\nentries_max = 0", "sessions.entries_max"),
            ("[log]\nmemory_entries_max = 0", "log.memory_entries_max"),
            (
                "[log]\nmemory_entries_max = 10000000\nentry_bytes_max = 1048576",
                "log.memory_entries_max",
            ),
            ("[log]\nfile_bytes_max = 5000", "log.file_bytes_max"),
            ("[log]\nfile = \"\"", "log.file"),
        ];
        for (text, key) in invalid {
            let err = parse(text).expect_err(text);
            let message = err.to_string();
            assert_eq!(key_of(err), key, "{text}");
            assert!(message.contains(key), "{message}");
        }
    }

    #[test]
    fn the_documented_example_parses_and_spells_out_the_defaults() {
        let doc = include_str!("../../docs/WORKER.md");
        let start = doc.find("```toml\n").expect("WORKER.md has a toml example") + 8;
        let end = start + doc[start..].find("```").expect("the example ends");
        let config = WorkerConfig::from_toml_str(&doc[start..end], "WORKER.md").unwrap();
        config.validate().unwrap();
        let defaults = WorkerConfig::default();
        assert_eq!(config.listen, defaults.listen);
        assert_eq!(config.master, defaults.master);
        assert_eq!(config.key_dir, defaults.key_dir);
        assert_eq!(config.clients, defaults.clients);
        assert_eq!(config.link, defaults.link);
        assert_eq!(config.cache, defaults.cache);
        assert_eq!(config.sessions, defaults.sessions);
        assert_eq!(config.log, defaults.log);
    }
}
