//! Batches: the records of one append, stored as one redb value under the sequence number of
//! the batch's first record. One value per durable transaction keeps the B-tree small and the
//! commit close to a plain `write` + `fdatasync` of the same bytes.
//!
//! A batch is in one of two layouts, told apart by its first two bytes (big-endian):
//!
//! - **layout 1** (written by earlier builds, still read): records back to back, each with its
//!   own 32-byte header (`crate::record`), whose first field, `record_format`, is 1;
//! - **layout 2** (written): what every record of a batch shares is written once, in a header:
//!
//! ```text
//! offset size field
//!      0    2 layout          BATCH_LAYOUT_VERSION (2)
//!      2    2 event_format    payload::BATCH_EVENT_FORMAT (3)
//!      4    8 first_seq       the seq of the first record (the batch's key)
//!     12    8 recorded_at     i64 microseconds since the epoch (the master's wall clock)
//!     20    4 prev_crc        the crc of record first_seq - 1 (0 for record 1): the chain link
//!     24    4 count           records in the batch, at least 1
//!     28    4 table_len       bytes of the worker table at the batch's end, a multiple of 16
//!     32    4 header_crc      crc32 of bytes 0..32 followed by the worker table
//!     36      records         per record: its payload length `u` (LEB128, shortest form), its
//!                             `crc` (u32), its format-3 payload (`crate::payload`: written
//!                             against the batch's time and worker table)
//!  end-n    n worker table    the distinct workers of the batch's orders in the order of their
//!                             first use, 16 bytes each, big-endian
//! ```
//!
//!   The table comes last so that the batch is encoded in one pass over its events.
//!   A record's `crc` is the crc32 of its payload continued from the previous record's `crc`
//!   (for the first record, `prev_crc`), as if the payload followed the bytes that `crc`
//!   covers: the chain is in the checksums.

use std::ops::Range;

use engine::{Event, Timestamp, WorkerId};
use redb::{AccessGuard, ReadableTable};
use rkyv::util::AlignedVec;

use crate::be;
use crate::error::{AppendError, Corruption};
use crate::limits::EVENT_BYTES_MAX;
use crate::payload::{
    self, BATCH_EVENT_FORMAT, Context, RECORD_WINDOW_BYTES, RECORD_WINDOW_SLACK, RecordWindow,
    WorkerTable,
};
use crate::record::{self, BATCH_LAYOUT_VERSION, Header, RECORD_FORMAT_VERSION, Seq};

/// Size of a layout-2 batch header.
pub const BATCH_HEADER_BYTES: usize = 36;
/// Where the header's checksum lies (it covers the bytes before it and the worker table).
const HEADER_CRC_AT: usize = 32;
/// Size of one worker in a layout-2 batch's worker table.
const WORKER_BYTES: usize = 16;
/// The longest payload length varint: `EVENT_BYTES_MAX` takes four groups of seven bits.
const LENGTH_BYTES_MAX: usize = 4;
const _: () = assert!(EVENT_BYTES_MAX < 1 << (7 * LENGTH_BYTES_MAX));
/// A record whose payload is shorter than 128 bytes: its one-byte length and its checksum.
const SHORT_HEAD: usize = 1 + 4;
/// Room kept in the batch's vector past the last record while encoding: one record's head and
/// a [`RecordWindow`].
const RECORD_WINDOW: usize = SHORT_HEAD + RECORD_WINDOW_BYTES + RECORD_WINDOW_SLACK;
/// How much the batch's vector is lengthened at a time while encoding (zeros, cut at the end).
const GROW_BYTES: usize = 8 * 1024;

/// The checksum of a layout-2 record: the crc32 of its payload continued from the previous
/// record's checksum, as if the payload followed the bytes that checksum covers.
fn chained_crc(prev_crc: u32, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new_with_initial(prev_crc);
    hasher.update(payload);
    hasher.finalize()
}

/// The checksum of a layout-2 header: its bytes before the checksum, then its worker table.
fn header_crc(header: &[u8], table: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[..HEADER_CRC_AT]);
    hasher.update(table);
    hasher.finalize()
}

/// Encodes `events` as one layout-2 batch into `out` (cleared first), its first record `first`,
/// chained onto `prev_crc`. `workers` is scratch space for the worker table. Returns the last
/// record's sequence number and checksum. On an error `out` holds unspecified bytes.
pub(crate) fn encode(
    out: &mut Vec<u8>,
    workers: &mut WorkerTable,
    first: Seq,
    recorded_at: Timestamp,
    prev_crc: u32,
    events: &[Event],
) -> Result<(Seq, u32), AppendError> {
    out.clear();
    workers.clear();
    out.extend_from_slice(&BATCH_LAYOUT_VERSION.to_be_bytes());
    out.extend_from_slice(&BATCH_EVENT_FORMAT.to_be_bytes());
    out.extend_from_slice(&first.0.to_be_bytes());
    out.extend_from_slice(&recorded_at.0.to_be_bytes());
    out.extend_from_slice(&prev_crc.to_be_bytes());
    let too_many = || AppendError::BatchTooLarge(events.len());
    let count = u32::try_from(events.len()).map_err(|_| too_many())?;
    out.extend_from_slice(&count.to_be_bytes());
    // The table's length and the header's checksum, once the records are written.
    out.extend_from_slice(&[0; 8]);

    let (mut seq, mut crc) = (Seq(first.0.checked_sub(1).ok_or_else(too_many)?), prev_crc);
    // The chain is one crc32 running over the payloads: each record's checksum is its value
    // after that record's payload (what `chained_crc` of the previous checksum gives).
    let mut chain = crc32fast::Hasher::new_with_initial(prev_crc);
    let mut long = Vec::new();
    // Records are written straight into `out`, which is kept a window longer than what is
    // written (`at`) and cut to it at the end.
    let mut at = out.len();
    for (index, event) in events.iter().enumerate() {
        seq = seq.next().ok_or_else(too_many)?;
        if out.len() < at + RECORD_WINDOW {
            out.resize(at + RECORD_WINDOW.max(GROW_BYTES), 0);
        }
        // An order's outcome (nearly every record) is written in place, after room for a
        // one-byte length and the checksum, which then go in front of it.
        let window = &mut out[at..at + RECORD_WINDOW];
        let (head, rest) = window.split_at_mut(SHORT_HEAD);
        if matches!(event, Event::OrderFilled(_) | Event::OrderRejected(_))
            && let Some(len) = RecordWindow::encode_in(rest, event, recorded_at, workers)
            && len < 0x80
        {
            chain.update(&rest[..len]);
            crc = chain.clone().finalize();
            head[0] = u8::try_from(len).unwrap_or(0);
            head[1..].copy_from_slice(&crc.to_be_bytes());
            at += SHORT_HEAD + len;
            continue;
        }
        // Other events, and an outcome of 128 bytes or more (extreme values; encoded again,
        // the same bytes): written to `long`, then copied in with a length of its size.
        long.clear();
        payload::encode_in(event, &mut long, recorded_at, workers);
        let len = long.len();
        if len > EVENT_BYTES_MAX {
            return Err(AppendError::EventTooLarge { index, bytes: len });
        }
        chain.update(&long);
        crc = chain.clone().finalize();
        let mut prefix = [0u8; LENGTH_BYTES_MAX];
        let prefix_len = length_varint(len, &mut prefix);
        let record_len = prefix_len + 4 + len;
        if out.len() < at + record_len {
            out.resize(at + record_len, 0);
        }
        let record = &mut out[at..at + record_len];
        record[..prefix_len].copy_from_slice(&prefix[..prefix_len]);
        record[prefix_len..prefix_len + 4].copy_from_slice(&crc.to_be_bytes());
        record[prefix_len + 4..].copy_from_slice(&long);
        at += record_len;
    }
    out.truncate(at);
    let table_start = out.len();
    for worker in workers.ids() {
        out.extend_from_slice(&worker.0.to_be_bytes());
    }
    let table_len = out.len() - table_start;
    let table_len =
        u32::try_from(table_len).map_err(|_| AppendError::BatchBytesTooLarge(out.len()))?;
    out[28..32].copy_from_slice(&table_len.to_be_bytes());
    let header = header_crc(&out[..BATCH_HEADER_BYTES], &out[table_start..]);
    out[HEADER_CRC_AT..HEADER_CRC_AT + 4].copy_from_slice(&header.to_be_bytes());
    Ok((seq, crc))
}

/// Recomputes the header checksum of the layout-2 batch `bytes` (for tests that change a
/// header field as another writer would have written it).
#[cfg(any(test, feature = "test-util"))]
pub(crate) fn reseal_header(bytes: &mut [u8]) -> Result<(), String> {
    if bytes.len() < BATCH_HEADER_BYTES {
        return Err("shorter than a batch header".into());
    }
    let table_len = usize::try_from(be::u32_at(bytes, 28)).unwrap_or(usize::MAX);
    let table_start = bytes.len().checked_sub(table_len).ok_or("the table does not fit")?;
    let crc = header_crc(&bytes[..BATCH_HEADER_BYTES], &bytes[table_start..]);
    bytes[HEADER_CRC_AT..HEADER_CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Writes `len` as a LEB128 varint into `out`; returns its size.
fn length_varint(len: usize, out: &mut [u8; LENGTH_BYTES_MAX]) -> usize {
    let mut n = len;
    let mut at = 0;
    while n >= 0x80 && at < LENGTH_BYTES_MAX - 1 {
        out[at] = (n.to_le_bytes()[0] & 0x7f) | 0x80;
        n >>= 7;
        at += 1;
    }
    out[at] = n.to_le_bytes()[0];
    at + 1
}

/// Reads a payload length varint at the start of `bytes`: the length and the varint's size.
fn read_length(bytes: &[u8]) -> Result<(usize, usize), Corruption> {
    let mut n = 0usize;
    for (at, &b) in bytes.iter().take(LENGTH_BYTES_MAX).enumerate() {
        n |= usize::from(b & 0x7f) << (7 * at);
        if b & 0x80 == 0 {
            if b == 0 && at > 0 {
                return Err(Corruption::Framing("a record length not in its shortest form".into()));
            }
            if n > EVENT_BYTES_MAX {
                return Err(Corruption::Framing(format!("a record length of {n} bytes")));
            }
            return Ok((n, at + 1));
        }
    }
    if bytes.len() < LENGTH_BYTES_MAX {
        Err(Corruption::Truncated(bytes.len()))
    } else {
        Err(Corruption::Framing("a record length over four bytes".into()))
    }
}

/// How a batch's records are laid out.
#[derive(Debug, Clone)]
enum Layout {
    /// Layout 1: each record with its own header.
    Records,
    /// Layout 2: what the batch header says.
    Batch {
        /// The batch's time.
        recorded_at: Timestamp,
        /// Its worker table.
        workers: Vec<WorkerId>,
        /// Where its records end (its worker table begins).
        end: usize,
        /// How many of its records are still to be read.
        left: u32,
    },
}

/// One record found by [`Cursor::step`]: its verified header and where its bytes are.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    /// The verified header fields.
    pub header: Header,
    /// The whole record (layout 1) or its payload (layout 2), in the batch's bytes.
    bytes: Range<usize>,
}

/// A reader of one stored batch, record by record, verifying each one: its checksum, its
/// sequence number and its link to the record before it.
#[derive(Debug, Clone)]
pub(crate) struct Cursor {
    layout: Layout,
    /// Byte offset of the next record.
    offset: usize,
    /// The sequence number of the next record.
    next: Seq,
    /// The checksum the next record must chain onto, when known.
    prev_crc: Option<u32>,
}

impl Cursor {
    /// Opens the batch stored under `key`, checking its header (layout 2) and, when `prev_crc`
    /// is given, that its first record chains onto it.
    pub(crate) fn open(
        key: u64,
        bytes: &[u8],
        prev_crc: Option<u32>,
    ) -> Result<Cursor, (Seq, Corruption)> {
        let at = Seq(key);
        if key == 0 {
            // Sequence numbers start at 1: no batch is ever stored under 0.
            return Err((at, Corruption::Framing("a batch stored under key 0".into())));
        }
        if bytes.len() < 2 {
            return Err((at, Corruption::Truncated(bytes.len())));
        }
        match be::u16_at(bytes, 0) {
            RECORD_FORMAT_VERSION => {
                Ok(Cursor { layout: Layout::Records, offset: 0, next: at, prev_crc })
            }
            BATCH_LAYOUT_VERSION => Self::open_layout_2(key, bytes, prev_crc).map_err(|c| (at, c)),
            other => Err((at, Corruption::RecordFormat(other))),
        }
    }

    fn open_layout_2(key: u64, bytes: &[u8], prev: Option<u32>) -> Result<Cursor, Corruption> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return Err(Corruption::Truncated(bytes.len()));
        }
        let table_len = usize::try_from(be::u32_at(bytes, 28)).unwrap_or(usize::MAX);
        let table_start = bytes.len().checked_sub(table_len).filter(|&s| s >= BATCH_HEADER_BYTES);
        let Some(table_start) = table_start else {
            return Err(Corruption::Framing(format!(
                "a worker table of {table_len} bytes in a batch of {}",
                bytes.len()
            )));
        };
        let table = &bytes[table_start..];
        let stored = be::u32_at(bytes, HEADER_CRC_AT);
        let computed = header_crc(&bytes[..BATCH_HEADER_BYTES], table);
        if stored != computed {
            return Err(Corruption::Checksum { stored, computed });
        }
        let event_format = be::u16_at(bytes, 2);
        if event_format != BATCH_EVENT_FORMAT {
            return Err(Corruption::EventFormat(event_format));
        }
        let (first, link) = record::check_place(bytes, key, prev)?;
        if table_len % WORKER_BYTES != 0 {
            return Err(Corruption::Framing(format!("a worker table of {table_len} bytes")));
        }
        let workers: Vec<WorkerId> = table
            .chunks_exact(WORKER_BYTES)
            .map(|raw| {
                let mut b = [0u8; WORKER_BYTES];
                b.copy_from_slice(raw);
                WorkerId(u128::from_be_bytes(b))
            })
            .collect();
        let mut sorted = workers.clone();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err(Corruption::Framing("a worker twice in the worker table".into()));
        }
        let count = be::u32_at(bytes, 24);
        if count == 0 || table_start == BATCH_HEADER_BYTES {
            return Err(Corruption::Framing("a batch without records".into()));
        }
        if first.0.checked_add(u64::from(count) - 1).is_none() {
            return Err(Corruption::Framing(format!(
                "{count} records from {first} pass the last sequence number"
            )));
        }
        let recorded_at = Timestamp(be::i64_at(bytes, 12));
        Ok(Cursor {
            layout: Layout::Batch { recorded_at, workers, end: table_start, left: count },
            offset: BATCH_HEADER_BYTES,
            next: first,
            prev_crc: Some(link),
        })
    }

    /// The sequence number of the next record.
    pub(crate) fn next_seq(&self) -> Seq {
        self.next
    }

    /// Where the records of `bytes` end: the batch's end, or its worker table (layout 2).
    pub(crate) fn end(&self, bytes: &[u8]) -> usize {
        match self.layout {
            Layout::Records => bytes.len(),
            Layout::Batch { end, .. } => end,
        }
    }

    /// True when every record of `bytes` has been read (layout 2: as many as its header says;
    /// [`Cursor::step`] checks that they end where the worker table begins).
    pub(crate) fn at_end(&self, bytes: &[u8]) -> bool {
        match self.layout {
            Layout::Records => self.offset >= bytes.len(),
            Layout::Batch { left, .. } => left == 0,
        }
    }

    /// Verifies the next record of `bytes` (the same bytes the cursor was opened on; not at
    /// its end) and moves past it. After an error the cursor stays where it was.
    pub(crate) fn step(&mut self, bytes: &[u8]) -> Result<Found, Corruption> {
        let end = self.end(bytes);
        let rest = bytes.get(self.offset..end).unwrap_or_default();
        let (found, len) = match &mut self.layout {
            Layout::Records => {
                let len = record::record_len(rest)?;
                let header = record::verify(self.next.0, &rest[..len], self.prev_crc)?;
                (Found { header, bytes: self.offset..self.offset + len }, len)
            }
            Layout::Batch { recorded_at, left, .. } => {
                if *left == 0 {
                    return Err(Corruption::Framing("a record after the batch's count".into()));
                }
                let (payload_len, prefix) = read_length(rest)?;
                let start = prefix + 4;
                let len = start.saturating_add(payload_len);
                if rest.len() < len {
                    return Err(Corruption::Length {
                        declared: payload_len as u64,
                        actual: rest.len().saturating_sub(start) as u64,
                    });
                }
                let stored = be::u32_at(rest, prefix);
                let prev = self.prev_crc.unwrap_or(record::GENESIS_LINK);
                let computed = chained_crc(prev, &rest[start..len]);
                if stored != computed {
                    return Err(Corruption::Checksum { stored, computed });
                }
                if *left == 1 && len != rest.len() {
                    return Err(Corruption::Framing(format!(
                        "{} bytes after the batch's last record",
                        rest.len() - len
                    )));
                }
                *left -= 1;
                let header = Header {
                    seq: self.next,
                    recorded_at: *recorded_at,
                    prev_crc: prev,
                    crc: stored,
                };
                (Found { header, bytes: self.offset + start..self.offset + len }, len)
            }
        };
        self.offset += len;
        self.prev_crc = Some(found.header.crc);
        // At u64::MAX the cursor stays: no batch can hold a record after it.
        self.next = self.next.next().unwrap_or(self.next);
        Ok(found)
    }

    /// Decodes the event of `found` (from [`Cursor::step`] on the same `bytes`).
    pub(crate) fn decode(
        &self,
        bytes: &[u8],
        found: &Found,
        aligned: &mut AlignedVec,
    ) -> Result<Event, Corruption> {
        let raw = bytes.get(found.bytes.clone()).unwrap_or_default();
        match &self.layout {
            Layout::Records => record::decode_event(raw, aligned),
            Layout::Batch { recorded_at, workers, .. } => {
                let ctx = Context { base: *recorded_at, workers };
                payload::decode_in(raw, &ctx).map_err(|e| Corruption::Payload(e.to_string()))
            }
        }
    }

    /// Where `found`'s event payload lies in the batch's bytes (for tests that damage it).
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn payload_range(&self, found: &Found) -> Range<usize> {
        match self.layout {
            Layout::Records => found.bytes.start + record::RECORD_HEADER_BYTES..found.bytes.end,
            Layout::Batch { .. } => found.bytes.clone(),
        }
    }
}

/// Where a walk through a batch stopped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Walk {
    /// True when the walk read every record of the batch.
    pub at_end: bool,
    /// The sequence number of that next record.
    pub next: Seq,
    /// The last record walked over, if any.
    pub last: Option<Header>,
}

/// Walks the records of the batch stored under `key`, verifying each one (checksum, sequence
/// number, the links between them and, when `prev_crc` is given, the first one's link), and
/// stops before record `stop` or at the end of the batch. Returns the cursor, ready to read on.
pub(crate) fn walk(
    key: u64,
    bytes: &[u8],
    prev_crc: Option<u32>,
    stop: Seq,
) -> Result<(Walk, Cursor), (Seq, Corruption)> {
    let mut cursor = Cursor::open(key, bytes, prev_crc)?;
    let mut last = None;
    while !cursor.at_end(bytes) && cursor.next_seq() < stop {
        let at = cursor.next_seq();
        let found = cursor.step(bytes).map_err(|c| (at, c))?;
        last = Some(found.header);
        if found.header.seq.0 == u64::MAX {
            break;
        }
    }
    Ok((Walk { at_end: cursor.at_end(bytes), next: cursor.next_seq(), last }, cursor))
}

/// A stored batch: its key and its bytes.
pub(crate) type Stored<'t> = (u64, AccessGuard<'t, &'static [u8]>);

/// The batch that would hold record `seq`: the one stored under the greatest key `<= seq`.
pub(crate) fn find<'t, T>(table: &'t T, seq: Seq) -> Result<Option<Stored<'t>>, redb::StorageError>
where
    T: ReadableTable<u64, &'static [u8]>,
{
    match table.range(..=seq.0)?.next_back() {
        None => Ok(None),
        Some(entry) => {
            let (key, value) = entry?;
            Ok(Some((key.value(), value)))
        }
    }
}

/// The verified header of record `seq`, `Ok(None)` when no batch holds it.
pub(crate) fn header_of<T>(table: &T, seq: Seq) -> Result<Option<Header>, FindError>
where
    T: ReadableTable<u64, &'static [u8]>,
{
    let Some((key, value)) = find(table, seq).map_err(FindError::Storage)? else {
        return Ok(None);
    };
    let stop = seq.next().unwrap_or(seq);
    let (walk, _) =
        walk(key, value.value(), None, stop).map_err(|(s, c)| FindError::Corrupt(s, c))?;
    Ok(walk.last.filter(|h| h.seq == seq))
}

/// Why [`header_of`] failed.
#[derive(Debug)]
pub(crate) enum FindError {
    /// redb failed.
    Storage(redb::StorageError),
    /// A record on the way is damaged.
    Corrupt(Seq, Corruption),
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use engine::{AssetListed, Symbol};

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn the_documented_example() {
        // docs/JOURNAL.md: record 1, an AssetListed of AAPL at 1,700,000,000 s, appended then.
        let at = Timestamp(1_700_000_000_000_000);
        let listed = Event::AssetListed(AssetListed { symbol: Symbol::new("AAPL").unwrap(), at });
        let mut out = Vec::new();
        let (last, crc) =
            encode(&mut out, &mut WorkerTable::default(), Seq(1), at, 0, &[listed]).unwrap();
        assert_eq!(last, Seq(1));
        let (header, record) = out.split_at(BATCH_HEADER_BYTES);
        assert_eq!(
            hex(header),
            "00020003000000000000000100060a24181e4000000000000000000100000000ac194ffe"
        );
        // Length 7, the crc, then tag, symbol and the time as its difference from recorded_at.
        assert_eq!(hex(record), "07d6c1f6c401044141504c00");
        assert_eq!(crc, 0xd6c1_f6c4);
        assert_eq!(crc, crc32fast::hash(&record[5..]), "chained onto 0: the payload's crc32");
        let records = crate::record::decode_batch(1, &out).unwrap();
        assert_eq!(records.len(), 1);
    }
}
