//! Worker admission and master authentication: only registered workers, from allowed
//! addresses, holding their key; and a master that proves it holds the master key.
//!
//! The master keeps a [`WorkerRegistry`] built from its configuration (`[[workers]]` entries:
//! a UUID, the path of the worker's armored OpenPGP certificate and an IP allow-list) and from
//! the workers registered with `pt-master worker add` (stored in the journal, see
//! [`crate::admin`]; [`RegisteredWorker::from_armored`]), and its
//! own [`MasterIdentity`] (`DATA_DIR/master.key`, whose certificate `master.pub.asc` the workers
//! trust). A worker connecting to the master goes through the mutual handshake described in
//! `docs/WORKER_AUTH.md`:
//!
//! 1. Hello{uuid, protocol version, client address, worker nonce}:
//!    [`WorkerRegistry::check_admission`].
//! 2. Challenge{master nonce, master proof, sealed link key}: [`new_link_key`] then
//!    [`seal_link_key`], [`new_challenge`], then [`MasterIdentity::sign_worker_challenge`] over
//!    both nonces, the Hello and the sealed key (so the proof vouches for that exact key).
//! 3. Proof{signature} (sent only once the worker has verified the master's proof):
//!    [`verify_proof`] against the registered certificate.
//! 4. Accepted{}: the link is keyed with the key sealed in step 2.
//!
//! Every function here is synchronous and does no network IO; the only IO is reading the
//! certificate files in [`WorkerRegistry::from_entries`] and the master key files in
//! [`MasterIdentity::load_or_generate`]. Time comes in as an argument.
//! Errors carry UUIDs, addresses and paths, never key material.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use net::LinkKey;
use openpgp::cert::{CertBuilder, CipherSuite};
use openpgp::parse::Parse;
use openpgp::serialize::SerializeInto;
use openpgp::serialize::stream::{Encryptor, LiteralWriter, Message};
use openpgp::{Cert, Fingerprint};
use sequoia_openpgp as openpgp;
use uuid::Uuid;

use crate::config::{IpNet, WorkerConfig};
use crate::pgp::{self, ClientAddrTooLong, POLICY, ProofError};

/// Domain separator that starts every worker authentication message (what workers sign).
pub const AUTH_DOMAIN: &[u8] = b"papertrader-worker-auth-v1\0";
/// Domain separator that starts every master authentication message (what the master signs).
pub const MASTER_AUTH_DOMAIN: &[u8] = b"papertrader-master-auth-v1\0";
/// File name of the master's armored secret key inside its data directory.
pub const MASTER_KEY_FILE_NAME: &str = "master.key";
/// File name of the master's armored public certificate inside its data directory: the file
/// workers are given to trust (`--master-cert` / `master_cert`).
pub const MASTER_CERT_FILE_NAME: &str = "master.pub.asc";
/// Largest master key file read from disk.
pub const MASTER_KEY_FILE_BYTES_MAX: u64 = 64 * 1024;
/// User ID of the master's key.
pub const MASTER_USER_ID: &str = "PaperTrader master";
/// Length of a challenge nonce.
pub const NONCE_BYTES: usize = 32;
/// Length of a link key.
pub const LINK_KEY_BYTES: usize = 32;
/// Length of the BLAKE3 hash of the sealed link key that ends the master authentication message.
pub const SEALED_KEY_HASH_BYTES: usize = blake3::OUT_LEN;
/// Largest client-facing address (`host:port`) a worker may announce in its Hello.
pub const CLIENT_ADDR_BYTES_MAX: usize = 255;
/// Largest proof signature the master agrees to parse.
pub const PROOF_SIGNATURE_BYTES_MAX: usize = 4096;
/// Largest certificate file read from disk.
pub const CERT_FILE_BYTES_MAX: u64 = 64 * 1024;
/// Most workers a registry holds.
pub const WORKERS_MAX: usize = 1024;
/// Most allow-list entries per worker.
pub const ALLOWED_IPS_PER_WORKER_MAX: usize = 64;
/// Longest worker name, in bytes.
pub const WORKER_NAME_BYTES_MAX: usize = 64;
/// How far a proof signature's creation time may be from the master's clock, either way.
pub const SIGNATURE_CLOCK_SKEW_MAX: Duration = Duration::from_secs(30 * 60);

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

// ---------------------------------------------------------------------------------------------
// The registry.

/// Why the registry could not be built. Every variant names the worker's UUID, and the file
/// when one is involved.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// More than [`WORKERS_MAX`] entries.
    #[error("{count} workers configured; at most {count_max} allowed")]
    TooManyWorkers {
        /// Entries given.
        count: usize,
        /// The limit.
        count_max: usize,
    },
    /// The nil UUID cannot name a worker.
    #[error("worker entry with the nil UUID")]
    NilUuid,
    /// Two entries share a UUID.
    #[error("worker {uuid} is already registered")]
    DuplicateUuid {
        /// The repeated UUID.
        uuid: Uuid,
    },
    /// A UUID is both in the configuration file and in the registry stored in the data
    /// directory.
    #[error(
        "worker {uuid} is both in the configuration file ([[workers]]) and in the registry of the \
         data directory; remove one of them (pt-master worker remove --id {uuid})"
    )]
    InConfigAndRegistry {
        /// The UUID.
        uuid: Uuid,
    },
    /// An operator tried to register a worker that the master's configuration already lists.
    #[error(
        "worker {uuid} is already in the master's configuration ([[workers]] of its file, or a \
         worker `pt up` started): it is registered and needs no `worker add`"
    )]
    AlreadyInConfig {
        /// The UUID.
        uuid: Uuid,
    },
    /// An operator tried to remove a worker that the master's configuration lists: config
    /// entries are read-only.
    #[error(
        "worker {uuid} is in the master's configuration ([[workers]] of its file, or a worker \
         `pt up` started), which `worker remove` cannot change: remove it from the file and \
         restart the master"
    )]
    ConfigEntry {
        /// The UUID.
        uuid: Uuid,
    },
    /// A worker's name is empty, too long or holds control characters.
    #[error("worker {uuid}: bad name: {reason}")]
    BadName {
        /// The worker.
        uuid: Uuid,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two workers share a certificate, so either could pose as the other.
    #[error("worker {uuid} uses the same certificate ({fingerprint}) as worker {other}")]
    DuplicateCert {
        /// The later entry.
        uuid: Uuid,
        /// The earlier entry with the same certificate.
        other: Uuid,
        /// The shared fingerprint.
        fingerprint: Fingerprint,
    },
    /// A worker has an empty allow-list and could never connect.
    #[error("worker {uuid}: allowed_ips is empty")]
    NoAllowedIps {
        /// The worker.
        uuid: Uuid,
    },
    /// A worker's allow-list is longer than [`ALLOWED_IPS_PER_WORKER_MAX`].
    #[error("worker {uuid}: {count} allowed_ips entries; at most {count_max} allowed")]
    TooManyAllowedIps {
        /// The worker.
        uuid: Uuid,
        /// Entries given.
        count: usize,
        /// The limit.
        count_max: usize,
    },
    /// The certificate file could not be read.
    #[error("worker {uuid}: cannot read certificate {path}: {source}")]
    ReadCert {
        /// The worker.
        uuid: Uuid,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The certificate is larger than [`CERT_FILE_BYTES_MAX`].
    #[error("worker {uuid}: certificate{origin} is larger than {bytes_max} bytes")]
    CertTooLarge {
        /// The worker.
        uuid: Uuid,
        /// The file, or the certificate text.
        origin: CertOrigin,
        /// The limit.
        bytes_max: u64,
    },
    /// The file is not one OpenPGP certificate.
    #[error("worker {uuid}: certificate{origin} is not an OpenPGP certificate: {source}")]
    BadCert {
        /// The worker.
        uuid: Uuid,
        /// The file, or the certificate text.
        origin: CertOrigin,
        /// The parser's complaint.
        #[source]
        source: BoxError,
    },
    /// The file holds secret key material: the worker's `worker.key` was registered instead of
    /// `worker.pub.asc`. The master must never hold a worker's secret key.
    #[error(
        "worker {uuid}: certificate{origin} contains secret key material; register \
         worker.pub.asc instead"
    )]
    CertHasSecret {
        /// The worker.
        uuid: Uuid,
        /// The file, or the certificate text.
        origin: CertOrigin,
    },
    /// The certificate cannot authenticate a worker now (expired, revoked, missing a valid
    /// signing or transport-encryption subkey, rejected by the standard policy).
    #[error("worker {uuid}: certificate{origin} is unusable: {reason}")]
    CertUnusable {
        /// The worker.
        uuid: Uuid,
        /// The file, or the certificate text.
        origin: CertOrigin,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Where a worker's certificate came from, for error messages. Displayed as a suffix of the
/// word "certificate": ` PATH` for a file, nothing for text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertOrigin {
    /// A file named by a `[[workers]]` entry of the configuration.
    File(PathBuf),
    /// Armored text: given to `pt-master worker add` or stored in the registry.
    Text,
}

impl fmt::Display for CertOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, " {}", path.display()),
            Self::Text => Ok(()),
        }
    }
}

/// Where a worker's registration lives (`config` or `registry` in JSON).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum WorkerSource {
    /// A `[[workers]]` entry of the configuration file: read-only while the master runs.
    Config,
    /// The registry stored in the data directory, managed with `pt-master worker add|remove`.
    Registry,
}

impl WorkerSource {
    /// `config` or `registry`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Registry => "registry",
        }
    }
}

impl fmt::Display for WorkerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A worker the master admits: its UUID, its certificate and where it may connect from.
///
/// `Debug` shows the UUID, the fingerprint and the allow-list, not the certificate.
#[derive(Clone)]
pub struct RegisteredWorker {
    uuid: Uuid,
    name: String,
    cert: Cert,
    cert_origin: CertOrigin,
    source: WorkerSource,
    allowed_ips: Vec<IpNet>,
}

impl fmt::Debug for RegisteredWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisteredWorker")
            .field("uuid", &self.uuid)
            .field("name", &self.name)
            .field("fingerprint", &self.cert.fingerprint().to_hex())
            .field("cert_origin", &self.cert_origin)
            .field("source", &self.source)
            .field("allowed_ips", &self.allowed_ips)
            .finish()
    }
}

impl RegisteredWorker {
    /// A worker of the registry (`pt-master worker add`), from its certificate's armored text
    /// (at most [`CERT_FILE_BYTES_MAX`] bytes). Applies the checks the master applies to the
    /// configuration's entries at start-up: a non-nil UUID; a name of 1 to
    /// [`WORKER_NAME_BYTES_MAX`] bytes without control characters; 1 to
    /// [`ALLOWED_IPS_PER_WORKER_MAX`] allow-list entries; exactly one OpenPGP certificate,
    /// without secret key material, not expired or revoked, with a valid signing-capable key
    /// and a valid transport-encryption key.
    pub fn from_armored(
        uuid: Uuid,
        name: &str,
        armored: &str,
        allowed_ips: Vec<IpNet>,
    ) -> Result<Self, RegistryError> {
        check_uuid_and_ips(uuid, &allowed_ips)?;
        check_name(uuid, name)?;
        let cert = parse_cert(uuid, armored.as_bytes(), &CertOrigin::Text)?;
        Ok(Self {
            uuid,
            name: name.to_owned(),
            cert,
            cert_origin: CertOrigin::Text,
            source: WorkerSource::Registry,
            allowed_ips,
        })
    }

    /// The worker's UUID.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// The worker's name for logs and the server list: the configured `name`, else the UUID.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The worker's public certificate.
    pub fn cert(&self) -> &Cert {
        &self.cert
    }

    /// The fingerprint of the worker's certificate.
    pub fn fingerprint(&self) -> Fingerprint {
        self.cert.fingerprint()
    }

    /// The file the certificate was read from (a configuration entry), or `None` for a
    /// registry entry, whose certificate is stored in the data directory.
    pub fn cert_path(&self) -> Option<&Path> {
        match &self.cert_origin {
            CertOrigin::File(path) => Some(path),
            CertOrigin::Text => None,
        }
    }

    /// Whether the registration comes from the configuration file or the registry.
    pub fn source(&self) -> WorkerSource {
        self.source
    }

    /// Where the worker may connect from.
    pub fn allowed_ips(&self) -> &[IpNet] {
        &self.allowed_ips
    }

    /// Whether `peer` is in the worker's allow-list.
    pub fn allows(&self, peer: IpAddr) -> bool {
        self.allowed_ips.iter().any(|net| net.contains(peer))
    }

    /// True when an entry of the allow-list is `peer` itself (a single address, not a range):
    /// then `peer` is where the worker links from, known before it ever links.
    pub fn names(&self, peer: IpAddr) -> bool {
        self.allowed_ips.iter().any(|net| net.is_single_address() && net.contains(peer))
    }
}

/// The registered workers, by UUID.
#[derive(Debug, Clone, Default)]
pub struct WorkerRegistry {
    workers: BTreeMap<Uuid, RegisteredWorker>,
}

impl WorkerRegistry {
    /// Builds the registry from the configuration's `[[workers]]` entries, reading and checking
    /// every certificate file now so that a bad registration stops the master at start-up, with
    /// the file and UUID in the error. A relative `cert` path is opened relative to the working
    /// directory.
    pub fn from_entries(entries: &[WorkerConfig]) -> Result<Self, RegistryError> {
        if entries.len() > WORKERS_MAX {
            return Err(RegistryError::TooManyWorkers {
                count: entries.len(),
                count_max: WORKERS_MAX,
            });
        }
        let mut registry = Self::default();
        for entry in entries {
            let uuid = entry.id;
            if uuid.is_nil() {
                return Err(RegistryError::NilUuid);
            }
            if registry.workers.contains_key(&uuid) {
                return Err(RegistryError::DuplicateUuid { uuid });
            }
            check_uuid_and_ips(uuid, &entry.allowed_ips)?;
            let cert = load_cert(uuid, &entry.cert)?;
            registry.add(RegisteredWorker {
                uuid,
                name: entry.name.clone().unwrap_or_else(|| uuid.to_string()),
                cert,
                cert_origin: CertOrigin::File(entry.cert.clone()),
                source: WorkerSource::Config,
                allowed_ips: entry.allowed_ips.clone(),
            })?;
        }
        Ok(registry)
    }

    /// The configuration's entries (as [`WorkerRegistry::from_entries`]) plus the workers of
    /// the stored registry. A UUID in both is an error
    /// ([`RegistryError::InConfigAndRegistry`]), as is a certificate shared by two workers or
    /// more than [`WORKERS_MAX`] workers in all.
    pub fn with_stored(
        entries: &[WorkerConfig],
        stored: impl IntoIterator<Item = RegisteredWorker>,
    ) -> Result<Self, RegistryError> {
        let mut registry = Self::from_entries(entries)?;
        for worker in stored {
            registry.add(worker)?;
        }
        Ok(registry)
    }

    /// Adds a worker. Refuses a UUID that is already registered (from either source), a
    /// certificate another worker uses (either could then pose as the other), and a worker
    /// beyond [`WORKERS_MAX`]. On error the registry is unchanged.
    pub fn add(&mut self, worker: RegisteredWorker) -> Result<(), RegistryError> {
        self.check_add(&worker)?;
        self.workers.insert(worker.uuid, worker);
        Ok(())
    }

    /// The checks of [`WorkerRegistry::add`], without adding: whether `worker` could be added
    /// now.
    pub fn check_add(&self, worker: &RegisteredWorker) -> Result<(), RegistryError> {
        let uuid = worker.uuid;
        if let Some(existing) = self.workers.get(&uuid) {
            return Err(if existing.source == worker.source {
                RegistryError::DuplicateUuid { uuid }
            } else {
                RegistryError::InConfigAndRegistry { uuid }
            });
        }
        if self.workers.len() >= WORKERS_MAX {
            return Err(RegistryError::TooManyWorkers {
                count: self.workers.len().saturating_add(1),
                count_max: WORKERS_MAX,
            });
        }
        let fingerprint = worker.cert.fingerprint();
        if let Some(other) = self.workers.values().find(|w| w.cert.fingerprint() == fingerprint) {
            return Err(RegistryError::DuplicateCert { uuid, other: other.uuid, fingerprint });
        }
        Ok(())
    }

    /// Removes the registry worker `uuid`; returns whether it was registered. Workers of the
    /// configuration file cannot be removed ([`RegistryError::ConfigEntry`]).
    pub fn remove(&mut self, uuid: Uuid) -> Result<bool, RegistryError> {
        match self.workers.get(&uuid).map(RegisteredWorker::source) {
            None => Ok(false),
            Some(WorkerSource::Config) => Err(RegistryError::ConfigEntry { uuid }),
            Some(WorkerSource::Registry) => Ok(self.workers.remove(&uuid).is_some()),
        }
    }

    /// Step 2 of the handshake: the worker `uuid`, connecting from `peer`, may proceed to the
    /// challenge if it is registered and `peer` is in its allow-list.
    pub fn check_admission(
        &self,
        uuid: Uuid,
        peer: IpAddr,
    ) -> Result<&RegisteredWorker, AuthError> {
        let worker = self.workers.get(&uuid).ok_or(AuthError::UnknownWorker { uuid })?;
        if !worker.allows(peer) {
            return Err(AuthError::IpNotAllowed { uuid, peer });
        }
        Ok(worker)
    }

    /// The worker registered under `uuid`.
    pub fn get(&self, uuid: Uuid) -> Option<&RegisteredWorker> {
        self.workers.get(&uuid)
    }

    /// The registered workers in UUID order.
    pub fn iter(&self) -> impl Iterator<Item = &RegisteredWorker> {
        self.workers.values()
    }

    /// How many workers are registered.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether no worker is registered.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }
}

/// The checks every entry gets: a non-nil UUID and an allow-list of sensible length.
fn check_uuid_and_ips(uuid: Uuid, allowed_ips: &[IpNet]) -> Result<(), RegistryError> {
    if uuid.is_nil() {
        return Err(RegistryError::NilUuid);
    }
    if allowed_ips.is_empty() {
        return Err(RegistryError::NoAllowedIps { uuid });
    }
    if allowed_ips.len() > ALLOWED_IPS_PER_WORKER_MAX {
        return Err(RegistryError::TooManyAllowedIps {
            uuid,
            count: allowed_ips.len(),
            count_max: ALLOWED_IPS_PER_WORKER_MAX,
        });
    }
    Ok(())
}

/// A registry worker's name: 1 to [`WORKER_NAME_BYTES_MAX`] bytes, no control characters (it
/// is printed in listings and logs).
fn check_name(uuid: Uuid, name: &str) -> Result<(), RegistryError> {
    let reason = if name.trim().is_empty() {
        "it is empty"
    } else if name.len() > WORKER_NAME_BYTES_MAX {
        "it is longer than 64 bytes"
    } else if name.chars().any(char::is_control) {
        "it contains control characters"
    } else {
        return Ok(());
    };
    Err(RegistryError::BadName { uuid, reason })
}

fn load_cert(uuid: Uuid, path: &Path) -> Result<Cert, RegistryError> {
    let read_err = |source| RegistryError::ReadCert { uuid, path: path.to_path_buf(), source };
    let file = fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(CERT_FILE_BYTES_MAX.saturating_add(1)).read_to_end(&mut bytes).map_err(read_err)?;
    parse_cert(uuid, &bytes, &CertOrigin::File(path.to_path_buf()))
}

/// Parses and checks a worker certificate (at most [`CERT_FILE_BYTES_MAX`] bytes, armored or
/// binary): one certificate, no secret key material, usable now.
fn parse_cert(uuid: Uuid, bytes: &[u8], origin: &CertOrigin) -> Result<Cert, RegistryError> {
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > CERT_FILE_BYTES_MAX {
        return Err(RegistryError::CertTooLarge {
            uuid,
            origin: origin.clone(),
            bytes_max: CERT_FILE_BYTES_MAX,
        });
    }
    let cert = Cert::from_bytes(bytes).map_err(|e| RegistryError::BadCert {
        uuid,
        origin: origin.clone(),
        source: e.into(),
    })?;
    if cert.is_tsk() {
        return Err(RegistryError::CertHasSecret { uuid, origin: origin.clone() });
    }
    usable(&cert).map_err(|reason| RegistryError::CertUnusable {
        uuid,
        origin: origin.clone(),
        reason,
    })?;
    Ok(cert)
}

/// Why `cert` cannot authenticate a worker now, if it cannot.
fn usable(cert: &Cert) -> Result<(), &'static str> {
    let valid = pgp::signing_cert_usable(cert)?;
    if valid.keys().supported().alive().revoked(false).for_transport_encryption().next().is_none() {
        return Err("no valid transport-encryption key");
    }
    // A link key is sealed to every encryption key: a certificate with so many (or such large)
    // keys that the sealed key would not fit a challenge could never link.
    if seal_to(cert, &[0; 32]).is_err() {
        return Err("a link key sealed to its encryption keys does not fit a challenge \
                    (net::limits::SEALED_KEY_BYTES_MAX bytes): use one with fewer encryption \
                    subkeys");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The handshake.

/// Why a worker was not admitted. [`AuthError::reason`] gives a stable name for logs and
/// metrics; the peer should be told only that it was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// `unknown_worker`: no worker is registered under this UUID.
    #[error("unknown worker {uuid}")]
    UnknownWorker {
        /// The UUID the peer claimed.
        uuid: Uuid,
    },
    /// `ip_not_allowed`: the worker is registered but the peer address is not in its
    /// allow-list.
    #[error("worker {uuid} may not connect from {peer}")]
    IpNotAllowed {
        /// The worker.
        uuid: Uuid,
        /// The peer address.
        peer: IpAddr,
    },
    /// `bad_hello`: the Hello fields covered by the proof are out of bounds.
    #[error("bad hello: {detail}")]
    BadHello {
        /// What is wrong.
        detail: String,
    },
    /// `malformed_signature`: the proof is not exactly one well-formed detached OpenPGP
    /// signature (garbage, truncated, too large, several signatures).
    #[error("malformed proof signature: {detail}")]
    MalformedSignature {
        /// What is wrong.
        detail: String,
    },
    /// `wrong_key`: the signature was not made by any key of the worker's registered
    /// certificate.
    #[error("proof signature is not from the registered key")]
    WrongKey,
    /// `key_not_valid`: the signature was made by a key of the registered certificate that may
    /// not sign now (not signing-capable, expired, revoked, rejected by policy).
    #[error("proof signed by a key that is not valid for signing: {detail}")]
    KeyNotValid {
        /// What is wrong with the key.
        detail: String,
    },
    /// `bad_signature`: the signature does not verify over this challenge (tampered, or made
    /// for another nonce: a replay) or is rejected by policy (weak hash).
    #[error("proof signature does not verify")]
    BadSignature,
    /// `signature_time`: the signature's creation time is more than
    /// [`SIGNATURE_CLOCK_SKEW_MAX`] away from the master's clock.
    #[error("proof signature time is too far from the master's clock")]
    SignatureTime,
    /// `random_unavailable`: the OS random number generator failed.
    #[error("the OS random number generator failed: {detail}")]
    RandomUnavailable {
        /// The OS error.
        detail: String,
    },
    /// `seal_failed`: the link key could not be encrypted to the worker's certificate.
    #[error("cannot seal the link key: {detail}")]
    SealFailed {
        /// Why.
        detail: String,
    },
    /// `sign_failed`: the master could not sign its proof for the worker (master-side fault).
    #[error("cannot sign the master proof: {detail}")]
    SignFailed {
        /// Why.
        detail: String,
    },
}

impl AuthError {
    /// The stable reason name (`unknown_worker`, `ip_not_allowed`, `bad_hello`,
    /// `malformed_signature`, `wrong_key`, `key_not_valid`, `bad_signature`, `signature_time`,
    /// `random_unavailable`, `seal_failed`, `sign_failed`), documented in
    /// `docs/WORKER_AUTH.md`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnknownWorker { .. } => "unknown_worker",
            Self::IpNotAllowed { .. } => "ip_not_allowed",
            Self::BadHello { .. } => "bad_hello",
            Self::MalformedSignature { .. } => "malformed_signature",
            Self::WrongKey => "wrong_key",
            Self::KeyNotValid { .. } => "key_not_valid",
            Self::BadSignature => "bad_signature",
            Self::SignatureTime => "signature_time",
            Self::RandomUnavailable { .. } => "random_unavailable",
            Self::SealFailed { .. } => "seal_failed",
            Self::SignFailed { .. } => "sign_failed",
        }
    }
}

impl From<ClientAddrTooLong> for AuthError {
    fn from(err: ClientAddrTooLong) -> Self {
        Self::BadHello { detail: err.to_string() }
    }
}

impl From<ProofError> for AuthError {
    fn from(err: ProofError) -> Self {
        match err {
            ProofError::MalformedSignature { detail } => Self::MalformedSignature { detail },
            ProofError::WrongKey => Self::WrongKey,
            ProofError::KeyNotValid { detail } => Self::KeyNotValid { detail },
            ProofError::BadSignature => Self::BadSignature,
            ProofError::SignatureTime => Self::SignatureTime,
        }
    }
}

/// The fields of the worker's Hello that both proof signatures (the worker's and the master's)
/// cover, so that nobody on the path can change them unnoticed before the link is keyed. The
/// worker uses this type too (`worker::identity::HelloBinding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloBinding<'a> {
    /// The protocol version the worker announced.
    pub protocol_version: u16,
    /// The client-facing address (`host:port`) the worker announced; at most
    /// [`CLIENT_ADDR_BYTES_MAX`] bytes.
    pub client_addr: &'a str,
}

/// The exact bytes the worker signs ([`pgp::auth_message`], laid out in
/// `docs/WORKER_AUTH.md`), with an over-long client address reported as
/// [`AuthError::BadHello`]. The worker builds its copy with the same function.
pub fn auth_message(
    uuid: Uuid,
    nonce: &[u8; NONCE_BYTES],
    hello: &HelloBinding<'_>,
) -> Result<Vec<u8>, AuthError> {
    Ok(pgp::auth_message(uuid, nonce, hello)?)
}

/// The exact bytes the master signs for the worker ([`pgp::master_auth_message`], laid out in
/// `docs/WORKER_AUTH.md`), with an over-long client address reported as
/// [`AuthError::BadHello`]. `sealed_key` is the link key sealed to the worker
/// ([`seal_link_key`]) exactly as sent in the Challenge. The worker checks the master's proof
/// over the bytes of the same function.
pub fn master_auth_message(
    uuid: Uuid,
    worker_nonce: &[u8; NONCE_BYTES],
    master_nonce: &[u8; NONCE_BYTES],
    hello: &HelloBinding<'_>,
    sealed_key: &[u8],
) -> Result<Vec<u8>, AuthError> {
    Ok(pgp::master_auth_message(uuid, worker_nonce, master_nonce, hello, sealed_key)?)
}

/// A fresh challenge nonce: 32 bytes from the OS random number generator. Use one per
/// connection attempt and never reuse it.
pub fn new_challenge() -> Result<[u8; NONCE_BYTES], AuthError> {
    random_bytes()
}

/// A fresh link key: 32 bytes from the OS random number generator.
pub fn new_link_key() -> Result<LinkKey, AuthError> {
    random_bytes().map(LinkKey)
}

fn random_bytes<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| AuthError::RandomUnavailable { detail: e.to_string() })?;
    Ok(bytes)
}

/// Step 4 of the handshake: checks that `signature` is one detached OpenPGP signature, made
/// at about `now` by a valid signing key of `worker`'s registered certificate, over
/// [`auth_message`]`(worker.uuid(), nonce, hello)`. Never panics on any input.
pub fn verify_proof(
    worker: &RegisteredWorker,
    nonce: &[u8; NONCE_BYTES],
    hello: &HelloBinding<'_>,
    signature: &[u8],
    now: SystemTime,
) -> Result<(), AuthError> {
    let message = auth_message(worker.uuid, nonce, hello)?;
    Ok(pgp::verify_detached(&worker.cert, &message, signature, now)?)
}

/// Step 2 of the handshake, before signing: encrypts `link_key` to every valid
/// transport-encryption subkey of the worker's certificate, as a binary OpenPGP message holding
/// one literal data packet. The result goes into the Challenge and into the master's proof
/// ([`MasterIdentity::sign_worker_challenge`]); use the key only once [`verify_proof`] accepted
/// the worker.
pub fn seal_link_key(worker: &RegisteredWorker, link_key: &LinkKey) -> Result<Vec<u8>, AuthError> {
    seal_to(&worker.cert, &link_key.0)
}

/// [`seal_link_key`] for a certificate: also the registration's check that a challenge can
/// carry what the certificate's encryption keys make of a link key.
fn seal_to(cert: &Cert, link_key: &[u8]) -> Result<Vec<u8>, AuthError> {
    let seal_err = |detail: String| AuthError::SealFailed { detail };
    let recipients: Vec<_> = cert
        .keys()
        .with_policy(&POLICY, None)
        .supported()
        .alive()
        .revoked(false)
        .for_transport_encryption()
        .collect();
    if recipients.is_empty() {
        return Err(seal_err("the certificate has no valid transport-encryption key".into()));
    }
    let recipients_count = recipients.len();
    let mut sealed = Vec::new();
    let sink = Message::new(&mut sealed);
    let mut writer = Encryptor::for_recipients(sink, recipients)
        .build()
        .and_then(|encryptor| LiteralWriter::new(encryptor).build())
        .map_err(|e| seal_err(e.to_string()))?;
    writer.write_all(link_key).map_err(|e| seal_err(e.to_string()))?;
    writer.finalize().map_err(|e| seal_err(e.to_string()))?;
    // The Challenge carries at most this much: past it, the handshake could never be sent.
    if sealed.len() > net::limits::SEALED_KEY_BYTES_MAX {
        return Err(seal_err(format!(
            "the link key sealed to the certificate's {} encryption keys takes {} bytes, over the \
             {} a challenge carries: register a certificate with fewer encryption subkeys",
            recipients_count,
            sealed.len(),
            net::limits::SEALED_KEY_BYTES_MAX
        )));
    }
    Ok(sealed)
}

// ---------------------------------------------------------------------------------------------
// The master's own key.

/// Why the master's key could not be created, stored or loaded. Every variant that involves a
/// file names it; none carries key material.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    /// A file or directory could not be read, written or created.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done ("read", "create", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The key file is larger than [`MASTER_KEY_FILE_BYTES_MAX`].
    #[error("{path} is larger than {bytes_max} bytes")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        bytes_max: u64,
    },
    /// The secret key file may be read by other users.
    #[error("{path} has mode {mode:o}; it must not be accessible by group or others (chmod 600)")]
    KeyFilePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file is not an OpenPGP secret key.
    #[error("{path} is not an OpenPGP secret key: {source}")]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// The parser's complaint.
        #[source]
        source: BoxError,
    },
    /// The key parsed but cannot sign master proofs.
    #[error("{path}: unusable master key: {reason}")]
    UnusableKey {
        /// The key file.
        path: PathBuf,
        /// What is missing or invalid.
        reason: &'static str,
    },
    /// Key generation failed.
    #[error("cannot generate the master key: {source}")]
    Generate {
        /// The OpenPGP library's error.
        #[source]
        source: BoxError,
    },
    /// The key could not be serialized.
    #[error("cannot serialize the master key: {source}")]
    Serialize {
        /// The OpenPGP library's error.
        #[source]
        source: BoxError,
    },
    /// The OS random number generator failed (naming a temporary file).
    #[error("the OS random number generator failed: {detail}")]
    RandomUnavailable {
        /// The OS error.
        detail: String,
    },
}

/// The master's OpenPGP identity: a TSK with a certification-only Ed25519 primary key and an
/// Ed25519 signing subkey (no encryption subkey: nothing is encrypted to the master). Workers
/// trust its public certificate, `master.pub.asc`, and check the master's proof with it.
///
/// `Debug` shows only the fingerprint, never key material.
#[derive(Clone)]
pub struct MasterIdentity {
    tsk: Cert,
}

impl fmt::Debug for MasterIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterIdentity")
            .field("fingerprint", &self.tsk.fingerprint().to_hex())
            .finish_non_exhaustive()
    }
}

impl MasterIdentity {
    /// Generates a new master key in memory (user ID [`MASTER_USER_ID`], RFC 4880 v4 keys so
    /// that GnuPG can inspect them, no expiry, no password).
    pub fn generate() -> Result<Self, MasterKeyError> {
        let (tsk, _revocation) = CertBuilder::new()
            .set_cipher_suite(CipherSuite::Cv25519)
            .set_profile(openpgp::Profile::RFC4880)
            .map_err(|e| MasterKeyError::Generate { source: e.into() })?
            .set_validity_period(None)
            .add_userid(MASTER_USER_ID)
            .add_signing_subkey()
            .generate()
            .map_err(|e| MasterKeyError::Generate { source: e.into() })?;
        // The builder's output satisfies the checks `load` applies; keep them in step.
        let reason = master_key_usable(&tsk).err();
        debug_assert!(reason.is_none(), "a freshly generated key must be usable: {reason:?}");
        Ok(Self { tsk })
    }

    /// Loads the master key from `dir/master.key`, or, when that file does not exist, generates
    /// one and stores it there (mode 0600, created atomically: a crash leaves no half-written
    /// key, and of two masters racing on one directory both end up with the same key). Then
    /// makes sure `dir/master.pub.asc` holds the key's public certificate, rewriting it when it
    /// is missing or differs. `dir` is created if needed.
    ///
    /// Refuses a `master.key` that group or others can access, one over
    /// [`MASTER_KEY_FILE_BYTES_MAX`] bytes, a public certificate in place of the secret key, a
    /// password-protected key and a key without a valid signing key.
    pub fn load_or_generate(dir: &Path) -> Result<Self, MasterKeyError> {
        fs::create_dir_all(dir).map_err(|source| MasterKeyError::Io {
            action: "create directory",
            path: dir.to_path_buf(),
            source,
        })?;
        let key_path = Self::key_path(dir);
        let identity = match fs::symlink_metadata(&key_path) {
            Ok(_) => Self::load_key(&key_path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let fresh = Self::generate()?;
                let secret = fresh
                    .tsk
                    .as_tsk()
                    .armored()
                    .to_vec()
                    .map_err(|e| MasterKeyError::Serialize { source: e.into() })?;
                if publish_new(dir, &key_path, &secret)? {
                    fresh
                } else {
                    // Another process created the key first: use that one.
                    Self::load_key(&key_path)?
                }
            }
            Err(source) => {
                return Err(MasterKeyError::Io { action: "read", path: key_path, source });
            }
        };
        identity.write_public_cert(dir)?;
        Ok(identity)
    }

    /// The path of the secret key file in `dir`: `dir/master.key`.
    pub fn key_path(dir: &Path) -> PathBuf {
        dir.join(MASTER_KEY_FILE_NAME)
    }

    /// The path of the public certificate file in `dir`: `dir/master.pub.asc`, the file to give
    /// the workers.
    pub fn public_cert_path(dir: &Path) -> PathBuf {
        dir.join(MASTER_CERT_FILE_NAME)
    }

    /// The fingerprint of the master's certificate (its primary key).
    pub fn fingerprint(&self) -> Fingerprint {
        self.tsk.fingerprint()
    }

    /// The public certificate, without any secret key material.
    pub fn public_cert(&self) -> Cert {
        self.tsk.clone().strip_secret_key_material()
    }

    /// The public certificate, ASCII-armored: the contents of `master.pub.asc`.
    pub fn public_cert_armored(&self) -> Result<String, MasterKeyError> {
        pgp::armored_public_cert(&self.tsk).map_err(|source| MasterKeyError::Serialize { source })
    }

    /// Step 2 of the handshake: the master's proof for the worker `worker`, a detached OpenPGP
    /// signature, made with the signing subkey, over
    /// [`master_auth_message`]`(worker, worker_nonce, master_nonce, hello, sealed_key)`. Call
    /// it only after [`WorkerRegistry::check_admission`] accepted the Hello, with a fresh
    /// `master_nonce` from [`new_challenge`] and the fresh link key sealed to that worker
    /// ([`seal_link_key`]), exactly as the Challenge will carry it.
    pub fn sign_worker_challenge(
        &self,
        worker: Uuid,
        worker_nonce: &[u8; NONCE_BYTES],
        master_nonce: &[u8; NONCE_BYTES],
        hello: &HelloBinding<'_>,
        sealed_key: &[u8],
    ) -> Result<Vec<u8>, AuthError> {
        let message = master_auth_message(worker, worker_nonce, master_nonce, hello, sealed_key)?;
        let signature = pgp::sign_detached(&self.tsk, &message)
            .map_err(|e| AuthError::SignFailed { detail: e.to_string() })?;
        debug_assert!(signature.len() <= PROOF_SIGNATURE_BYTES_MAX);
        Ok(signature)
    }

    /// Reads and checks `master.key`.
    fn load_key(key_path: &Path) -> Result<Self, MasterKeyError> {
        check_private_mode(key_path)?;
        let bytes = read_bounded(key_path, MASTER_KEY_FILE_BYTES_MAX)?;
        let tsk = Cert::from_bytes(&bytes).map_err(|e| MasterKeyError::BadKey {
            path: key_path.to_path_buf(),
            source: e.into(),
        })?;
        if !tsk.is_tsk() {
            return Err(MasterKeyError::UnusableKey {
                path: key_path.to_path_buf(),
                reason: "it holds no secret key material (is this the public certificate?)",
            });
        }
        master_key_usable(&tsk).map_err(|reason| MasterKeyError::UnusableKey {
            path: key_path.to_path_buf(),
            reason,
        })?;
        Ok(Self { tsk })
    }

    /// Writes `master.pub.asc` unless it already holds exactly the current certificate.
    fn write_public_cert(&self, dir: &Path) -> Result<(), MasterKeyError> {
        let armored = self.public_cert_armored()?;
        let path = Self::public_cert_path(dir);
        match read_bounded(&path, MASTER_KEY_FILE_BYTES_MAX) {
            Ok(existing) if existing == armored.as_bytes() => return Ok(()),
            Ok(_) | Err(MasterKeyError::FileTooLarge { .. }) => {}
            Err(MasterKeyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            Err(other) => return Err(other),
        }
        let tmp = write_temp(dir, armored.as_bytes(), 0o644)?;
        fs::rename(&tmp, &path).map_err(|source| {
            let _ = fs::remove_file(&tmp);
            MasterKeyError::Io { action: "rename into place", path: path.clone(), source }
        })?;
        sync_dir(dir)
    }
}

/// Why `tsk` cannot serve as the master key, if it cannot.
fn master_key_usable(tsk: &Cert) -> Result<(), &'static str> {
    pgp::signing_key_usable(
        tsk,
        "the signing key is password-protected; the master key must not be",
    )?;
    Ok(())
}

/// Reads a whole file of at most `bytes_max` bytes.
fn read_bounded(path: &Path, bytes_max: u64) -> Result<Vec<u8>, MasterKeyError> {
    let io_err = |source| MasterKeyError::Io { action: "read", path: path.to_path_buf(), source };
    let file = fs::File::open(path).map_err(io_err)?;
    let mut bytes = Vec::new();
    file.take(bytes_max.saturating_add(1)).read_to_end(&mut bytes).map_err(io_err)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > bytes_max {
        return Err(MasterKeyError::FileTooLarge { path: path.to_path_buf(), bytes_max });
    }
    Ok(bytes)
}

/// Refuses a secret key file that group or others can access, as ssh does.
fn check_private_mode(path: &Path) -> Result<(), MasterKeyError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let metadata = fs::metadata(path).map_err(|source| MasterKeyError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(MasterKeyError::KeyFilePermissions { path: path.to_path_buf(), mode });
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Writes `bytes` to a new temporary file in `dir` with permission bits `mode`, synced; returns
/// its path.
fn write_temp(dir: &Path, bytes: &[u8], mode: u32) -> Result<PathBuf, MasterKeyError> {
    let suffix: [u8; 8] =
        random_bytes().map_err(|e| MasterKeyError::RandomUnavailable { detail: e.to_string() })?;
    let name: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join(format!(".master.{name}.tmp"));
    let io_err = |action, source| MasterKeyError::Io { action, path: path.clone(), source };
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&path).map_err(|source| io_err("create", source))?;
    let written = file
        .write_all(bytes)
        .map_err(|source| io_err("write", source))
        .and_then(|()| file.sync_all().map_err(|source| io_err("sync", source)));
    if let Err(err) = written {
        let _ = fs::remove_file(&path);
        return Err(err);
    }
    Ok(path)
}

/// Creates `target` holding `bytes` (mode 0600) atomically and only if it does not exist yet:
/// writes a temporary file, then hard-links it into place. Returns false when `target` already
/// existed (and leaves it alone).
fn publish_new(dir: &Path, target: &Path, bytes: &[u8]) -> Result<bool, MasterKeyError> {
    let tmp = write_temp(dir, bytes, 0o600)?;
    let linked = fs::hard_link(&tmp, target);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(dir)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(source) => {
            Err(MasterKeyError::Io { action: "create", path: target.to_path_buf(), source })
        }
    }
}

/// Makes a directory's entries durable (a no-op where directories cannot be synced).
fn sync_dir(dir: &Path) -> Result<(), MasterKeyError> {
    #[cfg(unix)]
    {
        let io_err =
            |source| MasterKeyError::Io { action: "sync", path: dir.to_path_buf(), source };
        fs::File::open(dir).map_err(io_err)?.sync_all().map_err(io_err)?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn auth_error_reasons_are_stable() {
        let uuid = Uuid::from_u128(1);
        let cases = [
            (AuthError::UnknownWorker { uuid }, "unknown_worker"),
            (AuthError::IpNotAllowed { uuid, peer: ip("::1") }, "ip_not_allowed"),
            (AuthError::BadHello { detail: String::new() }, "bad_hello"),
            (AuthError::MalformedSignature { detail: String::new() }, "malformed_signature"),
            (AuthError::WrongKey, "wrong_key"),
            (AuthError::KeyNotValid { detail: String::new() }, "key_not_valid"),
            (AuthError::BadSignature, "bad_signature"),
            (AuthError::SignatureTime, "signature_time"),
            (AuthError::RandomUnavailable { detail: String::new() }, "random_unavailable"),
            (AuthError::SealFailed { detail: String::new() }, "seal_failed"),
            (AuthError::SignFailed { detail: String::new() }, "sign_failed"),
        ];
        for (err, reason) in cases {
            assert_eq!(err.reason(), reason);
        }
    }

    const HELLO: HelloBinding<'static> =
        HelloBinding { protocol_version: 1, client_addr: "203.0.113.7:2049" };

    fn uuid() -> Uuid {
        Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef)
    }

    /// The sealed key of the layout examples (`docs/WORKER_AUTH.md`): 8 bytes `cc`.
    const SEALED: &[u8] = &[0xCC; 8];

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn master_auth_message_layout_is_fixed() {
        let message =
            master_auth_message(uuid(), &[0xBB; 32], &[0xAA; 32], &HELLO, SEALED).unwrap();
        let mut expected = b"papertrader-master-auth-v1\0".to_vec();
        expected.extend_from_slice(&0x0123_4567_89ab_cdef_0123_4567_89ab_cdef_u128.to_be_bytes());
        expected.extend_from_slice(&[0xBB; 32]);
        expected.extend_from_slice(&[0xAA; 32]);
        expected.extend_from_slice(&[0x00, 0x01, 0x00, 0x10]);
        expected.extend_from_slice(b"203.0.113.7:2049");
        expected.extend_from_slice(blake3::hash(SEALED).as_bytes());
        assert_eq!(message, expected);
        assert_eq!(message.len(), 159);
        // The hash as pinned in docs/WORKER_AUTH.md.
        assert_eq!(
            hex(&message[127..]),
            "1fc7622a3e4fa4a577431863f1c57982df2fcce56daa447f2d65bc51e745e526"
        );
        assert_eq!(MASTER_AUTH_DOMAIN.len(), AUTH_DOMAIN.len());
        // The worker's message differs from the first byte after the common prefix, so neither
        // signature can stand in for the other.
        let worker = auth_message(uuid(), &[0xAA; 32], &HELLO).unwrap();
        assert_ne!(worker[..AUTH_DOMAIN.len()], message[..MASTER_AUTH_DOMAIN.len()]);

        let long = "a".repeat(CLIENT_ADDR_BYTES_MAX + 1);
        let hello = HelloBinding { protocol_version: 1, client_addr: &long };
        let err = master_auth_message(uuid(), &[0; 32], &[0; 32], &hello, SEALED).unwrap_err();
        assert_eq!(err.reason(), "bad_hello");
    }

    #[test]
    fn master_key_is_generated_once_and_reloaded() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let first = MasterIdentity::load_or_generate(&dir).unwrap();
        let again = MasterIdentity::load_or_generate(&dir).unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());

        let key_text = fs::read_to_string(MasterIdentity::key_path(&dir)).unwrap();
        assert!(key_text.starts_with("-----BEGIN PGP PRIVATE KEY BLOCK-----"));
        let cert_path = MasterIdentity::public_cert_path(&dir);
        assert_eq!(cert_path, dir.join("master.pub.asc"));
        let pub_text = fs::read_to_string(&cert_path).unwrap();
        assert_eq!(pub_text, first.public_cert_armored().unwrap());
        let public = Cert::from_bytes(pub_text.as_bytes()).unwrap();
        assert!(!public.is_tsk(), "master.pub.asc must hold no secret key material");
        assert_eq!(public.fingerprint(), first.fingerprint());
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "{names:?}");

        // The key's shape: certification-only primary, one signing subkey, no encryption key.
        let valid = first.tsk.with_policy(&POLICY, None).unwrap();
        assert!(!valid.primary_key().for_signing(), "primary key is certification-only");
        assert_eq!(valid.keys().subkeys().for_signing().count(), 1);
        assert_eq!(valid.keys().for_transport_encryption().count(), 0);
        assert_eq!(valid.keys().for_storage_encryption().count(), 0);

        // A deleted or stale master.pub.asc is rewritten from the key.
        fs::remove_file(&cert_path).unwrap();
        MasterIdentity::load_or_generate(&dir).unwrap();
        assert_eq!(fs::read_to_string(&cert_path).unwrap(), pub_text);
        fs::write(&cert_path, "stale").unwrap();
        MasterIdentity::load_or_generate(&dir).unwrap();
        assert_eq!(fs::read_to_string(&cert_path).unwrap(), pub_text);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(MasterIdentity::key_path(&dir)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn master_key_load_refuses_bad_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let key_path = MasterIdentity::key_path(dir);
        let identity = MasterIdentity::load_or_generate(dir).unwrap();
        let write_key = |bytes: &[u8]| {
            fs::write(&key_path, bytes).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600)).unwrap();
            }
        };

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&key_path, fs::Permissions::from_mode(0o640)).unwrap();
            let err = MasterIdentity::load_or_generate(dir).unwrap_err();
            assert!(matches!(err, MasterKeyError::KeyFilePermissions { mode: 0o640, .. }), "{err}");
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }

        write_key(identity.public_cert_armored().unwrap().as_bytes());
        let err = MasterIdentity::load_or_generate(dir).unwrap_err();
        assert!(matches!(err, MasterKeyError::UnusableKey { .. }), "{err}");

        write_key(b"garbage");
        let err = MasterIdentity::load_or_generate(dir).unwrap_err();
        assert!(matches!(err, MasterKeyError::BadKey { .. }), "{err}");
        assert!(err.to_string().contains("master.key"), "{err}");

        write_key(&vec![b'x'; 64 * 1024 + 1]);
        let err = MasterIdentity::load_or_generate(dir).unwrap_err();
        assert!(matches!(err, MasterKeyError::FileTooLarge { .. }), "{err}");

        // A key that cannot sign (an encryption-only worker-style subkey set) is refused.
        let (no_signing, _) = CertBuilder::new()
            .set_cipher_suite(CipherSuite::Cv25519)
            .add_userid("no signing")
            .add_transport_encryption_subkey()
            .generate()
            .unwrap();
        write_key(&no_signing.as_tsk().armored().to_vec().unwrap());
        let err = MasterIdentity::load_or_generate(dir).unwrap_err();
        assert!(matches!(err, MasterKeyError::UnusableKey { .. }), "{err}");
    }

    #[test]
    fn master_debug_output_holds_no_key_material() {
        let identity = MasterIdentity::generate().unwrap();
        let debug = format!("{identity:?}");
        assert!(debug.contains(&identity.fingerprint().to_hex()), "{debug}");
        assert!(!debug.to_lowercase().contains("secret"), "{debug}");
        assert!(!debug.contains("BEGIN PGP"), "{debug}");
        assert!(debug.len() < 120, "{debug}");
    }

    #[test]
    fn master_proof_is_one_small_detached_signature_by_the_signing_subkey() {
        let identity = MasterIdentity::generate().unwrap();
        let proof =
            identity.sign_worker_challenge(uuid(), &[1; 32], &[2; 32], &HELLO, SEALED).unwrap();
        assert!(!proof.is_empty() && proof.len() <= PROOF_SIGNATURE_BYTES_MAX, "{}", proof.len());
        let packets = openpgp::PacketPile::from_bytes(&proof).unwrap();
        assert_eq!(packets.children().count(), 1);
        let Some(openpgp::Packet::Signature(sig)) = packets.children().next() else {
            panic!("not a signature packet");
        };
        let signing = identity.tsk.keys().subkeys().next().unwrap().key().key_handle();
        assert!(sig.get_issuers().iter().any(|issuer| issuer.aliases(&signing)));
        let long = "a".repeat(CLIENT_ADDR_BYTES_MAX + 1);
        let hello = HelloBinding { protocol_version: 1, client_addr: &long };
        let err =
            identity.sign_worker_challenge(uuid(), &[1; 32], &[2; 32], &hello, SEALED).unwrap_err();
        assert_eq!(err.reason(), "bad_hello");
    }

    #[test]
    fn challenges_and_link_keys_are_fresh() {
        let a = new_challenge().unwrap();
        let b = new_challenge().unwrap();
        assert_ne!(a, b);
        assert_ne!(new_link_key().unwrap(), new_link_key().unwrap());
    }

    #[test]
    fn registry_errors_name_the_uuid_and_path() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let uuid = Uuid::from_u128(0xfeed);
        let missing = dir.join("missing.pub.asc");
        let entry = |cert: &Path| WorkerConfig {
            id: uuid,
            name: None,
            cert: cert.to_path_buf(),
            allowed_ips: vec!["127.0.0.1".parse().unwrap()],
        };
        let err = WorkerRegistry::from_entries(&[entry(&missing)]).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, RegistryError::ReadCert { .. }), "{text}");
        assert!(text.contains("missing.pub.asc") && text.contains(&uuid.to_string()), "{text}");

        let garbage = dir.join("garbage.pub.asc");
        fs::write(&garbage, b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnonsense\n").unwrap();
        let err = WorkerRegistry::from_entries(&[entry(&garbage)]).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, RegistryError::BadCert { .. }), "{text}");
        assert!(text.contains("garbage.pub.asc") && text.contains(&uuid.to_string()), "{text}");

        let big = dir.join("big.pub.asc");
        fs::write(&big, vec![b'a'; 64 * 1024 + 1]).unwrap();
        let err = WorkerRegistry::from_entries(&[entry(&big)]).unwrap_err();
        assert!(matches!(err, RegistryError::CertTooLarge { .. }), "{err}");

        let mut no_ips = entry(&missing);
        no_ips.allowed_ips.clear();
        let err = WorkerRegistry::from_entries(&[no_ips]).unwrap_err();
        assert!(matches!(err, RegistryError::NoAllowedIps { .. }), "{err}");

        let mut nil = entry(&missing);
        nil.id = Uuid::nil();
        assert!(matches!(WorkerRegistry::from_entries(&[nil]), Err(RegistryError::NilUuid)));
    }

    fn worker_cert(builder: CertBuilder<'_>) -> Cert {
        builder
            .set_cipher_suite(CipherSuite::Cv25519)
            .add_userid("w")
            .add_signing_subkey()
            .add_transport_encryption_subkey()
            .generate()
            .unwrap()
            .0
    }

    fn armored(cert: &Cert) -> String {
        String::from_utf8(cert.armored().to_vec().unwrap()).unwrap()
    }

    fn loopback_only() -> Vec<IpNet> {
        vec!["127.0.0.1".parse().unwrap()]
    }

    #[test]
    fn from_armored_applies_the_start_up_checks() {
        let uuid = Uuid::from_u128(0xabc);
        let cert = worker_cert(CertBuilder::new());
        let worker =
            RegisteredWorker::from_armored(uuid, "eu-1", &armored(&cert), loopback_only()).unwrap();
        assert_eq!(worker.source(), WorkerSource::Registry);
        assert_eq!(worker.fingerprint(), cert.fingerprint());
        assert_eq!(worker.cert_path(), None);
        assert!(worker.allows(ip("127.0.0.1")) && !worker.allows(ip("127.0.0.2")));
        // A single address is named (the worker's own); a range only allows.
        let nets = vec!["10.0.0.2".parse().unwrap(), "10.1.0.0/16".parse().unwrap()];
        let ranged = RegisteredWorker::from_armored(uuid, "eu-2", &armored(&cert), nets).unwrap();
        assert!(ranged.names(ip("10.0.0.2")) && ranged.names(ip("::ffff:10.0.0.2")));
        assert!(ranged.allows(ip("10.1.0.5")) && !ranged.names(ip("10.1.0.5")));

        let secret = String::from_utf8(cert.as_tsk().armored().to_vec().unwrap()).unwrap();
        let err =
            RegisteredWorker::from_armored(uuid, "eu-1", &secret, loopback_only()).unwrap_err();
        assert!(matches!(err, RegistryError::CertHasSecret { .. }), "{err}");
        assert!(err.to_string().contains(&uuid.to_string()), "{err}");

        let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let expired = worker_cert(
            CertBuilder::new()
                .set_creation_time(an_hour_ago)
                .set_validity_period(Some(Duration::from_secs(60))),
        );
        let err = RegisteredWorker::from_armored(uuid, "eu-1", &armored(&expired), loopback_only())
            .unwrap_err();
        assert!(matches!(err, RegistryError::CertUnusable { .. }), "{err}");

        let (signing_only, _) =
            CertBuilder::new().add_userid("w").add_signing_subkey().generate().unwrap();
        let err =
            RegisteredWorker::from_armored(uuid, "x", &armored(&signing_only), loopback_only())
                .unwrap_err();
        assert!(err.to_string().contains("transport-encryption"), "{err}");

        // A link key sealed to every one of 64 encryption subkeys would not fit a challenge:
        // refused at registration, not at every handshake.
        let mut crowded = CertBuilder::new().add_userid("w").add_signing_subkey();
        for _ in 0..64 {
            crowded = crowded.add_transport_encryption_subkey();
        }
        let (crowded, _) = crowded.generate().unwrap();
        let err = RegisteredWorker::from_armored(uuid, "x", &armored(&crowded), loopback_only())
            .unwrap_err();
        assert!(matches!(err, RegistryError::CertUnusable { .. }), "{err}");
        assert!(err.to_string().contains("does not fit a challenge"), "{err}");
        let link_key = LinkKey([7; 32]);
        let sealed = seal_to(&crowded, &link_key.0).unwrap_err();
        assert!(sealed.to_string().contains("over the 4096"), "{sealed}");

        let good = armored(&cert);
        for (name, ips, check) in [
            ("", loopback_only(), "name"),
            ("a\nb", loopback_only(), "control"),
            (&*"n".repeat(65), loopback_only(), "64"),
            ("ok", Vec::new(), "allowed_ips"),
        ] {
            let err = RegisteredWorker::from_armored(uuid, name, &good, ips).unwrap_err();
            assert!(err.to_string().contains(check), "{check}: {err}");
        }
        let err = RegisteredWorker::from_armored(Uuid::nil(), "ok", &good, loopback_only());
        assert!(matches!(err, Err(RegistryError::NilUuid)));
        let err =
            RegisteredWorker::from_armored(uuid, "ok", "garbage", loopback_only()).unwrap_err();
        assert!(matches!(err, RegistryError::BadCert { .. }), "{err}");
    }

    #[test]
    fn registry_adds_and_removes_and_keeps_config_entries_read_only() {
        let tmp = tempfile::tempdir().unwrap();
        let config_cert = worker_cert(CertBuilder::new());
        let path = tmp.path().join("config.pub.asc");
        fs::write(&path, armored(&config_cert)).unwrap();
        let config_uuid = Uuid::from_u128(1);
        let entries = [WorkerConfig {
            id: config_uuid,
            name: None,
            cert: path.clone(),
            allowed_ips: loopback_only(),
        }];
        let stored_cert = worker_cert(CertBuilder::new());
        let stored = |uuid: u128, cert: &Cert| {
            RegisteredWorker::from_armored(
                Uuid::from_u128(uuid),
                "s",
                &armored(cert),
                loopback_only(),
            )
            .unwrap()
        };
        let mut registry =
            WorkerRegistry::with_stored(&entries, [stored(2, &stored_cert)]).unwrap();
        assert_eq!(registry.len(), 2);
        assert_eq!(registry.get(config_uuid).unwrap().source(), WorkerSource::Config);
        assert_eq!(registry.get(config_uuid).unwrap().cert_path(), Some(path.as_path()));

        // A UUID in both the config and the registry stops the start-up.
        let err = WorkerRegistry::with_stored(&entries, [stored(1, &stored_cert)]).unwrap_err();
        assert!(matches!(err, RegistryError::InConfigAndRegistry { .. }), "{err}");
        // As does a certificate shared with a config entry.
        let err = WorkerRegistry::with_stored(&entries, [stored(3, &config_cert)]).unwrap_err();
        assert!(matches!(err, RegistryError::DuplicateCert { .. }), "{err}");

        let err = registry.add(stored(2, &worker_cert(CertBuilder::new()))).unwrap_err();
        assert!(matches!(err, RegistryError::DuplicateUuid { .. }), "{err}");
        assert_eq!(registry.len(), 2, "a refused add leaves the registry unchanged");

        let err = registry.remove(config_uuid).unwrap_err();
        assert!(matches!(err, RegistryError::ConfigEntry { .. }), "{err}");
        assert!(registry.get(config_uuid).is_some());
        assert!(registry.remove(Uuid::from_u128(2)).unwrap());
        assert!(!registry.remove(Uuid::from_u128(2)).unwrap());
        assert_eq!(
            registry.check_admission(Uuid::from_u128(2), ip("127.0.0.1")).unwrap_err().reason(),
            "unknown_worker"
        );
    }
}
