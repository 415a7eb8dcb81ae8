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
/// and 2,000 orders per interval (fills, rejections, intervals; about 53 bytes per record in batch layout 2, `docs/JOURNAL.md`).
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

/// The batches the journal stores for `events` appended in batches of `batch` to an empty
/// journal at time 0 (layout 2, sequence numbers from 1, chained crcs): exactly the values
/// `Journal::append_batch` writes, for the plain-file baselines.
pub fn batch_bytes(events: &[Event], batch: usize) -> Result<Vec<Vec<u8>>, BenchError> {
    let mut prev = crate::record::GENESIS_LINK;
    let mut first = Seq(1);
    let mut workers = crate::payload::WorkerTable::default();
    let mut out = Vec::new();
    for chunk in events.chunks(batch.max(1)) {
        let mut bytes = Vec::new();
        let (last, crc) =
            crate::batch::encode(&mut bytes, &mut workers, first, Timestamp(0), prev, chunk)
                .map_err(|e| BenchError::Encode(e.to_string()))?;
        prev = crc;
        first = last.next().ok_or_else(|| BenchError::Encode("sequence overflow".into()))?;
        out.push(bytes);
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
/// batch, the same bytes (`batches`, from [`batch_bytes`] with the same `batch`) to a plain file
/// with `write` + `fdatasync`, so both see the same disk moment by moment. Both files are
/// removed afterwards.
pub fn append_both(
    dir: &Path,
    events: &[Event],
    batches: &[Vec<u8>],
    batch: usize,
) -> Result<AppendTimes, BenchError> {
    let path = dir.join(format!("append-{batch}.redb"));
    let plain_path = dir.join(format!("append-{batch}.plain"));
    let (journal, _) = Journal::open(&path, JournalConfig::default()).map_err(journal_error)?;
    let mut file = File::create(&plain_path)?;
    let (mut journal_time, mut plain_time) = (Duration::ZERO, Duration::ZERO);
    for (chunk, bytes) in events.chunks(batch.max(1)).zip(batches) {
        let start = Instant::now();
        journal.append_batch(chunk, Timestamp(0)).map_err(journal_error)?;
        journal_time += start.elapsed();
        let start = Instant::now();
        file.write_all(bytes)?;
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

/// Writes `batches` to a plain file at `path`, each after its length (u32 big-endian), and
/// syncs it.
pub fn write_plain(path: &Path, batches: &[Vec<u8>]) -> Result<(), BenchError> {
    let mut file = std::io::BufWriter::with_capacity(1 << 20, File::create(path)?);
    for bytes in batches {
        let len = u32::try_from(bytes.len()).map_err(|e| BenchError::Encode(e.to_string()))?;
        file.write_all(&len.to_be_bytes())?;
        file.write_all(bytes)?;
    }
    file.into_inner().map_err(|e| BenchError::Io(e.into_error()))?.sync_all()?;
    Ok(())
}

/// Reads a plain file of batches written by [`write_plain`] sequentially and verifies each
/// record's crc32 (what replay must at least do), without decoding. Returns the records read.
pub fn plain_read_crc(path: &Path) -> Result<usize, BenchError> {
    let mut file = std::io::BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut len = [0u8; 4];
    let mut bytes = Vec::new();
    let mut count = 0usize;
    let mut key = 1u64;
    while file.read_exact(&mut len).is_ok() {
        let len = usize::try_from(u32::from_be_bytes(len))
            .map_err(|e| BenchError::Encode(e.to_string()))?;
        bytes.resize(len, 0);
        file.read_exact(&mut bytes)?;
        let mut cursor = crate::batch::Cursor::open(key, &bytes, None)
            .map_err(|(seq, e)| BenchError::Encode(format!("record {seq}: {e}")))?;
        while !cursor.at_end(&bytes) {
            cursor.step(&bytes).map_err(|e| BenchError::Encode(e.to_string()))?;
            count += 1;
        }
        key = cursor.next_seq().0;
    }
    Ok(count)
}
