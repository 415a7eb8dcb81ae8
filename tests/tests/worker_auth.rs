//! Worker authentication end to end: a worker identity generated and saved to disk, registered
//! on the master through the TOML snippet `pt-worker keygen` prints (parsed by the master's own
//! configuration loader), and the whole handshake (admission, challenge, proof, sealed link key)
//! between the two real implementations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use master::config::{MasterConfig, WorkerConfig};
use master::worker_auth::{self, AuthError, HelloBinding, RegisteredWorker, WorkerRegistry};
use proptest::prelude::*;
use uuid::Uuid;
use worker::identity::{self, IdentityError, WorkerIdentity};

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

/// A worker identity saved in a temp dir, loaded back as the worker daemon would, and a master
/// registry built from the registration snippet, allowing loopback and 10.0.0.0/8.
struct Setup {
    _dir: tempfile::TempDir,
    identity: WorkerIdentity,
    registry: WorkerRegistry,
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
    Setup { _dir: dir, identity, registry }
}

/// The whole handshake; returns the link key both ends hold.
fn handshake(
    worker: &WorkerIdentity,
    registry: &WorkerRegistry,
    peer: IpAddr,
) -> Result<([u8; 32], [u8; 32]), AuthError> {
    // 1-2: Hello, admission, Challenge.
    let registered = registry.check_admission(worker.uuid(), peer)?;
    let nonce = worker_auth::new_challenge()?;
    // 3: Proof.
    let proof = worker.sign_challenge(&nonce, &worker_hello(&HELLO)).unwrap();
    // 4: verification, Accepted.
    worker_auth::verify_proof(registered, &nonce, &HELLO, &proof, SystemTime::now())?;
    let link_key = worker_auth::new_link_key()?;
    let sealed = worker_auth::seal_link_key(registered, &link_key)?;
    let received = worker.decrypt_link_key(&sealed).unwrap();
    Ok((link_key, received))
}

fn registered_worker(setup: &Setup) -> &RegisteredWorker {
    setup.registry.check_admission(setup.identity.uuid(), loopback()).unwrap()
}

#[test]
fn handshake_succeeds_and_link_key_round_trips() {
    let s = setup();
    let (sent, received) = handshake(&s.identity, &s.registry, loopback()).unwrap();
    assert_eq!(sent, received);
    assert_ne!(sent, [0; 32]);
    let registered = registered_worker(&s);
    assert_eq!(registered.fingerprint(), s.identity.fingerprint());
    assert_eq!(registered.name(), "test-worker");
    // Also from an address in the CIDR range, and as an IPv4-mapped IPv6 peer.
    for peer in ["10.20.30.40", "::ffff:127.0.0.1"] {
        let (sent, received) = handshake(&s.identity, &s.registry, peer.parse().unwrap()).unwrap();
        assert_eq!(sent, received);
    }
}

#[test]
fn both_sides_sign_and_verify_the_same_bytes() {
    let uuid = Uuid::new_v4();
    let nonce = [7; 32];
    assert_eq!(
        identity::auth_message(uuid, &nonce, &worker_hello(&HELLO)).unwrap(),
        worker_auth::auth_message(uuid, &nonce, &HELLO).unwrap()
    );
    assert_eq!(identity::AUTH_DOMAIN, worker_auth::AUTH_DOMAIN);
    assert_eq!(identity::CLIENT_ADDR_BYTES_MAX, worker_auth::CLIENT_ADDR_BYTES_MAX);
}

#[test]
fn unknown_uuid_is_refused() {
    let s = setup();
    let other = WorkerIdentity::generate(Uuid::new_v4(), "stranger").unwrap();
    let err = handshake(&other, &s.registry, loopback()).unwrap_err();
    assert_eq!(err, AuthError::UnknownWorker { uuid: other.uuid() });
    assert_eq!(err.reason(), "unknown_worker");
}

#[test]
fn address_outside_the_allow_list_is_refused() {
    let s = setup();
    for peer in ["127.0.0.2", "11.0.0.1", "::1", "192.168.1.1"] {
        let peer: IpAddr = peer.parse().unwrap();
        let err = handshake(&s.identity, &s.registry, peer).unwrap_err();
        assert_eq!(err, AuthError::IpNotAllowed { uuid: s.identity.uuid(), peer });
        assert_eq!(err.reason(), "ip_not_allowed");
    }
}

#[test]
fn signature_from_another_key_is_refused() {
    let s = setup();
    // An impostor claiming the registered UUID, with its own key.
    let impostor = WorkerIdentity::generate(s.identity.uuid(), "impostor").unwrap();
    let err = handshake(&impostor, &s.registry, loopback()).unwrap_err();
    assert_eq!(err, AuthError::WrongKey);
    assert_eq!(err.reason(), "wrong_key");
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
