//! A table of malformed inputs: each gives its own specific error, and none panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{StreamError, messages};
use engine::NameError;
use net::limits::{FRAME_DATA_BYTES_MAX, MESSAGE_BODY_BYTES_MAX, PACKETS_PER_MESSAGE_MAX};
use net::{
    DecodeError, Frame, FrameError, Instruction, Message, MessageType, ReassemblyError, Request,
    Response, Tag,
};

// ---- raw byte builders, written from docs/PROTOCOL.md rather than from the encoder ----

struct Header {
    version: u8,
    message_type: u8,
    instruction: u16,
    arg_count: u16,
    flags: u16,
    number: u32,
    max: u32,
}

fn header(instruction: Instruction, arg_count: u16) -> Header {
    Header {
        version: 1,
        message_type: instruction.message_type().code(),
        instruction: instruction.code(),
        arg_count,
        flags: 0,
        number: 1,
        max: 1,
    }
}

fn frame_with_size(h: &Header, declared_size: u32, data: &[u8]) -> Vec<u8> {
    let mut out = vec![h.version, h.message_type];
    out.extend_from_slice(&h.instruction.to_be_bytes());
    out.extend_from_slice(&h.arg_count.to_be_bytes());
    out.extend_from_slice(&h.flags.to_be_bytes());
    out.extend_from_slice(&h.number.to_be_bytes());
    out.extend_from_slice(&h.max.to_be_bytes());
    out.extend_from_slice(&declared_size.to_be_bytes());
    out.extend_from_slice(data);
    out
}

fn frame(h: &Header, data: &[u8]) -> Vec<u8> {
    frame_with_size(h, u32::try_from(data.len()).unwrap(), data)
}

fn text(s: &[u8]) -> Vec<u8> {
    let mut out = vec![Tag::Text.code()];
    out.extend_from_slice(&u32::try_from(s.len()).unwrap().to_be_bytes());
    out.extend_from_slice(s);
    out
}

fn bytes(b: &[u8]) -> Vec<u8> {
    let mut out = vec![Tag::Bytes.code()];
    out.extend_from_slice(&u32::try_from(b.len()).unwrap().to_be_bytes());
    out.extend_from_slice(b);
    out
}

fn id32() -> Vec<u8> {
    let mut out = vec![Tag::Id32.code()];
    out.extend_from_slice(&[0xAB; 32]);
    out
}

fn u64_field(v: u64) -> Vec<u8> {
    let mut out = vec![Tag::U64.code()];
    out.extend_from_slice(&v.to_be_bytes());
    out
}

fn u16_field(v: u16) -> Vec<u8> {
    let mut out = vec![Tag::U16.code()];
    out.extend_from_slice(&v.to_be_bytes());
    out
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

fn purchase_body(symbol: &[u8]) -> Vec<u8> {
    cat(&[id32(), text(symbol), u64_field(5), u64_field(9)])
}

fn login_body(username: &[u8]) -> Vec<u8> {
    cat(&[text(username), bytes(&[7; 32]), vec![Tag::Bool.code(), 1]])
}

/// What the whole pipeline (frames, reassembly, typed request decoding) says about `bytes`.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Frame(FrameError),
    Reassembly(ReassemblyError),
    Decode(DecodeError),
    Ok,
}

fn decode_requests(bytes: &[u8]) -> Outcome {
    match messages(bytes) {
        Err(StreamError::Frame(e)) => Outcome::Frame(e),
        Err(StreamError::Reassembly(e)) => Outcome::Reassembly(e),
        Ok(list) => {
            for message in &list {
                if let Err(e) = Request::decode(message) {
                    return Outcome::Decode(e);
                }
            }
            Outcome::Ok
        }
    }
}

#[test]
fn malformed_requests_give_their_specific_error() {
    let purchase = Instruction::PurchaseAsset;
    let login = Instruction::Login;
    let with = |f: fn(&mut Header)| {
        let mut h = header(purchase, 4);
        f(&mut h);
        h
    };
    let cases: Vec<(&str, Vec<u8>, Outcome)> = vec![
        (
            "well-formed purchase (control case)",
            frame(&header(purchase, 4), &purchase_body(b"AAPL")),
            Outcome::Ok,
        ),
        (
            "length over the maximum, refused from the header alone",
            frame_with_size(&header(purchase, 4), 65_537, &[]),
            Outcome::Frame(FrameError::DataTooLarge {
                data_bytes: 65_537,
                max: FRAME_DATA_BYTES_MAX,
            }),
        ),
        (
            "data size u32::MAX",
            frame_with_size(&header(purchase, 4), u32::MAX, &[]),
            Outcome::Frame(FrameError::DataTooLarge {
                data_bytes: u32::MAX,
                max: FRAME_DATA_BYTES_MAX,
            }),
        ),
        (
            "unknown protocol version",
            frame(&with(|h| h.version = 2), &purchase_body(b"AAPL")),
            Outcome::Frame(FrameError::UnsupportedVersion { version: 2 }),
        ),
        (
            "unknown message type",
            frame(&with(|h| h.message_type = 9), &purchase_body(b"AAPL")),
            Outcome::Frame(FrameError::UnknownMessageType { code: 9 }),
        ),
        (
            "message type 0",
            frame(&with(|h| h.message_type = 0), &purchase_body(b"AAPL")),
            Outcome::Frame(FrameError::UnknownMessageType { code: 0 }),
        ),
        (
            "reserved flag bit set",
            frame(&with(|h| h.flags = 0x0100), &purchase_body(b"AAPL")),
            Outcome::Frame(FrameError::UnknownFlags { flags: 0x0100 }),
        ),
        (
            "argument count over the limit",
            frame(&with(|h| h.arg_count = 65), &purchase_body(b"AAPL")),
            Outcome::Frame(FrameError::TooManyArgs { count: 65, max: 64 }),
        ),
        (
            "packet number 0",
            frame(&with(|h| h.number = 0), &purchase_body(b"AAPL")),
            Outcome::Frame(FrameError::PacketNumberZero),
        ),
        (
            "packet number above max",
            frame(&with(|h| h.number = 2), &purchase_body(b"AAPL")),
            Outcome::Frame(FrameError::PacketNumberOverMax { number: 2, max: 1 }),
        ),
        (
            "packet max 0",
            frame(&with(|h| h.max = 0), &purchase_body(b"AAPL")),
            Outcome::Frame(FrameError::PacketMaxOutOfRange {
                max: 0,
                limit: PACKETS_PER_MESSAGE_MAX,
            }),
        ),
        (
            "packet max over the limit",
            frame(&with(|h| h.max = PACKETS_PER_MESSAGE_MAX + 1), &purchase_body(b"AAPL")),
            Outcome::Frame(FrameError::PacketMaxOutOfRange {
                max: PACKETS_PER_MESSAGE_MAX + 1,
                limit: PACKETS_PER_MESSAGE_MAX,
            }),
        ),
        (
            "unknown instruction",
            frame(&with(|h| h.instruction = 0x01FF), &purchase_body(b"AAPL")),
            Outcome::Decode(DecodeError::UnknownInstruction { code: 0x01FF }),
        ),
        (
            "instruction under another message type",
            frame(&with(|h| h.message_type = 2), &purchase_body(b"AAPL")),
            Outcome::Decode(DecodeError::TypeMismatch {
                instruction: purchase,
                expected: MessageType::Command,
                got: MessageType::DataTransfer,
            }),
        ),
        (
            "a server return sent as a request",
            frame(&header(Instruction::RegisterSuccess, 0), &[]),
            Outcome::Decode(DecodeError::UnexpectedInstruction {
                instruction: Instruction::RegisterSuccess,
                expected: "request",
            }),
        ),
        (
            "wrong argument count",
            frame(&with(|h| h.arg_count = 2), &purchase_body(b"AAPL")),
            Outcome::Decode(DecodeError::WrongArgCount {
                instruction: purchase,
                expected: 4,
                got: 2,
            }),
        ),
        (
            "truncated argument (quantity cut short)",
            frame(&header(purchase, 4), &purchase_body(b"AAPL")[..50]),
            Outcome::Decode(DecodeError::Truncated { field: 2 }),
        ),
        (
            "missing argument",
            frame(&header(purchase, 4), &cat(&[id32(), text(b"AAPL")])),
            Outcome::Decode(DecodeError::Truncated { field: 2 }),
        ),
        (
            "text length past the end of the body",
            frame(&header(purchase, 4), &cat(&[id32(), vec![0x05, 0, 0, 0, 9], b"AAPL".to_vec()])),
            Outcome::Decode(DecodeError::Truncated { field: 1 }),
        ),
        (
            "bad UTF-8",
            frame(&header(purchase, 4), &purchase_body(&[0x41, 0xFF, 0x41])),
            Outcome::Decode(DecodeError::BadUtf8 { field: 1, what: "symbol" }),
        ),
        (
            "username of 25 characters",
            frame(&header(login, 3), &login_body(&[b'a'; 25])),
            Outcome::Decode(DecodeError::BadName {
                field: 0,
                source: NameError::TooLong { what: "username", len: 25, max: 24 },
            }),
        ),
        (
            "username of 97 bytes, refused before validation",
            frame(&header(login, 3), &login_body(&[b'a'; 97])),
            Outcome::Decode(DecodeError::TooLong { field: 0, what: "username", len: 97, max: 96 }),
        ),
        (
            "username with a wildcard",
            frame(&header(login, 3), &login_body(b"ali%")),
            Outcome::Decode(DecodeError::BadName {
                field: 0,
                source: NameError::BadChar { what: "username", ch: '%', position: 3 },
            }),
        ),
        (
            "email of 322 characters",
            frame(
                &header(Instruction::Register, 3),
                &cat(&[
                    text(b"alice"),
                    text(format!("a@{}.com", "b".repeat(316)).as_bytes()),
                    bytes(&[7; 32]),
                ]),
            ),
            Outcome::Decode(DecodeError::BadName {
                field: 1,
                source: NameError::TooLong { what: "email", len: 322, max: 321 },
            }),
        ),
        (
            "lower-case symbol",
            frame(&header(purchase, 4), &purchase_body(b"aapl")),
            Outcome::Decode(DecodeError::BadName {
                field: 1,
                source: NameError::BadChar { what: "symbol", ch: 'a', position: 0 },
            }),
        ),
        (
            "hashedPass of 15 bytes",
            frame(
                &header(login, 3),
                &cat(&[text(b"alice"), bytes(&[7; 15]), vec![Tag::Bool.code(), 1]]),
            ),
            Outcome::Decode(DecodeError::TooShort {
                field: 1,
                what: "hashedPass",
                len: 15,
                min: 16,
            }),
        ),
        (
            "hashedPass of 129 bytes",
            frame(
                &header(login, 3),
                &cat(&[text(b"alice"), bytes(&[7; 129]), vec![Tag::Bool.code(), 1]]),
            ),
            Outcome::Decode(DecodeError::TooLong {
                field: 1,
                what: "hashedPass",
                len: 129,
                max: 128,
            }),
        ),
        (
            "bool that is neither 0 nor 1",
            frame(&header(login, 3), &cat(&[text(b"alice"), bytes(&[7; 32]), vec![0x01, 2]])),
            Outcome::Decode(DecodeError::BadBool { field: 2, byte: 2 }),
        ),
        (
            "unknown type tag",
            frame(&header(purchase, 4), &cat(&[vec![0x7F], purchase_body(b"A")])),
            Outcome::Decode(DecodeError::UnknownTag { field: 0, tag: 0x7F }),
        ),
        (
            "wrong type (a u64 where the session id goes)",
            frame(&header(purchase, 4), &cat(&[u64_field(1), text(b"AAPL"), u64_field(5)])),
            Outcome::Decode(DecodeError::WrongType {
                field: 0,
                what: "sessionID",
                expected: Tag::Id32,
                got: Tag::U64,
            }),
        ),
        (
            "unknown state in switchState",
            frame(&header(Instruction::SwitchState, 2), &cat(&[id32(), u16_field(3)])),
            Outcome::Decode(DecodeError::UnknownCode { field: 1, what: "state", code: 3 }),
        ),
        (
            "bytes after the last argument",
            frame(&header(purchase, 4), &cat(&[purchase_body(b"AAPL"), vec![0]])),
            Outcome::Decode(DecodeError::TrailingBytes { extra_bytes: 1 }),
        ),
        (
            "packets out of order (1 then 3)",
            cat(&[
                frame(&with(|h| h.max = 3), &purchase_body(b"AAPL")[..10]),
                frame(&with(|h| (h.number, h.max) = (3, 3)), &purchase_body(b"AAPL")[10..]),
            ]),
            Outcome::Reassembly(ReassemblyError::OutOfOrder { expected: 2, got: 3 }),
        ),
        (
            "first packet is not number 1",
            frame(&with(|h| (h.number, h.max) = (2, 2)), &purchase_body(b"AAPL")),
            Outcome::Reassembly(ReassemblyError::OutOfOrder { expected: 1, got: 2 }),
        ),
        (
            "packet duplicated",
            cat(&[
                frame(&with(|h| h.max = 2), &purchase_body(b"AAPL")[..10]),
                frame(&with(|h| h.max = 2), &purchase_body(b"AAPL")[..10]),
            ]),
            Outcome::Reassembly(ReassemblyError::Duplicate { number: 1 }),
        ),
        (
            "packet max changes mid-message",
            cat(&[
                frame(&with(|h| h.max = 2), &purchase_body(b"AAPL")[..10]),
                frame(&with(|h| (h.number, h.max) = (2, 3)), &purchase_body(b"AAPL")[10..]),
            ]),
            Outcome::Reassembly(ReassemblyError::MaxChanged { first: 2, got: 3 }),
        ),
        (
            "instruction changes mid-message",
            cat(&[
                frame(&with(|h| h.max = 2), &purchase_body(b"AAPL")[..10]),
                frame(
                    &with(|h| (h.number, h.max, h.instruction) = (2, 2, 0x0105)),
                    &purchase_body(b"AAPL")[10..],
                ),
            ]),
            Outcome::Reassembly(ReassemblyError::HeaderChanged),
        ),
        (
            "sealed frame on an unsealed connection",
            cat(&[frame(&with(|h| h.flags = 1), &purchase_body(b"AAPL")), vec![0; 40]]),
            Outcome::Reassembly(ReassemblyError::Sealed),
        ),
    ];
    for (name, input, expected) in cases {
        assert_eq!(decode_requests(&input), expected, "case: {name}");
    }
}

#[test]
fn short_and_truncated_frames() {
    let full = frame(&header(Instruction::PurchaseAsset, 3), &purchase_body(b"AAPL"));
    // Phase one: a prefix is incomplete, and says how much more is needed.
    assert_eq!(Frame::check(&full[..7]), Err(FrameError::Incomplete { needed_bytes: 13 }));
    assert_eq!(
        Frame::check(&full[..25]),
        Err(FrameError::Incomplete { needed_bytes: full.len() - 25 })
    );
    assert_eq!(Frame::check(&full), Ok(full.len()));
    // Phase two on an exact buffer: each shortfall has its own error.
    assert_eq!(Frame::parse(&full[..7]), Err(FrameError::ShortHeader { got_bytes: 7 }));
    assert_eq!(Frame::parse(&[]), Err(FrameError::ShortHeader { got_bytes: 0 }));
    assert_eq!(
        Frame::parse(&full[..full.len() - 3]),
        Err(FrameError::TruncatedData { missing_bytes: 3 })
    );
    let mut long = full.clone();
    long.push(0);
    assert_eq!(Frame::parse(&long), Err(FrameError::TrailingBytes { extra_bytes: 1 }));
}

#[test]
fn total_over_the_limit_is_refused_while_reassembling() {
    // 257 full packets of 64 KiB: one byte of the 257th is over the 16 MiB limit.
    let packets = u32::try_from(MESSAGE_BODY_BYTES_MAX / FRAME_DATA_BYTES_MAX + 1).unwrap();
    let chunk = vec![0u8; FRAME_DATA_BYTES_MAX];
    let mut reassembler = net::Reassembler::default();
    for number in 1..=packets {
        let mut h = header(Instruction::Data, 2);
        (h.number, h.max) = (number, packets);
        let result = reassembler.push(Frame::parse(&frame(&h, &chunk)).unwrap());
        if number < packets {
            assert_eq!(result, Ok(net::Progress::Partial { received: number, max: packets }));
        } else {
            assert_eq!(
                result,
                Err(ReassemblyError::BodyTooLarge {
                    body_bytes: MESSAGE_BODY_BYTES_MAX + FRAME_DATA_BYTES_MAX,
                    max: MESSAGE_BODY_BYTES_MAX,
                })
            );
        }
    }
    // A body that ends exactly at the limit is taken, and its buffer never grew past it (by
    // doubling, 300 + 300 + 300 + 100 bytes would have reserved 1,200).
    let mut exact = net::Reassembler::new(1000);
    for (number, bytes) in [(1, 300), (2, 300), (3, 300), (4, 100)] {
        let mut h = header(Instruction::Data, 2);
        (h.number, h.max) = (number, 4);
        match exact.push(Frame::parse(&frame(&h, &vec![0; bytes])).unwrap()).unwrap() {
            net::Progress::Partial { .. } => assert!(number < 4),
            net::Progress::Complete(message) => {
                assert_eq!(message.body.len(), 1000);
                assert!(message.body.capacity() <= 1000, "{}", message.body.capacity());
            }
        }
    }
    // A smaller configured limit applies too.
    let mut small = net::Reassembler::new(100);
    let mut h = header(Instruction::Data, 2);
    h.max = 2;
    assert!(matches!(
        small.push(Frame::parse(&frame(&h, &[0; 101])).unwrap()),
        Err(ReassemblyError::BodyTooLarge { body_bytes: 101, max: 100 })
    ));
}

#[test]
fn malformed_lists_and_nested_messages() {
    let data = |arg_count, body: Vec<u8>| Message {
        message_type: MessageType::ServerReturn,
        instruction: Instruction::Data.code(),
        arg_count,
        body,
    };
    let list = |items: u32, fields: u16| {
        let mut out = vec![Tag::List.code()];
        out.extend_from_slice(&items.to_be_bytes());
        out.extend_from_slice(&fields.to_be_bytes());
        out
    };
    // A worker list claiming 4 billion items in a few bytes: refused, nothing allocated.
    assert_eq!(
        Response::decode(&data(2, cat(&[u16_field(6), list(u32::MAX, 3)]))),
        Err(DecodeError::Truncated { field: 1 })
    );
    assert_eq!(
        Response::decode(&data(2, cat(&[u16_field(6), list(0, 4)]))),
        Err(DecodeError::WrongListShape { field: 1, expected: 3, got: 4 })
    );
    assert_eq!(
        Response::decode(&data(2, cat(&[u16_field(99)]))),
        Err(DecodeError::UnknownCode { field: 0, what: "payload kind", code: 99 })
    );
    assert_eq!(
        Response::decode(&data(3, cat(&[u16_field(6), list(0, 3)]))),
        Err(DecodeError::WrongArgCount { instruction: Instruction::Data, expected: 2, got: 3 })
    );
    let empty_address = cat(&[
        u16_field(6),
        list(1, 3),
        vec![Tag::Id16.code()],
        vec![0; 16],
        text(b"w"),
        text(b""),
    ]);
    assert_eq!(
        Response::decode(&data(2, empty_address)),
        Err(DecodeError::TooShort { field: 4, what: "address", len: 0, min: 1 })
    );
    let relay = |body: Vec<u8>| Message {
        message_type: MessageType::Control,
        instruction: Instruction::Relay.code(),
        arg_count: 5,
        body,
    };
    assert_eq!(
        net::Control::decode(&relay(cat(&[u64_field(1), vec![Tag::Ip.code(), 5, 1, 2, 3, 4]]))),
        Err(DecodeError::BadIpFamily { field: 1, family: 5 })
    );
    // A relay whose nested request is a response: refused as not a request.
    let mut body = cat(&[u64_field(1), vec![Tag::Ip.code(), 4, 127, 0, 0, 1]]);
    body.extend_from_slice(&[Tag::I64.code(), 0, 0, 0, 0, 0, 0, 0, 0, Tag::None.code()]);
    body.extend_from_slice(&[Tag::Message.code(), 3, 0x03, 0x03, 0, 0]);
    assert_eq!(
        net::Control::decode(&relay(body)),
        Err(DecodeError::UnexpectedInstruction {
            instruction: Instruction::RegisterSuccess,
            expected: "request",
        })
    );
}

#[test]
fn undecodable_requests_get_the_matching_fail_return() {
    let message = |instruction: u16, message_type| Message {
        message_type,
        instruction,
        arg_count: 0,
        body: vec![],
    };
    let answer = |m: &Message| {
        let error = Request::decode(m).unwrap_err();
        let response = Response::for_decode_error(m, &error);
        (response.instruction(), response.failure().unwrap().reason)
    };
    use net::Reason;
    assert_eq!(
        answer(&message(0x0104, MessageType::Command)),
        (Instruction::PurchaseFail, Reason::Malformed)
    );
    assert_eq!(
        answer(&message(0x0203, MessageType::DataTransfer)),
        (Instruction::DataFail, Reason::Malformed)
    );
    assert_eq!(
        answer(&message(0x0101, MessageType::Command)),
        (Instruction::LoginFail, Reason::Malformed)
    );
    assert_eq!(
        answer(&message(0x01FF, MessageType::Command)),
        (Instruction::Error, Reason::UnknownInstruction)
    );
    assert_eq!(
        answer(&message(0x0406, MessageType::Control)),
        (Instruction::Error, Reason::UnknownInstruction)
    );
}

#[test]
fn malformed_handshake_messages_give_their_specific_error() {
    let control = |instruction: Instruction, arg_count, body: Vec<u8>| Message {
        message_type: MessageType::Control,
        instruction: instruction.code(),
        arg_count,
        body,
    };
    let id16 = || {
        let mut out = vec![Tag::Id16.code()];
        out.extend_from_slice(&[0x07; 16]);
        out
    };
    let hello_v1 = cat(&[id16(), u16_field(1), text(b"w1.example:2049")]);
    let hello = cat(&[hello_v1.clone(), id32()]);
    assert!(net::Control::decode(&control(Instruction::WorkerHello, 4, hello.clone())).is_ok());
    // A Hello without the worker's nonce (the one-way handshake's shape) is refused, whether it
    // declares the old argument count or the new one.
    assert_eq!(
        net::Control::decode(&control(Instruction::WorkerHello, 3, hello_v1.clone())),
        Err(DecodeError::WrongArgCount {
            instruction: Instruction::WorkerHello,
            expected: 4,
            got: 3
        })
    );
    assert_eq!(
        net::Control::decode(&control(Instruction::WorkerHello, 4, hello_v1.clone())),
        Err(DecodeError::Truncated { field: 3 })
    );
    // A nonce cut short, or sent as bytes.
    assert_eq!(
        net::Control::decode(&control(
            Instruction::WorkerHello,
            4,
            hello[..hello.len() - 1].into()
        )),
        Err(DecodeError::Truncated { field: 3 })
    );
    assert_eq!(
        net::Control::decode(&control(
            Instruction::WorkerHello,
            4,
            cat(&[hello_v1, bytes(&[1; 32])])
        )),
        Err(DecodeError::WrongType {
            field: 3,
            what: "nonce",
            expected: Tag::Id32,
            got: Tag::Bytes,
        })
    );

    let challenge = |proof: Vec<u8>, sealed: Vec<u8>| {
        control(Instruction::Challenge, 3, cat(&[id32(), proof, sealed]))
    };
    let proof = || bytes(&[0xC2; 120]);
    let sealed = || bytes(&[0xC1; 200]);
    assert!(net::Control::decode(&challenge(proof(), sealed())).is_ok());
    // A Challenge without the master's proof (the one-way handshake's shape), and one without
    // the sealed key (the shape before the master's proof covered the link key).
    assert_eq!(
        net::Control::decode(&control(Instruction::Challenge, 1, id32())),
        Err(DecodeError::WrongArgCount {
            instruction: Instruction::Challenge,
            expected: 3,
            got: 1
        })
    );
    assert_eq!(
        net::Control::decode(&control(Instruction::Challenge, 2, cat(&[id32(), proof()]))),
        Err(DecodeError::WrongArgCount {
            instruction: Instruction::Challenge,
            expected: 3,
            got: 2
        })
    );
    assert_eq!(
        net::Control::decode(&control(Instruction::Challenge, 3, id32())),
        Err(DecodeError::Truncated { field: 1 })
    );
    assert_eq!(
        net::Control::decode(&control(Instruction::Challenge, 3, cat(&[id32(), proof()]))),
        Err(DecodeError::Truncated { field: 2 })
    );
    assert_eq!(
        net::Control::decode(&challenge(bytes(&[]), sealed())),
        Err(DecodeError::TooShort { field: 1, what: "masterProof", len: 0, min: 1 })
    );
    assert_eq!(
        net::Control::decode(&challenge(proof(), bytes(&[]))),
        Err(DecodeError::TooShort { field: 2, what: "sealedKey", len: 0, min: 1 })
    );
    // Over the limit: refused from the declared length, before the bytes are read.
    let mut long = vec![Tag::Bytes.code()];
    long.extend_from_slice(&4097_u32.to_be_bytes());
    assert_eq!(
        net::Control::decode(&challenge(long.clone(), sealed())),
        Err(DecodeError::TooLong { field: 1, what: "masterProof", len: 4097, max: 4096 })
    );
    assert_eq!(
        net::Control::decode(&challenge(proof(), long)),
        Err(DecodeError::TooLong { field: 2, what: "sealedKey", len: 4097, max: 4096 })
    );
    // A sealed key followed by trailing bytes.
    let trailing = cat(&[bytes(&[0xC1; 8]), vec![0]]);
    assert!(net::Control::decode(&challenge(proof(), trailing)).is_err());
    // linkAccepted carries nothing: the key came in the challenge, under the master's proof.
    assert_eq!(
        net::Control::decode(&control(Instruction::LinkAccepted, 0, vec![])),
        Ok(net::Control::LinkAccepted)
    );
    assert_eq!(
        net::Control::decode(&control(Instruction::LinkAccepted, 1, sealed())),
        Err(DecodeError::WrongArgCount {
            instruction: Instruction::LinkAccepted,
            expected: 0,
            got: 1
        })
    );
}

/// A portfolio's holdings come sorted by symbol, each once, a history oldest interval first, at
/// most `HISTORY_ENTRIES_MAX` entries, and a price series oldest bar first, one bar per period
/// (docs/PROTOCOL.md): a payload that breaks one
/// of those promises is refused on both sides, so a client never shows a list out of order.
#[test]
fn data_lists_keep_their_promised_order_and_size() {
    use engine::{Cash, IntervalId, OrderId, Price, Qty, Side, Symbol, Timestamp};
    use net::limits::HISTORY_ENTRIES_MAX;
    use net::{
        Bar, DataPayload, EncodeError, HistoryEntry, Portfolio, PortfolioHolding, PriceSeries,
    };
    let holding = |symbol: &str| PortfolioHolding {
        symbol: Symbol::new(symbol).unwrap(),
        qty: Qty::from_raw(1),
        cost_basis: Cash::from_raw(1),
        last_price: None,
    };
    let entry = |interval: u64| HistoryEntry {
        order: OrderId(1),
        side: Side::Buy,
        symbol: Symbol::new("AAPL").unwrap(),
        qty: Qty::from_raw(1),
        price: Price::from_raw(1),
        amount: Cash::from_raw(1),
        interval: IntervalId(interval),
        settled_at: Timestamp(0),
        tick_time: Timestamp(0),
    };
    let encode = |payload: DataPayload| Response::Data(payload).encode();
    // The encoder refuses what it would not send.
    let portfolio = |holdings| DataPayload::Portfolio(Portfolio { cash: Cash::ZERO, holdings });
    let history = |entries| DataPayload::TransactionHistory { entries, older: 0 };
    let bar = |time: i64| Bar {
        open: Price::from_raw(1),
        high: Price::from_raw(1),
        low: Price::from_raw(1),
        close: Price::from_raw(1),
        volume: Qty::from_raw(1),
        time: Timestamp(time),
    };
    let series =
        |bars| DataPayload::PriceSeries(PriceSeries { symbol: Symbol::new("AAPL").unwrap(), bars });
    let bars_order = "bars, oldest first, one per period";
    for bars in [vec![bar(0x2222), bar(0x1111)], vec![bar(7), bar(7)]] {
        assert_eq!(encode(series(bars)), Err(EncodeError::OutOfOrder { what: bars_order }));
    }
    let holdings_order = "holdings, sorted by symbol";
    let history_order = "transactions, oldest interval first";
    for holdings in [vec![holding("MSFT"), holding("AAPL")], vec![holding("IBM"), holding("IBM")]] {
        assert_eq!(
            encode(portfolio(holdings)),
            Err(EncodeError::OutOfOrder { what: holdings_order })
        );
    }
    assert_eq!(
        encode(history(vec![entry(0x2222), entry(0x1111)])),
        Err(EncodeError::OutOfOrder { what: history_order })
    );
    assert_eq!(
        encode(history(vec![entry(1); HISTORY_ENTRIES_MAX + 1])),
        Err(EncodeError::TooManyItems {
            what: "transactions",
            items: HISTORY_ENTRIES_MAX + 1,
            max: HISTORY_ENTRIES_MAX
        })
    );
    // Equal intervals (one interval's fills) are in order.
    assert!(encode(history(vec![entry(1), entry(1), entry(2)])).is_ok());

    // The decoder refuses the same, sent by a peer that does not keep them: the bytes of a
    // sorted list with two items' distinctive fields swapped.
    let swapped = |payload: DataPayload, a: &[u8], b: &[u8]| {
        let mut message = encode(payload).unwrap();
        let body = &mut message.body;
        let at = |needle: &[u8], body: &[u8]| {
            body.windows(needle.len()).position(|w| w == needle).unwrap()
        };
        let (i, j) = (at(a, body), at(b, body));
        body[i..i + a.len()].copy_from_slice(b);
        body[j..j + b.len()].copy_from_slice(a);
        Response::decode(&message)
    };
    assert_eq!(
        swapped(portfolio(vec![holding("AAPL"), holding("MSFT")]), b"AAPL", b"MSFT"),
        Err(DecodeError::OutOfOrder { field: 2, what: holdings_order })
    );
    let sorted = portfolio(vec![holding("AAPL"), holding("MSFT")]);
    assert_eq!(
        Response::decode(&encode(sorted.clone()).unwrap()),
        Ok(Response::Data(sorted)),
        "the same list, sorted, decodes"
    );
    // A symbol twice: the second of two sorted symbols overwritten with the first.
    let mut twice = encode(portfolio(vec![holding("AAPL"), holding("ABCD")])).unwrap();
    let at = twice.body.windows(4).position(|w| w == b"ABCD").unwrap();
    twice.body[at..at + 4].copy_from_slice(b"AAPL");
    assert_eq!(
        Response::decode(&twice),
        Err(DecodeError::OutOfOrder { field: 2, what: holdings_order }),
        "a symbol twice"
    );
    let (one, two) = (0x1111_u64.to_be_bytes(), 0x2222_u64.to_be_bytes());
    assert_eq!(
        swapped(history(vec![entry(0x1111), entry(0x2222)]), &one, &two),
        Err(DecodeError::OutOfOrder { field: 2, what: history_order })
    );
    let (one, two) = (0x1111_i64.to_be_bytes(), 0x2222_i64.to_be_bytes());
    assert_eq!(
        swapped(series(vec![bar(0x1111), bar(0x2222)]), &one, &two),
        Err(DecodeError::OutOfOrder { field: 2, what: bars_order })
    );
    let sorted = series(vec![bar(0x1111), bar(0x2222)]);
    assert_eq!(Response::decode(&encode(sorted.clone()).unwrap()), Ok(Response::Data(sorted)));
    // A history over the limit, with the bytes to hold it (zero-filled items would be read
    // as fields, so the count is checked as the list starts, before any item is read).
    let too_many = HISTORY_ENTRIES_MAX + 1;
    let mut body = cat(&[u16_field(5), u64_field(0), vec![Tag::List.code()]]);
    body.extend_from_slice(&u32::try_from(too_many).unwrap().to_be_bytes());
    body.extend_from_slice(&9u16.to_be_bytes());
    body.resize(body.len() + too_many * 9, 0);
    let message = Message {
        message_type: MessageType::ServerReturn,
        instruction: Instruction::Data.code(),
        arg_count: 3,
        body,
    };
    assert_eq!(
        Response::decode(&message),
        Err(DecodeError::TooManyItems {
            field: 2,
            what: "transactions",
            items: too_many,
            max: HISTORY_ENTRIES_MAX
        })
    );
}

/// A price series carries at most `PRICE_SERIES_BARS_MAX` bars, so it always fits one message:
/// the encoder refuses a longer one (without building its body), and the decoder refuses a
/// payload that claims more, before reading an item.
#[test]
fn a_price_series_is_bounded_on_both_sides() {
    use engine::{Price, Qty, Symbol, Timestamp};
    use net::limits::PRICE_SERIES_BARS_MAX;
    use net::{Bar, DataPayload, EncodeError, PriceSeries};
    let bar = Bar {
        open: Price::from_raw(1),
        high: Price::from_raw(1),
        low: Price::from_raw(1),
        close: Price::from_raw(1),
        volume: Qty::ZERO,
        time: Timestamp(0),
    };
    let series = |bars| {
        Response::Data(DataPayload::PriceSeries(PriceSeries {
            symbol: Symbol::new("AAPL").unwrap(),
            bars,
        }))
    };
    // One bar per period, oldest first, as the promise is (docs/PROTOCOL.md).
    let bars = |count: usize| -> Vec<Bar> {
        (0..count).map(|i| Bar { time: Timestamp(i64::try_from(i).unwrap()), ..bar }).collect()
    };
    let full = series(bars(PRICE_SERIES_BARS_MAX)).encode().unwrap();
    assert!(full.body.len() <= MESSAGE_BODY_BYTES_MAX, "{} bytes", full.body.len());
    assert_eq!(
        series(bars(PRICE_SERIES_BARS_MAX + 1)).encode(),
        Err(EncodeError::TooManyItems {
            what: "bars",
            items: PRICE_SERIES_BARS_MAX + 1,
            max: PRICE_SERIES_BARS_MAX
        })
    );
    // The decoder: the full series with its count raised by one (and the bytes of one more bar).
    let mut body = full.body.clone();
    let count_at = body.windows(4).position(|w| w == b"AAPL").unwrap() + 4 + 1;
    let count = u32::try_from(PRICE_SERIES_BARS_MAX + 1).unwrap();
    body[count_at..count_at + 4].copy_from_slice(&count.to_be_bytes());
    let bar_bytes = (full.body.len() - count_at - 6) / PRICE_SERIES_BARS_MAX;
    body.extend_from_slice(&full.body[full.body.len() - bar_bytes..]);
    let message = Message { body, ..full };
    assert_eq!(
        Response::decode(&message),
        Err(DecodeError::TooManyItems {
            field: 2,
            what: "bars",
            items: PRICE_SERIES_BARS_MAX + 1,
            max: PRICE_SERIES_BARS_MAX
        })
    );
}
