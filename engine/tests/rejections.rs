//! Every reject reason has a test that produces it, and settlement order rules are pinned.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use engine::{
    AccountId, CommandError, Event, IntervalId, OrderQueue, RejectReason, Side, Timestamp, WorkerId,
};

fn reason_of(event: &Event) -> Option<RejectReason> {
    match event {
        Event::OrderRejected(r) => Some(r.reason),
        _ => None,
    }
}

/// Settles one order in the engine's next interval.
fn single(engine: &mut engine::Engine, set: &engine::TickSet, o: engine::Order) -> Event {
    let next = engine.state().last_interval().map_or(1, |l| l.id.0 + 1);
    let mut events = settle(engine, next, set, vec![o]);
    assert_eq!(events.len(), 1);
    events.remove(0)
}

#[test]
fn unknown_account() {
    let mut e = engine_with(&["AAPL"], 1, "1000");
    let ev = single(&mut e, &ticks(&[("AAPL", "10")]), order(1, 2, Side::Buy, "AAPL", "1", 0));
    assert_eq!(reason_of(&ev), Some(RejectReason::UnknownAccount));
    let ev = single(
        &mut engine_with(&["AAPL"], 1, "1"),
        &ticks(&[]),
        order(1, 0, Side::Buy, "AAPL", "1", 0),
    );
    assert_eq!(reason_of(&ev), Some(RejectReason::UnknownAccount));
}

#[test]
fn zero_quantity() {
    let mut e = engine_with(&["AAPL"], 1, "1000");
    let ev = single(&mut e, &ticks(&[("AAPL", "10")]), order(1, 1, Side::Buy, "AAPL", "0", 0));
    assert_eq!(reason_of(&ev), Some(RejectReason::ZeroQuantity));
}

#[test]
fn quantity_too_large() {
    let mut e = engine_with(&["AAPL"], 1, "1000");
    let set = ticks(&[("AAPL", "0.00000001")]);
    let ev = single(&mut e, &set, order(1, 1, Side::Buy, "AAPL", "1000000000.00000001", 0));
    assert_eq!(reason_of(&ev), Some(RejectReason::QuantityTooLarge));
    // Exactly the limit is allowed (and here affordable: 10 cash).
    let ev = single(&mut e, &set, order(2, 1, Side::Buy, "AAPL", "1000000000", 0));
    assert!(matches!(ev, Event::OrderFilled(_)), "{ev:?}");
}

#[test]
fn unknown_symbol() {
    let mut e = engine_with(&["AAPL"], 1, "1000");
    let ev = single(
        &mut e,
        &ticks(&[("AAPL", "10"), ("TSLA", "5")]),
        order(1, 1, Side::Buy, "TSLA", "1", 0),
    );
    assert_eq!(reason_of(&ev), Some(RejectReason::UnknownSymbol));
}

#[test]
fn no_price_this_interval() {
    let mut e = engine_with(&["AAPL", "FB"], 1, "1000");
    let ev = single(&mut e, &ticks(&[("AAPL", "10")]), order(1, 1, Side::Buy, "FB", "1", 0));
    assert_eq!(reason_of(&ev), Some(RejectReason::NoPrice));
    let Event::OrderRejected(r) = ev else { unreachable!() };
    assert_eq!(r.price_seen, None);
    assert_eq!(r.cash_seen, cash("1000"));
}

#[test]
fn insufficient_cash() {
    let mut e = engine_with(&["AAPL"], 1, "100");
    let ev =
        single(&mut e, &ticks(&[("AAPL", "10.00000001")]), order(1, 1, Side::Buy, "AAPL", "10", 0));
    assert_eq!(reason_of(&ev), Some(RejectReason::InsufficientCash));
    // Exactly affordable fills and leaves zero.
    let ev = single(&mut e, &ticks(&[("AAPL", "10")]), order(2, 1, Side::Buy, "AAPL", "10", 0));
    let Event::OrderFilled(f) = ev else { panic!("{ev:?}") };
    assert_eq!(f.cash_after, engine::Cash::ZERO);
}

#[test]
fn insufficient_holdings() {
    let mut e = engine_with(&["AAPL"], 1, "100");
    let set = ticks(&[("AAPL", "10")]);
    let ev = single(&mut e, &set, order(1, 1, Side::Sell, "AAPL", "1", 0));
    assert_eq!(reason_of(&ev), Some(RejectReason::InsufficientHoldings));
    single(&mut e, &set, order(2, 1, Side::Buy, "AAPL", "2", 0));
    let ev = single(&mut e, &set, order(3, 1, Side::Sell, "AAPL", "2.00000001", 0));
    assert_eq!(reason_of(&ev), Some(RejectReason::InsufficientHoldings));
    let ev = single(&mut e, &set, order(4, 1, Side::Sell, "AAPL", "2", 0));
    assert!(matches!(ev, Event::OrderFilled(_)), "{ev:?}");
}

#[test]
fn arithmetic_overflow() {
    // 1e9 units at the largest price does not fit in 64 bits of 1e-8 cash units.
    let mut e = engine_with(&["BIG"], 1, "1000");
    let set = ticks(&[("BIG", "184467440737")]);
    let ev = single(&mut e, &set, order(1, 1, Side::Buy, "BIG", "1000000000", 0));
    assert_eq!(reason_of(&ev), Some(RejectReason::Overflow));
    // A sell whose proceeds would overflow the account's cash.
    let mut rich = engine_with(&["A"], 1, "184467440737");
    let fill =
        single(&mut rich, &ticks(&[("A", "0.00000001")]), order(1, 1, Side::Buy, "A", "1", 0));
    assert!(matches!(fill, Event::OrderFilled(_)));
    let ev = settle(
        &mut rich,
        2,
        &ticks(&[("A", "184467440737")]),
        vec![order(2, 1, Side::Sell, "A", "1", 0)],
    );
    assert_eq!(reason_of(&ev[0]), Some(RejectReason::Overflow));
}

#[test]
fn every_reason_is_covered_and_codes_are_stable() {
    let codes: Vec<(u16, &str)> =
        RejectReason::ALL.iter().map(|r| (r.code(), r.as_str())).collect();
    assert_eq!(
        codes,
        [
            (1, "unknown_account"),
            (2, "zero_quantity"),
            (3, "quantity_too_large"),
            (4, "unknown_symbol"),
            (5, "no_price"),
            (6, "insufficient_cash"),
            (7, "insufficient_holdings"),
            (8, "overflow"),
        ]
    );
    for r in RejectReason::ALL {
        assert_eq!(RejectReason::from_code(r.code()), Some(r));
    }
    assert_eq!(RejectReason::from_code(0), None);
    assert_eq!(RejectReason::from_code(9), None);
}

#[test]
fn a_sell_earlier_in_the_queue_funds_a_later_buy() {
    let mut e = engine_with(&["AAPL", "IBM"], 1, "100");
    let set = ticks(&[("AAPL", "10"), ("IBM", "50")]);
    settle(&mut e, 1, &set, vec![order(1, 1, Side::Buy, "AAPL", "10", 0)]);
    assert_eq!(e.state().account(AccountId(1)).unwrap().cash, engine::Cash::ZERO);
    // Pushed buy first, but the sell has the earlier worker timestamp: it settles first.
    let events = settle(
        &mut e,
        2,
        &set,
        vec![order(3, 1, Side::Buy, "IBM", "2", 20), order(2, 1, Side::Sell, "AAPL", "10", 10)],
    );
    assert!(matches!(&events[0], Event::OrderFilled(f) if f.order.id.0 == 2));
    assert!(matches!(&events[1], Event::OrderFilled(f) if f.order.id.0 == 3));
    // The other way round, the buy finds no cash.
    let mut e = engine_with(&["AAPL", "IBM"], 1, "100");
    settle(&mut e, 1, &set, vec![order(1, 1, Side::Buy, "AAPL", "10", 0)]);
    let events = settle(
        &mut e,
        2,
        &set,
        vec![order(2, 1, Side::Sell, "AAPL", "10", 20), order(3, 1, Side::Buy, "IBM", "2", 10)],
    );
    assert_eq!(reason_of(&events[0]), Some(RejectReason::InsufficientCash));
    assert!(matches!(&events[1], Event::OrderFilled(_)));
}

#[test]
fn queue_order_is_timestamp_then_worker_then_arrival() {
    let mut e = engine_with(&["AAPL"], 1, "1000");
    let mut a = order(5, 1, Side::Buy, "AAPL", "1", 100);
    a.worker = WorkerId(2);
    let mut b = order(9, 1, Side::Buy, "AAPL", "1", 100);
    b.worker = WorkerId(1);
    let c = order(7, 1, Side::Buy, "AAPL", "1", 99);
    let mut d = order(3, 1, Side::Buy, "AAPL", "1", 100);
    d.worker = WorkerId(2);
    let events = settle(&mut e, 1, &ticks(&[("AAPL", "1")]), vec![a, b, c, d]);
    let ids: Vec<u64> = events
        .iter()
        .map(|ev| match ev {
            Event::OrderFilled(f) => f.order.id.0,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, [7, 9, 3, 5]);
}

/// An interval's outcomes come by account number (account 0 and numbers past the last account,
/// which have none, in their places), each account's in queue order, whatever order the orders
/// were queued in; a sell queued before a buy of the same account still funds it.
#[test]
fn outcomes_come_by_account_then_in_queue_order() {
    let mut e = engine_with(&["AAPL"], 2, "10");
    let set = ticks(&[("AAPL", "10")]);
    // Account 1 buys one share with all its cash.
    settle(&mut e, 1, &set, vec![order(1, 1, Side::Buy, "AAPL", "1", 0)]);
    let events = settle(
        &mut e,
        2,
        &set,
        vec![
            order(10, 9, Side::Buy, "AAPL", "1", 5),
            order(11, 2, Side::Buy, "AAPL", "1", 7),
            order(12, 1, Side::Buy, "AAPL", "1", 9),
            order(13, 0, Side::Buy, "AAPL", "1", 8),
            order(14, 2, Side::Sell, "AAPL", "1", 8),
            order(15, 1, Side::Sell, "AAPL", "1", 3),
            order(16, 3, Side::Buy, "AAPL", "1", 1),
            order(17, 2, Side::Buy, "AAPL", "1", 6),
            order(18, 9, Side::Buy, "AAPL", "1", 2),
            order(19, 0, Side::Buy, "AAPL", "1", 4),
            order(20, 1, Side::Buy, "AAPL", "1", 10),
        ],
    );
    let outcomes: Vec<(u64, u64, Option<RejectReason>)> = events
        .iter()
        .map(|ev| match ev {
            Event::OrderFilled(f) => (f.order.account.0, f.order.id.0, None),
            Event::OrderRejected(r) => (r.order.account.0, r.order.id.0, Some(r.reason)),
            other => panic!("{other:?}"),
        })
        .collect();
    use RejectReason::{InsufficientCash, UnknownAccount};
    assert_eq!(
        outcomes,
        [
            (0, 19, Some(UnknownAccount)),
            (0, 13, Some(UnknownAccount)),
            // Account 1 sells its share first (at 3), which pays for the buy at 9; the buy at
            // 10 finds no cash left.
            (1, 15, None),
            (1, 12, None),
            (1, 20, Some(InsufficientCash)),
            // Account 2 buys (at 6) with its 10, finds nothing left at 7, sells at 8.
            (2, 17, None),
            (2, 11, Some(InsufficientCash)),
            (2, 14, None),
            (3, 16, Some(UnknownAccount)),
            (9, 18, Some(UnknownAccount)),
            (9, 10, Some(UnknownAccount)),
        ]
    );
}

#[test]
fn intervals_must_increase_and_usernames_are_unique() {
    let mut e = engine_with(&["AAPL"], 1, "1000");
    settle(&mut e, 5, &ticks(&[]), vec![]);
    let err = e.settle(IntervalId(5), Timestamp(0), &ticks(&[]), &mut OrderQueue::new());
    assert_eq!(
        err,
        Err(CommandError::IntervalNotAfterLast { last: IntervalId(5), got: IntervalId(5) })
    );
    let err = e.open_account(engine::OpenAccount {
        username: engine::Username::new("u1").unwrap(),
        email: engine::Email::new("x@y.zz").unwrap(),
        password_hash: engine::PasswordHash::new("h").unwrap(),
        initial_cash: cash("1"),
        at: Timestamp(0),
    });
    assert!(matches!(err, Err(CommandError::UsernameTaken(_))));
    assert!(matches!(
        e.list_asset(sym("AAPL"), Timestamp(0)),
        Err(CommandError::AssetAlreadyListed(_))
    ));
}

/// A state left inside an interval (replayed to a point between its outcomes, or restored from
/// a damaged snapshot) cannot settle another: an error, with every order still queued for the
/// caller to answer, and nothing changed. Found by the `snapshot` fuzz target: settlement used
/// to drop the queue without an outcome.
#[test]
fn no_interval_follows_an_incomplete_one() {
    let mut e = engine_with(&["AAPL"], 1, "1000");
    e.apply(&Event::IntervalSettled(engine::IntervalSettled {
        interval: IntervalId(3),
        at: Timestamp(0),
        ticks: vec![],
        orders: 2,
    }))
    .unwrap();
    let digest = e.digest();
    let mut queue = OrderQueue::new();
    queue.push(order(1, 1, Side::Buy, "AAPL", "1", 0));
    // The last interval's events, as a master keeps them between intervals.
    let kept =
        vec![Event::AssetListed(engine::AssetListed { symbol: sym("MSFT"), at: Timestamp(9) })];
    let mut events = kept.clone();
    let err = e.settle_into(
        IntervalId(4),
        Timestamp(1),
        &ticks(&[("AAPL", "1")]),
        &mut queue,
        &mut events,
    );
    assert_eq!(err, Err(CommandError::IntervalIncomplete(IntervalId(3))));
    assert_eq!(queue.len(), 1);
    assert_eq!(events, kept);
    assert_eq!(e.digest(), digest);
}

#[test]
fn fills_record_history_and_cost_basis() {
    let mut e = engine_with(&["AAPL"], 1, "1000");
    settle(&mut e, 1, &ticks(&[("AAPL", "10")]), vec![order(1, 1, Side::Buy, "AAPL", "3", 0)]);
    settle(&mut e, 2, &ticks(&[("AAPL", "20")]), vec![order(2, 1, Side::Sell, "AAPL", "1", 0)]);
    let account = e.state().account(AccountId(1)).unwrap();
    assert_eq!(account.cash, cash("990"));
    let holding = account.holdings[&sym("AAPL")];
    assert_eq!(holding.qty, qty("2"));
    assert_eq!(holding.cost_basis, cash("20"));
    assert_eq!(account.history.len(), 2);
    assert_eq!(account.history[1].interval, IntervalId(2));
    assert_eq!(account.history[1].settled_at, Timestamp(1000));
    assert_eq!(account.history[1].tick_time, Timestamp(7));
    assert_eq!(account.history[1].amount, cash("20"));
    e.state().check_invariants().unwrap();
    // Selling everything removes the position and its whole basis.
    settle(&mut e, 3, &ticks(&[("AAPL", "20")]), vec![order(3, 1, Side::Sell, "AAPL", "2", 0)]);
    assert!(e.state().account(AccountId(1)).unwrap().holdings.is_empty());
}

#[test]
fn replay_refuses_inconsistent_events() {
    let mut e = engine_with(&["AAPL"], 1, "1000");
    let mut all = Vec::new();
    let mut queue = OrderQueue::new();
    queue.push(order(1, 1, Side::Buy, "AAPL", "3", 0));
    all.extend(
        e.settle(IntervalId(1), Timestamp(0), &ticks(&[("AAPL", "10")]), &mut queue).unwrap(),
    );
    let mut fresh = engine_with(&["AAPL"], 1, "1000");
    let mut tampered = all.clone();
    if let Event::OrderFilled(f) = &mut tampered[1] {
        f.cash_after = cash("999");
    }
    fresh.apply(&tampered[0]).unwrap();
    assert!(matches!(fresh.apply(&tampered[1]), Err(engine::ApplyError::FillMismatch { .. })));
    // An outcome with no interval open is refused too.
    let mut fresh = engine_with(&["AAPL"], 1, "1000");
    assert!(fresh.apply(&all[1]).is_err());
}

/// Replay decides a fill again from its own terms: a fill whose balances agree with each other
/// but whose amount is not price times quantity, or whose price is not the symbol's latest
/// tick, is refused; so is a header with a tick no tick set could hold. (The audit is this
/// replay.)
#[test]
fn replay_refuses_a_fill_with_a_made_up_price_or_amount() {
    let mut e = engine_with(&["AAPL", "IBM"], 1, "1000");
    let mut queue = OrderQueue::new();
    queue.push(order(1, 1, Side::Buy, "AAPL", "3", 0));
    let set = ticks(&[("AAPL", "10"), ("IBM", "20")]);
    let events = e.settle(IntervalId(1), Timestamp(0), &set, &mut queue).unwrap();
    let refused = |tamper: &dyn Fn(&mut Vec<Event>)| {
        let mut tampered = events.clone();
        tamper(&mut tampered);
        let mut fresh = engine_with(&["AAPL", "IBM"], 1, "1000");
        fresh.apply(&tampered[0]).and_then(|()| fresh.apply(&tampered[1])).unwrap_err()
    };
    let fill_mismatch = |err: engine::ApplyError, what: &str| {
        assert!(
            matches!(&err, engine::ApplyError::FillMismatch { what: w, .. } if w.contains(what)),
            "{err}"
        );
    };
    // 3 AAPL at 10 for 0.01, cash after and holding consistent with that amount.
    let cheap = |events: &mut Vec<Event>| {
        if let Event::OrderFilled(f) = &mut events[1] {
            f.amount = cash("0.01");
            f.cash_after = cash("999.99");
        }
    };
    fill_mismatch(refused(&cheap), "price times quantity");
    // The price and amount of another symbol's tick.
    let other_price = |events: &mut Vec<Event>| {
        if let Event::OrderFilled(f) = &mut events[1] {
            f.price = set.get(&sym("IBM")).unwrap().close;
            f.amount = cash("60");
            f.cash_after = cash("940");
        }
    };
    fill_mismatch(refused(&other_price), "tick");
    // A header tick with a zero price, and one out of order.
    let zero = |events: &mut Vec<Event>| {
        if let Event::IntervalSettled(h) = &mut events[0] {
            h.ticks[1].low = engine::Price::ZERO;
        }
    };
    assert!(matches!(refused(&zero), engine::ApplyError::BadTicks { .. }));
    let unsorted = |events: &mut Vec<Event>| {
        if let Event::IntervalSettled(h) = &mut events[0] {
            h.ticks.swap(0, 1);
        }
    };
    assert!(matches!(refused(&unsorted), engine::ApplyError::BadTicks { .. }));
    // The events as settled apply.
    let mut fresh = engine_with(&["AAPL", "IBM"], 1, "1000");
    for event in &events {
        fresh.apply(event).unwrap();
    }
    assert_eq!(fresh.digest(), e.digest());
}

/// Replay decides every outcome again against the interval's own ticks: a fill at a symbol's
/// earlier tick in an interval whose header left the symbol out (settlement would have refused
/// it, `no_price`), a refusal given another reason, and a fill recorded as a refusal are all
/// refused, with what settlement would have decided.
#[test]
fn replay_decides_every_outcome_again() {
    let mut e = engine_with(&["AAPL", "IBM"], 2, "1000");
    // Header included, unlike `settle`.
    let mut settle_all = |interval: u64, set: &engine::TickSet, orders: Vec<engine::Order>| {
        let mut queue = OrderQueue::new();
        orders.into_iter().for_each(|o| queue.push(o));
        e.settle(IntervalId(interval), Timestamp(interval as i64), set, &mut queue).unwrap()
    };
    let first = settle_all(
        1,
        &ticks(&[("AAPL", "10"), ("IBM", "20")]),
        vec![order(1, 1, Side::Buy, "AAPL", "3", 0)],
    );
    let second = settle_all(
        2,
        &ticks(&[("IBM", "21")]),
        vec![order(2, 1, Side::Buy, "AAPL", "1", 0), order(3, 2, Side::Buy, "IBM", "1000", 0)],
    );
    assert_eq!(reason_of(&second[1]), Some(RejectReason::NoPrice));
    assert_eq!(reason_of(&second[2]), Some(RejectReason::InsufficientCash));
    let replay = |second: &[Event]| {
        let mut fresh = engine_with(&["AAPL", "IBM"], 2, "1000");
        first.iter().chain(second).try_for_each(|event| fresh.apply(event)).map(|()| fresh)
    };
    // As settled: replays to the same state.
    assert_eq!(replay(&second).unwrap().digest(), e.digest());

    let outcome_mismatch = |err: engine::ApplyError, decided: &str| match &err {
        engine::ApplyError::OutcomeMismatch { decided: d, .. } => {
            assert!(d.contains(decided), "{err}");
        }
        other => panic!("{other}"),
    };
    // The no_price refusal made a fill at AAPL's tick of interval 1, balances consistent.
    let Event::OrderRejected(refused) = &second[1] else { panic!() };
    let Event::OrderFilled(earlier) = &first[1] else { panic!() };
    let mut forged = second.clone();
    forged[1] = Event::OrderFilled(engine::Fill {
        order: refused.order,
        interval: refused.interval,
        price: earlier.price,
        tick_time: earlier.tick_time,
        amount: cash("10"),
        cash_after: cash("960"),
        holding_after: qty("4"),
    });
    let err = replay(&forged).unwrap_err();
    assert!(matches!(err, engine::ApplyError::FillMismatch { .. }), "{err}");
    // A refusal given another reason, or other values seen.
    let mut forged = second.clone();
    if let Event::OrderRejected(r) = &mut forged[2] {
        r.reason = RejectReason::NoPrice;
    }
    outcome_mismatch(replay(&forged).unwrap_err(), "insufficient_cash");
    let mut forged = second.clone();
    if let Event::OrderRejected(r) = &mut forged[2] {
        r.cash_seen = cash("5000");
    }
    outcome_mismatch(replay(&forged).unwrap_err(), "cash 1000");
    // The fill of interval 1 recorded as a refusal.
    let Event::OrderFilled(filled) = &first[1] else { panic!() };
    let as_refusal = Event::OrderRejected(engine::Rejection {
        order: filled.order,
        interval: filled.interval,
        reason: RejectReason::InsufficientCash,
        price_seen: Some(filled.price),
        cash_seen: cash("1000"),
        holding_seen: qty("0"),
    });
    let mut fresh = engine_with(&["AAPL", "IBM"], 2, "1000");
    fresh.apply(&first[0]).unwrap();
    outcome_mismatch(fresh.apply(&as_refusal).unwrap_err(), "a fill");
}

/// The order of a single account's outcomes in an interval is the settlement order, each
/// order once: replay refuses the outcomes of two orders swapped (whose balances agree with
/// the swap), and one order's outcome twice. Without it, the audit would accept a history in
/// which the wrong order was filled.
#[test]
fn replay_refuses_an_accounts_outcomes_out_of_order_or_twice() {
    let settle = |price: &str| {
        let mut e = engine_with(&["AAPL"], 1, "100");
        let mut queue = OrderQueue::new();
        queue.push(order(1, 1, Side::Buy, "AAPL", "1", 0));
        queue.push(order(2, 1, Side::Buy, "AAPL", "1", 1));
        e.settle(IntervalId(1), Timestamp(0), &ticks(&[("AAPL", price)]), &mut queue).unwrap()
    };
    let replay = |events: &[Event]| {
        let mut fresh = engine_with(&["AAPL"], 1, "100");
        events.iter().try_for_each(|event| fresh.apply(event))
    };
    let set_order = |event: &mut Event, to: engine::Order| match event {
        Event::OrderFilled(f) => f.order = to,
        Event::OrderRejected(r) => r.order = to,
        other => panic!("not an outcome: {other:?}"),
    };
    // At 60, the first order fills (cash 40) and the second is refused for want of cash.
    let events = settle("60");
    replay(&events).unwrap();
    assert!(matches!(&events[1], Event::OrderFilled(f) if f.order.id.0 == 1));
    assert!(matches!(&events[2], Event::OrderRejected(r) if r.order.id.0 == 2));
    let mut swapped = events.clone();
    set_order(&mut swapped[1], order(2, 1, Side::Buy, "AAPL", "1", 1));
    set_order(&mut swapped[2], order(1, 1, Side::Buy, "AAPL", "1", 0));
    let err = replay(&swapped).unwrap_err();
    assert!(matches!(err, engine::ApplyError::OutcomeOutOfOrder { order: 1 }), "{err}");
    // At 10 both fill (cash 90, then 80): the first order's fill twice, balances agreeing.
    let events = settle("10");
    replay(&events).unwrap();
    let mut twice = events.clone();
    set_order(&mut twice[2], order(1, 1, Side::Buy, "AAPL", "1", 0));
    let err = replay(&twice).unwrap_err();
    assert!(matches!(err, engine::ApplyError::OutcomeOutOfOrder { order: 1 }), "{err}");
}

/// Settlement writes an interval's header and outcomes together: an asset listed or an
/// account opened between them is refused (it would turn an `unknown_symbol` or
/// `unknown_account` refusal into a fill).
#[test]
fn replay_refuses_a_listing_or_an_account_inside_an_interval() {
    let mut e = engine_with(&["AAPL"], 1, "100");
    let mut queue = OrderQueue::new();
    queue.push(order(1, 1, Side::Buy, "IBM", "1", 0));
    let events = e
        .settle(IntervalId(1), Timestamp(0), &ticks(&[("AAPL", "10"), ("IBM", "20")]), &mut queue)
        .unwrap();
    assert!(
        matches!(&events[1], Event::OrderRejected(r) if r.reason == RejectReason::UnknownSymbol)
    );
    let mut fresh = engine_with(&["AAPL"], 1, "100");
    fresh.apply(&events[0]).unwrap();
    let listed = Event::AssetListed(engine::AssetListed { symbol: sym("IBM"), at: Timestamp(0) });
    let err = fresh.apply(&listed).unwrap_err();
    assert!(matches!(err, engine::ApplyError::InsideInterval { .. }), "{err}");
    let second_account = || engine::OpenAccount {
        username: engine::Username::new("u2").unwrap(),
        email: engine::Email::new("u2@example.com").unwrap(),
        password_hash: engine::PasswordHash::new("$argon2id$test").unwrap(),
        initial_cash: cash("100"),
        at: Timestamp(0),
    };
    let mut other = engine_with(&["AAPL"], 1, "100");
    let opened = other.open_account(second_account()).unwrap();
    let err = fresh.apply(&opened).unwrap_err();
    assert!(matches!(err, engine::ApplyError::InsideInterval { .. }), "{err}");
    // The commands on such a state say why, and change nothing.
    let before = fresh.state().clone();
    let err = fresh.list_asset(sym("IBM"), Timestamp(0)).unwrap_err();
    assert!(
        matches!(err, CommandError::StateRefused(engine::ApplyError::InsideInterval { .. })),
        "{err}"
    );
    let err = fresh.open_account(second_account()).unwrap_err();
    assert!(
        matches!(err, CommandError::StateRefused(engine::ApplyError::InsideInterval { .. })),
        "{err}"
    );
    assert_eq!(fresh.state(), &before);
    // After the interval's outcomes, both are fine.
    fresh.apply(&events[1]).unwrap();
    fresh.apply(&listed).unwrap();
}

/// A rehash replaces the account's stored hash and nothing else; one for an unknown account,
/// or between an interval's header and its outcomes, is refused.
#[test]
fn a_rehash_replaces_one_accounts_hash_and_only_between_intervals() {
    let mut e = engine_with(&["AAPL"], 2, "100");
    let before = e.state().clone();
    let hash = engine::PasswordHash::new("$argon2id$v=19$m=8,t=2,p=1$new").unwrap();
    let event = e.rehash_password(AccountId(2), hash.clone(), Timestamp(5)).unwrap();
    let rehashed = e.state().account(AccountId(2)).unwrap();
    assert_eq!(rehashed.password_hash, hash);
    let mut expected = before.account(AccountId(2)).unwrap().clone();
    expected.password_hash = hash.clone();
    assert_eq!(*rehashed, expected, "only the hash changes");
    assert_eq!(e.state().account(AccountId(1)), before.account(AccountId(1)));
    // Folded from the state before, the event gives the same state.
    let mut folded = engine::Engine::from_state(before.clone());
    folded.apply(&event).unwrap();
    assert_eq!(folded.state(), e.state());

    let err = e.rehash_password(AccountId(3), hash.clone(), Timestamp(5)).unwrap_err();
    assert!(matches!(err, engine::CommandError::UnknownAccount(AccountId(3))), "{err}");
    let unknown = Event::PasswordRehashed(engine::PasswordRehashed {
        account: AccountId(3),
        password_hash: hash.clone(),
        at: Timestamp(5),
    });
    let err = engine::Engine::from_state(before).apply(&unknown).unwrap_err();
    assert!(matches!(err, engine::ApplyError::UnknownAccount(AccountId(3))), "{err}");

    let mut queue = OrderQueue::new();
    queue.push(order(1, 1, Side::Buy, "AAPL", "1", 0));
    let settled =
        e.settle(IntervalId(1), Timestamp(9), &ticks(&[("AAPL", "10")]), &mut queue).unwrap();
    let mut fresh = engine_with(&["AAPL"], 2, "100");
    fresh.apply(&settled[0]).unwrap();
    let err = fresh.apply(&event).unwrap_err();
    assert!(matches!(err, engine::ApplyError::InsideInterval { .. }), "{err}");
    fresh.apply(&settled[1]).unwrap();
    fresh.apply(&event).unwrap();
}
