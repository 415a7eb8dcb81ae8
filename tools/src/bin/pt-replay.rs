//! `pt-replay`: audits, rebuilds and questions a master's journal (offline: stop the master
//! first). Exit status: 0 on success; 1 when the command found a problem (`audit` on a damaged
//! journal) or failed; `audit` exits 2 when it could not read the journal at all. A command
//! that only reads (`audit`, `show`, `explain`) leaves the file byte for byte as it was,
//! unless a crash left it needing redb's recovery, which runs first and says so.

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
    // A file opened read-only is not page-checked by redb first (that check writes), so a page
    // damaged on disk can make redb panic when it is read: that is damage found, reported as a
    // failure with the log line, not a crash.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!("redb panicked reading the journal: {info}");
    }));
    let run = std::panic::catch_unwind(|| match &cli.command {
        Command::Audit(args) => (replay::audit::run(args), ExitCode::from(2)),
        Command::Rebuild(args) => (replay::rebuild::run(args), ExitCode::FAILURE),
        Command::Show(args) => (replay::show::run(args), ExitCode::FAILURE),
        Command::Explain(args) => (replay::explain::run(args), ExitCode::FAILURE),
    });
    let Ok((result, cannot_run)) = run else {
        println!(
            "FAILED reading the file: the read panicked (the log line above says where): a page \
             of the file is damaged, or this is a bug"
        );
        return ExitCode::FAILURE;
    };
    match result {
        Ok(Outcome { output, success }) => {
            println!("{output}");
            if success { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(err) => {
            eprintln!("pt-replay: {}", master::report::chain(&*err));
            cannot_run
        }
    }
}
