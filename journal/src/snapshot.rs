//! Snapshots: the engine state, rkyv-encoded, with the last sequence number it covers.
//!
//! Layout (integers big-endian), documented in `docs/JOURNAL.md`:
//!
//! ```text
//! offset size field
//!      0    2 snapshot_format SNAPSHOT_FORMAT_VERSION
//!      2    2 event_format    engine::EVENT_FORMAT_VERSION
//!      4    4 header_crc      crc32 of bytes 0..4 followed by bytes 8..64
//!      8    8 last_seq        the last record the state includes
//!     16    4 record_crc      the crc of that record: ties the snapshot to this chain
//!     20    4 payload_crc     crc32 of the payload
//!     24    8 payload_len     u64
//!     32   32 digest          engine::State::digest of the state
//!     64    n payload         the rkyv encoding of the engine::State
//! ```
//!
//! Encoding ([`encode_snapshot`]) needs only a `&State`, so it runs on any thread; storing fills
//! in `record_crc` and `header_crc` (64 bytes hashed) and writes.

use engine::{Digest, State};
use rkyv::util::AlignedVec;

use crate::be;
use crate::error::{SnapshotError, SnapshotInvalid};
use crate::limits::SNAPSHOT_BYTES_MAX;
use crate::record::Seq;

/// Version of the snapshot layout and of the state encoding. A snapshot of another version is
/// ignored and the state rebuilt from the events.
pub const SNAPSHOT_FORMAT_VERSION: u16 = 1;
/// Size of the snapshot header, in bytes (a multiple of 16 so that the payload keeps rkyv's
/// alignment relative to the start of the value).
pub const SNAPSHOT_HEADER_BYTES: usize = 64;

/// An encoded snapshot, ready for [`crate::Journal::store_snapshot`].
#[derive(Clone)]
pub struct SnapshotBytes {
    bytes: Vec<u8>,
    last_seq: Seq,
    digest: Digest,
}

impl std::fmt::Debug for SnapshotBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotBytes")
            .field("last_seq", &self.last_seq)
            .field("digest", &self.digest)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl SnapshotBytes {
    /// The last record the state includes.
    pub fn last_seq(&self) -> Seq {
        self.last_seq
    }

    /// The digest of the state.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The encoded size, in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true: a snapshot has at least a header.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Fills in the link to the covered record and the header checksum; the bytes to store.
    pub(crate) fn seal(mut self, record_crc: u32) -> Vec<u8> {
        self.bytes[16..20].copy_from_slice(&record_crc.to_be_bytes());
        let crc = header_crc(&self.bytes);
        self.bytes[4..8].copy_from_slice(&crc.to_be_bytes());
        self.bytes
    }
}

/// What a stored snapshot's header says (after its checksum was verified).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The last record the state includes.
    pub last_seq: Seq,
    /// The checksum of that record.
    pub record_crc: u32,
    /// The digest of the state.
    pub digest: Digest,
    /// The size of the encoded state, in bytes.
    pub payload_bytes: u64,
}

pub(crate) fn header_crc(bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[0..4]);
    hasher.update(&bytes[8..SNAPSHOT_HEADER_BYTES]);
    hasher.finalize()
}

/// Encodes a state as of record `last_seq`: checks its invariants, computes its digest and
/// rkyv-encodes it. Pure CPU work with no access to the journal: run it on another thread with
/// a clone of the state, then hand the result to [`crate::Journal::store_snapshot`].
pub fn encode_snapshot(state: &State, last_seq: Seq) -> Result<SnapshotBytes, SnapshotError> {
    state.check_invariants().map_err(SnapshotError::Invariant)?;
    if let Some(open) = state.interval_in_progress() {
        return Err(SnapshotError::InsideInterval(open.id));
    }
    encode_checked_state(state, last_seq)
}

/// [`encode_snapshot`] past its checks of the state: what only a test of the decoder's own
/// checks may call directly.
fn encode_checked_state(state: &State, last_seq: Seq) -> Result<SnapshotBytes, SnapshotError> {
    let digest = state.digest();
    let mut bytes = vec![0u8; SNAPSHOT_HEADER_BYTES];
    // The low-level serializer: the state shares no pointers, so no sharing map is needed.
    bytes = rkyv::util::with_arena(|arena| {
        rkyv::api::low::to_bytes_in_with_alloc::<_, _, rkyv::rancor::BoxedError>(
            state,
            bytes,
            arena.acquire(),
        )
    })
    .map_err(|e| SnapshotError::Encode(e.to_string()))?;
    if bytes.len() > SNAPSHOT_BYTES_MAX {
        return Err(SnapshotError::TooLarge { bytes: bytes.len(), max: SNAPSHOT_BYTES_MAX });
    }
    let payload = &bytes[SNAPSHOT_HEADER_BYTES..];
    let payload_crc = crc32fast::hash(payload);
    let payload_len = payload.len() as u64;
    bytes[0..2].copy_from_slice(&SNAPSHOT_FORMAT_VERSION.to_be_bytes());
    bytes[2..4].copy_from_slice(&engine::EVENT_FORMAT_VERSION.to_be_bytes());
    bytes[8..16].copy_from_slice(&last_seq.0.to_be_bytes());
    bytes[20..24].copy_from_slice(&payload_crc.to_be_bytes());
    bytes[24..32].copy_from_slice(&payload_len.to_be_bytes());
    bytes[32..64].copy_from_slice(&digest.0);
    Ok(SnapshotBytes { bytes, last_seq, digest })
}

/// Verifies a stored snapshot's header (version, checksum, key, length); does not read the
/// state bytes.
pub(crate) fn parse_header(key: u64, bytes: &[u8]) -> Result<SnapshotInfo, SnapshotInvalid> {
    let payload_bytes = bytes.len().saturating_sub(SNAPSHOT_HEADER_BYTES) as u64;
    parse_header_of(key, bytes, payload_bytes)
}

/// The state length a header row declares (0 when the row is too short to hold one; parsing
/// it then fails anyway).
pub(crate) fn declared_state_bytes(header: &[u8]) -> u64 {
    if header.len() < SNAPSHOT_HEADER_BYTES { 0 } else { be::u64_at(header, 24) }
}

/// [`parse_header`] for a header whose state bytes are stored apart from it (in parts): there
/// are `payload_bytes` of them.
pub(crate) fn parse_header_of(
    key: u64,
    bytes: &[u8],
    payload_bytes: u64,
) -> Result<SnapshotInfo, SnapshotInvalid> {
    if bytes.len() < SNAPSHOT_HEADER_BYTES {
        return Err(SnapshotInvalid::Truncated(bytes.len()));
    }
    // The checksum first: it covers the version too (every snapshot format keeps it there,
    // docs/JOURNAL.md), so a damaged version is damage, not a snapshot of another version.
    if be::u32_at(bytes, 4) != header_crc(bytes) {
        return Err(SnapshotInvalid::HeaderChecksum);
    }
    let format = be::u16_at(bytes, 0);
    if format != SNAPSHOT_FORMAT_VERSION {
        return Err(SnapshotInvalid::Format(format));
    }
    let event_format = be::u16_at(bytes, 2);
    if event_format != engine::EVENT_FORMAT_VERSION {
        return Err(SnapshotInvalid::EventFormat(event_format));
    }
    let last_seq = Seq(be::u64_at(bytes, 8));
    if last_seq.0 != key {
        return Err(SnapshotInvalid::KeyMismatch(last_seq));
    }
    let declared = be::u64_at(bytes, 24);
    let actual = payload_bytes;
    if declared != actual {
        return Err(SnapshotInvalid::Length { declared, actual });
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&bytes[32..64]);
    Ok(SnapshotInfo {
        last_seq,
        record_crc: be::u32_at(bytes, 16),
        digest: Digest(digest),
        payload_bytes: declared,
    })
}

/// Decodes and validates the state of a snapshot whose header passed [`parse_header`]: payload
/// checksum, bytecheck validation, digest and invariants. Never trusts the bytes.
pub(crate) fn decode_state(bytes: &[u8], info: &SnapshotInfo) -> Result<State, SnapshotInvalid> {
    let payload = &bytes[SNAPSHOT_HEADER_BYTES..];
    if crc32fast::hash(payload) != be::u32_at(bytes, 20) {
        return Err(SnapshotInvalid::PayloadChecksum);
    }
    let mut aligned = AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    let state = rkyv::from_bytes::<State, rkyv::rancor::BoxedError>(&aligned)
        .map_err(|e| SnapshotInvalid::Decode(e.to_string()))?;
    drop(aligned);
    let computed = state.digest();
    if computed != info.digest {
        return Err(SnapshotInvalid::Digest { stored: info.digest, computed });
    }
    state.check_invariants().map_err(SnapshotInvalid::Invariant)?;
    if let Some(open) = state.interval_in_progress() {
        return Err(SnapshotInvalid::InsideInterval(open.id));
    }
    Ok(state)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use engine::{Engine, Event, IntervalId, IntervalSettled, Symbol, Timestamp};

    fn state() -> State {
        let mut engine = Engine::new();
        engine.list_asset(Symbol::new("AAPL").unwrap(), Timestamp(1)).unwrap();
        engine.into_state()
    }

    #[test]
    fn round_trip() {
        let state = state();
        let snap = encode_snapshot(&state, Seq(1)).unwrap();
        let digest = snap.digest();
        let bytes = snap.seal(0x1234);
        let info = parse_header(1, &bytes).unwrap();
        assert_eq!(info.record_crc, 0x1234);
        assert_eq!(info.digest, digest);
        assert_eq!(decode_state(&bytes, &info).unwrap(), state);
    }

    #[test]
    fn damage_is_detected() {
        let bytes = encode_snapshot(&state(), Seq(1)).unwrap().seal(7);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            let ok = parse_header(1, &bad).and_then(|info| decode_state(&bad, &info));
            assert!(ok.is_err(), "byte {i}");
        }
        assert_eq!(parse_header(2, &bytes), Err(SnapshotInvalid::KeyMismatch(Seq(1))));
    }

    /// A snapshot of a state inside an interval (what no encoder of this crate makes any more,
    /// but an older build or a crafted file may hold) is refused when read: the outcomes of the
    /// rest of the interval would be lost between it and the records after it.
    #[test]
    fn a_snapshot_inside_an_interval_is_refused_when_read() {
        let mut inside = state();
        let settled =
            IntervalSettled { interval: IntervalId(1), at: Timestamp(2), ticks: vec![], orders: 1 };
        inside.apply(&Event::IntervalSettled(settled)).unwrap();
        assert!(matches!(
            encode_snapshot(&inside, Seq(2)),
            Err(SnapshotError::InsideInterval(IntervalId(1)))
        ));
        let bytes = encode_checked_state(&inside, Seq(2)).unwrap().seal(7);
        let info = parse_header(2, &bytes).unwrap();
        assert_eq!(
            decode_state(&bytes, &info),
            Err(SnapshotInvalid::InsideInterval(IntervalId(1)))
        );
    }

    /// A snapshot rewritten with valid checksums whose symbol keeps a byte after its end (what
    /// only a crafted file holds) passes bytecheck, but the symbol is rebuilt through
    /// `Symbol::new` while decoding: the snapshot is refused, not used.
    #[test]
    fn a_non_canonical_name_is_refused_even_with_valid_checksums() {
        let mut bytes = encode_snapshot(&state(), Seq(1)).unwrap().seal(7);
        let payload = SNAPSHOT_HEADER_BYTES;
        let at = bytes[payload..].windows(4).position(|w| w == b"AAPL").unwrap() + payload;
        bytes[at + 6] = b'X';
        let payload_crc = crc32fast::hash(&bytes[payload..]);
        bytes[20..24].copy_from_slice(&payload_crc.to_be_bytes());
        let crc = header_crc(&bytes);
        bytes[4..8].copy_from_slice(&crc.to_be_bytes());
        let info = parse_header(1, &bytes).unwrap();
        match decode_state(&bytes, &info) {
            Err(SnapshotInvalid::Decode(why)) => assert!(why.contains("canonical"), "{why}"),
            other => panic!("expected a decode error, got {other:?}"),
        }
    }
}
