//! Messages: a header's worth of identity plus a body, split into numbered packets on the way
//! out and reassembled on the way in (spec 4.7.1).

use crate::error::{EncodeError, ReassemblyError};
use crate::frame::{Frame, MessageType};
use crate::limits::{FRAME_DATA_BYTES_MAX, MESSAGE_BODY_BYTES_MAX, PACKETS_PER_MESSAGE_MAX};

/// One logical message: what every packet of it repeats in its header, and the whole body.
/// Typed messages ([`Request`](crate::Request), [`Response`](crate::Response),
/// [`Control`](crate::Control)) encode to and decode from this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The message type.
    pub message_type: MessageType,
    /// The instruction number.
    pub instruction: u16,
    /// The number of top-level arguments in the body.
    pub arg_count: u16,
    /// The encoded arguments.
    pub body: Vec<u8>,
}

impl Message {
    /// The message as packets of at most [`FRAME_DATA_BYTES_MAX`] data bytes each.
    pub fn to_frames(&self) -> Result<Vec<Frame>, EncodeError> {
        split_payload(self, FRAME_DATA_BYTES_MAX)
    }

    /// The wire bytes of all the message's packets, one after the other (unsealed).
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        for frame in self.to_frames()? {
            frame.write_to(&mut out);
        }
        Ok(out)
    }
}

/// Splits a message into numbered packets `1..=max` of at most `packet_data_bytes` data bytes
/// each (spec 4.7.1). An empty body is one packet with no data. Any packet size from 1 to
/// [`FRAME_DATA_BYTES_MAX`] that keeps the message within [`PACKETS_PER_MESSAGE_MAX`] packets
/// gives a valid stream (receivers accept any of them); a smaller one is
/// [`EncodeError::TooManyPackets`].
pub fn split_payload(
    message: &Message,
    packet_data_bytes: usize,
) -> Result<Vec<Frame>, EncodeError> {
    if packet_data_bytes == 0 || packet_data_bytes > FRAME_DATA_BYTES_MAX {
        return Err(EncodeError::BadPacketSize { packet_data_bytes, max: FRAME_DATA_BYTES_MAX });
    }
    if message.body.len() > MESSAGE_BODY_BYTES_MAX {
        return Err(EncodeError::BodyTooLarge {
            body_bytes: message.body.len(),
            max: MESSAGE_BODY_BYTES_MAX,
        });
    }
    let packets = message.body.len().div_ceil(packet_data_bytes).max(1);
    let max = u32::try_from(packets)
        .ok()
        .filter(|&max| max <= PACKETS_PER_MESSAGE_MAX)
        .ok_or(EncodeError::TooManyPackets { packets, max: PACKETS_PER_MESSAGE_MAX })?;
    if message.arg_count > crate::limits::ARGS_PER_MESSAGE_MAX {
        return Err(EncodeError::FieldTooLong {
            what: "argument count",
            len: usize::from(message.arg_count),
            max: usize::from(crate::limits::ARGS_PER_MESSAGE_MAX),
        });
    }
    let mut chunks: Vec<&[u8]> = message.body.chunks(packet_data_bytes).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    Ok((1..=max)
        .zip(chunks)
        .map(|(number, chunk)| {
            Frame::from_checked_parts(
                message.message_type,
                message.instruction,
                message.arg_count,
                number,
                max,
                chunk.to_vec(),
            )
        })
        .collect())
}

/// What one packet did to the message being reassembled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// More packets are needed: `received` of `max` are in.
    Partial {
        /// Packets received so far.
        received: u32,
        /// Packets the message has.
        max: u32,
    },
    /// The last packet arrived: here is the whole message.
    Complete(Message),
}

#[derive(Debug)]
struct Partial {
    message_type: MessageType,
    instruction: u16,
    arg_count: u16,
    max: u32,
    received: u32,
    body: Vec<u8>,
}

/// Reassembles the packets of one message at a time (spec 4.7.1): packet numbers must run
/// 1, 2, ... max with no gap and no repeat, every packet must repeat the first packet's type,
/// instruction, argument count and max, and the body must stay within the size limit.
///
/// After an error the partial message is dropped; the caller should close the connection.
#[derive(Debug)]
pub struct Reassembler {
    body_bytes_max: usize,
    partial: Option<Partial>,
}

impl Default for Reassembler {
    fn default() -> Self {
        Self::new(MESSAGE_BODY_BYTES_MAX)
    }
}

impl Reassembler {
    /// A reassembler refusing bodies over `body_bytes_max` bytes (at most
    /// [`MESSAGE_BODY_BYTES_MAX`]).
    pub fn new(body_bytes_max: usize) -> Self {
        Self { body_bytes_max: body_bytes_max.min(MESSAGE_BODY_BYTES_MAX), partial: None }
    }

    /// `(received, max)` of the message in progress, if one is.
    pub fn progress(&self) -> Option<(u32, u32)> {
        self.partial.as_ref().map(|p| (p.received, p.max))
    }

    /// Adds the next packet.
    pub fn push(&mut self, frame: Frame) -> Result<Progress, ReassemblyError> {
        let result = self.push_inner(frame);
        if result.is_err() {
            self.partial = None;
        }
        result
    }

    fn push_inner(&mut self, frame: Frame) -> Result<Progress, ReassemblyError> {
        if frame.seal().is_some() {
            return Err(ReassemblyError::Sealed);
        }
        let number = frame.packet_number();
        let max = frame.packet_max();
        let partial = match self.partial.take() {
            None => {
                if number != 1 {
                    return Err(ReassemblyError::OutOfOrder { expected: 1, got: number });
                }
                Partial {
                    message_type: frame.message_type(),
                    instruction: frame.instruction(),
                    arg_count: frame.arg_count(),
                    max,
                    received: 0,
                    body: Vec::new(),
                }
            }
            Some(partial) => {
                let expected = partial.received + 1;
                if number < expected {
                    return Err(ReassemblyError::Duplicate { number });
                }
                if number > expected {
                    return Err(ReassemblyError::OutOfOrder { expected, got: number });
                }
                if max != partial.max {
                    return Err(ReassemblyError::MaxChanged { first: partial.max, got: max });
                }
                if (frame.message_type(), frame.instruction(), frame.arg_count())
                    != (partial.message_type, partial.instruction, partial.arg_count)
                {
                    return Err(ReassemblyError::HeaderChanged);
                }
                partial
            }
        };
        let mut partial = partial;
        let body_bytes = partial.body.len().saturating_add(frame.data().len());
        if body_bytes > self.body_bytes_max {
            return Err(ReassemblyError::BodyTooLarge { body_bytes, max: self.body_bytes_max });
        }
        // Grown by doubling, but never past the limit: a body that ends exactly at it must not
        // have reserved twice as much on the way.
        if partial.body.capacity() < body_bytes {
            let grown =
                partial.body.capacity().saturating_mul(2).max(body_bytes).min(self.body_bytes_max);
            partial.body.reserve_exact(grown.saturating_sub(partial.body.len()));
        }
        partial.body.extend_from_slice(&frame.into_data());
        partial.received = number;
        if partial.received == partial.max {
            return Ok(Progress::Complete(Message {
                message_type: partial.message_type,
                instruction: partial.instruction,
                arg_count: partial.arg_count,
                body: partial.body,
            }));
        }
        let progress = Progress::Partial { received: partial.received, max: partial.max };
        self.partial = Some(partial);
        Ok(progress)
    }
}
