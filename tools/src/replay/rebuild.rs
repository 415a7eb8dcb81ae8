//! `pt-replay rebuild`: the state rebuilt from the events alone, stored as a fresh snapshot.

use std::time::Instant;

use anyhow::{Context as _, bail};
use journal::{ReplayFrom, ReplayOptions, ReplayTo, VerifyOnOpen, encode_snapshot};
use serde_json::json;

use super::{Access, DataArgs, Outcome, open_journal, per_second, progress_bar};

/// Arguments of `pt-replay rebuild`.
#[derive(Debug, Clone, clap::Args)]
pub struct RebuildArgs {
    #[command(flatten)]
    /// The data directory.
    pub data: DataArgs,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    pub json: bool,
    /// Rebuild even when a stored snapshot covers records past the journal's end (records
    /// committed before it are gone): the rebuild deletes that snapshot, the one sign of it.
    #[arg(long)]
    pub accept_lost_records: bool,
}

/// Replays every record from genesis (verifying each), checks the invariants and stores the
/// state as a snapshot at the last record. Stored snapshots are not read.
pub fn run(args: &RebuildArgs) -> anyhow::Result<Outcome> {
    let journal = open_journal(&args.data.data, Access::Write)?;
    let bar = progress_bar(journal.last_seq(), "replaying");
    let options = ReplayOptions {
        from: ReplayFrom::Genesis,
        to: ReplayTo::End,
        verify: VerifyOnOpen::FullChain,
    };
    let start = Instant::now();
    let replayed = journal.replay(options, &mut |seq| bar.set_position(seq.0))?;
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    // A journal that ends inside an interval does not open (its header announced outcomes
    // that never came): a snapshot of it would only hide that.
    if let Some(open) = replayed.state.interval_in_progress() {
        return Err(journal::OpenError::EndsInsideInterval {
            path: journal.path().to_path_buf(),
            seq: replayed.last_seq,
            interval: open.id,
            orders: open.orders,
            outcomes: open.outcomes_applied,
        }
        .into());
    }
    // A snapshot past the end is the one sign that records committed before it are gone
    // (docs/JOURNAL.md); storing a new snapshot deletes it, so that is not done silently.
    let past_end: Vec<String> = journal
        .snapshots()?
        .iter()
        .filter(|s| s.seq > replayed.last_seq)
        .map(|s| s.seq.to_string())
        .collect();
    if !past_end.is_empty() && !args.accept_lost_records {
        bail!(
            "{}: the snapshot at record {} covers records past the journal's end (record {}): \
             records committed before it are gone (a disk that lost acknowledged writes, or an \
             older copy of the file). A rebuild would delete that snapshot, the one sign of it: \
             restore the file from a backup, or pass --accept-lost-records to rebuild from what \
             is there",
            journal.path().display(),
            past_end.join(", "),
            replayed.last_seq
        );
    }
    let snapshot = encode_snapshot(&replayed.state, replayed.last_seq)?;
    let (bytes, digest) = (snapshot.len(), snapshot.digest());
    let seq = journal.store_snapshot(snapshot).context("storing the snapshot")?;
    let rate = per_second(replayed.events_replayed, elapsed);
    let output = if args.json {
        json!({
            "file": journal.path().display().to_string(),
            "events": replayed.events_replayed,
            "snapshot_seq": seq.0,
            "snapshot_bytes": bytes,
            "accounts": replayed.state.accounts().len(),
            "digest": digest.to_string(),
            "events_per_second": rate,
        })
        .to_string()
    } else {
        format!(
            "rebuilt from {} events ({rate} events/s): {} accounts, digest {digest}; snapshot of \
             {bytes} bytes stored at sequence number {seq}",
            replayed.events_replayed,
            replayed.state.accounts().len(),
        )
    };
    Ok(Outcome::ok(output))
}
