//! Property tests against a simple reference model written independently of the engine:
//! (a) folding the emitted events from scratch gives the same state and digest as the live engine,
//! (b) cash and every holding stay non-negative (checked in the model's signed arithmetic),
//! (c) for each account, cash change equals the signed sum of fills, exactly, in integers,
//! (d) the same input run twice gives byte-identical events,
//! and every outcome (fill amount or reject reason) is the one the model predicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::*;
use engine::{
    AccountId, Engine, Event, IntervalId, Order, OrderId, OrderKind, OrderQueue, Price, Qty,
    RejectReason, SCALE, Side, Tick, TickSet, Timestamp, WorkerId,
};
use proptest::prelude::*;

const SYMBOLS: [&str; 4] = ["A", "B", "C", "UNLISTED"];
const LISTED: usize = 3;
const ACCOUNTS: usize = 4;

#[derive(Debug, Clone)]
struct Interval {
    prices: Vec<(usize, u64)>,
    orders: Vec<(u64, bool, usize, u64, i64, u128)>,
}

fn raw_qty() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => (1u64..=50).prop_map(|u| u * SCALE),
        2 => 0u64..=3 * SCALE,
        1 => Just(0),
        1 => Just(1_000_000_000 * SCALE + 1),
        1 => (900_000_000u64..=1_000_000_000).prop_map(|u| u * SCALE),
    ]
}

fn raw_price() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 1u64..=2_000 * SCALE,
        1 => 1u64..=100,
        1 => (u64::MAX / 4)..=u64::MAX,
    ]
}

fn interval() -> impl Strategy<Value = Interval> {
    (
        proptest::collection::vec((0..SYMBOLS.len(), raw_price()), 0..4),
        proptest::collection::vec(
            (
                0..=ACCOUNTS as u64 + 1,
                any::<bool>(),
                0..SYMBOLS.len(),
                raw_qty(),
                0i64..4,
                0u128..3,
            ),
            0..16,
        ),
    )
        .prop_map(|(prices, orders)| Interval { prices, orders })
}

fn scenario() -> impl Strategy<Value = (Vec<u64>, Vec<Interval>)> {
    (
        proptest::collection::vec(
            prop_oneof![4 => 0u64..=100_000 * SCALE, 1 => Just(u64::MAX - 5)],
            ACCOUNTS,
        ),
        proptest::collection::vec(interval(), 1..8),
    )
}

/// The reference model: signed 128-bit balances and a direct reading of the documented rules.
#[derive(Debug, Clone, Default)]
struct Model {
    cash: Vec<i128>,
    held: BTreeMap<(u64, usize), (i128, i128)>,
}

impl Model {
    fn outcome(&mut self, o: &Order, sym: usize, price: Option<u64>) -> Result<i128, RejectReason> {
        let account = o.account.0;
        if account == 0 || account > self.cash.len() as u64 {
            return Err(RejectReason::UnknownAccount);
        }
        let q = i128::from(o.qty.raw());
        if q == 0 {
            return Err(RejectReason::ZeroQuantity);
        }
        if q > 1_000_000_000 * i128::from(SCALE) {
            return Err(RejectReason::QuantityTooLarge);
        }
        if sym >= LISTED {
            return Err(RejectReason::UnknownSymbol);
        }
        let p = i128::from(price.ok_or(RejectReason::NoPrice)?);
        let scale = i128::from(SCALE);
        let max = i128::from(u64::MAX);
        let idx = usize::try_from(account - 1).unwrap();
        let (h, basis) = self.held.get(&(account, sym)).copied().unwrap_or((0, 0));
        match o.side {
            Side::Buy => {
                let amount = (p * q + scale - 1) / scale;
                if amount > max {
                    return Err(RejectReason::Overflow);
                }
                if amount > self.cash[idx] {
                    return Err(RejectReason::InsufficientCash);
                }
                if h + q > max || basis + amount > max {
                    return Err(RejectReason::Overflow);
                }
                self.cash[idx] -= amount;
                self.held.insert((account, sym), (h + q, basis + amount));
                Ok(amount)
            }
            Side::Sell => {
                let amount = p * q / scale;
                if amount > max {
                    return Err(RejectReason::Overflow);
                }
                if q > h {
                    return Err(RejectReason::InsufficientHoldings);
                }
                if self.cash[idx] + amount > max {
                    return Err(RejectReason::Overflow);
                }
                self.cash[idx] += amount;
                let left = h - q;
                let removed = if left == 0 { basis } else { basis * q / h };
                if left == 0 {
                    self.held.remove(&(account, sym));
                } else {
                    self.held.insert((account, sym), (left, basis - removed));
                }
                Ok(amount)
            }
        }
    }
}

fn run(initial: &[u64], intervals: &[Interval]) -> (Engine, Vec<Event>) {
    let mut engine = Engine::new();
    let mut events = Vec::new();
    for s in &SYMBOLS[..LISTED] {
        events.push(engine.list_asset(sym(s), Timestamp(0)).unwrap());
    }
    for (i, c) in initial.iter().enumerate() {
        events.push(
            engine
                .open_account(engine::OpenAccount {
                    username: engine::Username::new(&format!("u{i}")).unwrap(),
                    email: engine::Email::new(&format!("u{i}@example.com")).unwrap(),
                    password_hash: engine::PasswordHash::new("h").unwrap(),
                    initial_cash: engine::Cash::from_raw(*c),
                    at: Timestamp(0),
                })
                .unwrap(),
        );
    }
    let mut next_id = 1;
    for (n, iv) in intervals.iter().enumerate() {
        let mut set: BTreeMap<usize, u64> = BTreeMap::new();
        for (s, p) in &iv.prices {
            set.insert(*s, *p);
        }
        let ticks = TickSet::new(
            set.iter()
                .map(|(s, p)| {
                    let p = Price::from_raw(*p);
                    Tick {
                        symbol: sym(SYMBOLS[*s]),
                        open: p,
                        high: p,
                        low: p,
                        close: p,
                        volume: Qty::ZERO,
                        time: Timestamp(n as i64),
                    }
                })
                .collect(),
        )
        .unwrap();
        let mut queue = OrderQueue::new();
        for (account, buy, s, q, at, worker) in &iv.orders {
            queue.push(Order {
                id: OrderId(next_id),
                client_id: engine::ClientOrderId(next_id),
                account: AccountId(*account),
                symbol: sym(SYMBOLS[*s]),
                side: if *buy { Side::Buy } else { Side::Sell },
                qty: Qty::from_raw(*q),
                kind: OrderKind::Market,
                placed_at: Timestamp(*at),
                worker: WorkerId(*worker),
            });
            next_id += 1;
        }
        events.extend(
            engine
                .settle(IntervalId(n as u64 + 1), Timestamp(n as i64), &ticks, &mut queue)
                .unwrap(),
        );
        // Between intervals, now and then, a login rehashes a password.
        if n % 2 == 1 && !initial.is_empty() {
            let account = AccountId(1 + (n % initial.len()) as u64);
            let hash = engine::PasswordHash::new(&format!("h{n}")).unwrap();
            events.push(engine.rehash_password(account, hash, Timestamp(n as i64)).unwrap());
        }
    }
    (engine, events)
}

fn symbol_index(o: &Order) -> usize {
    SYMBOLS.iter().position(|s| *s == o.symbol.as_str()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_the_model_and_its_own_fold((initial, intervals) in scenario()) {
        let (live, events) = run(&initial, &intervals);

        // (a) The fold of the events from scratch is the live state, digest for digest.
        let mut folded = Engine::new();
        for e in &events {
            folded.apply(e).unwrap();
        }
        prop_assert_eq!(folded.state(), live.state());
        prop_assert_eq!(folded.digest(), live.digest());
        live.state().check_invariants().unwrap();

        // Each interval's outcomes come by account, each account's in queue order: the order
        // the model replays them in below, so a wrong order within an account would also
        // disagree with the model.
        let mut last_key = None;
        for e in &events {
            if matches!(e, Event::IntervalSettled(_)) {
                last_key = None;
            }
            let Some(order) = e.outcome_order() else { continue };
            let key = (order.account, order.queue_key());
            prop_assert!(last_key < Some(key), "{:?} after {:?}", key, last_key);
            last_key = Some(key);
        }

        // The model predicts every outcome; (b) the balances the engine's own events give,
        // cash and holdings summed fill by fill in event order, never go negative.
        let mut model = Model { cash: initial.iter().map(|c| i128::from(*c)).collect(), ..Model::default() };
        let mut prices: BTreeMap<usize, u64> = BTreeMap::new();
        let mut fills: BTreeMap<u64, i128> = BTreeMap::new();
        let mut held_by_events: BTreeMap<(u64, usize), i128> = BTreeMap::new();
        for e in &events {
            match e {
                Event::IntervalSettled(s) => {
                    prices = s.ticks.iter().map(|t| (SYMBOLS.iter().position(|x| *x == t.symbol.as_str()).unwrap(), t.close.raw())).collect();
                }
                Event::OrderFilled(f) => {
                    let s = symbol_index(&f.order);
                    prop_assert_eq!(model.outcome(&f.order, s, prices.get(&s).copied()), Ok(i128::from(f.amount.raw())));
                    let signed = match f.order.side { Side::Buy => -i128::from(f.amount.raw()), Side::Sell => i128::from(f.amount.raw()) };
                    let cash = fills.entry(f.order.account.0).or_default();
                    *cash += signed;
                    let account = usize::try_from(f.order.account.0 - 1).unwrap();
                    prop_assert!(i128::from(initial[account]) + *cash >= 0, "cash below zero at {:?}", f.order.id);
                    let qty = i128::from(f.order.qty.raw());
                    let held = held_by_events.entry((f.order.account.0, s)).or_default();
                    *held += match f.order.side { Side::Buy => qty, Side::Sell => -qty };
                    prop_assert!(*held >= 0, "holding below zero at {:?}", f.order.id);
                }
                Event::OrderRejected(r) => {
                    let s = symbol_index(&r.order);
                    prop_assert_eq!(model.outcome(&r.order, s, prices.get(&s).copied()), Err(r.reason));
                }
                _ => {}
            }
        }
        for (i, account) in live.state().accounts().iter().enumerate() {
            prop_assert_eq!(i128::from(account.cash.raw()), model.cash[i]);
            // (c) Cash change equals the signed sum of fills, exactly.
            let change = i128::from(account.cash.raw()) - i128::from(initial[i]);
            prop_assert_eq!(change, fills.get(&account.id.0).copied().unwrap_or(0));
            for (symbol, h) in &account.holdings {
                let s = SYMBOLS.iter().position(|x| *x == symbol.as_str()).unwrap();
                prop_assert_eq!(Some(&(i128::from(h.qty.raw()), i128::from(h.cost_basis.raw()))), model.held.get(&(account.id.0, s)));
            }
        }

        // (d) The same input twice gives byte-identical events.
        let (_, again) = run(&initial, &intervals);
        prop_assert_eq!(encode_all(&events), encode_all(&again));
    }

    /// Replay is the audit's defence: any two outcomes of one account in one interval put
    /// in each other's place, or the later replaced by the earlier (one order's outcome
    /// twice), is refused, whatever their balances.
    #[test]
    fn replay_refuses_an_accounts_outcomes_swapped_or_repeated(
        (initial, intervals) in scenario(),
        pick in any::<prop::sample::Index>(),
    ) {
        let (_, events) = run(&initial, &intervals);
        let mut pairs = Vec::new();
        let mut header = 0;
        for (j, event) in events.iter().enumerate() {
            if matches!(event, Event::IntervalSettled(_)) {
                header = j;
                continue;
            }
            let Some(later) = event.outcome_order() else { continue };
            let earlier = events.iter().enumerate().take(j).skip(header + 1);
            for (i, _) in earlier.filter(|(_, e)| {
                e.outcome_order().is_some_and(|o| o.account == later.account)
            }) {
                pairs.push((i, j));
            }
        }
        prop_assume!(!pairs.is_empty());
        let (i, j) = pairs[pick.index(pairs.len())];
        let fold = |events: &[Event]| {
            let mut folded = Engine::new();
            events.iter().try_for_each(|e| folded.apply(e))
        };
        prop_assert!(fold(&events).is_ok());
        let mut swapped = events.clone();
        swapped.swap(i, j);
        prop_assert!(fold(&swapped).is_err(), "outcomes {} and {} swapped", i, j);
        let mut twice = events.clone();
        twice[j] = events[i].clone();
        prop_assert!(fold(&twice).is_err(), "outcome {} repeated at {}", i, j);
    }

    #[test]
    fn decimal_text_round_trips(raw in any::<u64>()) {
        let price = Price::from_raw(raw);
        prop_assert_eq!(Price::parse(&price.to_string()), Ok(price));
    }
}

/// Each outcome's account and queue key, in the events' order: settlement gives them sorted.
fn outcome_keys(events: &[Event]) -> Vec<(AccountId, (Timestamp, engine::WorkerId, OrderId))> {
    let orders = events.iter().filter_map(Event::outcome_order);
    orders.map(|order| (order.account, order.queue_key())).collect()
}

/// Folds one interval's events into `folded` and checks it is the live engine, digest and
/// state, and that the live state keeps its invariants.
fn fold_to_live(folded: &mut Engine, events: &[Event], live: &Engine, interval: u64) {
    for e in events {
        folded.apply(e).unwrap();
    }
    assert_eq!(folded.digest(), live.digest(), "interval {interval}");
    assert_eq!(folded.state(), live.state(), "interval {interval}");
    live.state().check_invariants().unwrap();
}

/// The master's usual interval: few orders next to many accounts (grouped by a sort, not a
/// count per account) and many symbols with few orders per account (each account's changed
/// holdings sorted, not found by walking every tick). Folding the events gives the live state,
/// the invariants hold, and outcomes come by account, then in queue order.
#[test]
fn few_orders_over_many_accounts_and_symbols_fold_to_the_live_state() {
    use engine::workload::{self, WorkloadShape, XorShift};
    let shape = WorkloadShape { accounts: 3_000, symbols: 150, orders: 500, seed: 11 };
    let mut load = workload::build(shape).unwrap();
    let mut folded = load.engine.clone();
    let mut rng = XorShift::new(5);
    let mut next_id = shape.orders + 1;
    for interval in 1..=6u64 {
        if interval > 1 {
            workload::queue_more(&mut load, shape, &mut rng, next_id, 400);
            next_id += 400;
        }
        let at = Timestamp(i64::try_from(interval).unwrap() * 1_000);
        let events = workload::settle_as(&mut load, IntervalId(interval), at).unwrap();
        let keys = outcome_keys(&events);
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "interval {interval}: out of order");
        assert!(events.iter().any(|e| matches!(e, Event::OrderFilled(_))));
        fold_to_live(&mut folded, &events, &load.engine, interval);
    }
}

/// Settlement applies outcomes account by account; over several intervals of a synthetic
/// workload (so later intervals start from existing holdings and histories), folding the
/// returned events gives the live state, the invariants hold, and outcomes come by account and
/// then in queue order, one per queued order. All settle in the memory of one queue, larger and
/// smaller than the interval before.
#[test]
fn workload_settlements_fold_to_the_live_state() {
    use engine::workload::{self, WorkloadShape, XorShift};
    let shape = WorkloadShape { accounts: 60, symbols: 9, orders: 4_000, seed: 7 };
    let mut load = workload::build(shape).unwrap();
    let mut folded = load.engine.clone();
    let mut rng = XorShift::new(99);
    let mut next_id = shape.orders + 1;
    for (interval, orders) in [(1u64, shape.orders), (2, 40_000), (3, 4_000), (4, 17_000)] {
        let first_id = if interval == 1 { 1 } else { next_id };
        if interval > 1 {
            workload::queue_more(&mut load, shape, &mut rng, next_id, orders);
            next_id += orders;
        }
        let at = Timestamp(i64::try_from(interval).unwrap() * 1_000);
        let events = workload::settle_as(&mut load, IntervalId(interval), at).unwrap();
        assert_eq!(events.len() as u64, orders + 1);
        let keys = outcome_keys(&events);
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "outcomes not by account, then in queue order"
        );
        let mut ids: Vec<u64> = keys.iter().map(|(_, (_, _, id))| id.0).collect();
        ids.sort_unstable();
        let queued: Vec<u64> = (first_id..first_id + orders).collect();
        assert_eq!(ids, queued, "interval {interval}: not one outcome per queued order");
        fold_to_live(&mut folded, &events, &load.engine, interval);
    }
}

/// `settle_into` gives exactly `settle`'s events and state, over several intervals, whatever
/// the vector held before (more events, fewer, none), and leaves both untouched on a refusal.
#[test]
fn settle_into_gives_settle_events_over_any_old_contents() {
    use engine::workload::{self, WorkloadShape, XorShift};
    let shape = WorkloadShape { accounts: 40, symbols: 7, orders: 2_000, seed: 11 };
    let mut by_settle = workload::build(shape).unwrap();
    let mut by_into = by_settle.clone();
    let mut rng_settle = XorShift::new(5);
    let mut rng_into = XorShift::new(5);
    let mut buffer: Vec<Event> = Vec::new();
    let mut next_id = shape.orders + 1;
    // Interval sizes: the same, then more orders than the buffer holds, then fewer.
    for (interval, count) in [(1u64, 0u64), (2, 2_000), (3, 3_500), (4, 300), (5, 0)] {
        if count > 0 {
            workload::queue_more(&mut by_settle, shape, &mut rng_settle, next_id, count);
            workload::queue_more(&mut by_into, shape, &mut rng_into, next_id, count);
            next_id += count;
        }
        let at = Timestamp(i64::try_from(interval).unwrap());
        let expected = workload::settle_as(&mut by_settle, IntervalId(interval), at).unwrap();
        by_into
            .engine
            .settle_into(IntervalId(interval), at, &by_into.ticks, &mut by_into.queue, &mut buffer)
            .unwrap();
        assert_eq!(buffer, expected, "interval {interval}");
        assert_eq!(encode_all(&buffer), encode_all(&expected), "interval {interval}");
        assert!(by_into.queue.is_empty());
        assert_eq!(by_into.engine.digest(), by_settle.engine.digest(), "interval {interval}");
    }
    // A refused interval changes neither the vector nor the queue.
    let before = buffer.clone();
    workload::queue_more(&mut by_into, shape, &mut rng_into, next_id, 10);
    let refused = by_into.engine.settle_into(
        IntervalId(5),
        Timestamp(9),
        &by_into.ticks,
        &mut by_into.queue,
        &mut buffer,
    );
    assert!(refused.is_err());
    assert_eq!(buffer, before);
    assert_eq!(by_into.queue.len(), 10);
}
