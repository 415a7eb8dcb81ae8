//! Keeps `docs/PROTOCOL.md` true: the instruction table, the reason codes and a hex dump of one
//! real message of each instruction are rendered from the code and compared with the file.
//! `PT_BLESS=1 cargo test -p net --test protocol_doc` rewrites the generated sections.
//!
//! The hex dissector below is written from the document's description of the encoding, not from
//! the encoder, so it also checks that the description is right.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::path::PathBuf;

use engine::{
    AccountId, Cash, Email, IntervalId, OrderId, Price, Qty, RejectReason, Side, Symbol, Tick,
    Timestamp, Username, WorkerId,
};
use net::{
    Bar, ConnState, Control, DataPayload, Direction, Failure, FillReport, Frame, HashedPassword,
    HistoryEntry, Instruction, LinkKey, LinkSealer, Message, MessageType, Period, Portfolio,
    PortfolioHolding, PriceSeries, Reason, Relay, Request, Response, SessionId, Tag, UserInfo,
    WorkerHello, WorkerInfo,
};

// ---------------------------------------------------------------- example values

const DATE: i64 = 1_590_883_200_000_000; // 2020-05-31T00:00:00Z

fn session() -> SessionId {
    SessionId(std::array::from_fn(|i| u8::try_from(i).unwrap()))
}

fn password() -> HashedPassword {
    HashedPassword::new((0xA0..0xB0).collect()).unwrap()
}

fn aapl() -> Symbol {
    Symbol::new("AAPL").unwrap()
}

fn alice() -> Username {
    Username::new("alice").unwrap()
}

fn units(n: u64) -> u64 {
    n * 100_000_000
}

fn fill(side: Side) -> FillReport {
    FillReport {
        order: OrderId(42),
        symbol: aapl(),
        side,
        qty: Qty::from_raw(units(5)),
        price: Price::parse("318.25").unwrap(),
        amount: Cash::parse("1591.25").unwrap(),
        interval: IntervalId(7),
        settled_at: Timestamp(DATE + 60_000_000),
        cash_after: Cash::parse("8408.75").unwrap(),
    }
}

fn tick() -> Tick {
    Tick {
        symbol: aapl(),
        open: Price::parse("317.5").unwrap(),
        high: Price::parse("319").unwrap(),
        low: Price::parse("317.25").unwrap(),
        close: Price::parse("318.25").unwrap(),
        volume: Qty::from_raw(units(1200)),
        time: Timestamp(DATE),
    }
}

fn failure(reason: Reason, message: &str) -> Failure {
    Failure::new(reason, message)
}

fn requests() -> Vec<(String, Request)> {
    let s = session();
    vec![
        (
            "login(\"alice\", hashedPass, isExpirable = true)".into(),
            Request::Login { username: alice(), password: password(), expirable: true },
        ),
        ("loginSession(sessionID)".into(), Request::LoginSession { session: s }),
        (
            "register(\"alice\", \"alice@example.com\", hashedPass)".into(),
            Request::Register {
                username: alice(),
                email: Email::new("alice@example.com").unwrap(),
                password: password(),
            },
        ),
        (
            "purchaseAsset(sessionID, \"AAPL\", 5 units)".into(),
            Request::Purchase {
                session: s,
                symbol: aapl(),
                qty: Qty::from_raw(units(5)),
                client_order_id: 7,
            },
        ),
        (
            "sellAsset(sessionID, \"AAPL\", 2.5 units)".into(),
            Request::Sell {
                session: s,
                symbol: aapl(),
                qty: Qty::parse("2.5").unwrap(),
                client_order_id: 8,
            },
        ),
        (
            "switchState(sessionID, data transfer)".into(),
            Request::SwitchState { session: s, state: ConnState::DataTransfer },
        ),
        ("logout(sessionID)".into(), Request::Logout { session: s }),
        ("getWorkers()".into(), Request::GetWorkers),
        ("getAssetInfo(\"AAPL\")".into(), Request::GetAssetInfo { symbol: aapl() }),
        ("getAssetValueCurrent(\"AAPL\")".into(), Request::GetAssetValueCurrent { symbol: aapl() }),
        (
            "getAssetValueDay(\"AAPL\", 2020-05-31T00:00:00Z)".into(),
            Request::GetAssetValue { symbol: aapl(), period: Period::Day, date: Timestamp(DATE) },
        ),
        (
            "getAssetValueWeek(\"AAPL\", 2020-05-31T00:00:00Z)".into(),
            Request::GetAssetValue { symbol: aapl(), period: Period::Week, date: Timestamp(DATE) },
        ),
        (
            "getAssetValueMonth(\"AAPL\", 2020-05-31T00:00:00Z)".into(),
            Request::GetAssetValue { symbol: aapl(), period: Period::Month, date: Timestamp(DATE) },
        ),
        (
            "getAssetValueYear(\"AAPL\", 2020-05-31T00:00:00Z)".into(),
            Request::GetAssetValue { symbol: aapl(), period: Period::Year, date: Timestamp(DATE) },
        ),
        ("getAssetValueAllTime(\"AAPL\")".into(), Request::GetAssetValueAllTime { symbol: aapl() }),
        (
            "getUserInfo(sessionID, \"alice\")".into(),
            Request::GetUserInfo { session: s, username: alice() },
        ),
        (
            "getUserPortfolio(sessionID, \"alice\")".into(),
            Request::GetUserPortfolio { session: s, username: alice() },
        ),
        (
            "getUserTransactionHistory(sessionID, \"alice\")".into(),
            Request::GetUserTransactionHistory { session: s, username: alice() },
        ),
    ]
}

fn payloads() -> Vec<(String, DataPayload)> {
    let bar = |t: &str, close: &str| Bar {
        open: Price::parse("317.5").unwrap(),
        high: Price::parse("319").unwrap(),
        low: Price::parse("317.25").unwrap(),
        close: Price::parse(close).unwrap(),
        volume: Qty::from_raw(units(1200)),
        time: Timestamp(DATE + t.parse::<i64>().unwrap()),
    };
    vec![
        ("data(assetInfo: AAPL tick)".into(), DataPayload::AssetInfo(tick())),
        (
            "data(priceSeries: AAPL, 2 bars)".into(),
            DataPayload::PriceSeries(PriceSeries {
                symbol: aapl(),
                bars: vec![bar("0", "318.25"), bar("3600000000", "318.5")],
            }),
        ),
        (
            "data(userInfo: alice, owner's view with email)".into(),
            DataPayload::UserInfo(UserInfo {
                username: alice(),
                account: AccountId(1),
                opened_at: Timestamp(DATE),
                email: Some(Email::new("alice@example.com").unwrap()),
            }),
        ),
        (
            "data(portfolio: cash and one holding)".into(),
            DataPayload::Portfolio(Portfolio {
                cash: Cash::parse("8408.75").unwrap(),
                holdings: vec![PortfolioHolding {
                    symbol: aapl(),
                    qty: Qty::from_raw(units(5)),
                    cost_basis: Cash::parse("1591.25").unwrap(),
                    last_price: Some(Price::parse("318.5").unwrap()),
                }],
            }),
        ),
        (
            "data(transactionHistory: one buy)".into(),
            DataPayload::TransactionHistory {
                older: 0,
                entries: vec![HistoryEntry {
                    order: OrderId(42),
                    side: Side::Buy,
                    symbol: aapl(),
                    qty: Qty::from_raw(units(5)),
                    price: Price::parse("318.25").unwrap(),
                    amount: Cash::parse("1591.25").unwrap(),
                    interval: IntervalId(7),
                    settled_at: Timestamp(DATE + 60_000_000),
                    tick_time: Timestamp(DATE),
                }],
            },
        ),
        (
            "data(workerList: one worker)".into(),
            DataPayload::WorkerList(vec![WorkerInfo {
                id: WorkerId(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
                name: "worker-1".into(),
                address: "192.0.2.10:2049".into(),
            }]),
        ),
    ]
}

fn responses() -> Vec<(String, Response)> {
    let mut out: Vec<(String, Response)> = vec![
        (
            "loginFail(bad_credentials)".into(),
            Response::LoginFail(failure(Reason::BadCredentials, "wrong password")),
        ),
        ("sessionID(sessionID)".into(), Response::SessionId(session())),
        ("registerSuccess()".into(), Response::RegisterSuccess),
        (
            "registerFail(username_taken)".into(),
            Response::RegisterFail(failure(Reason::UsernameTaken, "taken")),
        ),
        ("purchaseSuccess(fill)".into(), Response::PurchaseSuccess(fill(Side::Buy))),
        (
            "purchaseFail(insufficient_cash)".into(),
            Response::PurchaseFail(failure(
                Reason::Rejected(RejectReason::InsufficientCash),
                "not enough cash",
            )),
        ),
        ("sellSuccess(fill)".into(), Response::SellSuccess(fill(Side::Sell))),
        (
            "sellFail(insufficient_holdings)".into(),
            Response::SellFail(failure(Reason::Rejected(RejectReason::InsufficientHoldings), "")),
        ),
        (
            "stateSwitchSuccess(data transfer)".into(),
            Response::StateSwitchSuccess(ConnState::DataTransfer),
        ),
        (
            "stateSwitchFail(wrong_state)".into(),
            Response::StateSwitchFail(failure(Reason::WrongState, "already")),
        ),
    ];
    for (title, payload) in payloads() {
        out.push((title, Response::Data(payload)));
    }
    out.extend([
        ("dataFail(not_found)".into(), Response::DataFail(failure(Reason::NotFound, "no AAPL"))),
        ("logoutSuccess()".into(), Response::LogoutSuccess),
        (
            "logoutFail(not_logged_in)".into(),
            Response::LogoutFail(failure(Reason::NotLoggedIn, "")),
        ),
        ("error(malformed)".into(), Response::Error(failure(Reason::Malformed, "bad"))),
    ]);
    out
}

fn controls() -> Vec<(String, Control)> {
    let worker = WorkerId(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    vec![
        (
            "workerHello(worker UUID, version 1, \"192.0.2.10:2049\", worker nonce)".into(),
            Control::WorkerHello(WorkerHello {
                worker,
                version: 1,
                address: "192.0.2.10:2049".into(),
                nonce: std::array::from_fn(|i| 0xA0 ^ u8::try_from(i).unwrap()),
            }),
        ),
        (
            "challenge(master nonce, masterProof, sealedKey; 8 bytes each here, about 190 and \
             220 in practice)"
                .into(),
            Control::Challenge {
                nonce: std::array::from_fn(|i| 0xC0 ^ u8::try_from(i).unwrap()),
                master_proof: vec![0xC2, 0x5E, 0x04, 0x00, 0x16, 0x0A, 0x00, 0x06],
                sealed_key: vec![0xC1, 0x5E, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
            },
        ),
        (
            "helloProof(signature; 8 bytes here, ~120 in practice)".into(),
            Control::HelloProof { signature: vec![0xC2, 0x5E, 0x04, 0x00, 0x16, 0x0A, 0x00, 0x06] },
        ),
        ("linkAccepted()".into(), Control::LinkAccepted),
        (
            "linkRefused(forbidden)".into(),
            Control::LinkRefused(failure(Reason::Forbidden, "unknown worker")),
        ),
        ("heartbeat(seq 9)".into(), Control::Heartbeat { seq: 9 }),
        ("heartbeatAck(seq 9)".into(), Control::HeartbeatAck { seq: 9 }),
        (
            "relay(id 1, client 198.51.100.7, purchaseAsset)".into(),
            Control::Relay(Box::new(Relay {
                relay_id: 1,
                client_ip: "198.51.100.7".parse().unwrap(),
                received_at: Timestamp(DATE + 1_500_000),
                session: Some(session()),
                request: Request::Purchase {
                    session: session(),
                    symbol: aapl(),
                    qty: Qty::from_raw(units(5)),
                    client_order_id: 7,
                },
            })),
        ),
        (
            "relayReply(id 1, purchaseSuccess)".into(),
            Control::RelayReply {
                relay_id: 1,
                response: Response::PurchaseSuccess(fill(Side::Buy)),
            },
        ),
    ]
}

// ---------------------------------------------------------------- the dissector

const HEX_COLUMN: usize = 50;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn line(out: &mut String, indent: usize, hex_text: &str, description: &str) {
    // Values longer than 16 bytes are cut into 32-digit chunks; chunks are packed into lines of
    // at most the hex column's width; the description goes on the first line.
    let width = HEX_COLUMN - indent;
    let chunks: Vec<&str> = hex_text
        .split(' ')
        .flat_map(|token| {
            (0..token.len()).step_by(32).map(move |at| &token[at..(at + 32).min(token.len())])
        })
        .collect();
    let mut lines: Vec<String> = vec![String::new()];
    for chunk in chunks {
        let current = lines.last_mut().unwrap();
        if current.is_empty() {
            current.push_str(chunk);
        } else if current.len() + 1 + chunk.len() <= width {
            current.push(' ');
            current.push_str(chunk);
        } else {
            lines.push(chunk.to_string());
        }
    }
    let pad = " ".repeat(indent);
    for (i, text) in lines.iter().enumerate() {
        if i == 0 && !description.is_empty() {
            let text = format!("{pad}{text}");
            writeln!(out, "{text:<HEX_COLUMN$}  {description}").unwrap();
        } else {
            writeln!(out, "{pad}{text}").unwrap();
        }
    }
}

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn header_line(out: &mut String, bytes: &[u8]) {
    let t = MessageType::from_code(bytes[1]).unwrap();
    let instruction = Instruction::from_code(be_u16(&bytes[2..])).unwrap();
    let text = format!(
        "{} {} {} {} {} {} {} {}",
        hex(&bytes[0..1]),
        hex(&bytes[1..2]),
        hex(&bytes[2..4]),
        hex(&bytes[4..6]),
        hex(&bytes[6..8]),
        hex(&bytes[8..12]),
        hex(&bytes[12..16]),
        hex(&bytes[16..20]),
    );
    let flags = be_u16(&bytes[6..]);
    let description = format!(
        "header: v{}, {}, {} ({:#06x}), {} args, flags {:#06x}{}, packet {}/{}, {} data bytes",
        bytes[0],
        t.name(),
        instruction.name(),
        instruction.code(),
        be_u16(&bytes[4..]),
        flags,
        if flags & 1 == 1 { " (sealed)" } else { "" },
        be_u32(&bytes[8..]),
        be_u32(&bytes[12..]),
        be_u32(&bytes[16..]),
    );
    line(out, 0, &text, &description);
}

/// Dissects `count` fields from `body` at `pos`; returns the new position.
fn fields(out: &mut String, body: &[u8], mut pos: usize, count: usize, indent: usize) -> usize {
    for _ in 0..count {
        let tag = Tag::from_code(body[pos]).unwrap();
        let t = hex(&body[pos..=pos]);
        pos += 1;
        match tag {
            Tag::None => line(out, indent, &t, "none"),
            Tag::Bool => {
                line(
                    out,
                    indent,
                    &format!("{t} {}", hex(&body[pos..=pos])),
                    &format!("bool {}", body[pos] == 1),
                );
                pos += 1;
            }
            Tag::U16 => {
                let v = be_u16(&body[pos..]);
                line(
                    out,
                    indent,
                    &format!("{t} {}", hex(&body[pos..pos + 2])),
                    &format!("u16 {v}"),
                );
                pos += 2;
            }
            Tag::U64 | Tag::I64 => {
                let raw: [u8; 8] = body[pos..pos + 8].try_into().unwrap();
                let description = if tag == Tag::U64 {
                    format!("u64 {}", u64::from_be_bytes(raw))
                } else {
                    format!("i64 {}", i64::from_be_bytes(raw))
                };
                line(out, indent, &format!("{t} {}", hex(&raw)), &description);
                pos += 8;
            }
            Tag::Text | Tag::Bytes => {
                let len = usize::try_from(be_u32(&body[pos..])).unwrap();
                let value = &body[pos + 4..pos + 4 + len];
                let description = if tag == Tag::Text {
                    format!("text ({len}) {:?}", std::str::from_utf8(value).unwrap())
                } else {
                    format!("bytes ({len})")
                };
                line(
                    out,
                    indent,
                    &format!("{t} {} {}", hex(&body[pos..pos + 4]), hex(value)),
                    &description,
                );
                pos += 4 + len;
            }
            Tag::Id16 | Tag::Id32 => {
                let n = if tag == Tag::Id16 { 16 } else { 32 };
                line(out, indent, &format!("{t} {}", hex(&body[pos..pos + n])), tag.name());
                pos += n;
            }
            Tag::Ip => {
                let n = if body[pos] == 4 { 4 } else { 16 };
                let ip: std::net::IpAddr = if n == 4 {
                    <[u8; 4]>::try_from(&body[pos + 1..pos + 5]).unwrap().into()
                } else {
                    <[u8; 16]>::try_from(&body[pos + 1..pos + 17]).unwrap().into()
                };
                line(
                    out,
                    indent,
                    &format!("{t} {} {}", hex(&body[pos..=pos]), hex(&body[pos + 1..pos + 1 + n])),
                    &format!("ip {ip}"),
                );
                pos += 1 + n;
            }
            Tag::List => {
                let items = usize::try_from(be_u32(&body[pos..])).unwrap();
                let per = usize::from(be_u16(&body[pos + 4..]));
                line(
                    out,
                    indent,
                    &format!("{t} {} {}", hex(&body[pos..pos + 4]), hex(&body[pos + 4..pos + 6])),
                    &format!("list: {items} items of {per} fields"),
                );
                pos += 6;
                pos = fields(out, body, pos, items * per, indent + 3);
            }
            Tag::Message => {
                let t2 = MessageType::from_code(body[pos]).unwrap();
                let instruction = Instruction::from_code(be_u16(&body[pos + 1..])).unwrap();
                let argc = usize::from(be_u16(&body[pos + 3..]));
                line(
                    out,
                    indent,
                    &format!(
                        "{t} {} {} {}",
                        hex(&body[pos..=pos]),
                        hex(&body[pos + 1..pos + 3]),
                        hex(&body[pos + 3..pos + 5])
                    ),
                    &format!("message: {}, {}, {argc} args", t2.name(), instruction.name()),
                );
                pos += 5;
                pos = fields(out, body, pos, argc, indent + 3);
            }
        }
    }
    pos
}

/// Renders one frame: header, dissected data (when the frame is a whole message), trailer.
fn render_frame(out: &mut String, bytes: &[u8], dissect: bool) {
    header_line(out, bytes);
    let frame = Frame::parse(bytes).unwrap();
    let data = frame.data();
    if frame.seal().is_some() {
        line(out, 0, &hex(data), "data, encrypted (ChaCha20)");
    } else if dissect {
        let end = fields(out, data, 0, usize::from(frame.arg_count()), 0);
        assert_eq!(end, data.len(), "the dissector read the whole body");
    } else {
        line(out, 0, &hex(data), "data (a slice of the body)");
    }
    if let Some(seal) = frame.seal() {
        line(out, 0, &hex(&seal.seq.to_be_bytes()), &format!("seal: sequence {}", seal.seq));
        line(out, 0, &hex(&seal.mac), "seal: MAC (keyed BLAKE3)");
    }
}

fn render_message(out: &mut String, title: &str, message: &Message) {
    let bytes = message.to_bytes().unwrap();
    writeln!(out, "`{title}`: {} bytes\n\n```text", bytes.len()).unwrap();
    render_frame(out, &bytes, true);
    writeln!(out, "```\n").unwrap();
}

// ---------------------------------------------------------------- the generated sections

fn render_instructions() -> String {
    let mut out = String::new();
    writeln!(out, "| number | name | type | args | arguments, in order | answered by |").unwrap();
    writeln!(out, "|---|---|---|---|---|---|").unwrap();
    for &i in Instruction::ALL {
        let count = i.arg_count().map_or("kind".to_string(), |n| n.to_string());
        let returns = if i.returns_doc().is_empty() { "-" } else { i.returns_doc() };
        writeln!(
            out,
            "| `{:#06x}` | `{}` | {} | {} | {} | {} |",
            i.code(),
            i.name(),
            i.message_type().name(),
            count,
            i.args_doc().replace('|', "\\|"),
            returns.replace('|', "\\|")
        )
        .unwrap();
    }
    out
}

fn engine_reason_meaning(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::UnknownAccount => "no account has this id",
        RejectReason::ZeroQuantity => "the quantity is zero",
        RejectReason::QuantityTooLarge => "the quantity is over one billion units",
        RejectReason::UnknownSymbol => "the symbol is not listed",
        RejectReason::NoPrice => "the symbol has no price this interval",
        RejectReason::InsufficientCash => "a buy costs more than the cash at its turn",
        RejectReason::InsufficientHoldings => "a sell asks for more than is held at its turn",
        RejectReason::Overflow => "an amount would not fit in 64 bits",
    }
}

fn render_reasons() -> String {
    let mut out = String::new();
    writeln!(out, "| code | name | meaning |").unwrap();
    writeln!(out, "|---|---|---|").unwrap();
    for reject in RejectReason::ALL {
        let reason = Reason::Rejected(reject);
        writeln!(
            out,
            "| {} | `{}` | engine: {} |",
            reason.code(),
            reason.name(),
            engine_reason_meaning(reject)
        )
        .unwrap();
    }
    for (reason, code, name, meaning) in Reason::PROTOCOL {
        assert_eq!(reason.code(), code);
        writeln!(out, "| {code} | `{name}` | {meaning} |").unwrap();
    }
    out
}

fn render_examples() -> String {
    let mut out = String::new();
    let mut covered = std::collections::BTreeSet::new();
    writeln!(out, "### Requests (command and data transfer)\n").unwrap();
    for (title, request) in requests() {
        let message = request.encode().unwrap();
        assert_eq!(Request::decode(&message).unwrap(), request);
        covered.insert(message.instruction);
        render_message(&mut out, &title, &message);
    }
    writeln!(out, "### Server returns\n").unwrap();
    for (title, response) in responses() {
        let message = response.encode().unwrap();
        assert_eq!(Response::decode(&message).unwrap(), response);
        covered.insert(message.instruction);
        render_message(&mut out, &title, &message);
    }
    writeln!(out, "### Master–worker link\n").unwrap();
    for (title, control) in controls() {
        let message = control.encode().unwrap();
        assert_eq!(Control::decode(&message).unwrap(), control);
        covered.insert(message.instruction);
        render_message(&mut out, &title, &message);
    }
    let all: std::collections::BTreeSet<u16> = Instruction::ALL.iter().map(|i| i.code()).collect();
    assert_eq!(covered, all, "every instruction has an example");

    writeln!(out, "### A payload in several packets\n").unwrap();
    let (title, payload) = payloads().remove(1);
    let message = Response::Data(payload).encode().unwrap();
    let frames = net::split_payload(&message, 64).unwrap();
    writeln!(
        out,
        "`{title}` sent in packets of at most 64 data bytes (any size up to 65536 that keeps the \
         message within 4,096 packets is valid; \
         senders normally use 65536). The body is the concatenation of the packets' data:\n\n```text"
    )
    .unwrap();
    for frame in &frames {
        render_frame(&mut out, &frame.to_bytes(), false);
    }
    writeln!(out, "```\n").unwrap();

    writeln!(out, "### A sealed link frame\n").unwrap();
    let mut frame = Control::Heartbeat { seq: 9 }.encode().unwrap().to_frames().unwrap().remove(0);
    writeln!(
        out,
        "`heartbeat(seq 9)` as the first frame a worker sends after the handshake, in clear:\n\n\
         ```text"
    )
    .unwrap();
    render_frame(&mut out, &frame.to_bytes(), true);
    writeln!(out, "```\n").unwrap();
    let mut sealer = LinkSealer::new(LinkKey([0x42; 32]), Direction::WorkerToMaster);
    sealer.seal(&mut frame).unwrap();
    writeln!(
        out,
        "and as sent, sealed with the link key `42 42 ... 42` (32 bytes): the same header with \
         flag bit 0, the data encrypted, the trailer:\n\n```text"
    )
    .unwrap();
    render_frame(&mut out, &frame.to_bytes(), true);
    writeln!(out, "```").unwrap();
    out
}

// ---------------------------------------------------------------- compare or bless

fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/PROTOCOL.md")
}

fn replace_section(doc: &str, name: &str, content: &str) -> String {
    let begin = format!(
        "<!-- BEGIN GENERATED {name}: edit net/tests/protocol_doc.rs, then PT_BLESS=1 -->\n"
    );
    let end = format!("<!-- END GENERATED {name} -->");
    let start = doc.find(&begin).unwrap_or_else(|| panic!("PROTOCOL.md lacks the {name} marker"));
    let stop = doc.find(&end).unwrap_or_else(|| panic!("PROTOCOL.md lacks the {name} end marker"));
    format!("{}{begin}{content}{}", &doc[..start], &doc[stop..])
}

#[test]
fn protocol_md_is_up_to_date() {
    let path = doc_path();
    let doc = std::fs::read_to_string(&path).unwrap();
    let mut expected = doc.clone();
    expected = replace_section(&expected, "INSTRUCTIONS", &render_instructions());
    expected = replace_section(&expected, "REASONS", &render_reasons());
    expected = replace_section(&expected, "EXAMPLES", &render_examples());
    if std::env::var_os("PT_BLESS").is_some_and(|v| v == "1") {
        if expected != doc {
            std::fs::write(&path, &expected).unwrap();
        }
        return;
    }
    if expected != doc {
        let first = doc.lines().zip(expected.lines()).position(|(a, b)| a != b);
        panic!(
            "docs/PROTOCOL.md is out of date (first difference at line {:?}); run \
             `PT_BLESS=1 cargo test -p net --test protocol_doc` and review the diff",
            first.map(|n| n + 1)
        );
    }
}
