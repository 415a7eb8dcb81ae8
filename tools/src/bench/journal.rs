//! `journal.append.b*` and `replay.audit`, with the journal benchmark's own helpers
//! (`journal::bench`, shared with `cargo bench -p journal`).
//!
//! - Append: events of the benchmark's synthetic history appended durably in batches of 1,
//!   100, 1,000 and 10,000, alternating batch by batch with a plain `write` + `fdatasync` of
//!   the same record bytes to a plain file on the same disk.
//! - Replay: what `pt-replay audit` runs (`journal::audit`: verify every checksum and link,
//!   decode, `State::apply`, invariants) over a journal of 1,000,000 events, beside a plain
//!   sequential read + crc32 of the same record bytes.

use std::time::Instant;

use anyhow::Context as _;
use journal::{AuditConfig, Journal, JournalConfig};

use super::{BenchArgs, Figure, base_dir, per_second};

/// (batch size, events appended) per append figure.
const APPEND_RUNS: [(usize, usize); 4] =
    [(1, 300), (100, 10_000), (1_000, 100_000), (10_000, 300_000)];
/// Events in the replay journal.
const REPLAY_EVENTS: usize = 1_000_000;
/// Events per batch of the replay journal (as the master appends a busy interval).
const REPLAY_BATCH: usize = 10_000;
/// `--quick` divides the counts by this.
const QUICK_DIVISOR: usize = 100;
/// Target: at 1,000-event batches, at least this fraction of the plain rate.
pub const TARGET_APPEND_RATIO: f64 = 0.5;
/// Target replay (audit) rate.
pub const TARGET_REPLAY_EVENTS_PER_S: f64 = 1_000_000.0;

fn scratch_dir(args: &BenchArgs) -> anyhow::Result<tempfile::TempDir> {
    let base = base_dir(args);
    std::fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
    tempfile::Builder::new()
        .prefix("pt-bench-")
        .tempdir_in(&base)
        .with_context(|| format!("cannot make a directory in {}", base.display()))
}

/// Measures `journal.append.b1`, `.b100`, `.b1000`, `.b10000`.
pub fn run_append(args: &BenchArgs) -> anyhow::Result<Vec<Figure>> {
    let dir = scratch_dir(args)?;
    let divisor = if args.quick { QUICK_DIVISOR } else { 1 };
    let most = APPEND_RUNS.iter().map(|(_, n)| n / divisor).max().unwrap_or(0);
    let events = journal::bench::events(most);
    let mut figures = Vec::new();
    for (batch, count) in APPEND_RUNS {
        let count = (count / divisor).max(batch.min(10));
        let Some(chunk) = events.get(..count) else {
            anyhow::bail!("not enough events generated");
        };
        let batches = journal::bench::batch_bytes(chunk, batch)?;
        let times = journal::bench::append_both(dir.path(), chunk, &batches, batch)?;
        let n = u64::try_from(times.events).unwrap_or(u64::MAX);
        let figure = Figure::new(
            format!("journal.append.b{batch}"),
            per_second(n, times.journal),
            "events/s",
            per_second(n, times.plain),
            "write+fdatasync",
        );
        let figure = if batch == 1_000 {
            let met = figure.ratio >= TARGET_APPEND_RATIO;
            figure.with_target("ratio >= 0.5", met)
        } else {
            figure
        };
        figures.push(figure);
    }
    Ok(figures)
}

/// Measures `replay.audit`.
pub fn run_replay(args: &BenchArgs) -> anyhow::Result<Vec<Figure>> {
    let dir = scratch_dir(args)?;
    let count = if args.quick { REPLAY_EVENTS / QUICK_DIVISOR } else { REPLAY_EVENTS };
    let events = journal::bench::events(count);
    let batches = journal::bench::batch_bytes(&events, REPLAY_BATCH)?;
    let path = dir.path().join("replay.redb");
    journal::bench::write_journal(&path, &events, REPLAY_BATCH)?;
    let plain = dir.path().join("replay.plain");
    journal::bench::write_plain(&plain, &batches)?;
    drop((events, batches));

    // What `pt-replay audit` runs, its open included: the read-only open (redb's page check
    // over the whole file, through the copy-on-write view), then the audit.
    let start = Instant::now();
    let journal = Journal::open_read_only(&path, JournalConfig::default())
        .context("cannot open the replay journal")?;
    let report = journal::audit(&journal, AuditConfig::default(), &mut |_| {})
        .context("the audit could not run")?;
    let audit_time = start.elapsed();
    anyhow::ensure!(report.is_clean(), "the audit found a problem: {:?}", report.problem);
    let start = Instant::now();
    let read = journal::bench::plain_read_crc(&plain)?;
    let plain_time = start.elapsed();
    let figure = Figure::new(
        "replay.audit",
        per_second(report.events, audit_time),
        "events/s",
        per_second(u64::try_from(read).unwrap_or(u64::MAX), plain_time),
        "read+crc32",
    );
    let met = figure.value >= TARGET_REPLAY_EVENTS_PER_S;
    Ok(vec![figure.with_target(">= 1,000,000 events/s", met)])
}
