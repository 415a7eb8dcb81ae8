//! Worker authentication end to end: a worker identity generated and saved to disk, registered
//! on the master through the TOML snippet `pt-worker keygen` prints (parsed by the master's own
//! configuration loader), a master key generated in the master's data directory and its
//! `master.pub.asc` loaded by the worker as the master it trusts, and the whole mutual handshake
//! (Hello with the worker's nonce, admission, Challenge with the master's nonce and proof, the
//! worker's check of that proof, the worker's proof, sealed link key) between the two real
//! implementations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use master::config::{MasterConfig, WorkerConfig};
use master::worker_auth::{
    self, AuthError, HelloBinding, MasterIdentity, RegisteredWorker, WorkerRegistry,
};
use proptest::prelude::*;
use uuid::Uuid;
use worker::identity::{self, IdentityError, MasterProofError, MasterTrust, WorkerIdentity};

const HELLO: HelloBinding<'static> =
    HelloBinding { protocol_version: 1, client_addr: "127.0.0.1:2049" };

/// The worker's view of the same Hello fields.
fn worker_hello<'a>(hello: &HelloBinding<'a>) -> identity::HelloBinding<'a> {
    identity::HelloBinding {
        protocol_version: hello.protocol_version,
        client_addr: hello.client_addr,
    }
}

fn loopback() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

/// A worker identity saved in a temp dir, loaded back as the worker daemon would, a master
/// registry built from the registration snippet, allowing loopback and 10.0.0.0/8, the master's
/// key from its data directory, and the worker's trust in it, read from `master.pub.asc`.
struct Setup {
    _dir: tempfile::TempDir,
    identity: WorkerIdentity,
    registry: WorkerRegistry,
    data_dir: std::path::PathBuf,
    master: MasterIdentity,
    trust: MasterTrust,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let uuid = Uuid::new_v4();
    let key_dir = dir.path().join("worker");
    WorkerIdentity::generate(uuid, "test worker").unwrap().save(&key_dir).unwrap();
    let identity = WorkerIdentity::load(&key_dir).unwrap();
    let cert_path = key_dir.join(identity::PUBLIC_CERT_FILE_NAME);
    let snippet = identity
        .registration_toml("test-worker", &cert_path, &["127.0.0.1".into(), "10.0.0.0/8".into()])
        .unwrap();
    let config = MasterConfig::from_toml_str(&snippet, "keygen snippet").unwrap();
    config.validate().unwrap();
    let registry = WorkerRegistry::from_entries(&config.workers).unwrap();
    let data_dir = dir.path().join("master-data");
    let master = MasterIdentity::load_or_generate(&data_dir).unwrap();
    let trust = MasterTrust::load(&MasterIdentity::public_cert_path(&data_dir)).unwrap();
    Setup { _dir: dir, identity, registry, data_dir, master, trust }
}

/// Which end refused the handshake, and why.
#[derive(Debug)]
enum Refused {
    /// The master refused the worker.
    ByMaster(AuthError),
    /// The worker refused the master.
    ByWorker(IdentityError),
}

impl From<AuthError> for Refused {
    fn from(err: AuthError) -> Self {
        Self::ByMaster(err)
    }
}

impl From<IdentityError> for Refused {
    fn from(err: IdentityError) -> Self {
        Self::ByWorker(err)
    }
}

impl Refused {
    /// The master's reason; panics if the worker refused.
    fn by_master(self) -> AuthError {
        match self {
            Self::ByMaster(err) => err,
            Self::ByWorker(err) => panic!("refused by the worker, not the master: {err}"),
        }
    }

    /// The worker's reason for refusing the master's proof; panics otherwise.
    fn by_worker(self) -> MasterProofError {
        match self {
            Self::ByWorker(IdentityError::MasterProof(err)) => err,
            other => panic!("expected the worker to refuse the master's proof: {other:?}"),
        }
    }
}

/// The whole mutual handshake between `worker` (trusting `trust`) and a master holding
/// `master` and `registry`; returns the link key both ends hold. The worker signs nothing
/// unless the master's proof verified.
fn mutual_handshake(
    worker: &WorkerIdentity,
    trust: &MasterTrust,
    master: &MasterIdentity,
    registry: &WorkerRegistry,
    peer: IpAddr,
) -> Result<([u8; 32], [u8; 32]), Refused> {
    let hello = worker_hello(&HELLO);
    // 1: Hello{uuid, version, address, worker nonce}; the master's admission check.
    let worker_nonce = identity::new_nonce()?;
    let registered = registry.check_admission(worker.uuid(), peer)?;
    // 2: Challenge{master nonce, master proof}.
    let master_nonce = worker_auth::new_challenge()?;
    let master_proof =
        master.sign_worker_challenge(worker.uuid(), &worker_nonce, &master_nonce, &HELLO)?;
    // 3: the worker checks the master, then proves itself.
    trust.verify_master_proof(
        worker.uuid(),
        &worker_nonce,
        &master_nonce,
        &hello,
        &master_proof,
        SystemTime::now(),
    )?;
    let proof = worker.sign_challenge(&master_nonce, &hello)?;
    // 4: the master checks the worker; Accepted{sealed link key}.
    worker_auth::verify_proof(registered, &master_nonce, &HELLO, &proof, SystemTime::now())?;
    let link_key = worker_auth::new_link_key()?;
    let sealed = worker_auth::seal_link_key(registered, &link_key)?;
    let received = worker.decrypt_link_key(&sealed)?;
    Ok((link_key, received))
}

/// The mutual handshake of `worker` with the setup's master, the worker trusting it.
fn handshake(s: &Setup, worker: &WorkerIdentity, peer: IpAddr) -> Result<[u8; 32], Refused> {
    let (sent, received) = mutual_handshake(worker, &s.trust, &s.master, &s.registry, peer)?;
    assert_eq!(sent, received);
    Ok(received)
}

fn registered_worker(setup: &Setup) -> &RegisteredWorker {
    setup.registry.check_admission(setup.identity.uuid(), loopback()).unwrap()
}

#[test]
fn mutual_handshake_succeeds_and_link_key_round_trips() {
    let s = setup();
    let key = handshake(&s, &s.identity, loopback()).unwrap();
    assert_ne!(key, [0; 32]);
    let registered = registered_worker(&s);
    assert_eq!(registered.fingerprint(), s.identity.fingerprint());
    assert_eq!(registered.name(), "test-worker");
    // The worker trusts exactly the master's key, read from the master's data directory.
    assert_eq!(s.trust.fingerprint(), s.master.fingerprint());
    // Also from an address in the CIDR range, and as an IPv4-mapped IPv6 peer; every handshake
    // gives a new link key.
    for peer in ["10.20.30.40", "::ffff:127.0.0.1"] {
        let again = handshake(&s, &s.identity, peer.parse().unwrap()).unwrap();
        assert_ne!(again, key);
    }
    // The master restarted on the same data directory keeps its key, so the worker's trust
    // still holds; and the worker can be given the armored text instead of the file.
    let restarted = MasterIdentity::load_or_generate(&s.data_dir).unwrap();
    assert_eq!(restarted.fingerprint(), s.master.fingerprint());
    let armored = restarted.public_cert_armored().unwrap();
    let trust = MasterTrust::from_armored(&armored).unwrap();
    let (sent, received) =
        mutual_handshake(&s.identity, &trust, &restarted, &s.registry, loopback()).unwrap();
    assert_eq!(sent, received);
}

#[test]
fn both_sides_sign_and_verify_the_same_bytes() {
    let uuid = Uuid::new_v4();
    let nonce = [7; 32];
    assert_eq!(
        identity::auth_message(uuid, &nonce, &worker_hello(&HELLO)).unwrap(),
        worker_auth::auth_message(uuid, &nonce, &HELLO).unwrap()
    );
    assert_eq!(
        identity::master_auth_message(uuid, &[8; 32], &nonce, &worker_hello(&HELLO)).unwrap(),
        worker_auth::master_auth_message(uuid, &[8; 32], &nonce, &HELLO).unwrap()
    );
    assert_eq!(identity::AUTH_DOMAIN, worker_auth::AUTH_DOMAIN);
    assert_eq!(identity::MASTER_AUTH_DOMAIN, worker_auth::MASTER_AUTH_DOMAIN);
    assert_ne!(identity::AUTH_DOMAIN, identity::MASTER_AUTH_DOMAIN);
    assert_eq!(identity::NONCE_BYTES, worker_auth::NONCE_BYTES);
    assert_eq!(identity::CLIENT_ADDR_BYTES_MAX, worker_auth::CLIENT_ADDR_BYTES_MAX);
    assert_eq!(identity::PROOF_SIGNATURE_BYTES_MAX, worker_auth::PROOF_SIGNATURE_BYTES_MAX);
    assert_eq!(identity::SIGNATURE_CLOCK_SKEW_MAX, worker_auth::SIGNATURE_CLOCK_SKEW_MAX);
    assert_eq!(worker_auth::MASTER_CERT_FILE_NAME, "master.pub.asc");
}

#[test]
fn unknown_uuid_is_refused() {
    let s = setup();
    let other = WorkerIdentity::generate(Uuid::new_v4(), "stranger").unwrap();
    let err = handshake(&s, &other, loopback()).unwrap_err().by_master();
    assert_eq!(err, AuthError::UnknownWorker { uuid: other.uuid() });
    assert_eq!(err.reason(), "unknown_worker");
}

#[test]
fn address_outside_the_allow_list_is_refused() {
    let s = setup();
    for peer in ["127.0.0.2", "11.0.0.1", "::1", "192.168.1.1"] {
        let peer: IpAddr = peer.parse().unwrap();
        let err = handshake(&s, &s.identity, peer).unwrap_err().by_master();
        assert_eq!(err, AuthError::IpNotAllowed { uuid: s.identity.uuid(), peer });
        assert_eq!(err.reason(), "ip_not_allowed");
    }
}

#[test]
fn signature_from_another_key_is_refused() {
    let s = setup();
    // An impostor claiming the registered UUID, with its own key.
    let impostor = WorkerIdentity::generate(s.identity.uuid(), "impostor").unwrap();
    let err = handshake(&s, &impostor, loopback()).unwrap_err().by_master();
    assert_eq!(err, AuthError::WrongKey);
    assert_eq!(err.reason(), "wrong_key");
}

#[test]
fn worker_trusting_another_master_refuses_this_one() {
    let s = setup();
    // The worker was given another master's certificate: the real master's proof fails, and
    // the worker stops before signing anything.
    let other_dir = tempfile::tempdir().unwrap();
    let other = MasterIdentity::load_or_generate(other_dir.path()).unwrap();
    assert_ne!(other.fingerprint(), s.master.fingerprint());
    let other_trust =
        MasterTrust::load(&MasterIdentity::public_cert_path(other_dir.path())).unwrap();
    let err = mutual_handshake(&s.identity, &other_trust, &s.master, &s.registry, loopback())
        .unwrap_err()
        .by_worker();
    assert_eq!(err, MasterProofError::WrongKey);
    assert_eq!(err.reason(), "wrong_key");

    // The other way round: a fake master with its own key, answering a worker that trusts the
    // real master, collects no worker proof.
    let err = mutual_handshake(&s.identity, &s.trust, &other, &s.registry, loopback())
        .unwrap_err()
        .by_worker();
    assert_eq!(err, MasterProofError::WrongKey);
}

#[test]
fn master_proof_replayed_against_a_new_worker_nonce_fails() {
    let s = setup();
    let uuid = s.identity.uuid();
    let hello = worker_hello(&HELLO);
    let now = SystemTime::now();
    // A recorded Challenge: the master's nonce and proof for the worker's first nonce.
    let first = identity::new_nonce().unwrap();
    let master_nonce = worker_auth::new_challenge().unwrap();
    let proof = s.master.sign_worker_challenge(uuid, &first, &master_nonce, &HELLO).unwrap();
    s.trust.verify_master_proof(uuid, &first, &master_nonce, &hello, &proof, now).unwrap();

    // Replayed to the worker's next connection, which sent a fresh nonce.
    let second = identity::new_nonce().unwrap();
    assert_ne!(first, second);
    let err =
        s.trust.verify_master_proof(uuid, &second, &master_nonce, &hello, &proof, now).unwrap_err();
    assert!(matches!(err, IdentityError::MasterProof(MasterProofError::BadSignature)), "{err}");
    // Nor does it pass with another master nonce, or other Hello fields.
    let other_master_nonce = worker_auth::new_challenge().unwrap();
    let err = s
        .trust
        .verify_master_proof(uuid, &first, &other_master_nonce, &hello, &proof, now)
        .unwrap_err();
    assert!(matches!(err, IdentityError::MasterProof(MasterProofError::BadSignature)), "{err}");
    let moved = identity::HelloBinding { client_addr: "198.51.100.1:2049", ..hello };
    let err =
        s.trust.verify_master_proof(uuid, &first, &master_nonce, &moved, &proof, now).unwrap_err();
    assert!(matches!(err, IdentityError::MasterProof(MasterProofError::BadSignature)), "{err}");
}

#[test]
fn master_proof_for_another_worker_fails() {
    let s = setup();
    let hello = worker_hello(&HELLO);
    let worker_nonce = identity::new_nonce().unwrap();
    let master_nonce = worker_auth::new_challenge().unwrap();
    let someone_else = Uuid::new_v4();
    let proof =
        s.master.sign_worker_challenge(someone_else, &worker_nonce, &master_nonce, &HELLO).unwrap();
    let now = SystemTime::now();
    s.trust
        .verify_master_proof(someone_else, &worker_nonce, &master_nonce, &hello, &proof, now)
        .unwrap();
    let err = s
        .trust
        .verify_master_proof(s.identity.uuid(), &worker_nonce, &master_nonce, &hello, &proof, now)
        .unwrap_err();
    assert!(matches!(err, IdentityError::MasterProof(MasterProofError::BadSignature)), "{err}");
}

#[test]
fn tampered_master_proof_bytes_are_refused() {
    let s = setup();
    let uuid = s.identity.uuid();
    let hello = worker_hello(&HELLO);
    let (wn, mn) = (identity::new_nonce().unwrap(), worker_auth::new_challenge().unwrap());
    let proof = s.master.sign_worker_challenge(uuid, &wn, &mn, &HELLO).unwrap();
    assert!(proof.len() <= identity::PROOF_SIGNATURE_BYTES_MAX, "{}", proof.len());
    let now = SystemTime::now();
    let verify = |bytes: &[u8]| s.trust.verify_master_proof(uuid, &wn, &mn, &hello, bytes, now);
    let reason = |bytes: &[u8]| match verify(bytes) {
        Err(IdentityError::MasterProof(err)) => err.reason(),
        other => panic!("{other:?}"),
    };
    verify(&proof).unwrap();

    // The last byte belongs to the signature value itself.
    let mut tampered = proof.clone();
    *tampered.last_mut().unwrap() ^= 0x01;
    assert_eq!(reason(&tampered), "bad_signature");

    // Truncated anywhere: no complete packet.
    for len in 0..proof.len() {
        assert_eq!(reason(&proof[..len]), "malformed_signature", "at {len}");
    }

    // Every single-bit flip anywhere: never a panic, and refused except in the parts OpenPGP
    // leaves unauthenticated (the two-byte digest prefix, the empty unhashed subpacket area).
    let mut accepted = 0;
    for i in 0..proof.len() {
        for bit in [0x01, 0x80] {
            let mut flipped = proof.clone();
            flipped[i] ^= bit;
            if verify(&flipped).is_ok() {
                accepted += 1;
            }
        }
    }
    assert!(accepted <= 4, "{accepted} of {} flips accepted", proof.len() * 2);

    // Two copies of a good signature are not one signature; nor is the worker's own proof.
    assert_eq!(reason(&[proof.clone(), proof.clone()].concat()), "malformed_signature");
    let worker_proof = s.identity.sign_challenge(&mn, &hello).unwrap();
    assert_eq!(reason(&worker_proof), "wrong_key");
}

#[test]
fn master_proof_far_from_the_worker_clock_is_refused() {
    let s = setup();
    let uuid = s.identity.uuid();
    let hello = worker_hello(&HELLO);
    let (wn, mn) = ([1; 32], [2; 32]);
    let proof = s.master.sign_worker_challenge(uuid, &wn, &mn, &HELLO).unwrap();
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    for worker_clock in [now + hour, now - hour] {
        let err =
            s.trust.verify_master_proof(uuid, &wn, &mn, &hello, &proof, worker_clock).unwrap_err();
        assert!(matches!(err, IdentityError::MasterProof(MasterProofError::SignatureTime)));
    }
    s.trust.verify_master_proof(uuid, &wn, &mn, &hello, &proof, now + hour / 4).unwrap();
}

#[test]
fn worker_refuses_the_master_secret_key_as_its_trust() {
    let dir = tempfile::tempdir().unwrap();
    MasterIdentity::load_or_generate(dir.path()).unwrap();
    let err = MasterTrust::load(&MasterIdentity::key_path(dir.path())).unwrap_err();
    assert!(matches!(err, IdentityError::UnusableMasterCert { .. }), "{err}");
    // A worker's certificate is not a master's either: it signs, but it is not the master's
    // key, so the master's proofs fail against it.
    let s = setup();
    let wrong = MasterTrust::from_armored(&s.identity.public_cert_armored().unwrap()).unwrap();
    let err = mutual_handshake(&s.identity, &wrong, &s.master, &s.registry, loopback())
        .unwrap_err()
        .by_worker();
    assert_eq!(err, MasterProofError::WrongKey);
}

#[test]
fn replayed_proof_fails_against_a_new_nonce() {
    let s = setup();
    let registered = registered_worker(&s);
    let hello = worker_hello(&HELLO);
    let first = worker_auth::new_challenge().unwrap();
    let proof = s.identity.sign_challenge(&first, &hello).unwrap();
    let now = SystemTime::now();
    worker_auth::verify_proof(registered, &first, &HELLO, &proof, now).unwrap();
    // A master proof is no worker proof, even for the same nonce.
    let master_proof =
        s.master.sign_worker_challenge(s.identity.uuid(), &[0; 32], &first, &HELLO).unwrap();
    let err =
        worker_auth::verify_proof(registered, &first, &HELLO, &master_proof, now).unwrap_err();
    assert_eq!(err, AuthError::WrongKey);

    let second = worker_auth::new_challenge().unwrap();
    let err = worker_auth::verify_proof(registered, &second, &HELLO, &proof, now).unwrap_err();
    assert_eq!(err, AuthError::BadSignature);
    assert_eq!(err.reason(), "bad_signature");
}

#[test]
fn proof_binds_the_hello_fields() {
    let s = setup();
    let registered = registered_worker(&s);
    let nonce = worker_auth::new_challenge().unwrap();
    let proof = s.identity.sign_challenge(&nonce, &worker_hello(&HELLO)).unwrap();
    let now = SystemTime::now();
    let moved = HelloBinding { client_addr: "198.51.100.1:2049", ..HELLO };
    let upgraded = HelloBinding { protocol_version: 2, ..HELLO };
    for hello in [moved, upgraded] {
        let err = worker_auth::verify_proof(registered, &nonce, &hello, &proof, now).unwrap_err();
        assert_eq!(err, AuthError::BadSignature, "{hello:?}");
    }
    // An over-long address is refused before any signature work.
    let long = "x".repeat(worker_auth::CLIENT_ADDR_BYTES_MAX + 1);
    let hello = HelloBinding { client_addr: &long, ..HELLO };
    let err = worker_auth::verify_proof(registered, &nonce, &hello, &proof, now).unwrap_err();
    assert_eq!(err.reason(), "bad_hello");
}

#[test]
fn tampered_signature_bytes_are_refused() {
    let s = setup();
    let registered = registered_worker(&s);
    let nonce = worker_auth::new_challenge().unwrap();
    let proof = s.identity.sign_challenge(&nonce, &worker_hello(&HELLO)).unwrap();
    let now = SystemTime::now();

    // The last byte belongs to the signature value itself.
    let mut tampered = proof.clone();
    *tampered.last_mut().unwrap() ^= 0x01;
    let err = worker_auth::verify_proof(registered, &nonce, &HELLO, &tampered, now).unwrap_err();
    assert_eq!(err, AuthError::BadSignature);

    // Truncated anywhere: no complete packet.
    for len in 0..proof.len() {
        let err =
            worker_auth::verify_proof(registered, &nonce, &HELLO, &proof[..len], now).unwrap_err();
        assert_eq!(err.reason(), "malformed_signature", "at {len}: {err}");
    }

    // Every single-bit flip anywhere: never a panic, and refused except in the parts OpenPGP
    // leaves unauthenticated: the two-byte digest prefix (a quick-check hint) and the unhashed
    // subpacket area (empty in sequoia's signatures). So at most 2 bytes x 2 flips pass.
    let mut accepted = 0;
    for i in 0..proof.len() {
        for bit in [0x01, 0x80] {
            let mut flipped = proof.clone();
            flipped[i] ^= bit;
            if worker_auth::verify_proof(registered, &nonce, &HELLO, &flipped, now).is_ok() {
                accepted += 1;
            }
        }
    }
    assert!(accepted <= 4, "{accepted} of {} flips accepted", proof.len() * 2);

    // Two copies of a good signature are not one signature.
    let doubled = [proof.clone(), proof.clone()].concat();
    let err = worker_auth::verify_proof(registered, &nonce, &HELLO, &doubled, now).unwrap_err();
    assert_eq!(err.reason(), "malformed_signature", "{err}");
}

#[test]
fn signature_far_from_the_master_clock_is_refused() {
    let s = setup();
    let registered = registered_worker(&s);
    let nonce = worker_auth::new_challenge().unwrap();
    let proof = s.identity.sign_challenge(&nonce, &worker_hello(&HELLO)).unwrap();
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    for master_clock in [now + hour, now - hour] {
        let err = worker_auth::verify_proof(registered, &nonce, &HELLO, &proof, master_clock)
            .unwrap_err();
        assert_eq!(err, AuthError::SignatureTime, "{err}");
    }
    worker_auth::verify_proof(registered, &nonce, &HELLO, &proof, now + hour / 4).unwrap();
}

#[test]
fn garbage_link_key_ciphertext_is_refused() {
    let s = setup();
    let registered = registered_worker(&s);
    let sealed = worker_auth::seal_link_key(registered, &[9; 32]).unwrap();
    assert_eq!(s.identity.decrypt_link_key(&sealed).unwrap(), [9; 32]);

    for garbage in [&b""[..], b"\x00", b"not an openpgp message at all", &[0xC1; 200]] {
        let err = s.identity.decrypt_link_key(garbage).unwrap_err();
        assert!(matches!(err, IdentityError::LinkKeyDecrypt { .. }), "{err}");
    }
    // Flip a byte of the encrypted body: the integrity check fails.
    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    assert!(s.identity.decrypt_link_key(&tampered).is_err());
    // Truncated.
    assert!(s.identity.decrypt_link_key(&sealed[..sealed.len() - 10]).is_err());
    // Sealed to another worker.
    let other = setup();
    let sealed_for_other = worker_auth::seal_link_key(registered_worker(&other), &[9; 32]).unwrap();
    let err = s.identity.decrypt_link_key(&sealed_for_other);
    assert!(matches!(err, Err(IdentityError::LinkKeyDecrypt { .. })), "{err:?}");
}

#[test]
fn registry_refuses_a_secret_key_and_duplicates() {
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let other_dir = dir.path().join("other");
    let other = WorkerIdentity::generate(Uuid::new_v4(), "other").unwrap();
    other.save(&other_dir).unwrap();
    let entry = |id: Uuid, cert: &Path| WorkerConfig {
        id,
        name: None,
        cert: cert.to_path_buf(),
        allowed_ips: vec!["127.0.0.1".parse().unwrap()],
    };
    let key = other_dir.join(identity::KEY_FILE_NAME);
    let err = WorkerRegistry::from_entries(&[entry(other.uuid(), &key)]).unwrap_err();
    assert!(matches!(err, worker_auth::RegistryError::CertHasSecret { .. }), "{err}");

    let public = other_dir.join(identity::PUBLIC_CERT_FILE_NAME);
    let twice = [entry(other.uuid(), &public), entry(other.uuid(), &public)];
    let err = WorkerRegistry::from_entries(&twice).unwrap_err();
    assert!(matches!(err, worker_auth::RegistryError::DuplicateUuid { .. }), "{err}");

    let shared = [entry(other.uuid(), &public), entry(Uuid::new_v4(), &public)];
    let err = WorkerRegistry::from_entries(&shared).unwrap_err();
    assert!(matches!(err, worker_auth::RegistryError::DuplicateCert { .. }), "{err}");

    let registry = WorkerRegistry::from_entries(&[entry(other.uuid(), &public)]).unwrap();
    assert_eq!(registry.len(), 1);
    // Debug output names the worker but holds no key material.
    let debug = format!("{:?} {:?}", registry, s.identity);
    assert!(!debug.contains("BEGIN PGP"), "{debug}");
    assert!(debug.contains(&other.fingerprint().to_hex()), "{debug}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary proof bytes are refused with an error, never a panic.
    #[test]
    fn arbitrary_proofs_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let s = shared_setup();
        let registered = registered_worker(s);
        let result =
            worker_auth::verify_proof(registered, &[1; 32], &HELLO, &bytes, SystemTime::now());
        prop_assert!(result.is_err());
    }

    /// Arbitrary master proofs are refused by the worker with an error, never a panic.
    #[test]
    fn arbitrary_master_proofs_are_refused(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let s = shared_setup();
        let result = s.trust.verify_master_proof(
            s.identity.uuid(),
            &[1; 32],
            &[2; 32],
            &worker_hello(&HELLO),
            &bytes,
            SystemTime::now(),
        );
        prop_assert!(matches!(result, Err(IdentityError::MasterProof(_))));
    }

    /// Arbitrary sealed link keys are refused with an error, never a panic.
    #[test]
    fn arbitrary_ciphertexts_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let s = shared_setup();
        prop_assert!(s.identity.decrypt_link_key(&bytes).is_err());
    }
}

fn shared_setup() -> &'static Setup {
    static SETUP: std::sync::OnceLock<Setup> = std::sync::OnceLock::new();
    SETUP.get_or_init(setup)
}
