//! PaperTrader's journal: the append-only event log, the truth the engine state is rebuilt from.
//!
//! One redb file (`DIR/papertrader.redb`, see [`path_in`]) holds, in separate tables:
//! - `events`: one value per batch, keyed by the sequence number of its first record
//!   (`batch.rs` and `docs/JOURNAL.md` have the layout). A batch header holds what its records share (first sequence
//!   number, format versions, the wall-clock time of the batch, the crc32 of the record before
//!   it, its worker table); each record holds its length, its crc32, chained from the record
//!   before, and the event in a compact encoding ([`payload`]), so a gap, a reordering or a
//!   changed byte is detected on read. Batches written by earlier builds (one 32-byte header per
//!   record, [`record`]) are still read;
//! - `snapshots` and `snapshot_parts`: engine states, rkyv-encoded, stored as a 64-byte header
//!   row and parts of [`SNAPSHOT_PART_BYTES`], validated with bytecheck, a digest and the invariants before
//!   use ([`snapshot`] has the layout);
//! - `sessions`, `ticks` (indexed from `IntervalSettled` in the same transaction as the batch),
//!   `meta` (the master's small values) and `journal` (format version and head).
//!
//! Writes are grouped: [`Journal::append_batch`] is one durable redb transaction per batch, and
//! returns only after the commit, so an order may be acknowledged once its batch's receipt is
//! back. Recovery on [`Journal::open`] loads the newest valid snapshot, replays the tail and
//! checks the invariants; a damaged record stops the open with its sequence number and the
//! file, and is never skipped, truncated or repaired. The format is documented in
//! `docs/JOURNAL.md`.
//!
//! **Architecture invariant:** no other crate opens the redb file; nothing here depends on the
//! network, and the engine's state changes only through `State::apply`.

pub mod audit;
mod batch;
mod be;
#[cfg(feature = "bench")]
pub mod bench;
mod config;
pub mod error;
pub mod heap;
mod journal;
pub mod limits;
mod overlay;
pub mod payload;
mod read;
pub mod record;
mod replay;
pub mod snapshot;
#[cfg(feature = "test-util")]
pub mod test_util;
mod zero_ahead;

pub use audit::{AuditConfig, AuditProblem, AuditReport, ProblemKind, audit};
pub use config::{JournalConfig, UnverifiedLastCommit, VerifyOnOpen};
pub use error::{
    AppendError, Corruption, OpenError, ReadError, SnapshotError, SnapshotInvalid, StorageFault,
    WriteError,
};
pub use journal::{
    BatchReceipt, FILE_FORMAT_VERSION, FILE_NAME, Journal, SNAPSHOT_PART_BYTES, SessionEntry,
    SnapshotEntry, path_in,
};
pub use read::Records;
pub use record::{Record, Seq};
pub use replay::{Recovered, RecoveryWarning, ReplayFrom, ReplayOptions, ReplayTo, Replayed};
pub use snapshot::{SnapshotBytes, SnapshotInfo, encode_snapshot};
