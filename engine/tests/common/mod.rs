//! Helpers shared by the engine's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use engine::{
    AccountId, Cash, Email, Engine, Event, IntervalId, OpenAccount, Order, OrderId, OrderKind,
    PasswordHash, Price, Qty, Side, Symbol, Tick, TickSet, Timestamp, Username, WorkerId,
};

pub fn sym(s: &str) -> Symbol {
    Symbol::new(s).unwrap()
}

pub fn cash(s: &str) -> Cash {
    Cash::parse(s).unwrap()
}

pub fn qty(s: &str) -> Qty {
    Qty::parse(s).unwrap()
}

pub fn tick(symbol: &str, close: &str) -> Tick {
    let p = Price::parse(close).unwrap();
    Tick {
        symbol: sym(symbol),
        open: p,
        high: p,
        low: p,
        close: p,
        volume: Qty::ZERO,
        time: Timestamp(7),
    }
}

pub fn ticks(list: &[(&str, &str)]) -> TickSet {
    TickSet::new(list.iter().map(|(s, p)| tick(s, p)).collect()).unwrap()
}

/// An engine with the given symbols listed and accounts `u1..=uN` opened with `initial` cash each.
pub fn engine_with(symbols: &[&str], accounts: usize, initial: &str) -> Engine {
    let mut engine = Engine::new();
    for s in symbols {
        engine.list_asset(sym(s), Timestamp(0)).unwrap();
    }
    for i in 1..=accounts {
        engine
            .open_account(OpenAccount {
                username: Username::new(&format!("u{i}")).unwrap(),
                email: Email::new(&format!("u{i}@example.com")).unwrap(),
                password_hash: PasswordHash::new("$argon2id$test").unwrap(),
                initial_cash: cash(initial),
                at: Timestamp(0),
            })
            .unwrap();
    }
    engine
}

pub fn order(id: u64, account: u64, side: Side, symbol: &str, q: &str, at: i64) -> Order {
    Order {
        id: OrderId(id),
        client_id: engine::ClientOrderId(id),
        account: AccountId(account),
        symbol: sym(symbol),
        side,
        qty: qty(q),
        kind: OrderKind::Market,
        placed_at: Timestamp(at),
        worker: WorkerId(0),
    }
}

/// Settles `orders` in interval `interval` and returns the outcome events (without the header).
pub fn settle(engine: &mut Engine, interval: u64, set: &TickSet, orders: Vec<Order>) -> Vec<Event> {
    let mut queue = engine::OrderQueue::new();
    for o in orders {
        queue.push(o);
    }
    let mut events = engine.settle(IntervalId(interval), Timestamp(1000), set, &mut queue).unwrap();
    assert!(matches!(events.first(), Some(Event::IntervalSettled(_))));
    events.remove(0);
    events
}

/// Encodes events with rkyv, each length-prefixed, for byte comparisons.
pub fn encode_all(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(e).unwrap();
        out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}
