//! The record: one event with its sequence number, versions, time, link and checksum.
//!
//! Layout (integers big-endian), documented in `docs/JOURNAL.md`:
//!
//! ```text
//! offset size field
//!      0    2 record_format   RECORD_FORMAT_VERSION
//!      2    2 event_format    engine::EVENT_FORMAT_VERSION
//!      4    8 seq             u64, 1 for the first record
//!     12    8 recorded_at     i64 microseconds since the epoch (the master's wall clock)
//!     20    4 prev_crc        the crc of record seq - 1 (0 for record 1): the chain link
//!     24    4 payload_len     u32
//!     28    4 crc             crc32 of bytes 0..28 followed by the payload
//!     32    n payload         the rkyv encoding of the engine::Event
//! ```

use std::fmt;

use engine::{Event, Timestamp};
use rkyv::util::AlignedVec;

use crate::error::Corruption;
use crate::limits::EVENT_BYTES_MAX;

/// Version of the record layout above; in every record.
pub const RECORD_FORMAT_VERSION: u16 = 1;
/// Size of the record header, in bytes.
pub const RECORD_HEADER_BYTES: usize = 32;
/// The link stored in record 1: there is no record 0.
pub const GENESIS_LINK: u32 = 0;

/// A record's sequence number: 1 for the first record, one more for each next one. `Seq(0)`
/// stands for "before the first record".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Seq(pub u64);

impl Seq {
    /// The number after this one, or `None` at `u64::MAX`.
    pub fn next(self) -> Option<Seq> {
        self.0.checked_add(1).map(Seq)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its sequence number.
    pub seq: Seq,
    /// The wall-clock time its batch was appended at.
    pub recorded_at: Timestamp,
    /// Its checksum (the next record links to it).
    pub crc: u32,
    /// The event.
    pub event: Event,
}

/// The header fields of a verified record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub seq: Seq,
    pub recorded_at: Timestamp,
    pub prev_crc: u32,
    pub crc: u32,
}

fn be_u16(bytes: &[u8], at: usize) -> u16 {
    let mut b = [0u8; 2];
    b.copy_from_slice(&bytes[at..at + 2]);
    u16::from_be_bytes(b)
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(b)
}

fn be_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(b)
}

fn be_i64(bytes: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    i64::from_be_bytes(b)
}

/// The checksum of a record: its header without the crc field, then its payload.
pub(crate) fn record_crc(record: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&record[..28]);
    hasher.update(&record[RECORD_HEADER_BYTES..]);
    hasher.finalize()
}

/// Encodes `event` with rkyv into `scratch` (reused between calls).
pub(crate) fn encode_event<'s>(
    event: &Event,
    scratch: &'s mut AlignedVec,
) -> Result<&'s [u8], String> {
    scratch.clear();
    // The low-level serializer: events share no pointers, so no sharing map is needed.
    rkyv::util::with_arena(|arena| {
        rkyv::api::low::to_bytes_in_with_alloc::<_, _, rkyv::rancor::Error>(
            event,
            &mut *scratch,
            arena.acquire(),
        )
        .map(|_| ())
    })
    .map_err(|e| e.to_string())?;
    Ok(scratch.as_slice())
}

/// Appends one record to `out` and returns its checksum, or `None` (writing nothing) when the
/// payload is over `EVENT_BYTES_MAX`.
pub(crate) fn write_record(
    out: &mut Vec<u8>,
    seq: Seq,
    recorded_at: Timestamp,
    prev_crc: u32,
    payload: &[u8],
) -> Option<u32> {
    if payload.len() > EVENT_BYTES_MAX {
        return None;
    }
    let payload_len = u32::try_from(payload.len()).ok()?;
    let start = out.len();
    out.extend_from_slice(&RECORD_FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&engine::EVENT_FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&seq.0.to_be_bytes());
    out.extend_from_slice(&recorded_at.0.to_be_bytes());
    out.extend_from_slice(&prev_crc.to_be_bytes());
    out.extend_from_slice(&payload_len.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(payload);
    let crc = record_crc(&out[start..]);
    out[start + 28..start + 32].copy_from_slice(&crc.to_be_bytes());
    Some(crc)
}

/// The length of the record at the start of `rest` (header and payload), from its header,
/// checked against the bytes present. The checksum is not verified yet.
pub(crate) fn record_len(rest: &[u8]) -> Result<usize, Corruption> {
    if rest.len() < RECORD_HEADER_BYTES {
        return Err(Corruption::Truncated(rest.len()));
    }
    let record_format = be_u16(rest, 0);
    if record_format != RECORD_FORMAT_VERSION {
        return Err(Corruption::RecordFormat(record_format));
    }
    let declared = u64::from(be_u32(rest, 24));
    let actual = (rest.len() - RECORD_HEADER_BYTES) as u64;
    if declared > actual {
        return Err(Corruption::Length { declared, actual });
    }
    // declared <= actual, and actual came from a usize.
    Ok(RECORD_HEADER_BYTES + usize::try_from(declared).unwrap_or(usize::MAX - RECORD_HEADER_BYTES))
}

/// Verifies a stored record's layout, checksum, sequence number and link, without decoding
/// the event. `key` is the sequence number expected at its place; `prev_crc` the checksum of
/// the record before it, when known. `bytes` is exactly the record (see [`record_len`]).
pub(crate) fn verify(key: u64, bytes: &[u8], prev_crc: Option<u32>) -> Result<Header, Corruption> {
    if bytes.len() < RECORD_HEADER_BYTES {
        return Err(Corruption::Truncated(bytes.len()));
    }
    let record_format = be_u16(bytes, 0);
    if record_format != RECORD_FORMAT_VERSION {
        return Err(Corruption::RecordFormat(record_format));
    }
    let stored = be_u32(bytes, 28);
    let computed = record_crc(bytes);
    if stored != computed {
        return Err(Corruption::Checksum { stored, computed });
    }
    let declared = u64::from(be_u32(bytes, 24));
    let actual = (bytes.len() - RECORD_HEADER_BYTES) as u64;
    if declared != actual {
        return Err(Corruption::Length { declared, actual });
    }
    let seq = Seq(be_u64(bytes, 4));
    if seq.0 != key {
        return Err(Corruption::SeqMismatch(seq));
    }
    let link = be_u32(bytes, 20);
    if let Some(expected) = prev_crc
        && link != expected
    {
        return Err(Corruption::BrokenLink { expected, found: link });
    }
    let event_format = be_u16(bytes, 2);
    if event_format != engine::EVENT_FORMAT_VERSION {
        return Err(Corruption::EventFormat(event_format));
    }
    let recorded_at = Timestamp(be_i64(bytes, 12));
    Ok(Header { seq, recorded_at, prev_crc: link, crc: stored })
}

/// Decodes a verified record's event: copies the payload into `aligned` (rkyv needs aligned
/// bytes) and validates it with bytecheck before deserializing.
pub(crate) fn decode_event(bytes: &[u8], aligned: &mut AlignedVec) -> Result<Event, Corruption> {
    aligned.clear();
    aligned.extend_from_slice(&bytes[RECORD_HEADER_BYTES..]);
    rkyv::from_bytes::<Event, rkyv::rancor::Error>(aligned)
        .map_err(|e| Corruption::Payload(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use engine::{AssetListed, Symbol};

    fn sample() -> (Vec<u8>, u32) {
        let event = Event::AssetListed(AssetListed {
            symbol: Symbol::new("AAPL").unwrap(),
            at: Timestamp(1_700_000_000_000_000),
        });
        let mut scratch = AlignedVec::new();
        let payload = encode_event(&event, &mut scratch).unwrap().to_vec();
        let mut out = Vec::new();
        let crc = write_record(&mut out, Seq(7), Timestamp(42), 0xdead_beef, &payload).unwrap();
        (out, crc)
    }

    #[test]
    fn round_trip() {
        let (bytes, crc) = sample();
        let header = verify(7, &bytes, Some(0xdead_beef)).unwrap();
        assert_eq!(
            header,
            Header { seq: Seq(7), recorded_at: Timestamp(42), prev_crc: 0xdead_beef, crc }
        );
        let mut aligned = AlignedVec::new();
        assert!(matches!(decode_event(&bytes, &mut aligned).unwrap(), Event::AssetListed(_)));
    }

    #[test]
    fn the_documented_example_header() {
        // docs/JOURNAL.md: record 1, an AssetListed, appended at 1,700,000,000 s.
        let event = Event::AssetListed(AssetListed {
            symbol: Symbol::new("AAPL").unwrap(),
            at: Timestamp(1_700_000_000_000_000),
        });
        let mut scratch = AlignedVec::new();
        let payload = encode_event(&event, &mut scratch).unwrap().to_vec();
        let mut out = Vec::new();
        write_record(&mut out, Seq(1), Timestamp(1_700_000_000_000_000), GENESIS_LINK, &payload)
            .unwrap();
        let hex: String = out[..28].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "00010001000000000000000100060a24181e400000000000000000a0");
        // rkyv gives every variant the size of the largest: a change here changes every stored
        // record, which needs a new engine::EVENT_FORMAT_VERSION.
        assert_eq!(payload.len(), 160, "the archived layout of engine::Event changed");
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let (bytes, _) = sample();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(verify(7, &bad, Some(0xdead_beef)).is_err(), "byte {i}");
        }
    }

    #[test]
    fn wrong_key_and_link_are_detected() {
        let (bytes, _) = sample();
        assert_eq!(verify(8, &bytes, None), Err(Corruption::SeqMismatch(Seq(7))));
        assert!(matches!(verify(7, &bytes, Some(1)), Err(Corruption::BrokenLink { .. })));
        assert_eq!(verify(7, &bytes[..10], None), Err(Corruption::Truncated(10)));
        assert!(matches!(verify(7, &bytes[..40], None), Err(Corruption::Checksum { .. })));
    }
}
