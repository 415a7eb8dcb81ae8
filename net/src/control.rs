//! Control messages: the master–worker link (spec 4.3.1): handshake, heartbeat and relay.

use std::net::IpAddr;

use engine::{Timestamp, WorkerId};

use crate::args::{ArgReader, ArgWriter};
use crate::error::{DecodeError, EncodeError};
use crate::frame::MessageType;
use crate::instruction::Instruction;
use crate::limits::{
    NONCE_BYTES, SEALED_KEY_BYTES_MAX, SIGNATURE_BYTES_MAX, WORKER_ADDRESS_BYTES_MAX,
};
use crate::message::Message;
use crate::request::Request;
use crate::response::{Response, read_failure, write_failure};
use crate::types::{Failure, SessionId};

/// `workerHello`: the first message of a worker on the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerHello {
    /// The worker's registered UUID (on the wire: its 16 bytes in RFC 4122 order, i.e. the
    /// `u128` big-endian).
    pub worker: WorkerId,
    /// The protocol version the worker speaks.
    pub version: u16,
    /// Where clients reach the worker, `host:port`, 1 to 255 bytes of UTF-8 (given to clients
    /// by `getWorkers`; signed in the handshake, see `docs/WORKER_AUTH.md`).
    pub address: String,
    /// 32 random bytes from the worker, fresh per connection attempt: its challenge to the
    /// master, answered by the `master_proof` of [`Control::Challenge`].
    pub nonce: [u8; NONCE_BYTES],
}

/// `relay`: a client's request, forwarded by a worker with what the master needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    /// The worker's id for this relay, echoed by the `relayReply`; unique per link.
    pub relay_id: u64,
    /// The client's IP address.
    pub client_ip: IpAddr,
    /// When the worker received the request (the worker's clock); orders are queued by it.
    pub received_at: Timestamp,
    /// The session the client's connection is logged in with, if any.
    pub session: Option<SessionId>,
    /// The client's request.
    pub request: Request,
}

/// A message on the master–worker link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Worker to master: who I am.
    WorkerHello(WorkerHello),
    /// Master to worker: sign this nonce; here is the link key, sealed to you; and here is my
    /// proof that I am the master, covering both.
    Challenge {
        /// 32 random bytes from the master, fresh per connection attempt.
        nonce: [u8; NONCE_BYTES],
        /// The master's detached OpenPGP signature of the master authentication message of
        /// `docs/WORKER_AUTH.md` (which binds the worker's UUID, both nonces, the Hello's fields
        /// and the BLAKE3 hash of `sealed_key`); opaque to this crate, 1 to
        /// [`SIGNATURE_BYTES_MAX`] bytes.
        master_proof: Vec<u8>,
        /// The 32-byte link key, encrypted to the worker's OpenPGP key; opaque to this crate,
        /// 1 to [`SEALED_KEY_BYTES_MAX`] bytes. The worker uses it only after `linkAccepted`.
        sealed_key: Vec<u8>,
    },
    /// Worker to master: a detached OpenPGP signature of the authentication message of
    /// `docs/WORKER_AUTH.md` (which binds the UUID, the nonce and the Hello's fields).
    HelloProof {
        /// The signature, opaque to this crate.
        signature: Vec<u8>,
    },
    /// Master to worker: accepted; from the next frame on, the link is sealed with the key the
    /// `challenge` carried. No arguments: the key is not sent twice, so it cannot be swapped here.
    LinkAccepted,
    /// Master to worker: refused; the master closes the link.
    LinkRefused(Failure),
    /// Worker to master: still alive.
    Heartbeat {
        /// The worker's heartbeat counter.
        seq: u64,
    },
    /// Master to worker: heartbeat received.
    HeartbeatAck {
        /// The heartbeat's counter.
        seq: u64,
    },
    /// Worker to master: a client's request.
    Relay(Box<Relay>),
    /// Master to worker: the answer to a relay.
    RelayReply {
        /// The relay's id.
        relay_id: u64,
        /// The answer, which the worker sends to the client.
        response: Response,
    },
}

impl Control {
    /// The instruction.
    pub fn instruction(&self) -> Instruction {
        use Instruction as I;
        match self {
            Self::WorkerHello(_) => I::WorkerHello,
            Self::Challenge { .. } => I::Challenge,
            Self::HelloProof { .. } => I::HelloProof,
            Self::LinkAccepted => I::LinkAccepted,
            Self::LinkRefused(_) => I::LinkRefused,
            Self::Heartbeat { .. } => I::Heartbeat,
            Self::HeartbeatAck { .. } => I::HeartbeatAck,
            Self::Relay(_) => I::Relay,
            Self::RelayReply { .. } => I::RelayReply,
        }
    }

    /// Encodes the control message.
    pub fn encode(&self) -> Result<Message, EncodeError> {
        let mut w = ArgWriter::new();
        match self {
            Self::WorkerHello(hello) => {
                w.id16(&hello.worker.0.to_be_bytes());
                w.u16(hello.version);
                write_address(&mut w, &hello.address);
                w.id32(&hello.nonce);
            }
            Self::Challenge { nonce, master_proof, sealed_key } => {
                w.id32(nonce);
                w.bytes("masterProof", master_proof, 1, SIGNATURE_BYTES_MAX);
                w.bytes("sealedKey", sealed_key, 1, SEALED_KEY_BYTES_MAX);
            }
            Self::HelloProof { signature } => {
                w.bytes("signature", signature, 1, SIGNATURE_BYTES_MAX);
            }
            Self::LinkAccepted => {}
            Self::LinkRefused(failure) => write_failure(&mut w, failure),
            Self::Heartbeat { seq } | Self::HeartbeatAck { seq } => w.u64(*seq),
            Self::Relay(relay) => {
                w.u64(relay.relay_id);
                w.ip(relay.client_ip);
                w.i64(relay.received_at.micros());
                match &relay.session {
                    Some(session) => w.id32(&session.0),
                    None => w.none(),
                }
                let mut inner = ArgWriter::new();
                relay.request.write(&mut inner);
                let instruction = relay.request.instruction();
                w.nest(instruction.message_type(), instruction.code(), inner);
            }
            Self::RelayReply { relay_id, response } => {
                w.u64(*relay_id);
                let mut inner = ArgWriter::new();
                response.write(&mut inner);
                let instruction = response.instruction();
                w.nest(instruction.message_type(), instruction.code(), inner);
            }
        }
        let instruction = self.instruction();
        w.finish(instruction.message_type(), instruction.code())
    }

    /// The `relayId` of a `relay` or `relayReply` message, read without decoding the request or
    /// answer it carries: for a receiver that cannot decode that (a peer of another version) to
    /// fail the one relay instead of the whole link. `None` for any other message.
    pub fn relay_id(message: &Message) -> Option<u64> {
        let carries_relay_id = message.message_type == MessageType::Control
            && [Instruction::Relay.code(), Instruction::RelayReply.code()]
                .contains(&message.instruction);
        carries_relay_id.then(|| ArgReader::new(&message.body).u64("relayId").ok()).flatten()
    }

    /// Decodes a control message (a whole, reassembled message).
    pub fn decode(message: &Message) -> Result<Self, DecodeError> {
        use Instruction as I;
        let is_control = |i: Instruction| i.message_type() == MessageType::Control;
        let instruction = Instruction::check_header(
            message.message_type,
            message.instruction,
            message.arg_count,
            is_control,
            "control message",
        )?;
        let mut r = ArgReader::new(&message.body);
        let r = &mut r;
        let control = match instruction {
            I::WorkerHello => Self::WorkerHello(WorkerHello {
                worker: WorkerId(u128::from_be_bytes(r.id16("workerId")?)),
                version: r.u16("version")?,
                address: read_address(r)?,
                nonce: r.id32("nonce")?,
            }),
            I::Challenge => Self::Challenge {
                nonce: r.id32("nonce")?,
                master_proof: r.bytes("masterProof", 1, SIGNATURE_BYTES_MAX)?.to_vec(),
                sealed_key: r.bytes("sealedKey", 1, SEALED_KEY_BYTES_MAX)?.to_vec(),
            },
            I::HelloProof => Self::HelloProof {
                signature: r.bytes("signature", 1, SIGNATURE_BYTES_MAX)?.to_vec(),
            },
            I::LinkAccepted => Self::LinkAccepted,
            I::LinkRefused => Self::LinkRefused(read_failure(r)?),
            I::Heartbeat => Self::Heartbeat { seq: r.u64("seq")? },
            I::HeartbeatAck => Self::HeartbeatAck { seq: r.u64("seq")? },
            I::Relay => {
                let relay_id = r.u64("relayId")?;
                let client_ip = r.ip("clientIp")?;
                let received_at = Timestamp(r.i64("receivedAt")?);
                let session = r.opt_id32("sessionID")?.map(SessionId);
                let (message_type, code, arg_count) = r.message("request")?;
                let request = Request::read(message_type, code, arg_count, r)?;
                Self::Relay(Box::new(Relay { relay_id, client_ip, received_at, session, request }))
            }
            I::RelayReply => {
                let relay_id = r.u64("relayId")?;
                let (message_type, code, arg_count) = r.message("response")?;
                let response = Response::read(message_type, code, arg_count, r)?;
                Self::RelayReply { relay_id, response }
            }
            other => {
                return Err(DecodeError::UnexpectedInstruction {
                    instruction: other,
                    expected: "control message",
                });
            }
        };
        r.finish()?;
        Ok(control)
    }
}

/// Writes a worker address: text, 1 to [`WORKER_ADDRESS_BYTES_MAX`] bytes.
pub(crate) fn write_address(w: &mut ArgWriter, address: &str) {
    if address.is_empty() {
        w.fail(EncodeError::FieldTooShort { what: "address", len: 0, min: 1 });
    }
    w.text("address", address, WORKER_ADDRESS_BYTES_MAX);
}

/// Reads a worker address: text, 1 to [`WORKER_ADDRESS_BYTES_MAX`] bytes.
pub(crate) fn read_address(r: &mut ArgReader<'_>) -> Result<String, DecodeError> {
    let field = r.next_field();
    let address = r.text("address", WORKER_ADDRESS_BYTES_MAX)?;
    if address.is_empty() {
        return Err(DecodeError::TooShort { field, what: "address", len: 0, min: 1 });
    }
    Ok(address.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::types::{Failure, Reason};

    #[test]
    fn a_relays_id_is_read_even_when_what_it_carries_is_not() {
        let failure = Failure::new(Reason::Internal, "x");
        let reply = Control::RelayReply { relay_id: 77, response: Response::Error(failure) };
        let mut message = reply.encode().unwrap();
        assert_eq!(Control::relay_id(&message), Some(77));
        // The answer cut short: it no longer decodes, its relay id still reads.
        message.body.pop();
        assert!(Control::decode(&message).is_err());
        assert_eq!(Control::relay_id(&message), Some(77));
        // A relay's too.
        let relay = Control::Relay(Box::new(Relay {
            relay_id: 78,
            client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
            received_at: Timestamp(0),
            session: None,
            request: Request::GetWorkers,
        }));
        assert_eq!(Control::relay_id(&relay.encode().unwrap()), Some(78));
        // Not a relay or a reply, or too short for an id: none.
        let heartbeat = Control::HeartbeatAck { seq: 77 }.encode().unwrap();
        assert_eq!(Control::relay_id(&heartbeat), None);
        message.body.truncate(3);
        assert_eq!(Control::relay_id(&message), None);
    }
}
