//! Round-trip property tests: every typed message survives encode, packetising, the wire bytes,
//! check/parse, reassembly and decode unchanged, whatever the packet size.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{control, messages, request, response, wire};
use net::{Control, Frame, FrameError, Message, Request, Response};
use proptest::prelude::*;

/// Encodes, puts on the wire in packets of `packet` bytes, and reads back one message.
fn through_the_wire(message: &Message, packet: usize) -> Message {
    let bytes = wire(message, packet);
    // Every strict prefix is incomplete, never malformed.
    for cut in [0, 1, 19, bytes.len() / 2, bytes.len() - 1] {
        match Frame::check(&bytes[..cut]) {
            Err(FrameError::Incomplete { needed_bytes }) => assert!(needed_bytes > 0),
            Ok(len) => assert!(len <= cut, "a complete frame must fit in the prefix"),
            Err(other) => panic!("prefix of {cut} bytes is malformed: {other}"),
        }
    }
    let mut got = messages(&bytes).unwrap();
    assert_eq!(got.len(), 1);
    got.remove(0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn requests_round_trip(request in request(), packet in 1usize..=80) {
        let message = request.encode().unwrap();
        prop_assert_eq!(message.message_type, request.instruction().message_type());
        let back = through_the_wire(&message, packet);
        prop_assert_eq!(&back, &message);
        prop_assert_eq!(Request::decode(&back).unwrap(), request);
    }

    #[test]
    fn responses_round_trip(response in response(), packet in 1usize..=200) {
        let message = response.encode().unwrap();
        let back = through_the_wire(&message, packet);
        prop_assert_eq!(Response::decode(&back).unwrap(), response);
    }

    #[test]
    fn control_messages_round_trip(control in control(), packet in 1usize..=200) {
        let message = control.encode().unwrap();
        let back = through_the_wire(&message, packet);
        prop_assert_eq!(Control::decode(&back).unwrap(), control);
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bodies(
        instruction in prop::sample::select(net::Instruction::ALL),
        arg_count in 0u16..12,
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let message = Message {
            message_type: instruction.message_type(),
            instruction: instruction.code(),
            arg_count,
            body,
        };
        let _ = Request::decode(&message);
        let _ = Response::decode(&message);
        let _ = Control::decode(&message);
    }

    #[test]
    fn frame_check_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = Frame::check(&bytes);
        let _ = Frame::parse(&bytes);
    }
}

#[test]
fn a_large_payload_is_split_at_the_frame_limit_and_reassembled() {
    use engine::{Price, Qty, Symbol, Timestamp};
    use net::{Bar, DataPayload, PriceSeries};
    let bar = |i: u64| Bar {
        open: Price::from_raw(i),
        high: Price::from_raw(i + 2),
        low: Price::from_raw(i),
        close: Price::from_raw(i + 1),
        volume: Qty::from_raw(i * 7),
        time: Timestamp(i64::try_from(i).unwrap() * 60_000_000),
    };
    let series =
        PriceSeries { symbol: Symbol::new("AAPL").unwrap(), bars: (0..10_000).map(bar).collect() };
    let response = Response::Data(DataPayload::PriceSeries(series));
    let message = response.encode().unwrap();
    let frames = message.to_frames().unwrap();
    assert!(frames.len() > 5, "{} packets", frames.len());
    let max = u32::try_from(frames.len()).unwrap();
    for (i, frame) in frames.iter().enumerate() {
        assert_eq!(frame.packet_number(), u32::try_from(i).unwrap() + 1);
        assert_eq!(frame.packet_max(), max);
        assert!(frame.data().len() <= net::limits::FRAME_DATA_BYTES_MAX);
    }
    let bytes = message.to_bytes().unwrap();
    let back = messages(&bytes).unwrap();
    assert_eq!(Response::decode(&back[0]).unwrap(), response);
}

#[test]
fn encoding_refuses_what_decoding_would_refuse() {
    use net::{EncodeError, Failure, Reason};
    let too_long = Control::HelloProof { signature: vec![0; net::limits::SIGNATURE_BYTES_MAX + 1] };
    assert!(matches!(too_long.encode(), Err(EncodeError::FieldTooLong { what: "signature", .. })));
    let challenge = |master_proof: Vec<u8>, sealed_key: Vec<u8>| Control::Challenge {
        nonce: [1; 32],
        master_proof,
        sealed_key,
    };
    let proof_too_long = challenge(vec![0; net::limits::SIGNATURE_BYTES_MAX + 1], vec![1; 8]);
    assert!(matches!(
        proof_too_long.encode(),
        Err(EncodeError::FieldTooLong { what: "masterProof", .. })
    ));
    let no_proof = challenge(vec![], vec![1; 8]);
    assert!(matches!(
        no_proof.encode(),
        Err(EncodeError::FieldTooShort { what: "masterProof", .. })
    ));
    let no_key = challenge(vec![1; 8], vec![]);
    assert!(matches!(no_key.encode(), Err(EncodeError::FieldTooShort { what: "sealedKey", .. })));
    let key_too_long = challenge(vec![1; 8], vec![0; net::limits::SEALED_KEY_BYTES_MAX + 1]);
    assert!(matches!(
        key_too_long.encode(),
        Err(EncodeError::FieldTooLong { what: "sealedKey", .. })
    ));
    let long_message = Response::Error(Failure {
        reason: Reason::Internal,
        message: "x".repeat(net::limits::FAILURE_MESSAGE_BYTES_MAX + 1),
    });
    assert!(matches!(long_message.encode(), Err(EncodeError::FieldTooLong { .. })));
    // Failure::new cuts instead.
    let cut = Response::Error(Failure::new(Reason::Internal, "x".repeat(5000)));
    assert!(cut.encode().is_ok());
    // A purchaseSuccess must carry a buy.
    let sell_fill = net::FillReport {
        order: engine::OrderId(1),
        symbol: engine::Symbol::new("A").unwrap(),
        side: engine::Side::Sell,
        qty: engine::Qty::from_raw(1),
        price: engine::Price::from_raw(1),
        amount: engine::Cash::from_raw(1),
        interval: engine::IntervalId(1),
        settled_at: engine::Timestamp(0),
        cash_after: engine::Cash::from_raw(0),
    };
    assert_eq!(
        Response::PurchaseSuccess(sell_fill).encode(),
        Err(EncodeError::Inconsistent { what: "side" })
    );
    assert!(Response::SellSuccess(sell_fill).encode().is_ok());
}
