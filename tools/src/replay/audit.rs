//! `pt-replay audit`: every record verified and replayed from genesis; see [`journal::audit()`].

use std::time::Instant;

use journal::{AuditConfig, AuditReport};
use serde_json::json;

use super::{Access, DataArgs, Outcome, open_journal, per_second, progress_bar};

/// Arguments of `pt-replay audit`.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    /// The data directory.
    pub data: DataArgs,
    /// Check the engine invariants (linear in the history) every this many events, besides at
    /// every snapshot and at the end.
    #[arg(long, value_name = "EVENTS", default_value_t = AuditConfig::default().invariants_every_events,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub invariants_every: u64,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs the audit. Not successful when it found a problem; `Err` when it could not read.
pub fn run(args: &AuditArgs) -> anyhow::Result<Outcome> {
    let journal = match open_journal(&args.data.data, Access::Read) {
        Ok(journal) => journal,
        // A file that opens as damaged is what an audit is for: a problem found (exit 1, and
        // a report like any other), not a run that could not start (exit 2).
        Err(e) => match damage_found_opening(&e) {
            Some(message) => return Ok(damaged_file(args, &message)),
            None => return Err(e),
        },
    };
    let bar = progress_bar(journal.last_seq(), "auditing");
    let config = AuditConfig { invariants_every_events: args.invariants_every };
    let start = Instant::now();
    let report = journal::audit(&journal, config, &mut |seq| bar.set_position(seq.0))?;
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    let rate = per_second(report.events, elapsed);
    let millis = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    let output = if args.json {
        render_json(&report, rate, millis, &journal.path().display().to_string())
    } else {
        render_text(&report, rate, millis)
    };
    Ok(Outcome { output, success: report.is_clean() })
}

/// The message of an open that failed because the file is damaged (not because it is missing,
/// in use or unreadable for the machine's reasons).
fn damage_found_opening(error: &anyhow::Error) -> Option<String> {
    let open = error.chain().find_map(|e| e.downcast_ref::<journal::OpenError>())?;
    let damaged = match open {
        journal::OpenError::LastCommitUnverified { .. } | journal::OpenError::NoFormat { .. } => {
            true
        }
        // redb's "not a redb database" (a damaged first page) is an I/O error of kind
        // InvalidData: the file, not the machine.
        journal::OpenError::Storage(fault) => {
            fault.corrupted || fault.io_kind == Some(std::io::ErrorKind::InvalidData)
        }
        _ => false,
    };
    damaged.then(|| open.to_string())
}

/// The report of an audit whose read panicked (`pt-replay` contains it): a problem found, of
/// kind `panic`, nothing verified.
pub fn panicked(args: &AuditArgs, message: &str) -> Outcome {
    nothing_verified(args, "panic", message)
}

/// The report of a file damaged past opening: no record could be checked.
fn damaged_file(args: &AuditArgs, message: &str) -> Outcome {
    nothing_verified(args, "file", message)
}

/// A report of `kind` where no record could be checked.
fn nothing_verified(args: &AuditArgs, kind: &str, message: &str) -> Outcome {
    let file = journal::path_in(&args.data.data).display().to_string();
    let output = if args.json {
        // The fields of every report, empty: nothing could be read.
        json!({
            "file": file,
            "clean": false,
            "events": 0,
            "last_seq": 0,
            "accounts": 0,
            "digest": null,
            "events_per_second": 0,
            "elapsed_ms": 0,
            "snapshots_verified": 0,
            "invariant_checks": 0,
            "notes": [],
            "problem": { "seq": 0, "kind": kind, "message": message },
        })
        .to_string()
    } else {
        format!("FAILED opening the file: {message}")
    };
    Outcome { output, success: false }
}

fn render_text(report: &AuditReport, rate: u64, millis: u64) -> String {
    let mut out = match &report.problem {
        None => format!(
            "clean: {} events, {} accounts, digest {}, {rate} events/s ({millis} ms; {} snapshots \
             verified, {} invariant checks)",
            report.events,
            report.accounts,
            report.digest,
            report.snapshots_verified,
            report.invariant_checks,
        ),
        Some(problem) => format!(
            "FAILED at sequence number {}: {} problem: {} ({} events applied before it was found)",
            problem.seq,
            problem.kind.as_str(),
            problem.message,
            report.events,
        ),
    };
    for note in &report.notes {
        out.push_str("\nnote: ");
        out.push_str(note);
    }
    out
}

fn render_json(report: &AuditReport, rate: u64, millis: u64, file: &str) -> String {
    let problem = report
        .problem
        .as_ref()
        .map(|p| json!({ "seq": p.seq.0, "kind": p.kind.as_str(), "message": p.message }));
    json!({
        "file": file,
        "clean": report.is_clean(),
        "events": report.events,
        "last_seq": report.last_seq.0,
        "accounts": report.accounts,
        "digest": report.digest.to_string(),
        "events_per_second": rate,
        "elapsed_ms": millis,
        "snapshots_verified": report.snapshots_verified,
        "invariant_checks": report.invariant_checks,
        "notes": report.notes,
        "problem": problem,
    })
    .to_string()
}
