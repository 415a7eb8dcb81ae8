//! The record: one event with its sequence number, versions, time, link and checksum.
//!
//! This build writes records in layout 2 (`crate::batch`: one header per batch, then per record
//! a length, a chained checksum and a format-3 payload). Layout 1, below, is what earlier builds
//! wrote, one header per record; it is still read. Integers big-endian, documented in
//! `docs/JOURNAL.md`:
//!
//! ```text
//! offset size field
//!      0    2 record_format   RECORD_FORMAT_VERSION
//!      2    2 event_format    how the payload encodes the event: RKYV_EVENT_FORMAT (1, read
//!                             only) or payload::COMPACT_EVENT_FORMAT (2, read only)
//!      4    8 seq             u64, 1 for the first record
//!     12    8 recorded_at     i64 microseconds since the epoch (the master's wall clock)
//!     20    4 prev_crc        the crc of record seq - 1 (0 for record 1): the chain link
//!     24    4 payload_len     u32
//!     28    4 crc             crc32 of bytes 0..28 followed by the payload
//!     32    n payload         the encoded engine::Event
//! ```

use std::fmt;

use engine::{Event, Timestamp};
use rkyv::util::AlignedVec;

use crate::be;
use crate::error::Corruption;
#[cfg(any(test, feature = "test-util"))]
use crate::limits::EVENT_BYTES_MAX;
use crate::payload::{self, COMPACT_EVENT_FORMAT};

/// Version of the record layout above; in every layout-1 record.
pub const RECORD_FORMAT_VERSION: u16 = 1;
/// Version of the batch layout this build writes (`crate::batch`), in the first two bytes of
/// each batch, where a layout-1 batch has its first record's `record_format`.
pub const BATCH_LAYOUT_VERSION: u16 = 2;
/// The `event_format` of records written before the compact encoding: the payload is the rkyv
/// archive of `engine::Event` at `engine::EVENT_FORMAT_VERSION` 1. Still read, never written.
pub const RKYV_EVENT_FORMAT: u16 = 1;
/// The `event_format` this build writes (in layout-2 batches).
pub const WRITTEN_EVENT_FORMAT: u16 = payload::BATCH_EVENT_FORMAT;
// The format-1 reader decodes with today's rkyv layout of `engine::Event`: a new layout must
// keep a reader for the old one before it changes this.
const _: () = assert!(engine::EVENT_FORMAT_VERSION == RKYV_EVENT_FORMAT);
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

/// The checksum of a record: its header without the crc field, then its payload.
pub(crate) fn record_crc(record: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&record[..28]);
    hasher.update(&record[RECORD_HEADER_BYTES..]);
    hasher.finalize()
}

/// Encodes `event` with rkyv (the format-1 payload) into `scratch`: only to write old-format
/// records in tests.
#[cfg(any(test, feature = "test-util"))]
pub(crate) fn encode_event_rkyv<'s>(
    event: &Event,
    scratch: &'s mut AlignedVec,
) -> Result<&'s [u8], String> {
    scratch.clear();
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

/// Fills in the header of the record that starts at `start` in `out` (its payload already
/// written after the 32 header bytes) and returns its checksum, or `None` when the payload is
/// over `EVENT_BYTES_MAX`.
#[cfg(any(test, feature = "test-util"))]
fn seal_record(
    out: &mut [u8],
    start: usize,
    event_format: u16,
    seq: Seq,
    recorded_at: Timestamp,
    prev_crc: u32,
) -> Option<u32> {
    let payload_len = out.len().checked_sub(start + RECORD_HEADER_BYTES)?;
    if payload_len > EVENT_BYTES_MAX {
        return None;
    }
    let payload_len = u32::try_from(payload_len).ok()?;
    let header = &mut out[start..start + RECORD_HEADER_BYTES];
    header[0..2].copy_from_slice(&RECORD_FORMAT_VERSION.to_be_bytes());
    header[2..4].copy_from_slice(&event_format.to_be_bytes());
    header[4..12].copy_from_slice(&seq.0.to_be_bytes());
    header[12..20].copy_from_slice(&recorded_at.0.to_be_bytes());
    header[20..24].copy_from_slice(&prev_crc.to_be_bytes());
    header[24..28].copy_from_slice(&payload_len.to_be_bytes());
    let crc = record_crc(&out[start..]);
    out[start + 28..start + 32].copy_from_slice(&crc.to_be_bytes());
    Some(crc)
}

/// Appends the layout-1 record of `event` (format-2 payload, as the builds before layout 2
/// wrote) to `out` and returns its checksum, or `Err(payload bytes)` (leaving `out` as it was)
/// when the payload is over `EVENT_BYTES_MAX`. Only to write such records in tests.
#[cfg(any(test, feature = "test-util"))]
pub(crate) fn append_record(
    out: &mut Vec<u8>,
    seq: Seq,
    recorded_at: Timestamp,
    prev_crc: u32,
    event: &Event,
) -> Result<u32, usize> {
    let start = out.len();
    out.resize(start + RECORD_HEADER_BYTES, 0);
    payload::encode(event, out);
    match seal_record(out, start, COMPACT_EVENT_FORMAT, seq, recorded_at, prev_crc) {
        Some(crc) => Ok(crc),
        None => {
            let bytes = out.len() - start - RECORD_HEADER_BYTES;
            out.truncate(start);
            Err(bytes)
        }
    }
}

/// Appends one record with the given payload and `event_format` to `out` and returns its
/// checksum, or `None` (writing nothing) when the payload is over `EVENT_BYTES_MAX`.
#[cfg(any(test, feature = "test-util"))]
pub(crate) fn write_record(
    out: &mut Vec<u8>,
    event_format: u16,
    seq: Seq,
    recorded_at: Timestamp,
    prev_crc: u32,
    payload: &[u8],
) -> Option<u32> {
    if payload.len() > EVENT_BYTES_MAX {
        return None;
    }
    let start = out.len();
    out.resize(start + RECORD_HEADER_BYTES, 0);
    out.extend_from_slice(payload);
    seal_record(out, start, event_format, seq, recorded_at, prev_crc)
}

/// The length of the record at the start of `rest` (header and payload), from its header,
/// checked against the bytes present. The checksum is not verified yet.
pub(crate) fn record_len(rest: &[u8]) -> Result<usize, Corruption> {
    if rest.len() < RECORD_HEADER_BYTES {
        return Err(Corruption::Truncated(rest.len()));
    }
    let record_format = be::u16_at(rest, 0);
    if record_format != RECORD_FORMAT_VERSION {
        return Err(Corruption::RecordFormat(record_format));
    }
    let declared = u64::from(be::u32_at(rest, 24));
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
    let record_format = be::u16_at(bytes, 0);
    if record_format != RECORD_FORMAT_VERSION {
        return Err(Corruption::RecordFormat(record_format));
    }
    let stored = be::u32_at(bytes, 28);
    let computed = record_crc(bytes);
    if stored != computed {
        return Err(Corruption::Checksum { stored, computed });
    }
    let declared = u64::from(be::u32_at(bytes, 24));
    let actual = (bytes.len() - RECORD_HEADER_BYTES) as u64;
    if declared != actual {
        return Err(Corruption::Length { declared, actual });
    }
    let (seq, link) = check_place(bytes, key, prev_crc)?;
    let event_format = be::u16_at(bytes, 2);
    if event_format != COMPACT_EVENT_FORMAT && event_format != RKYV_EVENT_FORMAT {
        return Err(Corruption::EventFormat(event_format));
    }
    let recorded_at = Timestamp(be::i64_at(bytes, 12));
    Ok(Header { seq, recorded_at, prev_crc: link, crc: stored })
}

/// Checks where a stored header says it belongs, at the offsets both layouts share (a layout-1
/// record's header, a layout-2 batch's header): its sequence number (offset 4) must be `key`,
/// and its link (offset 20) the checksum of the record before it, when that is known. Returns
/// both. `bytes` holds at least the 24 bytes read.
pub(crate) fn check_place(
    bytes: &[u8],
    key: u64,
    prev_crc: Option<u32>,
) -> Result<(Seq, u32), Corruption> {
    let seq = Seq(be::u64_at(bytes, 4));
    if seq.0 != key {
        return Err(Corruption::SeqMismatch(seq));
    }
    let link = be::u32_at(bytes, 20);
    if let Some(expected) = prev_crc
        && link != expected
    {
        return Err(Corruption::BrokenLink { expected, found: link });
    }
    Ok((seq, link))
}

/// Decodes a verified record's event (its event format is in the header, its payload after it).
pub(crate) fn decode_event(bytes: &[u8], aligned: &mut AlignedVec) -> Result<Event, Corruption> {
    decode_payload(be::u16_at(bytes, 2), &bytes[RECORD_HEADER_BYTES..], aligned)
}

/// Decodes an event payload of event format `format`. A compact payload is decoded in place; a
/// format-1 (rkyv) payload is copied into `aligned` (rkyv needs aligned bytes) and validated
/// with bytecheck before it is deserialized. Public for the fuzz target (`fuzz/`), which feeds
/// it arbitrary bytes: any input gives an event or an error, never a panic.
pub fn decode_payload(
    format: u16,
    payload: &[u8],
    aligned: &mut AlignedVec,
) -> Result<Event, Corruption> {
    match format {
        COMPACT_EVENT_FORMAT => {
            payload::decode(payload).map_err(|e| Corruption::Payload(e.to_string()))
        }
        RKYV_EVENT_FORMAT => {
            aligned.clear();
            aligned.extend_from_slice(payload);
            rkyv::from_bytes::<Event, rkyv::rancor::BoxedError>(aligned)
                .map_err(|e| Corruption::Payload(e.to_string()))
        }
        other => Err(Corruption::EventFormat(other)),
    }
}

/// Encodes `events` as the batch this build stores (layout 2, `crate::batch`): records from
/// `first`, appended at `recorded_at`, chained onto `prev_crc`. Public for the fuzz target and
/// tests; the journal encodes its batches with the same code.
pub fn encode_batch(
    first: Seq,
    recorded_at: Timestamp,
    prev_crc: u32,
    events: &[Event],
) -> Result<Vec<u8>, crate::error::AppendError> {
    let mut out = Vec::new();
    crate::batch::encode(
        &mut out,
        &mut payload::WorkerTable::default(),
        first,
        recorded_at,
        prev_crc,
        events,
    )?;
    Ok(out)
}

/// Verifies and decodes every record of a stored batch (either layout) stored under `key`, the
/// way the journal reads it; the error names the record at fault. Public for the fuzz target
/// (any bytes give records or an error, never a panic) and tests.
pub fn decode_batch(key: u64, bytes: &[u8]) -> Result<Vec<Record>, (Seq, Corruption)> {
    let mut cursor = crate::batch::Cursor::open(key, bytes, None)?;
    let mut aligned = AlignedVec::new();
    let mut records = Vec::new();
    while !cursor.at_end(bytes) {
        let at = cursor.next_seq();
        let found = cursor.step(bytes).map_err(|c| (at, c))?;
        let event = cursor.decode(bytes, &found, &mut aligned).map_err(|c| (at, c))?;
        let Header { seq, recorded_at, crc, .. } = found.header;
        records.push(Record { seq, recorded_at, crc, event });
        if seq.0 == u64::MAX {
            break;
        }
    }
    Ok(records)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use engine::{AssetListed, Symbol};

    fn listed() -> Event {
        Event::AssetListed(AssetListed {
            symbol: Symbol::new("AAPL").unwrap(),
            at: Timestamp(1_700_000_000_000_000),
        })
    }

    fn sample() -> (Vec<u8>, u32) {
        let mut out = Vec::new();
        let crc = append_record(&mut out, Seq(7), Timestamp(42), 0xdead_beef, &listed()).unwrap();
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
        assert_eq!(decode_event(&bytes, &mut aligned).unwrap(), listed());
    }

    #[test]
    fn the_documented_example() {
        // docs/JOURNAL.md: record 1, an AssetListed, appended at 1,700,000,000 s.
        let mut out = Vec::new();
        append_record(&mut out, Seq(1), Timestamp(1_700_000_000_000_000), GENESIS_LINK, &listed())
            .unwrap();
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(&hex[..56], "00010002000000000000000100060a24181e4000000000000000000e");
        assert_eq!(&hex[64..], "01044141504c8080f28183898506");
    }

    #[test]
    fn format_1_records_are_still_read() {
        // rkyv gives every variant the size of the largest: a change here changes every
        // format-1 record, which this build could then no longer read.
        let mut scratch = AlignedVec::new();
        let payload = encode_event_rkyv(&listed(), &mut scratch).unwrap().to_vec();
        assert_eq!(payload.len(), 160, "the archived layout of engine::Event changed");
        let mut out = Vec::new();
        let crc =
            write_record(&mut out, RKYV_EVENT_FORMAT, Seq(3), Timestamp(9), 5, &payload).unwrap();
        assert_eq!(verify(3, &out, Some(5)).unwrap().crc, crc);
        let mut aligned = AlignedVec::new();
        assert_eq!(decode_event(&out, &mut aligned).unwrap(), listed());
    }

    #[test]
    fn an_unknown_event_format_is_refused() {
        // Format 3 is read only in layout-2 batches (its payloads need their batch's context).
        for format in [3u16, 4] {
            let (mut bytes, _) = sample();
            bytes[2..4].copy_from_slice(&format.to_be_bytes());
            let crc = record_crc(&bytes);
            bytes[28..32].copy_from_slice(&crc.to_be_bytes());
            assert_eq!(verify(7, &bytes, None), Err(Corruption::EventFormat(format)));
        }
        assert_eq!(
            Corruption::EventFormat(4).to_string(),
            "event format version 4 is not supported (this build reads 1, 2 and 3)"
        );
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
