//! `pt-replay`: audits, rebuilds and questions a master's journal (offline: stop the master
//! first). Exit status: 0 on success; 1 when the command found a problem (`audit` on a damaged
//! journal) or failed; `audit` exits 2 when it could not read the journal at all. A command
//! that only reads (`audit`, `show`, `explain`) leaves the file byte for byte as it was, even
//! one a crash left (redb's recovery runs in memory, `journal::Journal::open_read_only`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pt_tools::replay::{self, Outcome};

/// Audit, rebuild and question a PaperTrader journal.
#[derive(Debug, Parser)]
#[command(name = "pt-replay", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Verify every record (checksums, links), replay from genesis, check the invariants and
    /// every snapshot; one line (or --json) with events, accounts, digest and events/s.
    Audit(replay::audit::AuditArgs),
    /// Rebuild the state from the events alone and store it as a fresh snapshot.
    Rebuild(replay::rebuild::RebuildArgs),
    /// The state as of any point: accounts, cash, holdings, history.
    Show(replay::show::ShowArgs),
    /// Why an order filled or was rejected: the tick, price and balances it saw.
    Explain(replay::explain::ExplainArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    // Replays, and `rebuild`'s writes, reuse their buffers as the master's do (journal::heap).
    journal::heap::keep_commit_buffers();
    // redb checks every page when it opens the file, but a panic while reading (a page damaged
    // in a way the check cannot see, or a bug) still ends as a report, not a crash: the panic's
    // message and place go to stderr as Rust prints them, and the command fails.
    let run = std::panic::catch_unwind(|| match &cli.command {
        Command::Audit(args) => (replay::audit::run(args), ExitCode::from(2)),
        Command::Rebuild(args) => (replay::rebuild::run(args), ExitCode::FAILURE),
        Command::Show(args) => (replay::show::run(args), ExitCode::FAILURE),
        Command::Explain(args) => (replay::explain::run(args), ExitCode::FAILURE),
    });
    let Ok((result, cannot_run)) = run else {
        let message = "the read panicked (its message is on stderr): a page of the file is \
                       damaged, or this is a bug";
        match &cli.command {
            // The audit's report, as for any problem it finds (JSON with --json).
            Command::Audit(args) => {
                let _ = pt_tools::print_out(&replay::audit::panicked(args, message).output);
            }
            _ => eprintln!("pt-replay: {message}"),
        }
        return ExitCode::FAILURE;
    };
    match result {
        Ok(Outcome { output, success }) => match pt_tools::print_out(&output) {
            Ok(()) if success => ExitCode::SUCCESS,
            Ok(()) => ExitCode::FAILURE,
            Err(err) => {
                eprintln!("pt-replay: cannot write the output: {err}");
                ExitCode::FAILURE
            }
        },
        Err(err) => {
            eprintln!("pt-replay: {}", master::report::chain(&*err));
            cannot_run
        }
    }
}
