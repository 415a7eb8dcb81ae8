//! Fuzzes what recovery does with a snapshot's state: `engine::State` from rkyv bytes (as the
//! journal decodes a snapshot once its checksums pass), its digest and `check_invariants`. Nothing
//! may panic. A state that passes its invariants is then used as a recovered one is: an interval
//! of orders drawn from the input is settled over it; the state must still pass its invariants,
//! and replaying the events on a copy of the decoded state must give the live state's digest.
//!
//! Input: one byte `n`, then `n` bytes (at most [`ORDERS_MAX`]) that each draw one order, then
//! the archive. The orders have their own bytes: rkyv puts the archive's root, and so the last
//! interval's numbers, at its end, which would tie the orders to the state.
#![no_main]

use engine::{
    AccountId, ClientOrderId, Engine, IntervalId, Order, OrderId, OrderKind, OrderQueue, Price,
    Qty, Side, State, Symbol, Tick, TickSet, Timestamp, WorkerId,
};
use libfuzzer_sys::fuzz_target;
use rkyv::util::AlignedVec;

/// Orders drawn from the input, at most.
const ORDERS_MAX: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else { return };
    let (order_bytes, archive) = rest.split_at(usize::from(count).min(ORDERS_MAX).min(rest.len()));
    let mut aligned = AlignedVec::<16>::new();
    aligned.extend_from_slice(archive);
    let Ok(state) = rkyv::from_bytes::<State, rkyv::rancor::Error>(&aligned) else { return };
    let _ = state.digest();
    if state.check_invariants().is_err() {
        return;
    }
    let symbols: Vec<Symbol> = state.assets().keys().copied().take(8).collect();
    let ticks: Vec<Tick> = symbols
        .iter()
        .zip(1u64..)
        .map(|(symbol, n)| {
            let price = Price::from_raw(n * 1_234_567);
            Tick {
                symbol: *symbol,
                open: price,
                high: price,
                low: price,
                close: price,
                volume: Qty::ZERO,
                time: Timestamp(0),
            }
        })
        .collect();
    let ticks = TickSet::new(ticks).expect("distinct listed symbols with positive prices");
    let accounts = state.accounts().len() as u64;
    let interval = state.last_interval().map_or(1, |last| last.id.0.saturating_add(1));
    let mut queue = OrderQueue::new();
    for (n, byte) in (1u64..).zip(order_bytes) {
        let pick = u64::from(*byte);
        let symbol = match symbols.len() {
            0 => Symbol::new("NONE").expect("a valid symbol"),
            len => symbols[usize::from(*byte) % len],
        };
        queue.push(Order {
            id: OrderId(n),
            client_id: ClientOrderId(n),
            account: AccountId(pick % (accounts + 2)),
            symbol,
            side: if pick & 1 == 0 { Side::Buy } else { Side::Sell },
            qty: Qty::from_raw(pick.wrapping_mul(1_000_003) << (pick % 40)),
            kind: OrderKind::Market,
            placed_at: Timestamp(i64::from(*byte)),
            worker: WorkerId(0),
        });
    }
    let mut replayed = state.clone();
    let mut engine = Engine::from_state(state);
    let Ok(events) = engine.settle(IntervalId(interval), Timestamp(1), &ticks, &mut queue) else {
        return;
    };
    engine.state().check_invariants().expect("settlement keeps the invariants");
    for event in &events {
        replayed.apply(event).expect("the engine's events apply to the state they came from");
    }
    assert_eq!(replayed.digest(), engine.digest(), "replay gives the live state");
});
