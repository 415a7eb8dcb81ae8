//! Benchmark helpers shared by `cargo bench -p journal` and `pt bench` (feature `bench`): the
//! synthetic event histories, the journal's record bytes for a plain-file baseline, durable
//! append measured beside plain `write` + `fdatasync` of the same bytes, and a plain sequential
//! read + crc32 of them. Nothing here is used by the journal itself.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use engine::{Event, State, Timestamp};

use crate::{Journal, JournalConfig, Seq};

#[path = "../testkit/history.rs"]
#[allow(dead_code)]
mod history;

pub use history::{History, Shape};

/// Why a benchmark step failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A plain file failed.
    #[error("plain file: {0}")]
    Io(#[from] std::io::Error),
    /// The journal failed (open, append, read).
    #[error("journal: {0}")]
    Journal(String),
    /// An event did not encode.
    #[error("encode: {0}")]
    Encode(String),
}

fn journal_error(e: impl std::fmt::Display) -> BenchError {
    BenchError::Journal(e.to_string())
}

/// The shape of the histories the journal benchmark appends: up to 50 symbols, 2,000 accounts
/// and 2,000 orders per interval (fills, rejections, intervals; about 98 bytes per record).
pub const BENCH_SHAPE: Shape =
    Shape { symbols_max: 50, accounts_max: 2_000, orders_per_interval_max: 2_000 };

/// `count` valid events from a seeded history of `shape` (same seed, same events), ending
/// between intervals as a journal does.
pub fn events_with(count: usize, seed: u64, shape: Shape) -> Vec<Event> {
    let mut history = History::new(State::new(), seed, shape);
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        out.extend(history.next_batch());
    }
    out.truncate(count);
    // Cut at `count`, the history may stop inside an interval, which no whole journal does (the
    // open and the audit refuse one): the last header then announces the outcomes kept.
    if let Some(at) = out.iter().rposition(|e| matches!(e, Event::IntervalSettled(_))) {
        let kept = out[at + 1..]
            .iter()
            .filter(|e| matches!(e, Event::OrderFilled(_) | Event::OrderRejected(_)))
            .count() as u64;
        if let Some(Event::IntervalSettled(header)) = out.get_mut(at) {
            header.orders = kept;
        }
    }
    out
}

/// `count` events of [`BENCH_SHAPE`] (seed 2024), as `cargo bench -p journal` uses.
pub fn events(count: usize) -> Vec<Event> {
    events_with(count, 2024, BENCH_SHAPE)
}

/// The journal's record bytes for `events` (the layout of [`crate::record`], sequence numbers
/// from 1, chained crcs), one `Vec` per record, for the plain-file baselines.
pub fn record_bytes(events: &[Event]) -> Result<Vec<Vec<u8>>, BenchError> {
    let mut prev = crate::record::GENESIS_LINK;
    let mut out = Vec::with_capacity(events.len());
    for (seq, event) in (1u64..).zip(events) {
        let mut record = Vec::new();
        prev = crate::record::append_record(&mut record, Seq(seq), Timestamp(0), prev, event)
            .map_err(|bytes| BenchError::Encode(format!("event of {bytes} bytes")))?;
        out.push(record);
    }
    Ok(out)
}

/// Time spent appending the same events durably to a journal and to a plain file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendTimes {
    /// Events appended (to each).
    pub events: usize,
    /// Total time inside `Journal::append_batch`.
    pub journal: Duration,
    /// Total time inside `write` + `fdatasync` of the same record bytes.
    pub plain: Duration,
}

/// Appends `events` in batches of `batch` to a fresh journal in `dir` and, alternately batch by
/// batch, the same record bytes to a plain file with `write` + `fdatasync`, so both see the
/// same disk moment by moment. Both files are removed afterwards.
pub fn append_both(
    dir: &Path,
    events: &[Event],
    records: &[Vec<u8>],
    batch: usize,
) -> Result<AppendTimes, BenchError> {
    let path = dir.join(format!("append-{batch}.redb"));
    let plain_path = dir.join(format!("append-{batch}.plain"));
    let (journal, _) = Journal::open(&path, JournalConfig::default()).map_err(journal_error)?;
    let mut file = File::create(&plain_path)?;
    let mut buffer = Vec::new();
    let (mut journal_time, mut plain_time) = (Duration::ZERO, Duration::ZERO);
    for (chunk, raw) in events.chunks(batch.max(1)).zip(records.chunks(batch.max(1))) {
        let start = Instant::now();
        journal.append_batch(chunk, Timestamp(0)).map_err(journal_error)?;
        journal_time += start.elapsed();
        let start = Instant::now();
        buffer.clear();
        for record in raw {
            buffer.extend_from_slice(record);
        }
        file.write_all(&buffer)?;
        file.sync_data()?;
        plain_time += start.elapsed();
    }
    drop((journal, file));
    std::fs::remove_file(&path)?;
    std::fs::remove_file(&plain_path)?;
    Ok(AppendTimes { events: events.len(), journal: journal_time, plain: plain_time })
}

/// Writes `events` to a fresh journal at `path` in batches of `batch` (for replay benchmarks).
pub fn write_journal(path: &Path, events: &[Event], batch: usize) -> Result<(), BenchError> {
    let (journal, _) = Journal::open(path, JournalConfig::default()).map_err(journal_error)?;
    for chunk in events.chunks(batch.max(1)) {
        journal.append_batch(chunk, Timestamp(0)).map_err(journal_error)?;
    }
    Ok(())
}

/// Writes `records` back to back to a plain file at `path` and syncs it.
pub fn write_plain(path: &Path, records: &[Vec<u8>]) -> Result<(), BenchError> {
    let mut file = std::io::BufWriter::with_capacity(1 << 20, File::create(path)?);
    for record in records {
        file.write_all(record)?;
    }
    file.into_inner().map_err(|e| BenchError::Io(e.into_error()))?.sync_all()?;
    Ok(())
}

/// Reads a plain file of records written by [`write_plain`] sequentially and computes each
/// record's crc32 (header and payload), as replay must at least do. Returns the records read.
pub fn plain_read_crc(path: &Path) -> Result<usize, BenchError> {
    let mut file = std::io::BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut header = [0u8; 32];
    let mut payload = Vec::new();
    let mut count = 0usize;
    let mut check = 0u32;
    while file.read_exact(&mut header).is_ok() {
        let len = usize::try_from(crate::be::u32_at(&header, 24))
            .map_err(|e| BenchError::Encode(e.to_string()))?;
        payload.resize(len, 0);
        file.read_exact(&mut payload)?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header[..28]);
        hasher.update(&payload);
        check ^= hasher.finalize();
        count += 1;
    }
    std::hint::black_box(check);
    Ok(count)
}
