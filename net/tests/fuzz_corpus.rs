//! Keeps the fuzzer's seed corpus (`fuzz/seeds/decode/`) current: every seed is generated from
//! the table below, and every file in the directory is a stream of whole frames (sealed ones
//! under the fuzzer's link key `42 42 … 42`, worker to master) whose messages decode.
//! `PT_BLESS=1 cargo test -p net --test fuzz_corpus` rewrites the seeds after an encoding change.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use engine::{Price, Qty, Symbol, Timestamp, Username, WorkerId};
use net::{
    Bar, ConnState, Control, DataPayload, Direction, Failure, Frame, HashedPassword, LinkKey,
    LinkOpener, LinkSealer, Message, Period, PriceSeries, Progress, Reason, Reassembler, Relay,
    Request, Response, SessionId, WorkerHello, WorkerInfo,
};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/decode")
}

fn session() -> SessionId {
    SessionId(std::array::from_fn(|i| u8::try_from(i).unwrap()))
}

fn aapl() -> Symbol {
    Symbol::new("AAPL").unwrap()
}

/// One frame per message, unsealed.
fn frames(messages: &[Message]) -> Vec<u8> {
    messages.iter().flat_map(|m| m.to_bytes().unwrap()).collect()
}

fn request(request: Request) -> Message {
    request.encode().unwrap()
}

fn control(control: Control) -> Message {
    control.encode().unwrap()
}

/// The seeds: file name and bytes.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let s = session();
    let purchase = Request::Purchase {
        session: s,
        symbol: aapl(),
        qty: Qty::from_raw(500_000_000),
        client_order_id: 1,
    };
    let sell =
        Request::Sell { session: s, symbol: aapl(), qty: Qty::from_raw(1), client_order_id: 2 };
    let bar = Bar {
        open: Price::from_raw(1),
        high: Price::from_raw(3),
        low: Price::from_raw(1),
        close: Price::from_raw(2),
        volume: Qty::from_raw(9),
        time: Timestamp(60),
    };
    let series = Response::Data(DataPayload::PriceSeries(PriceSeries {
        symbol: aapl(),
        // One bar per period, oldest first (docs/PROTOCOL.md).
        bars: (0..3).map(|day| Bar { time: Timestamp(60 + day * 86_400_000_000), ..bar }).collect(),
    }));
    let mut series_packets = Vec::new();
    for frame in net::split_payload(&series.encode().unwrap(), 64).unwrap() {
        frame.write_to(&mut series_packets);
    }
    let mut heartbeat = control(Control::Heartbeat { seq: 9 }).to_frames().unwrap().remove(0);
    LinkSealer::new(LinkKey([0x42; 32]), Direction::WorkerToMaster).seal(&mut heartbeat).unwrap();
    vec![
        (
            "login",
            frames(&[request(Request::Login {
                username: Username::new("alice").unwrap(),
                password: HashedPassword::new(vec![0xA5; 16]).unwrap(),
                expirable: true,
            })]),
        ),
        (
            "pipelined",
            frames(&[
                request(Request::LoginSession { session: s }),
                request(Request::SwitchState { session: s, state: ConnState::DataTransfer }),
                request(Request::GetAssetValue {
                    symbol: aapl(),
                    period: Period::Week,
                    date: Timestamp(1_590_883_200_000_000),
                }),
            ]),
        ),
        ("purchase", frames(&[request(purchase)])),
        ("series-packets", series_packets),
        (
            "workers",
            frames(&[Response::Data(DataPayload::WorkerList(vec![WorkerInfo {
                id: WorkerId(7),
                name: "w1".into(),
                address: "[2001:db8::1]:2049".into(),
            }]))
            .encode()
            .unwrap()]),
        ),
        (
            "hello",
            frames(&[control(Control::WorkerHello(WorkerHello {
                worker: WorkerId(7),
                version: 1,
                address: "w1.example:2049".into(),
                nonce: std::array::from_fn(|i| 0xA0 ^ u8::try_from(i).unwrap()),
            }))]),
        ),
        (
            "challenge",
            frames(&[control(Control::Challenge {
                nonce: std::array::from_fn(|i| 0xC0 ^ u8::try_from(i).unwrap()),
                master_proof: vec![0xC2, 0x5E, 0x04, 0x00, 0x16, 0x0A, 0x00, 0x06],
                sealed_key: vec![0xC1, 0x5E, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
            })]),
        ),
        (
            "relay",
            frames(&[control(Control::Relay(Box::new(Relay {
                relay_id: 1,
                client_ip: "198.51.100.7".parse().unwrap(),
                received_at: Timestamp(5),
                session: Some(s),
                request: sell,
            })))]),
        ),
        (
            "relay-reply",
            frames(&[control(Control::RelayReply {
                relay_id: 1,
                response: Response::SellFail(Failure::new(Reason::Busy, "busy")),
            })]),
        ),
        ("sealed-heartbeat", heartbeat.to_bytes()),
    ]
}

#[test]
fn seeds_are_current() {
    let bless = std::env::var_os("PT_BLESS").is_some_and(|v| v == "1");
    for (name, bytes) in seeds() {
        let path = corpus_dir().join(name);
        if bless {
            std::fs::write(&path, &bytes).unwrap();
        }
        let on_disk = std::fs::read(&path).unwrap();
        assert!(
            on_disk == bytes,
            "{} is stale; run `PT_BLESS=1 cargo test -p net --test fuzz_corpus`",
            path.display()
        );
    }
}

/// Reads a seed the way the fuzz target does: check, parse, open when sealed, reassemble.
fn messages(path: &Path, mut bytes: &[u8]) -> Vec<Message> {
    let mut reassembler = Reassembler::default();
    let mut opener = LinkOpener::new(LinkKey([0x42; 32]), Direction::WorkerToMaster);
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = Frame::check(bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut frame = Frame::parse(&bytes[..len]).unwrap();
        bytes = &bytes[len..];
        if frame.seal().is_some() {
            opener.open(&mut frame).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        match reassembler.push(frame).unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
            Progress::Partial { .. } => {}
            Progress::Complete(message) => out.push(message),
        }
    }
    assert!(reassembler.progress().is_none(), "{} ends inside a message", path.display());
    out
}

#[test]
fn every_seed_decodes() {
    let mut seeds = 0;
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let list = messages(&path, &bytes);
        assert!(!list.is_empty(), "{}", path.display());
        for message in &list {
            let decodes = Request::decode(message).is_ok()
                || Response::decode(message).is_ok()
                || Control::decode(message).is_ok();
            assert!(decodes, "{}: a message does not decode", path.display());
        }
        seeds += 1;
    }
    assert_eq!(seeds, self::seeds().len(), "every file in the corpus comes from the table");
}
