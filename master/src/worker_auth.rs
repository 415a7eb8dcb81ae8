//! Worker admission: only registered workers, from allowed addresses, holding their key.
//!
//! The master keeps a [`WorkerRegistry`] built from its configuration (`[[workers]]` entries:
//! a UUID, the path of the worker's armored OpenPGP certificate and an IP allow-list). A worker
//! connecting to the master goes through the handshake described in `docs/WORKER_AUTH.md`:
//!
//! 1. Hello{uuid, protocol version, client address}: [`WorkerRegistry::check_admission`].
//! 2. Challenge{nonce}: [`new_challenge`].
//! 3. Proof{signature}: [`verify_proof`] against the registered certificate.
//! 4. Accepted{sealed link key}: [`new_link_key`] then [`seal_link_key`].
//!
//! Every function here is synchronous and does no network IO; the only IO is reading the
//! certificate files in [`WorkerRegistry::from_entries`]. Time comes in as an argument.
//! Errors carry UUIDs, addresses and paths, never key material.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use openpgp::parse::Parse;
use openpgp::parse::stream::{
    DetachedVerifierBuilder, MessageLayer, MessageStructure, VerificationError, VerificationHelper,
};
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{Encryptor, LiteralWriter, Message};
use openpgp::{Cert, Fingerprint, KeyHandle};
use sequoia_openpgp as openpgp;
use uuid::Uuid;

use crate::config::{IpNet, WorkerConfig};

/// Domain separator that starts every signed authentication message.
pub const AUTH_DOMAIN: &[u8] = b"papertrader-worker-auth-v1\0";
/// Length of a challenge nonce.
pub const NONCE_BYTES: usize = 32;
/// Length of a link key.
pub const LINK_KEY_BYTES: usize = 32;
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
/// How far a proof signature's creation time may be from the master's clock, either way.
pub const SIGNATURE_CLOCK_SKEW_MAX: Duration = Duration::from_secs(30 * 60);

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The policy every certificate and signature is judged by.
static POLICY: StandardPolicy<'static> = StandardPolicy::new();

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
    #[error("worker {uuid} is configured twice")]
    DuplicateUuid {
        /// The repeated UUID.
        uuid: Uuid,
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
    /// The certificate file is larger than [`CERT_FILE_BYTES_MAX`].
    #[error("worker {uuid}: certificate {path} is larger than {bytes_max} bytes")]
    CertTooLarge {
        /// The worker.
        uuid: Uuid,
        /// The file.
        path: PathBuf,
        /// The limit.
        bytes_max: u64,
    },
    /// The file is not one OpenPGP certificate.
    #[error("worker {uuid}: {path} is not an OpenPGP certificate: {source}")]
    BadCert {
        /// The worker.
        uuid: Uuid,
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        #[source]
        source: BoxError,
    },
    /// The file holds secret key material: the worker's `worker.key` was registered instead of
    /// `worker.pub.asc`. The master must never hold a worker's secret key.
    #[error("worker {uuid}: {path} contains secret key material; register worker.pub.asc instead")]
    CertHasSecret {
        /// The worker.
        uuid: Uuid,
        /// The file.
        path: PathBuf,
    },
    /// The certificate cannot authenticate a worker now (expired, revoked, missing a valid
    /// signing or transport-encryption subkey, rejected by the standard policy).
    #[error("worker {uuid}: certificate {path} is unusable: {reason}")]
    CertUnusable {
        /// The worker.
        uuid: Uuid,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A worker the master admits: its UUID, its certificate and where it may connect from.
///
/// `Debug` shows the UUID, the fingerprint and the allow-list, not the certificate.
#[derive(Clone)]
pub struct RegisteredWorker {
    uuid: Uuid,
    name: String,
    cert: Cert,
    cert_path: PathBuf,
    allowed_ips: Vec<IpNet>,
}

impl fmt::Debug for RegisteredWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisteredWorker")
            .field("uuid", &self.uuid)
            .field("name", &self.name)
            .field("fingerprint", &self.cert.fingerprint().to_hex())
            .field("cert_path", &self.cert_path)
            .field("allowed_ips", &self.allowed_ips)
            .finish()
    }
}

impl RegisteredWorker {
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

    /// The file the certificate was read from.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Where the worker may connect from.
    pub fn allowed_ips(&self) -> &[IpNet] {
        &self.allowed_ips
    }

    /// Whether `peer` is in the worker's allow-list.
    pub fn allows(&self, peer: IpAddr) -> bool {
        self.allowed_ips.iter().any(|net| net.contains(peer))
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
        let mut workers = BTreeMap::new();
        let mut by_fingerprint: BTreeMap<Fingerprint, Uuid> = BTreeMap::new();
        for entry in entries {
            let uuid = entry.id;
            if uuid.is_nil() {
                return Err(RegistryError::NilUuid);
            }
            if workers.contains_key(&uuid) {
                return Err(RegistryError::DuplicateUuid { uuid });
            }
            if entry.allowed_ips.is_empty() {
                return Err(RegistryError::NoAllowedIps { uuid });
            }
            if entry.allowed_ips.len() > ALLOWED_IPS_PER_WORKER_MAX {
                return Err(RegistryError::TooManyAllowedIps {
                    uuid,
                    count: entry.allowed_ips.len(),
                    count_max: ALLOWED_IPS_PER_WORKER_MAX,
                });
            }
            let cert = load_cert(uuid, &entry.cert)?;
            let fingerprint = cert.fingerprint();
            if let Some(&other) = by_fingerprint.get(&fingerprint) {
                return Err(RegistryError::DuplicateCert { uuid, other, fingerprint });
            }
            by_fingerprint.insert(fingerprint, uuid);
            workers.insert(
                uuid,
                RegisteredWorker {
                    uuid,
                    name: entry.name.clone().unwrap_or_else(|| uuid.to_string()),
                    cert,
                    cert_path: entry.cert.clone(),
                    allowed_ips: entry.allowed_ips.clone(),
                },
            );
        }
        Ok(Self { workers })
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

fn load_cert(uuid: Uuid, path: &Path) -> Result<Cert, RegistryError> {
    let read_err = |source| RegistryError::ReadCert { uuid, path: path.to_path_buf(), source };
    let file = fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(CERT_FILE_BYTES_MAX.saturating_add(1)).read_to_end(&mut bytes).map_err(read_err)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > CERT_FILE_BYTES_MAX {
        return Err(RegistryError::CertTooLarge {
            uuid,
            path: path.to_path_buf(),
            bytes_max: CERT_FILE_BYTES_MAX,
        });
    }
    let cert = Cert::from_bytes(&bytes).map_err(|e| RegistryError::BadCert {
        uuid,
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    if cert.is_tsk() {
        return Err(RegistryError::CertHasSecret { uuid, path: path.to_path_buf() });
    }
    usable(&cert).map_err(|reason| RegistryError::CertUnusable {
        uuid,
        path: path.to_path_buf(),
        reason,
    })?;
    Ok(cert)
}

/// Why `cert` cannot authenticate a worker now, if it cannot.
fn usable(cert: &Cert) -> Result<(), &'static str> {
    let valid = cert
        .with_policy(&POLICY, None)
        .map_err(|_| "not valid under the standard policy (no valid self-signature)")?;
    if valid.alive().is_err() {
        return Err("the certificate is expired or not yet valid");
    }
    if let openpgp::types::RevocationStatus::Revoked(_) = valid.revocation_status() {
        return Err("the certificate is revoked");
    }
    if valid.keys().supported().alive().revoked(false).for_signing().next().is_none() {
        return Err("no valid signing-capable key");
    }
    if valid.keys().supported().alive().revoked(false).for_transport_encryption().next().is_none() {
        return Err("no valid transport-encryption key");
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
}

impl AuthError {
    /// The stable reason name (`unknown_worker`, `ip_not_allowed`, `bad_hello`,
    /// `malformed_signature`, `wrong_key`, `key_not_valid`, `bad_signature`, `signature_time`,
    /// `random_unavailable`, `seal_failed`), documented in `docs/WORKER_AUTH.md`.
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
        }
    }
}

/// The fields of the worker's Hello that the proof signature covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloBinding<'a> {
    /// The protocol version the worker announced.
    pub protocol_version: u16,
    /// The client-facing address (`host:port`) the worker announced; at most
    /// [`CLIENT_ADDR_BYTES_MAX`] bytes.
    pub client_addr: &'a str,
}

/// The exact bytes the worker signs (see `docs/WORKER_AUTH.md`):
///
/// `AUTH_DOMAIN || uuid (16) || nonce (32) || protocol_version (u16 BE) ||
///  client_addr length (u16 BE) || client_addr (UTF-8)`.
///
/// The worker computes the same bytes in `worker::identity::auth_message`.
pub fn auth_message(
    uuid: Uuid,
    nonce: &[u8; NONCE_BYTES],
    hello: &HelloBinding<'_>,
) -> Result<Vec<u8>, AuthError> {
    let addr = hello.client_addr.as_bytes();
    let too_long = || AuthError::BadHello {
        detail: format!(
            "client address is {} bytes; at most {CLIENT_ADDR_BYTES_MAX} allowed",
            addr.len()
        ),
    };
    if addr.len() > CLIENT_ADDR_BYTES_MAX {
        return Err(too_long());
    }
    let addr_len = u16::try_from(addr.len()).map_err(|_| too_long())?;
    let mut message = Vec::with_capacity(AUTH_DOMAIN.len() + 16 + NONCE_BYTES + 4 + addr.len());
    message.extend_from_slice(AUTH_DOMAIN);
    message.extend_from_slice(uuid.as_bytes());
    message.extend_from_slice(nonce);
    message.extend_from_slice(&hello.protocol_version.to_be_bytes());
    message.extend_from_slice(&addr_len.to_be_bytes());
    message.extend_from_slice(addr);
    Ok(message)
}

/// A fresh challenge nonce: 32 bytes from the OS random number generator. Use one per
/// connection attempt and never reuse it.
pub fn new_challenge() -> Result<[u8; NONCE_BYTES], AuthError> {
    random_bytes()
}

/// A fresh link key: 32 bytes from the OS random number generator.
pub fn new_link_key() -> Result<[u8; LINK_KEY_BYTES], AuthError> {
    random_bytes()
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
    if signature.len() > PROOF_SIGNATURE_BYTES_MAX {
        return Err(AuthError::MalformedSignature {
            detail: format!(
                "{} bytes; at most {PROOF_SIGNATURE_BYTES_MAX} allowed",
                signature.len()
            ),
        });
    }
    if signature.is_empty() {
        return Err(AuthError::MalformedSignature { detail: "empty".into() });
    }
    let helper = ProofHelper { cert: &worker.cert, now, outcome: None };
    let mut verifier = DetachedVerifierBuilder::from_bytes(signature)
        .and_then(|builder| builder.with_policy(&POLICY, now, helper))
        .map_err(|e| AuthError::MalformedSignature { detail: e.to_string() })?;
    let verified = verifier.verify_bytes(&message);
    match (verifier.into_helper().outcome, verified) {
        (Some(Ok(())), Ok(())) => Ok(()),
        (Some(Err(err)), _) => Err(err),
        // The parser failed before the signatures could be checked.
        (None, Err(e)) => Err(AuthError::MalformedSignature { detail: e.to_string() }),
        (Some(Ok(())), Err(e)) => Err(AuthError::MalformedSignature { detail: e.to_string() }),
        (None, Ok(())) => {
            Err(AuthError::MalformedSignature { detail: "no signature was checked".into() })
        }
    }
}

/// Gives the verifier the registered certificate, and judges its results.
struct ProofHelper<'a> {
    cert: &'a Cert,
    now: SystemTime,
    outcome: Option<Result<(), AuthError>>,
}

impl VerificationHelper for ProofHelper<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(vec![self.cert.clone()])
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        let outcome = judge(structure, self.now);
        let accepted = outcome.is_ok();
        self.outcome = Some(outcome);
        if accepted {
            Ok(())
        } else {
            Err(openpgp::Error::BadSignature("worker proof rejected".into()).into())
        }
    }
}

/// Accepts exactly one signature group holding exactly one good signature made near `now`.
fn judge(structure: MessageStructure, now: SystemTime) -> Result<(), AuthError> {
    let malformed = |detail: &str| AuthError::MalformedSignature { detail: detail.to_owned() };
    let mut layers = structure.into_iter();
    let results = match (layers.next(), layers.next()) {
        (Some(MessageLayer::SignatureGroup { results }), None) => results,
        _ => return Err(malformed("not a single detached signature")),
    };
    if results.len() != 1 {
        return Err(malformed("expected exactly one signature"));
    }
    let Some(result) = results.into_iter().next() else {
        return Err(malformed("expected exactly one signature"));
    };
    match result {
        Ok(good) => {
            let created = good.sig.signature_creation_time().ok_or(AuthError::SignatureTime)?;
            let skew = match created.duration_since(now) {
                Ok(ahead) => ahead,
                Err(behind) => behind.duration(),
            };
            if skew > SIGNATURE_CLOCK_SKEW_MAX {
                return Err(AuthError::SignatureTime);
            }
            Ok(())
        }
        Err(VerificationError::MissingKey { .. }) => Err(AuthError::WrongKey),
        Err(
            VerificationError::UnboundKey { error, .. } | VerificationError::BadKey { error, .. },
        ) => Err(AuthError::KeyNotValid { detail: error.to_string() }),
        Err(VerificationError::BadSignature { error, .. }) => {
            match error.downcast_ref::<openpgp::Error>() {
                Some(openpgp::Error::NotYetLive(_) | openpgp::Error::Expired(_)) => {
                    Err(AuthError::SignatureTime)
                }
                _ => Err(AuthError::BadSignature),
            }
        }
        Err(
            VerificationError::MalformedSignature { .. }
            | VerificationError::UnknownSignature { .. },
        ) => Err(malformed("unparsable or incomplete signature packet")),
        Err(_) => Err(malformed("unrecognised verification result")),
    }
}

/// Step 4 of the handshake: encrypts `link_key` to every valid transport-encryption subkey of
/// the worker's certificate, as a binary OpenPGP message holding one literal data packet.
pub fn seal_link_key(
    worker: &RegisteredWorker,
    link_key: &[u8; LINK_KEY_BYTES],
) -> Result<Vec<u8>, AuthError> {
    let seal_err = |detail: String| AuthError::SealFailed { detail };
    let recipients: Vec<_> = worker
        .cert
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
    let mut sealed = Vec::new();
    let sink = Message::new(&mut sealed);
    let mut writer = Encryptor::for_recipients(sink, recipients)
        .build()
        .and_then(|encryptor| LiteralWriter::new(encryptor).build())
        .map_err(|e| seal_err(e.to_string()))?;
    writer.write_all(link_key).map_err(|e| seal_err(e.to_string()))?;
    writer.finalize().map_err(|e| seal_err(e.to_string()))?;
    Ok(sealed)
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
        ];
        for (err, reason) in cases {
            assert_eq!(err.reason(), reason);
        }
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
}
