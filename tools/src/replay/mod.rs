//! `pt-replay`: audits, rebuilds and questions a master's journal, offline (the master holds the
//! file's lock while it runs). Each command renders its report as text or JSON; the binary
//! prints it and exits 0 on success, 1 when the command found a problem (a damaged journal, an
//! unknown order) and 2 when it could not run.

pub mod audit;
pub mod explain;
pub mod rebuild;
pub mod show;
pub mod time;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};
use journal::{Journal, JournalConfig, Seq};

/// The data directory argument shared by every command.
#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// The master's data directory (the journal is `DIR/papertrader.redb`).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
}

/// What a command produced: the text to print and whether it found nothing wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The report, without a trailing newline.
    pub output: String,
    /// False when the command found a problem (exit status 1).
    pub success: bool,
}

impl Outcome {
    /// A successful outcome.
    pub fn ok(output: String) -> Self {
        Self { output, success: true }
    }
}

/// What a command does to the journal's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only (`audit`, `show`, `explain`): the file is opened read-only and left byte for
    /// byte as it was ([`Journal::open_read_only`]), even when a crash left it needing redb's
    /// recovery (done in memory).
    Read,
    /// Writes (`rebuild` stores a snapshot).
    Write,
}

/// Opens the journal of a data directory, without replaying it (the commands verify what they
/// read themselves). Refuses a missing or empty file rather than making a new journal of it
/// (which an audit would then call clean).
pub fn open_journal(data: &Path, access: Access) -> anyhow::Result<Journal> {
    let path = journal::path_in(data);
    if !path.is_file() {
        bail!("no journal at {} (is --data the master's data directory?)", path.display());
    }
    let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if len == 0 {
        bail!(
            "{} is empty: not a journal (a master that never started, or a truncated copy)",
            path.display()
        );
    }
    // A last commit that does not verify is reported, not rolled back: the tools never roll
    // back what they audit (the master's open does, and says so).
    let config = JournalConfig {
        unverified_last_commit: journal::UnverifiedLastCommit::Refuse,
        ..JournalConfig::default()
    };
    let opened = match access {
        Access::Read => Journal::open_read_only(&path, config),
        Access::Write => Journal::open_unrecovered(&path, config),
    };
    opened.with_context(|| format!("cannot open {}", path.display()))
}

/// A progress bar over sequence numbers up to `last`, drawn on stderr only when stderr is a
/// terminal and not in CI; hidden otherwise.
pub fn progress_bar(last: Seq, what: &'static str) -> ProgressBar {
    let interactive = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
    if !interactive || last.0 < 100_000 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(last.0);
    let style = ProgressStyle::with_template(
        "{msg} [{bar:40}] {pos}/{len} records ({per_sec}, {eta} left)",
    )
    .map(|s| s.progress_chars("=> "));
    if let Ok(style) = style {
        bar.set_style(style);
    }
    bar.set_message(what);
    bar
}

/// Events per second, without floats: `count` over `elapsed`.
pub fn per_second(count: u64, elapsed: std::time::Duration) -> u64 {
    let nanos = elapsed.as_nanos().max(1);
    u64::try_from(u128::from(count) * 1_000_000_000 / nanos).unwrap_or(u64::MAX)
}
