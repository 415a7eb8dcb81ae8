//! Crashes under load. The master runs as a real process (this test binary re-executed with
//! `PT_CRASH_CHILD=master`, which runs `master::server::run` with the real logbook), a real worker
//! relays a load generator's orders (random client order ids, retried with the same id after
//! `master_unavailable`), and the master is SIGKILLed at random moments, 20 times in a row
//! (`PT_SOAK=1`: 200; `PT_SEED=n` replays a run). Then SIGTERM under load, on a master whose
//! interval is too long to settle before it (so orders are queued, one of them known to be): the
//! process exits 0, and the interval settled on the way out holds the queued orders, each
//! answered. Checked on the journal
//! afterwards: every acknowledged order is there exactly once (with the answered order id), no
//! client order id is there twice, the audit is clean, and each state the master recovered (and
//! ran with) has the digest of the replay from genesis to the same record.
//!
//! A killed worker: two worker processes; a client's worker is SIGKILLed and it carries on with
//! its session through the other.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Rng, failure_reason, is_master_unavailable, password, user};
use engine::{AccountId, Email, Event, Qty, Symbol};
use journal::{Journal, JournalConfig, ReplayFrom, ReplayOptions, ReplayTo, Seq, VerifyOnOpen};
use net::{FramedStream, Reason, Request, Response, SessionId};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// The entry of the child processes; a no-op in a normal test run.
#[test]
fn child_process_entry() {
    let Ok(role) = std::env::var("PT_CRASH_CHILD") else { return };
    let env = |k: &str| std::env::var(k).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let code = runtime.block_on(async {
        // The handler is installed now, not when the future is first polled: a SIGTERM during
        // start-up must not find the default action (death by signal).
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        let terminate = async move {
            term.recv().await;
        };
        match role.as_str() {
            "master" => {
                let dir = PathBuf::from(env("PT_CHILD_DIR"));
                let workers = env("PT_CHILD_WORKERS")
                    .split(';')
                    .map(|w| {
                        let (id, cert) = w.split_once('=').unwrap();
                        (id.parse().unwrap(), PathBuf::from(cert))
                    })
                    .collect::<Vec<_>>();
                let interval = Duration::from_millis(env("PT_CHILD_INTERVAL_MS").parse().unwrap());
                let listen: SocketAddr = env("PT_CHILD_LISTEN").parse().unwrap();
                let config = common::master_config(&dir, listen, &workers, interval);
                let _log = master::logbook::init_tracing(&config.logbook_config()).unwrap();
                let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
                match master::server::run(config, listener, terminate).await {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("master: {e}");
                        1
                    }
                }
            }
            "worker" => {
                let key_dir = PathBuf::from(env("PT_CHILD_KEY_DIR"));
                let master_dir = PathBuf::from(env("PT_CHILD_MASTER_DIR"));
                let listen: SocketAddr = env("PT_CHILD_LISTEN").parse().unwrap();
                let master: SocketAddr = env("PT_CHILD_MASTER").parse().unwrap();
                let config = common::worker_config(&key_dir, listen, master, &master_dir);
                let identity = worker::identity::WorkerIdentity::load(&key_dir).unwrap();
                let trust = worker::identity::MasterTrust::load(
                    &master::worker_auth::MasterIdentity::public_cert_path(&master_dir),
                )
                .unwrap();
                let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
                match worker::run(config, listener, identity, trust, terminate).await {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("worker: {e}");
                        1
                    }
                }
            }
            other => panic!("unknown child role {other}"),
        }
    });
    std::process::exit(code);
}

/// A child process, SIGKILLed when dropped (so a failing test leaves no server behind).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts this test binary as a child playing `role`, with `vars`.
fn spawn_child(role: &str, vars: &[(&str, String)], log: &Path) -> ChildGuard {
    let exe = std::env::current_exe().unwrap();
    let stderr = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let mut command = Command::new(exe);
    command
        .args(["--exact", "child_process_entry", "--nocapture", "--test-threads=1"])
        .env("PT_CRASH_CHILD", role)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    for (k, v) in vars {
        command.env(k, v);
    }
    ChildGuard(command.spawn().unwrap())
}

fn free_port() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap()
}

/// What a client saw for one of its orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ack {
    /// `purchaseSuccess` with this order id.
    Filled(engine::OrderId),
    /// `purchaseFail` with the engine's reason (settled and refused).
    Refused,
    /// Never acknowledged (only `master_unavailable` and the like before the end).
    None,
}

/// What each trader saw: (username, client order id, acknowledgement).
type Outcomes = Arc<Mutex<Vec<(String, u64, Ack)>>>;

/// Transient refusals: the order was not acknowledged; retry with the same id.
fn transient(response: &Response) -> bool {
    matches!(
        failure_reason(response),
        Some(Reason::MasterUnavailable | Reason::Busy | Reason::Internal)
    )
}

async fn try_send(stream: &mut FramedStream<TcpStream>, request: &Request) -> Option<Response> {
    stream.write_request(request).await.ok()?;
    match tokio::time::timeout(Duration::from_secs(60), stream.read_response()).await {
        Ok(Ok(Some(response))) => Some(response),
        _ => None,
    }
}

/// Connects to one of `workers` (starting at `turn`) and resumes `session`.
async fn reconnect(
    workers: &[SocketAddr],
    turn: &mut usize,
    session: SessionId,
) -> FramedStream<TcpStream> {
    for _ in 0..2000 {
        let addr = workers[*turn % workers.len()];
        *turn += 1;
        if let Ok(stream) = TcpStream::connect(addr).await {
            let mut framed = FramedStream::new(stream);
            match try_send(&mut framed, &Request::LoginSession { session }).await {
                Some(Response::SessionId(_)) => return framed,
                Some(other) if !transient(&other) => panic!("session refused: {other:?}"),
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no worker took the session back");
}

/// Buys 1 unit with fresh client order ids until `stop`, retrying each with the same id until
/// it is acknowledged (or `stop` comes while it is not).
async fn trader(
    workers: Vec<SocketAddr>,
    name: String,
    session: SessionId,
    seed: u64,
    outcomes: Outcomes,
    stop: watch::Receiver<bool>,
) {
    let mut rng = Rng::new(seed);
    let mut turn = 0;
    let mut stream = reconnect(&workers, &mut turn, session).await;
    let symbols = ["AAPL", "IBM", "MSFT"];
    while !*stop.borrow() {
        let client_order_id = rng.next_u64();
        let request = Request::Purchase {
            session,
            symbol: Symbol::new(symbols[rng.index(symbols.len())]).unwrap(),
            qty: Qty::from_units(1).unwrap(),
            client_order_id,
        };
        let acknowledged = loop {
            match try_send(&mut stream, &request).await {
                None => stream = reconnect(&workers, &mut turn, session).await,
                Some(response) if transient(&response) => {
                    if *stop.borrow() {
                        break Ack::None;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Some(Response::PurchaseSuccess(fill)) => break Ack::Filled(fill.order),
                Some(Response::PurchaseFail(_)) => break Ack::Refused,
                Some(other) => panic!("{name}: unexpected answer {other:?}"),
            }
        };
        outcomes.lock().unwrap().push((name.clone(), client_order_id, acknowledged));
    }
}

/// Places an order (client order id `id`) on a connection of its own through `worker`, and
/// returns once the master is known to hold it queued: another connection asks with the same id
/// and a zero quantity until the master answers that the id belongs to an order queued for this
/// interval. (A zero quantity is refused on arrival, so the question never places an order.)
/// Returns the order and the connection its answer will come on.
async fn queue_known_order(
    worker: SocketAddr,
    session: SessionId,
    id: u64,
) -> (Request, FramedStream<TcpStream>) {
    let purchase = |qty| Request::Purchase {
        session,
        symbol: Symbol::new("AAPL").unwrap(),
        qty,
        client_order_id: id,
    };
    let order = purchase(Qty::from_units(1).unwrap());
    let question = purchase(Qty::from_units(0).unwrap());
    let mut turn = 0;
    let mut waiting = reconnect(&[worker], &mut turn, session).await;
    let mut asking = reconnect(&[worker], &mut turn, session).await;
    waiting.write_request(&order).await.unwrap();
    for _ in 0..3000 {
        // An answer already on the waiting connection can only be a refusal to retry (the
        // master settles nothing before the SIGTERM). Reading is cancel-safe.
        if let Ok(answer) =
            tokio::time::timeout(Duration::from_millis(1), waiting.read_response()).await
        {
            let answer = answer.unwrap().unwrap();
            assert!(transient(&answer), "the order was answered before the SIGTERM: {answer:?}");
            waiting.write_request(&order).await.unwrap();
        }
        match try_send(&mut asking, &question).await {
            Some(Response::PurchaseFail(f)) if f.reason == Reason::InvalidArgument => {
                assert!(f.message.contains("queued for this interval"), "{f:?}");
                return (order, waiting);
            }
            Some(Response::PurchaseFail(f))
                if f.reason == Reason::Rejected(engine::RejectReason::ZeroQuantity)
                    || transient(&Response::PurchaseFail(f.clone())) => {}
            other => panic!("the question about the queued order was answered {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the master never held the order queued");
}

/// Registers `count` traders through `worker` and returns their sessions.
async fn open_accounts(worker: SocketAddr, count: usize) -> Vec<(String, SessionId)> {
    let mut client = common::Client::connect(worker).await;
    let mut sessions = Vec::new();
    for i in 0..count {
        let name = format!("trader{i}");
        let registered = client
            .send_when_linked(Request::Register {
                username: user(&name),
                email: Email::new(&format!("{name}@example.com")).unwrap(),
                password: password(7),
            })
            .await;
        assert_eq!(registered, Response::RegisterSuccess);
        let session = loop {
            match client
                .send(Request::Login {
                    username: user(&name),
                    password: password(7),
                    expirable: false,
                })
                .await
            {
                Response::SessionId(session) => break session,
                other if is_master_unavailable(&other) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => panic!("login: {other:?}"),
            }
        };
        sessions.push((name, session));
    }
    sessions
}

/// Per (account, client order id): the order ids the journal settled it under, and the orders
/// of the last interval.
struct JournalView {
    settled: BTreeMap<(AccountId, u64), Vec<engine::OrderId>>,
    accounts: BTreeMap<String, AccountId>,
    last_interval: Vec<(AccountId, u64)>,
    /// When the last interval was settled (the master's clock).
    last_settled_at: Option<engine::Timestamp>,
}

fn read_journal(path: &Path) -> JournalView {
    let journal = Journal::open_unrecovered(path, JournalConfig::default()).unwrap();
    let mut view = JournalView {
        settled: BTreeMap::new(),
        accounts: BTreeMap::new(),
        last_interval: Vec::new(),
        last_settled_at: None,
    };
    for record in journal.read_records(Seq(1)).unwrap() {
        let order = match record.unwrap().event {
            Event::AccountOpened(opened) => {
                view.accounts.insert(opened.username.as_str().to_string(), opened.account);
                continue;
            }
            Event::IntervalSettled(settled) => {
                view.last_interval.clear();
                view.last_settled_at = Some(settled.at);
                continue;
            }
            Event::OrderFilled(fill) => fill.order,
            Event::OrderRejected(rejection) => rejection.order,
            Event::AssetListed(_) | Event::PasswordRehashed(_) => continue,
        };
        let key = (order.account, order.client_id.0);
        view.settled.entry(key).or_default().push(order.id);
        view.last_interval.push(key);
    }
    view
}

/// Waits (at most 120 s) until the master's log holds `count` complete "recovered from the
/// journal" lines: that many masters have started.
async fn wait_for_recoveries(log: &Path, count: usize) {
    let started = tokio::time::timeout(Duration::from_secs(120), async {
        while recovered_digests(log).len() < count {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(started.is_ok(), "{count} master starts were not logged");
}

/// `(last_seq, digest)` of every "recovered from the journal" line of the master's log. A last
/// line not ended yet (the log read while a master writes it) is left out.
fn recovered_digests(log: &Path) -> Vec<(u64, String)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .filter(|l| l.contains("recovered from the journal"))
        .map(|l| {
            let field = |name: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    .map(|v| v.trim_matches('"').to_string())
                    .unwrap_or_else(|| panic!("no {name} in {l}"))
            };
            (field("last_seq=").parse().unwrap(), field("digest="))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_master_loses_no_acknowledged_order_and_sigterm_settles_the_last_interval() {
    let seed = common::seed();
    eprintln!("PT_SEED={seed}");
    let mut rng = Rng::new(seed);
    let kills = if common::soak() { 200 } else { 20 };
    let root = tempfile::tempdir().unwrap();
    let (master_dir, trust) = common::master_dir(root.path());
    let key_dir = root.path().join("worker");
    let (identity, cert) = common::new_worker_identity(&key_dir, "w1");
    let master_addr = free_port();
    let interval_ms = 100u64;
    let vars = vec![
        ("PT_CHILD_DIR", master_dir.display().to_string()),
        ("PT_CHILD_WORKERS", format!("{}={}", identity.uuid(), cert.display())),
        ("PT_CHILD_INTERVAL_MS", interval_ms.to_string()),
        ("PT_CHILD_LISTEN", master_addr.to_string()),
    ];
    // The last master settles no interval of its own before the SIGTERM: every order it takes
    // waits for the one settled on the way out.
    let mut last_vars = vars.clone();
    last_vars.retain(|(key, _)| *key != "PT_CHILD_INTERVAL_MS");
    last_vars.push(("PT_CHILD_INTERVAL_MS", (3_600_000u64).to_string()));
    let child_log = root.path().join("master-stderr.log");
    let mut master = spawn_child("master", &vars, &child_log);
    let worker_config = common::worker_config(&key_dir, free_port(), master_addr, &master_dir);
    let worker = common::WorkerTask::start(worker_config, identity, trust).await;

    let mut accounts = open_accounts(worker.addr, 5).await;
    let (probe_name, probe_session) = accounts.pop().unwrap();
    let outcomes: Outcomes = Arc::default();
    let (stop, stop_rx) = watch::channel(false);
    let traders: Vec<_> = accounts
        .iter()
        .map(|(name, session)| {
            tokio::spawn(trader(
                vec![worker.addr],
                name.clone(),
                *session,
                rng.next_u64(),
                Arc::clone(&outcomes),
                stop_rx.clone(),
            ))
        })
        .collect();

    let master_log = master_dir.join("pt-master.log");
    for kill in 0..kills {
        // The master now running has recovered (its start is logged) before it is killed: an
        // acknowledgement of the one before, delivered late, could otherwise end the wait
        // below and the kill land on a master still starting.
        wait_for_recoveries(&master_log, kill + 1).await;
        // Let some orders through (the acknowledged count grows), then kill at a random moment.
        let before = outcomes.lock().unwrap().len();
        while outcomes.lock().unwrap().len() == before {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(interval_ms * 2))).await;
        master.0.kill().unwrap();
        master.0.wait().unwrap();
        let last = kill + 1 == kills;
        master = spawn_child("master", if last { &last_vars } else { &vars }, &child_log);
    }
    // SIGTERM under load, once the last master has started and an order is known to be queued.
    wait_for_recoveries(&master_log, kills + 1).await;
    let probe_id = rng.next_u64();
    let (probe_order, mut waiting) = queue_known_order(worker.addr, probe_session, probe_id).await;
    // The master's own clock, as it stamps a settlement.
    let sigterm_at = master::core::now();
    let terminated = Command::new("kill").args(["-TERM", &master.0.id().to_string()]).status();
    assert!(terminated.unwrap().success());
    let status = tokio::task::spawn_blocking(move || master.0.wait().unwrap()).await.unwrap();
    assert!(status.success(), "SIGTERM: the master exited with {status}");
    // The queued order was answered by the settlement on the way out.
    let answer = tokio::time::timeout(Duration::from_secs(60), waiting.read_response()).await;
    let Ok(Ok(Some(Response::PurchaseSuccess(fill)))) = answer else {
        panic!("the order queued before the SIGTERM ({probe_order:?}) was answered {answer:?}");
    };
    outcomes.lock().unwrap().push((probe_name.clone(), probe_id, Ack::Filled(fill.order)));
    stop.send(true).unwrap();
    for trader in traders {
        trader.await.unwrap();
    }
    worker.stop().await.unwrap();

    let view = read_journal(&journal::path_in(&master_dir));
    let outcomes = outcomes.lock().unwrap();
    let mut acknowledged = BTreeSet::new();
    for (name, client_order_id, answered) in outcomes.iter() {
        let account = view.accounts[name];
        let settled = view.settled.get(&(account, *client_order_id)).cloned().unwrap_or_default();
        assert!(settled.len() <= 1, "{name} order {client_order_id} settled twice: {settled:?}");
        match answered {
            Ack::Filled(order) => {
                assert_eq!(settled, vec![*order], "{name}: acknowledged order {client_order_id}");
            }
            Ack::Refused => assert_eq!(settled.len(), 1, "{name}: refused {client_order_id}"),
            Ack::None => continue,
        }
        acknowledged.insert((account, *client_order_id));
    }
    for (key, ids) in &view.settled {
        assert_eq!(ids.len(), 1, "client order {key:?} settled {} times", ids.len());
    }
    // The master settled an interval on SIGTERM (every interval is journaled, with orders or
    // without), and it was answered: each of its orders reached its client.
    let last_settled_at = view.last_settled_at.expect("no interval was settled");
    assert!(
        last_settled_at >= sigterm_at,
        "the last interval was settled at {last_settled_at:?}, before the SIGTERM at {sigterm_at:?}"
    );
    let probe_key = (view.accounts[&probe_name], probe_id);
    assert!(
        view.last_interval.contains(&probe_key),
        "the order queued before the SIGTERM is not in the last interval: {:?}",
        view.last_interval
    );
    for key in &view.last_interval {
        assert!(acknowledged.contains(key), "order {key:?} of the last interval was not answered");
    }

    // The journal audits clean, and every state the master recovered equals the replay from
    // genesis to the same record.
    let path = journal::path_in(&master_dir);
    let journal = Journal::open_unrecovered(&path, JournalConfig::default()).unwrap();
    let report = journal::audit(&journal, journal::AuditConfig::default(), &mut |_| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problem);
    let digests = recovered_digests(&master_log);
    assert_eq!(digests.len(), kills + 1, "one recovery per start");
    for (seq, digest) in &digests {
        let replayed = journal
            .replay(
                ReplayOptions {
                    from: ReplayFrom::Genesis,
                    to: ReplayTo::Seq(Seq(*seq)),
                    verify: VerifyOnOpen::FullChain,
                },
                &mut |_| {},
            )
            .unwrap();
        assert_eq!(replayed.last_seq, Seq(*seq));
        assert_eq!(&replayed.state.digest().to_string(), digest, "recovered at record {seq}");
    }
    eprintln!(
        "crashes survived: {kills} SIGKILL + 1 SIGTERM; orders acknowledged: {}; \
         unacknowledged at the end: {}; events: {}; last interval orders: {}",
        acknowledged.len(),
        outcomes.len() - acknowledged.len(),
        report.events,
        view.last_interval.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_clients_carry_on_through_another() {
    let rounds = if common::soak() { 20 } else { 3 };
    let root = tempfile::tempdir().unwrap();
    let (master_dir, _trust) = common::master_dir(root.path());
    let mut registrations = Vec::new();
    let mut worker_vars = Vec::new();
    let master_addr = free_port();
    for name in ["w1", "w2"] {
        let key_dir = root.path().join(name);
        let (identity, cert) = common::new_worker_identity(&key_dir, name);
        registrations.push((identity.uuid(), cert));
        let listen = free_port();
        worker_vars.push((
            listen,
            vec![
                ("PT_CHILD_KEY_DIR", key_dir.display().to_string()),
                ("PT_CHILD_MASTER_DIR", master_dir.display().to_string()),
                ("PT_CHILD_LISTEN", listen.to_string()),
                ("PT_CHILD_MASTER", master_addr.to_string()),
            ],
        ));
    }
    let config =
        common::master_config(&master_dir, master_addr, &registrations, Duration::from_millis(100));
    let master = common::MasterTask::start(config).await;
    let log = root.path().join("workers-stderr.log");
    let mut children: Vec<ChildGuard> =
        worker_vars.iter().map(|(_, vars)| spawn_child("worker", vars, &log)).collect();
    let addrs: Vec<SocketAddr> = worker_vars.iter().map(|(a, _)| *a).collect();

    // Wait until the first worker is up, then open the accounts through it.
    let first = loop {
        if let Ok(stream) = TcpStream::connect(addrs[0]).await {
            break stream;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    drop(first);
    let accounts = open_accounts(addrs[0], 3).await;
    let outcomes: Outcomes = Arc::default();
    let (stop, stop_rx) = watch::channel(false);
    let traders: Vec<_> = accounts
        .iter()
        .enumerate()
        .map(|(i, (name, session))| {
            tokio::spawn(trader(
                addrs.clone(),
                name.clone(),
                *session,
                u64::try_from(i).unwrap() + 1,
                Arc::clone(&outcomes),
                stop_rx.clone(),
            ))
        })
        .collect();
    for round in 0..rounds {
        let before = outcomes.lock().unwrap().len();
        while outcomes.lock().unwrap().len() < before + 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Kill one worker; the traders on it move to the other and keep their sessions.
        let victim = round % 2;
        children[victim].0.kill().unwrap();
        children[victim].0.wait().unwrap();
        let after_kill = outcomes.lock().unwrap().len();
        while outcomes.lock().unwrap().len() < after_kill + 6 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        children[victim] = spawn_child("worker", &worker_vars[victim].1, &log);
    }
    stop.send(true).unwrap();
    for trader in traders {
        trader.await.unwrap();
    }
    drop(children);
    master.stop().await.unwrap();
    let view = read_journal(&journal::path_in(&master_dir));
    for (name, client_order_id, answered) in outcomes.lock().unwrap().iter() {
        let account = view.accounts[name];
        let settled = view.settled.get(&(account, *client_order_id)).cloned().unwrap_or_default();
        assert!(settled.len() <= 1);
        match answered {
            Ack::Filled(order) => assert_eq!(settled, vec![*order]),
            Ack::Refused => assert_eq!(settled.len(), 1),
            Ack::None => {}
        }
    }
}
