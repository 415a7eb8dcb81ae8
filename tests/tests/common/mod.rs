//! Shared pieces of the reliability and security suite (`crash.rs`, `storage.rs`, `hostile.rs`,
//! `security.rs`): a master and its workers wired by hand (so every config knob is reachable),
//! a wire-protocol client, a seeded random generator, and the soak switch.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use engine::{Email, Username};
use master::config::{IpNet, MasterConfig, WorkerConfig as Registration};
use master::worker_auth::MasterIdentity;
use net::{FramedStream, HashedPassword, Reason, Request, Response, SessionId};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use worker::identity::{MasterTrust, WorkerIdentity};

/// True when `PT_SOAK=1`: the long mode of every test of the suite.
pub fn soak() -> bool {
    std::env::var("PT_SOAK").is_ok_and(|v| v == "1")
}

/// The seed of this run: `PT_SEED` if set (to replay a failure), else the clock.
pub fn seed() -> u64 {
    std::env::var("PT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_nanos() % u128::from(u64::MAX)).unwrap_or(1))
    })
}

/// A small deterministic generator (xorshift64*), so a seed replays a run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// A value in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// A value in `0..n` (n > 0), as an index.
    pub fn index(&mut self, n: usize) -> usize {
        let n = u64::try_from(n).expect("usize fits in u64 here");
        usize::try_from(self.below(n)).expect("below n, which came from a usize")
    }
    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64().to_le_bytes()[0]).collect()
    }
}

/// The resident set size of this process in KiB (`VmRSS` of /proc/self/status).
pub fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// The highest resident set size this process has had, in KiB (`VmHWM`).
pub fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

/// A `kB` field of /proc/self/status; panics when it is missing, so that a memory check never
/// passes on a value it could not read.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Completes when `stop` becomes true (or its sender is gone).
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A worker identity saved in `dir`, and the path of its public certificate.
pub fn new_worker_identity(dir: &Path, name: &str) -> (WorkerIdentity, PathBuf) {
    let identity = WorkerIdentity::generate(uuid::Uuid::new_v4(), name).unwrap();
    identity.save(dir).unwrap();
    let cert = dir.join(worker::identity::PUBLIC_CERT_FILE_NAME);
    (identity, cert)
}

/// The master's data directory with its key made, and the trust a worker puts in it.
pub fn master_dir(root: &Path) -> (PathBuf, MasterTrust) {
    let dir = root.join("master");
    std::fs::create_dir_all(&dir).unwrap();
    MasterIdentity::load_or_generate(&dir).unwrap();
    let trust = MasterTrust::load(&MasterIdentity::public_cert_path(&dir)).unwrap();
    (dir, trust)
}

/// A master configuration admitting `workers` (identity, certificate) from loopback.
pub fn master_config(
    dir: &Path,
    listen: SocketAddr,
    workers: &[(uuid::Uuid, PathBuf)],
    interval: Duration,
) -> MasterConfig {
    let mut config = MasterConfig {
        listen,
        data_dir: dir.to_path_buf(),
        update_interval: interval,
        workers: workers
            .iter()
            .map(|(id, cert)| Registration {
                id: *id,
                name: None,
                cert: cert.clone(),
                allowed_ips: vec![IpNet::new(Ipv4Addr::LOCALHOST.into(), 32).unwrap()],
            })
            .collect(),
        ..MasterConfig::default()
    };
    // Every test client registers from 127.0.0.1.
    config.auth.registrations.per_ip_max = 1_000_000;
    // Cheap hashing: the suite measures behaviour, not argon2.
    config.auth.argon2.m_cost_kib = 1024;
    config.auth.argon2.t_cost = 1;
    config.log.file = dir.join("pt-master.log");
    config
}

/// A worker configuration for a worker listening on `listen` and linking to `master`.
pub fn worker_config(
    key_dir: &Path,
    listen: SocketAddr,
    master: SocketAddr,
    master_dir: &Path,
) -> worker::WorkerConfig {
    let mut config = worker::WorkerConfig {
        listen,
        master: master.to_string(),
        key_dir: key_dir.to_path_buf(),
        master_cert: Some(MasterIdentity::public_cert_path(master_dir)),
        ..worker::WorkerConfig::default()
    };
    config.log.file = key_dir.join("pt-worker.log");
    config.link.reconnect_backoff_min = Duration::from_millis(20);
    config.link.reconnect_backoff_max = Duration::from_millis(200);
    config
}

/// A master running as a task of this process.
pub struct MasterTask {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), master::server::ServerError>>,
}

impl MasterTask {
    /// Starts `config` on a fresh loopback port (or `config.listen` if its port is not 0).
    pub async fn start(mut config: MasterConfig) -> Self {
        let listener = TcpListener::bind(config.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        config.listen = addr;
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(master::server::run(config, listener, stopped(rx)));
        MasterTask { addr, stop, task }
    }

    /// Stops it gracefully and returns its result.
    pub async fn stop(self) -> Result<(), master::server::ServerError> {
        let _ = self.stop.send(true);
        self.task.await.unwrap()
    }

    /// Its result, if it stops by itself within `limit` (else it is stopped, and `None`).
    #[allow(dead_code)]
    pub async fn ended_within(
        mut self,
        limit: Duration,
    ) -> Option<Result<(), master::server::ServerError>> {
        match tokio::time::timeout(limit, &mut self.task).await {
            Ok(result) => Some(result.unwrap()),
            Err(_) => {
                let _ = self.stop().await;
                None
            }
        }
    }
}

/// A worker running as a task of this process.
pub struct WorkerTask {
    /// Where clients reach it.
    pub addr: SocketAddr,
    /// Its counters.
    pub stats: worker::Stats,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), worker::server::ServerError>>,
}

impl WorkerTask {
    /// Starts a worker with `config` (its `listen` port 0 picks one) and `identity`.
    pub async fn start(
        mut config: worker::WorkerConfig,
        identity: WorkerIdentity,
        trust: MasterTrust,
    ) -> Self {
        let listener = TcpListener::bind(config.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        config.listen = addr;
        let stats = worker::Stats::new();
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(worker::run_with_stats(
            config,
            listener,
            identity,
            trust,
            stopped(rx),
            stats.clone(),
        ));
        WorkerTask { addr, stats, stop, task }
    }

    /// Stops it gracefully and returns its result.
    pub async fn stop(self) -> Result<(), worker::server::ServerError> {
        let _ = self.stop.send(true);
        self.task.await.unwrap()
    }

    /// Ends its task at once, as a crash would (its sockets close).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// A master and one worker in this process, on loopback, in `root`.
pub struct Pair {
    /// The master.
    pub master: MasterTask,
    /// The worker.
    pub worker: WorkerTask,
    /// The master's data directory.
    pub master_dir: PathBuf,
    /// The worker's key directory (and log).
    pub key_dir: PathBuf,
}

impl Pair {
    /// Starts both in `root/master` and `root/worker` (made, or reused as they are: a restart);
    /// `adjust` may change the configurations first.
    pub async fn start(
        root: &Path,
        interval: Duration,
        adjust: impl FnOnce(&mut MasterConfig, &mut worker::WorkerConfig),
    ) -> Self {
        let (master_dir, trust) = master_dir(root);
        let key_dir = root.join("worker");
        let (identity, cert) = if key_dir.join(worker::identity::KEY_FILE_NAME).exists() {
            let cert = key_dir.join(worker::identity::PUBLIC_CERT_FILE_NAME);
            (WorkerIdentity::load(&key_dir).unwrap(), cert)
        } else {
            new_worker_identity(&key_dir, "w1")
        };
        let mut master_config = master_config(
            &master_dir,
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            &[(identity.uuid(), cert)],
            interval,
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let worker_addr = listener.local_addr().unwrap();
        drop(listener);
        let master_probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        master_config.listen = master_probe.local_addr().unwrap();
        drop(master_probe);
        let mut worker_config =
            worker_config(&key_dir, worker_addr, master_config.listen, &master_dir);
        adjust(&mut master_config, &mut worker_config);
        let master = MasterTask::start(master_config).await;
        let worker = WorkerTask::start(worker_config, identity, trust).await;
        Pair { master, worker, master_dir, key_dir }
    }

    /// Stops the worker, then the master, both gracefully.
    pub async fn stop(self) {
        self.worker.stop().await.unwrap();
        self.master.stop().await.unwrap();
    }
}

/// A client speaking the wire protocol.
pub struct Client(pub FramedStream<TcpStream>);

impl Client {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Self {
        Client(FramedStream::new(TcpStream::connect(addr).await.unwrap()))
    }

    /// Sends `request` and reads its answer (60 s at most).
    pub async fn send(&mut self, request: Request) -> Response {
        self.0.write_request(&request).await.unwrap();
        tokio::time::timeout(Duration::from_secs(60), self.0.read_response())
            .await
            .expect("an answer within 60 s")
            .unwrap()
            .expect("the connection stays open")
    }

    /// Sends `request` until the answer is not `master_unavailable` (the worker links to the
    /// master in the background).
    pub async fn send_when_linked(&mut self, request: Request) -> Response {
        for _ in 0..1200 {
            let response = self.send(request.clone()).await;
            if !is_master_unavailable(&response) {
                return response;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the worker never linked to the master");
    }
}

/// Whether `response` is a refusal with `master_unavailable`.
pub fn is_master_unavailable(response: &Response) -> bool {
    failure_reason(response) == Some(Reason::MasterUnavailable)
}

/// The reason of a failure return, if `response` is one.
pub fn failure_reason(response: &Response) -> Option<Reason> {
    match response {
        Response::Error(f)
        | Response::LoginFail(f)
        | Response::DataFail(f)
        | Response::RegisterFail(f)
        | Response::LogoutFail(f)
        | Response::PurchaseFail(f)
        | Response::SellFail(f)
        | Response::StateSwitchFail(f) => Some(f.reason),
        _ => None,
    }
}

/// A username.
pub fn user(name: &str) -> Username {
    Username::new(name).unwrap()
}

/// The client-side hash of a password: 32 copies of `byte`.
pub fn password(byte: u8) -> HashedPassword {
    HashedPassword::new(vec![byte; 32]).unwrap()
}

/// Registers `name` (email `name@example.com`, password `byte`) and logs in.
pub async fn register_and_login(client: &mut Client, name: &str, byte: u8) -> SessionId {
    let registered = client
        .send_when_linked(Request::Register {
            username: user(name),
            email: Email::new(&format!("{name}@example.com")).unwrap(),
            password: password(byte),
        })
        .await;
    assert_eq!(registered, Response::RegisterSuccess, "register {name}");
    login(client, name, byte).await
}

/// Logs `name` in with password `byte`.
pub async fn login(client: &mut Client, name: &str, byte: u8) -> SessionId {
    match client
        .send(Request::Login { username: user(name), password: password(byte), expirable: false })
        .await
    {
        Response::SessionId(session) => session,
        other => panic!("login {name}: {other:?}"),
    }
}
