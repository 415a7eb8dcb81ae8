//! Sans-IO integrity for the master–worker link.
//!
//! After the handshake (`workerHello`, `challenge`, `helloProof`, `linkAccepted`) both ends share
//! a 32-byte [`LinkKey`]. From then on every frame in each direction is sealed: its flags get
//! bit 0, and a trailer follows the data with the sender's sequence number (1, 2, 3... in each
//! direction) and a keyed BLAKE3 MAC over the context string, the direction, the sequence
//! number and the frame's header and data. A frame with a wrong MAC, a sequence number already
//! seen or one that skips ahead is refused with a specific [`LinkError`]; the link is then closed.
//!
//! The OpenPGP parts (the signed authentication message, the encrypted link key) are done by
//! master and worker; see `docs/WORKER_AUTH.md`. This crate only carries their bytes.

use std::fmt;

use zeroize::Zeroize as _;

use crate::error::LinkError;
use crate::frame::{Frame, Seal};
use crate::limits::LINK_KEY_BYTES;

/// Domain separation of the link MAC.
const MAC_CONTEXT: &[u8] = b"PaperTrader link MAC v1\0";

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
    key: &LinkKey,
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
    blake3::keyed_hash(&key.0, covered)
}

/// Seals outgoing link frames: one per direction, owned by the writer.
#[derive(Debug)]
pub struct LinkSealer {
    key: LinkKey,
    direction: Direction,
    next_seq: u64,
    covered: Vec<u8>,
}

impl LinkSealer {
    /// A sealer for frames going `direction`; the first frame gets sequence number 1.
    pub fn new(key: LinkKey, direction: Direction) -> Self {
        Self { key, direction, next_seq: 1, covered: Vec::new() }
    }

    /// Seals the frame in place (sets the sealed flag and the trailer).
    pub fn seal(&mut self, frame: &mut Frame) -> Result<(), LinkError> {
        let seq = self.next_seq;
        self.next_seq = seq.checked_add(1).ok_or(LinkError::SequenceExhausted)?;
        let mac = mac(&self.key, self.direction, seq, frame, &mut self.covered);
        frame.set_seal(Some(Seal { seq, mac: *mac.as_bytes() }));
        Ok(())
    }
}

/// Checks and strips the seal of incoming link frames: one per direction, owned by the reader.
#[derive(Debug)]
pub struct LinkOpener {
    key: LinkKey,
    direction: Direction,
    next_seq: u64,
    covered: Vec<u8>,
}

impl LinkOpener {
    /// An opener for frames coming `direction`; the first frame must have sequence number 1.
    pub fn new(key: LinkKey, direction: Direction) -> Self {
        Self { key, direction, next_seq: 1, covered: Vec::new() }
    }

    /// Verifies the frame's MAC and sequence number, then removes the seal. The MAC is checked
    /// first (in constant time), so only authentic frames are reported as replayed or skipped.
    pub fn open(&mut self, frame: &mut Frame) -> Result<(), LinkError> {
        let seal = *frame.seal().ok_or(LinkError::Unsealed)?;
        let expected_mac = mac(&self.key, self.direction, seal.seq, frame, &mut self.covered);
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
}
