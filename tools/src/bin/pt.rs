//! `pt`: the PaperTrader command-line tool.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// PaperTrader: paper trading with real prices and fake money.
#[derive(Debug, Parser)]
#[command(name = "pt", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Settle a recorded order stream against recorded prices with the engine alone (no
    /// servers, no files written) and print the outcome.
    Simulate(pt_tools::simulate::SimulateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Simulate(args) => pt_tools::simulate::run(&args).map(|text| println!("{text}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pt: {err:#}");
            ExitCode::FAILURE
        }
    }
}
