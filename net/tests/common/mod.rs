//! Proptest strategies and stream helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use engine::{
    AccountId, Cash, Email, IntervalId, OrderId, Price, Qty, Side, Symbol, Tick, Timestamp,
    Username, WorkerId,
};
use net::{
    Bar, ConnState, Control, DataPayload, Failure, FillReport, Frame, FrameError, HashedPassword,
    HistoryEntry, Message, Period, Portfolio, PortfolioHolding, PriceSeries, Progress, Reason,
    Reassembler, Relay, Request, Response, SessionId, UserInfo, WorkerHello, WorkerInfo,
};
use proptest::prelude::*;

pub fn username() -> impl Strategy<Value = Username> {
    "[a-zA-Z0-9][a-zA-Z0-9._-]{0,23}".prop_map(|s| Username::new(&s).unwrap())
}

pub fn email() -> impl Strategy<Value = Email> {
    "[a-z0-9+_]{1,20}(\\.[a-z0-9]{1,8})?@[a-z0-9]{1,20}\\.[a-z]{2,6}"
        .prop_map(|s| Email::new(&s).unwrap())
}

pub fn symbol() -> impl Strategy<Value = Symbol> {
    "[A-Z0-9.^=/-]{1,16}".prop_map(|s| Symbol::new(&s).unwrap())
}

pub fn session() -> impl Strategy<Value = SessionId> {
    any::<[u8; 32]>().prop_map(SessionId)
}

pub fn password() -> impl Strategy<Value = HashedPassword> {
    proptest::collection::vec(any::<u8>(), 16..=128).prop_map(|b| HashedPassword::new(b).unwrap())
}

pub fn timestamp() -> impl Strategy<Value = Timestamp> {
    any::<i64>().prop_map(Timestamp)
}

pub fn period() -> impl Strategy<Value = Period> {
    prop_oneof![Just(Period::Day), Just(Period::Week), Just(Period::Month), Just(Period::Year)]
}

pub fn state() -> impl Strategy<Value = ConnState> {
    prop_oneof![Just(ConnState::Command), Just(ConnState::DataTransfer)]
}

pub fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Buy), Just(Side::Sell)]
}

pub fn failure() -> impl Strategy<Value = Failure> {
    (any::<u16>(), "\\PC{0,60}")
        .prop_map(|(code, message)| Failure::new(Reason::from_code(code), message))
}

pub fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    ]
}

/// A client-facing address as a worker announces it: `host:port` text, 1 to 255 bytes.
pub fn address() -> impl Strategy<Value = String> {
    prop_oneof![
        (ip(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port).to_string()),
        "[a-z0-9.-]{1,40}:[0-9]{1,5}",
        "\\PC{1,60}",
    ]
}

pub fn request() -> impl Strategy<Value = Request> {
    let qty = any::<u64>().prop_map(Qty::from_raw);
    prop_oneof![
        (username(), password(), any::<bool>()).prop_map(|(username, password, expirable)| {
            Request::Login { username, password, expirable }
        }),
        session().prop_map(|session| Request::LoginSession { session }),
        (username(), email(), password()).prop_map(|(username, email, password)| {
            Request::Register { username, email, password }
        }),
        (session(), symbol(), qty.clone(), any::<u64>()).prop_map(
            |(session, symbol, qty, client_order_id)| Request::Purchase {
                session,
                symbol,
                qty,
                client_order_id
            }
        ),
        (session(), symbol(), qty, any::<u64>()).prop_map(
            |(session, symbol, qty, client_order_id)| Request::Sell {
                session,
                symbol,
                qty,
                client_order_id
            }
        ),
        (session(), state()).prop_map(|(session, state)| Request::SwitchState { session, state }),
        session().prop_map(|session| Request::Logout { session }),
        Just(Request::GetWorkers),
        symbol().prop_map(|symbol| Request::GetAssetInfo { symbol }),
        symbol().prop_map(|symbol| Request::GetAssetValueCurrent { symbol }),
        (symbol(), period(), timestamp())
            .prop_map(|(symbol, period, date)| Request::GetAssetValue { symbol, period, date }),
        symbol().prop_map(|symbol| Request::GetAssetValueAllTime { symbol }),
        (session(), username())
            .prop_map(|(session, username)| Request::GetUserInfo { session, username }),
        (session(), username())
            .prop_map(|(session, username)| Request::GetUserPortfolio { session, username }),
        (session(), username()).prop_map(|(session, username)| {
            Request::GetUserTransactionHistory { session, username }
        }),
    ]
}

fn raw<T: std::fmt::Debug>(f: fn(u64) -> T) -> impl Strategy<Value = T> {
    any::<u64>().prop_map(f)
}

pub fn tick() -> impl Strategy<Value = Tick> {
    (
        symbol(),
        raw(Price::from_raw),
        raw(Price::from_raw),
        raw(Price::from_raw),
        raw(Price::from_raw),
        raw(Qty::from_raw),
        timestamp(),
    )
        .prop_map(|(symbol, open, high, low, close, volume, time)| Tick {
            symbol,
            open,
            high,
            low,
            close,
            volume,
            time,
        })
}

pub fn fill(side: Side) -> impl Strategy<Value = FillReport> {
    (
        raw(OrderId),
        symbol(),
        raw(Qty::from_raw),
        raw(Price::from_raw),
        raw(Cash::from_raw),
        raw(IntervalId),
        timestamp(),
        raw(Cash::from_raw),
    )
        .prop_map(
            move |(order, symbol, qty, price, amount, interval, settled_at, cash_after)| {
                FillReport {
                    order,
                    symbol,
                    side,
                    qty,
                    price,
                    amount,
                    interval,
                    settled_at,
                    cash_after,
                }
            },
        )
}

pub fn payload() -> impl Strategy<Value = DataPayload> {
    let bar = tick().prop_map(|t| Bar::from_tick(&t));
    let holding = (
        symbol(),
        raw(Qty::from_raw),
        raw(Cash::from_raw),
        proptest::option::of(raw(Price::from_raw)),
    )
        .prop_map(|(symbol, qty, cost_basis, last_price)| PortfolioHolding {
            symbol,
            qty,
            cost_basis,
            last_price,
        });
    let entry = (
        raw(OrderId),
        side(),
        symbol(),
        raw(Qty::from_raw),
        raw(Price::from_raw),
        raw(Cash::from_raw),
        raw(IntervalId),
        timestamp(),
        timestamp(),
    )
        .prop_map(
            |(order, side, symbol, qty, price, amount, interval, settled_at, tick_time)| {
                HistoryEntry {
                    order,
                    side,
                    symbol,
                    qty,
                    price,
                    amount,
                    interval,
                    settled_at,
                    tick_time,
                }
            },
        );
    let worker = (any::<u128>(), "\\PC{0,16}", address())
        .prop_map(|(id, name, address)| WorkerInfo { id: WorkerId(id), name, address });
    prop_oneof![
        tick().prop_map(DataPayload::AssetInfo),
        // One bar per period, oldest first (docs/PROTOCOL.md).
        (symbol(), proptest::collection::vec(bar, 0..40)).prop_map(|(symbol, mut bars)| {
            bars.sort_by_key(|bar| bar.time);
            bars.dedup_by_key(|bar| bar.time);
            DataPayload::PriceSeries(PriceSeries { symbol, bars })
        }),
        (username(), raw(AccountId), timestamp(), proptest::option::of(email())).prop_map(
            |(username, account, opened_at, email)| {
                DataPayload::UserInfo(UserInfo { username, account, opened_at, email })
            }
        ),
        (raw(Cash::from_raw), proptest::collection::vec(holding, 0..10)).prop_map(
            |(cash, mut holdings)| {
                // As the format promises: each symbol once, sorted.
                holdings.sort_by_key(|h| h.symbol);
                holdings.dedup_by_key(|h| h.symbol);
                DataPayload::Portfolio(Portfolio { cash, holdings })
            }
        ),
        (proptest::collection::vec(entry, 0..10), any::<u64>()).prop_map(|(mut entries, older)| {
            // Oldest interval first, as the format promises.
            entries.sort_by_key(|e| e.interval);
            DataPayload::TransactionHistory { entries, older }
        }),
        proptest::collection::vec(worker, 0..5).prop_map(DataPayload::WorkerList),
    ]
}

pub fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        failure().prop_map(Response::LoginFail),
        session().prop_map(Response::SessionId),
        Just(Response::RegisterSuccess),
        failure().prop_map(Response::RegisterFail),
        fill(Side::Buy).prop_map(Response::PurchaseSuccess),
        failure().prop_map(Response::PurchaseFail),
        fill(Side::Sell).prop_map(Response::SellSuccess),
        failure().prop_map(Response::SellFail),
        state().prop_map(Response::StateSwitchSuccess),
        failure().prop_map(Response::StateSwitchFail),
        payload().prop_map(Response::Data),
        failure().prop_map(Response::DataFail),
        Just(Response::LogoutSuccess),
        failure().prop_map(Response::LogoutFail),
        failure().prop_map(Response::Error),
    ]
}

pub fn control() -> impl Strategy<Value = Control> {
    let bytes = |max| proptest::collection::vec(any::<u8>(), 1..max);
    prop_oneof![
        (any::<u128>(), any::<u16>(), address(), any::<[u8; 32]>()).prop_map(
            |(id, version, address, nonce)| {
                Control::WorkerHello(WorkerHello { worker: WorkerId(id), version, address, nonce })
            }
        ),
        (any::<[u8; 32]>(), bytes(600), bytes(600)).prop_map(
            |(nonce, master_proof, sealed_key)| Control::Challenge {
                nonce,
                master_proof,
                sealed_key
            }
        ),
        bytes(600).prop_map(|signature| Control::HelloProof { signature }),
        Just(Control::LinkAccepted),
        failure().prop_map(Control::LinkRefused),
        any::<u64>().prop_map(|seq| Control::Heartbeat { seq }),
        any::<u64>().prop_map(|seq| Control::HeartbeatAck { seq }),
        (any::<u64>(), ip(), timestamp(), proptest::option::of(session()), request()).prop_map(
            |(relay_id, client_ip, received_at, session, request)| {
                Control::Relay(Box::new(Relay {
                    relay_id,
                    client_ip,
                    received_at,
                    session,
                    request,
                }))
            }
        ),
        (any::<u64>(), response())
            .prop_map(|(relay_id, response)| Control::RelayReply { relay_id, response }),
    ]
}

/// Why a byte stream did not decode, at whichever layer refused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamError {
    Frame(FrameError),
    Reassembly(net::ReassemblyError),
}

/// Parses a complete byte stream into messages, the way a reader does: check, parse,
/// reassemble. Bytes left at the end that are not a complete frame give `Incomplete`.
pub fn messages(mut bytes: &[u8]) -> Result<Vec<Message>, StreamError> {
    let mut reassembler = Reassembler::default();
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = Frame::check(bytes).map_err(StreamError::Frame)?;
        let frame = Frame::parse(&bytes[..len]).map_err(StreamError::Frame)?;
        bytes = &bytes[len..];
        match reassembler.push(frame).map_err(StreamError::Reassembly)? {
            Progress::Partial { .. } => {}
            Progress::Complete(message) => out.push(message),
        }
    }
    if let Some((received, max)) = reassembler.progress() {
        panic!("stream ends after packet {received} of {max}");
    }
    Ok(out)
}

/// The wire bytes of a message split into packets of `packet_data_bytes`.
pub fn wire(message: &Message, packet_data_bytes: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for frame in net::split_payload(message, packet_data_bytes).unwrap() {
        frame.write_to(&mut out);
    }
    out
}
