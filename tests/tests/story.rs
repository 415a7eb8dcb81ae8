//! The full story, end to end over loopback: a master and two workers on real TCP with a real
//! redb journal in a temp dir; a client speaking the wire protocol registers, logs in, buys,
//! sells, reads its portfolio, history and prices, resumes its session through the other worker,
//! and finds everything again after the whole cluster restarts. The journal then audits clean.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use engine::{Cash, Email, Qty, RejectReason, Symbol, Username};
use net::{
    ConnState, DataPayload, FramedStream, HashedPassword, Reason, Request, Response, SessionId,
};
use pt_tools::up::{Cluster, ClusterConfig};
use tokio::net::TcpStream;

struct Client(FramedStream<TcpStream>);

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        Client(FramedStream::new(TcpStream::connect(addr).await.unwrap()))
    }

    async fn send(&mut self, request: Request) -> Response {
        self.0.write_request(&request).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.0.read_response())
            .await
            .expect("an answer within 30 s")
            .unwrap()
            .expect("the connection stays open")
    }

    async fn data(&mut self, session: SessionId, request: Request) -> DataPayload {
        let switched =
            self.send(Request::SwitchState { session, state: ConnState::DataTransfer }).await;
        assert!(
            matches!(switched, Response::StateSwitchSuccess(ConnState::DataTransfer)),
            "{switched:?}"
        );
        let response = self.send(request).await;
        let back = self.send(Request::SwitchState { session, state: ConnState::Command }).await;
        assert!(matches!(back, Response::StateSwitchSuccess(ConnState::Command)), "{back:?}");
        match response {
            Response::Data(payload) => payload,
            other => panic!("expected data, got {other:?}"),
        }
    }
}

fn user(name: &str) -> Username {
    Username::new(name).unwrap()
}

fn password(byte: u8) -> HashedPassword {
    HashedPassword::new(vec![byte; 32]).unwrap()
}

fn sym(s: &str) -> Symbol {
    Symbol::new(s).unwrap()
}

fn config(dir: &std::path::Path) -> ClusterConfig {
    ClusterConfig {
        data_dir: dir.to_path_buf(),
        workers: 2,
        interval: Duration::from_millis(100),
        prices: None,
        master_port: 0,
        worker_port: 0,
    }
}

/// Registers `name` (`name@example.com`) with password `byte`, which must succeed.
async fn register(client: &mut Client, name: &str, byte: u8) {
    let register = Request::Register {
        username: user(name),
        email: Email::new(&format!("{name}@example.com")).unwrap(),
        password: password(byte),
    };
    assert_eq!(client.send(register).await, Response::RegisterSuccess, "register {name}");
}

async fn login(client: &mut Client, name: &str, byte: u8) -> SessionId {
    match client
        .send(Request::Login { username: user(name), password: password(byte), expirable: false })
        .await
    {
        Response::SessionId(session) => session,
        other => panic!("login {name}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_trade_read_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(config(dir.path())).await.unwrap();
    let w1 = cluster.workers()[0].addr;
    let w2 = cluster.workers()[1].addr;

    let mut alice = Client::connect(w1).await;
    register(&mut alice, "alice", 1).await;
    let again = alice
        .send(Request::Register {
            username: user("alice"),
            email: Email::new("a2@example.com").unwrap(),
            password: password(2),
        })
        .await;
    assert!(matches!(again, Response::RegisterFail(f) if f.reason == Reason::UsernameTaken));
    let wrong = alice
        .send(Request::Login { username: user("alice"), password: password(9), expirable: false })
        .await;
    assert!(
        matches!(wrong, Response::LoginFail(ref f) if f.reason == Reason::BadCredentials),
        "{wrong:?}"
    );
    let session = login(&mut alice, "alice", 1).await;

    // Buy, then sell part: each answered after its interval with the fill.
    let bought = alice
        .send(Request::Purchase {
            session,
            symbol: sym("AAPL"),
            qty: Qty::from_units(10).unwrap(),
            client_order_id: 1,
        })
        .await;
    let Response::PurchaseSuccess(buy) = bought else { panic!("{bought:?}") };
    assert_eq!(buy.qty, Qty::from_units(10).unwrap());
    assert_eq!(buy.amount, engine::money::notional(buy.price, buy.qty, engine::Side::Buy).unwrap());
    // A retry of the same order (same client order id) is answered the same, not filled twice.
    let retried = alice
        .send(Request::Purchase {
            session,
            symbol: sym("AAPL"),
            qty: Qty::from_units(10).unwrap(),
            client_order_id: 1,
        })
        .await;
    assert_eq!(retried, Response::PurchaseSuccess(buy));
    let sold = alice
        .send(Request::Sell {
            session,
            symbol: sym("AAPL"),
            qty: Qty::from_units(4).unwrap(),
            client_order_id: 2,
        })
        .await;
    let Response::SellSuccess(sell) = sold else { panic!("{sold:?}") };
    // FB has no price in 2000: refused with the engine's reason, after the interval.
    let fb = alice
        .send(Request::Purchase {
            session,
            symbol: sym("FB"),
            qty: Qty::from_units(1).unwrap(),
            client_order_id: 3,
        })
        .await;
    assert!(
        matches!(fb, Response::PurchaseFail(ref f) if f.reason == Reason::Rejected(RejectReason::NoPrice)),
        "{fb:?}"
    );
    let tsla = alice
        .send(Request::Purchase {
            session,
            symbol: sym("TSLA"),
            qty: Qty::from_units(1).unwrap(),
            client_order_id: 4,
        })
        .await;
    assert!(
        matches!(tsla, Response::PurchaseFail(ref f) if f.reason == Reason::Rejected(RejectReason::UnknownSymbol)),
        "{tsla:?}"
    );

    let expected_cash = Cash::parse("100000")
        .unwrap()
        .checked_sub(buy.amount)
        .unwrap()
        .checked_add(sell.amount)
        .unwrap();
    let DataPayload::Portfolio(portfolio) =
        alice.data(session, Request::GetUserPortfolio { session, username: user("alice") }).await
    else {
        panic!()
    };
    assert_eq!(portfolio.cash, expected_cash);
    assert_eq!(portfolio.holdings.len(), 1);
    assert_eq!(portfolio.holdings[0].qty, Qty::from_units(6).unwrap());
    let DataPayload::TransactionHistory { entries: history, older: 0 } = alice
        .data(session, Request::GetUserTransactionHistory { session, username: user("alice") })
        .await
    else {
        panic!()
    };
    assert_eq!(history.len(), 2);
    let DataPayload::AssetInfo(tick) =
        alice.data(session, Request::GetAssetValueCurrent { symbol: sym("AAPL") }).await
    else {
        panic!()
    };
    assert_eq!(tick.symbol, sym("AAPL"));
    let DataPayload::PriceSeries(series) =
        alice.data(session, Request::GetAssetValueAllTime { symbol: sym("AAPL") }).await
    else {
        panic!()
    };
    assert!(!series.bars.is_empty());

    // The same session through the other worker, on a new connection.
    let mut again = Client::connect(w2).await;
    assert_eq!(again.send(Request::LoginSession { session }).await, Response::SessionId(session));
    let DataPayload::UserInfo(me) =
        again.data(session, Request::GetUserInfo { session, username: user("alice") }).await
    else {
        panic!()
    };
    assert_eq!(me.email.map(|e| e.to_string()), Some("alice@example.com".to_owned()));

    // Another user sees alice's public view: never her email.
    let mut bob = Client::connect(w2).await;
    register(&mut bob, "bob", 3).await;
    let bob_session = login(&mut bob, "bob", 3).await;
    let DataPayload::UserInfo(public) = bob
        .data(bob_session, Request::GetUserInfo { session: bob_session, username: user("alice") })
        .await
    else {
        panic!()
    };
    assert_eq!(public.email, None);
    assert_eq!(public.username, user("alice"));

    // Fractional quantities, where rounding happens: a buy pays the exact notional rounded up
    // to the next 10^-8, a sell receives it rounded down, and a partial sell removes the cost
    // basis pro rata rounded down (docs/ENGINE.md). Worked out here from the fills' prices, in
    // 128 bits, without the engine's code.
    const SCALE: u128 = 100_000_000;
    let exact = |price: engine::Price, qty: Qty| {
        let product = u128::from(price.raw()) * u128::from(qty.raw());
        (product / SCALE, product % SCALE)
    };
    let (bought_qty, sold_qty) = (Qty::from_raw(33_333_333), Qty::from_raw(10_000_001));
    let bob_bought = bob
        .send(Request::Purchase {
            session: bob_session,
            symbol: sym("AAPL"),
            qty: bought_qty,
            client_order_id: 1,
        })
        .await;
    let Response::PurchaseSuccess(bob_buy) = bob_bought else { panic!("{bob_bought:?}") };
    let (whole, rest) = exact(bob_buy.price, bought_qty);
    assert_ne!(rest, 0, "the buy needs rounding, or it tests nothing");
    assert_eq!(u128::from(bob_buy.amount.raw()), whole + 1, "a buy rounds up");
    let bob_sold = bob
        .send(Request::Sell {
            session: bob_session,
            symbol: sym("AAPL"),
            qty: sold_qty,
            client_order_id: 2,
        })
        .await;
    let Response::SellSuccess(bob_sell) = bob_sold else { panic!("{bob_sold:?}") };
    let (whole, rest) = exact(bob_sell.price, sold_qty);
    assert_ne!(rest, 0, "the sell needs rounding, or it tests nothing");
    assert_eq!(u128::from(bob_sell.amount.raw()), whole, "a sell rounds down");
    let DataPayload::Portfolio(bobs) = bob
        .data(
            bob_session,
            Request::GetUserPortfolio { session: bob_session, username: user("bob") },
        )
        .await
    else {
        panic!()
    };
    let initial = u128::from(Cash::parse("100000").unwrap().raw());
    let cash = initial - u128::from(bob_buy.amount.raw()) + u128::from(bob_sell.amount.raw());
    assert_eq!(u128::from(bobs.cash.raw()), cash);
    assert_eq!(bobs.holdings.len(), 1);
    let held = &bobs.holdings[0];
    assert_eq!(held.qty.raw(), 33_333_333 - 10_000_001);
    let paid = u128::from(bob_buy.amount.raw());
    let removed = paid * u128::from(sold_qty.raw()) / u128::from(bought_qty.raw());
    assert_eq!(u128::from(held.cost_basis.raw()), paid - removed, "cost basis left");

    // The master gives a client the worker list and nothing else.
    let mut direct = Client::connect(cluster.master_addr()).await;
    let Response::Data(DataPayload::WorkerList(workers)) = direct.send(Request::GetWorkers).await
    else {
        panic!()
    };
    assert_eq!(workers.len(), 2);
    let refused = direct
        .send(Request::Login { username: user("alice"), password: password(1), expirable: false })
        .await;
    assert!(
        matches!(refused, Response::Error(ref f) if f.reason == Reason::Forbidden),
        "{refused:?}"
    );

    drop((alice, again, bob, direct));
    cluster.shutdown().await.unwrap();

    // Restart on the same data dir: accounts, holdings and the session are all there.
    let cluster = Cluster::start(config(dir.path())).await.unwrap();
    let mut back = Client::connect(cluster.workers()[1].addr).await;
    assert_eq!(back.send(Request::LoginSession { session }).await, Response::SessionId(session));
    let DataPayload::Portfolio(after) =
        back.data(session, Request::GetUserPortfolio { session, username: user("alice") }).await
    else {
        panic!()
    };
    // Prices moved on while the cluster was down and up again; the account did not.
    assert_eq!(after.cash, portfolio.cash);
    let positions = |p: &net::Portfolio| {
        p.holdings.iter().map(|h| (h.symbol, h.qty, h.cost_basis)).collect::<Vec<_>>()
    };
    assert_eq!(positions(&after), positions(&portfolio));
    let retried = back
        .send(Request::Purchase {
            session,
            symbol: sym("AAPL"),
            qty: Qty::from_units(10).unwrap(),
            client_order_id: 1,
        })
        .await;
    assert_eq!(
        retried,
        Response::PurchaseSuccess(buy),
        "a retry after a restart is still not filled twice"
    );
    drop(back);
    cluster.shutdown().await.unwrap();

    // The journal audits clean from genesis.
    let journal = journal::Journal::open_unrecovered(
        journal::path_in(dir.path()),
        journal::JournalConfig::default(),
    )
    .unwrap();
    let report = journal::audit(&journal, journal::AuditConfig::default(), &mut |_| {}).unwrap();
    assert!(report.problem.is_none(), "{report:?}");
    assert_eq!(report.accounts, 2);
}

/// Orders pipelined on one connection are relayed without waiting for each other: they settle
/// in the same interval, and their answers come back in request order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_orders_settle_together_and_answer_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut one = config(dir.path());
    one.workers = 1;
    // Long enough that the five relays, at once, fall within it even on a loaded machine; one
    // after another's answer, they would take five of them.
    one.interval = Duration::from_secs(2);
    let cluster = Cluster::start(one).await.unwrap();
    let mut client = Client::connect(cluster.workers()[0].addr).await;
    register(&mut client, "dana", 4).await;
    let session = login(&mut client, "dana", 4).await;
    let quantities = [1u64, 2, 3, 4, 5];
    for (i, units) in quantities.iter().enumerate() {
        let order = Request::Purchase {
            session,
            symbol: sym("IBM"),
            qty: Qty::from_units(*units).unwrap(),
            client_order_id: 100 + i as u64,
        };
        client.0.write_request(&order).await.unwrap();
    }
    let mut intervals = Vec::new();
    for units in quantities {
        let answer = tokio::time::timeout(Duration::from_secs(30), client.0.read_response())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Response::PurchaseSuccess(fill) = answer else { panic!("{answer:?}") };
        assert_eq!(fill.qty, Qty::from_units(units).unwrap(), "answers in request order");
        intervals.push(fill.interval);
    }
    intervals.dedup();
    // Relayed one after another's answer they would take five intervals; relayed at once they
    // settle together (an interval boundary may fall between them, splitting them in two).
    assert!(intervals.len() <= 2, "pipelined orders waited for each other: {intervals:?}");
    drop(client);
    cluster.shutdown().await.unwrap();
}

/// In a local cluster every client is on 127.0.0.1: failed logins, however many and from
/// whoever, do not lock the other local users out (the limit per address is raised; the one
/// per username holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_of_others_do_not_lock_a_local_user_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut one = config(dir.path());
    one.workers = 1;
    let cluster = Cluster::start(one).await.unwrap();
    let mut client = Client::connect(cluster.workers()[0].addr).await;
    register(&mut client, "erin", 5).await;
    // More failures than the default limit per address (20), each for its own username.
    for n in 0..25 {
        let attempt = Request::Login {
            username: user(&format!("nobody{n}")),
            password: password(9),
            expirable: false,
        };
        let answer = client.send(attempt).await;
        assert!(
            matches!(&answer, Response::LoginFail(f) if f.reason == Reason::BadCredentials),
            "attempt {n}: {answer:?}"
        );
    }
    login(&mut client, "erin", 5).await;
    drop(client);
    cluster.shutdown().await.unwrap();
}
