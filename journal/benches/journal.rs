//! `cargo bench -p journal`: durable append and replay rates of the journal beside the
//! physical limit of the same disk (plain `write` + `fdatasync` of the same bytes, and a plain
//! sequential read + crc32 of them). One run, one disk (the target directory's). Prints a
//! table; the figures go in `docs/JOURNAL.md`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::float_arithmetic,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    clippy::cast_possible_wrap
)]

use std::path::Path;
use std::time::{Duration, Instant};

use engine::{Event, State, Timestamp};
use journal::{
    AuditConfig, Journal, JournalConfig, ReplayFrom, ReplayOptions, ReplayTo, VerifyOnOpen,
};

fn per_second(events: usize, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// Appends in batches of `batch` to a journal and to a plain file, alternately (see
/// `journal::bench::append_both`). Returns (journal, plain) events per second.
fn append_both(dir: &Path, events: &[Event], batch: usize) -> (f64, f64) {
    let batches = journal::bench::batch_bytes(events, batch).unwrap();
    let times = journal::bench::append_both(dir, events, &batches, batch).unwrap();
    (per_second(times.events, times.journal), per_second(times.events, times.plain))
}

fn main() {
    // The heap the master gives the journal at start (`journal::heap`).
    journal::heap::keep_commit_buffers();
    let base =
        std::env::var("PT_BENCH_DIR").unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").to_owned());
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    println!("journal benchmark in {} (one run, one disk)", dir.path().display());
    let replay_events = 1_000_000;
    let all = journal::bench::events(replay_events);
    let start = Instant::now();
    let batches = journal::bench::batch_bytes(&all, 10_000).unwrap();
    let encode_rate = per_second(all.len(), start.elapsed());
    let bytes: usize = batches.iter().map(Vec::len).sum();
    println!(
        "{} events, {:.0} bytes per record on average",
        all.len(),
        bytes as f64 / all.len() as f64
    );

    println!(
        "encoding alone (batches of 10,000 compact records + crc32): {encode_rate:.0} events/s"
    );

    println!();
    println!("durable append (events/s)   journal      plain write+fdatasync   journal/plain");
    for (batch, count) in [(1, 500), (100, 20_000), (1_000, 200_000), (10_000, 500_000)] {
        let (journal, plain) = append_both(dir.path(), &all[..count], batch);
        println!(
            "batch {batch:>6}  {:>10}  {journal:>13.0}  {plain:>22.0}  {:>13.0}%",
            format!("{count} ev"),
            100.0 * journal / plain
        );
    }

    // Replay: a journal of `replay_events` events written in batches of 10,000.
    let path = dir.path().join("replay.redb");
    {
        let (journal, _) = Journal::open(&path, JournalConfig::default()).unwrap();
        for chunk in all.chunks(10_000) {
            journal.append_batch(chunk, Timestamp(0)).unwrap();
        }
    }
    let plain_path = dir.path().join("replay.plain");
    journal::bench::write_plain(&plain_path, &batches).unwrap();
    let journal = Journal::open_unrecovered(&path, JournalConfig::default()).unwrap();
    let options = ReplayOptions {
        from: ReplayFrom::Genesis,
        to: ReplayTo::End,
        verify: VerifyOnOpen::FullChain,
    };
    let start = Instant::now();
    let replayed = journal.replay(options, &mut |_| {}).unwrap();
    let cold_rate = per_second(replayed.events_replayed as usize, start.elapsed());
    let start = Instant::now();
    let replayed = journal.replay(options, &mut |_| {}).unwrap();
    let replay_rate = per_second(replayed.events_replayed as usize, start.elapsed());
    let start = Instant::now();
    let report = journal::audit(&journal, AuditConfig::default(), &mut |_| {}).unwrap();
    assert!(report.is_clean());
    let audit_rate = per_second(report.events as usize, start.elapsed());
    let start = Instant::now();
    let read = journal.read_records(journal::Seq(1)).unwrap().map(Result::unwrap).count();
    let read_rate = per_second(read, start.elapsed());
    let start = Instant::now();
    let mut state = State::new();
    for event in &all {
        state.apply(event).unwrap();
    }
    let apply_rate = per_second(all.len(), start.elapsed());
    let start = Instant::now();
    state.check_invariants().unwrap();
    let invariants_ms = start.elapsed().as_secs_f64() * 1e3;

    let start = Instant::now();
    let count = journal::bench::plain_read_crc(&plain_path).unwrap();
    let plain_rate = per_second(count, start.elapsed());
    assert_eq!(count, all.len());

    println!();
    println!("replay of {} events (events/s)", replayed.events_replayed);
    println!("  replay, first run (verify + decode + apply + invariants)  {cold_rate:>12.0}");
    println!("  replay, second run                                         {replay_rate:>12.0}");
    println!("  audit (replay + invariants every 1M events)                {audit_rate:>12.0}");
    println!("  read_records only (verify + decode, no apply)              {read_rate:>12.0}");
    println!("  State::apply only, events in memory                        {apply_rate:>12.0}");
    println!("  State::check_invariants once at the end: {invariants_ms:.0} ms");
    println!("  plain sequential read + crc32                              {plain_rate:>12.0}");
    println!(
        "  replay (second run) / plain                               {:>11.1}%",
        100.0 * replay_rate / plain_rate
    );

    // A snapshot of the replayed state: encoded off the hot path, then stored.
    drop(journal);
    let (journal, _) = Journal::open(&path, JournalConfig::default()).unwrap();
    let start = Instant::now();
    let snapshot = journal::encode_snapshot(&replayed.state, replayed.last_seq).unwrap();
    let encode_ms = start.elapsed().as_secs_f64() * 1e3;
    let size = snapshot.len();
    let start = Instant::now();
    journal.store_snapshot(snapshot).unwrap();
    let store_ms = start.elapsed().as_secs_f64() * 1e3;
    let start = Instant::now();
    drop(journal);
    let (_, recovered) = Journal::open(&path, JournalConfig::default()).unwrap();
    let open_ms = start.elapsed().as_secs_f64() * 1e3;
    assert_eq!(recovered.snapshot_used, Some(replayed.last_seq));
    println!();
    println!(
        "snapshot of the state after {} events: {size} bytes; encode_snapshot (invariants, \
         digest, rkyv) {encode_ms:.0} ms, store_snapshot (one durable commit) {store_ms:.0} ms; \
         open from it (full-chain check, snapshot validation) {open_ms:.0} ms",
        replayed.last_seq
    );
}
