//! The core over a real journal in a temp dir: registration, sessions, orders acknowledged only
//! after the interval's commit, retried orders not filled twice, and state surviving a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use engine::{Cash, ClientOrderId, Email, Price, Qty, Side, Symbol, Tick, TickSet, Timestamp};
use engine::{Engine, PasswordHash, Username, WorkerId};
use journal::{Journal, JournalConfig};
use master::config::SessionsConfig;
use master::core::{Core, CoreConfig, CoreRequest, UserQuery};
use master::prices::PriceBatch;
use master::sessions::{SessionId, SessionTable};
use net::{DataPayload, Reason, Response};
use tokio::sync::oneshot;

const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn open(dir: &std::path::Path) -> Core {
    open_remembering(dir, 100)
}

fn open_remembering(dir: &std::path::Path, remembered_outcomes_max: usize) -> Core {
    let journal = JournalConfig::default();
    open_with(dir, journal, &SessionsConfig::default(), remembered_outcomes_max).0
}

/// A core over the journal in `dir` opened with `journal`, with `sessions`' limits; and the
/// journal, for tests that look at it or act on it behind the core's back.
fn open_with(
    dir: &std::path::Path,
    journal: JournalConfig,
    sessions: &SessionsConfig,
    remembered_outcomes_max: usize,
) -> (Core, Arc<Journal>) {
    let (journal, recovered) = Journal::open(journal::path_in(dir), journal).unwrap();
    let journal = Arc::new(journal);
    let core = Core::new(
        Engine::from_state(recovered.state),
        Arc::clone(&journal),
        CoreConfig {
            initial_cash: Cash::parse("1000").unwrap(),
            orders_per_interval_max: 3,
            orders_per_account_per_interval_max: 2,
            accounts_max: 10,
            remembered_outcomes_max,
        },
        SessionTable::new(sessions),
    );
    (core, journal)
}

fn call<T>(core: &mut Core, build: impl FnOnce(oneshot::Sender<T>) -> CoreRequest) -> T {
    let (tx, mut rx) = oneshot::channel();
    core.handle(build(tx));
    rx.try_recv().expect("the core answered at once")
}

fn sym(s: &str) -> Symbol {
    Symbol::new(s).unwrap()
}

fn batch(close: &str) -> PriceBatch {
    let p = Price::parse(close).unwrap();
    let tick = Tick {
        symbol: sym("AAPL"),
        open: p,
        high: p,
        low: p,
        close: p,
        volume: Qty::ZERO,
        time: Timestamp(1),
    };
    PriceBatch { time: None, ticks: TickSet::new(vec![tick]).unwrap(), failures: vec![] }
}

fn login(core: &mut Core, name: &str) -> SessionId {
    let username = Username::new(name).unwrap();
    let found = call(core, |reply| CoreRequest::Credentials { username, reply });
    let (account, _) = found.expect("registered");
    match call(core, |reply| CoreRequest::StartSession { account, ip: IP, remember: false, reply })
    {
        Response::SessionId(id) => SessionId::from_bytes(id.0),
        other => panic!("{other:?}"),
    }
}

fn register(core: &mut Core, name: &str) -> Response {
    call(core, |reply| CoreRequest::Register {
        username: Username::new(name).unwrap(),
        email: Email::new(&format!("{name}@example.com")).unwrap(),
        hash: PasswordHash::new("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA").unwrap(),
        reply,
    })
}

fn order(
    core: &mut Core,
    session: &SessionId,
    side: Side,
    qty: &str,
    client: u64,
) -> oneshot::Receiver<Response> {
    order_of(core, session, side, "AAPL", qty, client)
}

/// [`order`] of another asset.
fn order_of(
    core: &mut Core,
    session: &SessionId,
    side: Side,
    symbol: &str,
    qty: &str,
    client: u64,
) -> oneshot::Receiver<Response> {
    let (tx, rx) = oneshot::channel();
    core.handle(CoreRequest::Order {
        session: session.clone(),
        side,
        symbol: sym(symbol),
        qty: Qty::parse(qty).unwrap(),
        client_id: ClientOrderId(client),
        placed_at: Timestamp(5),
        worker: WorkerId(1),
        reply: tx.into(),
    });
    rx
}

fn settle(core: &mut Core, close: &str) {
    let summary = call(core, |reply| CoreRequest::Settle { batch: batch(close), reply });
    assert!(!summary.failed, "{summary:?}");
}

#[test]
fn orders_are_answered_only_after_the_interval_commits_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = open(dir.path());
    assert_eq!(
        call(&mut core, |reply| CoreRequest::ListAssets { symbols: vec![sym("AAPL")], reply }),
        Ok(1)
    );
    assert_eq!(register(&mut core, "alice"), Response::RegisterSuccess);
    match register(&mut core, "alice") {
        Response::RegisterFail(f) => assert_eq!(f.reason, Reason::UsernameTaken),
        other => panic!("{other:?}"),
    }
    let session = login(&mut core, "alice");

    let mut buy = order(&mut core, &session, Side::Buy, "3", 11);
    // Queued, not answered: no success before the commit.
    assert!(buy.try_recv().is_err());
    let mut retry = order(&mut core, &session, Side::Buy, "3", 11);
    settle(&mut core, "100");
    let filled = buy.try_recv().unwrap();
    assert!(
        matches!(&filled, Response::PurchaseSuccess(f) if f.amount == Cash::parse("300").unwrap()),
        "{filled:?}"
    );
    // The retry got the same answer and was not filled twice.
    assert_eq!(retry.try_recv().unwrap(), filled);
    let mut late_retry = order(&mut core, &session, Side::Buy, "3", 11);
    assert_eq!(late_retry.try_recv().unwrap(), filled);

    let mut too_much = order(&mut core, &session, Side::Buy, "8", 12);
    settle(&mut core, "100");
    match too_much.try_recv().unwrap() {
        Response::PurchaseFail(f) => {
            assert_eq!(f.reason, Reason::Rejected(engine::RejectReason::InsufficientCash))
        }
        other => panic!("{other:?}"),
    }
    let portfolio = call(&mut core, |reply| CoreRequest::User {
        session: session.clone(),
        username: Username::new("alice").unwrap(),
        query: UserQuery::Portfolio,
        reply,
    });
    let Response::Data(DataPayload::Portfolio(p)) = portfolio else { panic!("{portfolio:?}") };
    assert_eq!(p.cash, Cash::parse("700").unwrap());
    assert_eq!(p.holdings[0].qty, Qty::from_units(3).unwrap());
    drop(core);

    // Restart: state, the session and the retry memory come back from the journal.
    let mut core = open(dir.path());
    let mut retry_after_restart = order(&mut core, &session, Side::Buy, "3", 11);
    assert_eq!(retry_after_restart.try_recv().unwrap(), filled);
    let history = call(&mut core, |reply| CoreRequest::User {
        session: session.clone(),
        username: Username::new("alice").unwrap(),
        query: UserQuery::History,
        reply,
    });
    let Response::Data(DataPayload::TransactionHistory { entries: h, older: 0 }) = history else {
        panic!("{history:?}")
    };
    assert_eq!(h.len(), 1);
}

#[test]
fn refusals_at_once_and_backpressure() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = open(dir.path());
    call(&mut core, |reply| CoreRequest::ListAssets { symbols: vec![sym("AAPL")], reply }).unwrap();
    register(&mut core, "bob");
    register(&mut core, "carol");
    let bob = login(&mut core, "bob");
    let carol = login(&mut core, "carol");
    let reason = |rx: &mut oneshot::Receiver<Response>| match rx.try_recv().unwrap() {
        Response::PurchaseFail(f) | Response::SellFail(f) => f.reason,
        other => panic!("{other:?}"),
    };
    // Zero quantity and unknown symbol: answered at once, never queued.
    assert_eq!(
        reason(&mut order(&mut core, &bob, Side::Buy, "0", 1)),
        Reason::Rejected(engine::RejectReason::ZeroQuantity)
    );
    let (tx, mut rx) = oneshot::channel();
    core.handle(CoreRequest::Order {
        session: bob.clone(),
        side: Side::Buy,
        symbol: sym("TSLA"),
        qty: Qty::from_units(1).unwrap(),
        client_id: ClientOrderId(2),
        placed_at: Timestamp(0),
        worker: WorkerId(0),
        reply: tx.into(),
    });
    match rx.try_recv().unwrap() {
        Response::PurchaseFail(f) => {
            assert_eq!(f.reason, Reason::Rejected(engine::RejectReason::UnknownSymbol));
            // The message says what was wrong in words, naming the symbol.
            assert_eq!(f.message, "TSLA is not a listed asset");
        }
        other => panic!("{other:?}"),
    }
    // A bad session.
    let forged = SessionId::from_bytes([7; 32]);
    assert_eq!(reason(&mut order(&mut core, &forged, Side::Buy, "1", 3)), Reason::BadSession);
    // Per-account cap (2) then the interval cap (3): busy at once, never left hanging.
    let _a = order(&mut core, &bob, Side::Buy, "1", 10);
    let _b = order(&mut core, &bob, Side::Buy, "1", 11);
    assert_eq!(reason(&mut order(&mut core, &bob, Side::Buy, "1", 12)), Reason::Busy);
    let _c = order(&mut core, &carol, Side::Buy, "1", 13);
    assert_eq!(reason(&mut order(&mut core, &carol, Side::Buy, "1", 14)), Reason::Busy);
    // Logout ends the session.
    assert_eq!(
        call(&mut core, |reply| CoreRequest::Logout { session: bob.clone(), reply }),
        Response::LogoutSuccess
    );
    assert_eq!(reason(&mut order(&mut core, &bob, Side::Sell, "1", 15)), Reason::BadSession);
    // Another user's view never has the email.
    let info = call(&mut core, |reply| CoreRequest::User {
        session: carol.clone(),
        username: Username::new("bob").unwrap(),
        query: UserQuery::Info,
        reply,
    });
    let Response::Data(DataPayload::UserInfo(i)) = info else { panic!("{info:?}") };
    assert_eq!(i.email, None);
    let own = call(&mut core, |reply| CoreRequest::User {
        session: carol.clone(),
        username: Username::new("carol").unwrap(),
        query: UserQuery::Info,
        reply,
    });
    let Response::Data(DataPayload::UserInfo(i)) = own else { panic!("{own:?}") };
    assert_eq!(i.email.map(|e| e.to_string()), Some("carol@example.com".into()));
}

/// The retry memory keeps exactly the newest `remembered_outcomes_max` outcomes: a retry of one
/// of them gets its answer at once. A retry of an older fill gets its first answer too, rebuilt
/// from the account's history (cash after included), before and after a restart: an order is
/// never filled twice however late it is retried. A retry of an older rejection is decided
/// again (it was never executed).
#[test]
fn a_retry_is_never_filled_twice_however_late() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = open_remembering(dir.path(), 2);
    call(&mut core, |reply| CoreRequest::ListAssets { symbols: vec![sym("AAPL")], reply }).unwrap();
    register(&mut core, "dave");
    let dave = login(&mut core, "dave");
    let mut answers = Vec::new();
    for (client, qty) in [(1, "1"), (2, "1000"), (3, "2"), (4, "3")] {
        let mut rx = order(&mut core, &dave, Side::Buy, qty, client);
        settle(&mut core, "10");
        answers.push(rx.try_recv().unwrap());
    }
    assert!(matches!(answers[0], Response::PurchaseSuccess(_)), "{:?}", answers[0]);
    assert!(matches!(answers[1], Response::PurchaseFail(_)), "not enough cash: {:?}", answers[1]);
    for (client, qty, first) in [(3, "2", &answers[2]), (4, "3", &answers[3])] {
        let mut retry = order(&mut core, &dave, Side::Buy, qty, client);
        assert_eq!(&retry.try_recv().unwrap(), first, "client order {client} is remembered");
    }
    // The same id for another order: refused, saying so, not answered with the first fill.
    let mut other = order(&mut core, &dave, Side::Buy, "7", 3);
    match other.try_recv().unwrap() {
        Response::PurchaseFail(f) => {
            assert_eq!(f.reason, Reason::InvalidArgument);
            assert!(f.message.contains("client order id 3 was already used"), "{}", f.message);
        }
        answer => panic!("{answer:?}"),
    }
    // Forgotten by the retry memory, but a fill: the same answer at once, nothing queued.
    let mut late = order(&mut core, &dave, Side::Buy, "1", 1);
    assert_eq!(late.try_recv().unwrap(), answers[0], "the first fill's answer, rebuilt");
    // Forgotten and rejected: decided again (and rejected again: still not enough cash).
    let mut rejected_again = order(&mut core, &dave, Side::Buy, "1000", 2);
    assert!(rejected_again.try_recv().is_err(), "queued again");
    settle(&mut core, "10");
    assert!(matches!(rejected_again.try_recv().unwrap(), Response::PurchaseFail(_)));
    drop(core);
    // After a restart too.
    let mut core = open_remembering(dir.path(), 2);
    for (client, qty, first) in
        [(1, "1", &answers[0]), (3, "2", &answers[2]), (4, "3", &answers[3])]
    {
        let mut retry = order(&mut core, &dave, Side::Buy, qty, client);
        assert_eq!(&retry.try_recv().unwrap(), first, "client order {client} after a restart");
    }
}

/// A client order id names one order: the same id for another order (other side or quantity)
/// is refused at once with `invalid_argument`, whether the first is still queued or was refused,
/// and is never answered with the first order's outcome. The same order again is a retry.
#[test]
fn a_client_order_id_names_one_order_queued_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = open(dir.path());
    call(&mut core, |reply| CoreRequest::ListAssets { symbols: vec![sym("AAPL")], reply }).unwrap();
    register(&mut core, "erin");
    let erin = login(&mut core, "erin");
    let refused_for_reuse = |answer: Response, word: &str| {
        let f = match answer {
            Response::PurchaseFail(f) | Response::SellFail(f) => f,
            other => panic!("{other:?}"),
        };
        assert_eq!(f.reason, Reason::InvalidArgument, "{}", f.message);
        assert!(f.message.contains("was already used for") && f.message.contains(word), "{f:?}");
    };

    // Queued: another quantity, or the other side, is refused in its own return; the same
    // order joins the first.
    let mut first = order(&mut core, &erin, Side::Buy, "10", 7);
    let mut more = order(&mut core, &erin, Side::Buy, "100", 7);
    let more = more.try_recv().unwrap();
    assert!(matches!(more, Response::PurchaseFail(_)), "{more:?}");
    refused_for_reuse(more, "queued for this interval (buy 10 AAPL)");
    let mut sell = order(&mut core, &erin, Side::Sell, "10", 7);
    let sell = sell.try_recv().unwrap();
    assert!(matches!(sell, Response::SellFail(_)), "{sell:?}");
    refused_for_reuse(sell, "queued");
    let mut again = order(&mut core, &erin, Side::Buy, "10", 7);
    settle(&mut core, "10");
    let filled = first.try_recv().unwrap();
    assert!(matches!(&filled, Response::PurchaseSuccess(f) if f.qty == Qty::parse("10").unwrap()));
    assert_eq!(again.try_recv().unwrap(), filled);

    // Refused (not enough cash): a smaller order under the same id is not told "not enough
    // cash", it is refused as a reuse; the same order again gets the first refusal.
    let mut big = order(&mut core, &erin, Side::Buy, "1000000", 8);
    settle(&mut core, "10");
    let rejected = big.try_recv().unwrap();
    match &rejected {
        Response::PurchaseFail(f) => {
            assert_eq!(f.reason, Reason::Rejected(engine::RejectReason::InsufficientCash));
            // What it would have cost, beside the cash there was.
            let m = &f.message;
            assert!(m.starts_with("not enough cash: 1000000 AAPL at 10"), "{m}");
            assert!(m.contains(" cost 10000000") && m.contains(", have "), "{m}");
        }
        other => panic!("{other:?}"),
    }
    let mut small = order(&mut core, &erin, Side::Buy, "1", 8);
    refused_for_reuse(
        small.try_recv().unwrap(),
        "another order (buy 1000000 AAPL), refused: insufficient_cash: not enough cash: 1000000 \
         AAPL at 10",
    );
    let mut retry = order(&mut core, &erin, Side::Buy, "1000000", 8);
    assert_eq!(retry.try_recv().unwrap(), rejected);
}

/// The interval loop cuts the order list before it fetches the interval's prices: an order
/// placed after the cut (during the fetch) settles in the next interval, at prices fetched
/// after it was placed, not at this interval's; and the per-account limit counts again from
/// the cut. An order cut and stopped before its settlement is refused, never lost.
#[test]
fn orders_after_the_cut_settle_in_the_next_interval() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = open(dir.path());
    call(&mut core, |reply| CoreRequest::ListAssets { symbols: vec![sym("AAPL")], reply }).unwrap();
    register(&mut core, "gina");
    let gina = login(&mut core, "gina");
    let price = |rx: &mut oneshot::Receiver<Response>| match rx.try_recv().unwrap() {
        Response::PurchaseSuccess(fill) => fill.price,
        other => panic!("{other:?}"),
    };
    let mut before = order(&mut core, &gina, Side::Buy, "1", 1);
    let mut also_before = order(&mut core, &gina, Side::Buy, "1", 2);
    core.handle(CoreRequest::Cut);
    // The account's limit (two an interval) applies to the next interval's orders now.
    let mut during_fetch = order(&mut core, &gina, Side::Buy, "1", 3);
    let mut also_during = order(&mut core, &gina, Side::Buy, "1", 4);
    settle(&mut core, "10");
    assert_eq!(price(&mut before), Price::parse("10").unwrap());
    assert_eq!(price(&mut also_before), Price::parse("10").unwrap());
    assert!(during_fetch.try_recv().is_err(), "waits for the next interval");
    assert!(also_during.try_recv().is_err(), "waits for the next interval");
    core.handle(CoreRequest::Cut);
    settle(&mut core, "12");
    assert_eq!(price(&mut during_fetch), Price::parse("12").unwrap());
    assert_eq!(price(&mut also_during), Price::parse("12").unwrap());

    // Cut, then stopped before the settlement: refused, with the next interval's orders.
    let mut cut = order(&mut core, &gina, Side::Buy, "1", 5);
    core.handle(CoreRequest::Cut);
    let mut next = order(&mut core, &gina, Side::Buy, "1", 6);
    call(&mut core, |reply| CoreRequest::Stop { reply });
    for rx in [&mut cut, &mut next] {
        match rx.try_recv().unwrap() {
            Response::PurchaseFail(f) => assert_eq!(f.reason, Reason::MasterUnavailable),
            other => panic!("{other:?}"),
        }
    }
}

/// An asset an earlier run listed but that is no longer among the priced assets (dropped from
/// `assets`) is refused at once, saying why: before, its orders waited an interval to be
/// refused `no_price`, every time, and its holders could never be told.
#[test]
fn an_asset_no_longer_priced_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut core = open(dir.path());
        let listed = vec![sym("AAPL"), sym("IBM")];
        call(&mut core, |reply| CoreRequest::ListAssets { symbols: listed, reply }).unwrap();
        register(&mut core, "hal");
    }
    let mut core = open(dir.path());
    call(&mut core, |reply| CoreRequest::ListAssets { symbols: vec![sym("AAPL")], reply }).unwrap();
    let hal = login(&mut core, "hal");
    let mut rx = order_of(&mut core, &hal, Side::Sell, "IBM", "1", 1);
    match rx.try_recv().expect("answered at once") {
        Response::SellFail(f) => {
            assert_eq!(f.reason, Reason::Rejected(engine::RejectReason::NoPrice));
            assert!(f.message.contains("no longer fetches its price"), "{}", f.message);
        }
        other => panic!("{other:?}"),
    }
    let mut aapl = order(&mut core, &hal, Side::Buy, "1", 2);
    assert!(aapl.try_recv().is_err(), "a priced asset's order is queued");
}

/// Once the master stops (after its last settlement), orders queued since and every new one
/// are answered `master_unavailable` at once (nothing waits for an interval that will not
/// come), nothing of them is journaled, and a retry of a committed order still gets its outcome.
#[test]
fn a_stopped_core_answers_late_orders_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = open(dir.path());
    call(&mut core, |reply| CoreRequest::ListAssets { symbols: vec![sym("AAPL")], reply }).unwrap();
    register(&mut core, "erin");
    let erin = login(&mut core, "erin");
    let mut first = order(&mut core, &erin, Side::Buy, "1", 1);
    settle(&mut core, "10");
    let committed = first.try_recv().unwrap();
    assert!(matches!(committed, Response::PurchaseSuccess(_)), "{committed:?}");

    let mut late = order(&mut core, &erin, Side::Buy, "1", 2);
    assert!(late.try_recv().is_err(), "queued for the next interval");
    call(&mut core, |reply| CoreRequest::Stop { reply });
    let unavailable = |response: Response| match response {
        Response::PurchaseFail(f) => assert_eq!(f.reason, Reason::MasterUnavailable),
        other => panic!("{other:?}"),
    };
    unavailable(late.try_recv().unwrap());
    unavailable(order(&mut core, &erin, Side::Buy, "1", 3).try_recv().unwrap());
    assert_eq!(order(&mut core, &erin, Side::Buy, "1", 1).try_recv().unwrap(), committed);
    drop(core);

    // Only the first order reached the journal.
    let core = open(dir.path());
    drop(core);
    let (journal, _) =
        journal::Journal::open(journal::path_in(dir.path()), Default::default()).unwrap();
    let fills = journal
        .read_records(journal::Seq(1))
        .unwrap()
        .filter(|r| matches!(r.as_ref().unwrap().event, engine::Event::OrderFilled(_)))
        .count();
    assert_eq!(fills, 1);
}

/// A history longer than one answer carries comes back as its newest
/// `HISTORY_ENTRIES_MAX` entries and the count of the older ones, so the answer always fits one
/// message.
#[test]
fn a_long_history_answers_its_newest_entries_and_counts_the_rest() {
    let cap = net::limits::HISTORY_ENTRIES_MAX;
    let orders = cap + 3;
    let dir = tempfile::tempdir().unwrap();
    let (journal, recovered) =
        Journal::open(journal::path_in(dir.path()), JournalConfig::default()).unwrap();
    let mut core = Core::new(
        Engine::from_state(recovered.state),
        Arc::new(journal),
        CoreConfig {
            initial_cash: Cash::parse("1000000").unwrap(),
            orders_per_interval_max: orders,
            orders_per_account_per_interval_max: orders,
            accounts_max: 10,
            remembered_outcomes_max: 100,
        },
        SessionTable::new(&SessionsConfig::default()),
    );
    call(&mut core, |reply| CoreRequest::ListAssets { symbols: vec![sym("AAPL")], reply }).unwrap();
    register(&mut core, "alice");
    let alice = login(&mut core, "alice");
    let answers: Vec<_> = (1..=orders as u64)
        .map(|client| order(&mut core, &alice, Side::Buy, "0.00000001", client))
        .collect();
    settle(&mut core, "1");
    drop(answers);
    let history = call(&mut core, |reply| CoreRequest::User {
        session: alice.clone(),
        username: Username::new("alice").unwrap(),
        query: UserQuery::History,
        reply,
    });
    let Response::Data(DataPayload::TransactionHistory { entries, older }) = history else {
        panic!("{history:?}")
    };
    assert_eq!((entries.len(), older), (cap, 3));
    // The newest: order ids are given in arrival order, from 1.
    assert_eq!(entries.first().map(|e| e.order.0), Some(4));
    assert_eq!(entries.last().map(|e| e.order.0), Some(orders as u64));
    // And it fits one message.
    let reply = Response::Data(DataPayload::TransactionHistory { entries, older });
    assert!(reply.encode().is_ok());
}

#[test]
fn a_panic_is_contained_with_its_message() {
    use master::core::contain_panic;
    assert_eq!(contain_panic(|| 7), Ok(7));
    assert_eq!(contain_panic(|| panic!("a plain message")), Err::<(), _>("a plain message".into()));
    let n = 3;
    assert_eq!(contain_panic(|| panic!("formatted {n}")), Err::<(), _>("formatted 3".into()));
    let other = contain_panic(|| std::panic::panic_any(5_u8));
    assert_eq!(other, Err::<(), _>("a panic without a message".into()));
}

/// A journal file damaged under a running core (every page but redb's header zeroed): the next
/// settlement finds the damage. The core never acknowledges the order, and it stops with the
/// cause instead of panicking its thread (redb panics on such pages, docs/RELIABILITY.md) or
/// serving from a state the journal does not hold.
#[test]
fn a_journal_damaged_under_the_core_stops_it_without_acknowledging() {
    use master::core::CoreEnd;
    let dir = tempfile::tempdir().unwrap();
    let path = journal::path_in(dir.path());
    // No page cache in redb, so that the damage is read.
    let config = JournalConfig { cache_bytes: 0, ..JournalConfig::default() };
    let (mut core, journal) = open_with(dir.path(), config, &SessionsConfig::default(), 100);
    call(&mut core, |reply| CoreRequest::ListAssets { symbols: vec![sym("AAPL")], reply }).unwrap();
    assert_eq!(register(&mut core, "alice"), Response::RegisterSuccess);
    let session = login(&mut core, "alice");
    let _first = order(&mut core, &session, Side::Buy, "1", 1);
    settle(&mut core, "100");
    let mut buy = order(&mut core, &session, Side::Buy, "2", 2);

    journal::test_util::zero_all_but_redb_header(&path).unwrap();

    let (requests, received) = tokio::sync::mpsc::channel(8);
    let (ended, core_ended) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let end = core.run(received);
        let _ = ended.send(());
        end
    });
    let (tx, rx) = oneshot::channel();
    requests.blocking_send(CoreRequest::Settle { batch: batch("100"), reply: tx }).unwrap();
    let summary = rx.blocking_recv();
    // The core ends by itself, while a sender is still alive.
    let stopped = core_ended.recv_timeout(std::time::Duration::from_secs(30));
    assert!(stopped.is_ok(), "the core went on after the damage: {summary:?}");
    let end = thread.join().expect("the core's thread does not panic");
    assert!(matches!(&end, CoreEnd::Failed(cause) if !cause.is_empty()), "{end:?}");
    // Nothing more reaches it.
    let (tx, _rx) = oneshot::channel();
    assert!(requests.blocking_send(CoreRequest::LatestTickTime { reply: tx }).is_err());
    // The settlement was not answered, and neither was the order: their callers answer a
    // failure. The journal takes no other write.
    assert!(summary.is_err(), "{summary:?}");
    assert!(buy.try_recv().is_err(), "the order got an answer");
    let halted = journal.halted().expect("the journal is halted");
    assert!(halted.contains("the master's core failed"), "{halted}");
    assert!(journal.put_meta("after", b"x").is_err());
}

/// A storage fault in a write the core did not make (a snapshot part, say) halts the journal's
/// writes. The core sees it at once: the order queued before it is answered "not executed" at
/// the next settlement (the journal refused the batch before writing anything), and new
/// orders and registrations are refused on arrival instead of being accepted for nothing,
/// while a retry of an order committed before it still gets its outcome.
#[test]
fn a_journal_halted_behind_the_cores_back_refuses_writes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, journal) =
        open_with(dir.path(), JournalConfig::default(), &SessionsConfig::default(), 100);
    call(&mut core, |reply| CoreRequest::ListAssets { symbols: vec![sym("AAPL")], reply }).unwrap();
    assert_eq!(register(&mut core, "alice"), Response::RegisterSuccess);
    let session = login(&mut core, "alice");
    // Order 7 fills before the fault.
    let mut filled = order(&mut core, &session, Side::Buy, "2", 7);
    let summary = call(&mut core, |reply| CoreRequest::Settle { batch: batch("100"), reply });
    assert!(!summary.failed, "{summary:?}");
    let Ok(first) = filled.try_recv() else { panic!("order 7 answered") };
    assert!(matches!(first, Response::PurchaseSuccess(_)), "{first:?}");
    let mut queued = order(&mut core, &session, Side::Buy, "1", 1);
    assert!(queued.try_recv().is_err(), "queued for the interval");
    let head = journal.last_seq();

    // What a storage fault in another writer does to the journal.
    journal.halt("a snapshot part could not be written");

    // A retry of order 7 (its answer lost on the way) is a read of what was committed: it
    // gets the fill again, not a failure saying nothing was stored.
    let mut retried = order(&mut core, &session, Side::Buy, "2", 7);
    assert_eq!(retried.try_recv().ok(), Some(first.clone()));
    let mut refused = order(&mut core, &session, Side::Buy, "1", 2);
    let Ok(Response::PurchaseFail(f)) = refused.try_recv() else { panic!("answered at once") };
    assert_eq!(f.reason, Reason::Internal);
    assert!(f.message.contains("a snapshot part could not be written"), "{}", f.message);
    let Response::RegisterFail(f) = register(&mut core, "bob") else { panic!("registered") };
    assert!(f.message.contains("cannot write its journal"), "{}", f.message);

    let summary = call(&mut core, |reply| CoreRequest::Settle { batch: batch("100"), reply });
    assert!(summary.failed, "{summary:?}");
    let Ok(Response::PurchaseFail(f)) = queued.try_recv() else { panic!("the queued order") };
    assert_eq!(f.reason, Reason::Internal);
    assert!(f.message.contains("was not executed"), "{}", f.message);
    // Nothing was written, and alice holds nothing.
    assert_eq!(journal.last_seq(), head);
    let portfolio = call(&mut core, |reply| CoreRequest::User {
        session: session.clone(),
        username: Username::new("alice").unwrap(),
        query: UserQuery::Portfolio,
        reply,
    });
    let Response::Data(DataPayload::Portfolio(p)) = portfolio else { panic!("{portfolio:?}") };
    assert_eq!(p.holdings.len(), 1, "{p:?}");
    assert_eq!(p.holdings[0].qty, Qty::parse("2").unwrap(), "order 7's units only: {p:?}");
}

/// A login while the journal is halted is refused before the session table makes room for it:
/// the account's open session, which a new one past `sessions.per_account_max` would end (in
/// memory only, its stored row left to bring it back at the next start), keeps working.
#[test]
fn a_login_while_the_journal_is_halted_is_refused_and_ends_no_session() {
    let dir = tempfile::tempdir().unwrap();
    let sessions = SessionsConfig { per_account_max: 1, ..SessionsConfig::default() };
    let (mut core, journal) = open_with(dir.path(), JournalConfig::default(), &sessions, 100);
    assert_eq!(register(&mut core, "alice"), Response::RegisterSuccess);
    let session = login(&mut core, "alice");
    journal.halt("a snapshot part could not be written");
    let username = Username::new("alice").unwrap();
    let (account, _) =
        call(&mut core, |reply| CoreRequest::Credentials { username, reply }).expect("registered");
    let answer = call(&mut core, |reply| CoreRequest::StartSession {
        account,
        ip: IP,
        remember: false,
        reply,
    });
    let Response::LoginFail(f) = answer else { panic!("{answer:?}") };
    assert_eq!(f.reason, Reason::Internal);
    assert!(f.message.contains("cannot write its journal"), "{}", f.message);
    let portfolio = call(&mut core, |reply| CoreRequest::User {
        session: session.clone(),
        username: Username::new("alice").unwrap(),
        query: UserQuery::Portfolio,
        reply,
    });
    assert!(matches!(portfolio, Response::Data(DataPayload::Portfolio(_))), "{portfolio:?}");
}

/// A rehash is stored durably (a restart finds the new hash), only over the hash the login
/// verified (a second login's rehash over the old one changes nothing), and not while the
/// journal is halted.
#[test]
fn a_rehash_replaces_only_the_hash_it_was_made_for() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, journal) =
        open_with(dir.path(), JournalConfig::default(), &SessionsConfig::default(), 100);
    assert_eq!(register(&mut core, "alice"), Response::RegisterSuccess);
    let username = || Username::new("alice").unwrap();
    let (account, old) =
        call(&mut core, |reply| CoreRequest::Credentials { username: username(), reply })
            .expect("registered");
    let new = PasswordHash::new("$argon2id$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$bmV3").unwrap();
    let other = PasswordHash::new("$argon2id$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$b3RoZXI").unwrap();
    let rehash = |core: &mut Core, stored: &PasswordHash, rehashed: &PasswordHash| {
        call(core, |reply| CoreRequest::RehashPassword {
            account,
            stored: stored.clone(),
            rehashed: rehashed.clone(),
            reply,
        })
    };
    assert_eq!(rehash(&mut core, &old, &new), Ok(true));
    assert_eq!(rehash(&mut core, &old, &other), Ok(false), "already rehashed by another login");
    let stored = call(&mut core, |reply| CoreRequest::Credentials { username: username(), reply });
    assert_eq!(stored, Some((account, new.clone())));
    journal.halt("a snapshot part could not be written");
    let refused = rehash(&mut core, &new, &other);
    assert!(
        refused.as_ref().is_err_and(|why| why.contains("cannot write its journal")),
        "{refused:?}"
    );
    drop(core);
    drop(journal);

    let mut core = open(dir.path());
    let stored = call(&mut core, |reply| CoreRequest::Credentials { username: username(), reply });
    assert_eq!(stored, Some((account, new)));
}

/// The interval loop's lane comes first: a `Settle` sent after thousands of client requests is
/// handled before them (here, before a portfolio query queued earlier, which then sees the
/// fill), so queries cannot delay settlement and the answers of the orders waiting for it.
#[test]
fn settlement_does_not_wait_behind_queued_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = open(dir.path());
    call(&mut core, |reply| CoreRequest::ListAssets { symbols: vec![sym("AAPL")], reply }).unwrap();
    assert_eq!(register(&mut core, "alice"), Response::RegisterSuccess);
    let session = login(&mut core, "alice");
    let mut buy = order(&mut core, &session, Side::Buy, "3", 1);

    let (requests, requests_rx) = tokio::sync::mpsc::channel(4096);
    let (intervals, intervals_rx) = tokio::sync::mpsc::channel(2);
    // Queued first: a thousand lookups, then the portfolio query.
    let mut lookups = Vec::new();
    for _ in 0..1000 {
        let (reply, rx) = oneshot::channel();
        let username = Username::new("alice").unwrap();
        requests.blocking_send(CoreRequest::Credentials { username, reply }).unwrap();
        lookups.push(rx);
    }
    let (reply, mut portfolio) = oneshot::channel();
    let query = CoreRequest::User {
        session: session.clone(),
        username: Username::new("alice").unwrap(),
        query: UserQuery::Portfolio,
        reply,
    };
    requests.blocking_send(query).unwrap();
    // Then the interval, on its own lane, and the wake-up.
    let (reply, settled) = oneshot::channel();
    intervals.blocking_send(CoreRequest::Settle { batch: batch("100"), reply }).unwrap();
    requests.blocking_send(CoreRequest::Wake).unwrap();
    drop(requests);
    let thread = std::thread::spawn(move || core.run_with_intervals(requests_rx, intervals_rx));
    assert!(!settled.blocking_recv().unwrap().failed);
    assert!(matches!(thread.join().unwrap(), master::core::CoreEnd::Stopped));
    assert!(matches!(buy.try_recv(), Ok(Response::PurchaseSuccess(_))));
    let Ok(Response::Data(DataPayload::Portfolio(p))) = portfolio.try_recv() else {
        panic!("the portfolio query was answered")
    };
    assert_eq!(p.holdings.len(), 1, "settled before the query queued ahead of it: {p:?}");
    assert!(lookups.iter_mut().all(|rx| matches!(rx.try_recv(), Ok(Some(_)))));
}

/// A price older than the asset's current one (a provider's stale cache serving Friday after
/// Monday) does not move the price back: the asset has no price that interval, and its orders
/// are refused `no_price` instead of filling at the older close.
#[test]
fn a_price_older_than_the_current_one_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = open(dir.path());
    call(&mut core, |reply| CoreRequest::ListAssets { symbols: vec![sym("AAPL")], reply }).unwrap();
    assert_eq!(register(&mut core, "alice"), Response::RegisterSuccess);
    let session = login(&mut core, "alice");
    let at = |close: &str, time: i64| {
        let mut batch = batch(close);
        let mut tick = batch.ticks.ticks()[0];
        tick.time = Timestamp(time);
        batch.ticks = TickSet::new(vec![tick]).unwrap();
        batch
    };
    let settle_at = |core: &mut Core, close: &str, time: i64| {
        let summary = call(core, |reply| CoreRequest::Settle { batch: at(close, time), reply });
        assert!(!summary.failed, "{summary:?}");
    };
    settle_at(&mut core, "100", 10);
    let mut stale = order(&mut core, &session, Side::Buy, "1", 1);
    settle_at(&mut core, "50", 5);
    match stale.try_recv().unwrap() {
        Response::PurchaseFail(f) => {
            assert_eq!(f.reason, Reason::Rejected(engine::RejectReason::NoPrice), "{f:?}");
        }
        other => panic!("filled at the older price: {other:?}"),
    }
    // The price restated (same time) is used, and is still the newer one.
    let mut restated = order(&mut core, &session, Side::Buy, "1", 2);
    settle_at(&mut core, "100", 10);
    let Ok(Response::PurchaseSuccess(fill)) = restated.try_recv() else { panic!("not filled") };
    assert_eq!(fill.price, Price::parse("100").unwrap());
}

/// A session found expired when it is used is gone from the journal too, with the
/// interval's other expired sessions (a row left behind would come back after a restart with
/// longer limits).
#[test]
fn a_session_found_expired_on_use_leaves_the_journal_at_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let sessions = SessionsConfig {
        idle_timeout: std::time::Duration::from_millis(50),
        ..SessionsConfig::default()
    };
    let (mut core, journal) = open_with(dir.path(), JournalConfig::default(), &sessions, 100);
    call(&mut core, |reply| CoreRequest::ListAssets { symbols: vec![sym("AAPL")], reply }).unwrap();
    assert_eq!(register(&mut core, "alice"), Response::RegisterSuccess);
    let session = login(&mut core, "alice");
    assert_eq!(journal.sessions().unwrap().len(), 1);
    std::thread::sleep(std::time::Duration::from_millis(120));
    let mut late = order(&mut core, &session, Side::Buy, "1", 1);
    let Ok(Response::PurchaseFail(f)) = late.try_recv() else { panic!("answered at once") };
    assert_eq!(f.reason, Reason::BadSession);
    // Gone from memory at once; from the journal with the interval.
    assert_eq!(journal.sessions().unwrap().len(), 1);
    settle(&mut core, "100");
    assert_eq!(journal.sessions().unwrap().len(), 0);
}

/// On start, the stored sessions that expired while the master was stopped, and rows that do
/// not decode, are removed from the journal, and the journal still takes writes after. (That
/// they go in one commit, not one each, is not observable here: `Core::new` calls
/// `Journal::remove_sessions` once.)
#[test]
fn sessions_expired_while_stopped_are_removed_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let short = SessionsConfig {
        idle_timeout: std::time::Duration::from_millis(50),
        ..SessionsConfig::default()
    };
    let (mut core, journal) = open_with(dir.path(), JournalConfig::default(), &short, 100);
    call(&mut core, |reply| CoreRequest::ListAssets { symbols: vec![sym("AAPL")], reply }).unwrap();
    assert_eq!(register(&mut core, "alice"), Response::RegisterSuccess);
    for _ in 0..5 {
        login(&mut core, "alice");
    }
    journal.put_session([7; 32], b"not a session").unwrap();
    assert_eq!(journal.sessions().unwrap().len(), 6);
    drop(core);
    drop(journal);
    std::thread::sleep(std::time::Duration::from_millis(120));
    let (mut core, journal) = open_with(dir.path(), JournalConfig::default(), &short, 100);
    assert_eq!(journal.sessions().unwrap().len(), 0, "expired and unreadable rows removed");
    // The journal still takes writes: a new session is stored.
    login(&mut core, "alice");
    assert_eq!(journal.sessions().unwrap().len(), 1);
}

/// The order id a fill answer carries.
fn filled_order_id(rx: &mut oneshot::Receiver<Response>) -> u64 {
    match rx.try_recv().unwrap() {
        Response::PurchaseSuccess(fill) => fill.order.0,
        other => panic!("{other:?}"),
    }
}

/// With the next order id lost, the highest id given is found in the journal even when the
/// newest records hold no outcome (quiet intervals) and the highest id was a rejection, which
/// the state does not keep: the journal is read back to the last outcome.
#[test]
fn a_lost_next_order_id_is_found_behind_quiet_intervals() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = open(dir.path());
    call(&mut core, |reply| CoreRequest::ListAssets { symbols: vec![sym("AAPL")], reply }).unwrap();
    register(&mut core, "alice");
    let session = login(&mut core, "alice");
    let mut filled = order(&mut core, &session, Side::Buy, "1", 1);
    settle(&mut core, "10");
    assert_eq!(filled_order_id(&mut filled), 1);
    // Order 2 is refused at settlement (1000 in cash cannot buy a million), then quiet.
    let mut refused = order(&mut core, &session, Side::Buy, "1000000", 2);
    settle(&mut core, "10");
    match refused.try_recv().unwrap() {
        Response::PurchaseFail(f) => {
            assert_eq!(f.reason, Reason::Rejected(engine::RejectReason::InsufficientCash));
        }
        other => panic!("{other:?}"),
    }
    for _ in 0..5 {
        settle(&mut core, "10");
    }
    drop(core);
    {
        let (journal, _) =
            Journal::open(journal::path_in(dir.path()), JournalConfig::default()).unwrap();
        journal.remove_meta(master::core::NEXT_ORDER_ID_KEY).unwrap();
    }
    // Remembering no outcomes: the tail read at start is the last record, a quiet interval.
    let mut core = open_remembering(dir.path(), 0);
    let mut next = order(&mut core, &session, Side::Buy, "1", 3);
    settle(&mut core, "10");
    assert_eq!(filled_order_id(&mut next), 3, "order 2's id is not given again");
}

#[test]
fn a_lost_or_damaged_next_order_id_never_gives_an_id_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = open(dir.path());
    call(&mut core, |reply| CoreRequest::ListAssets { symbols: vec![sym("AAPL")], reply }).unwrap();
    register(&mut core, "alice");
    let session = login(&mut core, "alice");
    let mut ids = Vec::new();
    for client in 1..=2 {
        let mut buy = order(&mut core, &session, Side::Buy, "1", client);
        settle(&mut core, "10");
        ids.push(filled_order_id(&mut buy));
    }
    drop(core);
    // The stored value goes back to an old one, then is not 8 bytes long, then is gone.
    let damages: [&[u8]; 3] = [&1u64.to_be_bytes(), &[1, 2, 3], &[]];
    for (round, damage) in damages.into_iter().enumerate() {
        {
            let (journal, _) =
                Journal::open(journal::path_in(dir.path()), JournalConfig::default()).unwrap();
            if damage.is_empty() {
                journal.remove_meta(master::core::NEXT_ORDER_ID_KEY).unwrap();
            } else {
                journal.put_meta(master::core::NEXT_ORDER_ID_KEY, damage).unwrap();
            }
        }
        // Remembering no outcomes, so that the journal's tail gives nothing back: the ids
        // come from the fills in the state.
        let mut core = open_remembering(dir.path(), 0);
        let mut buy = order(&mut core, &session, Side::Buy, "1", 10 + round as u64);
        settle(&mut core, "10");
        let id = filled_order_id(&mut buy);
        assert!(!ids.contains(&id), "round {round}: id {id} was given before: {ids:?}");
        ids.push(id);
    }
}
