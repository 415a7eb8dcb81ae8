//! Sans-IO confidentiality and integrity for the master–worker link.
//!
//! After the handshake (`workerHello`, `challenge`, `helloProof`, `linkAccepted`) both ends share
//! a 32-byte [`LinkKey`]. From then on every frame in each direction is sealed, encrypt then
//! MAC: its data is encrypted with ChaCha20 (a key derived from the link key, the nonce made of
//! the direction and the sender's sequence number, so no nonce is used twice under a key), its
//! flags get bit 0, and a trailer follows the data with the sequence number (1, 2, 3... in each
//! direction) and a keyed BLAKE3 MAC (another derived key) over the context string, the
//! direction, the sequence number, the frame's header and the encrypted data. The link carries
//! password hashes and session ids: the wire shows neither. A frame with a wrong MAC, a
//! sequence number already seen or one that skips ahead is refused with a specific
//! [`LinkError`], before anything is decrypted; the link is then closed.
//!
//! The OpenPGP parts (the signed authentication message, the encrypted link key) are done by
//! master and worker; see `docs/WORKER_AUTH.md`. This crate only carries their bytes.

use std::fmt;

use chacha20::cipher::StreamCipher as _;
use chacha20::{ChaCha20, KeyIvInit as _};
use zeroize::Zeroize as _;

use crate::error::LinkError;
use crate::frame::{Frame, Seal};
use crate::limits::LINK_KEY_BYTES;

/// Domain separation of the link MAC.
const MAC_CONTEXT: &[u8] = b"PaperTrader link MAC v2\0";
/// The context of the MAC key derived from the link key (BLAKE3 `derive_key`).
const MAC_KEY_CONTEXT: &str = "PaperTrader link 2025 MAC key";
/// The context of the encryption key derived from the link key.
const CIPHER_KEY_CONTEXT: &str = "PaperTrader link 2025 ChaCha20 key";

/// The two keys a link key gives, one for each job.
#[derive(Debug)]
struct SealKeys {
    mac: LinkKey,
    cipher: LinkKey,
}

impl SealKeys {
    fn derive(key: &LinkKey) -> Self {
        Self {
            mac: LinkKey(blake3::derive_key(MAC_KEY_CONTEXT, &key.0)),
            cipher: LinkKey(blake3::derive_key(CIPHER_KEY_CONTEXT, &key.0)),
        }
    }

    /// Encrypts or decrypts (the same XOR) the data of frame number `seq` going `direction`.
    fn apply_keystream(&self, direction: Direction, seq: u64, data: &mut [u8]) {
        let mut nonce = [0u8; 12];
        nonce[0] = direction as u8;
        nonce[4..].copy_from_slice(&seq.to_be_bytes());
        // A frame's data is at most 64 KiB, far inside ChaCha20's 256 GiB per nonce.
        ChaCha20::new(&self.cipher.0.into(), &nonce.into()).apply_keystream(data);
    }
}

/// The shared secret of a link. Its `Debug` never prints it, and its bytes are zeroed when it
/// is dropped, so no copy outlives the link in freed memory (the master makes it with
/// `new_link_key`, the worker gets it from `decrypt_link_key`; both hand it over as a `LinkKey`).
#[derive(Clone, PartialEq, Eq)]
pub struct LinkKey(pub [u8; LINK_KEY_BYTES]);

impl Drop for LinkKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkKey(<redacted>)")
    }
}

/// Which way a frame travels; part of the MAC, so a frame cannot be reflected back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Direction {
    /// Worker to master.
    WorkerToMaster = 1,
    /// Master to worker.
    MasterToWorker = 2,
}

/// The MAC of `frame` as frame number `seq` going `direction`. `covered` is scratch space for
/// the bytes it covers, reused from frame to frame so that sealing allocates nothing.
fn mac(
    keys: &SealKeys,
    direction: Direction,
    seq: u64,
    frame: &Frame,
    covered: &mut Vec<u8>,
) -> blake3::Hash {
    covered.clear();
    covered.extend_from_slice(MAC_CONTEXT);
    covered.push(direction as u8);
    covered.extend_from_slice(&seq.to_be_bytes());
    frame.write_header_and_data(true, covered);
    blake3::keyed_hash(&keys.mac.0, covered)
}

/// Seals outgoing link frames: one per direction, owned by the writer.
#[derive(Debug)]
pub struct LinkSealer {
    keys: SealKeys,
    direction: Direction,
    next_seq: u64,
    covered: Vec<u8>,
}

impl LinkSealer {
    /// A sealer for frames going `direction`; the first frame gets sequence number 1.
    pub fn new(key: LinkKey, direction: Direction) -> Self {
        Self { keys: SealKeys::derive(&key), direction, next_seq: 1, covered: Vec::new() }
    }

    /// Seals the frame in place: encrypts its data, sets the sealed flag and the trailer.
    pub fn seal(&mut self, frame: &mut Frame) -> Result<(), LinkError> {
        let seq = self.next_seq;
        self.next_seq = seq.checked_add(1).ok_or(LinkError::SequenceExhausted)?;
        self.keys.apply_keystream(self.direction, seq, frame.data_mut());
        let mac = mac(&self.keys, self.direction, seq, frame, &mut self.covered);
        frame.set_seal(Some(Seal { seq, mac: *mac.as_bytes() }));
        Ok(())
    }
}

/// Checks and strips the seal of incoming link frames: one per direction, owned by the reader.
#[derive(Debug)]
pub struct LinkOpener {
    keys: SealKeys,
    direction: Direction,
    next_seq: u64,
    covered: Vec<u8>,
}

impl LinkOpener {
    /// An opener for frames coming `direction`; the first frame must have sequence number 1.
    pub fn new(key: LinkKey, direction: Direction) -> Self {
        Self { keys: SealKeys::derive(&key), direction, next_seq: 1, covered: Vec::new() }
    }

    /// Verifies the frame's MAC and sequence number, then decrypts its data and removes the
    /// seal. The MAC is checked first (in constant time), so only authentic frames are
    /// reported as replayed or skipped, and nothing unauthentic is decrypted.
    pub fn open(&mut self, frame: &mut Frame) -> Result<(), LinkError> {
        let seal = *frame.seal().ok_or(LinkError::Unsealed)?;
        let expected_mac = mac(&self.keys, self.direction, seal.seq, frame, &mut self.covered);
        if expected_mac != blake3::Hash::from(seal.mac) {
            return Err(LinkError::BadMac { seq: seal.seq });
        }
        let expected = self.next_seq;
        if seal.seq < expected {
            return Err(LinkError::Replayed { expected, got: seal.seq });
        }
        if seal.seq > expected {
            return Err(LinkError::Skipped { expected, got: seal.seq });
        }
        self.next_seq = expected.checked_add(1).ok_or(LinkError::SequenceExhausted)?;
        self.keys.apply_keystream(self.direction, seal.seq, frame.data_mut());
        frame.set_seal(None);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::{Control, Response};

    fn frames(n: u64) -> Vec<Frame> {
        (0..n)
            .map(|seq| {
                let message = Control::Heartbeat { seq }.encode().unwrap();
                message.to_frames().unwrap().remove(0)
            })
            .collect()
    }

    fn pair() -> (LinkSealer, LinkOpener) {
        let key = LinkKey([7; 32]);
        (
            LinkSealer::new(key.clone(), Direction::WorkerToMaster),
            LinkOpener::new(key, Direction::WorkerToMaster),
        )
    }

    #[test]
    fn sealed_frames_open_in_order_and_survive_the_wire() {
        let (mut sealer, mut opener) = pair();
        for frame in frames(5) {
            let mut sealed = frame.clone();
            sealer.seal(&mut sealed).unwrap();
            let mut received = Frame::parse(&sealed.to_bytes()).unwrap();
            assert!(received.seal().is_some());
            opener.open(&mut received).unwrap();
            assert_eq!(received, frame);
        }
    }

    #[test]
    fn tampering_replay_gap_reflection_and_stripping_are_refused() {
        let (mut sealer, mut opener) = pair();
        let mut sealed: Vec<Frame> = frames(3)
            .into_iter()
            .map(|mut f| {
                sealer.seal(&mut f).unwrap();
                f
            })
            .collect();
        // Flip one data bit of frame 1.
        let mut bytes = sealed[0].to_bytes();
        bytes[21] ^= 0x01;
        let mut tampered = Frame::parse(&bytes).unwrap();
        assert_eq!(opener.open(&mut tampered), Err(LinkError::BadMac { seq: 1 }));
        // Skip frame 1.
        assert_eq!(
            opener.open(&mut sealed[1].clone()),
            Err(LinkError::Skipped { expected: 1, got: 2 })
        );
        opener.open(&mut sealed[0].clone()).unwrap();
        // Replay frame 1.
        assert_eq!(
            opener.open(&mut sealed[0].clone()),
            Err(LinkError::Replayed { expected: 2, got: 1 })
        );
        // The same key in the other direction does not accept it (no reflection).
        let mut reverse = LinkOpener::new(LinkKey([7; 32]), Direction::MasterToWorker);
        assert_eq!(reverse.open(&mut sealed[0].clone()), Err(LinkError::BadMac { seq: 1 }));
        // Another key does not either.
        let mut other = LinkOpener::new(LinkKey([8; 32]), Direction::WorkerToMaster);
        assert_eq!(other.open(&mut sealed[0].clone()), Err(LinkError::BadMac { seq: 1 }));
        // A stripped seal is refused.
        let mut plain = Response::RegisterSuccess.encode().unwrap().to_frames().unwrap().remove(0);
        assert_eq!(opener.open(&mut plain), Err(LinkError::Unsealed));
        opener.open(&mut sealed[1]).unwrap();
    }

    /// What a link carries (here a relayed login's password hash) does not appear on the wire,
    /// and the same message sealed twice (two sequence numbers) gives two different
    /// ciphertexts; the receiver gets it back exactly.
    #[test]
    fn sealed_data_is_encrypted_and_each_frame_differently() {
        let secret = [0x5Au8; 32];
        let message = Control::Heartbeat { seq: u64::from_be_bytes([0x5A; 8]) }.encode().unwrap();
        let mut frame = message.to_frames().unwrap().remove(0);
        frame.data_mut()[..8].copy_from_slice(&secret[..8]);
        let plain = frame.clone();
        let (mut sealer, mut opener) = pair();
        let mut first = plain.clone();
        sealer.seal(&mut first).unwrap();
        let mut second = plain.clone();
        sealer.seal(&mut second).unwrap();
        let (wire1, wire2) = (first.to_bytes(), second.to_bytes());
        assert!(!wire1.windows(8).any(|w| w == &secret[..8]), "the data is on the wire in clear");
        let data = |wire: &[u8]| wire[20..20 + plain.data().len()].to_vec();
        assert_ne!(data(&wire1), data(&wire2), "a nonce was used twice");
        for wire in [wire1, wire2] {
            let mut received = Frame::parse(&wire).unwrap();
            opener.open(&mut received).unwrap();
            assert_eq!(received, plain);
        }
    }
}
