//! The real worker against the real master over loopback: the worker's asset cache spares the
//! master a second identical query in the same interval (counted by the worker's relays), and a
//! master restart while the worker stays up gives clients "master unavailable", then service again
//! on the same connection. The same queries over every get* instruction are answered from stored
//! ticks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use engine::{Email, Qty, Symbol, Timestamp, Username};
use master::config::{IpNet, MasterConfig, WorkerConfig as Registration};
use master::worker_auth::MasterIdentity;
use net::{
    ConnState, DataPayload, FramedStream, HashedPassword, Period, Reason, Request, Response,
    SessionId,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use worker::identity::{MasterTrust, WorkerIdentity};

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn master_config(
    dir: &Path,
    listen: SocketAddr,
    worker: &WorkerIdentity,
    cert: &Path,
    interval: Duration,
) -> MasterConfig {
    MasterConfig {
        listen,
        data_dir: dir.to_path_buf(),
        update_interval: interval,
        workers: vec![Registration {
            id: worker.uuid(),
            name: Some("w1".into()),
            cert: cert.to_path_buf(),
            allowed_ips: vec![IpNet::new(Ipv4Addr::LOCALHOST.into(), 32).expect("a valid range")],
        }],
        ..MasterConfig::default()
    }
}

struct Client(FramedStream<TcpStream>);

impl Client {
    async fn send(&mut self, request: Request) -> Response {
        self.0.write_request(&request).await.unwrap();
        tokio::time::timeout(Duration::from_secs(60), self.0.read_response())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    }
}

/// Sends requests until one is answered with something other than `master_unavailable`.
async fn until_master_is_back(client: &mut Client, request: Request) -> Response {
    for _ in 0..600 {
        let response = client.send(request.clone()).await;
        let unavailable = matches!(&response, Response::Error(f) | Response::LoginFail(f) | Response::DataFail(f) | Response::RegisterFail(f) if f.reason == Reason::MasterUnavailable);
        if !unavailable {
            return response;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the master never came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_spares_the_master_and_a_master_restart_is_survived() {
    let dir = tempfile::tempdir().unwrap();
    let master_dir = dir.path().join("master");
    std::fs::create_dir_all(&master_dir).unwrap();
    MasterIdentity::load_or_generate(&master_dir).unwrap();
    let trust = MasterTrust::load(&MasterIdentity::public_cert_path(&master_dir)).unwrap();
    let key_dir = dir.path().join("worker");
    let identity = WorkerIdentity::generate(uuid::Uuid::new_v4(), "w1").unwrap();
    identity.save(&key_dir).unwrap();
    let cert = key_dir.join(worker::identity::PUBLIC_CERT_FILE_NAME);
    // A long interval: the cached "current" answer stays valid for the whole test step.
    let interval = Duration::from_millis(500);

    let master_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let master_addr = master_listener.local_addr().unwrap();
    let (master_stop, rx) = watch::channel(false);
    let master = tokio::spawn(master::server::run(
        master_config(&master_dir, master_addr, &identity, &cert, interval),
        master_listener,
        stopped(rx),
    ));

    let worker_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let worker_addr = worker_listener.local_addr().unwrap();
    let mut worker_config = worker::WorkerConfig {
        listen: worker_addr,
        master: master_addr.to_string(),
        key_dir: key_dir.clone(),
        master_cert: Some(MasterIdentity::public_cert_path(&master_dir)),
        ..worker::WorkerConfig::default()
    };
    worker_config.log.file = dir.path().join("worker.log");
    worker_config.cache.ttl = Duration::from_secs(30);
    worker_config.link.reconnect_backoff_min = Duration::from_millis(50);
    worker_config.link.reconnect_backoff_max = Duration::from_millis(200);
    let stats = worker::Stats::new();
    let (worker_stop, rx) = watch::channel(false);
    let worker_task = tokio::spawn(worker::run_with_stats(
        worker_config,
        worker_listener,
        identity,
        trust,
        stopped(rx),
        stats.clone(),
    ));

    let mut client = Client(FramedStream::new(TcpStream::connect(worker_addr).await.unwrap()));
    let register = Request::Register {
        username: Username::new("carol").unwrap(),
        email: Email::new("carol@example.com").unwrap(),
        password: HashedPassword::new(vec![5; 32]).unwrap(),
    };
    assert_eq!(until_master_is_back(&mut client, register).await, Response::RegisterSuccess);
    let Response::SessionId(session) = client
        .send(Request::Login {
            username: Username::new("carol").unwrap(),
            password: HashedPassword::new(vec![5; 32]).unwrap(),
            expirable: false,
        })
        .await
    else {
        panic!("login")
    };
    // Wait for a first price, then switch to data transfer.
    let bought = client
        .send(Request::Purchase {
            session,
            symbol: Symbol::new("IBM").unwrap(),
            qty: Qty::from_units(1).unwrap(),
            client_order_id: 1,
        })
        .await;
    assert!(matches!(bought, Response::PurchaseSuccess(_)), "{bought:?}");
    let switched =
        client.send(Request::SwitchState { session, state: ConnState::DataTransfer }).await;
    assert!(matches!(switched, Response::StateSwitchSuccess(_)), "{switched:?}");

    // Every get* instruction, answered from the master's stored ticks.
    let aapl = Symbol::new("AAPL").unwrap();
    let start = engine::recorded::parse_time("2000-03-01").unwrap();
    for request in [
        Request::GetAssetInfo { symbol: aapl },
        Request::GetAssetValueCurrent { symbol: aapl },
        Request::GetAssetValue { symbol: aapl, period: Period::Day, date: start },
        Request::GetAssetValue { symbol: aapl, period: Period::Week, date: start },
        Request::GetAssetValue { symbol: aapl, period: Period::Month, date: start },
        Request::GetAssetValue { symbol: aapl, period: Period::Year, date: start },
        Request::GetAssetValueAllTime { symbol: aapl },
    ] {
        let response = client.send(request.clone()).await;
        match (&request, &response) {
            (
                Request::GetAssetInfo { .. } | Request::GetAssetValueCurrent { .. },
                Response::Data(DataPayload::AssetInfo(t)),
            ) => {
                assert_eq!(t.symbol, aapl);
            }
            (_, Response::Data(DataPayload::PriceSeries(series))) => {
                assert_eq!(series.symbol, aapl);
                assert!(!series.bars.is_empty());
                assert_eq!(series.bars[0].time, start, "{request:?}");
            }
            _ => panic!("{request:?} -> {response:?}"),
        }
    }
    let far_future = Request::GetAssetValue {
        symbol: aapl,
        period: Period::Day,
        date: Timestamp(4_000_000_000_000_000),
    };
    match client.send(far_future).await {
        Response::DataFail(f) if f.reason == Reason::NotFound => {
            assert_eq!(f.message, "no prices for AAPL in that range");
        }
        other => panic!("{other:?}"),
    }

    // The same query twice in one interval: the second never reaches the master.
    let current = Request::GetAssetValueCurrent { symbol: Symbol::new("MSFT").unwrap() };
    let first = client.send(current.clone()).await;
    let relays = stats.snapshot().relays;
    let second = client.send(current.clone()).await;
    assert_eq!(first, second);
    assert_eq!(stats.snapshot().relays, relays, "the cached answer was relayed to the master");
    assert!(stats.snapshot().cache_hits >= 1);

    // The master goes away; the worker keeps the client and says so.
    master_stop.send(true).unwrap();
    master.await.unwrap().unwrap();
    let portfolio =
        Request::GetUserPortfolio { session, username: Username::new("carol").unwrap() };
    let down = client.send(portfolio.clone()).await;
    assert!(
        matches!(&down, Response::DataFail(f) if f.reason == Reason::MasterUnavailable),
        "{down:?}"
    );

    // It comes back on the same port; the same connection works again.
    let master_listener = TcpListener::bind(master_addr).await.unwrap();
    let identity_again = WorkerIdentity::load(&key_dir).unwrap();
    let (master_stop, rx) = watch::channel(false);
    let master = tokio::spawn(master::server::run(
        master_config(&master_dir, master_addr, &identity_again, &cert, interval),
        master_listener,
        stopped(rx),
    ));
    let back = until_master_is_back(&mut client, portfolio).await;
    let Response::Data(DataPayload::Portfolio(p)) = back else { panic!("{back:?}") };
    assert_eq!(p.holdings.len(), 1);

    drop(client);
    worker_stop.send(true).unwrap();
    worker_task.await.unwrap().unwrap();
    master_stop.send(true).unwrap();
    master.await.unwrap().unwrap();
    let _: SessionId = session;
}

/// A price source that never answers does not hold the master's shutdown for an interval: its
/// last fetch, for the final settlement, has a few seconds (`FINAL_FETCH_BUDGET`), not the
/// interval's hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_price_source_does_not_hold_the_shutdown() {
    use master::config::{ApiKey, HttpSourceConfig, PriceSourceConfig};
    // A "provider" that takes every connection and never answers.
    let provider = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let provider_addr = provider.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = provider.accept().await {
            held.push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = MasterConfig {
        listen: addr,
        data_dir: dir.path().to_path_buf(),
        update_interval: Duration::from_secs(3600),
        assets: vec![Symbol::new("IBM").unwrap()],
        prices: PriceSourceConfig::Http(HttpSourceConfig {
            base_url: format!("http://{provider_addr}"),
            api_key: Some(ApiKey::new("k")),
            timeout: Duration::from_secs(3600),
            ..HttpSourceConfig::default()
        }),
        ..MasterConfig::default()
    };
    config.log.file = dir.path().join("pt-master.log");
    let (stop, rx) = watch::channel(false);
    let master = tokio::spawn(master::server::run(config, listener, stopped(rx)));
    // Serving: a client's worker list comes back.
    let mut client = FramedStream::new(TcpStream::connect(addr).await.unwrap());
    client.write_request(&Request::GetWorkers).await.unwrap();
    let answer = client.read_response().await.unwrap();
    assert!(matches!(answer, Some(Response::Data(DataPayload::WorkerList(_)))), "{answer:?}");
    // A connection that has said nothing yet, also open as the master stops.
    let _idle = TcpStream::connect(addr).await.unwrap();
    stop.send(true).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(60), master).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
    // Once it has returned, no task of it holds the journal, though both clients are still
    // connected: a restart can open it at once.
    let opened = journal::Journal::open(journal::path_in(dir.path()), Default::default());
    assert!(opened.is_ok(), "{:?}", opened.err());
    drop(client);
}

/// A data directory whose prices are dated past tomorrow (the recorded source moves its dates
/// on with every pass over its file) cannot go on with the HTTP source, whose quotes are dated
/// today: every one would be older than the price held, and refused. The master says so and
/// does not start, instead of running with no price at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_source_is_refused_on_prices_dated_past_tomorrow() {
    use master::config::{ApiKey, HttpSourceConfig, PriceSourceConfig};
    let ibm = Symbol::new("IBM").unwrap();
    let run = |dir: std::path::PathBuf, ahead_days: i64| {
        let journal_path = journal::path_in(&dir);
        let (journal, _) =
            journal::Journal::open(&journal_path, journal::JournalConfig::default()).unwrap();
        let now = master::core::now();
        let price = engine::Price::from_units(100).unwrap();
        let tick = engine::Tick {
            symbol: ibm,
            open: price,
            high: price,
            low: price,
            close: price,
            volume: Qty::ZERO,
            time: Timestamp(now.0 + ahead_days * 86_400_000_000),
        };
        let events = [
            engine::Event::AssetListed(engine::AssetListed { symbol: ibm, at: now }),
            engine::Event::IntervalSettled(engine::IntervalSettled {
                interval: engine::IntervalId(1),
                at: now,
                ticks: vec![tick],
                orders: 0,
            }),
        ];
        journal.append_batch(&events, now).unwrap();
        drop(journal);
        let mut config = MasterConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.clone(),
            update_interval: Duration::from_secs(3600),
            assets: vec![ibm],
            prices: PriceSourceConfig::Http(HttpSourceConfig {
                // Never asked: nothing listens there.
                base_url: "http://127.0.0.1:9".to_owned(),
                api_key: Some(ApiKey::new("k")),
                ..HttpSourceConfig::default()
            }),
            ..MasterConfig::default()
        };
        config.log.file = dir.join("pt-master.log");
        async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, rx) = watch::channel(false);
            let master = tokio::spawn(master::server::run(config, listener, stopped(rx)));
            // A master that starts answers a client's worker list, and is stopped; one that
            // does not start closes its listener, and the client's connection with it.
            let serving = async {
                let mut client = FramedStream::new(TcpStream::connect(addr).await.ok()?);
                client.write_request(&Request::GetWorkers).await.ok()?;
                client.read_response().await.ok().flatten()
            };
            let answer = tokio::time::timeout(Duration::from_secs(60), serving).await.unwrap();
            if matches!(answer, Some(Response::Data(DataPayload::WorkerList(_)))) {
                stop.send(true).unwrap();
            }
            tokio::time::timeout(Duration::from_secs(60), master).await.unwrap().unwrap()
        }
    };
    let refused = tempfile::tempdir().unwrap();
    let error = run(refused.path().to_path_buf(), 400).await.unwrap_err().to_string();
    assert!(error.contains("more than a day past this machine's clock"), "{error}");
    assert!(error.contains("new data directory"), "{error}");
    // A price dated today (or within a day ahead, a market east of UTC) is not in the way.
    let fine = tempfile::tempdir().unwrap();
    let ended = run(fine.path().to_path_buf(), 0).await;
    assert!(ended.is_ok(), "{ended:?}");
}
