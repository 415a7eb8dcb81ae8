//! The process's open-file limit. Every connection is a file descriptor, so a server that may
//! hold N connections needs a soft `RLIMIT_NOFILE` above N. Linux starts most processes with a
//! soft limit of 1,024 and a much higher hard one: past the soft limit `accept` fails (`EMFILE`)
//! and a client waits in the backlog instead of getting the server's `busy`. So a server raises
//! its soft limit to the hard one at start, as Go's runtime does for every program, and says
//! when even the hard limit is below what its configuration may need.

/// The highest soft limit asked for: Linux refuses more than `fs.nr_open` (1,048,576 by
/// default), and a hard limit of "unlimited" is not a number to ask for.
const SOFT_LIMIT_MAX: u64 = 1 << 20;

/// The open-file limits before and after [`raise_open_files_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFilesLimit {
    /// The soft limit the process started with.
    pub before: u64,
    /// The soft limit now.
    pub now: u64,
    /// The hard limit (the most the soft limit may be raised to without privileges).
    pub hard: u64,
}

impl OpenFilesLimit {
    /// Whether the soft limit now leaves room for `wanted` descriptors.
    pub fn allows(&self, wanted: u64) -> bool {
        self.now >= wanted
    }
}

/// Raises the soft open-file limit to the hard one (at most 2^20); never lowers it. Returns the
/// limits, or the OS error (the limit is then as it was). On a platform without the limit,
/// reports it as unbounded.
pub fn raise_open_files_limit() -> std::io::Result<OpenFilesLimit> {
    if !rlimit::Resource::NOFILE.is_supported() {
        return Ok(OpenFilesLimit { before: u64::MAX, now: u64::MAX, hard: u64::MAX });
    }
    let (before, hard) = rlimit::Resource::NOFILE.get()?;
    let target = hard.min(SOFT_LIMIT_MAX);
    if before < target {
        rlimit::Resource::NOFILE.set(target, hard)?;
    }
    let (now, hard) = rlimit::Resource::NOFILE.get()?;
    Ok(OpenFilesLimit { before, now, hard })
}
