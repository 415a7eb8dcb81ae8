//! Errors, one enum per operation. Every error about stored bytes names the file and the
//! sequence number; none of them is ever silently skipped or repaired.

use std::io;
use std::path::PathBuf;

use engine::{ApplyError, Digest, InvariantError};

use crate::limits::{BATCH_BYTES_MAX, BATCH_EVENTS_MAX, EVENT_BYTES_MAX};
use crate::record::{BATCH_LAYOUT_VERSION, RECORD_FORMAT_VERSION, Seq};
use crate::snapshot::SNAPSHOT_FORMAT_VERSION;

/// What is wrong with a stored record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// The record stored after `expected - 1` is not `expected`: a gap or a reordering of keys.
    #[error("expected record {expected} next, found record {found} (a gap or a reordering)")]
    Gap {
        /// The sequence number that should come next.
        expected: Seq,
        /// The key found instead.
        found: Seq,
    },
    /// A record layout this build cannot read.
    #[error(
        "record format version {0} is not supported (this build reads {RECORD_FORMAT_VERSION} \
         and {BATCH_LAYOUT_VERSION})"
    )]
    RecordFormat(u16),
    /// An event encoding this build cannot read.
    #[error(
        "event format version {0} is not supported (this build reads {rkyv}, {compact} and \
         {batch})",
        rkyv = crate::record::RKYV_EVENT_FORMAT,
        compact = crate::payload::COMPACT_EVENT_FORMAT,
        batch = crate::payload::BATCH_EVENT_FORMAT
    )]
    EventFormat(u16),
    /// A batch does not hold together: a layout-2 batch without records, a worker table that
    /// does not fit or names a worker twice, a record count past the last sequence number,
    /// bytes after the last record, a record length not in its shortest form or over the
    /// limit, or a batch under key 0.
    #[error("batch framing is damaged: {0}")]
    Framing(String),
    /// Fewer bytes than a record header.
    #[error("record is {0} bytes, shorter than its header")]
    Truncated(usize),
    /// The bytes do not match their checksum: the record was changed after it was written.
    #[error("checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum {
        /// The checksum in the record.
        stored: u32,
        /// The checksum of the bytes as read.
        computed: u32,
    },
    /// The payload length field disagrees with the record's size.
    #[error("payload length field says {declared} bytes, the record holds {actual}")]
    Length {
        /// The length field.
        declared: u64,
        /// The bytes present.
        actual: u64,
    },
    /// The record carries another sequence number than the key it is stored under.
    #[error("record stored under this key carries sequence number {0} (moved or reordered)")]
    SeqMismatch(Seq),
    /// The record's link does not match the checksum of the record before it.
    #[error("link to the previous record is {found:08x}, its checksum is {expected:08x}")]
    BrokenLink {
        /// The checksum of the previous record.
        expected: u32,
        /// The link stored in this record.
        found: u32,
    },
    /// The payload passed its checksum but is not a valid event (bytecheck refused it).
    #[error("event payload does not decode: {0}")]
    Payload(String),
    /// The record is absent although the journal's head says it was committed.
    #[error("record is missing (the journal's head is record {head})")]
    Missing {
        /// The head stored in the file.
        head: Seq,
    },
    /// The record lies after the journal's head: it was not written by a commit of the journal.
    #[error("record lies after the journal's head, record {head}")]
    PastHead {
        /// The head stored in the file.
        head: Seq,
    },
}

/// A storage failure: an I/O error from the disk (full, failing, read-only), or redb refusing
/// its own file. The write that failed was not acknowledged, and nothing committed before it is
/// damaged: redb commits atomically, so a reopen finds the failed commit whole (only its final
/// sync failed) or rolls it back to the one before (it was cut short).
/// [`AppendError::may_be_stored`] says when a batch may be on disk all the same.
#[derive(Debug, Clone, thiserror::Error)]
#[error("journal {}: storage fault while {op}: {detail}{}", path.display(), self.hint())]
pub struct StorageFault {
    /// The journal file.
    pub path: PathBuf,
    /// What the journal was doing.
    pub op: &'static str,
    /// The kind of the underlying I/O error, when it was one.
    pub io_kind: Option<io::ErrorKind>,
    /// The underlying error's message.
    pub detail: String,
    /// True when redb found the file damaged (a checksum that fails, a tree it cannot
    /// repair), as opposed to an I/O error: the file, not the machine, is at fault.
    pub corrupted: bool,
}

impl StorageFault {
    /// True when the disk (or a quota, or a file size limit) is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self.io_kind,
            Some(
                io::ErrorKind::StorageFull
                    | io::ErrorKind::FileTooLarge
                    | io::ErrorKind::QuotaExceeded
            )
        )
    }

    fn hint(&self) -> &'static str {
        if self.is_disk_full() {
            " (the disk is full: this write was not acknowledged; free space, then reopen)"
        } else {
            ""
        }
    }

    pub(crate) fn new(
        path: &std::path::Path,
        op: &'static str,
        err: impl Into<redb::Error>,
    ) -> Self {
        let err: redb::Error = err.into();
        let io_kind = match &err {
            redb::Error::Io(e) => Some(e.kind()),
            _ => None,
        };
        let corrupted = matches!(err, redb::Error::Corrupted(_));
        Self { path: path.to_path_buf(), op, io_kind, detail: err.to_string(), corrupted }
    }
}

/// Where a storage error happened: the file and the operation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fault<'a>(pub &'a std::path::Path, pub &'static str);

/// Turns redb errors into [`StorageFault`]s.
pub(crate) trait OrFault<T> {
    /// The value, or the error as a fault at `at`.
    fn or_fault(self, at: Fault<'_>) -> Result<T, StorageFault>;
}

impl<T, E: Into<redb::Error>> OrFault<T> for Result<T, E> {
    fn or_fault(self, at: Fault<'_>) -> Result<T, StorageFault> {
        self.map_err(|e| StorageFault::new(at.0, at.1, e))
    }
}

/// Reading records failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    /// A stored record is damaged; reading stops there.
    #[error("journal {}: record {seq}: {what}", path.display())]
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// The record's sequence number.
        seq: Seq,
        /// What is wrong.
        what: Corruption,
    },
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageFault),
}

impl ReadError {
    /// The sequence number of the damaged record, if this is corruption.
    pub fn seq(&self) -> Option<Seq> {
        match self {
            Self::Corrupt { seq, .. } => Some(*seq),
            Self::Storage(_) => None,
        }
    }
}

/// Opening (and recovering) a journal failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OpenError {
    /// Another process has the file open (is the master running?).
    #[error("journal {}: in use by another process (is the master running?)", path.display())]
    Busy {
        /// The journal file.
        path: PathBuf,
    },
    /// The file was written by another version of the journal.
    #[error("journal {}: file format version {found}, this build reads {expected}", path.display())]
    FormatVersion {
        /// The journal file.
        path: PathBuf,
        /// The version in the file.
        found: u64,
        /// The version this build writes.
        expected: u64,
    },
    /// The file holds records but not the journal's format row: damaged, and not taken for a
    /// new file (which would reset its head over its records).
    #[error("journal {}: holds records but no format row: the file is damaged (restore it from a backup)", path.display())]
    NoFormat {
        /// The journal file.
        path: PathBuf,
    },
    /// The file exists but is empty: a truncated copy, or a file whose creation was cut off.
    /// It is not taken for a new journal (a truncated backup would silently start over with
    /// no accounts); deleting it is the operator's call.
    #[error("journal {}: the file is empty, so it is not a journal (a truncated copy?); restore it from a backup, or delete it to start a new journal", path.display())]
    Empty {
        /// The journal file.
        path: PathBuf,
    },
    /// The file's last commit does not verify, and the configuration says not to roll it back
    /// (`UnverifiedLastCommit::Refuse`, the tools); nothing was changed.
    #[error(
        "journal {}: it was left by a crash, and its last commit does not verify (the crash tore \
         it, or its pages were damaged since): opening it as the master does falls back to the \
         commit before if that one verifies (and cannot open it otherwise); copy the file first \
         to keep it",
        path.display()
    )]
    LastCommitUnverified {
        /// The journal file.
        path: PathBuf,
    },
    /// A record failed its checksum, link or decoding.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A record decoded but the state refuses it: the event stream is inconsistent.
    #[error("journal {}: record {seq}: event does not apply to the state: {source}", path.display())]
    Apply {
        /// The journal file.
        path: PathBuf,
        /// The record.
        seq: Seq,
        /// Why the state refused it.
        source: ApplyError,
    },
    /// The recovered state breaks an engine invariant.
    #[error("journal {}: state after record {seq} breaks an invariant: {source}", path.display())]
    Invariant {
        /// The journal file.
        path: PathBuf,
        /// The last record applied.
        seq: Seq,
        /// The broken invariant.
        source: InvariantError,
    },
    /// The journal ends inside an interval: its header announced more outcomes than follow it.
    /// The master writes an interval's header and outcomes in one batch, so only a damaged or
    /// forged file ends like this; settling on from it would be refused interval after interval.
    #[error(
        "journal {}: it ends inside interval {interval} (record {seq}): {outcomes} of its \
         {orders} outcomes are recorded; the file is damaged (`pt-replay audit` tells more)",
        path.display()
    )]
    EndsInsideInterval {
        /// The journal file.
        path: PathBuf,
        /// The last record.
        seq: Seq,
        /// The interval.
        interval: engine::IntervalId,
        /// Orders its header announced.
        orders: u64,
        /// Outcomes recorded after it.
        outcomes: u64,
    },
    /// The configuration is out of range.
    #[error("invalid journal config: {0}")]
    Config(&'static str),
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageFault),
}

impl OpenError {
    /// The sequence number of the record at fault, if any.
    pub fn seq(&self) -> Option<Seq> {
        match self {
            Self::Read(e) => e.seq(),
            Self::Apply { seq, .. }
            | Self::Invariant { seq, .. }
            | Self::EndsInsideInterval { seq, .. } => Some(*seq),
            _ => None,
        }
    }
}

/// Appending a batch failed; it was not acknowledged ([`AppendError::may_be_stored`] says
/// whether it may be on disk all the same).
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// A batch without events.
    #[error("an empty batch cannot be appended")]
    EmptyBatch,
    /// More events than one batch may hold.
    #[error("a batch of {0} events, at most {BATCH_EVENTS_MAX} are allowed")]
    BatchTooLarge(usize),
    /// A batch whose records together are over `limits::BATCH_BYTES_MAX`.
    #[error("a batch of {0} bytes, at most {BATCH_BYTES_MAX} are allowed")]
    BatchBytesTooLarge(usize),
    /// An event too large to store.
    #[error("event {index} of the batch encodes to {bytes} bytes, at most {EVENT_BYTES_MAX}")]
    EventTooLarge {
        /// Its index in the batch.
        index: usize,
        /// Its encoded size.
        bytes: usize,
    },
    /// An event that does not encode.
    #[error("event {index} of the batch does not encode: {detail}")]
    Encode {
        /// Its index in the batch.
        index: usize,
        /// The encoder's message.
        detail: String,
    },
    /// A meta key or value over its limit.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The key of the next record is taken: the file was changed behind the journal's back.
    #[error("journal {}: record {seq} already exists; was the file written by another process?", path.display())]
    SeqTaken {
        /// The journal file.
        path: PathBuf,
        /// The sequence number.
        seq: Seq,
    },
}

impl AppendError {
    /// Whether the batch may be on disk all the same: only a storage fault can come from the
    /// commit itself, after redb may have made it durable. Every other error is raised before
    /// anything is written (a halted journal, a batch refused by its limits, a taken key).
    pub fn may_be_stored(&self) -> bool {
        matches!(self, Self::Write(WriteError::Storage(_)))
    }

    /// The storage fault, if the append failed on one (then writes are halted until the
    /// journal is reopened; see [`StorageFault::is_disk_full`]).
    pub fn storage_fault(&self) -> Option<&StorageFault> {
        match self {
            Self::Write(WriteError::Storage(fault)) => Some(fault),
            _ => None,
        }
    }
}

/// Writing a session or meta value failed; it was not acknowledged (a storage fault in the
/// commit may have left it on disk all the same, see [`StorageFault`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// A key or value over its limit.
    #[error("{what} is {bytes} bytes, at most {max} are allowed")]
    TooLarge {
        /// Which key or value.
        what: &'static str,
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// An earlier failure (a storage fault, a panic while writing or reading, a caller's
    /// halt) stopped all writes until the journal is reopened.
    #[error("journal {}: writes are halted after an earlier failure ({cause}); a restart reopens the journal and checks it", path.display())]
    Halted {
        /// The journal file.
        path: PathBuf,
        /// The first fault.
        cause: String,
    },
    /// The storage failed: the write was not acknowledged (see [`StorageFault`] for what it may
    /// have left), and writes are halted until reopening.
    #[error(transparent)]
    Storage(#[from] StorageFault),
    /// redb panicked during this write, as it does on a page damaged while the file is open:
    /// the write was not acknowledged, though it may have reached the disk if the panic came
    /// after its commit; writes are halted, and the next open's integrity check decides.
    #[error("journal {}: redb panicked while {op} ({message}); a page damaged while the file is open? Writes are halted; a restart checks the file", path.display())]
    Panicked {
        /// The journal file.
        path: PathBuf,
        /// What was being written.
        op: &'static str,
        /// The panic's message.
        message: String,
    },
}

impl WriteError {
    /// The storage fault, if this is one (the first fault for `Halted`, as text).
    pub fn storage_fault(&self) -> Option<&StorageFault> {
        match self {
            Self::Storage(fault) => Some(fault),
            _ => None,
        }
    }
}

/// Why a stored snapshot cannot be used. Snapshots are an optimisation: an unusable one is
/// skipped with a warning and the state is rebuilt from the events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotInvalid {
    /// Fewer bytes than a snapshot header.
    #[error("{0} bytes, shorter than a snapshot header")]
    Truncated(usize),
    /// Written by another snapshot format.
    #[error("format version {0}, this build reads {SNAPSHOT_FORMAT_VERSION}")]
    Format(u16),
    /// Written with another event encoding.
    #[error("event format version {0}, this build reads {current}", current = engine::EVENT_FORMAT_VERSION)]
    EventFormat(u16),
    /// The header does not match its checksum.
    #[error("header checksum mismatch")]
    HeaderChecksum,
    /// The state bytes do not match their checksum.
    #[error("state checksum mismatch")]
    PayloadChecksum,
    /// The length field disagrees with the stored size.
    #[error("length field says {declared} bytes of state, {actual} are stored")]
    Length {
        /// The length field.
        declared: u64,
        /// The bytes present.
        actual: u64,
    },
    /// Stored under another key than the sequence number it covers.
    #[error("stored under the key of record {0}")]
    KeyMismatch(Seq),
    /// It covers a record the journal does not have.
    #[error(
        "covers record {covers}, the journal ends at {last}: records committed before the \
         snapshot are missing (a disk that lost acknowledged writes, or an older copy of the file)"
    )]
    BeyondEnd {
        /// The last record it covers.
        covers: Seq,
        /// The journal's last record.
        last: Seq,
    },
    /// The record it covers last is not the one in the journal.
    #[error("covers a record with checksum {stored:08x}, the journal's has {actual:08x}")]
    NotOnChain {
        /// The checksum the snapshot expects.
        stored: u32,
        /// The journal record's checksum.
        actual: u32,
    },
    /// The state bytes are not a valid archived state (bytecheck refused them).
    #[error("state does not decode: {0}")]
    Decode(String),
    /// The decoded state does not have the stored digest.
    #[error("state digest {computed} differs from the stored {stored}")]
    Digest {
        /// The digest in the header.
        stored: Digest,
        /// The digest of the decoded state.
        computed: Digest,
    },
    /// The decoded state breaks an invariant.
    #[error("state breaks an invariant: {0}")]
    Invariant(InvariantError),
    /// The state is inside an interval (not all its outcomes applied): a snapshot keeps no
    /// interval's ticks, so the outcomes after it could not be checked. The journal stores
    /// none such; a snapshot of one is skipped.
    #[error("state inside interval {0}, whose ticks a snapshot does not keep")]
    InsideInterval(engine::IntervalId),
}

/// Encoding, storing or loading a snapshot failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SnapshotError {
    /// The state does not encode.
    #[error("state does not encode: {0}")]
    Encode(String),
    /// The encoded state is over the limit.
    #[error("snapshot of {bytes} bytes, at most {max} are allowed")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The state breaks an invariant; it is not snapshotted.
    #[error("state breaks an invariant and is not snapshotted: {0}")]
    Invariant(InvariantError),
    /// The state is inside an interval: a snapshot keeps no interval's ticks, so the outcomes
    /// after it could not be replayed over it. Snapshot between batches.
    #[error("state inside interval {0} is not snapshotted: its ticks would not be kept")]
    InsideInterval(engine::IntervalId),
    /// The snapshot covers records the journal does not have.
    #[error("journal {}: snapshot covers record {seq}, the journal ends at {last}", path.display())]
    BeyondEnd {
        /// The journal file.
        path: PathBuf,
        /// The last record the snapshot covers.
        seq: Seq,
        /// The journal's last record.
        last: Seq,
    },
    /// A stored snapshot is unusable.
    #[error("journal {}: snapshot at record {seq}: {why}", path.display())]
    Invalid {
        /// The journal file.
        path: PathBuf,
        /// The last record it covers.
        seq: Seq,
        /// What is wrong.
        why: SnapshotInvalid,
    },
    /// No snapshot is stored at this sequence number.
    #[error("journal {}: no snapshot at record {seq}", path.display())]
    NotFound {
        /// The journal file.
        path: PathBuf,
        /// The sequence number asked for.
        seq: Seq,
    },
    /// Reading the record the snapshot covers failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Writing failed (or writes are halted).
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl From<StorageFault> for SnapshotError {
    fn from(fault: StorageFault) -> Self {
        Self::Write(WriteError::Storage(fault))
    }
}

impl From<StorageFault> for AppendError {
    fn from(fault: StorageFault) -> Self {
        Self::Write(WriteError::Storage(fault))
    }
}
