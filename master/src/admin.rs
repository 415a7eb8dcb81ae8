//! The worker registry kept in the data directory, and the operator's admin channel that edits
//! it (`pt-master worker add|list|remove`, `docs/MASTER.md`, "Workers: registry and admin
//! commands").
//!
//! - **Storage.** Each worker added by the operator is one value of the journal's meta table,
//!   under `worker/<uuid>` ([`registry_key`]), in the versioned binary layout of
//!   [`StoredWorker::encode`]: the UUID, the name, the certificate's armored text itself (not a
//!   path, so that the data directory is self-contained) and the allow-list. Bytes read back are
//!   never trusted: [`StoredWorker::decode`] checks every length and names the key in its
//!   errors, and the certificate is checked again as at start-up.
//! - **The live registry.** [`LiveRegistry`] is the master's registry while it runs: the
//!   configuration's `[[workers]]` (read-only) plus the stored workers. Every change bumps a
//!   [`tokio::sync::watch`] counter; each worker link subscribes to it and closes itself as soon
//!   as its worker is no longer admitted ("worker removed by the operator").
//! - **The admin socket.** While the master runs it serves `DATA_DIR/admin.sock`
//!   ([`AdminSocket`]; mode 0600: filesystem permissions are the authentication): one JSON
//!   request per line ([`AdminRequest`]), one JSON answer per line ([`AdminResponse`]).
//!   Requests are bounded ([`REQUEST_BYTES_MAX`]), idle connections time out
//!   ([`IDLE_TIMEOUT`]), bad input gets an error line.
//! - **The commands.** [`list_workers`], [`add_worker`] and [`remove_worker`] go through the
//!   running master when `admin.sock` answers, and otherwise open the journal file and edit the
//!   registry offline. A journal locked by a master that does not answer is a clear error.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufRead as _, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use journal::{Journal, JournalConfig};
use openpgp::Fingerprint;
use sequoia_openpgp as openpgp;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};
use tracing::{Instrument as _, debug, info, info_span, warn};
use uuid::Uuid;

use crate::config::{IpNet, WorkerConfig};
use crate::worker_auth::{
    ALLOWED_IPS_PER_WORKER_MAX, AuthError, RegisteredWorker, RegistryError, WORKER_NAME_BYTES_MAX,
    WorkerRegistry, WorkerSource,
};

/// File name of the admin socket inside the data directory.
pub const SOCKET_FILE_NAME: &str = "admin.sock";
/// Prefix of the registry's keys in the journal's meta table: `worker/<uuid>`.
pub const REGISTRY_KEY_PREFIX: &str = "worker/";
/// Version byte that starts every stored registry entry.
pub const ENTRY_FORMAT_VERSION: u8 = 1;
/// Largest certificate text stored in the registry, in bytes (a worker certificate made by
/// `pt-worker keygen` takes about 1 KiB; the whole entry must fit one journal meta value).
pub const STORED_CERT_BYTES_MAX: usize = 48 * 1024;
/// Largest admin request line, in bytes (without the newline).
pub const REQUEST_BYTES_MAX: usize = 256 * 1024;
/// Largest admin answer line the command-line client reads, in bytes.
pub const RESPONSE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// An admin connection without a request for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Admin connections served at once; more are closed at once.
pub const CONNECTIONS_MAX: usize = 16;
/// How long the command-line client waits for the master's answer (an edit includes a durable
/// journal commit).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an admin operation failed. Every variant names the worker, the key or the file involved.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The registration was refused (bad certificate, duplicate UUID or certificate, bad name,
    /// a configuration entry that cannot be removed...).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// No worker is registered under this UUID.
    #[error("no worker {uuid} is registered")]
    UnknownWorker {
        /// The UUID asked for.
        uuid: Uuid,
    },
    /// An allow-list entry is not an IP address or CIDR range, or there are too many.
    #[error("worker {uuid}: bad allowed IP: {detail}")]
    BadAllowedIp {
        /// The worker.
        uuid: Uuid,
        /// What is wrong.
        detail: String,
    },
    /// The certificate text is larger than [`STORED_CERT_BYTES_MAX`].
    #[error("worker {uuid}: the certificate is {bytes} bytes; at most {bytes_max} are stored")]
    CertTooLarge {
        /// The worker.
        uuid: Uuid,
        /// Its size.
        bytes: usize,
        /// The limit.
        bytes_max: usize,
    },
    /// The certificate file cannot be read or is not armored text.
    #[error("certificate file {path}: {detail}")]
    CertFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A stored registry entry does not decode.
    #[error(
        "registry entry {key} in the journal is damaged: {detail}; remove it with \
         `pt-master worker remove --id UUID`"
    )]
    BadEntry {
        /// The meta key.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// A stored registry entry decodes but its worker is refused (e.g. an expired certificate).
    #[error("registry entry {key}: {source}; remove it with `pt-master worker remove --id UUID`")]
    StoredWorker {
        /// The meta key.
        key: String,
        /// Why the worker is refused.
        #[source]
        source: RegistryError,
    },
    /// The journal cannot be opened.
    #[error(transparent)]
    Open(#[from] journal::OpenError),
    /// The journal cannot be read.
    #[error(transparent)]
    Read(#[from] journal::StorageFault),
    /// The journal refused the write.
    #[error(transparent)]
    Write(#[from] journal::WriteError),
    /// The journal is locked by another process, and the admin socket does not answer.
    #[error(
        "the journal {} is in use by another process (a master running on this data \
         directory?) but {} does not answer; retry once the master is up, or stop it and retry",
        journal.display(),
        socket.display()
    )]
    Busy {
        /// The journal file.
        journal: PathBuf,
        /// The admin socket.
        socket: PathBuf,
    },
    /// The data directory does not exist.
    #[error("data directory {} does not exist", path.display())]
    NoDataDir {
        /// The directory.
        path: PathBuf,
    },
    /// The admin socket could not be created, connected to, read or written.
    #[error("admin socket {}: cannot {action}: {source}", path.display())]
    Socket {
        /// The socket's path.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The master's answer is not an admin answer.
    #[error("admin socket {}: bad answer from the master: {detail}", path.display())]
    BadAnswer {
        /// The socket's path.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The running master refused the request.
    #[error("the master refused: {0}")]
    Refused(String),
    /// A task could not be run.
    #[error("internal: {0}")]
    Internal(String),
}

// ---------------------------------------------------------------------------------------------
// Storage.

/// The meta key of the worker `uuid`: `worker/<uuid>` (hyphenated, lower case).
pub fn registry_key(uuid: Uuid) -> String {
    format!("{REGISTRY_KEY_PREFIX}{}", uuid.hyphenated())
}

/// A worker of the registry as stored: what `pt-master worker add` was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWorker {
    /// The worker's UUID.
    pub uuid: Uuid,
    /// Its name (1 to 64 bytes).
    pub name: String,
    /// Its public certificate, ASCII-armored.
    pub cert: String,
    /// Where it may connect from.
    pub allowed_ips: Vec<IpNet>,
}

/// A bounds-checked reader over a stored entry.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, count: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(count).ok_or_else(|| format!("{what}: length overflow"))?;
        let out = self.bytes.get(self.at..end).ok_or_else(|| {
            format!("truncated in {what} (needs {count} bytes at offset {})", self.at)
        })?;
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let bytes = self.take(4, what)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
}

impl StoredWorker {
    /// Checks the entry (name, certificate, allow-list: exactly as the master checks its
    /// configuration at start-up, see [`RegisteredWorker::from_armored`]) and returns the
    /// worker the master admits.
    pub fn to_registered(&self) -> Result<RegisteredWorker, AdminError> {
        if self.cert.len() > STORED_CERT_BYTES_MAX {
            return Err(AdminError::CertTooLarge {
                uuid: self.uuid,
                bytes: self.cert.len(),
                bytes_max: STORED_CERT_BYTES_MAX,
            });
        }
        Ok(RegisteredWorker::from_armored(
            self.uuid,
            &self.name,
            &self.cert,
            self.allowed_ips.clone(),
        )?)
    }

    /// The stored bytes, all integers big-endian (documented in `docs/MASTER.md`):
    ///
    /// `version (1) = 1 || uuid (16) || name length N (1) || name (N, UTF-8) ||
    ///  certificate length C (u32) || certificate (C, armored UTF-8) || allow-list count K (1) ||
    ///  K × (family (1): 4 or 6 || address (4 or 16) || prefix length (1))`.
    ///
    /// Fails on a field over its limit (see [`StoredWorker::to_registered`] for the checks).
    pub fn encode(&self) -> Result<Vec<u8>, AdminError> {
        let uuid = self.uuid;
        let name_len = u8::try_from(self.name.len())
            .ok()
            .filter(|&n| n > 0 && usize::from(n) <= WORKER_NAME_BYTES_MAX)
            .ok_or(RegistryError::BadName { uuid, reason: "it must be 1 to 64 bytes" })?;
        let too_large = || AdminError::CertTooLarge {
            uuid,
            bytes: self.cert.len(),
            bytes_max: STORED_CERT_BYTES_MAX,
        };
        if self.cert.len() > STORED_CERT_BYTES_MAX {
            return Err(too_large());
        }
        let cert_len = u32::try_from(self.cert.len()).map_err(|_| too_large())?;
        let ip_count = u8::try_from(self.allowed_ips.len())
            .ok()
            .filter(|&n| n > 0 && usize::from(n) <= ALLOWED_IPS_PER_WORKER_MAX)
            .ok_or_else(|| AdminError::BadAllowedIp {
                uuid,
                detail: format!("1 to {ALLOWED_IPS_PER_WORKER_MAX} entries are needed"),
            })?;
        // Bounded: 64-byte name, 48 KiB certificate, 64 allow-list entries of at most 18 bytes.
        let mut out = Vec::with_capacity(1 + 16 + 1 + self.name.len() + 4 + self.cert.len() + 1);
        out.push(ENTRY_FORMAT_VERSION);
        out.extend_from_slice(uuid.as_bytes());
        out.push(name_len);
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(&cert_len.to_be_bytes());
        out.extend_from_slice(self.cert.as_bytes());
        out.push(ip_count);
        for net in &self.allowed_ips {
            match net.addr() {
                IpAddr::V4(v4) => {
                    out.push(4);
                    out.extend_from_slice(&v4.octets());
                }
                IpAddr::V6(v6) => {
                    out.push(6);
                    out.extend_from_slice(&v6.octets());
                }
            }
            out.push(net.prefix_len());
        }
        debug_assert!(out.len() <= journal::limits::META_VALUE_BYTES_MAX);
        Ok(out)
    }

    /// Decodes the value stored under `key`, checking every length, the version, the UTF-8 of
    /// the texts, that nothing follows the entry and that the UUID inside matches the key.
    /// Errors name the key. The certificate is not checked here: see
    /// [`StoredWorker::to_registered`].
    pub fn decode(key: &str, bytes: &[u8]) -> Result<Self, AdminError> {
        let bad = |detail: String| AdminError::BadEntry { key: key.to_owned(), detail };
        let key_uuid = key
            .strip_prefix(REGISTRY_KEY_PREFIX)
            .and_then(|text| Uuid::parse_str(text).ok())
            .ok_or_else(|| bad("the key is not worker/<uuid>".into()))?;
        let mut cursor = Cursor { bytes, at: 0 };
        let version = cursor.u8("the version").map_err(bad)?;
        if version != ENTRY_FORMAT_VERSION {
            return Err(bad(format!(
                "format version {version}; this build reads {ENTRY_FORMAT_VERSION}"
            )));
        }
        let uuid_bytes = cursor.take(16, "the UUID").map_err(bad)?;
        let uuid = Uuid::from_slice(uuid_bytes).map_err(|e| bad(e.to_string()))?;
        if uuid != key_uuid {
            return Err(bad(format!("it holds the UUID {uuid}")));
        }
        let name_len = usize::from(cursor.u8("the name length").map_err(bad)?);
        if name_len == 0 || name_len > WORKER_NAME_BYTES_MAX {
            return Err(bad(format!("name length {name_len}; 1 to 64 allowed")));
        }
        let name = cursor.take(name_len, "the name").map_err(bad)?;
        let name = std::str::from_utf8(name).map_err(|_| bad("the name is not UTF-8".into()))?;
        let cert_len = cursor.u32("the certificate length").map_err(bad)?;
        let cert_len = usize::try_from(cert_len)
            .ok()
            .filter(|&n| n > 0 && n <= STORED_CERT_BYTES_MAX)
            .ok_or_else(|| bad(format!("certificate length {cert_len}; 1 to 49152 allowed")))?;
        let cert = cursor.take(cert_len, "the certificate").map_err(bad)?;
        let cert =
            std::str::from_utf8(cert).map_err(|_| bad("the certificate is not UTF-8".into()))?;
        let ip_count = usize::from(cursor.u8("the allow-list count").map_err(bad)?);
        if ip_count == 0 || ip_count > ALLOWED_IPS_PER_WORKER_MAX {
            return Err(bad(format!("{ip_count} allow-list entries; 1 to 64 allowed")));
        }
        let mut allowed_ips = Vec::with_capacity(ip_count);
        for index in 0..ip_count {
            let addr = match cursor.u8("an address family").map_err(bad)? {
                4 => {
                    let b = cursor.take(4, "an IPv4 address").map_err(bad)?;
                    IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
                }
                6 => {
                    let b = cursor.take(16, "an IPv6 address").map_err(bad)?;
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(b);
                    IpAddr::V6(Ipv6Addr::from(octets))
                }
                family => {
                    return Err(bad(format!("allow-list entry {index}: address family {family}")));
                }
            };
            let prefix_len = cursor.u8("a prefix length").map_err(bad)?;
            let net = IpNet::new(addr, prefix_len).ok_or_else(|| {
                bad(format!("allow-list entry {index}: prefix length {prefix_len}"))
            })?;
            allowed_ips.push(net);
        }
        if cursor.at != bytes.len() {
            return Err(bad(format!("{} bytes after the entry", bytes.len() - cursor.at)));
        }
        Ok(Self { uuid, name: name.to_owned(), cert: cert.to_owned(), allowed_ips })
    }
}

/// Every worker stored in `journal`'s registry, decoded and checked.
pub fn load_stored(journal: &Journal) -> Result<Vec<RegisteredWorker>, AdminError> {
    let mut out = Vec::new();
    for (key, bytes) in journal.metas_with_prefix(REGISTRY_KEY_PREFIX)? {
        let stored = StoredWorker::decode(&key, &bytes)?;
        let worker = stored.to_registered().map_err(|e| match e {
            AdminError::Registry(source) => AdminError::StoredWorker { key: key.clone(), source },
            other => other,
        })?;
        out.push(worker);
    }
    Ok(out)
}

/// Checks `new` against `registry` and stores it in `journal`; returns the checked worker.
/// Nothing is stored when a check fails.
fn store_new(
    journal: &Journal,
    registry: &WorkerRegistry,
    new: &StoredWorker,
) -> Result<RegisteredWorker, AdminError> {
    let worker = new.to_registered()?;
    registry.check_add(&worker).map_err(|e| match e {
        // At start-up this pair means "in both"; here the new one is not stored yet.
        RegistryError::InConfigAndRegistry { uuid } => RegistryError::AlreadyInConfig { uuid },
        other => other,
    })?;
    let bytes = new.encode()?;
    journal.put_meta(&registry_key(new.uuid), &bytes)?;
    Ok(worker)
}

/// Checks that `uuid` is a registry worker of `registry` and deletes it from `journal`.
fn unstore(journal: &Journal, registry: &WorkerRegistry, uuid: Uuid) -> Result<(), AdminError> {
    match registry.get(uuid).map(RegisteredWorker::source) {
        None => Err(AdminError::UnknownWorker { uuid }),
        Some(WorkerSource::Config) => Err(RegistryError::ConfigEntry { uuid }.into()),
        Some(WorkerSource::Registry) => {
            journal.remove_meta(&registry_key(uuid))?;
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The live registry.

/// The master's worker registry while it runs: the configuration's entries plus the stored
/// registry, editable by the admin socket, with change notifications for the worker links.
#[derive(Debug)]
pub struct LiveRegistry {
    registry: RwLock<WorkerRegistry>,
    changes: watch::Sender<u64>,
    journal: Arc<Journal>,
    /// Serialises edits: check, durable write, then the in-memory change.
    edits: Mutex<()>,
}

impl LiveRegistry {
    /// The configuration's `[[workers]]` plus the workers stored in `journal`, all checked as
    /// at start-up (blocking: reads the journal and the certificate files). A UUID in both is
    /// an error.
    pub fn load(entries: &[WorkerConfig], journal: Arc<Journal>) -> Result<Self, AdminError> {
        let registry = WorkerRegistry::with_stored(entries, load_stored(&journal)?)?;
        let (changes, _) = watch::channel(0);
        Ok(Self { registry: RwLock::new(registry), changes, journal, edits: Mutex::new(()) })
    }

    fn read(&self) -> RwLockReadGuard<'_, WorkerRegistry> {
        // Every change is one insert or remove on a map, made after the checks: a panic
        // elsewhere cannot leave the registry half-changed.
        self.registry.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many workers are registered, from both sources.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no worker is registered.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// [`WorkerRegistry::check_admission`], returning a copy of the worker.
    pub fn check_admission(&self, uuid: Uuid, peer: IpAddr) -> Result<RegisteredWorker, AuthError> {
        self.read().check_admission(uuid, peer).cloned()
    }

    /// Whether the worker `uuid` with the certificate `fingerprint` may still be linked from
    /// `peer`: what a link checks when the registry changed.
    pub fn admits(&self, uuid: Uuid, fingerprint: &Fingerprint, peer: IpAddr) -> bool {
        self.read().check_admission(uuid, peer).is_ok_and(|w| w.fingerprint() == *fingerprint)
    }

    /// Whether the worker `uuid` is registered and may link from `peer`.
    pub fn allows(&self, uuid: Uuid, peer: IpAddr) -> bool {
        self.read().check_admission(uuid, peer).is_ok()
    }

    /// Whether some registered worker may link from `peer`: its connections wait for their
    /// first message in a pool of their own, which other addresses cannot fill.
    pub fn allows_any(&self, peer: IpAddr) -> bool {
        self.read().iter().any(|worker| worker.allows(peer))
    }

    /// True when some worker's allow-list names `peer` itself (a single address, not a
    /// range). See `RegisteredWorker::names`.
    pub fn names_any(&self, peer: IpAddr) -> bool {
        self.read().iter().any(|worker| worker.names(peer))
    }

    /// A receiver that sees every change of the registry. Subscribe before checking
    /// admission, so that no change between the check and the subscription is missed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Every registered worker, in UUID order.
    pub fn workers(&self) -> Vec<RegisteredWorker> {
        self.read().iter().cloned().collect()
    }

    /// Checks `new` as at start-up, refuses a UUID or certificate already registered, stores it
    /// durably, then admits it. Blocking (a journal commit): call it off the async threads.
    pub fn add(&self, new: &StoredWorker) -> Result<RegisteredWorker, AdminError> {
        let _edit = self.edits.lock().unwrap_or_else(PoisonError::into_inner);
        let worker = store_new(&self.journal, &self.read(), new)?;
        self.registry.write().unwrap_or_else(PoisonError::into_inner).add(worker.clone())?;
        self.changes.send_modify(|version| *version = version.wrapping_add(1));
        Ok(worker)
    }

    /// Deletes the registry worker `uuid` durably, then stops admitting it and tells its links
    /// to close. Workers of the configuration file cannot be removed. Blocking (a journal
    /// commit): call it off the async threads.
    pub fn remove(&self, uuid: Uuid) -> Result<(), AdminError> {
        let _edit = self.edits.lock().unwrap_or_else(PoisonError::into_inner);
        unstore(&self.journal, &self.read(), uuid)?;
        self.registry.write().unwrap_or_else(PoisonError::into_inner).remove(uuid)?;
        self.changes.send_modify(|version| *version = version.wrapping_add(1));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The protocol.

/// One admin request: one JSON object on one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum AdminRequest {
    /// `{"op":"list"}`: every registered worker.
    List,
    /// `{"op":"add","id":UUID,"name":NAME,"cert":ARMORED,"allowed_ips":[IP or CIDR...]}`.
    Add {
        /// The worker's UUID.
        id: Uuid,
        /// Its name.
        name: String,
        /// Its public certificate, ASCII-armored.
        cert: String,
        /// Where it may connect from: IPs or CIDR ranges.
        allowed_ips: Vec<String>,
    },
    /// `{"op":"remove","id":UUID}`.
    Remove {
        /// The worker's UUID.
        id: Uuid,
    },
}

/// A registered worker as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerView {
    /// The worker's UUID.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// The fingerprint of its certificate, upper-case hex.
    pub fingerprint: String,
    /// Where it may connect from, in CIDR notation.
    pub allowed_ips: Vec<String>,
    /// `config` or `registry`.
    pub source: WorkerSource,
    /// Whether it is linked to the master now; `null` when the master is not running.
    pub connected: Option<bool>,
}

impl WorkerView {
    fn new(worker: &RegisteredWorker, connected: Option<bool>) -> Self {
        Self {
            id: worker.uuid(),
            name: worker.name().to_owned(),
            fingerprint: worker.fingerprint().to_hex(),
            allowed_ips: worker.allowed_ips().iter().map(ToString::to_string).collect(),
            source: worker.source(),
            connected,
        }
    }
}

/// One admin answer: one JSON object on one line. `ok` is false exactly when `error` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminResponse {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `list`: the workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<Vec<WorkerView>>,
    /// `add`: the worker added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added: Option<WorkerView>,
    /// `remove`: the worker removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<Uuid>,
    /// `remove`: whether it was linked (its link is being closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub was_connected: Option<bool>,
}

impl AdminResponse {
    fn error(message: impl Into<String>) -> Self {
        Self { ok: false, error: Some(message.into()), ..Self::default() }
    }

    /// The answer as one line of JSON, with its newline.
    fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_else(|e| {
            format!(r#"{{"ok":false,"error":"cannot encode the answer: {e}"}}"#).into_bytes()
        });
        line.push(b'\n');
        line
    }
}

/// Parses an allow-list given as text.
fn parse_allowed_ips(uuid: Uuid, texts: &[String]) -> Result<Vec<IpNet>, AdminError> {
    if texts.is_empty() || texts.len() > ALLOWED_IPS_PER_WORKER_MAX {
        return Err(AdminError::BadAllowedIp {
            uuid,
            detail: format!(
                "{} entries; 1 to {ALLOWED_IPS_PER_WORKER_MAX} are needed",
                texts.len()
            ),
        });
    }
    texts
        .iter()
        .map(|text| {
            text.parse().map_err(|e: crate::config::IpNetError| AdminError::BadAllowedIp {
                uuid,
                detail: e.to_string(),
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The server side.

/// Connected workers, by UUID, each with its live links in the order they were made: the id of
/// each link and what its hello said (the server's list of linked workers). A worker that
/// links again before its old link is seen to end has two for a while; it is listed, with its
/// newest link's details, while any is up, and unlisted once the last one ends.
pub type ConnectedWorkers = Arc<Mutex<BTreeMap<Uuid, Vec<(u64, net::WorkerInfo)>>>>;

/// What the admin socket serves.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The live registry.
    pub registry: Arc<LiveRegistry>,
    /// The workers linked now.
    pub connected: ConnectedWorkers,
}

/// The admin socket `DATA_DIR/admin.sock`, bound and listening.
#[derive(Debug)]
pub struct AdminSocket {
    listener: UnixListener,
    path: PathBuf,
}

/// The path of the admin socket of the data directory `dir`.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join(SOCKET_FILE_NAME)
}

impl AdminSocket {
    /// Binds `dir/admin.sock` with mode 0600, atomically: the socket is bound under a
    /// temporary name, restricted, then renamed into place. A stale socket left by a master
    /// that did not stop cleanly is replaced; a socket that answers, or a file that is not a
    /// socket, is an error. Call it while holding the journal (only one master per directory).
    pub fn bind(dir: &Path) -> Result<Self, AdminError> {
        let path = socket_path(dir);
        // The socket's mode is its authentication, but a directory others may write in lets
        // them put a socket of their own in its place, which `pt-master worker` would talk to.
        {
            use std::os::unix::fs::PermissionsExt as _;
            if let Ok(metadata) = std::fs::metadata(dir) {
                let mode = metadata.permissions().mode() & 0o777;
                if mode & 0o022 != 0 {
                    warn!(dir = %dir.display(), mode = format!("{mode:o}"), "the data directory is writable by other users, who could replace its admin socket with their own: make it owner-only (chmod 700)");
                }
            }
        }
        let socket_err = |action, source| AdminError::Socket { path: path.clone(), action, source };
        match std::fs::symlink_metadata(&path) {
            Ok(metadata) => {
                use std::os::unix::fs::FileTypeExt as _;
                if !metadata.file_type().is_socket() {
                    return Err(socket_err(
                        "replace it",
                        io::Error::new(io::ErrorKind::AlreadyExists, "it is not a socket"),
                    ));
                }
                if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                    return Err(socket_err(
                        "replace it",
                        io::Error::new(io::ErrorKind::AddrInUse, "another process answers on it"),
                    ));
                }
                std::fs::remove_file(&path)
                    .map_err(|e| socket_err("remove the stale socket", e))?;
                info!(path = %path.display(), "replaced a stale admin socket");
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(socket_err("inspect", e)),
        }
        // Bound inside a directory only the owner can enter, restricted, then renamed into
        // place: a socket is listening from `bind` on, before its mode can be set, and Linux
        // checks the mode at `connect`, so a connection queued in that moment under a loose
        // umask would be served. Through a 0700 directory nobody else can reach it at all.
        // `.admin.d/s` is no longer than `admin.sock`: a path short enough for one fits both.
        let tmp_dir = dir.join(".admin.d");
        let tmp = tmp_dir.join("s");
        match std::fs::remove_dir_all(&tmp_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(socket_err("remove the temporary directory", e)),
        }
        {
            use std::os::unix::fs::DirBuilderExt as _;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&tmp_dir)
                .map_err(|e| socket_err("create the temporary directory", e))?;
        }
        let placed =
            UnixListener::bind(&tmp).map_err(|e| socket_err("bind", e)).and_then(|listener| {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| socket_err("restrict to mode 0600", e))?;
                std::fs::rename(&tmp, &path).map_err(|e| socket_err("rename into place", e))?;
                Ok(listener)
            });
        let _ = std::fs::remove_dir_all(&tmp_dir);
        Ok(Self { listener: placed?, path })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves admin connections until `stop` turns true, then removes the socket file.
    /// At most [`CONNECTIONS_MAX`] connections at once; each is closed after [`IDLE_TIMEOUT`]
    /// without a request, or on shutdown.
    pub async fn serve(self, state: AdminState, mut stop: watch::Receiver<bool>) {
        info!(path = %self.path.display(), "admin socket listening");
        let connections = Arc::new(Semaphore::new(CONNECTIONS_MAX));
        let state = Arc::new(state);
        // Joined before `serve` returns: a connection task holds the registry, and with it the
        // journal, which the master closes when it stops.
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                _ = stop.wait_for(|stop| *stop) => break,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                        warn!("admin connection limit reached; refusing");
                        continue;
                    };
                    let state = Arc::clone(&state);
                    let stop = stop.clone();
                    tasks.spawn(
                        async move {
                            serve_connection(stream, &state, stop).await;
                            drop(permit);
                        }
                        .instrument(info_span!("admin")),
                    );
                    // Ended ones are reaped as new ones come.
                    while tasks.try_join_next().is_some() {}
                }
                Err(e) => {
                    warn!(cause = %e, "admin accept failed");
                    tokio::select! {
                        _ = stop.wait_for(|stop| *stop) => break,
                        () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
            }
        }
        // Every connection watches the stop, reading and writing.
        while tasks.join_next().await.is_some() {}
        if let Err(e) = std::fs::remove_file(&self.path) {
            warn!(path = %self.path.display(), cause = %e, "cannot remove the admin socket");
        }
    }
}

/// What reading one request line gave.
enum Line {
    /// A line (without its newline).
    Request(Vec<u8>),
    /// Longer than [`REQUEST_BYTES_MAX`].
    TooLong,
    /// The client closed the connection.
    Closed,
}

async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Line> {
    let mut line = Vec::new();
    let limit = u64::try_from(REQUEST_BYTES_MAX).unwrap_or(u64::MAX).saturating_add(1);
    let read = reader.take(limit).read_until(b'\n', &mut line).await?;
    if read == 0 {
        return Ok(Line::Closed);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if line.len() > REQUEST_BYTES_MAX {
        return Ok(Line::TooLong);
    }
    Ok(Line::Request(line))
}

async fn serve_connection(stream: UnixStream, state: &AdminState, mut stop: watch::Receiver<bool>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let line = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            line = tokio::time::timeout(IDLE_TIMEOUT, read_line(&mut reader)) => line,
        };
        let (answer, last) = match line {
            Err(_) => {
                debug!("idle admin connection closed");
                return;
            }
            Ok(Err(e)) => {
                debug!(cause = %e, "admin connection failed");
                return;
            }
            Ok(Ok(Line::Closed)) => return,
            Ok(Ok(Line::TooLong)) => {
                warn!("admin request too long; closing");
                let message = format!("request longer than {REQUEST_BYTES_MAX} bytes");
                (AdminResponse::error(message), true)
            }
            Ok(Ok(Line::Request(line))) => (handle_line(state, &line).await, false),
        };
        // A client that does not read its answers is closed after the idle limit, and a stop
        // does not wait for it.
        let bytes = answer.to_line();
        let wrote = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            wrote = tokio::time::timeout(IDLE_TIMEOUT, write.write_all(&bytes)) => wrote,
        };
        if !matches!(wrote, Ok(Ok(()))) || last {
            if wrote.is_err() {
                debug!("admin client does not read its answers; closing");
            }
            return;
        }
    }
}

/// Answers one request line; never fails, never panics.
async fn handle_line(state: &AdminState, line: &[u8]) -> AdminResponse {
    let request = match serde_json::from_slice::<AdminRequest>(line) {
        Ok(request) => request,
        Err(e) => {
            warn!(cause = %e, "bad admin request");
            return AdminResponse::error(format!(
                "bad request: {e}; expected one JSON object per line with \"op\": \"list\", \
                 \"add\" or \"remove\""
            ));
        }
    };
    match handle(state, request).await {
        Ok(response) => response,
        Err(e) => {
            warn!(cause = %e, "admin request refused");
            AdminResponse::error(e.to_string())
        }
    }
}

async fn handle(state: &AdminState, request: AdminRequest) -> Result<AdminResponse, AdminError> {
    let is_connected = |uuid: Uuid| {
        state.connected.lock().unwrap_or_else(PoisonError::into_inner).contains_key(&uuid)
    };
    match request {
        AdminRequest::List => {
            let workers = state
                .registry
                .workers()
                .iter()
                .map(|w| WorkerView::new(w, Some(is_connected(w.uuid()))))
                .collect();
            Ok(AdminResponse { ok: true, workers: Some(workers), ..AdminResponse::default() })
        }
        AdminRequest::Add { id, name, cert, allowed_ips } => {
            let allowed_ips = parse_allowed_ips(id, &allowed_ips)?;
            let new = StoredWorker { uuid: id, name, cert, allowed_ips };
            let registry = Arc::clone(&state.registry);
            let worker = tokio::task::spawn_blocking(move || registry.add(&new))
                .await
                .map_err(|e| AdminError::Internal(e.to_string()))??;
            info!(
                uuid = %worker.uuid(),
                name = worker.name(),
                fingerprint = %worker.fingerprint(),
                "worker added by the operator"
            );
            let view = WorkerView::new(&worker, Some(is_connected(id)));
            Ok(AdminResponse { ok: true, added: Some(view), ..AdminResponse::default() })
        }
        AdminRequest::Remove { id } => {
            // Asked first: once removed, the link closes and leaves the list.
            let was_connected = is_connected(id);
            let registry = Arc::clone(&state.registry);
            tokio::task::spawn_blocking(move || registry.remove(id))
                .await
                .map_err(|e| AdminError::Internal(e.to_string()))??;
            info!(uuid = %id, was_connected, "worker removed by the operator");
            Ok(AdminResponse {
                ok: true,
                removed: Some(id),
                was_connected: Some(was_connected),
                ..AdminResponse::default()
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The client side: the `pt-master worker ...` commands.

/// What the worker commands act on.
#[derive(Debug, Clone)]
pub struct AdminTarget {
    /// The master's data directory (journal, `admin.sock`).
    pub data_dir: PathBuf,
    /// The configuration's `[[workers]]`, for offline listings and checks (empty when no
    /// configuration file was given).
    pub config_workers: Vec<WorkerConfig>,
}

impl AdminTarget {
    fn socket(&self) -> PathBuf {
        socket_path(&self.data_dir)
    }

    fn journal(&self) -> PathBuf {
        journal::path_in(&self.data_dir)
    }
}

/// How a command was carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Through the running master's admin socket.
    Master,
    /// Directly on the journal file: the master is not running.
    Journal,
}

/// A worker to register.
#[derive(Debug, Clone)]
pub struct NewWorker {
    /// Its UUID.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Its public certificate, ASCII-armored (see [`read_cert_file`]).
    pub cert: String,
    /// Where it may connect from.
    pub allowed_ips: Vec<IpNet>,
}

/// Reads an armored certificate file (at most [`STORED_CERT_BYTES_MAX`] bytes of UTF-8 text).
/// The certificate itself is checked by the master (or by the offline edit).
pub fn read_cert_file(path: &Path) -> Result<String, AdminError> {
    let bad = |detail: String| AdminError::CertFile { path: path.to_path_buf(), detail };
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut bytes = Vec::new();
    let limit = u64::try_from(STORED_CERT_BYTES_MAX).unwrap_or(u64::MAX).saturating_add(1);
    file.take(limit).read_to_end(&mut bytes).map_err(|e| bad(e.to_string()))?;
    if bytes.len() > STORED_CERT_BYTES_MAX {
        return Err(bad(format!("larger than {STORED_CERT_BYTES_MAX} bytes")));
    }
    String::from_utf8(bytes).map_err(|_| {
        bad("not ASCII-armored text (a binary certificate?); give worker.pub.asc".into())
    })
}

/// Sends one request to the master at `socket`. `Ok(None)` when no master listens there (no
/// socket file, or a stale one).
pub fn ask_master(
    socket: &Path,
    request: &AdminRequest,
) -> Result<Option<AdminResponse>, AdminError> {
    let socket_err =
        |action, source| AdminError::Socket { path: socket.to_path_buf(), action, source };
    let stream = match std::os::unix::net::UnixStream::connect(socket) {
        Ok(stream) => stream,
        // No socket, a stale one, or a path too long to be one (a master there runs without
        // it, docs/MASTER.md): no master answers, and the offline edit finds the journal in use
        // if one is running.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound
                    | io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::InvalidInput
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(socket_err("connect", e)),
    };
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(|e| socket_err("set a timeout", e))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT)).map_err(|e| socket_err("set a timeout", e))?;
    let mut line = serde_json::to_vec(request).map_err(|e| AdminError::Internal(e.to_string()))?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(|e| socket_err("send the request", e))?;
    let mut answer = Vec::new();
    let limit = u64::try_from(RESPONSE_BYTES_MAX).unwrap_or(u64::MAX).saturating_add(1);
    io::BufReader::new(&stream)
        .take(limit)
        .read_until(b'\n', &mut answer)
        .map_err(|e| socket_err("read the answer", e))?;
    let bad = |detail: String| AdminError::BadAnswer { path: socket.to_path_buf(), detail };
    if answer.last() != Some(&b'\n') {
        return Err(bad(if answer.len() > RESPONSE_BYTES_MAX {
            format!("longer than {RESPONSE_BYTES_MAX} bytes")
        } else {
            "the master closed the connection without answering".into()
        }));
    }
    let response: AdminResponse =
        serde_json::from_slice(&answer).map_err(|e| bad(e.to_string()))?;
    if !response.ok {
        return Err(AdminError::Refused(
            response.error.unwrap_or_else(|| "no reason given".into()),
        ));
    }
    Ok(Some(response))
}

/// How an offline command opens the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offline {
    /// To read it (`list`): never written (`Journal::open_read_only`); `Ok(None)` without one.
    Read,
    /// To edit it (`remove`); `Ok(None)` without one.
    Edit,
    /// To edit it, created when missing (`add`).
    Create,
}

/// Opens the target's journal for an offline command.
fn open_offline(target: &AdminTarget, how: Offline) -> Result<Option<Journal>, AdminError> {
    if !target.data_dir.is_dir() {
        return Err(AdminError::NoDataDir { path: target.data_dir.clone() });
    }
    let path = target.journal();
    if how != Offline::Create && !path.exists() {
        return Ok(None);
    }
    // An offline edit never rolls back a last commit that does not verify: that is the master's
    // recovery to make, and say.
    let config = JournalConfig {
        unverified_last_commit: journal::UnverifiedLastCommit::Refuse,
        ..JournalConfig::default()
    };
    let opened = match how {
        Offline::Read => Journal::open_read_only(&path, config),
        Offline::Edit | Offline::Create => Journal::open_unrecovered(&path, config),
    };
    match opened {
        Ok(journal) => Ok(Some(journal)),
        Err(journal::OpenError::Busy { .. }) => {
            Err(AdminError::Busy { journal: path, socket: target.socket() })
        }
        Err(e) => Err(e.into()),
    }
}

/// The workers stored in `journal` (none without a journal file).
fn stored_offline(journal: Option<&Journal>) -> Result<Vec<RegisteredWorker>, AdminError> {
    journal.map_or_else(|| Ok(Vec::new()), load_stored)
}

/// The offline registry: the configuration's entries plus the stored ones.
fn offline_registry(
    target: &AdminTarget,
    journal: Option<&Journal>,
) -> Result<WorkerRegistry, AdminError> {
    Ok(WorkerRegistry::with_stored(&target.config_workers, stored_offline(journal)?)?)
}

fn expect<T>(socket: &Path, field: Option<T>, name: &str) -> Result<T, AdminError> {
    field.ok_or_else(|| AdminError::BadAnswer {
        path: socket.to_path_buf(),
        detail: format!("no {name} in the answer"),
    })
}

/// `pt-master worker list`: every registered worker, from the running master (with whether it
/// is connected) or, when the master is not running, from the journal and the configuration.
pub fn list_workers(target: &AdminTarget) -> Result<(Vec<WorkerView>, Via), AdminError> {
    let socket = target.socket();
    if let Some(answer) = ask_master(&socket, &AdminRequest::List)? {
        return Ok((expect(&socket, answer.workers, "workers")?, Via::Master));
    }
    // Offline, the two sources are listed as they are, without the start-up's checks between
    // them: a listing is how an operator finds the entry that stops the start-up
    // ([`listing_problems`] names it).
    let journal = open_offline(target, Offline::Read)?;
    let configured = WorkerRegistry::from_entries(&target.config_workers)?;
    let stored = stored_offline(journal.as_ref())?;
    let mut workers: Vec<WorkerView> =
        configured.iter().chain(stored.iter()).map(|w| WorkerView::new(w, None)).collect();
    workers.sort_by_key(|w| (w.id, w.source));
    Ok((workers, Via::Journal))
}

/// What in a listing would stop the master at start-up: a UUID in both the configuration and
/// the registry, or one certificate used by two workers. One line each, saying how to fix it.
/// A running master's listing has none (it could not have started).
pub fn listing_problems(workers: &[WorkerView]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, worker) in workers.iter().enumerate() {
        for other in &workers[i + 1..] {
            if worker.id == other.id {
                problems.push(format!(
                    "worker {} is in both the configuration and the registry: the master will \
                     not start until one goes (`pt-master worker remove --id {}` removes the \
                     registry's copy)",
                    worker.id, worker.id
                ));
            } else if worker.fingerprint == other.fingerprint {
                problems.push(format!(
                    "workers {} and {} use the same certificate {}: the master will not start \
                     until one of them goes",
                    worker.id, other.id, worker.fingerprint
                ));
            }
        }
    }
    problems
}

/// `pt-master worker add`: checks and registers a worker, through the running master or
/// offline.
pub fn add_worker(target: &AdminTarget, new: NewWorker) -> Result<(WorkerView, Via), AdminError> {
    let socket = target.socket();
    let request = AdminRequest::Add {
        id: new.id,
        name: new.name.clone(),
        cert: new.cert.clone(),
        allowed_ips: new.allowed_ips.iter().map(ToString::to_string).collect(),
    };
    if let Some(answer) = ask_master(&socket, &request)? {
        return Ok((expect(&socket, answer.added, "added")?, Via::Master));
    }
    let journal = open_offline(target, Offline::Create)?
        .ok_or_else(|| AdminError::Internal("the journal was not created".into()))?;
    let registry = offline_registry(target, Some(&journal))?;
    let stored =
        StoredWorker { uuid: new.id, name: new.name, cert: new.cert, allowed_ips: new.allowed_ips };
    let worker = store_new(&journal, &registry, &stored)?;
    Ok((WorkerView::new(&worker, None), Via::Journal))
}

/// `pt-master worker remove`: removes a registry worker, through the running master (which
/// closes its link) or offline. Returns whether it was connected (`None` offline).
pub fn remove_worker(target: &AdminTarget, uuid: Uuid) -> Result<(Option<bool>, Via), AdminError> {
    let socket = target.socket();
    if let Some(answer) = ask_master(&socket, &AdminRequest::Remove { id: uuid })? {
        return Ok((answer.was_connected, Via::Master));
    }
    let in_config = target.config_workers.iter().any(|w| w.id == uuid);
    let Some(journal) = open_offline(target, Offline::Edit)? else {
        return Err(if in_config {
            RegistryError::ConfigEntry { uuid }.into()
        } else {
            AdminError::UnknownWorker { uuid }
        });
    };
    // The registry is not built here, so that a damaged or refused entry can still be removed,
    // and so can the registry copy of a worker the configuration lists too (the state that
    // stops the master at start-up, whose message says to remove it).
    if journal.remove_meta(&registry_key(uuid))? {
        Ok((None, Via::Journal))
    } else if in_config {
        Err(RegistryError::ConfigEntry { uuid }.into())
    } else {
        Err(AdminError::UnknownWorker { uuid })
    }
}

/// The listing as a table, one worker per line, for `pt-master worker list`.
pub fn render_table(workers: &[WorkerView]) -> String {
    let mut rows = vec![[
        "ID".to_owned(),
        "NAME".to_owned(),
        "SOURCE".to_owned(),
        "CONNECTED".to_owned(),
        "FINGERPRINT".to_owned(),
        "ALLOWED IPS".to_owned(),
    ]];
    for worker in workers {
        let connected = match worker.connected {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        rows.push([
            worker.id.to_string(),
            worker.name.clone(),
            worker.source.to_string(),
            connected.to_owned(),
            worker.fingerprint.clone(),
            worker.allowed_ips.join(","),
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (index, (cell, width)) in row.iter().zip(widths).enumerate() {
            if index + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use openpgp::cert::{CertBuilder, CipherSuite};
    use openpgp::serialize::SerializeInto as _;
    use proptest::prelude::*;

    fn view(id: u128, fingerprint: &str, source: WorkerSource) -> WorkerView {
        WorkerView {
            id: Uuid::from_u128(id),
            name: format!("w{id}"),
            fingerprint: fingerprint.to_owned(),
            allowed_ips: vec!["127.0.0.1/32".to_owned()],
            source,
            connected: None,
        }
    }

    #[test]
    fn listing_problems_name_what_stops_the_start_up() {
        let clean = [
            view(1, "AA", WorkerSource::Config),
            view(2, "BB", WorkerSource::Registry),
            view(3, "CC", WorkerSource::Registry),
        ];
        assert!(listing_problems(&clean).is_empty());

        // One UUID in both sources (with one certificate, as it would be).
        let both = [view(1, "AA", WorkerSource::Config), view(1, "AA", WorkerSource::Registry)];
        let problems = listing_problems(&both);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let id = Uuid::from_u128(1).to_string();
        assert!(problems[0].contains(&id) && problems[0].contains("both"), "{problems:?}");

        // One certificate used by two workers, across or within the sources.
        let shared = [
            view(1, "AA", WorkerSource::Config),
            view(2, "AA", WorkerSource::Registry),
            view(3, "CC", WorkerSource::Registry),
        ];
        let problems = listing_problems(&shared);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("same certificate AA"), "{problems:?}");
        assert!(problems[0].contains(&Uuid::from_u128(2).to_string()), "{problems:?}");
    }

    fn armored_worker_cert() -> String {
        let (cert, _) = CertBuilder::new()
            .set_cipher_suite(CipherSuite::Cv25519)
            .add_userid("test worker")
            .add_signing_subkey()
            .add_transport_encryption_subkey()
            .generate()
            .unwrap();
        String::from_utf8(cert.armored().to_vec().unwrap()).unwrap()
    }

    fn sample() -> StoredWorker {
        StoredWorker {
            uuid: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            name: "eu-1".into(),
            cert: "CERT".into(),
            allowed_ips: vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()],
        }
    }

    #[test]
    fn entry_layout_is_fixed() {
        let bytes = sample().encode().unwrap();
        let mut expected = vec![1];
        expected.extend_from_slice(&0x0123_4567_89ab_cdef_0123_4567_89ab_cdef_u128.to_be_bytes());
        expected.extend_from_slice(&[4, b'e', b'u', b'-', b'1']);
        expected.extend_from_slice(&[0, 0, 0, 4, b'C', b'E', b'R', b'T']);
        expected.extend_from_slice(&[2, 4, 10, 0, 0, 0, 8, 6]);
        expected.extend_from_slice(&[0; 15]);
        expected.extend_from_slice(&[1, 128]);
        assert_eq!(bytes, expected);
        let key = registry_key(sample().uuid);
        assert_eq!(key, "worker/01234567-89ab-cdef-0123-456789abcdef");
        assert_eq!(StoredWorker::decode(&key, &bytes).unwrap(), sample());
    }

    #[test]
    fn damaged_entries_are_clear_errors_naming_the_key() {
        let key = registry_key(sample().uuid);
        let good = sample().encode().unwrap();
        let mut cases: Vec<(Vec<u8>, &str)> = vec![
            (Vec::new(), "truncated"),
            (vec![2], "format version 2"),
            (good[..good.len() - 1].to_vec(), "truncated"),
            ([good.clone(), vec![0]].concat(), "1 bytes after the entry"),
        ];
        let mut other_uuid = good.clone();
        other_uuid[1] ^= 0xff;
        cases.push((other_uuid, "it holds the UUID"));
        let mut zero_name = good.clone();
        zero_name[17] = 0;
        cases.push((zero_name, "name length 0"));
        let mut huge_cert = good.clone();
        huge_cert[22..26].copy_from_slice(&u32::MAX.to_be_bytes());
        cases.push((huge_cert, "certificate length 4294967295"));
        let mut family = good.clone();
        family[31] = 5;
        cases.push((family, "address family 5"));
        let mut prefix = good.clone();
        prefix[36] = 33;
        cases.push((prefix, "prefix length 33"));
        for (bytes, needle) in cases {
            let err = StoredWorker::decode(&key, &bytes).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, AdminError::BadEntry { .. }), "{text}");
            assert!(text.contains(&key) && text.contains(needle), "{needle}: {text}");
        }
        let err = StoredWorker::decode("worker/not-a-uuid", &good).unwrap_err();
        assert!(err.to_string().contains("worker/not-a-uuid"), "{err}");
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = StoredWorker::decode(&registry_key(sample().uuid), &bytes);
        }

        #[test]
        fn entries_round_trip(
            name in "[a-z0-9 -]{1,60}",
            cert in "[A-Za-z0-9+/=\n-]{1,300}",
            ips in proptest::collection::vec((any::<[u8; 4]>(), 0u8..=32), 1..8),
        ) {
            let stored = StoredWorker {
                uuid: Uuid::from_u128(7),
                name: name.trim().to_owned() + "x",
                cert,
                allowed_ips: ips
                    .into_iter()
                    .map(|(addr, len)| IpNet::new(IpAddr::from(addr), len).unwrap())
                    .collect(),
            };
            let bytes = stored.encode().unwrap();
            prop_assert!(bytes.len() <= journal::limits::META_VALUE_BYTES_MAX);
            prop_assert_eq!(StoredWorker::decode(&registry_key(stored.uuid), &bytes).unwrap(), stored);
        }
    }

    #[test]
    fn requests_parse_and_garbage_is_refused() {
        let list: AdminRequest = serde_json::from_str(r#"{"op":"list"}"#).unwrap();
        assert_eq!(list, AdminRequest::List);
        let remove: AdminRequest =
            serde_json::from_str(r#"{"op":"remove","id":"01234567-89ab-cdef-0123-456789abcdef"}"#)
                .unwrap();
        assert_eq!(remove, AdminRequest::Remove { id: sample().uuid });
        for bad in [
            "",
            "garbage",
            "{}",
            r#"{"op":"explode"}"#,
            r#"{"op":"remove","id":"nope"}"#,
            r#"{"op":"add","id":"01234567-89ab-cdef-0123-456789abcdef"}"#,
            "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        ] {
            assert!(serde_json::from_str::<AdminRequest>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_live_registry_stores_admits_and_notifies() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(
            Journal::open_unrecovered(journal::path_in(dir.path()), JournalConfig::default())
                .unwrap(),
        );
        let live = LiveRegistry::load(&[], Arc::clone(&journal)).unwrap();
        assert!(live.is_empty());
        let mut changes = live.subscribe();
        let new = StoredWorker { cert: armored_worker_cert(), ..sample() };
        let loopback: IpAddr = "::1".parse().unwrap();
        let worker = live.add(&new).unwrap();
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        assert_eq!(worker.source(), WorkerSource::Registry);
        assert!(live.admits(new.uuid, &worker.fingerprint(), loopback));
        assert!(!live.admits(new.uuid, &worker.fingerprint(), "192.0.2.1".parse().unwrap()));
        let err = live.add(&new).unwrap_err();
        assert!(matches!(err, AdminError::Registry(RegistryError::DuplicateUuid { .. })), "{err}");
        assert!(!changes.has_changed().unwrap(), "a refused add changes nothing");

        // Stored durably: a new live registry over the same journal has it.
        assert_eq!(LiveRegistry::load(&[], Arc::clone(&journal)).unwrap().len(), 1);

        live.remove(new.uuid).unwrap();
        assert!(changes.has_changed().unwrap());
        assert!(!live.admits(new.uuid, &worker.fingerprint(), loopback));
        let err = live.remove(new.uuid).unwrap_err();
        assert!(matches!(err, AdminError::UnknownWorker { .. }), "{err}");
        assert!(LiveRegistry::load(&[], journal).unwrap().is_empty());
    }

    /// redb panics on a page damaged while the master runs (docs/RELIABILITY.md). An edit that
    /// meets one fails, and the journal halts its writes (`Journal`'s meta writes catch the
    /// panic while they hold the writer): the panic does not reach the admin task, and no
    /// interval commits to the file after it.
    #[test]
    fn an_edit_that_meets_a_damaged_journal_halts_its_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal::path_in(dir.path());
        // No page cache in redb, so that the damage is read.
        let config = JournalConfig { cache_bytes: 0, ..JournalConfig::default() };
        let journal = Arc::new(Journal::open_unrecovered(&path, config).unwrap());
        let live = LiveRegistry::load(&[], Arc::clone(&journal)).unwrap();
        let first = StoredWorker { cert: armored_worker_cert(), ..sample() };
        live.add(&first).unwrap();

        journal::test_util::zero_all_but_redb_header(&path).unwrap();

        let second = StoredWorker {
            uuid: Uuid::from_u128(2),
            name: "eu-2".into(),
            cert: armored_worker_cert(),
            ..sample()
        };
        let err = live.add(&second).unwrap_err();
        assert!(matches!(err, AdminError::Write(journal::WriteError::Panicked { .. })), "{err}");
        let cause = journal.halted().expect("the journal still takes writes after the damage");
        assert!(cause.contains("redb panicked while storing a meta value"), "{cause}");
        assert!(!live.admits(
            second.uuid,
            &second.to_registered().unwrap().fingerprint(),
            "::1".parse().unwrap()
        ));
        // Every later write is refused, the remove of the stored worker included.
        let err = live.remove(first.uuid).unwrap_err();
        assert!(matches!(err, AdminError::Write(journal::WriteError::Halted { .. })), "{err}");
        let batch = [engine::Event::AssetListed(engine::AssetListed {
            symbol: engine::Symbol::new("AAPL").unwrap(),
            at: engine::Timestamp(1),
        })];
        let refused = journal.append_batch(&batch, engine::Timestamp(1));
        assert!(refused.is_err(), "an interval could still commit: {refused:?}");
        assert_eq!(live.len(), 1);
    }

    #[test]
    fn table_lists_every_column() {
        let view = WorkerView {
            id: sample().uuid,
            name: "eu-1".into(),
            fingerprint: "ABCD".into(),
            allowed_ips: vec!["10.0.0.0/8".into(), "::1/128".into()],
            source: WorkerSource::Registry,
            connected: Some(true),
        };
        let table = render_table(&[view]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ID "), "{table}");
        for needle in ["01234567-89ab-cdef-0123-456789abcdef", "eu-1", "registry", "yes", "ABCD"] {
            assert!(lines[1].contains(needle), "{needle}: {table}");
        }
        assert!(lines[1].ends_with("10.0.0.0/8,::1/128"), "{table}");
    }
}
