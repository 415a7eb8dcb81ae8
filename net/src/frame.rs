//! Frames: the fixed 20-byte header and its data, parsed in two phases.
//!
//! [`Frame::check`] looks at a buffer and says how long the first frame is, or that more bytes
//! are needed ([`FrameError::Incomplete`]), or that the bytes are malformed (any other error). It
//! validates every header field, including the data size against [`FRAME_DATA_BYTES_MAX`], as soon
//! as the 20 header bytes are there: a reader never buffers the data of a frame it will refuse.
//! [`Frame::parse`] then turns exactly one complete frame into a [`Frame`].
//!
//! Layout (all integers big-endian, see `docs/PROTOCOL.md`):
//!
//! ```text
//! offset size field
//!      0    1 version               (PROTOCOL_VERSION = 1)
//!      1    1 message type          (1 command, 2 data transfer, 3 server return, 4 control)
//!      2    2 instruction
//!      4    2 argument count
//!      6    2 flags                 (bit 0: sealed; every other bit must be 0)
//!      8    4 data message number   (1..=max)
//!     12    4 data message max      (1..=PACKETS_PER_MESSAGE_MAX)
//!     16    4 data size             (0..=FRAME_DATA_BYTES_MAX)
//!     20    n data
//!   20+n   40 seal trailer, only when flag bit 0 is set: sequence u64, MAC [u8; 32]
//! ```

use std::fmt;

use crate::error::FrameError;
use crate::limits::{
    ARGS_PER_MESSAGE_MAX, FRAME_DATA_BYTES_MAX, HEADER_BYTES, LINK_MAC_BYTES,
    PACKETS_PER_MESSAGE_MAX, PROTOCOL_VERSION, SEAL_TRAILER_BYTES,
};

/// Flag bit 0: the frame is followed by a 40-byte seal trailer (master–worker link only).
pub const FLAG_SEALED: u16 = 0x0001;

/// The category of a message (spec 4.4 `messageType`, 4.1 "Commands, Data Transfer, Control").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum MessageType {
    /// A command-state instruction (spec 4.5.1), client to server.
    Command = 1,
    /// A data-transfer-state instruction (spec 4.5.2), client to server.
    DataTransfer = 2,
    /// A server return (spec 4.5.3), server to client.
    ServerReturn = 3,
    /// A master–worker link message.
    Control = 4,
}

impl MessageType {
    /// Every message type, in code order.
    pub const ALL: [MessageType; 4] =
        [Self::Command, Self::DataTransfer, Self::ServerReturn, Self::Control];

    /// The wire code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The message type of a wire code, if it is one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.code() == code)
    }

    /// A stable name for logs and documentation.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::DataTransfer => "data transfer",
            Self::ServerReturn => "server return",
            Self::Control => "control",
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// The integrity trailer of a sealed link frame: its sequence number and keyed BLAKE3 MAC.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Seal {
    /// The sender's sequence number for this frame, starting at 1 in each direction.
    pub seq: u64,
    /// `blake3::keyed_hash(key, context || direction || seq || header and data)`.
    pub mac: [u8; LINK_MAC_BYTES],
}

impl fmt::Debug for Seal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Seal {{ seq: {}, mac: {} }}", self.seq, hex(&self.mac[..4]))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<String>() + ".."
}

/// One frame (one packet): header fields and data. Built by splitting a
/// [`Message`](crate::Message) or by [`Frame::parse`], so every frame is within the limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    message_type: MessageType,
    instruction: u16,
    arg_count: u16,
    packet_number: u32,
    packet_max: u32,
    data: Vec<u8>,
    seal: Option<Seal>,
}

fn be_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

fn be_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

impl Frame {
    /// Builds a frame from parts the caller has already checked against the limits.
    pub(crate) fn from_checked_parts(
        message_type: MessageType,
        instruction: u16,
        arg_count: u16,
        packet_number: u32,
        packet_max: u32,
        data: Vec<u8>,
    ) -> Self {
        assert!(data.len() <= FRAME_DATA_BYTES_MAX, "frame data over the limit");
        assert!((1..=packet_max).contains(&packet_number), "packet number out of range");
        assert!(packet_max <= PACKETS_PER_MESSAGE_MAX, "packet max over the limit");
        assert!(arg_count <= ARGS_PER_MESSAGE_MAX, "argument count over the limit");
        Self { message_type, instruction, arg_count, packet_number, packet_max, data, seal: None }
    }

    /// Phase one: the total length in bytes of the frame at the start of `buf`.
    ///
    /// Returns [`FrameError::Incomplete`] when `buf` holds a valid prefix of a frame but not all
    /// of it (read more and call again), and any other [`FrameError`] when the bytes can never be
    /// a valid frame (close the connection). Every header field is validated as soon as the
    /// header is complete, before any of the data is awaited.
    pub fn check(buf: &[u8]) -> Result<usize, FrameError> {
        if buf.len() < HEADER_BYTES {
            return Err(FrameError::Incomplete { needed_bytes: HEADER_BYTES - buf.len() });
        }
        let version = buf[0];
        if version != PROTOCOL_VERSION {
            return Err(FrameError::UnsupportedVersion { version });
        }
        if MessageType::from_code(buf[1]).is_none() {
            return Err(FrameError::UnknownMessageType { code: buf[1] });
        }
        let arg_count = be_u16(buf, 4);
        if arg_count > ARGS_PER_MESSAGE_MAX {
            return Err(FrameError::TooManyArgs { count: arg_count, max: ARGS_PER_MESSAGE_MAX });
        }
        let flags = be_u16(buf, 6);
        if flags & !FLAG_SEALED != 0 {
            return Err(FrameError::UnknownFlags { flags });
        }
        let number = be_u32(buf, 8);
        let max = be_u32(buf, 12);
        if max == 0 || max > PACKETS_PER_MESSAGE_MAX {
            return Err(FrameError::PacketMaxOutOfRange { max, limit: PACKETS_PER_MESSAGE_MAX });
        }
        if number == 0 {
            return Err(FrameError::PacketNumberZero);
        }
        if number > max {
            return Err(FrameError::PacketNumberOverMax { number, max });
        }
        let data_bytes = be_u32(buf, 16);
        let data_len = usize::try_from(data_bytes).unwrap_or(usize::MAX);
        if data_len > FRAME_DATA_BYTES_MAX {
            return Err(FrameError::DataTooLarge { data_bytes, max: FRAME_DATA_BYTES_MAX });
        }
        let trailer = if flags & FLAG_SEALED != 0 { SEAL_TRAILER_BYTES } else { 0 };
        let total = HEADER_BYTES
            .checked_add(data_len)
            .and_then(|n| n.checked_add(trailer))
            .ok_or(FrameError::DataTooLarge { data_bytes, max: FRAME_DATA_BYTES_MAX })?;
        if buf.len() < total {
            return Err(FrameError::Incomplete { needed_bytes: total - buf.len() });
        }
        Ok(total)
    }

    /// Phase two: parses `buf`, which must hold exactly one complete frame.
    ///
    /// A buffer shorter than a header gives [`FrameError::ShortHeader`], one shorter than the
    /// header says gives [`FrameError::TruncatedData`], a longer one [`FrameError::TrailingBytes`].
    pub fn parse(buf: &[u8]) -> Result<Frame, FrameError> {
        let total = match Frame::check(buf) {
            Ok(total) => total,
            Err(FrameError::Incomplete { needed_bytes }) => {
                return Err(if buf.len() < HEADER_BYTES {
                    FrameError::ShortHeader { got_bytes: buf.len() }
                } else {
                    FrameError::TruncatedData { missing_bytes: needed_bytes }
                });
            }
            Err(other) => return Err(other),
        };
        if buf.len() > total {
            return Err(FrameError::TrailingBytes { extra_bytes: buf.len() - total });
        }
        let message_type = MessageType::from_code(buf[1])
            .ok_or(FrameError::UnknownMessageType { code: buf[1] })?;
        let sealed = be_u16(buf, 6) & FLAG_SEALED != 0;
        let data_end = if sealed { total - SEAL_TRAILER_BYTES } else { total };
        let seal = if sealed {
            let trailer = &buf[data_end..total];
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&trailer[..8]);
            let mut mac = [0u8; LINK_MAC_BYTES];
            mac.copy_from_slice(&trailer[8..]);
            Some(Seal { seq: u64::from_be_bytes(seq), mac })
        } else {
            None
        };
        Ok(Frame {
            message_type,
            instruction: be_u16(buf, 2),
            arg_count: be_u16(buf, 4),
            packet_number: be_u32(buf, 8),
            packet_max: be_u32(buf, 12),
            data: buf[HEADER_BYTES..data_end].to_vec(),
            seal,
        })
    }

    /// The message type.
    pub fn message_type(&self) -> MessageType {
        self.message_type
    }

    /// The instruction number, as sent (it may be one this version does not know).
    pub fn instruction(&self) -> u16 {
        self.instruction
    }

    /// The declared number of top-level arguments of the whole message.
    pub fn arg_count(&self) -> u16 {
        self.arg_count
    }

    /// This packet's number, 1-based (`data message number`).
    pub fn packet_number(&self) -> u32 {
        self.packet_number
    }

    /// How many packets the message has (`data message max`).
    pub fn packet_max(&self) -> u32 {
        self.packet_max
    }

    /// This packet's share of the message body.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The seal trailer, on a sealed link frame.
    pub fn seal(&self) -> Option<&Seal> {
        self.seal.as_ref()
    }

    /// The data, to encrypt or decrypt in place (the link's seal).
    pub(crate) fn data_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    pub(crate) fn set_seal(&mut self, seal: Option<Seal>) {
        self.seal = seal;
    }

    pub(crate) fn into_data(self) -> Vec<u8> {
        self.data
    }

    /// Length of the frame on the wire, in bytes.
    pub fn wire_len(&self) -> usize {
        HEADER_BYTES + self.data.len() + if self.seal.is_some() { SEAL_TRAILER_BYTES } else { 0 }
    }

    /// Appends the header (with the sealed flag as given) and the data: the bytes a MAC covers.
    pub(crate) fn write_header_and_data(&self, sealed: bool, out: &mut Vec<u8>) {
        // Every constructor keeps the data within FRAME_DATA_BYTES_MAX, far below u32::MAX.
        let data_bytes = u32::try_from(self.data.len()).unwrap_or(u32::MAX);
        out.push(PROTOCOL_VERSION);
        out.push(self.message_type.code());
        out.extend_from_slice(&self.instruction.to_be_bytes());
        out.extend_from_slice(&self.arg_count.to_be_bytes());
        let flags = if sealed { FLAG_SEALED } else { 0 };
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&self.packet_number.to_be_bytes());
        out.extend_from_slice(&self.packet_max.to_be_bytes());
        out.extend_from_slice(&data_bytes.to_be_bytes());
        out.extend_from_slice(&self.data);
    }

    /// Appends the frame's wire bytes (with its seal trailer, if it has one) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        self.write_header_and_data(self.seal.is_some(), out);
        if let Some(seal) = &self.seal {
            out.extend_from_slice(&seal.seq.to_be_bytes());
            out.extend_from_slice(&seal.mac);
        }
    }

    /// The frame's wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.wire_len());
        self.write_to(&mut out);
        out
    }
}
