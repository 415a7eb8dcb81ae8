//! PaperTrader's wire protocol: a pure codec, a sans-IO connection state machine, link
//! integrity, and a thin tokio adapter.
//!
//! Layers, bottom up (`docs/PROTOCOL.md` describes the bytes):
//! - [`Frame`]: the 20-byte big-endian header and up to 64 KiB of data; two-phase parsing
//!   ([`Frame::check`] then [`Frame::parse`]) with "incomplete" distinct from "malformed".
//! - [`Message`]: one instruction and its typed, length-prefixed arguments; split into numbered
//!   packets by [`split_payload`] and put back together by [`Reassembler`] (spec 4.7.1).
//! - [`Request`], [`Response`], [`Control`]: the typed instructions, each with `encode` and
//!   `decode`; [`Instruction`] holds the stable numbers.
//! - [`Connection`]: the command / data transfer state machine (spec 4.2).
//! - [`LinkSealer`] / [`LinkOpener`]: sequence numbers and keyed BLAKE3 MACs on the
//!   master–worker link.
//! - [`io`]: [`FramedStream`] and its halves over any tokio `AsyncRead`/`AsyncWrite`.
//! - [`open_files`]: room for the connections: servers raise their open-file limit at start.
//!
//! Architecture invariant: nothing here but [`io`] performs IO, and nothing but [`open_files`]
//! asks the OS anything else; nothing reads a clock or draws randomness. Nothing received can panic the decoder.

mod args;
mod connection;
mod control;
mod error;
mod frame;
mod instruction;
pub mod io;
pub mod limits;
mod link;
mod message;
pub mod open_files;
mod payload;
mod request;
mod response;
mod types;

pub use args::Tag;
pub use connection::{Connection, Verdict};
pub use control::{Control, Relay, WorkerHello};
pub use error::{DecodeError, EncodeError, FrameError, LinkError, ReassemblyError};
pub use frame::{FLAG_SEALED, Frame, MessageType, Seal};
pub use instruction::Instruction;
pub use io::{
    FrameReader, FrameWriter, FramedStream, LINK_READ_CHUNK_BYTES, READ_CHUNK_BYTES, ReadError,
    WRITE_BUFFER_BYTES, WriteError,
};
pub use link::{Direction, LinkKey, LinkOpener, LinkSealer};
pub use message::{Message, Progress, Reassembler, split_payload};
pub use payload::{
    Bar, DataPayload, HistoryEntry, Portfolio, PortfolioHolding, PriceSeries, UserInfo, WorkerInfo,
};
pub use request::Request;
pub use response::Response;
pub use types::{
    ConnState, Failure, FillReport, HashedPassword, LengthError, Period, Reason, SessionId,
    side_code, side_from_code,
};
