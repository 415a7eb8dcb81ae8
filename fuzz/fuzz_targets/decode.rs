//! Fuzzes the whole receive path: frame check and parse, reassembly, the link opener and the
//! three typed decoders. Nothing may panic, and whatever decodes must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use net::{
    Control, Direction, Frame, FrameError, Instruction, LinkKey, LinkOpener, Message, Progress,
    Reassembler, Request, Response,
};

fn check_message(message: &Message) {
    if let Ok(request) = Request::decode(message) {
        assert_eq!(&request.encode().expect("a decoded request encodes"), message);
    }
    if let Ok(response) = Response::decode(message) {
        assert_eq!(&response.encode().expect("a decoded response encodes"), message);
    }
    if let Ok(control) = Control::decode(message) {
        assert_eq!(&control.encode().expect("a decoded control message encodes"), message);
    }
}

fuzz_target!(|data: &[u8]| {
    // The bytes as a stream of frames, the way a reader sees them.
    let mut rest = data;
    let mut reassembler = Reassembler::new(1 << 20);
    let mut opener = LinkOpener::new(LinkKey([0x42; 32]), Direction::WorkerToMaster);
    while !rest.is_empty() {
        match Frame::check(rest) {
            Ok(len) => {
                assert!(len <= rest.len());
                let mut frame = Frame::parse(&rest[..len]).expect("check said it is complete");
                assert_eq!(frame.to_bytes(), &rest[..len], "a parsed frame re-encodes exactly");
                rest = &rest[len..];
                if frame.seal().is_some() {
                    let _ = opener.open(&mut frame);
                }
                match reassembler.push(frame) {
                    Ok(Progress::Complete(message)) => check_message(&message),
                    Ok(Progress::Partial { received, max }) => assert!(received < max),
                    Err(_) => break,
                }
            }
            Err(FrameError::Incomplete { needed_bytes }) => {
                assert!(needed_bytes > 0);
                break;
            }
            Err(_) => break,
        }
    }
    // The bytes as a message body for some instruction, to reach the decoders directly.
    if let [which, arg_count, body @ ..] = data {
        let instruction = Instruction::ALL[usize::from(*which) % Instruction::ALL.len()];
        check_message(&Message {
            message_type: instruction.message_type(),
            instruction: instruction.code(),
            arg_count: u16::from(*arg_count % 16),
            body: body.to_vec(),
        });
    }
});
