//! Batches: the records of one append, back to back, stored as one redb value under the
//! sequence number of the batch's first record. One value per durable transaction keeps the
//! B-tree small and the commit close to a plain `write` + `fdatasync` of the same bytes.

use redb::{AccessGuard, ReadableTable};

use crate::error::Corruption;
use crate::record::{self, Header, Seq};

/// Where a walk through a batch stopped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Walk {
    /// Byte offset of the next record in the batch (the batch's length at its end).
    pub offset: usize,
    /// The sequence number of that next record.
    pub next: Seq,
    /// The last record walked over, if any.
    pub last: Option<Header>,
}

/// Walks the records of the batch stored under `key`, verifying each one (checksum, sequence
/// number, the links between them and, when `prev_crc` is given, the first one's link), and
/// stops before record `stop` or at the end of the batch.
pub(crate) fn walk(
    key: u64,
    bytes: &[u8],
    prev_crc: Option<u32>,
    stop: Seq,
) -> Result<Walk, (Seq, Corruption)> {
    let mut walk = Walk { offset: 0, next: Seq(key), last: None };
    let mut prev = prev_crc;
    while walk.offset < bytes.len() && walk.next < stop {
        let rest = &bytes[walk.offset..];
        let len = record::record_len(rest).map_err(|c| (walk.next, c))?;
        let header = record::verify(walk.next.0, &rest[..len], prev).map_err(|c| (walk.next, c))?;
        prev = Some(header.crc);
        walk.last = Some(header);
        walk.offset += len;
        match walk.next.next() {
            Some(next) => walk.next = next,
            None => break,
        }
    }
    Ok(walk)
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
    let walk = walk(key, value.value(), None, stop).map_err(|(s, c)| FindError::Corrupt(s, c))?;
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
