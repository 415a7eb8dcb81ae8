//! The worker over real loopback TCP: real clients on one side, a real protocol peer with real
//! OpenPGP keys in the master's place on the other (`common::TestMaster`), counting what reaches
//! it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    Client, Event, Keys, SESSION, TestMaster, TestWorker, all_time, answer, answer_at_once,
    cluster, current, hold_purchases, hold_purchases_where, info, portfolio, purchase, reason,
    worker_config,
};
use engine::{Symbol, Timestamp};
use net::{
    ConnState, DataPayload, Failure, Instruction, Period, Reason, Relay, Request, Response,
    SessionId,
};

fn count(relays: &[Relay], instruction: Instruction) -> usize {
    relays.iter().filter(|r| r.request.instruction() == instruction).count()
}

fn asset_info_of(response: &Response) -> &str {
    match response {
        Response::Data(DataPayload::AssetInfo(tick)) => tick.symbol.as_str(),
        other => panic!("expected asset info, got {other:?}"),
    }
}

#[tokio::test]
async fn a_second_identical_price_query_in_one_interval_does_not_reach_the_master() {
    let (_keys, mut master, worker) = cluster(answer_at_once(), |_| {}).await;
    let mut alice = worker.client().await;
    alice.login_for_data().await;
    let first = alice.call(&current("AAPL")).await;
    assert_eq!(asset_info_of(&first), "AAPL");
    assert_eq!(alice.call(&current("AAPL")).await, first);
    // Another client asking the same thing is served from the same cache.
    let mut bob = worker.client().await;
    bob.login_for_data().await;
    assert_eq!(bob.call(&current("AAPL")).await, first);
    // A different query is not.
    assert_eq!(asset_info_of(&bob.call(&info("AAPL")).await), "AAPL");

    let relays = master.drain_relays();
    assert_eq!(count(&relays, Instruction::GetAssetValueCurrent), 1, "{relays:?}");
    assert_eq!(count(&relays, Instruction::GetAssetInfo), 1);
    // The logins were relayed; the state switches were answered by the worker.
    assert_eq!(count(&relays, Instruction::Login), 2);
    assert_eq!(relays.len(), 4);
    let stats = worker.stats();
    assert_eq!((stats.cache_hits, stats.cache_misses), (2, 2));
}

#[tokio::test]
async fn relays_carry_the_client_ip_the_session_and_increasing_receive_times() {
    let (_keys, mut master, worker) = cluster(answer_at_once(), |_| {}).await;
    let mut client = worker.client().await;
    assert_eq!(client.login(false).await, SESSION);
    let login = master.next_relay().await;
    assert_eq!(login.session, None);
    assert!(login.client_ip.is_loopback());
    let answer = client.call(&purchase(SESSION, "AAPL", 1)).await;
    assert!(matches!(answer, Response::PurchaseSuccess(_)), "{answer:?}");
    let order = master.next_relay().await;
    assert_eq!(order.session, Some(SESSION));
    assert!(order.received_at > login.received_at);
    assert_eq!(order.request, purchase(SESSION, "AAPL", 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_bad_frames_is_answered_and_closed_while_others_keep_working() {
    let (_keys, _master, worker) = cluster(answer_at_once(), |_| {}).await;
    let mut good = worker.client().await;
    good.login_for_data().await;
    assert_eq!(asset_info_of(&good.call(&current("IBM")).await), "IBM");
    let frame = Request::GetWorkers.encode().unwrap().to_bytes().unwrap();

    // A frame of another protocol version.
    let mut bytes = frame.clone();
    bytes[0] = 9;
    let mut bad = Client::raw(worker.addr, &bytes, false).await;
    let answer = bad.receive().await;
    assert_eq!(answer.instruction(), Instruction::Error);
    assert_eq!(reason(&answer), Reason::UnsupportedVersion);
    assert!(bad.closed().await);

    // A frame announcing more data than a frame may hold: refused from its header.
    let mut bytes = frame.clone();
    bytes[16..20].copy_from_slice(&(1u32 << 20).to_be_bytes());
    let mut huge = Client::raw(worker.addr, &bytes, false).await;
    assert_eq!(reason(&huge.receive().await), Reason::TooLarge);
    assert!(huge.closed().await);

    // A request of more than one full packet (no request is near that): refused once its
    // body passes the limit, before the rest is buffered.
    let mut long = Request::GetWorkers.encode().unwrap();
    long.body = vec![0; net::limits::REQUEST_BODY_BYTES_MAX + 1];
    let frames = net::split_payload(&long, net::limits::FRAME_DATA_BYTES_MAX).unwrap();
    assert_eq!(frames.len(), 2);
    let bytes: Vec<u8> = frames.iter().flat_map(net::Frame::to_bytes).collect();
    let mut long = Client::raw(worker.addr, &bytes, false).await;
    assert_eq!(reason(&long.receive().await), Reason::TooLarge);
    assert!(long.closed().await);

    // Packets out of order: packet 2 of 3 first.
    let message = all_time("AAPL").encode().unwrap();
    let frames = net::split_payload(&message, 4).unwrap();
    let mut disorder = Client::raw(worker.addr, &frames[1].to_bytes(), false).await;
    assert_eq!(reason(&disorder.receive().await), Reason::Malformed);
    assert!(disorder.closed().await);

    // EOF in the middle of a header: closed without a word.
    let mut cut = Client::raw(worker.addr, &frame[..7], true).await;
    assert!(cut.closed().await);

    // Well-framed but wrong: answered, and the connection goes on.
    let mut sloppy = worker.client().await;
    let mut unknown = Request::GetWorkers.encode().unwrap();
    unknown.instruction = 0x01ff;
    sloppy.framed.write_message(&unknown).await.unwrap();
    let answer = sloppy.receive().await;
    assert_eq!(answer.instruction(), Instruction::Error);
    assert_eq!(reason(&answer), Reason::UnknownInstruction);
    let mut short = current("AAPL").encode().unwrap();
    short.arg_count = 2;
    sloppy.framed.write_message(&short).await.unwrap();
    let answer = sloppy.receive().await;
    assert_eq!((answer.instruction(), reason(&answer)), (Instruction::DataFail, Reason::Malformed));
    assert!(matches!(sloppy.call(&Request::GetWorkers).await, Response::Data(_)));

    // The good client never noticed.
    assert_eq!(asset_info_of(&good.call(&current("MSFT")).await), "MSFT");
    assert_eq!(asset_info_of(&good.call(&current("IBM")).await), "IBM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let (_keys, mut master, worker) = cluster(answer_at_once(), |_| {}).await;
    let mut client = worker.client().await;
    let session = client.login_for_data().await;
    // Seed the cache so that the answers come from the cache, the worker and the master.
    client.call(&current("AAPL")).await;
    let day = Request::GetAssetValue {
        symbol: Symbol::new("IBM").unwrap(),
        period: Period::Day,
        date: Timestamp(0),
    };
    let mut unknown = Request::GetWorkers.encode().unwrap();
    unknown.instruction = 0x02ff;
    client.send(&current("MSFT")).await;
    client.send(&current("AAPL")).await;
    client.send(&day).await;
    client.framed.write_message(&unknown).await.unwrap();
    client.send(&portfolio(session)).await;
    client.send(&Request::SwitchState { session, state: ConnState::Command }).await;
    client.send(&purchase(session, "AAPL", 1)).await;
    client.send(&current("GOOG")).await;

    assert_eq!(asset_info_of(&client.receive().await), "MSFT");
    assert_eq!(asset_info_of(&client.receive().await), "AAPL");
    assert!(matches!(
        client.receive().await,
        Response::Data(DataPayload::PriceSeries(series)) if series.symbol.as_str() == "IBM"
    ));
    assert_eq!(reason(&client.receive().await), Reason::UnknownInstruction);
    assert!(matches!(client.receive().await, Response::Data(DataPayload::Portfolio(_))));
    assert_eq!(client.receive().await, Response::StateSwitchSuccess(ConnState::Command));
    assert!(matches!(client.receive().await, Response::PurchaseSuccess(_)));
    // Back in command state, a get is refused by the state machine.
    let answer = client.receive().await;
    assert_eq!(
        (answer.instruction(), reason(&answer)),
        (Instruction::DataFail, Reason::WrongState)
    );

    let relayed: Vec<Instruction> =
        master.drain_relays().iter().map(|r| r.request.instruction()).collect();
    assert_eq!(
        relayed,
        [
            Instruction::Login,
            Instruction::GetAssetValueCurrent,
            Instruction::GetAssetValueCurrent,
            Instruction::GetAssetValueDay,
            Instruction::GetUserPortfolio,
            Instruction::PurchaseAsset,
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_waiting_for_its_interval_does_not_hold_up_other_clients() {
    let (handler, held) = hold_purchases();
    let (_keys, mut master, worker) = cluster(handler, |_| {}).await;
    let mut alice = worker.client().await;
    let session = alice.login(false).await;
    alice.send(&purchase(session, "AAPL", 1)).await;
    master.next_relay_of(Instruction::PurchaseAsset).await;
    // While Alice's order waits, Bob is served (the link carries his relays and their replies
    // overtake Alice's).
    let mut bob = worker.client().await;
    let bob_session = bob.login_for_data().await;
    assert!(matches!(bob.call(&portfolio(bob_session)).await, Response::Data(_)));
    assert_eq!(asset_info_of(&bob.call(&current("IBM")).await), "IBM");
    // The interval settles.
    held.lock().unwrap().drain(..).for_each(|release| {
        let _ = release.send(());
    });
    assert!(matches!(alice.receive().await, Response::PurchaseSuccess(_)));
}

/// A login the master answers after `link.relay_timeout` made a session its client never
/// learned (the client was told `master_unavailable`): the worker logs that session out on the
/// master, with the client's address, and the client's next login works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_login_answer_came_too_late_is_logged_out() {
    let releases: Arc<std::sync::Mutex<Vec<tokio::sync::oneshot::Sender<()>>>> = Arc::default();
    let held = Arc::clone(&releases);
    let logins = Arc::new(std::sync::atomic::AtomicU8::new(1));
    let handler: common::Handler = Arc::new(move |relay: Relay| match relay.request {
        Request::Login { .. } => {
            let n = logins.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let session = SessionId([n; 32]);
            // Only the first login is held.
            let (release, released) = tokio::sync::oneshot::channel();
            if n == 1 {
                held.lock().unwrap().push(release);
            } else {
                let _ = release.send(());
            }
            Box::pin(async move {
                let _ = released.await;
                Response::SessionId(session)
            })
        }
        _ => {
            let response = answer(&relay);
            Box::pin(async move { response })
        }
    });
    let (_keys, mut master, worker) =
        cluster(handler, |c| c.link.relay_timeout = Duration::from_secs(1)).await;
    let mut alice = worker.client().await;
    let login = Request::Login {
        username: engine::Username::new("alice").unwrap(),
        password: net::HashedPassword::new(vec![1; 32]).unwrap(),
        expirable: false,
    };
    let late = alice.call(&login).await;
    assert_eq!(reason(&late), Reason::MasterUnavailable, "{late:?}");
    master.next_relay_of(Instruction::Login).await;
    // The master's answer comes now, too late.
    for release in releases.lock().unwrap().drain(..) {
        let _ = release.send(());
    }
    let logout = master.next_relay_of(Instruction::Logout).await;
    assert_eq!(logout.request, Request::Logout { session: SessionId([1; 32]) });
    assert_eq!(logout.session, Some(SessionId([1; 32])));
    assert_eq!(logout.client_ip, "127.0.0.1".parse::<std::net::IpAddr>().unwrap());
    // The client's next login gets its own session, which stays.
    let again = alice.call(&login).await;
    assert_eq!(again, Response::SessionId(SessionId([2; 32])));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(count(&master.drain_relays(), Instruction::Logout), 0, "only the orphan ended");
}

/// An order the master does not answer within `link.relay_timeout` is answered
/// `master_unavailable` by the link task's sweep (a relay has no timer of its own), and the
/// master's late answer is dropped: the client gets one answer, and its connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_the_master_does_not_answer_in_time_gets_master_unavailable() {
    // Only the first order is held. The timeout (2 s) applies to every relay of the link: it is
    // long enough that the others, answered at once, beat it on a slow, shared machine.
    let (handler, held) = hold_purchases_where(|client_order_id| client_order_id == 1);
    let (_keys, mut master, worker) =
        cluster(handler, |c| c.link.relay_timeout = std::time::Duration::from_secs(2)).await;
    let mut alice = worker.client().await;
    let session = alice.login(false).await;
    alice.send(&purchase(session, "AAPL", 1)).await;
    let answer = alice.receive().await;
    assert!(matches!(answer, Response::PurchaseFail(_)), "{answer:?}");
    assert_eq!(reason(&answer), Reason::MasterUnavailable);
    let message = &answer.failure().unwrap().message;
    assert!(message.contains("did not answer within 2s"), "{message}");
    // The next orders get their own answers, also after the first order's late answer is let
    // go (the worker drops it).
    for client_order_id in 2..=4 {
        if client_order_id == 3 {
            let releases: Vec<_> = held.lock().unwrap().drain(..).collect();
            assert_eq!(releases.len(), 1, "only the first order was held");
            for release in releases {
                let _ = release.send(());
            }
        }
        alice.send(&purchase(session, "AAPL", client_order_id)).await;
        let relay_id = loop {
            let relay = master.next_relay().await;
            if matches!(relay.request, Request::Purchase { client_order_id: id, .. } if id == client_order_id)
            {
                break relay.relay_id;
            }
        };
        let next = alice.receive().await;
        let Response::PurchaseSuccess(fill) = &next else { panic!("{next:?}") };
        assert_eq!(fill.order, engine::OrderId(relay_id), "order {client_order_id}'s own answer");
    }
    assert_eq!(worker.stats.snapshot().master_unavailable, 1);
}

/// A login request, as `TestClient::login` sends it.
fn login_request() -> Request {
    Request::Login {
        username: engine::Username::new("alice").unwrap(),
        password: net::HashedPassword::new(vec![1; 32]).unwrap(),
        expirable: false,
    }
}

/// A relay past `link.relays_in_flight_max` is answered `busy` by the worker at once (never
/// relayed), and the next one after a place frees goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_past_the_in_flight_limit_is_busy_at_once() {
    let (handler, held) = hold_purchases();
    let (_keys, mut master, worker) = cluster(handler, |c| c.link.relays_in_flight_max = 1).await;
    let mut alice = worker.client().await;
    let session = alice.login(false).await;
    alice.send(&purchase(session, "AAPL", 1)).await;
    master.next_relay_of(Instruction::PurchaseAsset).await;
    let mut bob = worker.client().await;
    let answer = bob.call(&login_request()).await;
    assert_eq!(reason(&answer), Reason::Busy, "{answer:?}");
    assert!(master.drain_relays().is_empty(), "the busy request was relayed");
    held.lock().unwrap().drain(..).for_each(|release| {
        let _ = release.send(());
    });
    assert!(matches!(alice.receive().await, Response::PurchaseSuccess(_)));
    bob.login(false).await;
}

/// A master that stops answering (alive to TCP, silent on the link: no heartbeat answered, no
/// request to answer) is given up after `link.heartbeat_timeout`, so clients are not left
/// waiting on a dead link; the worker links again once the master answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_master_is_given_up_after_the_heartbeat_timeout() {
    let (_keys, mut master, worker) = cluster(answer_at_once(), |c| {
        c.link.heartbeat_interval = Duration::from_millis(50);
        c.link.heartbeat_timeout = Duration::from_millis(400);
    })
    .await;
    let mut alice = worker.client().await;
    alice.login(false).await;
    assert!(worker.stats().master_linked);
    master.acks_heartbeats.store(false, std::sync::atomic::Ordering::Relaxed);
    let given_up = tokio::time::timeout(Duration::from_secs(30), async {
        while worker.stats().master_linked {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    given_up.await.expect("the worker kept a silent master's link");
    master.acks_heartbeats.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(30), master.wait_link_up())
        .await
        .expect("the worker did not link again");
    let mut bob = worker.client().await;
    bob.login(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_restart_clients_get_master_unavailable_then_work_again() {
    let (handler, _held) = hold_purchases();
    let (keys, master, worker) = cluster(handler, |_| {}).await;
    let mut master = master;
    let master_addr = master.addr;
    let mut alice = worker.client().await;
    let session = alice.login(false).await;
    alice.send(&purchase(session, "AAPL", 1)).await;
    master.next_relay_of(Instruction::PurchaseAsset).await;
    let mut bob = worker.client().await;
    let bob_session = bob.login_for_data().await;
    let cached = bob.call(&current("AAPL")).await;

    master.stop().await;
    // The order waiting when the link dropped is answered, not lost in silence.
    let answer = alice.receive().await;
    assert_eq!(
        (answer.instruction(), reason(&answer)),
        (Instruction::PurchaseFail, Reason::MasterUnavailable)
    );
    // It was sent: whether it was executed is unknown, and the answer says how to learn it.
    let message = &answer.failure().unwrap().message;
    assert!(message.contains("whether the order was executed is unknown"), "{message}");
    assert!(message.contains("same client order id"), "{message}");
    // Requests that need the master fail clearly; cached data is still served.
    let answer = bob.call(&portfolio(bob_session)).await;
    assert_eq!(
        (answer.instruction(), reason(&answer)),
        (Instruction::DataFail, Reason::MasterUnavailable)
    );
    assert_eq!(bob.call(&current("AAPL")).await, cached);
    let answer = alice.call(&purchase(session, "AAPL", 2)).await;
    assert_eq!(reason(&answer), Reason::MasterUnavailable);
    // Not sent at all while the link is down (or refused as the master's answer would be).
    let message = &answer.failure().unwrap().message;
    assert!(!message.contains("unknown"), "{message}");

    // The master comes back on the same address; the worker reconnects by itself.
    let mut master = TestMaster::start(
        master_addr,
        keys.master.clone(),
        keys.registry.clone(),
        answer_at_once(),
    )
    .await;
    master.wait_link_up().await;
    assert!(matches!(bob.call(&portfolio(bob_session)).await, Response::Data(_)));
    assert!(matches!(
        alice.call(&purchase(session, "AAPL", 3)).await,
        Response::PurchaseSuccess(_)
    ));
    // The cache starts empty with the new link (the master may have restarted on other
    // data): the price cached before is asked again.
    assert_eq!(asset_info_of(&bob.call(&current("AAPL")).await), "AAPL");
    assert!(worker.stats().master_unavailable >= 3);
    let relays = master.drain_relays();
    assert_eq!(count(&relays, Instruction::PurchaseAsset), 1);
    assert_eq!(count(&relays, Instruction::GetAssetValueCurrent), 1, "{relays:?}");
}

/// An expirable session whose connection closes while the master is away is logged out when
/// the link is back, not left to the master's idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expirable_session_closed_while_the_master_is_away_ends_when_it_is_back() {
    let (keys, master, worker) = cluster(answer_at_once(), |_| {}).await;
    let master_addr = master.addr;
    let mut alice = worker.client().await;
    let session = alice.login(true).await;
    master.stop().await;
    // The worker sees the link down once a request fails for it.
    let answer = alice.call(&Request::Logout { session: SessionId([9; 32]) }).await;
    assert!(answer.failure().is_some(), "{answer:?}");
    drop(alice);
    let mut master = TestMaster::start(
        master_addr,
        keys.master.clone(),
        keys.registry.clone(),
        answer_at_once(),
    )
    .await;
    // (The logout may come before the link's first heartbeat: no wait for that.)
    let logout = master.next_relay_of(Instruction::Logout);
    let relay = tokio::time::timeout(Duration::from_secs(20), logout)
        .await
        .expect("the expirable session was logged out once the master was back");
    assert_eq!(relay.request, Request::Logout { session });
}

#[tokio::test]
async fn large_answers_go_out_in_numbered_packets() {
    let (_keys, _master, worker) = cluster(answer_at_once(), |config| {
        config.clients.packet_data_bytes = 1024;
    })
    .await;
    let mut client = worker.client().await;
    client.login_for_data().await;
    client.send(&all_time("BIG")).await;
    let mut progress = Vec::new();
    let message = client
        .framed
        .reader()
        .read_message_with_progress(|received, max| progress.push((received, max)))
        .await
        .unwrap()
        .unwrap();
    let max = u32::try_from(message.body.len().div_ceil(1024)).unwrap();
    assert!(max > 50, "{max} packets");
    let expected: Vec<(u32, u32)> = (1..=max).map(|n| (n, max)).collect();
    assert_eq!(progress, expected);
    match Response::decode(&message).unwrap() {
        Response::Data(DataPayload::PriceSeries(series)) => assert_eq!(series.bars.len(), 2000),
        other => panic!("{other:?}"),
    }
    // The cached copy goes out the same way.
    client.send(&all_time("BIG")).await;
    let mut packets = 0;
    client.framed.reader().read_message_with_progress(|_, _| packets += 1).await.unwrap();
    assert_eq!(packets, max);
    assert_eq!(worker.stats().cache_hits, 1);
}

/// A packet size too small for an answer in the protocol's 4,096 packets does not make the
/// answer unsendable: it goes out in the fewest larger packets that fit.
#[tokio::test]
async fn an_answer_too_large_for_the_packet_size_goes_in_larger_packets() {
    let (_keys, _master, worker) = cluster(answer_at_once(), |config| {
        config.clients.packet_data_bytes = 1;
    })
    .await;
    let mut client = worker.client().await;
    client.login_for_data().await;
    client.send(&all_time("BIG")).await;
    let mut packets = 0u32;
    let message = client
        .framed
        .reader()
        .read_message_with_progress(|_, max| packets = max)
        .await
        .unwrap()
        .unwrap();
    assert!(message.body.len() > 4096, "{} bytes", message.body.len());
    assert!(packets <= 4096 && packets > 1, "{packets} packets");
    match Response::decode(&message).unwrap() {
        Response::Data(DataPayload::PriceSeries(series)) => assert_eq!(series.bars.len(), 2000),
        other => panic!("{other:?}"),
    }
}

/// An answer from the master that cannot be read fails its own request only: the link stays
/// up and the other requests, before and after it, are answered.
#[tokio::test]
async fn an_unreadable_answer_from_the_master_fails_its_request_only() {
    let handler: common::Handler = Arc::new(|relay: Relay| {
        let response = match &relay.request {
            Request::GetAssetInfo { symbol } if symbol.as_str() == "BAD" => {
                Response::Error(Failure::new(Reason::Internal, common::UNREADABLE))
            }
            _ => answer(&relay),
        };
        Box::pin(async move { response })
    });
    let (_keys, _master, worker) = cluster(handler, |_| {}).await;
    let mut alice = worker.client().await;
    alice.login_for_data().await;
    let mut bob = worker.client().await;
    bob.login_for_data().await;
    assert_eq!(asset_info_of(&bob.call(&current("IBM")).await), "IBM");
    let bad = alice.call(&Request::GetAssetInfo { symbol: common::sym("BAD") }).await;
    assert_eq!((bad.instruction(), reason(&bad)), (Instruction::DataFail, Reason::Internal));
    // The link is still up: both clients are answered by the master.
    assert_eq!(asset_info_of(&alice.call(&current("AAPL")).await), "AAPL");
    assert_eq!(asset_info_of(&bob.call(&current("MSFT")).await), "MSFT");
    assert_eq!(worker.stats().master_unavailable, 0);
}

#[tokio::test]
async fn over_the_connection_limit_a_client_is_told_busy() {
    let (_keys, _master, worker) =
        cluster(answer_at_once(), |config| config.clients.connections_max = 1).await;
    let mut first = worker.client().await;
    assert!(matches!(first.call(&Request::GetWorkers).await, Response::Data(_)));
    let mut second = worker.client().await;
    let answer = second.receive().await;
    assert_eq!((answer.instruction(), reason(&answer)), (Instruction::Error, Reason::Busy));
    assert!(second.closed().await);
    assert!(matches!(first.call(&Request::GetWorkers).await, Response::Data(_)));
    assert_eq!(worker.stats().connections_refused, 1);
}

/// One address holds `clients.connections_per_address_max` places at most: one more from it is
/// told busy, naming the reason, while another address is served, and a place given back is
/// taken again.
#[tokio::test]
async fn one_address_cannot_take_every_place() {
    let (_keys, _master, worker) = cluster(answer_at_once(), |config| {
        config.clients.connections_max = 10;
        config.clients.connections_per_address_max = 2;
    })
    .await;
    let mut first = worker.client().await;
    let mut second = worker.client().await;
    for client in [&mut first, &mut second] {
        assert!(matches!(client.call(&Request::GetWorkers).await, Response::Data(_)));
    }
    let mut third = worker.client().await;
    let answer = third.receive().await;
    assert_eq!((answer.instruction(), reason(&answer)), (Instruction::Error, Reason::Busy));
    let Response::Error(failure) = &answer else { unreachable!() };
    assert!(failure.message.contains("2 connections from your address"), "{failure:?}");
    assert!(third.closed().await);
    // Another address (127.0.0.2, another host for the worker) has places of its own.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from(([127, 0, 0, 2], 0))).unwrap();
    let stream = socket.connect(worker.addr).await.unwrap();
    let mut elsewhere = common::Client { framed: net::FramedStream::new(stream) };
    assert!(matches!(elsewhere.call(&Request::GetWorkers).await, Response::Data(_)));
    // A place given back is free again.
    drop(first);
    let mut again = None;
    for _ in 0..100 {
        let mut client = worker.client().await;
        let answer = client.call(&Request::GetWorkers).await;
        if matches!(answer, Response::Data(_)) {
            again = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "the place of a closed connection came back");
}

/// A client that asked something, then stays silent for `clients.idle_timeout`, is closed
/// (the first-request timeout, an hour here, cannot be what closes it).
#[tokio::test]
async fn an_idle_client_is_disconnected() {
    let (_keys, _master, worker) = cluster(answer_at_once(), |config| {
        config.clients.idle_timeout = Duration::from_millis(100);
        config.clients.first_request_timeout = Duration::from_secs(3600);
    })
    .await;
    let mut client = worker.client().await;
    client.login(false).await;
    let closed = tokio::time::timeout(Duration::from_secs(60), client.closed()).await;
    assert_eq!(closed, Ok(true), "an idle client was not closed");
}

/// A connection that says nothing is closed after `clients.first_request_timeout`, long
/// before `idle_timeout`; one that sent a request is held to `idle_timeout` only.
#[tokio::test]
async fn a_silent_new_connection_is_closed_after_the_first_request_timeout() {
    let first_request_timeout = Duration::from_secs(1);
    let (_keys, _master, worker) = cluster(answer_at_once(), |config| {
        config.clients.first_request_timeout = first_request_timeout;
    })
    .await;
    let mut talking = worker.client().await;
    talking.login(false).await;
    let mut silent = worker.client().await;
    assert!(tokio::time::timeout(Duration::from_secs(30), silent.closed()).await.unwrap());
    tokio::time::sleep(first_request_timeout).await;
    talking.login(false).await;
}

/// A connection in data transfer state whose session is logged out on another connection is
/// back in command state, also for requests that carry no session (asset queries): they no
/// longer ride on the ended login. The first such query fails `bad_session`, as when the
/// master says the session ended (PROTOCOL.md rule 5), without asking it; the next one
/// `wrong_state`.
#[tokio::test]
async fn a_session_logged_out_elsewhere_ends_data_transfer_for_sessionless_requests() {
    let (_keys, _master, worker) = cluster(answer_at_once(), |_| {}).await;
    let mut alice = worker.client().await;
    let session = alice.login_for_data().await;
    assert_eq!(asset_info_of(&alice.call(&current("AAPL")).await), "AAPL");
    // The same session (the test master gives every login the same one), logged out elsewhere.
    let mut other = worker.client().await;
    assert_eq!(other.login(false).await, session);
    assert_eq!(other.call(&Request::Logout { session }).await, Response::LogoutSuccess);
    let refused = worker.stats().sessions_refused_locally;
    let answer = alice.call(&current("MSFT")).await;
    assert_eq!(
        (answer.instruction(), reason(&answer)),
        (Instruction::DataFail, Reason::BadSession),
        "{answer:?}"
    );
    assert_eq!(worker.stats().sessions_refused_locally, refused + 1);
    let answer = alice.call(&current("MSFT")).await;
    assert_eq!(
        (answer.instruction(), reason(&answer)),
        (Instruction::DataFail, Reason::WrongState),
        "{answer:?}"
    );
}

/// In data transfer, requests without a session (asset queries) ride on the connection's: once
/// it has not been confirmed for `sessions.validity`, the worker confirms it with the master
/// first (which also keeps an active session from expiring there). A session the master ended
/// (another worker's logout, an expiry) stops serving here: the query fails `bad_session` and
/// the connection is back in command state.
#[tokio::test]
async fn data_transfer_confirms_its_session_after_validity() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let ended = Arc::new(AtomicBool::new(false));
    let master_ended = Arc::clone(&ended);
    let handler: common::Handler = Arc::new(move |relay: Relay| {
        let response = match relay.request {
            Request::LoginSession { .. } if master_ended.load(Ordering::SeqCst) => {
                Response::LoginFail(Failure::new(Reason::BadSession, "this session has ended"))
            }
            _ => answer(&relay),
        };
        Box::pin(async move { response })
    });
    let (_keys, mut master, worker) = cluster(handler, |config| {
        config.sessions.validity = Duration::from_millis(1);
        config.cache.ttl = Duration::from_millis(1);
    })
    .await;
    let mut alice = worker.client().await;
    alice.login_for_data().await;
    master.drain_relays();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(asset_info_of(&alice.call(&current("AAPL")).await), "AAPL");
    let relays = master.drain_relays();
    assert_eq!(count(&relays, Instruction::LoginSession), 1, "confirmed first: {relays:?}");
    // The master ends the session (another worker logged it out).
    ended.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let answer = alice.call(&current("MSFT")).await;
    assert_eq!(
        (answer.instruction(), reason(&answer)),
        (Instruction::DataFail, Reason::BadSession)
    );
    let answer = alice.call(&current("MSFT")).await;
    assert_eq!(
        (answer.instruction(), reason(&answer)),
        (Instruction::DataFail, Reason::WrongState),
        "back in command state: {answer:?}"
    );
}

/// Only the asset queries ride on the connection's session in data transfer: past
/// `sessions.validity`, `getWorkers` is answered without a session check, and a `login` is
/// refused `wrong_state` at once (PROTOCOL.md rules 4 and 5), even with the session ended on
/// the master.
#[tokio::test]
async fn only_asset_queries_confirm_the_session_in_data_transfer() {
    let handler = common::refuse_session_checks(Reason::BadSession, "this session has ended");
    let (_keys, mut master, worker) = cluster(handler, |config| {
        config.sessions.validity = Duration::from_millis(1);
    })
    .await;
    let mut alice = worker.client().await;
    alice.login_for_data().await;
    master.drain_relays();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let workers = alice.call(&Request::GetWorkers).await;
    assert!(matches!(workers, Response::Data(DataPayload::WorkerList(_))), "{workers:?}");
    let login = alice
        .call(&Request::Login {
            username: engine::Username::new("alice").unwrap(),
            password: net::HashedPassword::new(vec![1; 32]).unwrap(),
            expirable: false,
        })
        .await;
    assert_eq!((login.instruction(), reason(&login)), (Instruction::LoginFail, Reason::WrongState));
    let relays = master.drain_relays();
    assert_eq!(count(&relays, Instruction::LoginSession), 0, "no session check: {relays:?}");
    // An asset query checks the session, which the master ended.
    let answer = alice.call(&current("MSFT")).await;
    assert_eq!(
        (answer.instruction(), reason(&answer)),
        (Instruction::DataFail, Reason::BadSession)
    );
}

/// Anyone may send `loginSession` with made-up sessions without logging in: the master's
/// refusals of sessions the worker never saw are not remembered, so they cannot push the
/// sessions of logged-in clients out of the worker's session cache (which spares those clients
/// a master round trip at their next `switchState`).
#[tokio::test]
async fn guessed_sessions_do_not_push_real_ones_out_of_the_cache() {
    let (_keys, mut master, worker) = cluster(answer_at_once(), |config| {
        config.sessions.entries_max = 2;
    })
    .await;
    let mut alice = worker.client().await;
    let session = alice.login(false).await;
    let mut guesser = worker.client().await;
    for byte in 1..=5u8 {
        let guess = Request::LoginSession { session: SessionId([byte; 32]) };
        let refused = guesser.call(&guess).await;
        assert_eq!(
            (refused.instruction(), reason(&refused)),
            (Instruction::LoginFail, Reason::BadSession)
        );
    }
    assert_eq!(worker.stats().sessions_refused_locally, 0);
    master.drain_relays();
    let switch = Request::SwitchState { session, state: ConnState::DataTransfer };
    assert_eq!(alice.call(&switch).await, Response::StateSwitchSuccess(ConnState::DataTransfer));
    let relays = master.drain_relays();
    assert_eq!(count(&relays, Instruction::LoginSession), 0, "still known here: {relays:?}");
}

/// Histories and price series may be large, and a client that does not read holds its answer
/// while it is written: one client address has at most its share of them being written at once
/// (of `LARGE_ANSWERS_MAX` for the worker), and one more is answered `busy`. A place is taken
/// once the answer is there (waiting for the master holds none) and given back once it is
/// written.
#[tokio::test]
async fn large_answers_being_written_are_capped_per_address() {
    // Series of the most bars the protocol allows: megabytes, more than loopback buffers hold.
    let handler: common::Handler = Arc::new(move |relay: Relay| {
        let response = match &relay.request {
            Request::GetAssetValueAllTime { symbol } => {
                let bar = common::bars_for(*symbol)[0];
                let bars = (0..net::limits::PRICE_SERIES_BARS_MAX)
                    .map(|i| net::Bar { time: engine::Timestamp(i64::try_from(i).unwrap()), ..bar })
                    .collect();
                Response::Data(DataPayload::PriceSeries(net::PriceSeries { symbol: *symbol, bars }))
            }
            _ => answer(&relay),
        };
        Box::pin(async move { response })
    });
    let (_keys, _master, worker) = cluster(handler, |_| {}).await;
    let clients = worker::WorkerConfig::default().clients;
    let per_address = worker::server::large_answers_per_address(&clients) as usize;
    assert_eq!(per_address, 4, "the default share: 256 of 1,024 connections");
    let symbols = ["AAPL", "MSFT", "IBM", "GOOG", "AMZN"];
    // Clients that ask and do not read: their answers stay in the middle of being written.
    let mut stalled = Vec::new();
    for symbol in &symbols[..per_address] {
        let mut client = worker.client().await;
        client.login_for_data().await;
        client.send(&all_time(symbol)).await;
        stalled.push(client);
    }
    let mut late = worker.client().await;
    late.login_for_data().await;
    // The stalled answers take their places as they come from the master: a few tries.
    let mut refused = late.call(&all_time(symbols[per_address])).await;
    for _ in 0..200 {
        if matches!(&refused, Response::DataFail(f) if f.reason == Reason::Busy) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        refused = late.call(&all_time(symbols[per_address])).await;
    }
    assert_eq!((refused.instruction(), reason(&refused)), (Instruction::DataFail, Reason::Busy));
    assert!(refused.failure().unwrap().message.contains("this address"), "{refused:?}");
    // Small answers are served meanwhile.
    assert_eq!(asset_info_of(&late.call(&current("AAPL")).await), "AAPL");

    for client in &mut stalled {
        assert!(matches!(client.receive().await, Response::Data(DataPayload::PriceSeries(_))));
    }
    // The places are back once those answers are written (just before their clients read the
    // last of them: a few tries cover the last ones).
    let mut answer = late.call(&all_time(symbols[per_address])).await;
    for _ in 0..200 {
        if !matches!(&answer, Response::DataFail(f) if f.reason == Reason::Busy) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        answer = late.call(&all_time(symbols[per_address])).await;
    }
    assert!(matches!(answer, Response::Data(DataPayload::PriceSeries(_))), "{answer:?}");
}

/// A master that cannot answer the session check (busy here) is not asked again by that
/// connection for `sessions.validity`: the queries go on, from the cache or the master,
/// without a check each.
#[tokio::test]
async fn a_session_check_the_master_cannot_answer_is_not_repeated_at_once() {
    let handler = common::refuse_session_checks(Reason::Busy, "too many requests");
    // The four queries must come within one validity of the first check: ample room for a
    // loaded machine.
    let validity = Duration::from_secs(4);
    let (_keys, mut master, worker) = cluster(handler, |config| {
        config.sessions.validity = validity;
    })
    .await;
    let mut alice = worker.client().await;
    alice.login_for_data().await;
    tokio::time::sleep(validity + Duration::from_millis(100)).await;
    master.drain_relays();
    for symbol in ["AAPL", "MSFT", "IBM", "AAPL"] {
        assert_eq!(asset_info_of(&alice.call(&current(symbol)).await), symbol);
    }
    let relays = master.drain_relays();
    assert_eq!(count(&relays, Instruction::LoginSession), 1, "{relays:?}");
}

#[tokio::test]
async fn a_logged_out_session_is_refused_without_asking_the_master() {
    let (_keys, mut master, worker) = cluster(answer_at_once(), |_| {}).await;
    let mut alice = worker.client().await;
    let session = alice.login(false).await;
    assert_eq!(alice.call(&Request::Logout { session }).await, Response::LogoutSuccess);
    let answer = alice.call(&purchase(session, "AAPL", 1)).await;
    assert_eq!(reason(&answer), Reason::NotLoggedIn);
    // On another connection the ended session cannot be resumed: the worker knows.
    let mut mallory = worker.client().await;
    let answer = mallory.call(&Request::LoginSession { session }).await;
    assert_eq!(
        (answer.instruction(), reason(&answer)),
        (Instruction::LoginFail, Reason::BadSession)
    );
    let relays = master.drain_relays();
    assert_eq!(count(&relays, Instruction::LoginSession), 0, "{relays:?}");
    assert_eq!(worker.stats().sessions_refused_locally, 1);
}

#[tokio::test]
async fn an_expirable_session_ends_when_its_client_disconnects() {
    // Each login gets a session of its own, so that a logout names whose it is.
    let logins = Arc::new(std::sync::atomic::AtomicU8::new(0));
    let handler: common::Handler = Arc::new(move |relay: Relay| {
        let response = match relay.request {
            Request::Login { .. } => {
                let n = logins.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Response::SessionId(net::SessionId([n.wrapping_add(1); 32]))
            }
            _ => common::answer(&relay),
        };
        Box::pin(async move { response })
    });
    let (_keys, mut master, worker) = cluster(handler, |_| {}).await;
    let mut alice = worker.client().await;
    let session = alice.login(true).await;
    drop(alice);
    let relay = master.next_relay_of(Instruction::Logout).await;
    assert_eq!(relay.request, Request::Logout { session });
    assert_eq!(relay.session, Some(session));
    // A remembered (not expirable) session survives its connection: bob's ends, then an
    // expirable one's; logouts go out in the order their connections ended (one queue), so
    // the next logout the master sees is the expirable one's, not bob's.
    let mut bob = worker.client().await;
    let remembered = bob.login(false).await;
    drop(bob);
    let mut carol = worker.client().await;
    let expirable = carol.login(true).await;
    drop(carol);
    let relay = master.next_relay_of(Instruction::Logout).await;
    assert_eq!(relay.request, Request::Logout { session: expirable });
    assert_ne!(expirable, remembered);
    let relayed: Vec<Instruction> =
        master.drain_relays().iter().map(|r| r.request.instruction()).collect();
    assert!(!relayed.contains(&Instruction::Logout), "{relayed:?}");
}

/// A logout the master answers `busy` is sent again while the link stays up, not dropped:
/// the session would otherwise live on until the master's idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_the_master_is_too_busy_for_is_sent_again() {
    let logouts = Arc::new(std::sync::atomic::AtomicU8::new(0));
    let handler: common::Handler = Arc::new(move |relay: Relay| {
        let response = match relay.request {
            Request::Logout { .. }
                if logouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 =>
            {
                Response::LogoutFail(net::Failure::new(Reason::Busy, "retry shortly"))
            }
            _ => answer(&relay),
        };
        Box::pin(async move { response })
    });
    let (_keys, mut master, worker) = cluster(handler, |_| {}).await;
    let mut alice = worker.client().await;
    let session = alice.login(true).await;
    drop(alice);
    for attempt in ["first", "second"] {
        let logout = master.next_relay_of(Instruction::Logout);
        let relay = tokio::time::timeout(Duration::from_secs(20), logout)
            .await
            .unwrap_or_else(|_| panic!("no {attempt} logout"));
        assert_eq!(relay.request, Request::Logout { session });
    }
}

/// A client that leaves frees its place at once, even while the master takes long to answer
/// its expirable session's logout: the logout is sent by the worker's logout task, not by the
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_frees_its_place_while_its_logout_waits() {
    let handler: common::Handler = Arc::new(move |relay: Relay| match relay.request {
        Request::Logout { .. } => Box::pin(std::future::pending()),
        _ => {
            let response = answer(&relay);
            Box::pin(async move { response })
        }
    });
    let (_keys, mut master, worker) = cluster(handler, |config| {
        config.clients.connections_max = 1;
        config.link.relay_timeout = Duration::from_secs(60);
    })
    .await;
    let mut alice = worker.client().await;
    alice.login(true).await;
    drop(alice);
    master.next_relay_of(Instruction::Logout).await;
    // The logout has no answer, and will not have one for a minute: Bob is served meanwhile.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut bob = worker.client().await;
        match bob.call(&Request::GetWorkers).await {
            Response::Data(_) => break,
            refused => {
                assert_eq!(reason(&refused), Reason::Busy, "{refused:?}");
                assert!(tokio::time::Instant::now() < deadline, "alice's place was never freed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// An expirable session ends with the connection that made it, whatever that connection did
/// after: resumed it with loginSession, or logged in again with a remembered session.
#[tokio::test]
async fn an_expirable_session_ends_with_its_connection_after_a_resume_or_another_login() {
    // Every login gets a session of its own.
    let logins = Arc::new(std::sync::atomic::AtomicU8::new(1));
    let handler: common::Handler = Arc::new(move |relay: Relay| {
        let response = match relay.request {
            Request::Login { .. } => {
                let n = logins.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Response::SessionId(SessionId([n; 32]))
            }
            Request::LoginSession { session } => Response::SessionId(session),
            _ => answer(&relay),
        };
        Box::pin(async move { response })
    });
    let (_keys, mut master, worker) = cluster(handler, |_| {}).await;
    let mut dave = worker.client().await;
    let expirable = dave.login(true).await;
    assert_eq!(
        dave.call(&Request::LoginSession { session: expirable }).await,
        Response::SessionId(expirable)
    );
    let remembered = dave.login(false).await;
    assert_ne!(remembered, expirable);
    drop(dave);
    let logout = master.next_relay_of(Instruction::Logout);
    let relay = tokio::time::timeout(Duration::from_secs(20), logout)
        .await
        .expect("the expirable session was logged out when its connection closed");
    // The expirable one ends; the remembered one, the connection's last, does not.
    assert_eq!(relay.request, Request::Logout { session: expirable });
    let mut erin = worker.client().await;
    assert_eq!(
        erin.call(&Request::LoginSession { session: remembered }).await,
        Response::SessionId(remembered)
    );
}

#[tokio::test]
async fn a_session_the_master_refuses_logs_the_connection_out() {
    let handler: common::Handler = Arc::new(|relay: Relay| {
        let response = match relay.request {
            Request::GetUserPortfolio { .. } => {
                Response::DataFail(Failure::new(Reason::BadSession, "expired"))
            }
            _ => answer(&relay),
        };
        Box::pin(async move { response })
    });
    let (_keys, mut master, worker) = cluster(handler, |_| {}).await;
    let mut alice = worker.client().await;
    let session = alice.login_for_data().await;
    assert_eq!(reason(&alice.call(&portfolio(session)).await), Reason::BadSession);
    // The connection is logged out, back in command state; the session is known dead.
    let switch = Request::SwitchState { session, state: ConnState::Command };
    assert_eq!(reason(&alice.call(&switch).await), Reason::NotLoggedIn);
    let info = Request::GetAssetInfo { symbol: common::sym("AAPL") };
    assert_eq!(reason(&alice.call(&info).await), Reason::WrongState);
    // So the same connection can log in again (in data transfer state `login` is refused).
    alice.login(false).await;
    let mut bob = worker.client().await;
    assert_eq!(reason(&bob.call(&Request::LoginSession { session }).await), Reason::BadSession);
    let relays = master.drain_relays();
    assert_eq!(count(&relays, Instruction::LoginSession), 0);
}

#[tokio::test]
async fn a_session_not_confirmed_lately_is_checked_with_the_master_before_a_state_switch() {
    // Room for one session only: Bob's login pushes Alice's out.
    let bobs = SessionId([9; 32]);
    let handler: common::Handler = Arc::new(move |relay: Relay| {
        let response = match &relay.request {
            Request::Login { username, .. } if username.as_str() == "bob" => {
                Response::SessionId(bobs)
            }
            _ => answer(&relay),
        };
        Box::pin(async move { response })
    });
    let (_keys, mut master, worker) =
        cluster(handler, |config| config.sessions.entries_max = 1).await;
    let mut alice = worker.client().await;
    let session = alice.login(false).await;
    let mut bob = worker.client().await;
    let login = Request::Login {
        username: engine::Username::new("bob").unwrap(),
        password: net::HashedPassword::new(vec![2; 32]).unwrap(),
        expirable: false,
    };
    assert_eq!(bob.call(&login).await, Response::SessionId(bobs));
    master.drain_relays();
    let switch = Request::SwitchState { session, state: ConnState::DataTransfer };
    assert_eq!(alice.call(&switch).await, Response::StateSwitchSuccess(ConnState::DataTransfer));
    let relays = master.drain_relays();
    assert_eq!(relays.len(), 1, "{relays:?}");
    assert_eq!(relays[0].request, Request::LoginSession { session });
    // Now confirmed: switching back needs no round trip.
    let back = Request::SwitchState { session, state: ConnState::Command };
    assert_eq!(alice.call(&back).await, Response::StateSwitchSuccess(ConnState::Command));
    assert!(master.drain_relays().is_empty());
}

#[tokio::test]
async fn the_worker_refuses_a_master_whose_key_it_does_not_trust() {
    let keys = Keys::new();
    let impostor = master::worker_auth::MasterIdentity::generate().unwrap();
    let mut master = TestMaster::start(
        "127.0.0.1:0".parse().unwrap(),
        impostor,
        keys.registry.clone(),
        answer_at_once(),
    )
    .await;
    let worker = TestWorker::start(worker_config(&keys, master.addr)).await;
    // The worker hangs up after the challenge without proving anything.
    assert!(matches!(master.next_event().await, Event::HandshakeAbandoned));
    let mut client = worker.client().await;
    let answer = client.call(&Request::GetWorkers).await;
    assert_eq!(reason(&answer), Reason::MasterUnavailable);
}

#[tokio::test]
async fn a_stopping_worker_logs_out_its_clients_expirable_sessions_first() {
    let (_keys, mut master, mut worker) = cluster(answer_at_once(), |_| {}).await;
    let mut alice = worker.client().await;
    let session = alice.login(true).await;
    worker.shutdown();
    // Alice's connection closes with the worker; her session is logged out before it stops.
    assert!(alice.closed().await);
    worker.stopped().await.unwrap();
    let relays = master.drain_relays();
    let logouts: Vec<&Request> =
        relays.iter().map(|r| &r.request).filter(|r| matches!(r, Request::Logout { .. })).collect();
    assert_eq!(logouts, [&Request::Logout { session }], "{relays:?}");
}

#[tokio::test]
async fn shutdown_answers_the_requests_already_read_then_closes() {
    let (handler, held) = hold_purchases();
    let (_keys, mut master, mut worker) = cluster(handler, |_| {}).await;
    let mut alice = worker.client().await;
    let session = alice.login(false).await;
    alice.send(&purchase(session, "AAPL", 1)).await;
    master.next_relay_of(Instruction::PurchaseAsset).await;
    worker.shutdown();
    held.lock().unwrap().drain(..).for_each(|release| {
        let _ = release.send(());
    });
    assert!(matches!(alice.receive().await, Response::PurchaseSuccess(_)));
    assert!(alice.closed().await);
    worker.stopped().await.unwrap();
}

/// Before the master has proved itself, the worker holds what it sends to a small message: a
/// host posing as the master that announces a 1 MiB `challenge` is dropped after its second
/// 64 KiB packet, not waited for until the handshake timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_has_not_proved_itself_cannot_send_a_large_message() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let keys = Keys::new();
    let impostor = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = worker_config(&keys, impostor.local_addr().unwrap());
    config.link.handshake_timeout = Duration::from_secs(120);
    let _worker = TestWorker::start(config).await;
    let (mut socket, _) =
        tokio::time::timeout(Duration::from_secs(30), impostor.accept()).await.unwrap().unwrap();
    // The worker's hello, read and ignored.
    let mut hello = [0u8; 4096];
    let _ = socket.read(&mut hello).await.unwrap();
    // A challenge of 16 packets of 64 KiB: its first two.
    let data = vec![0u8; 65_536];
    for number in 1..=2u32 {
        let mut frame = vec![1, 4];
        frame.extend_from_slice(&Instruction::Challenge.code().to_be_bytes());
        frame.extend_from_slice(&3u16.to_be_bytes());
        frame.extend_from_slice(&0u16.to_be_bytes());
        frame.extend_from_slice(&number.to_be_bytes());
        frame.extend_from_slice(&16u32.to_be_bytes());
        frame.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(&data);
        if socket.write_all(&frame).await.is_err() {
            break;
        }
    }
    // The worker closes the connection (well before its two-minute handshake timeout).
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(30), socket.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the worker still waits for the rest of a 1 MiB challenge");
}

/// A new session whose answer cannot be written to its client (the connection was reset while
/// the login waited for the master) is one nobody will use: the worker logs it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_cannot_be_written_to_its_client_is_logged_out() {
    let releases: Arc<std::sync::Mutex<Vec<tokio::sync::oneshot::Sender<()>>>> = Arc::default();
    let held = Arc::clone(&releases);
    let handler: common::Handler = Arc::new(move |relay: Relay| match relay.request {
        Request::Login { .. } => {
            let (release, released) = tokio::sync::oneshot::channel();
            held.lock().unwrap().push(release);
            Box::pin(async move {
                let _ = released.await;
                Response::SessionId(SessionId([9; 32]))
            })
        }
        _ => {
            let response = answer(&relay);
            Box::pin(async move { response })
        }
    });
    let (_keys, mut master, worker) = cluster(handler, |_| {}).await;
    let socket = tokio::net::TcpStream::connect(worker.addr).await.unwrap();
    // Closed with a reset, not in order, when dropped.
    socket.set_zero_linger().unwrap();
    let mut bob = net::FramedStream::new(socket);
    let login = Request::Login {
        username: engine::Username::new("bob").unwrap(),
        password: net::HashedPassword::new(vec![1; 32]).unwrap(),
        expirable: false,
    };
    bob.write_request(&login).await.unwrap();
    master.next_relay_of(Instruction::Login).await;
    // Bob's connection is reset while his login waits.
    drop(bob);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for release in releases.lock().unwrap().drain(..) {
        let _ = release.send(());
    }
    let logout = master.next_relay_of(Instruction::Logout).await;
    assert_eq!(logout.request, Request::Logout { session: SessionId([9; 32]) });
}
