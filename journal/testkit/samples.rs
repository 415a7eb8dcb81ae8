//! Hand-made events shared by the encoding tests (`tests/payload.rs`, `tests/batch.rs`): a
//! typical fill, and rejections with extreme values.
#![allow(clippy::unwrap_used)]

use engine::{
    AccountId, Cash, ClientOrderId, Event, Fill, IntervalId, Order, OrderId, OrderKind, Price, Qty,
    RejectReason, Rejection, Side, Symbol, Timestamp, WorkerId,
};

/// An MSFT order of `qty` (raw) on `side`, with realistic ids, time and worker.
pub fn order(qty: u64, side: Side) -> Order {
    Order {
        id: OrderId(1_234_567),
        client_id: ClientOrderId(89),
        account: AccountId(4_321),
        symbol: Symbol::new("MSFT").unwrap(),
        side,
        qty: Qty::from_raw(qty),
        kind: OrderKind::Market,
        placed_at: Timestamp(1_763_800_000_123_456),
        worker: WorkerId(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
    }
}

/// A fill of 10 MSFT at 412.34: 77 bytes in format 2, 38 in format 3.
pub fn typical_fill() -> Event {
    Event::OrderFilled(Fill {
        order: order(10 * engine::SCALE, Side::Buy),
        interval: IntervalId(52_000),
        price: Price::from_raw(41_234_000_000),
        tick_time: Timestamp(1_763_800_000_000_000),
        amount: Cash::from_raw(412_340_000_000),
        cash_after: Cash::from_raw(587_660_000_000),
        holding_after: Qty::from_raw(10 * engine::SCALE),
    })
}

/// Two rejections on `side` whose every number is `raw` (or its complement), one priced, one
/// not, with the earliest and the latest times and the largest worker.
pub fn extreme_rejections(raw: u64, side: Side) -> [Event; 2] {
    let mut o = order(raw, side);
    o.id = OrderId(raw);
    o.placed_at = Timestamp(i64::MIN);
    o.worker = WorkerId(u128::MAX);
    let priced = Event::OrderRejected(Rejection {
        order: o,
        interval: IntervalId(raw),
        reason: RejectReason::Overflow,
        price_seen: Some(Price::from_raw(raw)),
        cash_seen: Cash::from_raw(raw),
        holding_seen: Qty::from_raw(u64::MAX - raw),
    });
    o.placed_at = Timestamp(i64::MAX);
    let unpriced = Event::OrderRejected(Rejection {
        order: o,
        interval: IntervalId(raw),
        reason: RejectReason::UnknownSymbol,
        price_seen: None,
        cash_seen: Cash::ZERO,
        holding_seen: Qty::ZERO,
    });
    [priced, unpriced]
}
