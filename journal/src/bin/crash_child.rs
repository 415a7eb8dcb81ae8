//! Test helper for `tests/crash.rs`, not an operator tool: opens a journal, then appends
//! random valid batches until killed (or until `batches` were appended), writing a snapshot
//! whenever one is due. It prints, one line each, flushed:
//!
//! - `ready <last_seq> <digest>` after recovery;
//! - `begin <last_seq> <digest>` before a batch's commit: what the head will be if it lands;
//! - `commit <last_seq> <digest>` after the commit returned;
//! - `snapshot <seq>` after a snapshot was stored.
//!
//! Usage: `pt-journal-crash-child PATH SEED SNAPSHOT_EVERY_EVENTS [BATCHES [abort]]`. With
//! `abort`, it aborts after the last batch instead of closing the journal: a crash right after
//! a commit, whose file then has no closing commit.

use std::process::ExitCode;

use engine::Timestamp;
use journal::{Journal, JournalConfig, encode_snapshot};

#[path = "../../testkit/history.rs"]
#[allow(dead_code)]
mod history;

fn run(args: &[String]) -> Result<(), String> {
    let [path, seed, every, rest @ ..] = args else {
        return Err(
            "usage: pt-journal-crash-child PATH SEED SNAPSHOT_EVERY_EVENTS [BATCHES]".into()
        );
    };
    let seed: u64 = seed.parse().map_err(|e| format!("seed: {e}"))?;
    let every: u64 = every.parse().map_err(|e| format!("snapshot every: {e}"))?;
    let batches: u64 = match rest.first() {
        Some(n) => n.parse().map_err(|e| format!("batches: {e}"))?,
        None => u64::MAX,
    };
    let abort = rest.get(1).is_some_and(|a| a == "abort");
    let config = JournalConfig { snapshot_every_events: every, ..JournalConfig::default() };
    let (journal, recovered) = Journal::open(path, config).map_err(|e| e.to_string())?;
    println!("ready {} {}", recovered.last_seq, recovered.digest);
    let mut history = history::History::new(recovered.state, seed, history::Shape::default());
    let mut last = recovered.last_seq.0;
    for _ in 0..batches {
        let events = history.next_batch();
        if events.is_empty() {
            continue;
        }
        let digest = history.state().digest();
        last += events.len() as u64;
        println!("begin {last} {digest}");
        let receipt = journal
            .append_batch(
                &events,
                Timestamp(1_700_000_000_000_000 + i64::try_from(last).unwrap_or(0)),
            )
            .map_err(|e| format!("{e} (writes halted: {})", journal.is_halted()))?;
        if receipt.last_seq.0 != last {
            return Err(format!("receipt says {}, expected {last}", receipt.last_seq));
        }
        println!("commit {last} {digest}");
        if journal.snapshot_due() {
            let snapshot =
                encode_snapshot(history.state(), receipt.last_seq).map_err(|e| e.to_string())?;
            let seq = journal.store_snapshot(snapshot).map_err(|e| e.to_string())?;
            println!("snapshot {seq}");
        }
    }
    if abort {
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        std::process::abort();
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pt-journal-crash-child: {e}");
            ExitCode::FAILURE
        }
    }
}
