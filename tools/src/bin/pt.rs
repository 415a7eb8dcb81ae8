//! `pt`: the PaperTrader command-line tool. Exit status: 0 on success, 1 when the server refused
//! (the reason on stderr) or the command failed, 2 on usage errors.

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use pt_tools::client::commands::{self, ClientCommand};

/// PaperTrader: paper trading with real prices and fake money.
#[derive(Debug, Parser)]
#[command(
    name = "pt",
    version,
    after_help = "Start with `pt up` (a local PaperTrader), then `pt register`, `pt login`, \
                  `pt buy`. Exit status: 0 success, 1 refused by the server (reason on stderr) or \
                  failed, 2 usage error. See docs/CLIENT.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Client(ClientCommand),
    /// Start a local PaperTrader (a master and N workers on loopback, in this process) and run
    /// until Ctrl-C.
    Up(pt_tools::up::UpArgs),
    /// Settle a recorded order stream against recorded prices with the engine alone (no
    /// servers, no files written) and print the outcome.
    Simulate(pt_tools::simulate::SimulateArgs),
    /// Measure performance beside baselines measured in the same run (docs/PERFORMANCE.md).
    Bench(pt_tools::bench::BenchArgs),
}

/// Prints a command's output (`pt_tools::print_out`): success, unless it could not be written.
fn printed(text: &str) -> ExitCode {
    match pt_tools::print_out(text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pt: cannot write the output: {err}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    // An environment variable set but empty counts as unset (`PT_MASTER= pt workers`).
    let matches = master::config::empty_env_as_unset(Cli::command()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Up(args) => match pt_tools::up::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("pt up: {}", master::report::chain(&*err));
                if err.downcast_ref::<pt_tools::up::ConfigError>().is_some() {
                    ExitCode::from(2)
                } else {
                    ExitCode::FAILURE
                }
            }
        },
        Command::Bench(args) => match pt_tools::bench::run(&args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("pt bench: {}", master::report::chain(&*err));
                if err.downcast_ref::<pt_tools::UsageError>().is_some() {
                    ExitCode::from(2)
                } else {
                    ExitCode::FAILURE
                }
            }
        },
        Command::Simulate(args) => match pt_tools::simulate::run(&args) {
            Ok(text) => printed(&text),
            Err(err) => {
                eprintln!("pt: {}", master::report::chain(&*err));
                if err.downcast_ref::<pt_tools::UsageError>().is_some() {
                    ExitCode::from(2)
                } else {
                    ExitCode::FAILURE
                }
            }
        },
        Command::Client(command) => {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(err) => {
                    eprintln!("pt: cannot start the async runtime: {err}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(commands::run(&command)) {
                Ok(text) => printed(&text),
                Err(err) => {
                    eprintln!("pt: {err}");
                    ExitCode::from(err.exit_code())
                }
            }
        }
    }
}
