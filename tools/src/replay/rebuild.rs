//! `pt-replay rebuild`: the state rebuilt from the events alone, stored as a fresh snapshot.

use std::time::Instant;

use anyhow::Context as _;
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
