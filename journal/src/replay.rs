//! Rebuilding state from the journal: recovery on open, and replays to any point in history.

use std::fmt;

use engine::{Digest, State, Timestamp};

use crate::config::VerifyOnOpen;
use crate::error::{OpenError, SnapshotError, SnapshotInvalid};
use crate::journal::Journal;
use crate::record::Seq;
use crate::snapshot::encode_snapshot;

/// How often (in records) a replay reports progress.
pub const PROGRESS_EVERY_RECORDS: u64 = 4096;

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayFrom {
    /// From the empty state, through every record.
    Genesis,
    /// From the newest valid snapshot at or before the stopping point; unusable snapshots are
    /// skipped with a warning.
    NewestSnapshot,
}

/// Where a replay stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayTo {
    /// After the last record.
    End,
    /// After this record (or the last one, if the journal is shorter).
    Seq(Seq),
    /// Before the first record appended after this time (`recorded_at > time`). Always replays
    /// from genesis: times need not be monotonic, so no snapshot can be trusted to be before it.
    Time(Timestamp),
}

/// What a replay does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Where it starts.
    pub from: ReplayFrom,
    /// Where it stops.
    pub to: ReplayTo,
    /// Whether the records a snapshot covers are verified (checksums and links) too.
    pub verify: VerifyOnOpen,
}

/// Something recovery worked around, and said so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryWarning {
    /// An unusable snapshot was skipped; the state was rebuilt from older data.
    SnapshotIgnored {
        /// The snapshot's key.
        seq: Seq,
        /// What is wrong with it.
        why: SnapshotInvalid,
    },
    /// After skipping snapshots, a fresh one was written (and the skipped ones deleted).
    SnapshotRewritten {
        /// The record the new snapshot covers.
        seq: Seq,
    },
    /// Writing the fresh snapshot failed; the next open replays more records.
    SnapshotRewriteFailed {
        /// The error.
        error: String,
    },
    /// The file's last commit did not verify and was rolled back to the one before
    /// (`UnverifiedLastCommit::RollBack`).
    LastCommitRolledBack,
}

impl fmt::Display for RecoveryWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SnapshotIgnored { seq, why } => {
                write!(f, "snapshot at record {seq} ignored ({why}); state rebuilt from the events")
            }
            Self::SnapshotRewritten { seq } => write!(f, "fresh snapshot written at record {seq}"),
            Self::SnapshotRewriteFailed { error } => {
                write!(f, "could not write a fresh snapshot: {error}")
            }
            Self::LastCommitRolledBack => write!(
                f,
                "the file was left by a crash and its last commit did not verify, so it was \
                 rolled back to the one before: what a crash during that commit leaves, or a \
                 storage fault in it (a full disk: the last run's log says so); either way it \
                 was never acknowledged. If that commit had returned before the crash, its pages \
                 were damaged since, and what it held (an interval's outcomes, perhaps) is lost"
            ),
        }
    }
}

/// The result of a replay.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// The state after the last record applied.
    pub state: State,
    /// The last record applied (`Seq(0)` if none).
    pub last_seq: Seq,
    /// When that record was appended (`None` for the empty state, or a snapshot's last record).
    pub last_recorded_at: Option<Timestamp>,
    /// The snapshot the replay started from, if any.
    pub snapshot_used: Option<Seq>,
    /// Records decoded and applied.
    pub events_replayed: u64,
    /// Snapshots skipped, and why.
    pub warnings: Vec<RecoveryWarning>,
}

/// What [`Journal::open`] recovered.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The state after the last record.
    pub state: State,
    /// The last record (`Seq(0)` for a new journal).
    pub last_seq: Seq,
    /// The state's digest.
    pub digest: Digest,
    /// The snapshot recovery started from, if any.
    pub snapshot_used: Option<Seq>,
    /// Records replayed after the snapshot.
    pub events_replayed: u64,
    /// What recovery worked around (also logged with `tracing::warn!`).
    pub warnings: Vec<RecoveryWarning>,
}

impl Journal {
    /// Rebuilds the state as of a point in history (see [`ReplayOptions`]). Every record read is
    /// verified and applied through `State::apply`; the invariants are checked on the result.
    /// `progress` is called with the last record applied every `PROGRESS_EVERY_RECORDS` records.
    pub fn replay(
        &self,
        options: ReplayOptions,
        progress: &mut dyn FnMut(Seq),
    ) -> Result<Replayed, OpenError> {
        replay(self, options, progress)
    }
}

/// The newest usable snapshot at or before `limit`, skipping (and reporting) unusable ones.
fn newest_snapshot(
    journal: &Journal,
    limit: Seq,
    warnings: &mut Vec<RecoveryWarning>,
) -> Result<Option<(State, Seq)>, OpenError> {
    let entries = journal.snapshots()?;
    for entry in entries.iter().rev() {
        if entry.seq > limit {
            continue;
        }
        match journal.load_snapshot(entry.seq) {
            Ok((state, info)) => return Ok(Some((state, info.last_seq))),
            Err(SnapshotError::Invalid { why, .. }) => {
                warnings.push(RecoveryWarning::SnapshotIgnored { seq: entry.seq, why });
            }
            Err(SnapshotError::Read(e)) => return Err(e.into()),
            Err(SnapshotError::Write(crate::error::WriteError::Storage(fault))) => {
                return Err(fault.into());
            }
            Err(other) => {
                warnings.push(RecoveryWarning::SnapshotIgnored {
                    seq: entry.seq,
                    why: SnapshotInvalid::Decode(other.to_string()),
                });
            }
        }
    }
    Ok(None)
}

pub(crate) fn replay(
    journal: &Journal,
    options: ReplayOptions,
    progress: &mut dyn FnMut(Seq),
) -> Result<Replayed, OpenError> {
    let path = journal.path().to_path_buf();
    let mut warnings = Vec::new();
    let limit = match options.to {
        ReplayTo::End | ReplayTo::Time(_) => Seq(u64::MAX),
        ReplayTo::Seq(seq) => seq,
    };
    let base = match (options.from, options.to) {
        (ReplayFrom::NewestSnapshot, ReplayTo::End | ReplayTo::Seq(_)) => {
            newest_snapshot(journal, limit, &mut warnings)?
        }
        _ => None,
    };
    let snapshot_used = base.as_ref().map(|(_, seq)| *seq);
    let (mut state, base_seq) = base.unwrap_or_else(|| (State::new(), Seq(0)));
    for warning in &warnings {
        tracing::warn!(path = %path.display(), "{warning}");
    }
    let start = match options.verify {
        VerifyOnOpen::FullChain => Seq(1),
        VerifyOnOpen::TailOnly => Seq(base_seq.0.saturating_add(1)),
    };
    let mut records = journal.read_records(start)?;
    let mut last_seq = base_seq;
    let mut last_recorded_at = None;
    let mut events_replayed = 0u64;
    let mut since_progress = 0u64;
    loop {
        if last_seq >= limit {
            break;
        }
        let decode = records.next_seq() > base_seq;
        let Some(item) = records.step(decode) else { break };
        let (header, event) = item?;
        since_progress += 1;
        if since_progress >= PROGRESS_EVERY_RECORDS {
            since_progress = 0;
            progress(header.seq);
        }
        let Some(event) = event else { continue };
        if let ReplayTo::Time(time) = options.to
            && header.recorded_at > time
        {
            break;
        }
        state.apply(&event).map_err(|source| OpenError::Apply {
            path: path.clone(),
            seq: header.seq,
            source,
        })?;
        last_seq = header.seq;
        last_recorded_at = Some(header.recorded_at);
        events_replayed += 1;
    }
    progress(last_seq);
    state.check_invariants().map_err(|source| OpenError::Invariant {
        path: path.clone(),
        seq: last_seq,
        source,
    })?;
    Ok(Replayed { state, last_seq, last_recorded_at, snapshot_used, events_replayed, warnings })
}

/// Recovery on open: the newest valid snapshot, the tail, the invariants; then a fresh snapshot
/// if any snapshot had to be skipped.
pub(crate) fn recover(journal: &Journal) -> Result<Recovered, OpenError> {
    let options = ReplayOptions {
        from: ReplayFrom::NewestSnapshot,
        to: ReplayTo::End,
        verify: journal.config().verify_on_open,
    };
    let replayed = replay(journal, options, &mut |_| {})?;
    if let Some(open) = replayed.state.interval_in_progress() {
        return Err(OpenError::EndsInsideInterval {
            path: journal.path().to_path_buf(),
            seq: replayed.last_seq,
            interval: open.id,
            orders: open.orders,
            outcomes: open.outcomes_applied,
        });
    }
    let mut warnings = replayed.warnings;
    // Logged by the open already.
    if journal.rolled_back_last_commit() {
        warnings.insert(0, RecoveryWarning::LastCommitRolledBack);
    }
    let ignored: Vec<Seq> = warnings
        .iter()
        .filter_map(|w| match w {
            RecoveryWarning::SnapshotIgnored { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    if !ignored.is_empty() && journal.halted().is_none() {
        let rewritten = encode_snapshot(&replayed.state, replayed.last_seq)
            .and_then(|snap| journal.store_snapshot_replacing(snap, &ignored));
        let warning = match rewritten {
            Ok(seq) => RecoveryWarning::SnapshotRewritten { seq },
            Err(e) => RecoveryWarning::SnapshotRewriteFailed { error: e.to_string() },
        };
        tracing::warn!(path = %journal.path().display(), "{warning}");
        warnings.push(warning);
    }
    let digest = replayed.state.digest();
    tracing::info!(
        path = %journal.path().display(),
        last_seq = replayed.last_seq.0,
        snapshot = ?replayed.snapshot_used.map(|s| s.0),
        replayed = replayed.events_replayed,
        %digest,
        "journal recovered"
    );
    Ok(Recovered {
        state: replayed.state,
        last_seq: replayed.last_seq,
        digest,
        snapshot_used: replayed.snapshot_used,
        events_replayed: replayed.events_replayed,
        warnings,
    })
}
