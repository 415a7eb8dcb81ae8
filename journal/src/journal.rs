//! The journal: one redb file holding the event log, snapshots, sessions, the tick index and a
//! small meta table. Only this module opens transactions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use engine::{Event, Symbol, Tick, Timestamp};
use redb::{
    Database, DatabaseError, Durability, ReadOnlyTable, ReadableDatabase, ReadableTable,
    TableDefinition, WriteTransaction,
};

use crate::batch::{self, FindError};
use crate::be;
use crate::config::{JournalConfig, UnverifiedLastCommit};
use crate::error::Corruption;
use crate::error::{
    AppendError, Fault, OpenError, OrFault, ReadError, SnapshotError, SnapshotInvalid,
    StorageFault, WriteError,
};
use crate::limits::{
    BATCH_BYTES_MAX, BATCH_EVENTS_MAX, META_KEY_BYTES_MAX, META_VALUE_BYTES_MAX, SESSION_BYTES_MAX,
    SNAPSHOTS_KEPT_MAX, TICKS_QUERY_MAX,
};
use crate::overlay::OverlayBackend;
use crate::payload::WorkerTable;
use crate::read::Records;
use crate::record::{GENESIS_LINK, Seq};
use crate::replay::{self, Recovered};
use crate::snapshot::{self, SNAPSHOT_HEADER_BYTES, SnapshotBytes, SnapshotInfo};
use crate::zero_ahead::ZeroAheadBackend;

/// The journal file's name inside the master's data directory.
pub const FILE_NAME: &str = "papertrader.redb";
/// Version of the set of tables and their key and value types; in the `journal` table.
pub const FILE_FORMAT_VERSION: u64 = 1;

/// The journal file of a data directory: `DIR/papertrader.redb`.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Batches of records, by the sequence number of their first record (see `batch`).
pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Snapshots by the last sequence number they cover.
pub(crate) const SNAPSHOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshots");
/// The state bytes of snapshots stored in parts, by (snapshot key, part number from 0); the
/// `SNAPSHOTS` row of such a snapshot is its header alone.
pub(crate) const SNAPSHOT_PARTS: TableDefinition<(u64, u32), &[u8]> =
    TableDefinition::new("snapshot_parts");
/// The keys whose parts no published snapshot owns, to delete (see
/// `Journal::store_snapshot_replacing`).
pub(crate) const UNOWNED_PARTS: TableDefinition<u64, ()> =
    TableDefinition::new("snapshot_parts_unowned");
/// Most state bytes in one snapshot part: storing a part holds the writer for one short commit.
pub const SNAPSHOT_PART_BYTES: usize = 1024 * 1024;
/// The master's sessions, by the BLAKE3 hash of the session id.
const SESSIONS: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("sessions");
/// Ticks by (symbol, tick time): open, high, low, close, volume as big-endian u64s.
const TICKS: TableDefinition<(&str, i64), TickRow> = TableDefinition::new("ticks");
/// The master's small values.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The journal's own values: `format` and `head` (the last sequence number).
pub(crate) const INFO: TableDefinition<&str, u64> = TableDefinition::new("journal");
pub(crate) const INFO_FORMAT: &str = "format";
pub(crate) const INFO_HEAD: &str = "head";

/// A stored session: the hash of its id and the master's bytes.
pub type SessionEntry = ([u8; 32], Vec<u8>);

/// What a durable append stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchReceipt {
    /// Sequence number of the batch's first event.
    pub first_seq: Seq,
    /// Sequence number of its last event: the journal's new head.
    pub last_seq: Seq,
}

/// A stored snapshot as listed by [`Journal::snapshots`]: its key and its header, or why the
/// header is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// The key: the last sequence number it claims to cover.
    pub seq: Seq,
    /// Its size in bytes: the header row plus the state bytes it declares. For a snapshot
    /// stored in parts this is the header's claim; the parts are read and checked against it
    /// by [`Journal::load_snapshot`] only.
    pub bytes: u64,
    /// The verified header (checksum, format, key), or what is wrong with it.
    pub header: Result<SnapshotInfo, SnapshotInvalid>,
}

/// The writer's view of the head of the chain. Changed only after a commit returned.
#[derive(Debug)]
pub(crate) struct Writer {
    pub last_seq: Seq,
    pub last_crc: u32,
    pub last_snapshot: Seq,
    /// Set by the first storage fault (or a damaged head); every later write is refused.
    pub halted: Option<String>,
    /// The batch being encoded: kept across appends so that each one encodes into memory it
    /// already has.
    records: Vec<u8>,
    /// The batch's worker table (scratch, like `records`).
    workers: WorkerTable,
    /// Per symbol, the last tick row this writer stored or found stored (its time and
    /// encoding), so that a tick restated interval after interval is recognised without a
    /// read of the index. Only committed rows go in; only `append_batch` writes ticks.
    known_ticks: HashMap<Symbol, (i64, TickRow)>,
    /// This batch's tick rows, moved into `known_ticks` once the batch is committed.
    batch_ticks: Vec<(Symbol, i64, TickRow)>,
}

/// A tick as the `ticks` table stores it: open, high, low, close, volume, big-endian.
type TickRow = [u8; 40];

/// The journal's redb database, closed on drop with a panic contained. redb's close commits
/// (it trims the file) and reads pages to do so, and a page damaged while the file was open
/// can make it panic (docs/RELIABILITY.md): that would take down whatever dropped the last
/// handle to the journal, typically a master already stopping because of that damage.
#[derive(Debug)]
struct ClosingDatabase {
    /// `None` only while being dropped.
    db: Option<Database>,
    path: PathBuf,
}

impl std::ops::Deref for ClosingDatabase {
    type Target = Database;

    fn deref(&self) -> &Database {
        match &self.db {
            Some(db) => db,
            None => unreachable!("the database is taken only when dropped"),
        }
    }
}

impl Drop for ClosingDatabase {
    fn drop(&mut self) {
        if let Some(db) = self.db.take()
            && std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(db))).is_err()
        {
            tracing::error!(
                path = %self.path.display(),
                "closing the journal's file failed: redb panicked (a page damaged while it was \
                 open?); the file is checked when it is opened again"
            );
        }
    }
}

/// The journal. Writes are serialised by an internal lock, so it may be shared between
/// threads (`Arc<Journal>`); every write is one durable redb transaction.
#[derive(Debug)]
pub struct Journal {
    db: ClosingDatabase,
    path: PathBuf,
    config: JournalConfig,
    writer: Mutex<Writer>,
    /// Held while a snapshot is stored (in several commits): one at a time.
    storing_snapshot: Mutex<()>,
    /// Callers waiting for the writer (appends, session writes, `last_seq`...): a snapshot
    /// being stored lets them go first between its parts (a mutex does not hand itself to the
    /// longest waiter, so the snapshot thread could take it back part after part while an
    /// interval waits).
    writes_waiting: std::sync::atomic::AtomicUsize,
    /// Whether writes are refused (`Writer::halted` is set), readable without the writer's
    /// lock: a caller checks it on its hot path while a snapshot part holds the lock.
    halted_flag: std::sync::atomic::AtomicBool,
    /// Whether opening rolled the file's last commit back (it did not verify).
    rolled_back_last_commit: bool,
    /// Opened with [`Journal::open_read_only`]: every write is refused.
    read_only: bool,
}

/// Where redb keeps the journal's pages.
enum Storage {
    /// The file itself, read and written.
    File,
    /// A copy-on-write view of the file, opened read-only ([`Journal::open_read_only`]).
    View(OverlayBackend),
}

fn encode_tick(tick: &Tick) -> TickRow {
    let mut out = [0u8; 40];
    for (i, v) in [tick.open.raw(), tick.high.raw(), tick.low.raw(), tick.close.raw()]
        .into_iter()
        .chain([tick.volume.raw()])
        .enumerate()
    {
        out[i * 8..i * 8 + 8].copy_from_slice(&v.to_be_bytes());
    }
    out
}

fn decode_tick(symbol: Symbol, time: i64, bytes: &TickRow) -> Tick {
    let field = |i: usize| be::u64_at(bytes, i * 8);
    Tick {
        symbol,
        open: engine::Price::from_raw(field(0)),
        high: engine::Price::from_raw(field(1)),
        low: engine::Price::from_raw(field(2)),
        close: engine::Price::from_raw(field(3)),
        volume: engine::Qty::from_raw(field(4)),
        time: Timestamp(time),
    }
}

fn check_size(what: &'static str, bytes: usize, max: usize) -> Result<(), WriteError> {
    if bytes > max {
        return Err(WriteError::TooLarge { what, bytes, max });
    }
    Ok(())
}

impl Journal {
    /// Opens (or creates) the journal file and recovers the state: loads the newest valid
    /// snapshot, verifies the chain (see [`crate::VerifyOnOpen`]), replays the records after
    /// the snapshot and checks the invariants. A damaged record stops the open with an error
    /// naming its sequence number and the file; an unusable snapshot is skipped with a warning,
    /// and then a fresh snapshot replaces it.
    pub fn open(
        path: impl AsRef<Path>,
        config: JournalConfig,
    ) -> Result<(Journal, Recovered), OpenError> {
        let journal = Self::open_unrecovered(path, config)?;
        let recovered = replay::recover(&journal)?;
        Ok((journal, recovered))
    }

    /// Opens (or creates) the journal file without replaying anything: for tools that verify
    /// or read the history themselves (`pt-replay`). The head record is checked; when it is
    /// damaged, reading still works but every write is refused.
    pub fn open_unrecovered(
        path: impl AsRef<Path>,
        config: JournalConfig,
    ) -> Result<Journal, OpenError> {
        let path = path.as_ref().to_path_buf();
        Self::check_config(&config)?;
        // redb trusts a file it closed cleanly and may panic on damage done to it since; with
        // the integrity check it verifies every page's checksum first and reports damage as an
        // error (about 0.3 s per GB, beside the record checks of `verify_on_open`).
        // A new journal is made only where there is no file: an empty one is damage.
        Self::check_file(&path, true)?;
        Self::open_database(path, config, Storage::File)
    }

    /// Opens an existing journal file without ever writing to it, for tools that examine a
    /// journal (`pt-replay audit`, `show`, `explain`): the file is opened read-only and left
    /// byte for byte as it was, so it may sit on read-only media, and several such opens may
    /// run at once (not beside the master, which holds the file). redb works on a
    /// copy-on-write view of it: its integrity check of every page runs as for the master, and
    /// a file a crash left is recovered in that view, in memory. Every write through the
    /// journal is refused.
    pub fn open_read_only(
        path: impl AsRef<Path>,
        config: JournalConfig,
    ) -> Result<Journal, OpenError> {
        let path = path.as_ref().to_path_buf();
        Self::check_config(&config)?;
        Self::check_file(&path, false)?;
        let file = std::fs::File::open(&path)
            .map_err(|e| StorageFault::new(&path, "opening the file", e))?;
        let view = OverlayBackend::new(file)
            .map_err(|e| StorageFault::new(&path, "opening the file", e))?;
        Self::open_database(path, config, Storage::View(view))
    }

    /// Whether another process holds the journal file at `path` (a running master, or a tool
    /// reading it with [`Journal::open_read_only`], which a master cannot start beside either):
    /// a quick check, without opening the journal, for tools that would start a master on the
    /// same file (`pt up`). A missing, unreadable or damaged file is not in use; opening it
    /// says why.
    pub fn in_use(path: impl AsRef<Path>) -> bool {
        // redb without its page check may panic on a damaged file: that is not "in use", and
        // the open that follows says what it is.
        let path = path.as_ref();
        let opened = std::panic::catch_unwind(|| redb::ReadOnlyDatabase::open(path).map(drop));
        matches!(opened, Ok(Err(DatabaseError::DatabaseAlreadyOpen)))
    }

    /// Checks the file at `path` before an open: an empty one is damage, not a new journal (a
    /// truncated copy); a missing one is made whole when `create`, an error otherwise.
    fn check_file(path: &Path, create: bool) -> Result<(), OpenError> {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() && meta.len() == 0 => {
                Err(OpenError::Empty { path: path.to_owned() })
            }
            Ok(_) => Ok(()),
            Err(e) if create && e.kind() == std::io::ErrorKind::NotFound => Self::create_file(path),
            Err(e) => Err(StorageFault::new(path, "opening the file", e).into()),
        }
    }

    /// Refuses settings no journal can work with.
    fn check_config(config: &JournalConfig) -> Result<(), OpenError> {
        if config.snapshots_kept == 0 || config.snapshots_kept > SNAPSHOTS_KEPT_MAX {
            return Err(OpenError::Config("snapshots_kept must be 1 to SNAPSHOTS_KEPT_MAX"));
        }
        if config.snapshot_every_events == 0 {
            return Err(OpenError::Config("snapshot_every_events must be at least 1"));
        }
        Ok(())
    }

    /// Opens the database (with redb's integrity check, and its recovery of a file a crash
    /// left) and the journal over it.
    fn open_database(
        path: PathBuf,
        config: JournalConfig,
        storage: Storage,
    ) -> Result<Journal, OpenError> {
        let mut builder = Database::builder();
        builder.set_cache_size(config.cache_bytes).set_check_integrity_on_open(true);
        // redb's repair asks at 0.3 of its progress only when the last commit does not verify,
        // just before it falls back to the commit before: seen here, and refused if asked.
        let fell_back = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = std::sync::Arc::clone(&fell_back);
        let refuse = config.unverified_last_commit == UnverifiedLastCommit::Refuse;
        builder.set_repair_callback(move |session| {
            if (0.2..0.5).contains(&session.progress()) {
                seen.store(true, std::sync::atomic::Ordering::Relaxed);
                if refuse {
                    session.abort();
                }
            }
        });
        let read_only = matches!(storage, Storage::View(_));
        let opened = match storage {
            Storage::File => {
                let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).map_err(
                    |e| StorageFault::new(&path, "opening the file", redb::Error::Io(e)),
                )?;
                ZeroAheadBackend::new(file).and_then(|file| builder.create_with_backend(file))
            }
            Storage::View(view) => builder.create_with_backend(view),
        };
        let db = match opened {
            Ok(db) => db,
            Err(DatabaseError::DatabaseAlreadyOpen) => return Err(OpenError::Busy { path }),
            Err(DatabaseError::RepairAborted) => {
                return Err(OpenError::LastCommitUnverified { path });
            }
            Err(e) => return Err(StorageFault::new(&path, "opening the file", e).into()),
        };
        // Said at once: redb committed the fallback inside the open, whatever happens next.
        let rolled_back_last_commit = fell_back.load(std::sync::atomic::Ordering::Relaxed);
        if rolled_back_last_commit {
            tracing::warn!(
                path = %path.display(),
                "{}",
                crate::replay::RecoveryWarning::LastCommitRolledBack
            );
        }
        let fault = Fault(&path, "opening");
        let found = match db.begin_read().or_fault(fault)?.open_table(INFO) {
            Ok(info) => info.get(INFO_FORMAT).or_fault(fault)?.map(|v| v.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(StorageFault::new(&path, "opening", e).into()),
        };
        match found {
            Some(found) if found != FILE_FORMAT_VERSION => {
                return Err(OpenError::FormatVersion {
                    path,
                    found,
                    expected: FILE_FORMAT_VERSION,
                });
            }
            Some(_) => {}
            None => {
                // A file without its format row is new only if it holds no record: a damaged
                // one must not be taken for new (its head would be reset over its records).
                // Opened read-only, it is not a journal at all (every journal is made with
                // the row), and an audit must not call it an empty one.
                let read = db.begin_read().or_fault(fault)?;
                let holds_records = match read.open_table(EVENTS) {
                    Ok(events) => {
                        !redb::ReadableTableMetadata::is_empty(&events).or_fault(fault)?
                    }
                    Err(redb::TableError::TableDoesNotExist(_)) => false,
                    Err(e) => return Err(StorageFault::new(&path, "opening", e).into()),
                };
                if holds_records || read_only {
                    return Err(OpenError::NoFormat { path });
                }
                // A new file: every table is created with the format version, in one commit.
                let txn = db.begin_write().or_fault(fault)?;
                Self::init_tables(&txn).or_fault(fault)?;
                txn.commit().or_fault(fault)?;
            }
        }
        let journal = Journal {
            db: ClosingDatabase { db: Some(db), path: path.clone() },
            path,
            config,
            storing_snapshot: Mutex::new(()),
            writes_waiting: std::sync::atomic::AtomicUsize::new(0),
            halted_flag: std::sync::atomic::AtomicBool::new(false),
            rolled_back_last_commit,
            read_only,
            writer: Mutex::new(Writer {
                last_seq: Seq(0),
                last_crc: GENESIS_LINK,
                last_snapshot: Seq(0),
                halted: None,
                records: Vec::new(),
                workers: WorkerTable::default(),
                known_ticks: HashMap::new(),
                batch_ticks: Vec::new(),
            }),
        };
        journal.load_head()?;
        let halted = journal.lock().halted.is_some();
        journal.halted_flag.store(halted, std::sync::atomic::Ordering::Release);
        Ok(journal)
    }

    /// Makes a new journal file at `path`, whole or not at all: built beside it (`*.new`),
    /// committed, then linked into place (never over a journal another process made meanwhile,
    /// which is kept) and the directory synced. A crash before that leaves no file at `path`
    /// (the next open starts again), never an empty one, which an open refuses as damage.
    fn create_file(path: &Path) -> Result<(), OpenError> {
        let mut partial = path.as_os_str().to_owned();
        partial.push(".new");
        let partial = PathBuf::from(partial);
        let fault =
            |op: &'static str| move |e| -> OpenError { StorageFault::new(path, op, e).into() };
        // A leftover of a creation cut short was never a journal.
        match std::fs::remove_file(&partial) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fault("creating the file")(redb::Error::Io(e))),
        }
        // Owner-only from the start, whatever the directory's mode or the umask: the journal
        // holds every account's password hash and email.
        let file = {
            let mut options = std::fs::OpenOptions::new();
            options.read(true).write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            options.open(&partial).map_err(|e| fault("creating the file")(redb::Error::Io(e)))?
        };
        {
            // Through the same backend as every later open, so that the new file's space is
            // written with zeros as redb first writes into it (`zero_ahead`).
            let created = ZeroAheadBackend::new(file)
                .and_then(|file| Database::builder().create_with_backend(file));
            let db = match created {
                Ok(db) => db,
                Err(DatabaseError::DatabaseAlreadyOpen) => {
                    return Err(OpenError::Busy { path: path.to_owned() });
                }
                Err(e) => return Err(fault("creating the file")(e.into())),
            };
            let mut txn = db.begin_write().map_err(|e| fault("creating the file")(e.into()))?;
            txn.set_durability(Durability::Immediate)
                .map_err(|e| fault("creating the file")(e.into()))?;
            Self::init_tables(&txn).map_err(fault("creating the file"))?;
            txn.commit().map_err(|e| fault("creating the file")(e.into()))?;
        }
        // Published without replacing: another process (a master starting, an offline
        // `pt-master worker add`) that made the journal meanwhile keeps it, and may already
        // have committed to it. Ours is dropped and theirs opened. A filesystem without hard
        // links gets a plain rename.
        match std::fs::hard_link(&partial, path) {
            Ok(()) => std::fs::remove_file(&partial)
                .map_err(|e| fault("creating the file")(redb::Error::Io(e)))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = std::fs::remove_file(&partial);
                return Ok(());
            }
            Err(_) => std::fs::rename(&partial, path)
                .map_err(|e| fault("creating the file")(redb::Error::Io(e)))?,
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| fault("creating the file")(redb::Error::Io(e)))?;
        }
        Ok(())
    }

    /// Creates every table and stores our format version.
    fn init_tables(txn: &WriteTransaction) -> Result<(), redb::Error> {
        txn.open_table(EVENTS)?;
        txn.open_table(SNAPSHOTS)?;
        txn.open_table(SNAPSHOT_PARTS)?;
        txn.open_table(UNOWNED_PARTS)?;
        txn.open_table(SESSIONS)?;
        txn.open_table(TICKS)?;
        txn.open_table(META)?;
        let mut info = txn.open_table(INFO)?;
        info.insert(INFO_FORMAT, FILE_FORMAT_VERSION)?;
        info.insert(INFO_HEAD, 0)?;
        Ok(())
    }

    /// Reads the head record and the newest snapshot key into the writer.
    fn load_head(&self) -> Result<(), OpenError> {
        let fault = Fault(&self.path, "reading the head");
        let read = self.db.begin_read().or_fault(fault)?;
        let events = read.open_table(EVENTS).or_fault(fault)?;
        let head = read.open_table(INFO).or_fault(fault)?.get(INFO_HEAD).or_fault(fault)?;
        let head = Seq(head.map(|v| v.value()).unwrap_or(0));
        let last = events.last().or_fault(fault)?;
        let mut writer = self.lock();
        writer.last_seq = Seq(0);
        writer.last_crc = GENESIS_LINK;
        if let Some((key, value)) = last {
            match batch::walk(key.value(), value.value(), None, Seq(u64::MAX)) {
                Ok((walk, _)) => {
                    if let Some(header) = walk.last {
                        writer.last_seq = header.seq;
                        writer.last_crc = header.crc;
                    }
                    if !walk.at_end || walk.last.is_none() {
                        writer.halted =
                            Some(format!("the last batch ({}) is damaged", key.value()));
                    }
                }
                Err((seq, what)) => {
                    writer.last_seq = Seq(key.value());
                    writer.halted = Some(format!("head record {seq} is damaged: {what}"));
                }
            }
        }
        if writer.halted.is_none() && head != writer.last_seq {
            writer.halted = Some(format!(
                "the head is record {head} but the last record is {}",
                writer.last_seq
            ));
        }
        let snapshots = read.open_table(SNAPSHOTS).or_fault(fault)?;
        writer.last_snapshot =
            snapshots.last().or_fault(fault)?.map(|(k, _)| Seq(k.value())).unwrap_or_default();
        Ok(())
    }

    /// The writer. Every caller is counted while it waits, so that a snapshot being stored
    /// lets it go first between its parts ([`Journal::lock_between_snapshot_parts`]).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Writer> {
        use std::sync::atomic::Ordering;
        self.writes_waiting.fetch_add(1, Ordering::AcqRel);
        let guard = self.lock_uncounted();
        self.writes_waiting.fetch_sub(1, Ordering::AcqRel);
        guard
    }

    /// The writer for a snapshot's next part: after every other caller waiting for it.
    fn lock_between_snapshot_parts(&self) -> MutexGuard<'_, Writer> {
        while self.writes_waiting.load(std::sync::atomic::Ordering::Acquire) > 0 {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        self.lock_uncounted()
    }

    fn lock_uncounted(&self) -> MutexGuard<'_, Writer> {
        match self.writer.lock() {
            Ok(writer) => writer,
            // A panic while the writer was held: an append's commit (redb panics on a page
            // damaged while the file is open; the other writes catch it themselves,
            // `contain_panic`). Its caller halts the journal too (the master's core does), but
            // only once the unwinding let the writer go: whoever takes it first halts it, so
            // that nothing commits to the file in between. The writer itself changes only
            // after a commit returned, in plain assignments: it is not half-updated.
            Err(poisoned) => {
                let mut writer = poisoned.into_inner();
                self.writer.clear_poison();
                let cause = "a write panicked while it held the journal (redb on a damaged page?)";
                if self.set_halted(&mut writer, cause.to_owned()) {
                    tracing::error!(path = %self.path.display(), cause, "journal writes halted");
                }
                writer
            }
        }
    }

    /// Whether the journal was opened with [`Journal::open_read_only`] (every write refused).
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    pub(crate) fn database(&self) -> &Database {
        &self.db
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The settings it was opened with.
    pub fn config(&self) -> &JournalConfig {
        &self.config
    }

    /// The sequence number of the last record (`Seq(0)` when empty).
    pub fn last_seq(&self) -> Seq {
        self.lock().last_seq
    }

    /// Whether opening rolled the file's last commit back because it did not verify
    /// ([`UnverifiedLastCommit::RollBack`]).
    pub fn rolled_back_last_commit(&self) -> bool {
        self.rolled_back_last_commit
    }

    /// The last sequence number covered by the newest stored snapshot (`Seq(0)` if none).
    pub fn newest_snapshot_seq(&self) -> Seq {
        self.lock().last_snapshot
    }

    /// True once `snapshot_every_events` events were appended after the newest snapshot.
    pub fn snapshot_due(&self) -> bool {
        let writer = self.lock();
        writer.last_seq.0.saturating_sub(writer.last_snapshot.0)
            >= self.config.snapshot_every_events
    }

    /// Why writes are refused, if they are (after a storage fault, on a damaged head, or
    /// after [`Journal::halt`]).
    pub fn halted(&self) -> Option<String> {
        self.lock().halted.clone()
    }

    /// Whether writes are refused ([`Journal::halted`] gives why), without waiting for the
    /// writer: a storage fault in any write (a snapshot part, a session) halts them all, and a
    /// caller that accepts work it must write checks this first.
    pub fn is_halted(&self) -> bool {
        self.halted_flag.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Refuses every write from now on (until the journal is opened again), for `cause`: what
    /// a caller does when it can no longer vouch for what it would write, such as a master
    /// whose core failed in the middle of a request. A halt already in place keeps its cause.
    pub fn halt(&self, cause: &str) {
        // Not through `lock`, which would halt a poisoned writer with its own cause first: the
        // caller's cause (a master's core that failed, with the panic's message) says more.
        // Counted as waiting, like `lock`, so that a snapshot's parts let it go first.
        use std::sync::atomic::Ordering;
        self.writes_waiting.fetch_add(1, Ordering::AcqRel);
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        self.writes_waiting.fetch_sub(1, Ordering::AcqRel);
        self.writer.clear_poison();
        if self.set_halted(&mut writer, cause.to_owned()) {
            tracing::error!(path = %self.path.display(), cause, "journal writes halted");
        }
    }

    /// Halts writes for `cause`, unless they are halted already (the first cause is kept);
    /// returns whether this call halted them. Every halt of an open journal goes through here
    /// (the open sets the halts it finds itself, with the flag after them).
    fn set_halted(&self, writer: &mut Writer, cause: String) -> bool {
        if writer.halted.is_some() {
            return false;
        }
        writer.halted = Some(cause);
        self.halted_flag.store(true, std::sync::atomic::Ordering::Release);
        true
    }

    fn halted_error(&self, cause: &str) -> WriteError {
        WriteError::Halted { path: self.path.clone(), cause: cause.to_owned() }
    }

    /// Begins a durable write transaction; a failure halts writes.
    fn begin_write(
        &self,
        writer: &mut Writer,
        op: &'static str,
    ) -> Result<WriteTransaction, WriteError> {
        if let Some(cause) = &writer.halted {
            return Err(self.halted_error(cause));
        }
        if self.read_only {
            return Err(self.halted_error("the journal was opened read-only"));
        }
        let mut txn = self.db.begin_write().map_err(|e| self.fault(writer, op, e))?;
        txn.set_durability(Durability::Immediate).map_err(|e| self.fault(writer, op, e))?;
        Ok(txn)
    }

    /// Records a storage fault: writes are halted until the journal is reopened.
    fn fault(
        &self,
        writer: &mut Writer,
        op: &'static str,
        err: impl Into<redb::Error>,
    ) -> WriteError {
        let fault = StorageFault::new(&self.path, op, err);
        tracing::error!(path = %self.path.display(), op, cause = %fault.detail, "journal storage fault; writes halted");
        self.set_halted(writer, fault.to_string());
        WriteError::Storage(fault)
    }

    /// Appends a batch of events in one durable transaction; returns after the commit, so
    /// everything in the receipt is on disk. `recorded_at` is the master's wall clock, stored in
    /// every record (for `pt-replay show --at-time`). The ticks of every `IntervalSettled` are
    /// indexed in the same transaction. On error the batch was not acknowledged; only a storage
    /// fault in the commit may have left it on disk all the same
    /// ([`AppendError::may_be_stored`]).
    pub fn append_batch(
        &self,
        events: &[Event],
        recorded_at: Timestamp,
    ) -> Result<BatchReceipt, AppendError> {
        self.append_batch_with_meta(events, recorded_at, &[])
    }

    /// [`Journal::append_batch`], also writing meta values in the same transaction (for
    /// example the master's next order id), so that they are durable exactly when the batch is.
    pub fn append_batch_with_meta(
        &self,
        events: &[Event],
        recorded_at: Timestamp,
        meta: &[(&str, &[u8])],
    ) -> Result<BatchReceipt, AppendError> {
        if events.is_empty() {
            return Err(AppendError::EmptyBatch);
        }
        if events.len() > BATCH_EVENTS_MAX {
            return Err(AppendError::BatchTooLarge(events.len()));
        }
        for (key, value) in meta {
            check_size("meta key", key.len(), META_KEY_BYTES_MAX)?;
            check_size("meta value", value.len(), META_VALUE_BYTES_MAX)?;
        }
        let mut guard = self.lock();
        let writer = &mut *guard;
        if let Some(cause) = &writer.halted {
            return Err(self.halted_error(cause).into());
        }
        // Encode every record before the transaction: the batch's value.
        let first_seq = writer.last_seq.next().ok_or(AppendError::BatchTooLarge(events.len()))?;
        let mut records = std::mem::take(&mut writer.records);
        let encoded = batch::encode(
            &mut records,
            &mut writer.workers,
            first_seq,
            recorded_at,
            writer.last_crc,
            events,
        );
        let (last_seq, crc) = match encoded {
            Ok(last) => last,
            Err(e) => {
                records.clear();
                writer.records = records;
                return Err(e);
            }
        };
        let result = if records.len() > BATCH_BYTES_MAX {
            Err(AppendError::BatchBytesTooLarge(records.len()))
        } else {
            self.commit_batch(writer, events, &records, first_seq, last_seq, meta)
        };
        records.clear();
        writer.records = records;
        result?;
        writer.last_seq = last_seq;
        writer.last_crc = crc;
        Ok(BatchReceipt { first_seq, last_seq })
    }

    fn commit_batch(
        &self,
        writer: &mut Writer,
        events: &[Event],
        records: &[u8],
        first_seq: Seq,
        last_seq: Seq,
        meta: &[(&str, &[u8])],
    ) -> Result<(), AppendError> {
        const OP: &str = "appending a batch";
        writer.batch_ticks.clear();
        let txn = self.begin_write(writer, OP)?;
        // One table open at a time: redb poisons the transaction's table lock when it panics
        // inside `open_table` (a damaged page), and a `Table` still open then panics again
        // in its drop, which aborts the process instead of unwinding to the master's catch.
        {
            let mut table = txn.open_table(EVENTS).map_err(|e| self.fault(writer, OP, e))?;
            let old = table.insert(first_seq.0, records).map_err(|e| self.fault(writer, OP, e))?;
            if old.is_some() {
                return Err(AppendError::SeqTaken { path: self.path.clone(), seq: first_seq });
            }
        }
        {
            let mut ticks = txn.open_table(TICKS).map_err(|e| self.fault(writer, OP, e))?;
            // The symbols whose row this batch has written, tracked from its second interval
            // on: a tick set holds each symbol once, so a batch of one interval (the master's)
            // needs none.
            let mut written: Option<std::collections::HashSet<Symbol>> = None;
            let mut intervals = 0u32;
            for event in events {
                if let Event::IntervalSettled(settled) = event {
                    intervals = intervals.saturating_add(1);
                    if intervals == 2 {
                        written = Some(writer.batch_ticks.iter().map(|(s, ..)| *s).collect());
                    }
                    for tick in &settled.ticks {
                        // A price source that has no newer price restates the last tick every
                        // interval: a row that already holds it is left alone, so the commit
                        // does not rewrite the index's pages for nothing (docs/JOURNAL.md).
                        let key = (tick.symbol.as_str(), tick.time.0);
                        let row = encode_tick(tick);
                        // The shortcut knows only committed rows: a symbol written earlier in
                        // this batch is looked up in the index.
                        let written_in_batch =
                            written.as_ref().is_some_and(|w| w.contains(&tick.symbol));
                        if !written_in_batch
                            && writer.known_ticks.get(&tick.symbol) == Some(&(tick.time.0, row))
                        {
                            continue;
                        }
                        writer.batch_ticks.push((tick.symbol, tick.time.0, row));
                        if let Some(written) = written.as_mut() {
                            written.insert(tick.symbol);
                        }
                        let stored = ticks
                            .get(key)
                            .map_err(|e| self.fault(writer, OP, e))?
                            .map(|value| value.value());
                        if stored != Some(row) {
                            ticks.insert(key, row).map_err(|e| self.fault(writer, OP, e))?;
                        }
                    }
                }
            }
        }
        {
            let mut info = txn.open_table(INFO).map_err(|e| self.fault(writer, OP, e))?;
            info.insert(INFO_HEAD, last_seq.0).map_err(|e| self.fault(writer, OP, e))?;
        }
        if !meta.is_empty() {
            let mut table = txn.open_table(META).map_err(|e| self.fault(writer, OP, e))?;
            for (key, value) in meta {
                table.insert(*key, *value).map_err(|e| self.fault(writer, OP, e))?;
            }
        }
        txn.commit().map_err(|e| self.fault(writer, OP, e))?;
        for (symbol, time, row) in writer.batch_ticks.drain(..) {
            writer.known_ticks.insert(symbol, (time, row));
        }
        Ok(())
    }

    /// Stores an encoded snapshot (from [`crate::encode_snapshot`]) in one durable transaction,
    /// tied to the record it covers last, and deletes the oldest snapshots beyond
    /// `snapshots_kept`. Returns the sequence number it covers.
    pub fn store_snapshot(&self, snapshot: SnapshotBytes) -> Result<Seq, SnapshotError> {
        self.store_snapshot_replacing(snapshot, &[])
    }

    /// Stores a snapshot and deletes the snapshots at `remove` when it is published.
    ///
    /// The state bytes go in parts of [`SNAPSHOT_PART_BYTES`], each its own durable commit,
    /// then one last commit publishes the snapshot (its header row) and deletes the rows it
    /// replaces. The writer is held for one part at a time, so a master's interval commits
    /// wait for a part at most while a snapshot of any size is stored (storing a 55 MB state in
    /// one commit held them for 200 ms to over a second).
    ///
    /// Parts no published snapshot owns are listed in `snapshot_parts_unowned` in the same
    /// commit that makes them so (the first part of a snapshot being stored, the rows a publish
    /// deletes), and deleted one part a commit before and after each store: a crash at any
    /// point leaves no part that is never deleted, and nothing ever scans the parts (reading a
    /// 1 MiB part to learn its key is a megabyte read while holding the writer).
    pub(crate) fn store_snapshot_replacing(
        &self,
        snapshot: SnapshotBytes,
        remove: &[Seq],
    ) -> Result<Seq, SnapshotError> {
        const OP: &str = "storing a snapshot";
        let seq = snapshot.last_seq();
        // One snapshot is stored at a time.
        let _storing = self.storing_snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        {
            let writer = self.lock();
            if seq > writer.last_seq {
                return Err(SnapshotError::BeyondEnd {
                    path: self.path.clone(),
                    seq,
                    last: writer.last_seq,
                });
            }
        }
        let record_crc = match self.record_crc(seq)? {
            Some(crc) => crc,
            None => {
                let head = self.lock().last_seq;
                let what = Corruption::Missing { head };
                return Err(ReadError::Corrupt { path: self.path.clone(), seq, what }.into());
            }
        };
        // Parts a crash left behind, or that a snapshot at this key had.
        self.delete_unowned_parts()?;
        let sealed = snapshot.seal(record_crc);
        let (header, state) = sealed.split_at(SNAPSHOT_HEADER_BYTES);
        let too_large = || SnapshotError::TooLarge {
            bytes: sealed.len(),
            max: crate::limits::SNAPSHOT_BYTES_MAX,
        };
        let mut written = 0u32;
        for (part, bytes) in state.chunks(SNAPSHOT_PART_BYTES).enumerate() {
            let part = u32::try_from(part).map_err(|_| too_large())?;
            let mut guard = self.lock_between_snapshot_parts();
            self.contain_panic(&mut guard, OP, |writer| -> Result<(), WriteError> {
                let txn = self.begin_write(writer, OP)?;
                let stored = (|| -> Result<(), redb::Error> {
                    if part == 0 {
                        // Until it is published, this key's parts are unowned (and a snapshot
                        // published at this key before is no longer: its parts are replaced).
                        txn.open_table(SNAPSHOTS)?.remove(seq.0)?;
                        txn.open_table(UNOWNED_PARTS)?.insert(seq.0, ())?;
                    }
                    txn.open_table(SNAPSHOT_PARTS)?.insert((seq.0, part), bytes)?;
                    Ok(())
                })();
                stored.map_err(|e| self.fault(writer, OP, e))?;
                txn.commit().map_err(|e| self.fault(writer, OP, e))?;
                Ok(())
            })?;
            written = part.saturating_add(1);
        }
        let mut guard = self.lock();
        self.contain_panic(&mut guard, OP, |writer| -> Result<(), WriteError> {
            let head = writer.last_seq.0;
            let txn = self.begin_write(writer, OP)?;
            // The newest snapshot left once this one is published: the schedule counts from it.
            let mut newest = seq;
            // One table open at a time (see `commit_batch`): what the snapshot rows change in
            // the list of unowned parts is noted, then applied in the same order.
            let published = (|| -> Result<(), redb::Error> {
                {
                    let mut parts = txn.open_table(SNAPSHOT_PARTS)?;
                    // Parts beyond the last one written (left by a longer snapshot at this key).
                    let mut stale = written;
                    while parts.remove((seq.0, stale))?.is_some() {
                        stale = stale.saturating_add(1);
                    }
                }
                // (key, whether its parts become unowned or owned), in order.
                let mut unowned_changes: Vec<(u64, bool)> = Vec::new();
                let mut table = txn.open_table(SNAPSHOTS)?;
                for old in remove {
                    if table.remove(old.0)?.is_some() {
                        unowned_changes.push((old.0, true));
                    }
                }
                table.insert(seq.0, header)?;
                unowned_changes.push((seq.0, false));
                let mut keys = Vec::new();
                for entry in table.iter()? {
                    keys.push(entry?.0.value());
                }
                // Rows past the head (their records lost: no open can use them) go, and do not
                // count among the kept; this one stays, whatever its place: pruning must not
                // delete the snapshot just stored along with the valid older ones.
                let (past_end, valid): (Vec<u64>, Vec<u64>) =
                    keys.into_iter().partition(|k| *k > head);
                let excess = valid.len().saturating_sub(self.config.snapshots_kept);
                let oldest = valid.iter().filter(|k| **k != seq.0).take(excess);
                for key in past_end.iter().chain(oldest) {
                    table.remove(*key)?;
                    unowned_changes.push((*key, true));
                }
                newest = table.last()?.map_or(seq, |(k, _)| Seq(k.value()));
                drop(table);
                let mut unowned = txn.open_table(UNOWNED_PARTS)?;
                for (key, now_unowned) in unowned_changes {
                    if now_unowned {
                        unowned.insert(key, ())?;
                    } else {
                        unowned.remove(key)?;
                    }
                }
                Ok(())
            })();
            published.map_err(|e| self.fault(writer, OP, e))?;
            txn.commit().map_err(|e| self.fault(writer, OP, e))?;
            // From the table, not the larger of the old value and `seq`: a replaced snapshot past
            // the end (recovery ignored it) must not hold the next snapshot back until the journal
            // grows past it.
            writer.last_snapshot = newest;
            Ok(())
        })?;
        drop(guard);
        // The replaced snapshots' parts; a failure here leaves them listed for the next store.
        if let Err(e) = self.delete_unowned_parts() {
            tracing::warn!(cause = %e, "cannot delete the parts of replaced snapshots yet");
        }
        Ok(seq)
    }

    /// Deletes the parts listed as unowned, one part a commit (waiting callers first), and
    /// unlists each key once its parts are gone. Each commit deletes the key's first part
    /// left, whichever it is: after a crash in the middle, the next run goes on from there
    /// (starting again from part 0 would find it gone and unlist the key over its other parts).
    fn delete_unowned_parts(&self) -> Result<(), WriteError> {
        const OP: &str = "deleting unowned snapshot parts";
        let keys: Vec<u64> = {
            let fault = Fault(&self.path, OP);
            let read = self.db.begin_read().or_fault(fault)?;
            match read.open_table(UNOWNED_PARTS) {
                Ok(table) => {
                    let mut keys = Vec::new();
                    for entry in table.iter().or_fault(fault)? {
                        keys.push(entry.or_fault(fault)?.0.value());
                    }
                    keys
                }
                Err(redb::TableError::TableDoesNotExist(_)) => Vec::new(),
                Err(e) => return Err(StorageFault::new(&self.path, OP, e).into()),
            }
        };
        for key in keys {
            loop {
                let mut guard = self.lock_between_snapshot_parts();
                let removed = self.contain_panic(&mut guard, OP, |writer| {
                    let txn = self.begin_write(writer, OP)?;
                    // The first part left, or, when none is, the key off the list.
                    // One table open at a time (see `commit_batch`).
                    let removed = (|| -> Result<bool, redb::Error> {
                        let mut parts = txn.open_table(SNAPSHOT_PARTS)?;
                        let first = parts
                            .range((key, 0)..=(key, u32::MAX))?
                            .next()
                            .transpose()?
                            .map(|(stored, _)| stored.value().1);
                        match first {
                            Some(part) => {
                                parts.remove((key, part))?;
                                Ok(true)
                            }
                            None => {
                                drop(parts);
                                txn.open_table(UNOWNED_PARTS)?.remove(key)?;
                                Ok(false)
                            }
                        }
                    })()
                    .map_err(|e| self.fault(writer, OP, e))?;
                    txn.commit().map_err(|e| self.fault(writer, OP, e))?;
                    Ok::<bool, WriteError>(removed)
                })?;
                if !removed {
                    break;
                }
            }
        }
        Ok(())
    }

    /// The stored bytes of the snapshot whose row in `SNAPSHOTS` is `row`, read in `read`: the
    /// row itself for a snapshot stored whole (before parts existed), else its header followed
    /// by its parts in order (part numbers from 0 without a gap; a missing part leaves the
    /// bytes short, which the header's length check reports).
    fn snapshot_bytes<'r>(
        &self,
        read: &redb::ReadTransaction,
        seq: u64,
        row: &'r [u8],
    ) -> Result<std::borrow::Cow<'r, [u8]>, ReadError> {
        if row.len() != SNAPSHOT_HEADER_BYTES {
            return Ok(std::borrow::Cow::Borrowed(row));
        }
        // The declared length is trusted only once the header's checksum passed: a damaged
        // header gives its row alone, which the header check then reports.
        let declared = snapshot::declared_state_bytes(row);
        if snapshot::parse_header_of(seq, row, declared).is_err() {
            return Ok(std::borrow::Cow::Borrowed(row));
        }
        // Room for the declared length, never more than a snapshot may be; reading stops once
        // past it (the header's length check then reports a snapshot too long).
        let declared = usize::try_from(declared).unwrap_or(usize::MAX);
        let wanted = row.len().saturating_add(declared).min(crate::limits::SNAPSHOT_BYTES_MAX);
        // Reserved as the parts come, not from the claim: a header's crc32 is no proof, and a
        // damaged or made-up length must not make an open reserve gigabytes for a few bytes
        // stored (the vector still grows geometrically, so a real snapshot copies little).
        let mut bytes =
            Vec::with_capacity(wanted.min(row.len().saturating_add(SNAPSHOT_PART_BYTES)));
        bytes.extend_from_slice(row);
        self.for_each_part(read, seq, |part| {
            bytes.extend_from_slice(part);
            bytes.len() < wanted
        })?;
        Ok(std::borrow::Cow::Owned(bytes))
    }

    /// Calls `each` with the parts of the snapshot at `seq` in order, while it returns true.
    fn for_each_part(
        &self,
        read: &redb::ReadTransaction,
        seq: u64,
        mut each: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), ReadError> {
        let fault = Fault(&self.path, "reading a snapshot");
        let parts = match read.open_table(SNAPSHOT_PARTS) {
            Ok(parts) => parts,
            // A journal written before parts existed.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(StorageFault::new(&self.path, "reading a snapshot", e).into()),
        };
        let mut expected = 0u32;
        for entry in parts.range((seq, 0u32)..=(seq, u32::MAX)).or_fault(fault)? {
            let (key, value) = entry.or_fault(fault)?;
            // A gap or a part larger than parts are written ends the bytes: short or long,
            // they fail the header's length check.
            if key.value().1 != expected
                || value.value().len() > SNAPSHOT_PART_BYTES
                || !each(value.value())
            {
                break;
            }
            expected = expected.saturating_add(1);
        }
        Ok(())
    }

    pub(crate) fn read_table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        table: TableDefinition<K, V>,
    ) -> Result<ReadOnlyTable<K, V>, StorageFault> {
        let fault = Fault(&self.path, "reading");
        self.db.begin_read().or_fault(fault)?.open_table(table).or_fault(fault)
    }

    /// Every record from `from` on, verified (checksum, sequence, link, versions) and decoded,
    /// in order. The iterator reads one consistent snapshot of the file; it stops at the first
    /// damaged record with an error naming it.
    pub fn read_records(&self, from: Seq) -> Result<Records, ReadError> {
        Records::new(self, from)
    }

    /// The head as stored in the file (the sequence number of the last committed record).
    pub(crate) fn stored_head(&self) -> Result<Seq, StorageFault> {
        let info = self.read_table(INFO)?;
        let head = info.get(INFO_HEAD).map_err(|e| StorageFault::new(&self.path, "reading", e))?;
        Ok(Seq(head.map(|v| v.value()).unwrap_or(0)))
    }

    /// The stored snapshots, oldest first, with their verified headers. Reads the header rows
    /// only, not the state parts (a megabyte each): recovery and the audit load the ones they
    /// use with [`Journal::load_snapshot`], which checks the parts.
    pub fn snapshots(&self) -> Result<Vec<SnapshotEntry>, ReadError> {
        let fault = Fault(&self.path, "reading snapshots");
        let read = self.db.begin_read().or_fault(fault)?;
        let table = read.open_table(SNAPSHOTS).or_fault(fault)?;
        let mut out = Vec::new();
        for entry in table.range::<u64>(..).or_fault(fault)? {
            let (key, value) = entry.or_fault(fault)?;
            let row = value.value();
            let (bytes, header) = if row.len() == SNAPSHOT_HEADER_BYTES {
                // The parts are not read here: their length is checked when the snapshot is
                // loaded. The declared length counts only in a header that passed its checks.
                let declared = snapshot::declared_state_bytes(row);
                let header = snapshot::parse_header_of(key.value(), row, declared);
                let stored = if header.is_ok() { declared } else { 0 };
                ((row.len() as u64).saturating_add(stored), header)
            } else {
                (row.len() as u64, snapshot::parse_header(key.value(), row))
            };
            out.push(SnapshotEntry { seq: Seq(key.value()), bytes, header });
        }
        Ok(out)
    }

    /// Loads the snapshot covering up to `seq`, validating everything: header and state
    /// checksums, the link to the record it covers, bytecheck, digest and invariants.
    pub fn load_snapshot(&self, seq: Seq) -> Result<(engine::State, SnapshotInfo), SnapshotError> {
        let fault = Fault(&self.path, "reading a snapshot");
        let read = self.db.begin_read().or_fault(fault).map_err(ReadError::from)?;
        let table = read.open_table(SNAPSHOTS).or_fault(fault).map_err(ReadError::from)?;
        let value = table.get(seq.0).or_fault(fault).map_err(ReadError::from)?;
        let Some(value) = value else {
            return Err(SnapshotError::NotFound { path: self.path.clone(), seq });
        };
        let bytes = self.snapshot_bytes(&read, seq.0, value.value())?;
        let bytes = bytes.as_ref();
        let invalid = |why| SnapshotError::Invalid { path: self.path.clone(), seq, why };
        let info = snapshot::parse_header(seq.0, bytes).map_err(invalid)?;
        let actual = self.record_crc(seq)?;
        match actual {
            None => {
                let last = self.stored_head().map_err(ReadError::from)?;
                return Err(invalid(SnapshotInvalid::BeyondEnd { covers: seq, last }));
            }
            Some(actual) if actual != info.record_crc => {
                return Err(invalid(SnapshotInvalid::NotOnChain {
                    stored: info.record_crc,
                    actual,
                }));
            }
            Some(_) => {}
        }
        let state = snapshot::decode_state(bytes, &info).map_err(invalid)?;
        Ok((state, info))
    }

    /// The verified checksum of record `seq` (`GENESIS_LINK` for `Seq(0)`), `None` if absent.
    pub(crate) fn record_crc(&self, seq: Seq) -> Result<Option<u32>, ReadError> {
        if seq == Seq(0) {
            return Ok(Some(GENESIS_LINK));
        }
        let table = self.read_table(EVENTS)?;
        match batch::header_of(&table, seq) {
            Ok(header) => Ok(header.map(|h| h.crc)),
            Err(FindError::Corrupt(seq, what)) => {
                Err(ReadError::Corrupt { path: self.path.clone(), seq, what })
            }
            Err(FindError::Storage(e)) => {
                Err(StorageFault::new(&self.path, "reading a record", e).into())
            }
        }
    }

    /// Stores a session (durably), replacing any value under the same key. The key is the
    /// BLAKE3 hash of the session id: the raw id never reaches the disk.
    pub fn put_session(&self, key: [u8; 32], value: &[u8]) -> Result<(), WriteError> {
        check_size("session value", value.len(), SESSION_BYTES_MAX)?;
        self.write(
            |txn| {
                txn.open_table(SESSIONS)?.insert(key, value)?;
                Ok(())
            },
            "storing a session",
        )
    }

    /// Stores several sessions in one durable commit, each replacing any value under its key
    /// (see [`Journal::put_session`]).
    pub fn put_sessions(&self, sessions: &[([u8; 32], Vec<u8>)]) -> Result<(), WriteError> {
        for (_, value) in sessions {
            check_size("session value", value.len(), SESSION_BYTES_MAX)?;
        }
        self.write(
            |txn| {
                let mut table = txn.open_table(SESSIONS)?;
                for (key, value) in sessions {
                    table.insert(*key, value.as_slice())?;
                }
                Ok(())
            },
            "storing sessions",
        )
    }

    /// Deletes a session (durably); returns whether it existed.
    pub fn remove_session(&self, key: [u8; 32]) -> Result<bool, WriteError> {
        self.remove_sessions(&[key]).map(|existed| existed == 1)
    }

    /// Deletes several sessions in one durable commit; returns how many existed. An empty
    /// list writes nothing.
    pub fn remove_sessions(&self, keys: &[[u8; 32]]) -> Result<usize, WriteError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut existed = 0;
        let op = if keys.len() == 1 { "removing a session" } else { "removing sessions" };
        self.write(
            |txn| {
                let mut table = txn.open_table(SESSIONS)?;
                for key in keys {
                    existed += usize::from(table.remove(*key)?.is_some());
                }
                Ok(())
            },
            op,
        )?;
        Ok(existed)
    }

    /// One session's value.
    pub fn session(&self, key: [u8; 32]) -> Result<Option<Vec<u8>>, StorageFault> {
        let table = self.read_table(SESSIONS)?;
        let value =
            table.get(key).map_err(|e| StorageFault::new(&self.path, "reading a session", e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// Every stored session, by key.
    pub fn sessions(&self) -> Result<Vec<SessionEntry>, StorageFault> {
        let fault = Fault(&self.path, "reading sessions");
        let table = self.read_table(SESSIONS)?;
        let mut out = Vec::new();
        for entry in table.range::<[u8; 32]>(..).or_fault(fault)? {
            let (key, value) = entry.or_fault(fault)?;
            out.push((key.value(), value.value().to_vec()));
        }
        Ok(out)
    }

    /// Stores a meta value (durably).
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), WriteError> {
        check_size("meta key", key.len(), META_KEY_BYTES_MAX)?;
        check_size("meta value", value.len(), META_VALUE_BYTES_MAX)?;
        self.write(
            |txn| {
                txn.open_table(META)?.insert(key, value)?;
                Ok(())
            },
            "storing a meta value",
        )
    }

    /// Deletes a meta value (durably); returns whether it existed.
    pub fn remove_meta(&self, key: &str) -> Result<bool, WriteError> {
        let mut existed = false;
        self.write(
            |txn| {
                existed = txn.open_table(META)?.remove(key)?.is_some();
                Ok(())
            },
            "removing a meta value",
        )?;
        Ok(existed)
    }

    /// A meta value.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageFault> {
        let table = self.read_table(META)?;
        let value =
            table.get(key).map_err(|e| StorageFault::new(&self.path, "reading a meta value", e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// Every meta value whose key starts with `prefix`, in key order (byte order of the keys).
    /// An empty prefix lists the whole meta table.
    pub fn metas_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StorageFault> {
        let fault = Fault(&self.path, "reading meta values");
        let table = self.read_table(META)?;
        let mut out = Vec::new();
        for entry in table.range(prefix..).or_fault(fault)? {
            let (key, value) = entry.or_fault(fault)?;
            let key = key.value();
            // Keys are ordered bytewise, so the keys with the prefix form one run from `prefix`.
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key.to_owned(), value.value().to_vec()));
        }
        Ok(out)
    }

    /// Runs one durable write transaction (sessions, meta values: the writes of the master's
    /// admin socket and logins). redb panics on a page damaged while the file is open
    /// (docs/RELIABILITY.md): such a panic is caught here, while the writer is still held, and
    /// halts every later write as a storage fault does, so that no other writer commits to the
    /// file between the panic and the halt.
    fn write(
        &self,
        body: impl FnOnce(&WriteTransaction) -> Result<(), redb::Error>,
        op: &'static str,
    ) -> Result<(), WriteError> {
        let mut guard = self.lock();
        self.contain_panic(&mut guard, op, |writer| {
            let txn = self.begin_write(writer, op)?;
            body(&txn).map_err(|e| self.fault(writer, op, e))?;
            txn.commit().map_err(|e| self.fault(writer, op, e))?;
            Ok(())
        })
    }

    /// Runs one transaction (`run`) with the writer held, turning a panic in it into a halt:
    /// the write fails as `WriteError::Panicked`, with the panic's message, and every later
    /// write is refused, as after a storage fault. redb panics on a page damaged while the
    /// file is open (docs/RELIABILITY.md); caught here, before the writer is let go, no other
    /// writer can commit to the file between the panic and the halt. The interval's commit
    /// (`commit_batch`) is not run through this: the master's core catches a panic there and
    /// stops the master.
    fn contain_panic<T, E: From<WriteError>>(
        &self,
        writer: &mut Writer,
        op: &'static str,
        run: impl FnOnce(&mut Writer) -> Result<T, E>,
    ) -> Result<T, E> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut *writer))) {
            Ok(outcome) => outcome,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".to_owned());
                let cause = format!("redb panicked while {op} (a damaged page?): {message}");
                tracing::error!(path = %self.path.display(), op, %cause, "journal writes halted");
                self.set_halted(writer, cause);
                Err(WriteError::Panicked { path: self.path.clone(), op, message }.into())
            }
        }
    }

    /// Ticks of `symbol` with `from <= time < to`, oldest first, at most `limit` (capped at
    /// `limits::TICKS_QUERY_MAX`).
    pub fn ticks(
        &self,
        symbol: Symbol,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> Result<Vec<Tick>, StorageFault> {
        let fault = Fault(&self.path, "reading ticks");
        let mut out = Vec::new();
        if from >= to {
            return Ok(out);
        }
        let table = self.read_table(TICKS)?;
        let name = symbol.as_str();
        let range = table.range((name, from.0)..(name, to.0)).or_fault(fault)?;
        for entry in range.take(limit.min(TICKS_QUERY_MAX)) {
            let (key, value) = entry.or_fault(fault)?;
            out.push(decode_tick(symbol, key.value().1, &value.value()));
        }
        Ok(out)
    }

    /// The newest tick of `symbol`, if it ever had one.
    pub fn latest_tick(&self, symbol: Symbol) -> Result<Option<Tick>, StorageFault> {
        let fault = Fault(&self.path, "reading ticks");
        let table = self.read_table(TICKS)?;
        let name = symbol.as_str();
        let mut range = table.range((name, i64::MIN)..=(name, i64::MAX)).or_fault(fault)?;
        match range.next_back() {
            None => Ok(None),
            Some(entry) => {
                let (key, value) = entry.or_fault(fault)?;
                Ok(Some(decode_tick(symbol, key.value().1, &value.value())))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn metas_with_prefix_lists_exactly_the_keys_with_the_prefix_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        let journal = Journal::open_unrecovered(&path, JournalConfig::default()).unwrap();
        assert_eq!(journal.metas_with_prefix("worker/").unwrap(), Vec::new());
        // Neighbours on both sides of the run: "worker." < "worker/" < "worker0" bytewise.
        for (key, value) in [
            ("worker/b", &b"2"[..]),
            ("worker.", b"x"),
            ("worker0", b"y"),
            ("worker/a", b"1"),
            ("workers", b"z"),
            ("next_order_id", b"n"),
            ("worker/", b"0"),
        ] {
            journal.put_meta(key, value).unwrap();
        }
        let listed = journal.metas_with_prefix("worker/").unwrap();
        let expected: Vec<(String, Vec<u8>)> =
            [("worker/", "0"), ("worker/a", "1"), ("worker/b", "2")]
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect();
        assert_eq!(listed, expected);
        assert_eq!(journal.metas_with_prefix("").unwrap().len(), 7);
        assert_eq!(journal.metas_with_prefix("nope").unwrap(), Vec::new());

        // Removed values disappear, and the listing survives a reopen (it reads the file).
        assert!(journal.remove_meta("worker/a").unwrap());
        drop(journal);
        let journal = Journal::open_unrecovered(&path, JournalConfig::default()).unwrap();
        let keys: Vec<String> =
            journal.metas_with_prefix("worker/").unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["worker/", "worker/b"]);
    }

    /// Two processes making the journal at once (a master starting beside an offline
    /// `pt-master worker add`): the one that publishes second keeps the first one's file, and
    /// what was committed to it, instead of renaming its own empty journal over it.
    #[test]
    fn a_journal_made_meanwhile_is_kept_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        let journal = Journal::open_unrecovered(&path, JournalConfig::default()).unwrap();
        journal.put_meta("worker/a", b"registered").unwrap();
        drop(journal);
        // The second creation, as it runs once the first has published.
        Journal::create_file(&path).unwrap();
        let journal = Journal::open_unrecovered(&path, JournalConfig::default()).unwrap();
        assert_eq!(journal.metas_with_prefix("worker/").unwrap().len(), 1, "replaced");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|name| name.to_string_lossy().ends_with(".new"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
