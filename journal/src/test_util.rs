//! Damaging a journal on purpose, for corruption tests (feature `test-util`). Each helper opens
//! the file itself (it must not be open elsewhere) and writes through redb, so the file stays a
//! valid redb file and only the journal's own checks can notice the damage.

use std::error::Error;
use std::path::Path;

use redb::{Database, ReadableTable};

use crate::batch::Cursor;
use crate::journal::{
    EVENTS, INFO, INFO_FORMAT, INFO_HEAD, SNAPSHOT_PARTS, SNAPSHOTS, UNOWNED_PARTS,
};
use crate::record::Seq;
use crate::snapshot::SNAPSHOT_HEADER_BYTES;

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

fn rewrite(
    path: &Path,
    table: redb::TableDefinition<u64, &[u8]>,
    seq: Seq,
    change: impl FnOnce(&mut Vec<u8>),
) -> Result<()> {
    let db = Database::open(path)?;
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(table)?;
        let mut bytes = table.get(seq.0)?.ok_or("no such key")?.value().to_vec();
        change(&mut bytes);
        table.insert(seq.0, bytes.as_slice())?;
    }
    txn.commit()?;
    Ok(())
}

/// Where record `seq`'s event payload lies inside the batch stored under `key`.
fn locate_payload(key: u64, bytes: &[u8], seq: Seq) -> Result<std::ops::Range<usize>> {
    let mut cursor = Cursor::open(key, bytes, None).map_err(|(_, e)| e.to_string())?;
    while !cursor.at_end(bytes) {
        let found = cursor.step(bytes).map_err(|e| e.to_string())?;
        if found.header.seq == seq {
            return Ok(cursor.payload_range(&found));
        }
    }
    Err("record not in its batch".into())
}

/// The key of the batch holding record `seq`.
fn batch_key(db: &Database, seq: Seq) -> Result<u64> {
    use redb::ReadableDatabase;
    let read = db.begin_read()?;
    let table = read.open_table(EVENTS)?;
    let (key, _) = crate::batch::find(&table, seq)?.ok_or("no batch holds the record")?;
    Ok(key)
}

/// Flips every bit of one byte of record `seq`'s event payload (`offset` modulo its length).
pub fn flip_record_payload_byte(path: &Path, seq: Seq, offset: usize) -> Result<()> {
    let key = batch_key(&Database::open(path)?, seq)?;
    let mut located = Err("not found".into());
    rewrite(path, EVENTS, Seq(key), |bytes| {
        located = locate_payload(key, bytes, seq).map(|payload| {
            bytes[payload.start + offset % payload.len().max(1)] ^= 0xff;
        });
    })?;
    located
}

/// Overwrites the link (`prev_crc`) of the layout-2 batch stored under `key` and reseals its
/// header checksum, as a writer that chained it onto another record would have: only the link
/// check can tell.
pub fn set_batch_link(path: &Path, key: Seq, link: u32) -> Result<()> {
    let mut sealed = Err("not a layout-2 batch".into());
    rewrite(path, EVENTS, key, |bytes| {
        if bytes.starts_with(&crate::record::BATCH_LAYOUT_VERSION.to_be_bytes()) {
            bytes[20..24].copy_from_slice(&link.to_be_bytes());
            sealed = crate::batch::reseal_header(bytes).map_err(Into::into);
        }
    })?;
    sealed
}

/// Flips every bit of one byte of the snapshot at `seq`'s state bytes (`offset` modulo their
/// length), whether they are stored with its header or in parts.
pub fn flip_snapshot_byte(path: &Path, seq: Seq, offset: usize) -> Result<()> {
    let db = Database::open(path)?;
    let txn = db.begin_write()?;
    {
        let table = txn.open_table(SNAPSHOTS)?;
        let row = table.get(seq.0)?.ok_or("no such snapshot")?.value().to_vec();
        drop(table);
        if row.len() > SNAPSHOT_HEADER_BYTES {
            let mut bytes = row;
            let len = bytes.len() - SNAPSHOT_HEADER_BYTES;
            bytes[SNAPSHOT_HEADER_BYTES + offset % len] ^= 0xff;
            txn.open_table(SNAPSHOTS)?.insert(seq.0, bytes.as_slice())?;
        } else {
            let mut parts = txn.open_table(SNAPSHOT_PARTS)?;
            let mut stored = Vec::new();
            for entry in parts.range((seq.0, 0u32)..=(seq.0, u32::MAX))? {
                let (key, value) = entry?;
                stored.push((key.value(), value.value().to_vec()));
            }
            let total: usize = stored.iter().map(|(_, bytes)| bytes.len()).sum();
            let mut at = offset % total.max(1);
            for (key, mut bytes) in stored {
                if at < bytes.len() {
                    bytes[at] ^= 0xff;
                    parts.insert(key, bytes.as_slice())?;
                    break;
                }
                at -= bytes.len();
            }
        }
    }
    txn.commit()?;
    Ok(())
}

/// How many parts the snapshot at `seq` is stored in (0 for a snapshot stored whole).
pub fn snapshot_parts(path: &Path, seq: Seq) -> Result<usize> {
    use redb::ReadableDatabase;
    let db = Database::open(path)?;
    let read = db.begin_read()?;
    let parts = read.open_table(SNAPSHOT_PARTS)?;
    Ok(parts.range((seq.0, 0u32)..=(seq.0, u32::MAX))?.count())
}

/// Every stored snapshot part's key, in order: what no snapshot owns should not be there.
pub fn snapshot_part_keys(path: &Path) -> Result<Vec<(u64, u32)>> {
    use redb::ReadableDatabase;
    let db = Database::open(path)?;
    let read = db.begin_read()?;
    let parts = read.open_table(SNAPSHOT_PARTS)?;
    let mut keys = Vec::new();
    for entry in parts.iter()? {
        keys.push(entry?.0.value());
    }
    Ok(keys)
}

/// Overwrites the format version of the snapshot at `seq` and seals its header again, as a
/// future build would write it; with `reseal` false, as damage would leave it.
pub fn set_snapshot_format(path: &Path, seq: Seq, version: u16, reseal: bool) -> Result<()> {
    rewrite(path, SNAPSHOTS, seq, |bytes| {
        bytes[0..2].copy_from_slice(&version.to_be_bytes());
        if reseal {
            let crc = crate::snapshot::header_crc(bytes);
            bytes[4..8].copy_from_slice(&crc.to_be_bytes());
        }
    })
}

/// Overwrites the state length a snapshot's header declares, without sealing the header again
/// (damage to the length field).
pub fn set_snapshot_declared_len(path: &Path, seq: Seq, len: u64) -> Result<()> {
    rewrite(path, SNAPSHOTS, seq, |bytes| bytes[24..32].copy_from_slice(&len.to_be_bytes()))
}

/// Deletes the batch holding record `seq`; returns its key.
pub fn remove_batch(path: &Path, seq: Seq) -> Result<Seq> {
    let db = Database::open(path)?;
    let key = batch_key(&db, seq)?;
    let txn = db.begin_write()?;
    txn.open_table(EVENTS)?.remove(key)?;
    txn.commit()?;
    Ok(Seq(key))
}

/// Swaps the stored values of the batches stored under keys `a` and `b` (each the sequence
/// number of a batch's first record).
pub fn swap_batches(path: &Path, a: Seq, b: Seq) -> Result<()> {
    let db = Database::open(path)?;
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(EVENTS)?;
        let value_a = table.get(a.0)?.ok_or("no batch a")?.value().to_vec();
        let value_b = table.get(b.0)?.ok_or("no batch b")?.value().to_vec();
        table.insert(a.0, value_b.as_slice())?;
        table.insert(b.0, value_a.as_slice())?;
    }
    txn.commit()?;
    Ok(())
}

/// Deletes the snapshot stored at `seq`, as an operator cleaning up by hand would: its row,
/// its parts listed as unowned (the next stored snapshot deletes them).
pub fn remove_snapshot(path: &Path, seq: Seq) -> Result<()> {
    let db = Database::open(path)?;
    let txn = db.begin_write()?;
    txn.open_table(SNAPSHOTS)?.remove(seq.0)?.ok_or("no such snapshot")?;
    txn.open_table(UNOWNED_PARTS)?.insert(seq.0, ())?;
    txn.commit()?;
    Ok(())
}

/// Leaves the journal as a crash right after the first part of a snapshot at `seq` would: one
/// part stored, listed as unowned, no header row.
pub fn cut_a_snapshot_store_short(path: &Path, seq: Seq) -> Result<()> {
    let db = Database::open(path)?;
    let txn = db.begin_write()?;
    txn.open_table(UNOWNED_PARTS)?.insert(seq.0, ())?;
    txn.open_table(SNAPSHOT_PARTS)?.insert((seq.0, 0), &[7u8; 100][..])?;
    txn.commit()?;
    Ok(())
}

/// Rewrites every record of the journal in layout 1 with a format-1 payload (the rkyv archive
/// of the event), as builds before the compact encoding wrote them, keeping sequence numbers and
/// times and re-chaining the checksums. Snapshots are left as they are (their record checksums
/// no longer match, so they will be ignored). Returns how many records were rewritten.
pub fn rewrite_as_format_1(path: &Path) -> Result<u64> {
    let mut scratch = rkyv::util::AlignedVec::new();
    rewrite_in_layout_1(path, |record, prev, out| {
        let payload = crate::record::encode_event_rkyv(&record.event, &mut scratch)?;
        crate::record::write_record(
            out,
            crate::record::RKYV_EVENT_FORMAT,
            record.seq,
            record.recorded_at,
            prev,
            payload,
        )
        .ok_or_else(|| "payload too large".into())
    })
}

/// Rewrites every record of the journal in layout 1 with a format-2 payload, as the builds
/// before layout 2 wrote them, keeping sequence numbers and times and re-chaining the checksums.
/// Snapshots are left as they are. Returns how many records were rewritten.
pub fn rewrite_as_format_2(path: &Path) -> Result<u64> {
    rewrite_in_layout_1(path, |record, prev, out| {
        crate::record::append_record(out, record.seq, record.recorded_at, prev, &record.event)
            .map_err(|bytes| format!("payload of {bytes} bytes").into())
    })
}

/// Rewrites every batch as layout-1 records, each written by `write` (the record as read, the
/// previous record's checksum, the batch being written), which returns the record's checksum.
fn rewrite_in_layout_1(
    path: &Path,
    mut write: impl FnMut(&crate::record::Record, u32, &mut Vec<u8>) -> Result<u32>,
) -> Result<u64> {
    use redb::ReadableDatabase;
    let db = Database::open(path)?;
    let batches: Vec<(u64, Vec<u8>)> = {
        let read = db.begin_read()?;
        let table = read.open_table(EVENTS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            out.push((key.value(), value.value().to_vec()));
        }
        out
    };
    let mut prev = crate::record::GENESIS_LINK;
    let mut count = 0u64;
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(EVENTS)?;
        for (key, bytes) in batches {
            let mut rewritten = Vec::with_capacity(bytes.len() * 2);
            let records = crate::record::decode_batch(key, &bytes)
                .map_err(|(seq, e)| format!("record {seq}: {e}"))?;
            for record in &records {
                prev = write(record, prev, &mut rewritten)?;
                count += 1;
            }
            table.insert(key, rewritten.as_slice())?;
        }
    }
    txn.commit()?;
    Ok(count)
}

/// Sets the journal's head row to `head`, or removes it (`None`), as damage would.
pub fn set_head(path: &Path, head: Option<u64>) -> Result<()> {
    let db = Database::open(path)?;
    let txn = db.begin_write()?;
    {
        let mut info = txn.open_table(INFO)?;
        match head {
            Some(head) => info.insert(INFO_HEAD, head)?,
            None => info.remove(INFO_HEAD)?,
        };
    }
    txn.commit()?;
    Ok(())
}

/// Removes the journal's format row, as damage would.
pub fn remove_format(path: &Path) -> Result<()> {
    let db = Database::open(path)?;
    let txn = db.begin_write()?;
    txn.open_table(INFO)?.remove(INFO_FORMAT)?;
    txn.commit()?;
    Ok(())
}

/// Puts the journal's format row back (after [`remove_format`]).
pub fn restore_format(path: &Path) -> Result<()> {
    let db = Database::open(path)?;
    let txn = db.begin_write()?;
    txn.open_table(INFO)?.insert(INFO_FORMAT, crate::journal::FILE_FORMAT_VERSION)?;
    txn.commit()?;
    Ok(())
}

/// Deletes one part of the snapshot parts stored under `seq`, as a crash in the middle of
/// deleting them would leave the others.
pub fn remove_snapshot_part(path: &Path, seq: Seq, part: u32) -> Result<()> {
    let db = Database::open(path)?;
    let txn = db.begin_write()?;
    txn.open_table(SNAPSHOT_PARTS)?.remove((seq.0, part))?.ok_or("no such part")?;
    txn.commit()?;
    Ok(())
}

/// Appends, through the journal itself, the header of interval 1000 announcing 3 orders and
/// none of their outcomes: a journal that ends inside an interval, as only damage leaves one
/// (the master writes a header and its outcomes in one batch).
pub fn append_an_unfinished_interval(path: &Path) -> Result<()> {
    let journal = crate::Journal::open_unrecovered(path, crate::JournalConfig::default())?;
    let header = engine::Event::IntervalSettled(engine::IntervalSettled {
        interval: engine::IntervalId(1_000),
        at: engine::Timestamp(5),
        ticks: vec![],
        orders: 3,
    });
    journal.append_batch(&[header], engine::Timestamp(2_000))?;
    Ok(())
}

/// Damages the file under redb, not through it (so without a commit of its own, which redb
/// makes when it opens a file a crash left): flips one byte of the records of the layout-2
/// batch whose first record is `first_seq`, appended at `recorded_at`, where its header lies in
/// the file. The commit that wrote that batch then no longer verifies.
pub fn flip_batch_in_file(
    path: &Path,
    first_seq: Seq,
    recorded_at: engine::Timestamp,
) -> Result<()> {
    let mut header = Vec::with_capacity(20);
    header.extend_from_slice(&crate::record::BATCH_LAYOUT_VERSION.to_be_bytes());
    header.extend_from_slice(&3u16.to_be_bytes());
    header.extend_from_slice(&first_seq.0.to_be_bytes());
    header.extend_from_slice(&recorded_at.0.to_be_bytes());
    let mut file = std::fs::read(path)?;
    let at = file
        .windows(header.len())
        .position(|w| w == header.as_slice())
        .ok_or("the batch's header is not in the file")?;
    // Past the 36-byte batch header: inside the first record.
    let target = at + 40;
    if target >= file.len() {
        return Err("the batch runs past the file".into());
    }
    file[target] ^= 0xff;
    std::fs::write(path, &file)?;
    Ok(())
}

/// The size of redb's header page, which [`zero_all_but_redb_header`] leaves alone.
const REDB_HEADER_BYTES: u64 = 4096;

/// Zeroes every byte of the file at `path` after redb's header page, and syncs it: damage
/// done while a journal has the file open. Unlike the helpers above, it writes the bytes
/// directly, not through redb, and the file may be open; with the journal's page cache off
/// (`cache_bytes: 0`) redb reads the damage at its next access and panics on it
/// (docs/RELIABILITY.md). Returns how many bytes it zeroed.
pub fn zero_all_but_redb_header(path: &Path) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom, Write};
    let zeroed = std::fs::metadata(path)?.len().saturating_sub(REDB_HEADER_BYTES);
    let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.seek(SeekFrom::Start(REDB_HEADER_BYTES))?;
    let zeros = vec![0; usize::try_from(zeroed).map_err(std::io::Error::other)?];
    file.write_all(&zeros)?;
    file.sync_all()?;
    Ok(zeroed)
}

/// Bytes of the file at `path` that the file system has allocated, where it counts them one
/// block per block written, zeros too (ext4, XFS); `None` elsewhere, where the tests of the
/// zeros written ahead of redb (`zero_ahead`) skip what they measure: a compressing file
/// system stores zeros as holes, a tmpfs with huge pages allocates 2 MiB at a write.
pub fn allocated_bytes(path: &Path) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        const EXT4: u64 = 0xEF53;
        const XFS: u64 = 0x5846_5342;
        let kind = rustix::fs::statfs(path).ok()?.f_type;
        let counted = u64::try_from(kind).is_ok_and(|kind| kind == EXT4 || kind == XFS);
        if !counted {
            return None;
        }
        let meta = std::fs::metadata(path).ok()?;
        Some(std::os::unix::fs::MetadataExt::blocks(&meta) * 512)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        None
    }
}
