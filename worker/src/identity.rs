//! The worker's OpenPGP identity (its UUID and its secret key) and the master it trusts.
//!
//! The handshake is mutual. The worker sends a fresh nonce in its Hello ([`new_nonce`]); the
//! master answers with its own nonce, the link key encrypted to the worker's
//! transport-encryption subkey, and a signature over both nonces and that sealed key
//! ([`master_auth_message`]), which the worker checks against the master certificate it was
//! given ([`MasterTrust::verify_master_proof`]) before it proves anything. The worker then
//! proves that it is a registered worker by signing the master's nonce with its signing subkey
//! ([`WorkerIdentity::sign_challenge`]), and once the master accepts, it decrypts the sealed key
//! of the Challenge ([`WorkerIdentity::decrypt_link_key`]). The handshake and the exact signed
//! bytes are described in `docs/WORKER_AUTH.md`; the master's side is `master::worker_auth`,
//! and the pieces both sides run (the signed bytes, detached signing and verification, the
//! key and certificate checks) are in `master::pgp`.
//!
//! On disk an identity is three files in one directory:
//! - `worker.key`: the armored transferable secret key (mode 0600, refused when group- or
//!   world-accessible),
//! - `worker.pub.asc`: the armored public certificate, the file to register on the master,
//! - `worker.uuid`: the worker's UUID in hyphenated form.
//!
//! The secret key is stored without a password: the worker runs unattended, so the file
//! permissions are the protection.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use master::pgp::{self, ClientAddrTooLong, POLICY, ProofError, SignError};
use master::worker_auth;
use net::LinkKey;
use openpgp::Cert;
use openpgp::Fingerprint;
use openpgp::cert::{CertBuilder, CipherSuite};
use openpgp::crypto::SessionKey;
use openpgp::packet::{PKESK, SKESK};
use openpgp::parse::Parse;
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageLayer, MessageStructure, VerificationHelper,
};
use openpgp::serialize::SerializeInto;
use openpgp::types::SymmetricAlgorithm;
use sequoia_openpgp as openpgp;
use uuid::Uuid;

pub use master::worker_auth::HelloBinding;

/// File name of the armored secret key inside an identity directory.
pub const KEY_FILE_NAME: &str = "worker.key";
/// File name of the armored public certificate inside an identity directory.
pub const PUBLIC_CERT_FILE_NAME: &str = "worker.pub.asc";
/// File name of the worker's UUID inside an identity directory.
pub const UUID_FILE_NAME: &str = "worker.uuid";

/// Domain separator that starts every worker authentication message (what the worker signs).
pub const AUTH_DOMAIN: &[u8] = worker_auth::AUTH_DOMAIN;
/// Domain separator that starts every master authentication message (what the master signs).
pub const MASTER_AUTH_DOMAIN: &[u8] = worker_auth::MASTER_AUTH_DOMAIN;
/// Length of a handshake nonce (the worker's in the Hello, the master's in the Challenge).
pub const NONCE_BYTES: usize = worker_auth::NONCE_BYTES;
/// Largest master proof signature the worker agrees to parse.
pub const PROOF_SIGNATURE_BYTES_MAX: usize = worker_auth::PROOF_SIGNATURE_BYTES_MAX;
/// How far the master proof's creation time may be from the worker's clock, either way.
pub const SIGNATURE_CLOCK_SKEW_MAX: Duration = worker_auth::SIGNATURE_CLOCK_SKEW_MAX;
/// Length of the link key the master seals to the worker.
pub const LINK_KEY_BYTES: usize = worker_auth::LINK_KEY_BYTES;
/// Length of the BLAKE3 hash of the sealed link key that ends the master authentication message.
pub const SEALED_KEY_HASH_BYTES: usize = worker_auth::SEALED_KEY_HASH_BYTES;
/// Largest client-facing address (`host:port`) a worker may announce in its Hello.
pub const CLIENT_ADDR_BYTES_MAX: usize = worker_auth::CLIENT_ADDR_BYTES_MAX;
/// Largest sealed link key the worker agrees to decrypt.
pub const LINK_KEY_CIPHERTEXT_BYTES_MAX: usize = 4096;
/// Largest key or certificate file read from disk.
pub const KEY_FILE_BYTES_MAX: u64 = 64 * 1024;
/// Largest `worker.uuid` file read from disk.
pub const UUID_FILE_BYTES_MAX: u64 = 128;
/// Longest human-readable worker name (UTF-8 bytes), as the master's `workers[].name` allows.
pub const WORKER_NAME_BYTES_MAX: usize = worker_auth::WORKER_NAME_BYTES_MAX;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong creating, storing, loading or using a worker identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file could not be read, written or created.
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
    /// `save` refuses to overwrite an existing identity.
    #[error("{path} already exists; refusing to overwrite a worker identity")]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// A file is larger than its limit.
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
    /// `worker.uuid` does not hold a UUID.
    #[error("{path} does not hold a valid UUID: {source}")]
    BadUuid {
        /// The UUID file.
        path: PathBuf,
        /// Why it did not parse.
        #[source]
        source: uuid::Error,
    },
    /// The nil UUID cannot name a worker.
    #[error("the nil UUID cannot identify a worker")]
    NilUuid,
    /// The worker name is empty, too long or holds control characters.
    #[error("invalid worker name: {reason}")]
    InvalidName {
        /// What is wrong with it.
        reason: &'static str,
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
    /// The key parsed but cannot be used for worker authentication.
    #[error("{path}: unusable worker key: {reason}")]
    UnusableKey {
        /// The key file.
        path: PathBuf,
        /// What is missing or invalid.
        reason: &'static str,
    },
    /// Key generation failed.
    #[error("cannot generate a worker key: {source}")]
    Generate {
        /// The OpenPGP library's error.
        #[source]
        source: BoxError,
    },
    /// The key could not be serialized.
    #[error("cannot serialize the worker key: {source}")]
    Serialize {
        /// The OpenPGP library's error.
        #[source]
        source: BoxError,
    },
    /// The announced client-facing address is longer than [`CLIENT_ADDR_BYTES_MAX`].
    #[error("client address is {bytes} bytes; at most {bytes_max} allowed")]
    ClientAddrTooLong {
        /// Its length.
        bytes: usize,
        /// The limit.
        bytes_max: usize,
    },
    /// Signing the challenge failed.
    #[error("cannot sign the challenge: {source}")]
    Sign {
        /// The OpenPGP library's error.
        #[source]
        source: BoxError,
    },
    /// The sealed link key is larger than [`LINK_KEY_CIPHERTEXT_BYTES_MAX`].
    #[error("sealed link key is {bytes} bytes; at most {bytes_max} allowed")]
    LinkKeyTooLarge {
        /// Its length.
        bytes: usize,
        /// The limit.
        bytes_max: usize,
    },
    /// The sealed link key could not be decrypted (not OpenPGP, not for this key, tampered).
    #[error("cannot decrypt the sealed link key: {source}")]
    LinkKeyDecrypt {
        /// The OpenPGP library's error.
        #[source]
        source: BoxError,
    },
    /// The decrypted link key does not have [`LINK_KEY_BYTES`] bytes.
    #[error("decrypted link key has the wrong length (expected {LINK_KEY_BYTES} bytes)")]
    LinkKeyLength,
    /// The registration snippet could not be rendered.
    #[error("cannot render the registration snippet: {reason}")]
    Registration {
        /// Why.
        reason: String,
    },
    /// The OS random number generator failed.
    #[error("the OS random number generator failed: {detail}")]
    RandomUnavailable {
        /// The OS error.
        detail: String,
    },
    /// The master certificate (a file, or armored text) is not one OpenPGP certificate.
    #[error("{origin} is not an OpenPGP certificate: {source}")]
    BadMasterCert {
        /// Where it came from: the file's path, or "armored master certificate".
        origin: String,
        /// The parser's complaint.
        #[source]
        source: BoxError,
    },
    /// The master certificate parsed but cannot be trusted to authenticate the master: it
    /// holds secret key material (`master.key` was given instead of `master.pub.asc`), is
    /// expired or revoked, or has no valid signing key.
    #[error("{origin}: unusable master certificate: {reason}")]
    UnusableMasterCert {
        /// Where it came from: the file's path, or "armored master certificate".
        origin: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The master's proof in the Challenge was refused: the peer is not the master the worker
    /// trusts, or the proof is not for this handshake. The worker must close the link without
    /// sending its own proof.
    #[error("master proof refused: {0}")]
    MasterProof(#[source] MasterProofError),
}

/// Why the master's proof was refused. [`MasterProofError::reason`] gives a stable name, the
/// same as the master's for the matching check on a worker proof.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MasterProofError {
    /// `malformed_signature`: the proof is not exactly one well-formed detached OpenPGP
    /// signature (garbage, truncated, empty, too large, several signatures).
    #[error("malformed master proof: {detail}")]
    MalformedSignature {
        /// What is wrong.
        detail: String,
    },
    /// `wrong_key`: the signature was not made by any key of the trusted master certificate
    /// (another master, or an impostor).
    #[error("master proof is not from the trusted master key")]
    WrongKey,
    /// `key_not_valid`: the signature was made by a key of the trusted certificate that may not
    /// sign now (not signing-capable, expired, revoked, rejected by policy).
    #[error("master proof signed by a key that is not valid for signing: {detail}")]
    KeyNotValid {
        /// What is wrong with the key.
        detail: String,
    },
    /// `bad_signature`: the signature does not verify over this handshake's master
    /// authentication message (tampered, replayed from another handshake, made for another
    /// worker, other Hello fields or another sealed link key) or is rejected by policy (weak
    /// hash).
    #[error(
        "master proof does not verify over this handshake's nonces, Hello fields and sealed \
         link key (tampered, replayed, or a field swapped on the way)"
    )]
    BadSignature,
    /// `signature_time`: the signature's creation time is more than
    /// [`SIGNATURE_CLOCK_SKEW_MAX`] away from the worker's clock.
    #[error("master proof time is too far from the worker's clock")]
    SignatureTime,
}

impl MasterProofError {
    /// The stable reason name (`malformed_signature`, `wrong_key`, `key_not_valid`,
    /// `bad_signature`, `signature_time`), as in `docs/WORKER_AUTH.md`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MalformedSignature { .. } => "malformed_signature",
            Self::WrongKey => "wrong_key",
            Self::KeyNotValid { .. } => "key_not_valid",
            Self::BadSignature => "bad_signature",
            Self::SignatureTime => "signature_time",
        }
    }
}

impl From<ProofError> for MasterProofError {
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

impl From<ClientAddrTooLong> for IdentityError {
    fn from(ClientAddrTooLong { bytes, bytes_max }: ClientAddrTooLong) -> Self {
        Self::ClientAddrTooLong { bytes, bytes_max }
    }
}

impl From<SignError> for IdentityError {
    fn from(err: SignError) -> Self {
        match err {
            SignError::NoSigningKey => Self::UnusableKey {
                path: PathBuf::from(KEY_FILE_NAME),
                reason: "no valid, unencrypted signing subkey",
            },
            SignError::KeyUnusable { source } | SignError::Sign { source } => Self::Sign { source },
        }
    }
}

/// What the master sent in its Challenge, as the worker received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MasterChallenge<'a> {
    /// The master's nonce, which the worker signs in its own proof.
    pub nonce: &'a [u8; NONCE_BYTES],
    /// The master's proof: a detached signature over [`master_auth_message`].
    pub master_proof: &'a [u8],
    /// The link key sealed to this worker; its BLAKE3 hash is in the signed message. Decrypt
    /// it ([`WorkerIdentity::decrypt_link_key`]) only after the proof verified and the master
    /// accepted the worker.
    pub sealed_key: &'a [u8],
}

/// The exact bytes a worker signs to answer a challenge: [`master::pgp::auth_message`] (laid
/// out in `docs/WORKER_AUTH.md`), the function the master checks worker proofs with, with an
/// over-long client address reported as [`IdentityError::ClientAddrTooLong`].
pub fn auth_message(
    uuid: Uuid,
    nonce: &[u8; NONCE_BYTES],
    hello: &HelloBinding<'_>,
) -> Result<Vec<u8>, IdentityError> {
    Ok(pgp::auth_message(uuid, nonce, hello)?)
}

/// The exact bytes the master signs to prove itself to the worker:
/// [`master::pgp::master_auth_message`] (laid out in `docs/WORKER_AUTH.md`), the function the
/// master signs with, with an over-long client address reported as
/// [`IdentityError::ClientAddrTooLong`]. The BLAKE3 hash of `sealed_key` at its end binds the
/// proof to the exact sealed link key of the Challenge, so nobody on the path can swap in a
/// key of their own.
pub fn master_auth_message(
    uuid: Uuid,
    worker_nonce: &[u8; NONCE_BYTES],
    master_nonce: &[u8; NONCE_BYTES],
    hello: &HelloBinding<'_>,
    sealed_key: &[u8],
) -> Result<Vec<u8>, IdentityError> {
    Ok(pgp::master_auth_message(uuid, worker_nonce, master_nonce, hello, sealed_key)?)
}

/// A fresh handshake nonce for the worker's Hello: 32 bytes from the OS random number
/// generator. Use one per connection attempt and never reuse it.
pub fn new_nonce() -> Result<[u8; NONCE_BYTES], IdentityError> {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce)
        .map_err(|e| IdentityError::RandomUnavailable { detail: e.to_string() })?;
    Ok(nonce)
}

/// A worker's identity: its UUID and its OpenPGP secret key (a TSK with a certification-only
/// primary key, an Ed25519 signing subkey and a Cv25519 transport-encryption subkey).
///
/// `Debug` shows only the UUID and the fingerprint, never key material.
#[derive(Clone)]
pub struct WorkerIdentity {
    uuid: Uuid,
    tsk: Cert,
}

impl fmt::Debug for WorkerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerIdentity")
            .field("uuid", &self.uuid)
            .field("fingerprint", &self.tsk.fingerprint().to_hex())
            .finish_non_exhaustive()
    }
}

impl WorkerIdentity {
    /// Generates a new identity for the worker `uuid`. `name` is a human-readable label (1 to
    /// [`WORKER_NAME_BYTES_MAX`] bytes, no control characters) put in the user ID together with
    /// the UUID. The key has no expiry and no password.
    pub fn generate(uuid: Uuid, name: &str) -> Result<Self, IdentityError> {
        if uuid.is_nil() {
            return Err(IdentityError::NilUuid);
        }
        check_name(name)?;
        let (tsk, _revocation) = CertBuilder::new()
            .set_cipher_suite(CipherSuite::Cv25519)
            .set_profile(openpgp::Profile::RFC4880)
            .map_err(|e| IdentityError::Generate { source: e.into() })?
            .set_validity_period(None)
            .add_userid(format!("{name} (PaperTrader worker {uuid})"))
            .add_signing_subkey()
            .add_transport_encryption_subkey()
            .generate()
            .map_err(|e| IdentityError::Generate { source: e.into() })?;
        // The builder's output satisfies the checks `load` applies; keep them in step.
        let reason = usable(&tsk).err();
        debug_assert!(reason.is_none(), "a freshly generated key must be usable: {reason:?}");
        Ok(Self { uuid, tsk })
    }

    /// Writes `worker.key` (mode 0600), `worker.pub.asc` and `worker.uuid` into `dir`, creating
    /// the directory if needed. Refuses to overwrite an identity: a directory that has a
    /// `worker.key` has one. The key is written last, and appears whole or not at all (written
    /// to a temporary file, then renamed): a save cut short (a full disk, a kill) leaves no key,
    /// so the next save starts over, replacing the other two files it left. Saves into the same
    /// directory take turns (an exclusive lock on `.identity.lock` there), so two at once cannot
    /// leave one's key beside the other's certificate.
    pub fn save(&self, dir: &Path) -> Result<(), IdentityError> {
        let io_err = |action, path: &Path, source| IdentityError::Io {
            action,
            path: path.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(|source| io_err("create directory", dir, source))?;
        let key_path = dir.join(KEY_FILE_NAME);
        let cert_path = dir.join(PUBLIC_CERT_FILE_NAME);
        let uuid_path = dir.join(UUID_FILE_NAME);
        let lock_path = dir.join(".identity.lock");
        let lock = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|source| io_err("lock", &lock_path, source))?;
        lock.lock().map_err(|source| io_err("lock", &lock_path, source))?;
        if key_path.exists() {
            return Err(IdentityError::AlreadyExists { path: key_path });
        }
        let secret = self
            .tsk
            .as_tsk()
            .armored()
            .to_vec()
            .map_err(|e| IdentityError::Serialize { source: e.into() })?;
        let public = self.public_cert_armored()?;
        let uuid_text = format!("{}\n", self.uuid.hyphenated());
        let temporary = dir.join(format!(".{KEY_FILE_NAME}.new"));
        for (path, bytes, mode) in [
            (&cert_path, public.as_bytes(), 0o644),
            (&uuid_path, uuid_text.as_bytes(), 0o644),
            (&temporary, secret.as_slice(), 0o600),
        ] {
            // Left by a save cut short (there is no key): replaced.
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(io_err("replace", path, source)),
            }
            write_new(path, bytes, mode)?;
        }
        // No key appeared meanwhile: saves take turns under the lock.
        fs::rename(&temporary, &key_path).map_err(|source| io_err("create", &key_path, source))?;
        #[cfg(unix)]
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| io_err("sync", dir, source))?;
        drop(lock);
        Ok(())
    }

    /// Loads the identity saved by [`WorkerIdentity::save`] from `dir` (`worker.key` and
    /// `worker.uuid`), checking the key file's permissions and that the key can sign and
    /// decrypt.
    pub fn load(dir: &Path) -> Result<Self, IdentityError> {
        let key_path = dir.join(KEY_FILE_NAME);
        check_private_mode(&key_path)?;
        let key_bytes = read_bounded(&key_path, KEY_FILE_BYTES_MAX)?;
        let tsk = Cert::from_bytes(&key_bytes)
            .map_err(|e| IdentityError::BadKey { path: key_path.clone(), source: e.into() })?;
        if !tsk.is_tsk() {
            return Err(IdentityError::UnusableKey {
                path: key_path,
                reason: "it holds no secret key material (is this the public certificate?)",
            });
        }
        usable(&tsk).map_err(|reason| IdentityError::UnusableKey { path: key_path, reason })?;

        let uuid_path = dir.join(UUID_FILE_NAME);
        let uuid_bytes = read_bounded(&uuid_path, UUID_FILE_BYTES_MAX)?;
        let uuid_text = String::from_utf8_lossy(&uuid_bytes);
        let uuid = Uuid::parse_str(uuid_text.trim())
            .map_err(|source| IdentityError::BadUuid { path: uuid_path, source })?;
        if uuid.is_nil() {
            return Err(IdentityError::NilUuid);
        }
        Ok(Self { uuid, tsk })
    }

    /// The worker's UUID.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// The fingerprint of the worker's certificate (its primary key).
    pub fn fingerprint(&self) -> Fingerprint {
        self.tsk.fingerprint()
    }

    /// The public certificate, without any secret key material.
    pub fn public_cert(&self) -> Cert {
        self.tsk.clone().strip_secret_key_material()
    }

    /// The public certificate, ASCII-armored: the contents of `worker.pub.asc`.
    pub fn public_cert_armored(&self) -> Result<String, IdentityError> {
        pgp::armored_public_cert(&self.tsk).map_err(|source| IdentityError::Serialize { source })
    }

    /// Answers the master's challenge: a detached OpenPGP signature, made with the signing
    /// subkey, over [`auth_message`]`(self.uuid(), nonce, hello)`.
    pub fn sign_challenge(
        &self,
        nonce: &[u8; NONCE_BYTES],
        hello: &HelloBinding<'_>,
    ) -> Result<Vec<u8>, IdentityError> {
        let message = auth_message(self.uuid, nonce, hello)?;
        Ok(pgp::sign_detached(&self.tsk, &message)?)
    }

    /// Decrypts the link key the master sealed to this worker's transport-encryption subkey
    /// (the `sealed_key` of the Challenge; call it only after
    /// [`MasterTrust::verify_master_proof`] accepted that Challenge, which vouches for these
    /// exact bytes, and the master accepted the worker). Any ciphertext that is not an intact
    /// OpenPGP message for this key, holding exactly [`LINK_KEY_BYTES`] bytes, is an error.
    pub fn decrypt_link_key(&self, ciphertext: &[u8]) -> Result<LinkKey, IdentityError> {
        if ciphertext.len() > LINK_KEY_CIPHERTEXT_BYTES_MAX {
            return Err(IdentityError::LinkKeyTooLarge {
                bytes: ciphertext.len(),
                bytes_max: LINK_KEY_CIPHERTEXT_BYTES_MAX,
            });
        }
        let helper = LinkKeyHelper { tsk: &self.tsk };
        let mut decryptor = DecryptorBuilder::from_bytes(ciphertext)
            .and_then(|builder| builder.with_policy(&POLICY, None, helper))
            .map_err(|e| IdentityError::LinkKeyDecrypt { source: e.into() })?;
        // One byte more than a key, so that a longer plaintext is detected.
        let mut plaintext = Vec::with_capacity(LINK_KEY_BYTES + 1);
        let read_max = u64::try_from(LINK_KEY_BYTES + 1).unwrap_or(u64::MAX);
        (&mut decryptor)
            .take(read_max)
            .read_to_end(&mut plaintext)
            .map_err(|e| IdentityError::LinkKeyDecrypt { source: e.into() })?;
        let complete = decryptor.message_processed();
        // Wrapped at once: a key refused below is zeroed when dropped.
        let key = <[u8; LINK_KEY_BYTES]>::try_from(plaintext.as_slice()).map(LinkKey);
        plaintext.fill(0);
        match key {
            Ok(key) if complete => Ok(key),
            _ => Err(IdentityError::LinkKeyLength),
        }
    }

    /// A TOML snippet for the master's configuration that registers this worker: a
    /// `[[workers]]` table with `id` (the UUID), `name`, `cert` (the path of `worker.pub.asc` as
    /// the master will see it) and `allowed_ips` (exact addresses or CIDR ranges), the keys of
    /// `master::config::WorkerConfig`.
    pub fn registration_toml(
        &self,
        name: &str,
        cert_path: &Path,
        allowed_ips: &[String],
    ) -> Result<String, IdentityError> {
        #[derive(serde::Serialize)]
        struct Entry<'a> {
            id: String,
            name: &'a str,
            cert: &'a str,
            allowed_ips: &'a [String],
        }
        check_name(name)?;
        #[derive(serde::Serialize)]
        struct Snippet<'a> {
            workers: [Entry<'a>; 1],
        }
        let cert = cert_path.to_str().ok_or_else(|| IdentityError::Registration {
            reason: format!("path {} is not valid UTF-8", cert_path.display()),
        })?;
        let snippet = Snippet {
            workers: [Entry { id: self.uuid.hyphenated().to_string(), name, cert, allowed_ips }],
        };
        toml::to_string(&snippet).map_err(|e| IdentityError::Registration { reason: e.to_string() })
    }
}

/// Feeds the worker's transport-encryption secret keys to the decryptor.
struct LinkKeyHelper<'a> {
    tsk: &'a Cert,
}

impl VerificationHelper for LinkKeyHelper<'_> {
    fn get_certs(&mut self, _ids: &[openpgp::KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(Vec::new())
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        // The sealed link key carries no signature of its own: the master's proof in the
        // Challenge covers its BLAKE3 hash (docs/WORKER_AUTH.md), checked before decryption.
        // But it must be sealed: a message whose outer layer is not encryption (a bare literal
        // data packet decrypts to its contents) is refused before its bytes are released.
        match structure.iter().next() {
            Some(MessageLayer::Encryption { .. }) => Ok(()),
            _ => {
                Err(openpgp::Error::MissingSessionKey("the link key is not encrypted".into())
                    .into())
            }
        }
    }
}

impl DecryptionHelper for LinkKeyHelper<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        // Expired or revoked encryption keys still decrypt: validity matters to the sender.
        for key in self
            .tsk
            .keys()
            .with_policy(&POLICY, None)
            .supported()
            .for_transport_encryption()
            .unencrypted_secret()
        {
            let handle = key.key().key_handle();
            let mut pair = key.key().clone().into_keypair()?;
            for pkesk in pkesks {
                let for_us = pkesk.recipient().is_none_or(|r| r.aliases(&handle));
                if !for_us {
                    continue;
                }
                if let Some((algo, session_key)) = pkesk.decrypt(&mut pair, sym_algo)
                    && decrypt(algo, &session_key)
                {
                    return Ok(None);
                }
            }
        }
        Err(openpgp::Error::MissingSessionKey("not sealed to this worker's key".into()).into())
    }
}

/// The master the worker trusts: the master's public certificate (`master.pub.asc` from the
/// master's data directory), given to the worker by `--master-cert FILE` or the config key
/// `master_cert`. The worker checks the master's proof in every Challenge against it
/// ([`MasterTrust::verify_master_proof`]) before it proves its own identity.
///
/// `Debug` shows only the fingerprint.
#[derive(Clone)]
pub struct MasterTrust {
    cert: Cert,
}

impl fmt::Debug for MasterTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterTrust")
            .field("fingerprint", &self.cert.fingerprint().to_hex())
            .finish_non_exhaustive()
    }
}

impl MasterTrust {
    /// Reads the master's certificate from `path` (at most [`KEY_FILE_BYTES_MAX`] bytes,
    /// armored or binary). Refuses a file that is not exactly one OpenPGP certificate, one that
    /// holds secret key material (the master's `master.key` must never leave the master), and a
    /// certificate that is expired, revoked or has no valid signing key.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let bytes = read_bounded(path, KEY_FILE_BYTES_MAX)?;
        Self::from_bytes(&bytes, path.display().to_string())
    }

    /// The same checks as [`MasterTrust::load`], on the certificate's armored text.
    pub fn from_armored(armored: &str) -> Result<Self, IdentityError> {
        let bytes = armored.as_bytes();
        let origin = "armored master certificate".to_owned();
        if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > KEY_FILE_BYTES_MAX {
            return Err(IdentityError::UnusableMasterCert {
                origin,
                reason: "it is larger than 65536 bytes",
            });
        }
        Self::from_bytes(bytes, origin)
    }

    fn from_bytes(bytes: &[u8], origin: String) -> Result<Self, IdentityError> {
        let cert = match Cert::from_bytes(bytes) {
            Ok(cert) => cert,
            Err(e) => return Err(IdentityError::BadMasterCert { origin, source: e.into() }),
        };
        if cert.is_tsk() {
            return Err(IdentityError::UnusableMasterCert {
                origin,
                reason: "it contains secret key material; give the worker master.pub.asc, \
                         never master.key",
            });
        }
        if let Err(reason) = pgp::signing_cert_usable(&cert) {
            return Err(IdentityError::UnusableMasterCert { origin, reason });
        }
        Ok(Self { cert })
    }

    /// The fingerprint of the trusted master certificate (its primary key).
    pub fn fingerprint(&self) -> Fingerprint {
        self.cert.fingerprint()
    }

    /// The trusted master certificate.
    pub fn cert(&self) -> &Cert {
        &self.cert
    }

    /// Checks the master's proof from the Challenge: `challenge.master_proof` must be exactly
    /// one detached OpenPGP signature (at most [`PROOF_SIGNATURE_BYTES_MAX`] bytes), made by a
    /// valid signing key of the trusted certificate under `StandardPolicy`, within
    /// [`SIGNATURE_CLOCK_SKEW_MAX`] of `now` (the worker's clock), over
    /// [`master_auth_message`]`(worker, worker_nonce, challenge.nonce, hello,
    /// challenge.sealed_key)`: this worker's UUID, the nonce this worker just sent, the
    /// master's nonce from the Challenge, the Hello this worker sent and the sealed link key
    /// from the Challenge. Never panics on any input.
    pub fn verify_master_proof(
        &self,
        worker: Uuid,
        worker_nonce: &[u8; NONCE_BYTES],
        hello: &HelloBinding<'_>,
        challenge: &MasterChallenge<'_>,
        now: SystemTime,
    ) -> Result<(), IdentityError> {
        let message = master_auth_message(
            worker,
            worker_nonce,
            challenge.nonce,
            hello,
            challenge.sealed_key,
        )?;
        pgp::verify_detached(&self.cert, &message, challenge.master_proof, now)
            .map_err(|err| IdentityError::MasterProof(err.into()))
    }
}

/// Why `tsk` cannot serve as a worker key, if it cannot.
fn usable(tsk: &Cert) -> Result<(), &'static str> {
    let valid = pgp::signing_key_usable(
        tsk,
        "the signing key is password-protected; worker keys must not be",
    )?;
    let encryption =
        || valid.keys().supported().alive().revoked(false).for_transport_encryption().secret();
    if encryption().next().is_none() {
        return Err("no valid transport-encryption subkey with secret key material");
    }
    if encryption().unencrypted_secret().next().is_none() {
        return Err("the encryption key is password-protected; worker keys must not be");
    }
    Ok(())
}

/// Checks a worker name against the rules the master's configuration applies to it.
pub fn check_name(name: &str) -> Result<(), IdentityError> {
    if name.trim().is_empty() {
        return Err(IdentityError::InvalidName { reason: "it is empty" });
    }
    if name.len() > WORKER_NAME_BYTES_MAX {
        return Err(IdentityError::InvalidName { reason: "it is longer than 64 bytes" });
    }
    if name.chars().any(char::is_control) {
        return Err(IdentityError::InvalidName { reason: "it contains control characters" });
    }
    Ok(())
}

/// Reads a whole file of at most `bytes_max` bytes.
fn read_bounded(path: &Path, bytes_max: u64) -> Result<Vec<u8>, IdentityError> {
    let io_err = |source| IdentityError::Io { action: "read", path: path.to_path_buf(), source };
    let file = fs::File::open(path).map_err(io_err)?;
    let mut bytes = Vec::new();
    file.take(bytes_max.saturating_add(1)).read_to_end(&mut bytes).map_err(io_err)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > bytes_max {
        return Err(IdentityError::FileTooLarge { path: path.to_path_buf(), bytes_max });
    }
    Ok(bytes)
}

/// Creates `path` (which must not exist) with permission bits `mode`, writes `bytes` and syncs.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IdentityError> {
    let io_err = |action, source| IdentityError::Io { action, path: path.to_path_buf(), source };
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            IdentityError::AlreadyExists { path: path.to_path_buf() }
        } else {
            io_err("create", source)
        }
    })?;
    file.write_all(bytes).map_err(|source| io_err("write", source))?;
    file.sync_all().map_err(|source| io_err("sync", source))?;
    Ok(())
}

/// Refuses a secret key file that group or others can access, as ssh does.
fn check_private_mode(path: &Path) -> Result<(), IdentityError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let metadata = fs::metadata(path).map_err(|source| IdentityError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::KeyFilePermissions { path: path.to_path_buf(), mode });
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use openpgp::serialize::stream::{LiteralWriter, Message, Signer};

    use super::*;

    fn uuid() -> Uuid {
        Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef)
    }

    const HELLO: HelloBinding<'static> =
        HelloBinding { protocol_version: 1, client_addr: "203.0.113.7:2049" };

    #[test]
    fn auth_message_layout_is_fixed() {
        let nonce = [0xAA; NONCE_BYTES];
        let message = auth_message(uuid(), &nonce, &HELLO).unwrap();
        let mut expected = b"papertrader-worker-auth-v1\0".to_vec();
        expected.extend_from_slice(&0x0123_4567_89ab_cdef_0123_4567_89ab_cdef_u128.to_be_bytes());
        expected.extend_from_slice(&[0xAA; 32]);
        expected.extend_from_slice(&[0x00, 0x01, 0x00, 0x10]);
        expected.extend_from_slice(b"203.0.113.7:2049");
        assert_eq!(message, expected);
    }

    /// The sealed key of the layout examples (`docs/WORKER_AUTH.md`): 8 bytes `cc`.
    const SEALED: &[u8] = &[0xCC; 8];

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
        assert_eq!(message.len(), 27 + 16 + 32 + 32 + 4 + 16 + 32);
        // The hash as pinned in docs/WORKER_AUTH.md.
        assert_eq!(
            blake3::hash(SEALED).to_hex().as_str(),
            "1fc7622a3e4fa4a577431863f1c57982df2fcce56daa447f2d65bc51e745e526"
        );
        // Another sealed key, another message.
        let other = master_auth_message(uuid(), &[0xBB; 32], &[0xAA; 32], &HELLO, &[0xCD; 8]);
        assert_ne!(other.unwrap(), message);
        let long = "a".repeat(CLIENT_ADDR_BYTES_MAX + 1);
        let hello = HelloBinding { protocol_version: 1, client_addr: &long };
        let err = master_auth_message(uuid(), &[0; 32], &[0; 32], &hello, SEALED).unwrap_err();
        assert!(matches!(err, IdentityError::ClientAddrTooLong { bytes: 256, bytes_max: 255 }));
    }

    #[test]
    fn nonces_are_fresh() {
        assert_ne!(new_nonce().unwrap(), new_nonce().unwrap());
    }

    /// A stand-in master key (the real one is `master::worker_auth::MasterIdentity`, used by
    /// the end-to-end tests): certification-only primary, one signing subkey.
    fn master_key() -> Cert {
        CertBuilder::new()
            .set_cipher_suite(CipherSuite::Cv25519)
            .add_userid("PaperTrader master")
            .add_signing_subkey()
            .generate()
            .unwrap()
            .0
    }

    fn sign_with(tsk: &Cert, message: &[u8]) -> Vec<u8> {
        let key = tsk
            .keys()
            .with_policy(&POLICY, None)
            .for_signing()
            .unencrypted_secret()
            .next()
            .unwrap();
        let mut signature = Vec::new();
        let mut signer =
            Signer::new(Message::new(&mut signature), key.key().clone().into_keypair().unwrap())
                .unwrap()
                .detached()
                .build()
                .unwrap();
        signer.write_all(message).unwrap();
        signer.finalize().unwrap();
        signature
    }

    fn armored_public(tsk: &Cert) -> String {
        String::from_utf8(tsk.clone().strip_secret_key_material().armored().to_vec().unwrap())
            .unwrap()
    }

    #[test]
    fn master_trust_checks_the_master_proof() {
        let master = master_key();
        let trust = MasterTrust::from_armored(&armored_public(&master)).unwrap();
        assert_eq!(trust.fingerprint(), master.fingerprint());
        let (wn, mn) = ([1; NONCE_BYTES], [2; NONCE_BYTES]);
        let message = master_auth_message(uuid(), &wn, &mn, &HELLO, SEALED).unwrap();
        let proof = sign_with(&master, &message);
        let challenge =
            |nonce, master_proof, sealed_key| MasterChallenge { nonce, master_proof, sealed_key };
        let now = SystemTime::now();
        trust
            .verify_master_proof(uuid(), &wn, &HELLO, &challenge(&mn, &proof, SEALED), now)
            .unwrap();

        let refused =
            |worker, wn: &[u8; 32], hello: &HelloBinding<'_>, c: MasterChallenge, now| match trust
                .verify_master_proof(worker, wn, hello, &c, now)
            {
                Err(IdentityError::MasterProof(err)) => err.reason(),
                other => panic!("{other:?}"),
            };
        let good = challenge(&mn, &proof, SEALED);
        assert_eq!(refused(Uuid::from_u128(9), &wn, &HELLO, good, now), "bad_signature");
        assert_eq!(refused(uuid(), &[3; 32], &HELLO, good, now), "bad_signature");
        assert_eq!(
            refused(uuid(), &wn, &HELLO, challenge(&[3; 32], &proof, SEALED), now),
            "bad_signature"
        );
        let moved = HelloBinding { client_addr: "198.51.100.1:2049", ..HELLO };
        assert_eq!(refused(uuid(), &wn, &moved, good, now), "bad_signature");
        // Another sealed key (swapped on the way, or cut short) under the genuine proof.
        let swapped = challenge(&mn, &proof, &[0xCD; 8]);
        assert_eq!(refused(uuid(), &wn, &HELLO, swapped, now), "bad_signature");
        let cut = challenge(&mn, &proof, &SEALED[..7]);
        assert_eq!(refused(uuid(), &wn, &HELLO, cut, now), "bad_signature");
        // The worker's own kind of message, signed by the master key, is not a master proof.
        let worker_kind = sign_with(&master, &auth_message(uuid(), &mn, &HELLO).unwrap());
        let c = challenge(&mn, &worker_kind, SEALED);
        assert_eq!(refused(uuid(), &wn, &HELLO, c, now), "bad_signature");
        // Another key.
        let stranger = sign_with(&master_key(), &message);
        let c = challenge(&mn, &stranger, SEALED);
        assert_eq!(refused(uuid(), &wn, &HELLO, c, now), "wrong_key");
        // Clock far off.
        let hour = Duration::from_secs(3600);
        assert_eq!(refused(uuid(), &wn, &HELLO, good, now + hour), "signature_time");
        assert_eq!(refused(uuid(), &wn, &HELLO, good, now - hour), "signature_time");
        // Garbage, empty, oversized, doubled.
        let c = challenge(&mn, b"garbage", SEALED);
        assert_eq!(refused(uuid(), &wn, &HELLO, c, now), "malformed_signature");
        let c = challenge(&mn, &[], SEALED);
        assert_eq!(refused(uuid(), &wn, &HELLO, c, now), "malformed_signature");
        let big = vec![0xC2; PROOF_SIGNATURE_BYTES_MAX + 1];
        let c = challenge(&mn, &big, SEALED);
        assert_eq!(refused(uuid(), &wn, &HELLO, c, now), "malformed_signature");
        let doubled = [proof.clone(), proof.clone()].concat();
        let c = challenge(&mn, &doubled, SEALED);
        assert_eq!(refused(uuid(), &wn, &HELLO, c, now), "malformed_signature");
        // An over-long address is refused before any signature work.
        let long = "x".repeat(CLIENT_ADDR_BYTES_MAX + 1);
        let hello = HelloBinding { client_addr: &long, ..HELLO };
        let err = trust.verify_master_proof(uuid(), &wn, &hello, &good, now).unwrap_err();
        assert!(matches!(err, IdentityError::ClientAddrTooLong { .. }), "{err}");
    }

    #[test]
    fn master_trust_refuses_bad_certificates() {
        let master = master_key();
        // Secret key material.
        let secret = String::from_utf8(master.as_tsk().armored().to_vec().unwrap()).unwrap();
        let err = MasterTrust::from_armored(&secret).unwrap_err();
        assert!(matches!(err, IdentityError::UnusableMasterCert { .. }), "{err}");
        assert!(err.to_string().contains("master.pub.asc"), "{err}");
        // Not a certificate.
        let err =
            MasterTrust::from_armored("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nx\n").unwrap_err();
        assert!(matches!(err, IdentityError::BadMasterCert { .. }), "{err}");
        assert!(matches!(MasterTrust::from_armored(""), Err(IdentityError::BadMasterCert { .. })));
        // Two certificates in one file.
        let two = [armored_public(&master), armored_public(&master_key())].concat();
        assert!(MasterTrust::from_armored(&two).is_err());
        // No signing key (a worker-style encryption-only certificate).
        let (no_signing, _) = CertBuilder::new()
            .set_cipher_suite(CipherSuite::Cv25519)
            .add_userid("no signing")
            .add_transport_encryption_subkey()
            .generate()
            .unwrap();
        let err = MasterTrust::from_armored(&armored_public(&no_signing)).unwrap_err();
        assert!(matches!(err, IdentityError::UnusableMasterCert { .. }), "{err}");
        // Oversized.
        let err = MasterTrust::from_armored(&"a".repeat(64 * 1024 + 1)).unwrap_err();
        assert!(matches!(err, IdentityError::UnusableMasterCert { .. }), "{err}");
    }

    #[test]
    fn master_trust_loads_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let master = master_key();
        let path = dir.path().join("master.pub.asc");
        fs::write(&path, armored_public(&master)).unwrap();
        let trust = MasterTrust::load(&path).unwrap();
        assert_eq!(trust.fingerprint(), master.fingerprint());
        let debug = format!("{trust:?}");
        assert!(debug.contains(&master.fingerprint().to_hex()) && debug.len() < 120, "{debug}");

        let err = MasterTrust::load(&dir.path().join("missing.asc")).unwrap_err();
        assert!(matches!(err, IdentityError::Io { .. }) && err.to_string().contains("missing.asc"));
        fs::write(&path, vec![b'a'; 64 * 1024 + 1]).unwrap();
        let err = MasterTrust::load(&path).unwrap_err();
        assert!(matches!(err, IdentityError::FileTooLarge { .. }), "{err}");
        fs::write(&path, master.as_tsk().armored().to_vec().unwrap()).unwrap();
        let err = MasterTrust::load(&path).unwrap_err();
        assert!(matches!(err, IdentityError::UnusableMasterCert { .. }), "{err}");
        assert!(err.to_string().contains("master.pub.asc"), "{err}");
    }

    #[test]
    fn auth_message_rejects_long_address() {
        let addr = "a".repeat(CLIENT_ADDR_BYTES_MAX + 1);
        let hello = HelloBinding { protocol_version: 1, client_addr: &addr };
        let err = auth_message(uuid(), &[0; NONCE_BYTES], &hello).unwrap_err();
        assert!(matches!(err, IdentityError::ClientAddrTooLong { bytes: 256, bytes_max: 255 }));
        let addr = "a".repeat(CLIENT_ADDR_BYTES_MAX);
        let hello = HelloBinding { protocol_version: 1, client_addr: &addr };
        assert!(auth_message(uuid(), &[0; NONCE_BYTES], &hello).is_ok());
    }

    #[test]
    fn generated_key_has_the_expected_shape() {
        let id = WorkerIdentity::generate(uuid(), "worker one").unwrap();
        assert!(usable(&id.tsk).is_ok());
        let valid = id.tsk.with_policy(&POLICY, None).unwrap();
        assert_eq!(valid.keys().subkeys().for_signing().count(), 1);
        assert_eq!(valid.keys().subkeys().for_transport_encryption().count(), 1);
        assert!(!valid.primary_key().for_signing(), "primary key is certification-only");
        assert_eq!(id.tsk.primary_key().key().version(), 4);
        assert!(valid.primary_key().key_expiration_time().is_none());
        let userid = valid.userids().next().unwrap();
        let text = String::from_utf8_lossy(userid.userid().value()).into_owned();
        assert!(text.contains(&uuid().to_string()), "{text}");
        assert!(!id.public_cert().is_tsk());
    }

    #[test]
    fn generate_rejects_bad_inputs() {
        assert!(matches!(WorkerIdentity::generate(Uuid::nil(), "w"), Err(IdentityError::NilUuid)));
        for name in ["", "  ", "a\nb", &"x".repeat(65), &"é".repeat(33)] {
            assert!(
                matches!(
                    WorkerIdentity::generate(uuid(), name),
                    Err(IdentityError::InvalidName { .. })
                ),
                "{name:?}"
            );
        }
    }

    #[test]
    fn save_then_load_round_trips_and_files_are_right() {
        let dir = tempfile::tempdir().unwrap();
        let id = WorkerIdentity::generate(uuid(), "w").unwrap();
        id.save(dir.path()).unwrap();
        let loaded = WorkerIdentity::load(dir.path()).unwrap();
        assert_eq!(loaded.uuid(), id.uuid());
        assert_eq!(loaded.fingerprint(), id.fingerprint());

        let key_text = fs::read_to_string(dir.path().join(KEY_FILE_NAME)).unwrap();
        assert!(key_text.starts_with("-----BEGIN PGP PRIVATE KEY BLOCK-----"));
        let pub_text = fs::read_to_string(dir.path().join(PUBLIC_CERT_FILE_NAME)).unwrap();
        assert!(pub_text.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
        let public = Cert::from_bytes(pub_text.as_bytes()).unwrap();
        assert!(!public.is_tsk(), "the public file must hold no secret key material");
        assert_eq!(public.fingerprint(), id.fingerprint());
        let uuid_text = fs::read_to_string(dir.path().join(UUID_FILE_NAME)).unwrap();
        assert_eq!(uuid_text, format!("{}\n", uuid().hyphenated()));

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |name: &str| {
                fs::metadata(dir.path().join(name)).unwrap().permissions().mode() & 0o777
            };
            assert_eq!(mode(KEY_FILE_NAME), 0o600);
        }
    }

    #[test]
    fn save_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let id = WorkerIdentity::generate(uuid(), "w").unwrap();
        id.save(dir.path()).unwrap();
        let err = id.save(dir.path()).unwrap_err();
        assert!(matches!(err, IdentityError::AlreadyExists { .. }), "{err}");
    }

    /// A save cut short before its key (the last file) leaves no identity: the next save
    /// replaces what it left, and the identity then loads.
    #[test]
    fn a_save_cut_short_before_the_key_is_started_over() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PUBLIC_CERT_FILE_NAME), "half").unwrap();
        std::fs::write(dir.path().join(UUID_FILE_NAME), "").unwrap();
        std::fs::write(dir.path().join(format!(".{KEY_FILE_NAME}.new")), "cut").unwrap();
        let id = WorkerIdentity::generate(uuid(), "w").unwrap();
        id.save(dir.path()).unwrap();
        let loaded = WorkerIdentity::load(dir.path()).unwrap();
        assert_eq!(loaded.uuid(), id.uuid());
        assert!(!dir.path().join(format!(".{KEY_FILE_NAME}.new")).exists());
        let cert = std::fs::read_to_string(dir.path().join(PUBLIC_CERT_FILE_NAME)).unwrap();
        assert!(cert.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"), "{cert}");
    }

    #[cfg(unix)]
    #[test]
    fn load_refuses_a_readable_key_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        WorkerIdentity::generate(uuid(), "w").unwrap().save(dir.path()).unwrap();
        let key_path = dir.path().join(KEY_FILE_NAME);
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = WorkerIdentity::load(dir.path()).unwrap_err();
        assert!(matches!(err, IdentityError::KeyFilePermissions { mode: 0o644, .. }), "{err}");
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn load_reports_missing_and_bad_files_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = WorkerIdentity::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains(KEY_FILE_NAME), "{err}");

        WorkerIdentity::generate(uuid(), "w").unwrap().save(dir.path()).unwrap();
        fs::write(dir.path().join(UUID_FILE_NAME), "not-a-uuid\n").unwrap();
        let err = WorkerIdentity::load(dir.path()).unwrap_err();
        assert!(matches!(err, IdentityError::BadUuid { .. }), "{err}");

        let other = tempfile::tempdir().unwrap();
        WorkerIdentity::generate(uuid(), "w").unwrap().save(other.path()).unwrap();
        // A public certificate in place of the secret key.
        let public = fs::read(other.path().join(PUBLIC_CERT_FILE_NAME)).unwrap();
        let key_path = other.path().join(KEY_FILE_NAME);
        fs::write(&key_path, public).unwrap();
        let err = WorkerIdentity::load(other.path()).unwrap_err();
        assert!(matches!(err, IdentityError::UnusableKey { .. }), "{err}");

        fs::write(&key_path, b"garbage").unwrap();
        let err = WorkerIdentity::load(other.path()).unwrap_err();
        assert!(matches!(err, IdentityError::BadKey { .. }), "{err}");

        fs::write(&key_path, vec![b'x'; 64 * 1024 + 1]).unwrap();
        let err = WorkerIdentity::load(other.path()).unwrap_err();
        assert!(matches!(err, IdentityError::FileTooLarge { .. }), "{err}");
    }

    #[test]
    fn debug_output_holds_no_key_material() {
        let id = WorkerIdentity::generate(uuid(), "w").unwrap();
        let debug = format!("{id:?}");
        assert!(debug.contains(&id.fingerprint().to_hex()));
        assert!(!debug.to_lowercase().contains("secret"), "{debug}");
        assert!(debug.len() < 200, "{debug}");
    }

    #[test]
    fn decrypt_link_key_rejects_garbage_and_oversize() {
        let id = WorkerIdentity::generate(uuid(), "w").unwrap();
        assert!(matches!(
            id.decrypt_link_key(b"definitely not openpgp"),
            Err(IdentityError::LinkKeyDecrypt { .. })
        ));
        assert!(matches!(id.decrypt_link_key(&[]), Err(IdentityError::LinkKeyDecrypt { .. })));
        let big = vec![0u8; LINK_KEY_CIPHERTEXT_BYTES_MAX + 1];
        assert!(matches!(id.decrypt_link_key(&big), Err(IdentityError::LinkKeyTooLarge { .. })));
    }

    #[test]
    fn a_link_key_that_is_not_encrypted_is_refused() {
        // A bare literal data packet holding 32 bytes: it "decrypts" to them unless the
        // message is required to be encrypted (the property test in tests/tests/worker_auth.rs
        // found such bytes).
        let id = WorkerIdentity::generate(uuid(), "w").unwrap();
        let mut bare = Vec::new();
        let mut writer = LiteralWriter::new(Message::new(&mut bare)).build().unwrap();
        writer.write_all(&[7u8; LINK_KEY_BYTES]).unwrap();
        writer.finalize().unwrap();
        assert!(matches!(id.decrypt_link_key(&bare), Err(IdentityError::LinkKeyDecrypt { .. })));
    }

    #[test]
    fn registration_snippet_is_toml_with_the_fields() {
        let id = WorkerIdentity::generate(uuid(), "w").unwrap();
        let cert = Path::new("/etc/pt/worker \"1\".pub.asc");
        let snippet = id.registration_toml("eu-1", cert, &["10.0.0.0/8".into()]).unwrap();
        let value: toml::Table = toml::from_str(&snippet).unwrap();
        let entry = &value["workers"].as_array().unwrap()[0];
        assert_eq!(entry["id"].as_str().unwrap(), uuid().hyphenated().to_string());
        assert_eq!(entry["name"].as_str().unwrap(), "eu-1");
        assert_eq!(entry["cert"].as_str().unwrap(), "/etc/pt/worker \"1\".pub.asc");
        assert_eq!(entry["allowed_ips"].as_array().unwrap()[0].as_str().unwrap(), "10.0.0.0/8");
        assert!(snippet.contains("[[workers]]"), "{snippet}");
        assert!(id.registration_toml("", cert, &[]).is_err());
    }
}
