//! Test support: a small master peer that performs the real handshake with real keys (the
//! master's side from `master::worker_auth`) and answers relays, counting them; a real worker
//! (`worker::run_with_stats`) on loopback; and a protocol client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use engine::{Cash, IntervalId, OrderId, Price, Qty, Side, Symbol, Tick, Timestamp, Username};
use master::config::WorkerConfig as RegisteredWorkerConfig;
use master::worker_auth::{self, HelloBinding, MasterIdentity, WorkerRegistry};
use net::{
    Bar, ConnState, Control, DataPayload, Direction, Failure, FillReport, FramedStream,
    HashedPassword, LinkOpener, LinkSealer, Portfolio, PriceSeries, Reason, Relay, Request,
    Response, SessionId,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use uuid::Uuid;
use worker::config::WorkerConfig;
use worker::identity::{self, MasterTrust, WorkerIdentity};
use worker::{Stats, StatsSnapshot};

/// The session the test master hands out to every login.
pub const SESSION: SessionId = SessionId([7; 32]);

/// What the test master saw.
#[derive(Debug)]
pub enum Event {
    /// A worker completed the handshake and sent its first heartbeat: the link is up.
    LinkUp,
    /// A worker closed the connection during the handshake, before sending its proof.
    HandshakeAbandoned,
    /// A relay arrived.
    Relay(Relay),
}

/// How the test master answers one relay: a future, so that a test can hold an answer back.
pub type Answer = Pin<Box<dyn Future<Output = Response> + Send>>;
/// The test master's relay handler.
pub type Handler = Arc<dyn Fn(Relay) -> Answer + Send + Sync>;

/// A handler's `error` answer with this message goes to the worker cut short: its frames and
/// MACs sound, the answer in it unreadable (as from a master of another version).
pub const UNREADABLE: &str = "the test master sends this answer unreadable";

/// Keys and files shared by the test master and the worker: a master key, a worker identity
/// saved on disk, the worker's registration and the master certificate file the worker trusts.
pub struct Keys {
    pub dir: tempfile::TempDir,
    pub master: MasterIdentity,
    pub registry: Arc<WorkerRegistry>,
    pub worker_key_dir: PathBuf,
    pub master_cert: PathBuf,
}

impl Keys {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let worker_key_dir = dir.path().join("worker-key");
        WorkerIdentity::generate(Uuid::new_v4(), "test worker")
            .unwrap()
            .save(&worker_key_dir)
            .unwrap();
        let identity = WorkerIdentity::load(&worker_key_dir).unwrap();
        let entry = RegisteredWorkerConfig {
            id: identity.uuid(),
            name: Some("test-worker".to_owned()),
            cert: worker_key_dir.join(identity::PUBLIC_CERT_FILE_NAME),
            allowed_ips: vec!["127.0.0.1".parse().unwrap()],
        };
        let registry = Arc::new(WorkerRegistry::from_entries(&[entry]).unwrap());
        let master = MasterIdentity::generate().unwrap();
        let master_cert = dir.path().join("master.pub.asc");
        std::fs::write(&master_cert, master.public_cert_armored().unwrap()).unwrap();
        Self { dir, master, registry, worker_key_dir, master_cert }
    }
}

/// A running test master.
pub struct TestMaster {
    pub addr: SocketAddr,
    pub events: mpsc::UnboundedReceiver<Event>,
    task: JoinHandle<()>,
    /// Whether the links answer heartbeats (a test turns it off to play a master gone silent).
    pub acks_heartbeats: Arc<std::sync::atomic::AtomicBool>,
}

impl TestMaster {
    /// Starts a test master on `addr` (port 0 for any) with `identity` as its key.
    pub async fn start(
        addr: SocketAddr,
        identity: MasterIdentity,
        registry: Arc<WorkerRegistry>,
        handler: Handler,
    ) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (events_tx, events) = mpsc::unbounded_channel();
        let acks_heartbeats = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let acks = Arc::clone(&acks_heartbeats);
        let task = tokio::spawn(async move {
            let mut links = JoinSet::new();
            loop {
                let (socket, peer) = listener.accept().await.unwrap();
                let link = serve_link(
                    socket,
                    peer,
                    identity.clone(),
                    registry.clone(),
                    handler.clone(),
                    events_tx.clone(),
                    Arc::clone(&acks),
                );
                links.spawn(link);
            }
        });
        Self { addr, events, task, acks_heartbeats }
    }

    /// Stops the master: the listener and every link are closed.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// The next event; a test waiting for one that never comes fails (after a minute) instead
    /// of hanging.
    pub async fn next_event(&mut self) -> Event {
        match tokio::time::timeout(std::time::Duration::from_secs(60), self.events.recv()).await {
            Ok(event) => event.expect("the test master is running"),
            Err(_) => panic!("the test master heard nothing from the worker for a minute"),
        }
    }

    /// Waits until a worker's link is up.
    pub async fn wait_link_up(&mut self) {
        loop {
            if let Event::LinkUp = self.next_event().await {
                return;
            }
        }
    }

    /// Waits for the next relay.
    pub async fn next_relay(&mut self) -> Relay {
        loop {
            if let Event::Relay(relay) = self.next_event().await {
                return relay;
            }
        }
    }

    /// Waits for the next relay of `instruction`, passing over the others.
    pub async fn next_relay_of(&mut self, instruction: net::Instruction) -> Relay {
        loop {
            let relay = self.next_relay().await;
            if relay.request.instruction() == instruction {
                return relay;
            }
        }
    }

    /// Every relay received so far (without waiting).
    pub fn drain_relays(&mut self) -> Vec<Relay> {
        let mut relays = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            if let Event::Relay(relay) = event {
                relays.push(relay);
            }
        }
        relays
    }
}

async fn serve_link(
    socket: TcpStream,
    peer: SocketAddr,
    identity: MasterIdentity,
    registry: Arc<WorkerRegistry>,
    handler: Handler,
    events: mpsc::UnboundedSender<Event>,
    acks_heartbeats: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut framed = FramedStream::new(socket);
    // The handshake, master side (docs/WORKER_AUTH.md).
    let Ok(Some(Control::WorkerHello(hello))) = framed.read_control().await else {
        return;
    };
    let uuid = Uuid::from_u128(hello.worker.0);
    let registered = registry.check_admission(uuid, peer.ip()).unwrap();
    let binding =
        HelloBinding { protocol_version: hello.version, client_addr: hello.address.as_str() };
    // The link key is sealed first: the master's proof covers the sealed key.
    let key = worker_auth::new_link_key().unwrap();
    let sealed_key = worker_auth::seal_link_key(registered, &key).unwrap();
    let master_nonce = worker_auth::new_challenge().unwrap();
    let master_proof = identity
        .sign_worker_challenge(uuid, &hello.nonce, &master_nonce, &binding, &sealed_key)
        .unwrap();
    let challenge = Control::Challenge { nonce: master_nonce, master_proof, sealed_key };
    framed.write_control(&challenge).await.unwrap();
    let signature = match framed.read_control().await {
        Ok(Some(Control::HelloProof { signature })) => signature,
        _ => {
            let _ = events.send(Event::HandshakeAbandoned);
            return;
        }
    };
    worker_auth::verify_proof(registered, &master_nonce, &binding, &signature, SystemTime::now())
        .unwrap();
    framed.write_control(&Control::LinkAccepted).await.unwrap();
    framed.seal_link(
        LinkSealer::new(key.clone(), Direction::MasterToWorker),
        LinkOpener::new(key, Direction::WorkerToMaster),
    );

    // The link: heartbeats and relays, answered as the handler decides, in any order.
    let (mut reader, mut writer) = framed.into_split();
    let (out, mut out_rx) = mpsc::unbounded_channel::<net::Message>();
    let write = tokio::spawn(async move {
        while let Some(message) = out_rx.recv().await {
            if writer.write_message(&message).await.is_err() {
                return;
            }
        }
    });
    let mut answers = JoinSet::new();
    let mut up = false;
    while let Ok(Some(control)) = reader.read_control().await {
        match control {
            Control::Heartbeat { seq } => {
                if !acks_heartbeats.load(std::sync::atomic::Ordering::Relaxed) {
                    continue;
                }
                let _ = out.send(Control::HeartbeatAck { seq }.encode().unwrap());
                if !up {
                    up = true;
                    let _ = events.send(Event::LinkUp);
                }
            }
            Control::Relay(relay) => {
                let relay = *relay;
                let relay_id = relay.relay_id;
                // The handler first, so that a held answer is registered before the test hears
                // of the relay.
                let answer = handler(relay.clone());
                let _ = events.send(Event::Relay(relay));
                let out = out.clone();
                answers.spawn(async move {
                    let response = answer.await;
                    let unreadable =
                        matches!(&response, Response::Error(f) if f.message == UNREADABLE);
                    let mut message = Control::RelayReply { relay_id, response }.encode().unwrap();
                    if unreadable {
                        // Cut short: whole frames, sound MACs, an answer that does not decode.
                        message.body.pop();
                    }
                    let _ = out.send(message);
                });
            }
            other => panic!("unexpected {other:?} from the worker"),
        }
    }
    write.abort();
}

pub fn sym(s: &str) -> Symbol {
    Symbol::new(s).unwrap()
}

/// Bars for a series: `BIG` gets 2000 of them (well over one small packet), others 3.
pub fn bars_for(symbol: Symbol) -> Vec<Bar> {
    let count = if symbol.as_str() == "BIG" { 2000 } else { 3 };
    (0..count)
        .map(|i| {
            let price = Price::from_raw(1_000_000_000 + i);
            Bar {
                open: price,
                high: price,
                low: price,
                close: price,
                volume: Qty::from_raw(100),
                time: Timestamp(i64::try_from(i).unwrap() * 86_400_000_000),
            }
        })
        .collect()
}

/// The test master's default answers: every login gets [`SESSION`]; only [`SESSION`] is a
/// valid session; asset data for any symbol; orders fill at 10.
pub fn answer(relay: &Relay) -> Response {
    let fill = |symbol: Symbol, qty: Qty, side| FillReport {
        order: OrderId(relay.relay_id),
        symbol,
        side,
        qty,
        price: Price::parse("10").unwrap(),
        amount: Cash::parse("10").unwrap(),
        interval: IntervalId(1),
        settled_at: relay.received_at,
        cash_after: Cash::parse("1000").unwrap(),
    };
    let tick = |symbol| Tick {
        symbol,
        open: Price::parse("10").unwrap(),
        high: Price::parse("11").unwrap(),
        low: Price::parse("9").unwrap(),
        close: Price::parse("10.5").unwrap(),
        volume: Qty::from_raw(1000),
        time: Timestamp(1_000 * 86_400_000_000),
    };
    let request = &relay.request;
    if let Some(session) = request.session()
        && session != SESSION
    {
        return request.fail(Failure::new(Reason::BadSession, "unknown session"));
    }
    match request {
        Request::Login { .. } | Request::LoginSession { .. } => Response::SessionId(SESSION),
        Request::Register { .. } => Response::RegisterSuccess,
        Request::Logout { .. } => Response::LogoutSuccess,
        Request::Purchase { symbol, qty, .. } => {
            Response::PurchaseSuccess(fill(*symbol, *qty, Side::Buy))
        }
        Request::Sell { symbol, qty, .. } => Response::SellSuccess(fill(*symbol, *qty, Side::Sell)),
        Request::SwitchState { state, .. } => Response::StateSwitchSuccess(*state),
        Request::GetWorkers => Response::Data(DataPayload::WorkerList(Vec::new())),
        Request::GetAssetInfo { symbol } | Request::GetAssetValueCurrent { symbol } => {
            Response::Data(DataPayload::AssetInfo(tick(*symbol)))
        }
        Request::GetAssetValue { symbol, .. } | Request::GetAssetValueAllTime { symbol } => {
            Response::Data(DataPayload::PriceSeries(PriceSeries {
                symbol: *symbol,
                bars: bars_for(*symbol),
            }))
        }
        Request::GetUserPortfolio { .. } => Response::Data(DataPayload::Portfolio(Portfolio {
            cash: Cash::parse("1000").unwrap(),
            holdings: Vec::new(),
        })),
        Request::GetUserInfo { .. } | Request::GetUserTransactionHistory { .. } => {
            request.fail(Failure::new(Reason::NotFound, "not in this test"))
        }
    }
}

/// A handler that refuses every session check (`loginSession`) with `reason`, and answers
/// everything else as [`answer`] does.
pub fn refuse_session_checks(reason: Reason, message: &'static str) -> Handler {
    Arc::new(move |relay: Relay| {
        let response = match relay.request {
            Request::LoginSession { .. } => Response::LoginFail(Failure::new(reason, message)),
            _ => answer(&relay),
        };
        Box::pin(async move { response })
    })
}

/// A handler answering at once with [`answer`].
pub fn answer_at_once() -> Handler {
    Arc::new(|relay: Relay| {
        let response = answer(&relay);
        Box::pin(async move { response })
    })
}

/// A handler that holds back the answer to every purchase until the returned sender fires (or
/// is dropped), and answers everything else at once.
pub fn hold_purchases() -> (Handler, Arc<Mutex<Vec<oneshot::Sender<()>>>>) {
    hold_purchases_where(|_| true)
}

/// [`hold_purchases`], holding only the purchases whose client order id passes `hold`; the
/// others are answered at once.
pub fn hold_purchases_where(
    hold: impl Fn(u64) -> bool + Send + Sync + 'static,
) -> (Handler, Arc<Mutex<Vec<oneshot::Sender<()>>>>) {
    let releases: Arc<Mutex<Vec<oneshot::Sender<()>>>> = Arc::default();
    let held = releases.clone();
    let handler: Handler = Arc::new(move |relay: Relay| {
        let response = answer(&relay);
        if matches!(relay.request, Request::Purchase { client_order_id, .. } if hold(client_order_id))
        {
            let (release, released) = oneshot::channel();
            held.lock().unwrap().push(release);
            Box::pin(async move {
                let _ = released.await;
                response
            })
        } else {
            Box::pin(async move { response })
        }
    });
    (handler, releases)
}

/// A running worker.
pub struct TestWorker {
    pub addr: SocketAddr,
    pub stats: Stats,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), worker::server::ServerError>>>,
}

/// A worker configuration for tests: fast reconnection, a cache that does not expire during a
/// test (no timing in tests), the given master and keys.
pub fn worker_config(keys: &Keys, master: SocketAddr) -> WorkerConfig {
    let mut config = WorkerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        master: master.to_string(),
        key_dir: keys.worker_key_dir.clone(),
        master_cert: Some(keys.master_cert.clone()),
        ..WorkerConfig::default()
    };
    config.link.reconnect_backoff_min = Duration::from_millis(5);
    config.link.reconnect_backoff_max = Duration::from_millis(50);
    config.cache.ttl = Duration::from_secs(3600);
    config.cache.closed_ttl = Duration::from_secs(3600);
    config.log.file = keys.dir.path().join("worker.log");
    config
}

impl TestWorker {
    pub async fn start(config: WorkerConfig) -> Self {
        let listener = TcpListener::bind(config.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let identity = WorkerIdentity::load(&config.key_dir).unwrap();
        let trust = MasterTrust::load(config.master_cert.as_ref().unwrap()).unwrap();
        let stats = Stats::new();
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(worker::run_with_stats(
            config,
            listener,
            identity,
            trust,
            async move {
                let _ = stop.await;
            },
            stats.clone(),
        ));
        Self { addr, stats, shutdown: Some(shutdown), task: Some(task) }
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Signals the shutdown; [`TestWorker::stopped`] waits for it to finish.
    pub fn shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Waits until the worker has stopped; its result.
    pub async fn stopped(&mut self) -> Result<(), worker::server::ServerError> {
        self.task.take().expect("not awaited twice").await.unwrap()
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A protocol client.
pub struct Client {
    pub framed: FramedStream<TcpStream>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        Self { framed: FramedStream::new(stream) }
    }

    /// Connects and writes `bytes` as they are (bypassing the encoder), then half-closes the
    /// connection if `then_eof`.
    pub async fn raw(addr: SocketAddr, bytes: &[u8], then_eof: bool) -> Self {
        use tokio::io::AsyncWriteExt as _;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        if then_eof {
            stream.shutdown().await.unwrap();
        }
        Self { framed: FramedStream::new(stream) }
    }

    pub async fn send(&mut self, request: &Request) {
        self.framed.write_request(request).await.unwrap();
    }

    pub async fn receive(&mut self) -> Response {
        self.framed.read_response().await.unwrap().expect("an answer, not EOF")
    }

    pub async fn call(&mut self, request: &Request) -> Response {
        self.send(request).await;
        self.receive().await
    }

    /// Logs in (as `alice`, expirable or not) and returns the session.
    pub async fn login(&mut self, expirable: bool) -> SessionId {
        let request = Request::Login {
            username: Username::new("alice").unwrap(),
            password: HashedPassword::new(vec![1; 32]).unwrap(),
            expirable,
        };
        match self.call(&request).await {
            Response::SessionId(session) => session,
            other => panic!("login failed: {other:?}"),
        }
    }

    /// Logs in and switches to data transfer state.
    pub async fn login_for_data(&mut self) -> SessionId {
        let session = self.login(false).await;
        let switch = Request::SwitchState { session, state: ConnState::DataTransfer };
        assert_eq!(self.call(&switch).await, Response::StateSwitchSuccess(ConnState::DataTransfer));
        session
    }

    /// True when the worker closed the connection (after any answers still to be read).
    pub async fn closed(&mut self) -> bool {
        matches!(self.framed.read_response().await, Ok(None) | Err(_))
    }
}

pub fn current(symbol: &str) -> Request {
    Request::GetAssetValueCurrent { symbol: sym(symbol) }
}

pub fn info(symbol: &str) -> Request {
    Request::GetAssetInfo { symbol: sym(symbol) }
}

pub fn all_time(symbol: &str) -> Request {
    Request::GetAssetValueAllTime { symbol: sym(symbol) }
}

pub fn purchase(session: SessionId, symbol: &str, client_order_id: u64) -> Request {
    Request::Purchase {
        session,
        symbol: sym(symbol),
        qty: Qty::from_raw(100_000_000),
        client_order_id,
    }
}

pub fn portfolio(session: SessionId) -> Request {
    Request::GetUserPortfolio { session, username: Username::new("alice").unwrap() }
}

/// The reason of a failure answer; panics on success.
pub fn reason(response: &Response) -> Reason {
    response.failure().unwrap_or_else(|| panic!("expected a failure, got {response:?}")).reason
}

/// Starts keys, a test master answering with `handler`, and a worker whose link is up.
pub async fn cluster(
    handler: Handler,
    tweak: impl FnOnce(&mut WorkerConfig),
) -> (Keys, TestMaster, TestWorker) {
    let keys = Keys::new();
    let mut master = TestMaster::start(
        "127.0.0.1:0".parse().unwrap(),
        keys.master.clone(),
        keys.registry.clone(),
        handler,
    )
    .await;
    let mut config = worker_config(&keys, master.addr);
    tweak(&mut config);
    let worker = TestWorker::start(config).await;
    master.wait_link_up().await;
    (keys, master, worker)
}
