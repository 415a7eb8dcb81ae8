//! Shared code of the PaperTrader command-line tools: `pt` (the client and local cluster) and
//! `pt-replay` (journal audits).

pub mod bench;
pub mod client;
pub mod replay;
pub mod simulate;
pub mod up;

use std::io::Write as _;

/// A wrong argument that clap cannot check (a combination, a file that is not there): exit
/// status 2, for `pt bench` and `pt simulate` alike.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Writes `text` to standard output and flushes it, ending it with a newline if it has none.
/// A reader that closed the pipe before reading it all (`pt history | head`) is not an error:
/// what it did not read is dropped, as every command-line tool does. Any other failure to write
/// is returned (the caller reports it and fails).
pub fn print_out(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let written = out
        .write_all(text.as_bytes())
        .and_then(|()| if text.ends_with('\n') { Ok(()) } else { out.write_all(b"\n") })
        .and_then(|()| out.flush());
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
