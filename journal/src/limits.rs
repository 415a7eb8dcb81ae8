//! Every limit the journal enforces, in one place, units last in the names.

/// Most events one batch (one durable transaction) may hold.
pub const BATCH_EVENTS_MAX: usize = 1_000_000;
/// Largest encoded event, in bytes. An `IntervalSettled` with the engine's maximum of 100,000
/// ticks takes about 6.4 MB.
pub const EVENT_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Largest encoded batch (all its records), in bytes: one redb value.
pub const BATCH_BYTES_MAX: usize = 1024 * 1024 * 1024;
/// Largest encoded snapshot, in bytes (redb refuses values over 3 GiB).
pub const SNAPSHOT_BYTES_MAX: usize = 2 * 1024 * 1024 * 1024;
/// Most snapshots kept in the file (the newest ones); older ones are deleted on store.
pub const SNAPSHOTS_KEPT_MAX: usize = 64;
/// Largest session value, in bytes.
pub const SESSION_BYTES_MAX: usize = 64 * 1024;
/// Longest meta key, in bytes.
pub const META_KEY_BYTES_MAX: usize = 128;
/// Largest meta value, in bytes.
pub const META_VALUE_BYTES_MAX: usize = 64 * 1024;
/// Most ticks one [`crate::Journal::ticks`] query returns.
pub const TICKS_QUERY_MAX: usize = 100_000;
