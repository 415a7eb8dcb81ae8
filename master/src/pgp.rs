//! The pure pieces of the mutual worker–master handshake that both ends run: the exact bytes
//! each side signs ([`auth_message`], [`master_auth_message`]), detached OpenPGP signing
//! ([`sign_detached`]) and verification ([`verify_detached`]), and the checks that a key or a
//! certificate is fit for the handshake ([`signing_cert_usable`], [`signing_key_usable`]).
//!
//! The master uses them in [`crate::worker_auth`], the worker in `worker::identity`; each side
//! maps the small error types here into its own (`AuthError`, `IdentityError`), so the
//! messages both sides show stay their own while the bytes and rules exist once. The layouts
//! and the rules are described in `docs/WORKER_AUTH.md`. Nothing here does IO; time comes in
//! as an argument.

use std::io::Write;
use std::time::SystemTime;

use openpgp::Cert;
use openpgp::cert::ValidCert;
use openpgp::parse::Parse;
use openpgp::parse::stream::{
    DetachedVerifierBuilder, MessageLayer, MessageStructure, VerificationError, VerificationHelper,
};
use openpgp::policy::StandardPolicy;
use openpgp::serialize::SerializeInto;
use openpgp::serialize::stream::{Message, Signer};
use openpgp::{KeyHandle, types::RevocationStatus};
use sequoia_openpgp as openpgp;
use uuid::Uuid;

use crate::worker_auth::{
    AUTH_DOMAIN, CLIENT_ADDR_BYTES_MAX, HelloBinding, MASTER_AUTH_DOMAIN, NONCE_BYTES,
    PROOF_SIGNATURE_BYTES_MAX, SEALED_KEY_HASH_BYTES, SIGNATURE_CLOCK_SKEW_MAX,
};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The policy every key, certificate and signature of the handshake is judged by.
pub static POLICY: StandardPolicy<'static> = StandardPolicy::new();

/// The announced client-facing address is longer than [`CLIENT_ADDR_BYTES_MAX`], so the
/// Hello fields cannot be put in a signed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("client address is {bytes} bytes; at most {bytes_max} allowed")]
pub struct ClientAddrTooLong {
    /// Its length.
    pub bytes: usize,
    /// The limit, [`CLIENT_ADDR_BYTES_MAX`].
    pub bytes_max: usize,
}

/// The exact bytes a worker signs to answer the master's challenge (see
/// `docs/WORKER_AUTH.md`):
///
/// `AUTH_DOMAIN || uuid (16) || nonce (32) || protocol_version (u16 BE) ||
///  client_addr length (u16 BE) || client_addr (UTF-8)`.
///
/// `nonce` is the master's nonce from the Challenge.
pub fn auth_message(
    uuid: Uuid,
    nonce: &[u8; NONCE_BYTES],
    hello: &HelloBinding<'_>,
) -> Result<Vec<u8>, ClientAddrTooLong> {
    signed_message(AUTH_DOMAIN, uuid, &[nonce], hello, &[])
}

/// The exact bytes the master signs to prove itself to the worker (see
/// `docs/WORKER_AUTH.md`):
///
/// `MASTER_AUTH_DOMAIN || uuid (16) || worker_nonce (32) || master_nonce (32) ||
///  protocol_version (u16 BE) || client_addr length (u16 BE) || client_addr (UTF-8) ||
///  BLAKE3(sealed_key) (32)`.
///
/// `sealed_key` is the link key sealed to the worker exactly as the Challenge carries it: the
/// hash binds the proof to that key, so nobody on the path can swap in a key of their own.
pub fn master_auth_message(
    uuid: Uuid,
    worker_nonce: &[u8; NONCE_BYTES],
    master_nonce: &[u8; NONCE_BYTES],
    hello: &HelloBinding<'_>,
    sealed_key: &[u8],
) -> Result<Vec<u8>, ClientAddrTooLong> {
    let sealed_key_hash: [u8; SEALED_KEY_HASH_BYTES] = *blake3::hash(sealed_key).as_bytes();
    signed_message(MASTER_AUTH_DOMAIN, uuid, &[worker_nonce, master_nonce], hello, &sealed_key_hash)
}

/// `domain || uuid || nonces... || protocol_version || client_addr length || client_addr ||
/// tail`.
fn signed_message(
    domain: &[u8],
    uuid: Uuid,
    nonces: &[&[u8; NONCE_BYTES]],
    hello: &HelloBinding<'_>,
    tail: &[u8],
) -> Result<Vec<u8>, ClientAddrTooLong> {
    let addr = hello.client_addr.as_bytes();
    let too_long = || ClientAddrTooLong { bytes: addr.len(), bytes_max: CLIENT_ADDR_BYTES_MAX };
    if addr.len() > CLIENT_ADDR_BYTES_MAX {
        return Err(too_long());
    }
    let addr_len = u16::try_from(addr.len()).map_err(|_| too_long())?;
    // Bounded: the domain is a constant, at most two nonces, the address at most 255 bytes, the
    // tail empty or one hash.
    let capacity = domain.len() + 16 + nonces.len() * NONCE_BYTES + 4 + addr.len() + tail.len();
    let mut message = Vec::with_capacity(capacity);
    message.extend_from_slice(domain);
    message.extend_from_slice(uuid.as_bytes());
    for nonce in nonces {
        message.extend_from_slice(*nonce);
    }
    message.extend_from_slice(&hello.protocol_version.to_be_bytes());
    message.extend_from_slice(&addr_len.to_be_bytes());
    message.extend_from_slice(addr);
    message.extend_from_slice(tail);
    debug_assert_eq!(message.len(), capacity);
    Ok(message)
}

// ---------------------------------------------------------------------------------------------
// Signing and verifying.

/// Why a detached signature could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The key has no signing key that is valid now and holds unencrypted secret key material.
    #[error("no valid, unencrypted signing subkey")]
    NoSigningKey,
    /// The signing key's secret key material cannot be turned into a key pair.
    #[error("the signing key cannot be used")]
    KeyUnusable {
        /// The OpenPGP library's error.
        #[source]
        source: BoxError,
    },
    /// Signing failed.
    #[error(transparent)]
    Sign {
        /// The OpenPGP library's (or the writer's) error.
        source: BoxError,
    },
}

/// A detached OpenPGP signature over `message`, made with the first signing key of `tsk` that
/// is valid now under [`POLICY`] and holds unencrypted secret key material.
pub fn sign_detached(tsk: &Cert, message: &[u8]) -> Result<Vec<u8>, SignError> {
    let key = tsk
        .keys()
        .with_policy(&POLICY, None)
        .supported()
        .alive()
        .revoked(false)
        .for_signing()
        .unencrypted_secret()
        .next()
        .ok_or(SignError::NoSigningKey)?;
    let keypair = key
        .key()
        .clone()
        .into_keypair()
        .map_err(|e| SignError::KeyUnusable { source: e.into() })?;
    let sign_err = |source: BoxError| SignError::Sign { source };
    let mut signature = Vec::new();
    let sink = Message::new(&mut signature);
    let mut signer = Signer::new(sink, keypair)
        .and_then(|signer| signer.detached().build())
        .map_err(|e| sign_err(e.into()))?;
    signer.write_all(message).map_err(|e| sign_err(e.into()))?;
    signer.finalize().map_err(|e| sign_err(e.into()))?;
    Ok(signature)
}

/// Why a proof signature was refused. Each side maps it into its own error (the master's
/// `AuthError`, the worker's `MasterProofError`), whose variants have the same names and
/// stable reasons.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// `malformed_signature`: not exactly one well-formed detached OpenPGP signature (garbage,
    /// truncated, empty, too large, several signatures).
    #[error("malformed proof signature: {detail}")]
    MalformedSignature {
        /// What is wrong.
        detail: String,
    },
    /// `wrong_key`: the signature was not made by any key of the expected certificate.
    #[error("proof signature is not from the expected key")]
    WrongKey,
    /// `key_not_valid`: the signature was made by a key of the expected certificate that may
    /// not sign now (not signing-capable, expired, revoked, rejected by policy).
    #[error("proof signed by a key that is not valid for signing: {detail}")]
    KeyNotValid {
        /// What is wrong with the key.
        detail: String,
    },
    /// `bad_signature`: the signature does not verify over the message (tampered, or made for
    /// another handshake: a replay) or is rejected by policy (weak hash).
    #[error("proof signature does not verify")]
    BadSignature,
    /// `signature_time`: the signature's creation time is more than
    /// [`SIGNATURE_CLOCK_SKEW_MAX`] away from `now`.
    #[error("proof signature time is too far from the local clock")]
    SignatureTime,
}

/// Checks that `signature` is one detached OpenPGP signature (at most
/// [`PROOF_SIGNATURE_BYTES_MAX`] bytes), made within [`SIGNATURE_CLOCK_SKEW_MAX`] of `now` by
/// a signing key of `cert` that is valid under [`POLICY`] at `now`, over `message`. Never
/// panics on any input.
pub fn verify_detached(
    cert: &Cert,
    message: &[u8],
    signature: &[u8],
    now: SystemTime,
) -> Result<(), ProofError> {
    let malformed = |detail: String| ProofError::MalformedSignature { detail };
    if signature.len() > PROOF_SIGNATURE_BYTES_MAX {
        return Err(malformed(format!(
            "{} bytes; at most {PROOF_SIGNATURE_BYTES_MAX} allowed",
            signature.len()
        )));
    }
    if signature.is_empty() {
        return Err(malformed("empty".into()));
    }
    let helper = ProofHelper { cert, now, outcome: None };
    let mut verifier = DetachedVerifierBuilder::from_bytes(signature)
        .and_then(|builder| builder.with_policy(&POLICY, now, helper))
        .map_err(|e| malformed(e.to_string()))?;
    let verified = verifier.verify_bytes(message);
    match (verifier.into_helper().outcome, verified) {
        (Some(Ok(())), Ok(())) => Ok(()),
        (Some(Err(err)), _) => Err(err),
        // The parser failed before the signatures could be checked.
        (None, Err(e)) | (Some(Ok(())), Err(e)) => Err(malformed(e.to_string())),
        (None, Ok(())) => Err(malformed("no signature was checked".into())),
    }
}

/// Gives the verifier the expected certificate, and judges its results.
struct ProofHelper<'a> {
    cert: &'a Cert,
    now: SystemTime,
    outcome: Option<Result<(), ProofError>>,
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
            Err(openpgp::Error::BadSignature("proof rejected".into()).into())
        }
    }
}

/// Accepts exactly one signature group holding exactly one good signature made near `now`.
fn judge(structure: MessageStructure, now: SystemTime) -> Result<(), ProofError> {
    let malformed = |detail: &str| ProofError::MalformedSignature { detail: detail.to_owned() };
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
            let created = good.sig.signature_creation_time().ok_or(ProofError::SignatureTime)?;
            let skew = match created.duration_since(now) {
                Ok(ahead) => ahead,
                Err(behind) => behind.duration(),
            };
            if skew > SIGNATURE_CLOCK_SKEW_MAX {
                return Err(ProofError::SignatureTime);
            }
            Ok(())
        }
        Err(VerificationError::MissingKey { .. }) => Err(ProofError::WrongKey),
        Err(
            VerificationError::UnboundKey { error, .. } | VerificationError::BadKey { error, .. },
        ) => Err(ProofError::KeyNotValid { detail: error.to_string() }),
        Err(VerificationError::BadSignature { error, .. }) => {
            match error.downcast_ref::<openpgp::Error>() {
                Some(openpgp::Error::NotYetLive(_) | openpgp::Error::Expired(_)) => {
                    Err(ProofError::SignatureTime)
                }
                _ => Err(ProofError::BadSignature),
            }
        }
        Err(
            VerificationError::MalformedSignature { .. }
            | VerificationError::UnknownSignature { .. },
        ) => Err(malformed("unparsable or incomplete signature packet")),
        Err(_) => Err(malformed("unrecognised verification result")),
    }
}

// ---------------------------------------------------------------------------------------------
// Keys and certificates.

/// The public certificate of `tsk`, without any secret key material, ASCII-armored (the
/// contents of `master.pub.asc` or `worker.pub.asc`).
pub fn armored_public_cert(tsk: &Cert) -> Result<String, BoxError> {
    let bytes = tsk.clone().strip_secret_key_material().armored().to_vec()?;
    Ok(String::from_utf8(bytes)?)
}

/// The certificate under [`POLICY`] now, if it is valid, alive and not revoked; otherwise why
/// not (`not_valid` is the reason given when the policy rejects it).
fn live<'a>(cert: &'a Cert, not_valid: &'static str) -> Result<ValidCert<'a>, &'static str> {
    let valid = cert.with_policy(&POLICY, None).map_err(|_| not_valid)?;
    if valid.alive().is_err() {
        return Err("the certificate is expired or not yet valid");
    }
    if let RevocationStatus::Revoked(_) = valid.revocation_status() {
        return Err("the certificate is revoked");
    }
    Ok(valid)
}

/// Checks that a peer's public certificate can verify its proofs now: valid under [`POLICY`],
/// alive, not revoked, with a valid signing-capable key. Returns the valid certificate for any
/// further check, or why it cannot be used.
pub fn signing_cert_usable(cert: &Cert) -> Result<ValidCert<'_>, &'static str> {
    let valid = live(cert, "not valid under the standard policy (no valid self-signature)")?;
    if valid.keys().supported().alive().revoked(false).for_signing().next().is_none() {
        return Err("no valid signing-capable key");
    }
    Ok(valid)
}

/// Checks that an own secret key (a TSK) can sign proofs now: valid under [`POLICY`], alive,
/// not revoked, with a valid signing key holding secret key material that is not
/// password-protected (`password_protected` is the reason given when it is). Returns the
/// valid certificate for any further check, or why it cannot be used.
pub fn signing_key_usable<'a>(
    tsk: &'a Cert,
    password_protected: &'static str,
) -> Result<ValidCert<'a>, &'static str> {
    let valid = live(tsk, "the certificate is not valid under the standard policy")?;
    let signing = || valid.keys().supported().alive().revoked(false).for_signing().secret();
    if signing().next().is_none() {
        return Err("no valid signing subkey with secret key material");
    }
    if signing().unencrypted_secret().next().is_none() {
        return Err(password_protected);
    }
    Ok(valid)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use openpgp::cert::{CertBuilder, CipherSuite};

    use super::*;

    const HELLO: HelloBinding<'static> =
        HelloBinding { protocol_version: 1, client_addr: "203.0.113.7:2049" };

    fn signing_key() -> Cert {
        let builder = CertBuilder::new().set_cipher_suite(CipherSuite::Cv25519).add_userid("k");
        builder.add_signing_subkey().generate().unwrap().0
    }

    #[test]
    fn an_over_long_address_is_refused_with_the_shared_text() {
        let long = "a".repeat(CLIENT_ADDR_BYTES_MAX + 1);
        let hello = HelloBinding { protocol_version: 1, client_addr: &long };
        let err = auth_message(Uuid::nil(), &[0; NONCE_BYTES], &hello).unwrap_err();
        assert_eq!(err, ClientAddrTooLong { bytes: 256, bytes_max: 255 });
        assert_eq!(err.to_string(), "client address is 256 bytes; at most 255 allowed");
        let err = master_auth_message(Uuid::nil(), &[0; 32], &[0; 32], &hello, &[]).unwrap_err();
        assert_eq!(err.bytes, 256);
    }

    #[test]
    fn a_detached_signature_verifies_only_over_its_message_and_key() {
        let tsk = signing_key();
        let cert = tsk.clone().strip_secret_key_material();
        assert!(signing_key_usable(&tsk, "protected").is_ok());
        assert!(signing_cert_usable(&cert).is_ok());
        assert_eq!(
            signing_key_usable(&cert, "protected").unwrap_err(),
            "no valid signing subkey with secret key material"
        );
        assert!(matches!(sign_detached(&cert, b"m"), Err(SignError::NoSigningKey)));

        let message = auth_message(Uuid::from_u128(7), &[1; NONCE_BYTES], &HELLO).unwrap();
        let signature = sign_detached(&tsk, &message).unwrap();
        let now = SystemTime::now();
        verify_detached(&cert, &message, &signature, now).unwrap();
        let other = auth_message(Uuid::from_u128(7), &[2; NONCE_BYTES], &HELLO).unwrap();
        assert_eq!(verify_detached(&cert, &other, &signature, now), Err(ProofError::BadSignature));
        let stranger = signing_key().strip_secret_key_material();
        assert_eq!(
            verify_detached(&stranger, &message, &signature, now),
            Err(ProofError::WrongKey)
        );
        assert!(matches!(
            verify_detached(&cert, &message, &[], now),
            Err(ProofError::MalformedSignature { .. })
        ));
    }
}
