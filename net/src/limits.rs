//! Every limit of the wire protocol, in one place, units last in the names.
//!
//! Username, email and symbol lengths are the engine's (`engine::limits`); they are re-exported here
//! so that the whole protocol's limits can be read in one file.

pub use engine::limits::{EMAIL_CHARS_MAX, SYMBOL_CHARS_MAX, USERNAME_CHARS_MAX};

/// The protocol version this crate speaks, the first byte of every frame.
pub const PROTOCOL_VERSION: u8 = 1;

/// Size of the fixed frame header, in bytes.
pub const HEADER_BYTES: usize = 20;

/// Size of the integrity trailer of a sealed master–worker link frame (sequence u64 + MAC), bytes.
pub const SEAL_TRAILER_BYTES: usize = 8 + LINK_MAC_BYTES;

/// Size of a link MAC (keyed BLAKE3), in bytes.
pub const LINK_MAC_BYTES: usize = 32;

/// Most data bytes one frame (one packet) may carry. Checked from the header, before buffering.
pub const FRAME_DATA_BYTES_MAX: usize = 64 * 1024;

/// Largest frame on the wire: header, data and (on a sealed link) the trailer.
pub const FRAME_BYTES_MAX: usize = HEADER_BYTES + FRAME_DATA_BYTES_MAX + SEAL_TRAILER_BYTES;

/// Largest message body (all packets' data together) a receiver reassembles: 16 MiB.
pub const MESSAGE_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Largest request body a server reassembles from a client (a worker's clients, the master's
/// connections before they are known to be worker links): one full packet. Every request is far
/// smaller (a `register` is under 1 KiB), so a connection cannot make its server hold more
/// than this; answers, and the master-worker link, keep [`MESSAGE_BODY_BYTES_MAX`].
pub const REQUEST_BODY_BYTES_MAX: usize = FRAME_DATA_BYTES_MAX;

/// Most packets one message may be split into (`data message max`).
pub const PACKETS_PER_MESSAGE_MAX: u32 = 4096;

/// Most top-level arguments one message may declare (`argument count`).
pub const ARGS_PER_MESSAGE_MAX: u16 = 64;

/// Shortest client-side password hash (`hashedPass`), in bytes.
pub const HASHED_PASSWORD_BYTES_MIN: usize = 16;

/// Longest client-side password hash (`hashedPass`), in bytes.
pub const HASHED_PASSWORD_BYTES_MAX: usize = 128;

/// Longest human-readable failure message, in bytes of UTF-8.
pub const FAILURE_MESSAGE_BYTES_MAX: usize = 1024;

/// Most transactions one `transactionHistory` payload carries: the newest ones, the count of the
/// older ones beside them. An entry takes at most about 90 bytes, so the payload stays under
/// 1 MB however long a history grows. Every logged-in user may ask for any user's history, so
/// the answer's size is what one small request can make the master copy and the link carry:
/// 10,000 (years of a busy trader's fills) keeps that bounded; `pt-replay show` has the rest.
pub const HISTORY_ENTRIES_MAX: usize = 10_000;

/// Most bars one `priceSeries` payload carries. A bar takes 54 bytes, so 250,000 (a day of
/// ticks a third of a second apart) keep the payload under 14 MB, inside one message
/// ([`MESSAGE_BODY_BYTES_MAX`]): a longer series is refused `tooLarge` by the master before
/// it is built, not found too large once encoded.
pub const PRICE_SERIES_BARS_MAX: usize = 250_000;

/// Longest worker display name, in bytes of UTF-8.
pub const WORKER_NAME_BYTES_MAX: usize = 64;

/// Longest client-facing worker address (`host:port`, UTF-8), in bytes; as in
/// `docs/WORKER_AUTH.md`.
pub const WORKER_ADDRESS_BYTES_MAX: usize = 255;

/// Longest handshake signature (`helloProof`, and the `masterProof` of `challenge`), in bytes; as
/// in `docs/WORKER_AUTH.md`.
pub const SIGNATURE_BYTES_MAX: usize = 4096;

/// Longest encrypted link key (the `sealedKey` of `challenge`), in bytes; as in
/// `docs/WORKER_AUTH.md`.
pub const SEALED_KEY_BYTES_MAX: usize = 4096;

/// Size of a session id, in bytes.
pub const SESSION_ID_BYTES: usize = 32;

/// Size of a handshake nonce (the master's in `challenge`, the worker's in `workerHello`), in
/// bytes.
pub const NONCE_BYTES: usize = 32;

/// Size of the shared master–worker link key, in bytes.
pub const LINK_KEY_BYTES: usize = 32;
