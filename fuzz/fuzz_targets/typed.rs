//! Fuzzes the typed decoders on a message body directly (no framing): the input names an
//! instruction code and an argument count, the rest is the body. `Request::decode`,
//! `Response::decode` and `Control::decode` must never panic, and whatever decodes must re-encode
//! to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use net::{Control, Instruction, Message, MessageType, Request, Response};

fuzz_target!(|data: &[u8]| {
    let [hi, lo, count_hi, count_lo, body @ ..] = data else { return };
    let code = u16::from_be_bytes([*hi, *lo]);
    let arg_count = u16::from_be_bytes([*count_hi, *count_lo]);
    // The instruction's own message type when the code is known, else every type.
    let types = match Instruction::from_code(code) {
        Some(instruction) => vec![instruction.message_type()],
        None => MessageType::ALL.to_vec(),
    };
    for message_type in types {
        let message = Message { message_type, instruction: code, arg_count, body: body.to_vec() };
        if let Ok(request) = Request::decode(&message) {
            assert_eq!(request.encode().expect("a decoded request encodes"), message);
        }
        if let Ok(response) = Response::decode(&message) {
            assert_eq!(response.encode().expect("a decoded response encodes"), message);
        }
        if let Ok(control) = Control::decode(&message) {
            assert_eq!(control.encode().expect("a decoded control message encodes"), message);
        }
    }
});
