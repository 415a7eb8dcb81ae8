//! One error enum per operation: framing, encoding, reassembly, typed decoding, link integrity.

use engine::NameError;

use crate::args::Tag;
use crate::frame::MessageType;
use crate::instruction::Instruction;
use crate::types::Reason;

/// Why bytes are not a frame. Every variant but [`FrameError::Incomplete`] means the stream can
/// not be resynchronised: answer with an `error` return if possible and close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not malformed: the buffer holds a valid prefix; this many more bytes are needed at least.
    #[error("incomplete frame: {needed_bytes} more bytes needed")]
    Incomplete {
        /// How many more bytes are needed (for the header first, then for the whole frame).
        needed_bytes: usize,
    },
    /// A whole-buffer parse got fewer bytes than a header.
    #[error("short header: {got_bytes} bytes, a header is 20")]
    ShortHeader {
        /// Bytes given.
        got_bytes: usize,
    },
    /// A whole-buffer parse got a header announcing more data than the buffer holds.
    #[error("truncated frame: {missing_bytes} bytes missing")]
    TruncatedData {
        /// Bytes missing.
        missing_bytes: usize,
    },
    /// A whole-buffer parse got bytes after the end of the frame.
    #[error("{extra_bytes} bytes after the end of the frame")]
    TrailingBytes {
        /// Bytes after the frame.
        extra_bytes: usize,
    },
    /// The version byte is not [`PROTOCOL_VERSION`](crate::limits::PROTOCOL_VERSION).
    #[error("unsupported protocol version {version}")]
    UnsupportedVersion {
        /// The version byte received.
        version: u8,
    },
    /// The message type byte is not one of the four types.
    #[error("unknown message type {code}")]
    UnknownMessageType {
        /// The byte received.
        code: u8,
    },
    /// The argument count is over the limit.
    #[error("argument count {count} is over the limit of {max}")]
    TooManyArgs {
        /// Declared count.
        count: u16,
        /// The limit.
        max: u16,
    },
    /// A reserved flag bit is set.
    #[error("unknown flags {flags:#06x}")]
    UnknownFlags {
        /// The flags field received.
        flags: u16,
    },
    /// `data message max` is 0 or over the limit.
    #[error("data message max {max} is outside 1..={limit}")]
    PacketMaxOutOfRange {
        /// Declared max.
        max: u32,
        /// The limit.
        limit: u32,
    },
    /// `data message number` is 0; packets count from 1.
    #[error("data message number 0; packets count from 1")]
    PacketNumberZero,
    /// `data message number` is above `data message max`.
    #[error("data message number {number} is above data message max {max}")]
    PacketNumberOverMax {
        /// Declared number.
        number: u32,
        /// Declared max.
        max: u32,
    },
    /// The data size is over the per-frame limit; refused before any data is read.
    #[error("frame data of {data_bytes} bytes is over the limit of {max}")]
    DataTooLarge {
        /// Declared data size.
        data_bytes: u32,
        /// The limit.
        max: usize,
    },
}

/// Why a message could not be encoded: a value over a limit the receiver would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoded body is over [`MESSAGE_BODY_BYTES_MAX`](crate::limits::MESSAGE_BODY_BYTES_MAX).
    #[error("message body of {body_bytes} bytes is over the limit of {max}")]
    BodyTooLarge {
        /// Body size.
        body_bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A field is longer than its limit.
    #[error("{what} is {len} bytes long, at most {max} are allowed")]
    FieldTooLong {
        /// Which field.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A field is shorter than its minimum.
    #[error("{what} is {len} bytes long, at least {min} are required")]
    FieldTooShort {
        /// Which field.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// A value that contradicts the message it is in (a `purchaseSuccess` with a sell fill).
    #[error("{what} contradicts the message")]
    Inconsistent {
        /// Which field.
        what: &'static str,
    },
    /// A list with more items than its format allows.
    #[error("{what} has {items} items, at most {max} are allowed")]
    TooManyItems {
        /// Which list.
        what: &'static str,
        /// Its items.
        items: usize,
        /// The limit.
        max: usize,
    },
    /// A list out of the order its format promises.
    #[error("{what} is out of order")]
    OutOfOrder {
        /// What the order is.
        what: &'static str,
    },
    /// The requested packet size is 0 or over the frame data limit.
    #[error("packet size {packet_data_bytes} is outside 1..={max}")]
    BadPacketSize {
        /// Requested size.
        packet_data_bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The body would need more packets than a message may have.
    #[error("message needs {packets} packets, at most {max} are allowed")]
    TooManyPackets {
        /// Packets needed.
        packets: usize,
        /// The limit.
        max: u32,
    },
}

/// Why a packet does not continue the message being reassembled (spec 4.7.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReassemblyError {
    /// A packet number was skipped (or the first packet is not number 1).
    #[error("packet {got} arrived where packet {expected} was expected")]
    OutOfOrder {
        /// The next number expected.
        expected: u32,
        /// The number received.
        got: u32,
    },
    /// A packet number already received.
    #[error("packet {number} arrived twice")]
    Duplicate {
        /// The repeated number.
        number: u32,
    },
    /// `data message max` differs from the first packet's.
    #[error("packet says {got} packets, the first packet said {first}")]
    MaxChanged {
        /// The first packet's max.
        first: u32,
        /// This packet's max.
        got: u32,
    },
    /// Message type, instruction or argument count differ from the first packet's.
    #[error("packet header does not match the first packet of its message")]
    HeaderChanged,
    /// The reassembled body would exceed the limit.
    #[error("message body of at least {body_bytes} bytes is over the limit of {max}")]
    BodyTooLarge {
        /// Bytes received so far, including this packet.
        body_bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A frame with a seal trailer reached the reassembler without being opened.
    #[error("sealed frame was not opened by the link layer")]
    Sealed,
}

/// Why a complete message is not a valid typed message. The frame boundaries are intact, so the
/// connection can continue: answer with the matching fail return (see [`DecodeError::reason`]).
///
/// `field` counts every typed field of the body from 0, in order, including list items and the
/// fields of a nested message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The instruction number is not in the table.
    #[error("unknown instruction {code:#06x}")]
    UnknownInstruction {
        /// The number received.
        code: u16,
    },
    /// The header's message type is not the instruction's.
    #[error("{instruction} is a {expected} instruction, the header says {got}")]
    TypeMismatch {
        /// The instruction.
        instruction: Instruction,
        /// The instruction's type.
        expected: MessageType,
        /// The header's type.
        got: MessageType,
    },
    /// A known instruction in the wrong place (a server return where a request was expected...).
    #[error("{instruction} is not a {expected}")]
    UnexpectedInstruction {
        /// The instruction.
        instruction: Instruction,
        /// What was expected: "request", "response" or "control message".
        expected: &'static str,
    },
    /// The argument count is not the instruction's.
    #[error("{instruction} takes {expected} arguments, got {got}")]
    WrongArgCount {
        /// The instruction.
        instruction: Instruction,
        /// The count it takes.
        expected: u16,
        /// The count declared.
        got: u16,
    },
    /// The body ends inside a field (or before all declared fields).
    #[error("field {field} is truncated")]
    Truncated {
        /// Field index.
        field: u32,
    },
    /// A type tag that does not exist.
    #[error("field {field} has unknown type tag {tag:#04x}")]
    UnknownTag {
        /// Field index.
        field: u32,
        /// The tag byte.
        tag: u8,
    },
    /// A field of the wrong type.
    #[error("field {field} ({what}) should be {expected}, got {got}")]
    WrongType {
        /// Field index.
        field: u32,
        /// Which field.
        what: &'static str,
        /// Expected type.
        expected: Tag,
        /// Type received.
        got: Tag,
    },
    /// A bool that is neither 0 nor 1.
    #[error("field {field} is a bool with byte {byte:#04x}")]
    BadBool {
        /// Field index.
        field: u32,
        /// The byte.
        byte: u8,
    },
    /// An IP family other than 4 or 6.
    #[error("field {field} has IP family {family}")]
    BadIpFamily {
        /// Field index.
        field: u32,
        /// The family byte.
        family: u8,
    },
    /// Text that is not UTF-8.
    #[error("field {field} ({what}) is not valid UTF-8")]
    BadUtf8 {
        /// Field index.
        field: u32,
        /// Which field.
        what: &'static str,
    },
    /// A text or byte field over its limit.
    #[error("field {field} ({what}) is {len} bytes, at most {max} are allowed")]
    TooLong {
        /// Field index.
        field: u32,
        /// Which field.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A byte field under its minimum.
    #[error("field {field} ({what}) is {len} bytes, at least {min} are required")]
    TooShort {
        /// Field index.
        field: u32,
        /// Which field.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// A username, email or symbol the engine's rules refuse (e.g. a 25-character username).
    #[error("field {field}: {source}")]
    BadName {
        /// Field index.
        field: u32,
        /// The engine's reason.
        source: NameError,
    },
    /// A code (state, side, payload kind) that is not defined.
    #[error("field {field} ({what}) has unknown code {code}")]
    UnknownCode {
        /// Field index.
        field: u32,
        /// Which field.
        what: &'static str,
        /// The code.
        code: u16,
    },
    /// A list whose items have a different number of fields than the format's.
    #[error("field {field} is a list of {got}-field items, expected {expected}")]
    WrongListShape {
        /// Field index.
        field: u32,
        /// Fields per item expected.
        expected: u16,
        /// Fields per item declared.
        got: u16,
    },
    /// A list with more items than its format allows (a `transactionHistory` over
    /// [`HISTORY_ENTRIES_MAX`](crate::limits::HISTORY_ENTRIES_MAX)).
    #[error("field {field} ({what}) has {items} items, at most {max} are allowed")]
    TooManyItems {
        /// Field index.
        field: u32,
        /// Which list.
        what: &'static str,
        /// Items declared.
        items: usize,
        /// The limit.
        max: usize,
    },
    /// A list out of the order its format promises (holdings not sorted by symbol, a history
    /// not oldest first).
    #[error("field {field} ({what}) is out of order")]
    OutOfOrder {
        /// Field index of the list.
        field: u32,
        /// What the order is.
        what: &'static str,
    },
    /// A value that contradicts the instruction (a `sellSuccess` whose side is buy).
    #[error("field {field} ({what}) contradicts the instruction")]
    Inconsistent {
        /// Field index.
        field: u32,
        /// Which field.
        what: &'static str,
    },
    /// Bytes left after the last declared argument.
    #[error("{extra_bytes} bytes after the last argument")]
    TrailingBytes {
        /// Bytes left over.
        extra_bytes: usize,
    },
}

impl DecodeError {
    /// The reason code to answer with: `unknown_instruction` for an instruction this server does
    /// not know or take here, `malformed` for anything else.
    pub fn reason(&self) -> Reason {
        match self {
            Self::UnknownInstruction { .. } | Self::UnexpectedInstruction { .. } => {
                Reason::UnknownInstruction
            }
            _ => Reason::Malformed,
        }
    }
}

/// Why a frame on the sealed master–worker link was refused. Any of these ends the link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// A frame without a seal trailer after the handshake.
    #[error("frame is not sealed")]
    Unsealed,
    /// The MAC does not match: the frame was altered, or sealed with another key or direction.
    #[error("frame {seq} has a wrong MAC")]
    BadMac {
        /// The sequence number it claimed.
        seq: u64,
    },
    /// A sequence number already seen: a replayed frame.
    #[error("frame {got} replayed; expected {expected}")]
    Replayed {
        /// The next number expected.
        expected: u64,
        /// The number received.
        got: u64,
    },
    /// A sequence number past the next one: frames were dropped or reordered.
    #[error("frame {got} skips ahead; expected {expected}")]
    Skipped {
        /// The next number expected.
        expected: u64,
        /// The number received.
        got: u64,
    },
    /// The 64-bit sequence space is used up (never in practice); re-handshake.
    #[error("link sequence numbers exhausted")]
    SequenceExhausted,
}
