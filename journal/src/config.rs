//! How a journal is opened and when it snapshots.

/// What [`crate::Journal::open`] verifies before it trusts the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VerifyOnOpen {
    /// Checksums and links of every record from genesis (cheap: no decoding before the
    /// snapshot), then decode and replay the tail after the snapshot. The default.
    #[default]
    FullChain,
    /// Only the records after the snapshot used; the records it covers are left to
    /// `pt-replay audit`.
    TailOnly,
}

/// Journal settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// [`crate::Journal::snapshot_due`] turns true once this many events were appended after the
    /// newest snapshot.
    pub snapshot_every_events: u64,
    /// How many of the newest snapshots to keep (1 to `limits::SNAPSHOTS_KEPT_MAX`).
    pub snapshots_kept: usize,
    /// What opening verifies.
    pub verify_on_open: VerifyOnOpen,
    /// Most memory redb may use to cache pages, in bytes.
    pub cache_bytes: usize,
    /// What opening does when the file's last commit does not verify.
    pub unverified_last_commit: UnverifiedLastCommit,
}

/// What opening does when the file's last commit does not verify (its pages' checksums fail).
/// That is what a crash during a commit leaves (the commit never finished, so nothing of it was
/// acknowledged), and also what damage to the last commit's pages since looks like: the two
/// cannot be told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnverifiedLastCommit {
    /// Fall back to the commit before, as redb's recovery does, and say so
    /// (`RecoveryWarning::LastCommitRolledBack`): the master's choice, so that a crash during
    /// a commit does not keep it from starting.
    #[default]
    RollBack,
    /// Refuse to open (`OpenError::LastCommitUnverified`) without rolling it back: the tools'
    /// choice, so that an audit never rolls a journal back itself.
    Refuse,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            snapshot_every_events: 100_000,
            snapshots_kept: 2,
            verify_on_open: VerifyOnOpen::FullChain,
            cache_bytes: 16 * 1024 * 1024,
            unverified_last_commit: UnverifiedLastCommit::RollBack,
        }
    }
}
