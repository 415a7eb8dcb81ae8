//! The log system (spec 2.3.3, 3.1.4): a `tracing` layer that keeps the last N entries in
//! memory, for a crash dump, and appends every entry to a log file.
//!
//! Each [`LogEntry`] holds the date and time (UTC), the level, the caller's file, line and
//! module (tracing has no function names; the module path stands for spec 2.4.4's `funcname`),
//! the target, and the message with its fields and the fields of the spans it happened in.
//! Memory is bounded: at most `memory_entries_max` entries of at most `entry_bytes_max` bytes
//! each. The file is written one line per entry as the entry happens (nothing is lost in a
//! crash) and renamed to `<file>.1` when it would grow past `file_bytes_max`.
//!
//! Self-contained (tracing, tracing-subscriber, time and std only) so the worker can use it too.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Settings of a logbook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogbookConfig {
    /// Entries kept in memory (spec 2.3.3); at least 1.
    pub memory_entries_max: usize,
    /// The log file, or `None` for memory only. Its directory is created if needed.
    pub file: Option<PathBuf>,
    /// Size at which the file is renamed to `<file>.1` (replacing it) and a new one started.
    pub file_bytes_max: u64,
    /// Longest message kept, in bytes; longer ones are cut and end with `…`.
    pub entry_bytes_max: usize,
}

impl Default for LogbookConfig {
    fn default() -> Self {
        Self {
            memory_entries_max: 1000,
            file: None,
            file_bytes_max: 64 * 1024 * 1024,
            entry_bytes_max: 4096,
        }
    }
}

/// One log entry (spec 2.4.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// When, in UTC.
    pub at: OffsetDateTime,
    /// How important.
    pub level: Level,
    /// The tracing target (usually the module path).
    pub target: &'static str,
    /// The caller's module.
    pub module: Option<&'static str>,
    /// The caller's file.
    pub file: Option<&'static str>,
    /// The caller's line.
    pub line: Option<u32>,
    /// Span context (`span{field=value}:`), the message, then ` field=value` for each field.
    pub message: String,
}

impl fmt::Display for LogEntry {
    /// `2024-05-10T12:00:00.123456Z  WARN master::prices::http (src/prices/http.rs:120): text`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at.format(&Rfc3339) {
            Ok(at) => f.write_str(&at)?,
            Err(_) => write!(f, "{}", self.at.unix_timestamp())?,
        }
        write!(f, " {:>5} {}", self.level, self.module.unwrap_or(self.target))?;
        if let Some(file) = self.file {
            write!(f, " ({file}:{})", self.line.unwrap_or(0))?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The logbook: the in-memory ring of entries and the log file. Cheap to clone (a handle).
#[derive(Clone)]
pub struct Logbook {
    inner: Arc<Mutex<Inner>>,
    entry_bytes_max: usize,
}

impl fmt::Debug for Logbook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logbook").finish_non_exhaustive()
    }
}

struct Inner {
    entries: VecDeque<LogEntry>,
    memory_entries_max: usize,
    file: Option<LogFile>,
    file_errors: u64,
}

struct LogFile {
    path: PathBuf,
    file: File,
    bytes: u64,
    bytes_max: u64,
}

fn open_append(path: &Path) -> io::Result<(File, u64)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let bytes = file.metadata()?.len();
    Ok((file, bytes))
}

impl LogFile {
    fn append(&mut self, line: &str) -> io::Result<()> {
        let len = u64::try_from(line.len()).unwrap_or(u64::MAX);
        if self.bytes > 0 && self.bytes.saturating_add(len) > self.bytes_max {
            let mut rotated = self.path.clone().into_os_string();
            rotated.push(".1");
            std::fs::rename(&self.path, &rotated)?;
            let (file, bytes) = open_append(&self.path)?;
            self.file = file;
            self.bytes = bytes;
        }
        self.file.write_all(line.as_bytes())?;
        self.bytes = self.bytes.saturating_add(len);
        Ok(())
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Logbook {
    /// A logbook; opens (creating it and its directory if needed) the log file for appending.
    pub fn new(config: &LogbookConfig) -> io::Result<Self> {
        let file = match &config.file {
            Some(path) => {
                let (file, bytes) = open_append(path)?;
                Some(LogFile {
                    path: path.clone(),
                    file,
                    bytes,
                    bytes_max: config.file_bytes_max.max(1),
                })
            }
            None => None,
        };
        let memory_entries_max = config.memory_entries_max.max(1);
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                entries: VecDeque::with_capacity(memory_entries_max.min(65_536)),
                memory_entries_max,
                file,
                file_errors: 0,
            })),
            entry_bytes_max: config.entry_bytes_max.max(16),
        })
    }

    /// The `tracing` layer feeding this logbook.
    pub fn layer(&self) -> LogbookLayer {
        LogbookLayer { logbook: self.clone() }
    }

    /// Records an entry: kept in memory (dropping the oldest beyond the bound) and appended
    /// to the file. A file that cannot be written is counted in
    /// [`file_errors`](Self::file_errors); the first failure is reported on stderr.
    pub fn record(&self, mut entry: LogEntry) {
        truncate(&mut entry.message, self.entry_bytes_max);
        // Kept for the crash dump: without the room a formatted message grows into.
        entry.message.shrink_to_fit();
        let line = format!("{entry}\n");
        let mut inner = lock(&self.inner);
        if let Some(file) = &mut inner.file
            && let Err(e) = file.append(&line)
        {
            if inner.file_errors == 0 {
                // The log system cannot log its own failure; stderr is all there is.
                let _ = writeln!(io::stderr(), "logbook: cannot write the log file: {e}");
            }
            inner.file_errors = inner.file_errors.saturating_add(1);
        }
        if inner.entries.len() >= inner.memory_entries_max {
            inner.entries.pop_front();
        }
        inner.entries.push_back(entry);
    }

    /// The entries in memory, oldest first.
    pub fn dump(&self) -> Vec<LogEntry> {
        lock(&self.inner).entries.iter().cloned().collect()
    }

    /// Writes the entries in memory, one line each, oldest first.
    pub fn write_dump(&self, out: &mut dyn Write) -> io::Result<()> {
        for entry in self.dump() {
            writeln!(out, "{entry}")?;
        }
        Ok(())
    }

    /// Failed writes to the log file so far.
    pub fn file_errors(&self) -> u64 {
        lock(&self.inner).file_errors
    }

    /// Writes a crash dump without blocking: the panic message then the entries in memory.
    /// Gives up (`Ok(false)`) when the logbook is locked, e.g. by the panicking thread itself.
    fn write_crash_dump(&self, path: &Path, header: &str) -> io::Result<bool> {
        let entries: Vec<LogEntry> = match self.inner.try_lock() {
            Ok(inner) => inner.entries.iter().cloned().collect(),
            Err(std::sync::TryLockError::Poisoned(p)) => {
                p.into_inner().entries.iter().cloned().collect()
            }
            Err(std::sync::TryLockError::WouldBlock) => return Ok(false),
        };
        let mut file = File::create(path)?;
        writeln!(file, "{header}")?;
        for entry in entries {
            writeln!(file, "{entry}")?;
        }
        file.sync_all()?;
        Ok(true)
    }
}

/// Cuts `text` to at most `max` bytes, at a character boundary, ending with `…`.
fn truncate(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    // The memory goes with the bytes: an entry kept holds what it shows, not the allocation of
    // the message it was cut from (`log.memory_entries_max` × `log.entry_bytes_max` bounds it).
    text.shrink_to_fit();
}

/// The `tracing` layer of a [`Logbook`].
#[derive(Debug, Clone)]
pub struct LogbookLayer {
    logbook: Logbook,
}

/// A span's fields, formatted once, kept in the span's extensions.
struct SpanFields(String);

/// Formats an event's or a span's fields: `message` apart, the others as ` name=value`.
#[derive(Default)]
struct FieldText {
    message: String,
    fields: String,
}

impl Visit for FieldText {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

impl<S> Layer<S> for LogbookLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut text = FieldText::default();
        attrs.record(&mut text);
        let mut fields = text.message;
        fields.push_str(text.fields.trim_start());
        truncate(&mut fields, self.logbook.entry_bytes_max);
        span.extensions_mut().insert(SpanFields(fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut text = FieldText::default();
        values.record(&mut text);
        let mut extensions = span.extensions_mut();
        if let Some(SpanFields(fields)) = extensions.get_mut::<SpanFields>() {
            if !fields.is_empty() {
                fields.push(' ');
            }
            fields.push_str(text.fields.trim_start());
            truncate(fields, self.logbook.entry_bytes_max);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let metadata = event.metadata();
        let mut message = String::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                message.push_str(span.name());
                if let Some(SpanFields(fields)) = span.extensions().get::<SpanFields>()
                    && !fields.is_empty()
                {
                    let _ = write!(message, "{{{fields}}}");
                }
                message.push_str(": ");
            }
        }
        let mut text = FieldText::default();
        event.record(&mut text);
        message.push_str(&text.message);
        message.push_str(&text.fields);
        self.logbook.record(LogEntry {
            at: OffsetDateTime::now_utc(),
            level: *metadata.level(),
            target: metadata.target(),
            module: metadata.module_path(),
            file: metadata.file(),
            line: metadata.line(),
            message,
        });
    }
}

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The log file (`log.file`) could not be opened: a configuration to mend.
    #[error("cannot open the log file {} (log.file): {source}", path.display())]
    LogFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A global subscriber is already set.
    #[error("tracing is already set up: {0}")]
    AlreadySet(String),
}

impl InitError {
    /// The exit status a binary ends with on it: 2 for a log file that cannot be opened (a
    /// configuration to mend, as every other bad setting), 1 otherwise.
    pub fn exit_status(&self) -> u8 {
        match self {
            Self::LogFile { .. } => 2,
            Self::AlreadySet(_) => 1,
        }
    }
}

/// Keeps the logbook of [`init_tracing`] reachable, for crash dumps.
#[derive(Debug, Clone)]
pub struct LogGuard {
    logbook: Logbook,
}

impl LogGuard {
    /// The logbook behind the global subscriber.
    pub fn logbook(&self) -> &Logbook {
        &self.logbook
    }
}

/// Sets the global `tracing` subscriber: human-readable lines on stderr, filtered by `RUST_LOG`
/// (default `info`; an unparsable directive is ignored), and the same entries into a
/// [`Logbook`] with `config`. Call once, from `main`.
pub fn init_tracing(config: &LogbookConfig) -> Result<LogGuard, InitError> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let logbook = Logbook::new(config).map_err(|source| InitError::LogFile {
        path: config.file.clone().unwrap_or_default(),
        source,
    })?;
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(tracing::level_filters::LevelFilter::INFO.into())
        .from_env_lossy();
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(io::stderr)
                .with_ansi(io::IsTerminal::is_terminal(&io::stderr())),
        )
        .with(logbook.layer())
        .try_init()
        .map_err(|e| InitError::AlreadySet(e.to_string()))?;
    Ok(LogGuard { logbook })
}

/// Crash dumps written at most per process: a panic that is contained and can recur (a price
/// read on a damaged journal, once per query) must not fill the disk with them.
pub const CRASH_DUMPS_MAX: usize = 8;

/// Crash dumps kept in a directory across starts: a master that crashes again and again under
/// a supervisor must not fill its data directory with them. The oldest go first.
pub const CRASH_DUMPS_KEPT: usize = 32;

/// Deletes the oldest `crash-*.log` files of `dir` beyond the newest `keep` (their names sort
/// by time); returns how many were deleted. Errors are skipped: pruning is housekeeping.
pub fn prune_crash_dumps(dir: &Path, keep: usize) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut dumps: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("crash-") && name.ends_with(".log"))
        })
        .collect();
    dumps.sort();
    let excess = dumps.len().saturating_sub(keep);
    dumps.iter().take(excess).filter(|path| std::fs::remove_file(path).is_ok()).count()
}

/// Installs a panic hook that writes the panic and the logbook's entries in memory to
/// `dir/crash-<unix seconds>-<nanoseconds>.log` (spec 3.1.1), at most [`CRASH_DUMPS_MAX`]
/// times, then runs the previous hook. The dumps earlier starts left beyond
/// [`CRASH_DUMPS_KEPT`] are deleted first.
pub fn install_crash_dump(logbook: Logbook, dir: PathBuf) {
    let pruned = prune_crash_dumps(&dir, CRASH_DUMPS_KEPT);
    if pruned > 0 {
        tracing::info!(pruned, kept = CRASH_DUMPS_KEPT, "old crash dumps deleted");
    }
    let previous = std::panic::take_hook();
    let written = std::sync::atomic::AtomicUsize::new(0);
    std::panic::set_hook(Box::new(move |info| {
        if written.fetch_add(1, std::sync::atomic::Ordering::AcqRel) >= CRASH_DUMPS_MAX {
            let _ = writeln!(
                io::stderr(),
                "crash dump skipped: {CRASH_DUMPS_MAX} were written already by this process"
            );
            previous(info);
            return;
        }
        let now = OffsetDateTime::now_utc();
        let path = dir.join(format!("crash-{}-{:09}.log", now.unix_timestamp(), now.nanosecond()));
        let header = format!("panic: {info}");
        match logbook.write_crash_dump(&path, &header) {
            Ok(true) => {
                let _ = writeln!(io::stderr(), "crash dump written to {}", path.display());
            }
            Ok(false) => {
                let _ = writeln!(io::stderr(), "crash dump skipped: the logbook was locked");
            }
            Err(e) => {
                let _ = writeln!(io::stderr(), "crash dump to {} failed: {e}", path.display());
            }
        }
        previous(info);
    }));
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    fn with_logbook(config: &LogbookConfig, body: impl FnOnce()) -> Logbook {
        let logbook = Logbook::new(config).unwrap();
        let subscriber = tracing_subscriber::registry().with(logbook.layer());
        tracing::subscriber::with_default(subscriber, body);
        logbook
    }

    #[test]
    fn old_crash_dumps_beyond_the_kept_number_are_deleted_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        for second in [1_700_000_003, 1_700_000_001, 1_700_000_002, 1_700_000_004] {
            std::fs::write(dir.path().join(format!("crash-{second}-000000000.log")), "x").unwrap();
        }
        std::fs::write(dir.path().join("master.log"), "kept").unwrap();
        assert_eq!(prune_crash_dumps(dir.path(), 2), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["crash-1700000003-000000000.log", "crash-1700000004-000000000.log", "master.log"]
        );
        assert_eq!(prune_crash_dumps(dir.path(), 2), 0);
        assert_eq!(prune_crash_dumps(&dir.path().join("missing"), 2), 0);
    }

    #[test]
    fn keeps_the_last_entries_with_their_origin() {
        let config = LogbookConfig { memory_entries_max: 3, ..LogbookConfig::default() };
        let logbook = with_logbook(&config, || {
            for i in 0..5 {
                tracing::info!(i, name = "x", "entry {}", i);
            }
            tracing::warn!(peer = %"10.0.0.1:5000", "last");
        });
        let entries = logbook.dump();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].message, "entry 3 i=3 name=\"x\"");
        assert_eq!(entries[2].message, "last peer=10.0.0.1:5000");
        assert_eq!(entries[2].level, Level::WARN);
        assert_eq!(entries[2].module, Some(module_path!()));
        assert_eq!(entries[2].file, Some(file!()));
        assert!(entries[2].line.is_some());
        let line = entries[2].to_string();
        assert!(line.contains(" WARN master::logbook::tests (master/src/logbook.rs:"), "{line}");
        assert!(line.ends_with("): last peer=10.0.0.1:5000"), "{line}");
    }

    #[test]
    fn span_fields_prefix_the_message() {
        let logbook = with_logbook(&LogbookConfig::default(), || {
            let span = tracing::info_span!("conn", peer = "p1");
            let _enter = span.enter();
            span.record("peer", "p2");
            tracing::info!("hello");
        });
        let entries = logbook.dump();
        assert!(
            entries[0].message.starts_with("conn{peer=\"p1\" peer=\"p2\"}: hello"),
            "{:?}",
            entries[0]
        );
    }

    #[test]
    fn appends_every_entry_to_the_file_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/master.log");
        let config = LogbookConfig {
            memory_entries_max: 2,
            file: Some(path.clone()),
            file_bytes_max: 1000,
            entry_bytes_max: 64,
        };
        let logbook = with_logbook(&config, || {
            for i in 0..5 {
                tracing::info!("entry {i}");
            }
            tracing::error!("{}", "é".repeat(100));
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 6);
        assert!(text.lines().next().unwrap().ends_with(": entry 0"));
        let long = logbook.dump().pop().unwrap().message;
        assert!(long.len() <= 64 && long.ends_with('…'), "{long}");
        // Past the size bound the file is renamed and a new one started.
        let logbook = with_logbook(&config, || {
            for i in 0..20 {
                tracing::info!("more {i}");
            }
        });
        let rotated = dir.path().join("logs/master.log.1");
        assert!(rotated.exists());
        assert!(std::fs::metadata(&path).unwrap().len() <= 1000);
        assert_eq!(logbook.file_errors(), 0);
        let mut dump = Vec::new();
        logbook.write_dump(&mut dump).unwrap();
        assert_eq!(String::from_utf8(dump).unwrap().lines().count(), 2);
    }

    #[test]
    fn crash_dump_writes_the_memory() {
        let dir = tempfile::tempdir().unwrap();
        let logbook = with_logbook(&LogbookConfig::default(), || tracing::info!("before"));
        let path = dir.path().join("crash.log");
        assert!(logbook.write_crash_dump(&path, "panic: boom").unwrap());
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.starts_with("panic: boom\n"));
        assert!(text.contains(": before"));
    }
}
