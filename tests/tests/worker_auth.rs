//! Worker authentication end to end: a worker identity generated and saved to disk, registered
//! on the master through the TOML snippet `pt-worker keygen` prints (parsed by the master's own
//! configuration loader), a master key generated in the master's data directory and its
//! `master.pub.asc` loaded by the worker as the master it trusts, and the whole mutual handshake
//! (Hello with the worker's nonce, admission, Challenge with the master's nonce, the sealed link
//! key and the master's proof over both, the worker's check of that proof, the worker's proof,
//! accepted) between the two real implementations; the real master (`master::server::run` on
//! loopback) refusing a real worker link (`MasterLink`) with an unknown UUID, with a key it does
//! not hold for the UUID, and from an address outside the allow-list, each for its own logged
//! cause; and an attacker on the path between the real worker link and the real master, who
//! cannot swap the link key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use master::config::{MasterConfig, WorkerConfig};
use master::worker_auth::{
    self, AuthError, HelloBinding, MasterIdentity, RegisteredWorker, WorkerRegistry,
};
use net::{Control, FramedStream, Instruction, LinkKey, ReadError};
use proptest::prelude::*;
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;
use worker::config::LinkConfig;
use worker::identity::{
    self, IdentityError, MasterChallenge, MasterProofError, MasterTrust, WorkerIdentity,
};
use worker::master_link::{LinkParams, LinkState, MasterLink};

const HELLO: HelloBinding<'static> =
    HelloBinding { protocol_version: 1, client_addr: "127.0.0.1:2049" };

/// The worker's view of the same Hello fields.
fn worker_hello<'a>(hello: &HelloBinding<'a>) -> identity::HelloBinding<'a> {
    identity::HelloBinding {
        protocol_version: hello.protocol_version,
        client_addr: hello.client_addr,
    }
}

fn loopback() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

/// Stand-in sealed key for the tests of other fields: the proof covers its hash whatever the
/// bytes are.
const SEALED: &[u8] = b"stand-in sealed link key";

/// The worker's view of a Challenge.
fn challenge<'a>(
    nonce: &'a [u8; 32],
    master_proof: &'a [u8],
    sealed_key: &'a [u8],
) -> MasterChallenge<'a> {
    MasterChallenge { nonce, master_proof, sealed_key }
}

/// What the master sends in the Challenge, and the link key it keeps.
struct SentChallenge {
    link_key: LinkKey,
    nonce: [u8; 32],
    master_proof: Vec<u8>,
    sealed_key: Vec<u8>,
}

/// Step 2, the master's side, composed from the `worker_auth` calls `master::server` makes: a
/// fresh link key sealed to the registered worker, a fresh nonce, and the proof over both nonces,
/// the Hello and the sealed key. It serves the tests of the worker's checks and of the check
/// functions; that the real server refuses a worker is tested against it over loopback (the
/// `the_real_master_*` tests).
fn master_challenge(
    master: &MasterIdentity,
    registered: &RegisteredWorker,
    worker_nonce: &[u8; 32],
) -> Result<SentChallenge, AuthError> {
    let link_key = worker_auth::new_link_key()?;
    let sealed_key = worker_auth::seal_link_key(registered, &link_key)?;
    let nonce = worker_auth::new_challenge()?;
    let master_proof = master.sign_worker_challenge(
        registered.uuid(),
        worker_nonce,
        &nonce,
        &HELLO,
        &sealed_key,
    )?;
    Ok(SentChallenge { link_key, nonce, master_proof, sealed_key })
}

/// A worker identity saved in a temp dir, loaded back as the worker daemon would, a master
/// registry built from the registration snippet, allowing loopback and 10.0.0.0/8, the master's
/// key from its data directory, and the worker's trust in it, read from `master.pub.asc`.
struct Setup {
    _dir: tempfile::TempDir,
    identity: WorkerIdentity,
    registry: WorkerRegistry,
    data_dir: std::path::PathBuf,
    master: MasterIdentity,
    trust: MasterTrust,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let uuid = Uuid::new_v4();
    let key_dir = dir.path().join("worker");
    WorkerIdentity::generate(uuid, "test worker").unwrap().save(&key_dir).unwrap();
    let identity = WorkerIdentity::load(&key_dir).unwrap();
    let cert_path = key_dir.join(identity::PUBLIC_CERT_FILE_NAME);
    let snippet = identity
        .registration_toml("test-worker", &cert_path, &["127.0.0.1".into(), "10.0.0.0/8".into()])
        .unwrap();
    let config = MasterConfig::from_toml_str(&snippet, "keygen snippet").unwrap();
    config.validate().unwrap();
    let registry = WorkerRegistry::from_entries(&config.workers).unwrap();
    let data_dir = dir.path().join("master-data");
    let master = MasterIdentity::load_or_generate(&data_dir).unwrap();
    let trust = MasterTrust::load(&MasterIdentity::public_cert_path(&data_dir)).unwrap();
    Setup { _dir: dir, identity, registry, data_dir, master, trust }
}

/// Which end refused the handshake, and why.
#[derive(Debug)]
enum Refused {
    /// The master refused the worker.
    ByMaster(AuthError),
    /// The worker refused the master.
    ByWorker(IdentityError),
}

impl From<AuthError> for Refused {
    fn from(err: AuthError) -> Self {
        Self::ByMaster(err)
    }
}

impl From<IdentityError> for Refused {
    fn from(err: IdentityError) -> Self {
        Self::ByWorker(err)
    }
}

impl Refused {
    /// The worker's reason for refusing the master's proof; panics otherwise.
    fn by_worker(self) -> MasterProofError {
        match self {
            Self::ByWorker(IdentityError::MasterProof(err)) => err,
            Self::ByMaster(err) => panic!("refused by the master, not the worker: {err}"),
            Self::ByWorker(err) => {
                panic!("expected the worker to refuse the master's proof: {err}")
            }
        }
    }
}

/// The whole mutual handshake, composed from the library calls both sides make, between `worker`
/// (trusting `trust`) and a master holding `master` and `registry`; returns the link key both
/// ends hold. The worker signs nothing unless the master's proof verified. Not the server: the
/// `the_real_master_*` tests run the refusals against `master::server::run`.
fn mutual_handshake(
    worker: &WorkerIdentity,
    trust: &MasterTrust,
    master: &MasterIdentity,
    registry: &WorkerRegistry,
    peer: IpAddr,
) -> Result<(LinkKey, LinkKey), Refused> {
    let hello = worker_hello(&HELLO);
    // 1: Hello{uuid, version, address, worker nonce}; the master's admission check.
    let worker_nonce = identity::new_nonce()?;
    let registered = registry.check_admission(worker.uuid(), peer)?;
    // 2: Challenge{master nonce, master proof, sealed link key}.
    let sent = master_challenge(master, registered, &worker_nonce)?;
    // 3: the worker checks the master and the sealed key, then proves itself.
    let received = challenge(&sent.nonce, &sent.master_proof, &sent.sealed_key);
    trust.verify_master_proof(
        worker.uuid(),
        &worker_nonce,
        &hello,
        &received,
        SystemTime::now(),
    )?;
    let proof = worker.sign_challenge(&sent.nonce, &hello)?;
    // 4: the master checks the worker; Accepted{}; the worker decrypts the Challenge's key.
    worker_auth::verify_proof(registered, &sent.nonce, &HELLO, &proof, SystemTime::now())?;
    let key = worker.decrypt_link_key(received.sealed_key)?;
    Ok((sent.link_key, key))
}

/// The mutual handshake of `worker` with the setup's master, the worker trusting it.
fn handshake(s: &Setup, worker: &WorkerIdentity, peer: IpAddr) -> Result<LinkKey, Refused> {
    let (sent, received) = mutual_handshake(worker, &s.trust, &s.master, &s.registry, peer)?;
    assert_eq!(sent, received);
    Ok(received)
}

fn registered_worker(setup: &Setup) -> &RegisteredWorker {
    setup.registry.check_admission(setup.identity.uuid(), loopback()).unwrap()
}

#[test]
fn mutual_handshake_succeeds_and_link_key_round_trips() {
    let s = setup();
    let key = handshake(&s, &s.identity, loopback()).unwrap();
    assert_ne!(key, LinkKey([0; 32]));
    let registered = registered_worker(&s);
    assert_eq!(registered.fingerprint(), s.identity.fingerprint());
    assert_eq!(registered.name(), "test-worker");
    // The worker trusts exactly the master's key, read from the master's data directory.
    assert_eq!(s.trust.fingerprint(), s.master.fingerprint());
    // Also from an address in the CIDR range, and as an IPv4-mapped IPv6 peer; every handshake
    // gives a new link key.
    for peer in ["10.20.30.40", "::ffff:127.0.0.1"] {
        let again = handshake(&s, &s.identity, peer.parse().unwrap()).unwrap();
        assert_ne!(again, key);
    }
    // The master restarted on the same data directory keeps its key, so the worker's trust
    // still holds; and the worker can be given the armored text instead of the file.
    let restarted = MasterIdentity::load_or_generate(&s.data_dir).unwrap();
    assert_eq!(restarted.fingerprint(), s.master.fingerprint());
    let armored = restarted.public_cert_armored().unwrap();
    let trust = MasterTrust::from_armored(&armored).unwrap();
    let (sent, received) =
        mutual_handshake(&s.identity, &trust, &restarted, &s.registry, loopback()).unwrap();
    assert_eq!(sent, received);
}

#[test]
fn both_sides_sign_and_verify_the_same_bytes() {
    let uuid = Uuid::new_v4();
    let nonce = [7; 32];
    assert_eq!(
        identity::auth_message(uuid, &nonce, &worker_hello(&HELLO)).unwrap(),
        worker_auth::auth_message(uuid, &nonce, &HELLO).unwrap()
    );
    for sealed_key in [SEALED, &[0xC1; 300][..], &[]] {
        assert_eq!(
            identity::master_auth_message(
                uuid,
                &[8; 32],
                &nonce,
                &worker_hello(&HELLO),
                sealed_key
            )
            .unwrap(),
            worker_auth::master_auth_message(uuid, &[8; 32], &nonce, &HELLO, sealed_key).unwrap()
        );
    }
    // The sealed key's hash ends the message: another key, other bytes.
    assert_ne!(
        worker_auth::master_auth_message(uuid, &[8; 32], &nonce, &HELLO, SEALED).unwrap(),
        worker_auth::master_auth_message(uuid, &[8; 32], &nonce, &HELLO, &SEALED[1..]).unwrap()
    );
    assert_eq!(identity::SEALED_KEY_HASH_BYTES, worker_auth::SEALED_KEY_HASH_BYTES);
    assert_eq!(identity::LINK_KEY_BYTES, worker_auth::LINK_KEY_BYTES);
    assert_eq!(identity::AUTH_DOMAIN, worker_auth::AUTH_DOMAIN);
    assert_eq!(identity::MASTER_AUTH_DOMAIN, worker_auth::MASTER_AUTH_DOMAIN);
    assert_ne!(identity::AUTH_DOMAIN, identity::MASTER_AUTH_DOMAIN);
    assert_eq!(identity::NONCE_BYTES, worker_auth::NONCE_BYTES);
    assert_eq!(identity::CLIENT_ADDR_BYTES_MAX, worker_auth::CLIENT_ADDR_BYTES_MAX);
    assert_eq!(identity::PROOF_SIGNATURE_BYTES_MAX, worker_auth::PROOF_SIGNATURE_BYTES_MAX);
    assert_eq!(identity::SIGNATURE_CLOCK_SKEW_MAX, worker_auth::SIGNATURE_CLOCK_SKEW_MAX);
    assert_eq!(worker_auth::MASTER_CERT_FILE_NAME, "master.pub.asc");
}

/// The admission check alone (the real master's refusal: `the_real_master_refuses_an_unknown_uuid`).
#[test]
fn admission_check_refuses_an_unknown_uuid() {
    let s = setup();
    let other = WorkerIdentity::generate(Uuid::new_v4(), "stranger").unwrap();
    let err = s.registry.check_admission(other.uuid(), loopback()).unwrap_err();
    assert_eq!(err, AuthError::UnknownWorker { uuid: other.uuid() });
    assert_eq!(err.reason(), "unknown_worker");
}

/// The admission check alone, for addresses a test cannot connect from (the real master's
/// refusal: `the_real_master_refuses_an_address_outside_the_allow_list`).
#[test]
fn admission_check_refuses_an_address_outside_the_allow_list() {
    let s = setup();
    for peer in ["127.0.0.2", "11.0.0.1", "::1", "192.168.1.1"] {
        let peer: IpAddr = peer.parse().unwrap();
        let err = s.registry.check_admission(s.identity.uuid(), peer).unwrap_err();
        assert_eq!(err, AuthError::IpNotAllowed { uuid: s.identity.uuid(), peer });
        assert_eq!(err.reason(), "ip_not_allowed");
    }
}

/// The proof check alone (the real master's refusal:
/// `the_real_master_refuses_a_registered_uuid_with_another_key`).
#[test]
fn proof_check_refuses_a_signature_from_another_key() {
    let s = setup();
    // An impostor claiming the registered UUID, with its own key.
    let impostor = WorkerIdentity::generate(s.identity.uuid(), "impostor").unwrap();
    let nonce = worker_auth::new_challenge().unwrap();
    let proof = impostor.sign_challenge(&nonce, &worker_hello(&HELLO)).unwrap();
    let err =
        worker_auth::verify_proof(registered_worker(&s), &nonce, &HELLO, &proof, SystemTime::now())
            .unwrap_err();
    assert_eq!(err, AuthError::WrongKey);
    assert_eq!(err.reason(), "wrong_key");
}

/// The log of this test process (set up once, before any master logs): the real master logs the
/// cause of each refusal, which the worker is never told, and each link it makes.
fn process_log() -> &'static master::logbook::LogGuard {
    static LOG: OnceLock<master::logbook::LogGuard> = OnceLock::new();
    LOG.get_or_init(|| {
        master::logbook::init_tracing(&master::logbook::LogbookConfig {
            memory_entries_max: 1_000_000,
            ..master::logbook::LogbookConfig::default()
        })
        .unwrap()
    })
}

/// What the real master logged about the first handshake of worker `uuid` it decided.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// `worker refused worker=<uuid> cause=<cause>`, and the whole entry (with the
    /// `conn{peer=...}` span the master saw the connection from).
    Refused { cause: String, entry: String },
    /// `worker linked uuid=<uuid> ...`.
    Linked,
}

/// Waits (60 s at most) for the master's first verdict on a handshake of worker `uuid`. Every
/// test links its own UUID, so the verdict is about that test's first attempt.
async fn first_verdict(uuid: Uuid) -> Verdict {
    let refused = format!("worker refused worker={uuid} cause=");
    let linked = format!("worker linked uuid={uuid} ");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for entry in process_log().logbook().dump() {
            if let Some(at) = entry.message.find(&refused) {
                let cause = entry.message[at + refused.len()..].trim().to_owned();
                return Verdict::Refused { cause, entry: entry.message };
            }
            if entry.message.contains(&linked) {
                return Verdict::Linked;
            }
        }
        assert!(Instant::now() < deadline, "the master logged no verdict on worker {uuid}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A real master (`master::server::run`) on loopback, in a temp dir, with one registered worker
/// allowed to link from 127.0.0.1 only.
struct RealMaster {
    dir: tempfile::TempDir,
    task: common::MasterTask,
    trust: MasterTrust,
    uuid: Uuid,
}

impl RealMaster {
    async fn start() -> Self {
        Self::start_with(|config| {
            let allowed = &config.workers[0].allowed_ips;
            assert_eq!(allowed, &["127.0.0.1/32".parse().unwrap()], "loopback only");
        })
        .await
    }

    /// A master whose configuration `adjust` changed first.
    async fn start_with(adjust: impl FnOnce(&mut master::config::MasterConfig)) -> Self {
        process_log();
        let dir = tempfile::tempdir().unwrap();
        let (master_dir, trust) = common::master_dir(dir.path());
        let (identity, cert) = common::new_worker_identity(&dir.path().join("worker"), "w");
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut config = common::master_config(
            &master_dir,
            listen,
            &[(identity.uuid(), cert)],
            Duration::from_millis(50),
        );
        adjust(&mut config);
        let task = common::MasterTask::start(config).await;
        Self { dir, task, trust, uuid: identity.uuid() }
    }

    /// The registered worker's identity, as the worker daemon loads it.
    fn registered(&self) -> WorkerIdentity {
        WorkerIdentity::load(&self.dir.path().join("worker")).unwrap()
    }

    /// Whether the master lists worker `uuid` to a client now.
    async fn lists(&self, uuid: Uuid) -> bool {
        let mut client = common::Client::connect(self.task.addr).await;
        match client.send(net::Request::GetWorkers).await {
            net::Response::Data(net::DataPayload::WorkerList(list)) => {
                list.iter().any(|w| w.id.0 == uuid.as_u128())
            }
            other => panic!("the master's worker list: {other:?}"),
        }
    }

    /// Waits (60 s at most) until the master lists worker `uuid`.
    async fn wait_until_listed(&self, uuid: Uuid) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.lists(uuid).await {
            assert!(Instant::now() < deadline, "the master never listed worker {uuid}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.task.stop().await.unwrap();
    }

    /// The master's refusal of `link`'s first handshake as worker `uuid`, for `cause`: the link
    /// never came up and `uuid` is not listed. Stops the link; returns the log entry.
    async fn refused(&self, link: TestLink, uuid: Uuid, cause: &str, what: &str) -> String {
        let Verdict::Refused { cause: logged, entry } = first_verdict(uuid).await else {
            panic!("the master linked {what}");
        };
        assert_eq!(logged, cause, "{entry}");
        assert_ne!(link.link.state(), LinkState::Up);
        assert!(!self.lists(uuid).await);
        link.stop().await;
        entry
    }

    /// The registered worker, with its own key, links through `addr` and is listed.
    async fn the_registered_worker_links(&self, addr: SocketAddr) {
        let genuine = TestLink::start(addr, self.registered(), self.trust.clone());
        genuine.wait_up().await;
        self.wait_until_listed(self.uuid).await;
        genuine.stop().await;
    }
}

/// A real worker link (`MasterLink`) to `master` that makes one attempt: its reconnect backoff
/// is longer than any test.
struct TestLink {
    link: MasterLink,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TestLink {
    fn start(master: SocketAddr, identity: WorkerIdentity, trust: MasterTrust) -> Self {
        let params = LinkParams {
            master: master.to_string(),
            advertise: "127.0.0.1:2049".into(),
            config: LinkConfig {
                reconnect_backoff_min: Duration::from_secs(3600),
                reconnect_backoff_max: Duration::from_secs(3600),
                ..LinkConfig::default()
            },
        };
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (link, task) = MasterLink::start(params, identity, trust, stop_rx);
        Self { link, stop, task }
    }

    /// Waits (60 s at most) for the link to come up.
    async fn wait_up(&self) {
        let mut states = self.link.subscribe();
        let up = states.wait_for(|state| *state == LinkState::Up);
        tokio::time::timeout(Duration::from_secs(60), up).await.unwrap().unwrap();
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap();
    }
}

/// A transparent TCP forwarder to `master` whose connections leave from `source`: to the master,
/// whoever connects to the forwarder is at `source` (Linux routes all of 127.0.0.0/8 to
/// loopback). Returns its address; abort the task to stop accepting.
async fn forwarder_from(
    source: [u8; 4],
    master: SocketAddr,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::from((source, 0))).unwrap();
            let mut outbound = socket.connect(master).await.unwrap();
            tokio::spawn(async move {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    (addr, task)
}

/// A worker that links again while its old link is still up (a relink the master has not yet
/// seen the end of) stays listed while either link is up: the end of one link unlists it only
/// when it was the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_two_links_stays_listed_until_the_last_one_ends() {
    let master = RealMaster::start().await;
    let uuid = master.uuid;
    let unlinked = || {
        let line = format!("worker unlinked uuid={uuid}");
        process_log().logbook().dump().iter().filter(|e| e.message.contains(&line)).count()
    };
    let wait_unlinked = |count: usize| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        while unlinked() < count {
            assert!(Instant::now() < deadline, "the master never saw link {count} end");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let first = TestLink::start(master.task.addr, master.registered(), master.trust.clone());
    first.wait_up().await;
    let second = TestLink::start(master.task.addr, master.registered(), master.trust.clone());
    second.wait_up().await;
    master.wait_until_listed(uuid).await;

    // The newer link ends: the older one still carries the worker.
    second.stop().await;
    wait_unlinked(1).await;
    assert!(master.lists(uuid).await, "unlisted while its first link is up");

    first.stop().await;
    wait_unlinked(2).await;
    assert!(!master.lists(uuid).await, "listed with no link up");
    master.stop().await;
}

/// One worker may hold a few links at once (a relink while its old link is not yet found dead),
/// not every link place: past the cap, its next link is refused `busy`, and once one of its
/// links ends it links again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_of_one_worker_are_capped() {
    let master = RealMaster::start().await;
    let uuid = master.uuid;
    let refusals = || {
        let line = "this worker already has 4 links; refusing another";
        process_log()
            .logbook()
            .dump()
            .iter()
            .filter(|e| e.message.contains(line) && e.message.contains(&uuid.to_string()))
            .count()
    };
    let mut links = Vec::new();
    for _ in 0..4 {
        let link = TestLink::start(master.task.addr, master.registered(), master.trust.clone());
        link.wait_up().await;
        links.push(link);
    }
    let before = refusals();
    let fifth = TestLink::start(master.task.addr, master.registered(), master.trust.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    while refusals() == before {
        assert!(Instant::now() < deadline, "the fifth link was never refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(fifth.link.state(), LinkState::Up);
    fifth.stop().await;
    links.pop().unwrap().stop().await;
    // Its place is back once the master has seen that link end.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let again = TestLink::start(master.task.addr, master.registered(), master.trust.clone());
        let mut states = again.link.subscribe();
        // (The state's guard is let go at once: the link cannot stop while it is held.)
        let up = tokio::time::timeout(
            Duration::from_secs(5),
            states.wait_for(|state| *state == LinkState::Up),
        )
        .await
        .is_ok_and(|state| state.is_ok());
        if up {
            again.stop().await;
            break;
        }
        again.stop().await;
        assert!(Instant::now() < deadline, "no link after one of four ended");
    }
    for link in links {
        link.stop().await;
    }
    master.stop().await;
}

/// Any host of a worker's allow-list range may connect, and those connections share one pool of
/// places before they identify themselves: a host filling it (here 127.0.0.2, in the worker's
/// 127.0.0.0/8) does not keep the worker from linking again from the address it last linked
/// from, which has places of its own. The worker makes one attempt, before the idle
/// connections' first-frame timeout could free any place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_of_the_range_cannot_keep_a_worker_from_linking_again() {
    use tokio::io::AsyncReadExt as _;
    let master = RealMaster::start_with(|config| {
        config.workers[0].allowed_ips = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    master.the_registered_worker_links(master.task.addr).await;
    // 256 places (four times `limits.worker_connections_max`, 256 at least), then one more.
    let connect_from_other = || async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from(([127, 0, 0, 2], 0))).unwrap();
        socket.connect(master.task.addr).await.unwrap()
    };
    // Timed from the first idle connection: its first-frame timeout starts when it is accepted.
    let filling = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..256 {
        idle.push(connect_from_other().await);
    }
    let refused = |mut connection: tokio::net::TcpStream| async move {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(2), connection.read(&mut byte)).await;
        matches!(read, Ok(Ok(0)) | Ok(Err(_)))
    };
    assert!(refused(connect_from_other().await).await, "the pool was not full");
    let link = TestLink::start(master.task.addr, master.registered(), master.trust.clone());
    link.wait_up().await;
    // The link went through while the pool was still full, not once the idle connections'
    // first-frame timeout (5 s) had freed places: still full now. (A machine too slow to get
    // here within 3 s cannot tell, and does not check.)
    if filling.elapsed() < Duration::from_secs(3) {
        assert!(refused(connect_from_other().await).await, "the pool was freed meanwhile");
    }
    link.stop().await;
    drop(idle);
    master.stop().await;
}

/// A worker that is not registered, linking to the real master: refused for its UUID, never
/// listed; the registered worker links to the same master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_master_refuses_an_unknown_uuid() {
    let master = RealMaster::start().await;
    let stranger = WorkerIdentity::generate(Uuid::new_v4(), "stranger").unwrap();
    let uuid = stranger.uuid();
    let link = TestLink::start(master.task.addr, stranger, master.trust.clone());
    master.refused(link, uuid, "unknown_worker", "an unregistered worker").await;
    master.the_registered_worker_links(master.task.addr).await;
    master.stop().await;
}

/// A host in a worker's allow-list can send Hellos for its (public) UUID without its key, and
/// each would hold a link place for the handshake's 10 s: the master lets only two handshakes
/// of one UUID from one address run at once (eight from all), so such a host holds two places,
/// not every one. A third Hello is refused `busy` at once; once those end, the registered
/// worker links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_under_way_for_one_worker_are_capped() {
    let master = RealMaster::start().await;
    let hello = |nonce: u8| {
        Control::WorkerHello(net::WorkerHello {
            worker: engine::WorkerId(master.uuid.as_u128()),
            version: u16::from(net::limits::PROTOCOL_VERSION),
            address: "127.0.0.1:2049".into(),
            nonce: [nonce; 32],
        })
    };
    let mut pending = Vec::new();
    for nonce in 1..=2 {
        let mut framed = FramedStream::new(TcpStream::connect(master.task.addr).await.unwrap());
        framed.write_control(&hello(nonce)).await.unwrap();
        // The master answers with its Challenge, then waits for a proof that never comes.
        let challenge = framed.read_control().await.unwrap();
        assert!(matches!(challenge, Some(Control::Challenge { .. })), "{challenge:?}");
        pending.push(framed);
    }
    let mut third = FramedStream::new(TcpStream::connect(master.task.addr).await.unwrap());
    third.write_control(&hello(3)).await.unwrap();
    match third.read_control().await.unwrap() {
        Some(Control::LinkRefused(failure)) => assert_eq!(failure.reason, net::Reason::Busy),
        other => panic!("expected a busy refusal, got {other:?}"),
    }
    drop(pending);
    master.the_registered_worker_links(master.task.addr).await;
    master.stop().await;
}

/// A Hello of another protocol version is refused at once, saying which versions: the master
/// does not run a handshake it cannot finish in a language it does not speak.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_of_another_protocol_version_is_refused() {
    let master = RealMaster::start().await;
    let mut framed = FramedStream::new(TcpStream::connect(master.task.addr).await.unwrap());
    let other = u16::from(net::limits::PROTOCOL_VERSION) + 1;
    let hello = Control::WorkerHello(net::WorkerHello {
        worker: engine::WorkerId(master.uuid.as_u128()),
        version: other,
        address: "127.0.0.1:2049".into(),
        nonce: [1; 32],
    });
    framed.write_control(&hello).await.unwrap();
    match framed.read_control().await.unwrap() {
        Some(Control::LinkRefused(failure)) => {
            assert_eq!(failure.reason, net::Reason::InvalidArgument);
            assert!(failure.message.contains(&format!("protocol version {other}")), "{failure:?}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    master.the_registered_worker_links(master.task.addr).await;
    master.stop().await;
}

/// An impostor claiming the registered UUID with a key of its own, linking to the real master:
/// refused for its key (at its proof), never listed; the registered worker's own key links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_master_refuses_a_registered_uuid_with_another_key() {
    let master = RealMaster::start().await;
    let impostor = WorkerIdentity::generate(master.uuid, "impostor").unwrap();
    let link = TestLink::start(master.task.addr, impostor, master.trust.clone());
    master.refused(link, master.uuid, "wrong_key", "an impostor").await;
    master.the_registered_worker_links(master.task.addr).await;
    master.stop().await;
}

/// The registered worker, with its own key, linking to the real master from 127.0.0.2 while the
/// master allows it 127.0.0.1 only: refused for its address, never listed. The same worker
/// through the same kind of forwarder from 127.0.0.1 links: only the address differed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_master_refuses_an_address_outside_the_allow_list() {
    let master = RealMaster::start().await;
    let (elsewhere, forwarder) = forwarder_from([127, 0, 0, 2], master.task.addr).await;
    let link = TestLink::start(elsewhere, master.registered(), master.trust.clone());
    let what = "a worker from outside its allow-list";
    let entry = master.refused(link, master.uuid, "ip_not_allowed", what).await;
    assert!(entry.contains("conn{peer=127.0.0.2:"), "{entry}");
    forwarder.abort();

    let (allowed, forwarder) = forwarder_from([127, 0, 0, 1], master.task.addr).await;
    master.the_registered_worker_links(allowed).await;
    forwarder.abort();
    master.stop().await;
}

#[test]
fn worker_trusting_another_master_refuses_this_one() {
    let s = setup();
    // The worker was given another master's certificate: the real master's proof fails, and
    // the worker stops before signing anything.
    let other_dir = tempfile::tempdir().unwrap();
    let other = MasterIdentity::load_or_generate(other_dir.path()).unwrap();
    assert_ne!(other.fingerprint(), s.master.fingerprint());
    let other_trust =
        MasterTrust::load(&MasterIdentity::public_cert_path(other_dir.path())).unwrap();
    let err = mutual_handshake(&s.identity, &other_trust, &s.master, &s.registry, loopback())
        .unwrap_err()
        .by_worker();
    assert_eq!(err, MasterProofError::WrongKey);
    assert_eq!(err.reason(), "wrong_key");

    // The other way round: a fake master with its own key, answering a worker that trusts the
    // real master, collects no worker proof.
    let err = mutual_handshake(&s.identity, &s.trust, &other, &s.registry, loopback())
        .unwrap_err()
        .by_worker();
    assert_eq!(err, MasterProofError::WrongKey);
}

/// The attack the binding closes: someone on the path of a live handshake with the real master
/// lets the genuine Hello and proof through but swaps the sealed key for a key of its own,
/// sealed to the worker's public certificate (which is no secret). The worker would decrypt it
/// fine; it refuses it because the master's proof covers the hash of the exact sealed key.
#[test]
fn swapped_sealed_key_in_the_challenge_is_refused() {
    let s = setup();
    let uuid = s.identity.uuid();
    let hello = worker_hello(&HELLO);
    let now = SystemTime::now();
    let worker_nonce = identity::new_nonce().unwrap();
    let sent = master_challenge(&s.master, registered_worker(&s), &worker_nonce).unwrap();
    let genuine = challenge(&sent.nonce, &sent.master_proof, &sent.sealed_key);
    s.trust.verify_master_proof(uuid, &worker_nonce, &hello, &genuine, now).unwrap();
    assert_eq!(s.identity.decrypt_link_key(&sent.sealed_key).unwrap(), sent.link_key);

    // The attacker's key, sealed to the worker's public certificate: it decrypts.
    let public = s.identity.public_cert_armored().unwrap();
    let as_attacker =
        RegisteredWorker::from_armored(uuid, "w", &public, vec!["127.0.0.1".parse().unwrap()])
            .unwrap();
    let attacker_key = LinkKey([0xA7; 32]);
    let forged = worker_auth::seal_link_key(&as_attacker, &attacker_key).unwrap();
    assert_eq!(s.identity.decrypt_link_key(&forged).unwrap(), attacker_key);

    // A sealed key recorded from another genuine handshake of the same worker.
    let other_nonce = identity::new_nonce().unwrap();
    let recorded = master_challenge(&s.master, registered_worker(&s), &other_nonce).unwrap();

    // One byte of the genuine sealed key changed, or cut short.
    let mut flipped = sent.sealed_key.clone();
    flipped[0] ^= 0x01;
    let cut = &sent.sealed_key[..sent.sealed_key.len() - 1];

    for swapped in [&forged[..], &recorded.sealed_key, &flipped, cut] {
        let swapped_challenge = challenge(&sent.nonce, &sent.master_proof, swapped);
        let err = s.trust.verify_master_proof(uuid, &worker_nonce, &hello, &swapped_challenge, now);
        let err = err.unwrap_err();
        assert!(matches!(err, IdentityError::MasterProof(MasterProofError::BadSignature)), "{err}");
    }
}

#[test]
fn master_proof_replayed_against_a_new_worker_nonce_fails() {
    let s = setup();
    let uuid = s.identity.uuid();
    let hello = worker_hello(&HELLO);
    let now = SystemTime::now();
    // A recorded Challenge: the master's nonce and proof for the worker's first nonce.
    let first = identity::new_nonce().unwrap();
    let sent = master_challenge(&s.master, registered_worker(&s), &first).unwrap();
    let recorded = challenge(&sent.nonce, &sent.master_proof, &sent.sealed_key);
    s.trust.verify_master_proof(uuid, &first, &hello, &recorded, now).unwrap();

    // Replayed to the worker's next connection, which sent a fresh nonce.
    let second = identity::new_nonce().unwrap();
    assert_ne!(first, second);
    let err = s.trust.verify_master_proof(uuid, &second, &hello, &recorded, now).unwrap_err();
    assert!(matches!(err, IdentityError::MasterProof(MasterProofError::BadSignature)), "{err}");
    // Nor does it pass with another master nonce, or other Hello fields.
    let other_master_nonce = worker_auth::new_challenge().unwrap();
    let renonced = challenge(&other_master_nonce, &sent.master_proof, &sent.sealed_key);
    let err = s.trust.verify_master_proof(uuid, &first, &hello, &renonced, now).unwrap_err();
    assert!(matches!(err, IdentityError::MasterProof(MasterProofError::BadSignature)), "{err}");
    let moved = identity::HelloBinding { client_addr: "198.51.100.1:2049", ..hello };
    let err = s.trust.verify_master_proof(uuid, &first, &moved, &recorded, now).unwrap_err();
    assert!(matches!(err, IdentityError::MasterProof(MasterProofError::BadSignature)), "{err}");
}

#[test]
fn master_proof_for_another_worker_fails() {
    let s = setup();
    let hello = worker_hello(&HELLO);
    let worker_nonce = identity::new_nonce().unwrap();
    let master_nonce = worker_auth::new_challenge().unwrap();
    let someone_else = Uuid::new_v4();
    let proof = s
        .master
        .sign_worker_challenge(someone_else, &worker_nonce, &master_nonce, &HELLO, SEALED)
        .unwrap();
    let now = SystemTime::now();
    let sent = challenge(&master_nonce, &proof, SEALED);
    s.trust.verify_master_proof(someone_else, &worker_nonce, &hello, &sent, now).unwrap();
    let err = s
        .trust
        .verify_master_proof(s.identity.uuid(), &worker_nonce, &hello, &sent, now)
        .unwrap_err();
    assert!(matches!(err, IdentityError::MasterProof(MasterProofError::BadSignature)), "{err}");
}

#[test]
fn tampered_master_proof_bytes_are_refused() {
    let s = setup();
    let uuid = s.identity.uuid();
    let hello = worker_hello(&HELLO);
    let (wn, mn) = (identity::new_nonce().unwrap(), worker_auth::new_challenge().unwrap());
    let proof = s.master.sign_worker_challenge(uuid, &wn, &mn, &HELLO, SEALED).unwrap();
    assert!(proof.len() <= identity::PROOF_SIGNATURE_BYTES_MAX, "{}", proof.len());
    let now = SystemTime::now();
    let verify = |bytes: &[u8]| {
        s.trust.verify_master_proof(uuid, &wn, &hello, &challenge(&mn, bytes, SEALED), now)
    };
    let reason = |bytes: &[u8]| match verify(bytes) {
        Err(IdentityError::MasterProof(err)) => err.reason(),
        other => panic!("{other:?}"),
    };
    verify(&proof).unwrap();

    // The last byte belongs to the signature value itself.
    let mut tampered = proof.clone();
    *tampered.last_mut().unwrap() ^= 0x01;
    assert_eq!(reason(&tampered), "bad_signature");

    // Truncated anywhere: no complete packet.
    for len in 0..proof.len() {
        assert_eq!(reason(&proof[..len]), "malformed_signature", "at {len}");
    }

    // Every single-bit flip anywhere: never a panic, and refused except in the parts OpenPGP
    // leaves unauthenticated (the two-byte digest prefix, the empty unhashed subpacket area).
    let mut accepted = 0;
    for i in 0..proof.len() {
        for bit in [0x01, 0x80] {
            let mut flipped = proof.clone();
            flipped[i] ^= bit;
            if verify(&flipped).is_ok() {
                accepted += 1;
            }
        }
    }
    assert!(accepted <= 4, "{accepted} of {} flips accepted", proof.len() * 2);

    // Two copies of a good signature are not one signature; nor is the worker's own proof.
    assert_eq!(reason(&[proof.clone(), proof.clone()].concat()), "malformed_signature");
    let worker_proof = s.identity.sign_challenge(&mn, &hello).unwrap();
    assert_eq!(reason(&worker_proof), "wrong_key");
}

#[test]
fn master_proof_far_from_the_worker_clock_is_refused() {
    let s = setup();
    let uuid = s.identity.uuid();
    let hello = worker_hello(&HELLO);
    let (wn, mn) = ([1; 32], [2; 32]);
    let proof = s.master.sign_worker_challenge(uuid, &wn, &mn, &HELLO, SEALED).unwrap();
    let sent = challenge(&mn, &proof, SEALED);
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    for worker_clock in [now + hour, now - hour] {
        let err = s.trust.verify_master_proof(uuid, &wn, &hello, &sent, worker_clock).unwrap_err();
        assert!(matches!(err, IdentityError::MasterProof(MasterProofError::SignatureTime)));
    }
    s.trust.verify_master_proof(uuid, &wn, &hello, &sent, now + hour / 4).unwrap();
}

#[test]
fn worker_refuses_the_master_secret_key_as_its_trust() {
    let dir = tempfile::tempdir().unwrap();
    MasterIdentity::load_or_generate(dir.path()).unwrap();
    let err = MasterTrust::load(&MasterIdentity::key_path(dir.path())).unwrap_err();
    assert!(matches!(err, IdentityError::UnusableMasterCert { .. }), "{err}");
    // A worker's certificate is not a master's either: it signs, but it is not the master's
    // key, so the master's proofs fail against it.
    let s = setup();
    let wrong = MasterTrust::from_armored(&s.identity.public_cert_armored().unwrap()).unwrap();
    let err = mutual_handshake(&s.identity, &wrong, &s.master, &s.registry, loopback())
        .unwrap_err()
        .by_worker();
    assert_eq!(err, MasterProofError::WrongKey);
}

#[test]
fn replayed_proof_fails_against_a_new_nonce() {
    let s = setup();
    let registered = registered_worker(&s);
    let hello = worker_hello(&HELLO);
    let first = worker_auth::new_challenge().unwrap();
    let proof = s.identity.sign_challenge(&first, &hello).unwrap();
    let now = SystemTime::now();
    worker_auth::verify_proof(registered, &first, &HELLO, &proof, now).unwrap();
    // A master proof is no worker proof, even for the same nonce.
    let master_proof = s
        .master
        .sign_worker_challenge(s.identity.uuid(), &[0; 32], &first, &HELLO, SEALED)
        .unwrap();
    let err =
        worker_auth::verify_proof(registered, &first, &HELLO, &master_proof, now).unwrap_err();
    assert_eq!(err, AuthError::WrongKey);

    let second = worker_auth::new_challenge().unwrap();
    let err = worker_auth::verify_proof(registered, &second, &HELLO, &proof, now).unwrap_err();
    assert_eq!(err, AuthError::BadSignature);
    assert_eq!(err.reason(), "bad_signature");
}

#[test]
fn proof_binds_the_hello_fields() {
    let s = setup();
    let registered = registered_worker(&s);
    let nonce = worker_auth::new_challenge().unwrap();
    let proof = s.identity.sign_challenge(&nonce, &worker_hello(&HELLO)).unwrap();
    let now = SystemTime::now();
    let moved = HelloBinding { client_addr: "198.51.100.1:2049", ..HELLO };
    let upgraded = HelloBinding { protocol_version: 2, ..HELLO };
    for hello in [moved, upgraded] {
        let err = worker_auth::verify_proof(registered, &nonce, &hello, &proof, now).unwrap_err();
        assert_eq!(err, AuthError::BadSignature, "{hello:?}");
    }
    // An over-long address is refused before any signature work.
    let long = "x".repeat(worker_auth::CLIENT_ADDR_BYTES_MAX + 1);
    let hello = HelloBinding { client_addr: &long, ..HELLO };
    let err = worker_auth::verify_proof(registered, &nonce, &hello, &proof, now).unwrap_err();
    assert_eq!(err.reason(), "bad_hello");
}

#[test]
fn tampered_signature_bytes_are_refused() {
    let s = setup();
    let registered = registered_worker(&s);
    let nonce = worker_auth::new_challenge().unwrap();
    let proof = s.identity.sign_challenge(&nonce, &worker_hello(&HELLO)).unwrap();
    let now = SystemTime::now();

    // The last byte belongs to the signature value itself.
    let mut tampered = proof.clone();
    *tampered.last_mut().unwrap() ^= 0x01;
    let err = worker_auth::verify_proof(registered, &nonce, &HELLO, &tampered, now).unwrap_err();
    assert_eq!(err, AuthError::BadSignature);

    // Truncated anywhere: no complete packet.
    for len in 0..proof.len() {
        let err =
            worker_auth::verify_proof(registered, &nonce, &HELLO, &proof[..len], now).unwrap_err();
        assert_eq!(err.reason(), "malformed_signature", "at {len}: {err}");
    }

    // Every single-bit flip anywhere: never a panic, and refused except in the parts OpenPGP
    // leaves unauthenticated: the two-byte digest prefix (a quick-check hint) and the unhashed
    // subpacket area (empty in sequoia's signatures). So at most 2 bytes x 2 flips pass.
    let mut accepted = 0;
    for i in 0..proof.len() {
        for bit in [0x01, 0x80] {
            let mut flipped = proof.clone();
            flipped[i] ^= bit;
            if worker_auth::verify_proof(registered, &nonce, &HELLO, &flipped, now).is_ok() {
                accepted += 1;
            }
        }
    }
    assert!(accepted <= 4, "{accepted} of {} flips accepted", proof.len() * 2);

    // Two copies of a good signature are not one signature.
    let doubled = [proof.clone(), proof.clone()].concat();
    let err = worker_auth::verify_proof(registered, &nonce, &HELLO, &doubled, now).unwrap_err();
    assert_eq!(err.reason(), "malformed_signature", "{err}");
}

#[test]
fn signature_far_from_the_master_clock_is_refused() {
    let s = setup();
    let registered = registered_worker(&s);
    let nonce = worker_auth::new_challenge().unwrap();
    let proof = s.identity.sign_challenge(&nonce, &worker_hello(&HELLO)).unwrap();
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    for master_clock in [now + hour, now - hour] {
        let err = worker_auth::verify_proof(registered, &nonce, &HELLO, &proof, master_clock)
            .unwrap_err();
        assert_eq!(err, AuthError::SignatureTime, "{err}");
    }
    worker_auth::verify_proof(registered, &nonce, &HELLO, &proof, now + hour / 4).unwrap();
}

#[test]
fn garbage_link_key_ciphertext_is_refused() {
    let s = setup();
    let registered = registered_worker(&s);
    let sealed = worker_auth::seal_link_key(registered, &LinkKey([9; 32])).unwrap();
    assert_eq!(s.identity.decrypt_link_key(&sealed).unwrap(), LinkKey([9; 32]));

    for garbage in [&b""[..], b"\x00", b"not an openpgp message at all", &[0xC1; 200]] {
        let err = s.identity.decrypt_link_key(garbage).unwrap_err();
        assert!(matches!(err, IdentityError::LinkKeyDecrypt { .. }), "{err}");
    }
    // Flip a byte of the encrypted body: the integrity check fails.
    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    assert!(s.identity.decrypt_link_key(&tampered).is_err());
    // Truncated.
    assert!(s.identity.decrypt_link_key(&sealed[..sealed.len() - 10]).is_err());
    // Sealed to another worker.
    let other = setup();
    let sealed_for_other =
        worker_auth::seal_link_key(registered_worker(&other), &LinkKey([9; 32])).unwrap();
    let err = s.identity.decrypt_link_key(&sealed_for_other);
    assert!(matches!(err, Err(IdentityError::LinkKeyDecrypt { .. })), "{err:?}");
}

#[test]
fn registry_refuses_a_secret_key_and_duplicates() {
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let other_dir = dir.path().join("other");
    let other = WorkerIdentity::generate(Uuid::new_v4(), "other").unwrap();
    other.save(&other_dir).unwrap();
    let entry = |id: Uuid, cert: &Path| WorkerConfig {
        id,
        name: None,
        cert: cert.to_path_buf(),
        allowed_ips: vec!["127.0.0.1".parse().unwrap()],
    };
    let key = other_dir.join(identity::KEY_FILE_NAME);
    let err = WorkerRegistry::from_entries(&[entry(other.uuid(), &key)]).unwrap_err();
    assert!(matches!(err, worker_auth::RegistryError::CertHasSecret { .. }), "{err}");

    let public = other_dir.join(identity::PUBLIC_CERT_FILE_NAME);
    let twice = [entry(other.uuid(), &public), entry(other.uuid(), &public)];
    let err = WorkerRegistry::from_entries(&twice).unwrap_err();
    assert!(matches!(err, worker_auth::RegistryError::DuplicateUuid { .. }), "{err}");

    let shared = [entry(other.uuid(), &public), entry(Uuid::new_v4(), &public)];
    let err = WorkerRegistry::from_entries(&shared).unwrap_err();
    assert!(matches!(err, worker_auth::RegistryError::DuplicateCert { .. }), "{err}");

    let registry = WorkerRegistry::from_entries(&[entry(other.uuid(), &public)]).unwrap();
    assert_eq!(registry.len(), 1);
    // Debug output names the worker but holds no key material.
    let debug = format!("{:?} {:?}", registry, s.identity);
    assert!(!debug.contains("BEGIN PGP"), "{debug}");
    assert!(debug.contains(&other.fingerprint().to_hex()), "{debug}");
}

/// The attacker forwards between the real worker link and the real master.
struct OnPath {
    /// The worker's connection, as the attacker sees it.
    worker: FramedStream<TcpStream>,
    /// The attacker's connection to the real master.
    master: FramedStream<TcpStream>,
}

impl OnPath {
    /// Waits for the worker's next connection attempt and opens one to the master.
    async fn accept(proxy: &TcpListener, master: std::net::SocketAddr) -> Self {
        let (worker, _) = proxy.accept().await.unwrap();
        let master = TcpStream::connect(master).await.unwrap();
        Self { worker: FramedStream::new(worker), master: FramedStream::new(master) }
    }

    /// Passes one control message from the worker to the master.
    async fn worker_to_master(&mut self) -> Control {
        let control = self.worker.read_control().await.unwrap().expect("a worker message");
        self.master.write_control(&control).await.unwrap();
        control
    }

    /// Reads the master's next control message (not yet passed on).
    async fn read_master(&mut self) -> Control {
        self.master.read_control().await.unwrap().expect("a master message")
    }

    /// What the worker does next: it must close the connection without a word.
    async fn worker_closes_silently(&mut self) {
        match self.worker.read_control().await {
            Ok(None) => {}
            Err(ReadError::Io(_)) => {}
            other => panic!("the worker should have closed the connection: {other:?}"),
        }
    }
}

/// End to end over loopback: a real master (`master::server::run`), the real worker link
/// (`MasterLink`) and an attacker in between. Swapping the sealed key in the Challenge, or
/// sending a `linkAccepted` that carries a key of its own (the old wire shape), gets the attacker
/// nothing: the worker closes before proving itself, or before using any key. Passed through
/// untouched, the same path links the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_path_attacker_cannot_swap_the_link_key() {
    let dir = tempfile::tempdir().unwrap();
    let key_dir = dir.path().join("worker");
    WorkerIdentity::generate(Uuid::new_v4(), "w").unwrap().save(&key_dir).unwrap();
    let identity = WorkerIdentity::load(&key_dir).unwrap();
    let uuid = identity.uuid();
    let data = dir.path().join("master-data");
    MasterIdentity::load_or_generate(&data).unwrap();
    let trust = MasterTrust::load(&MasterIdentity::public_cert_path(&data)).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let master_addr = listener.local_addr().unwrap();
    let config = MasterConfig {
        listen: master_addr,
        data_dir: data.clone(),
        update_interval: Duration::from_millis(50),
        workers: vec![WorkerConfig {
            id: uuid,
            name: None,
            cert: key_dir.join(identity::PUBLIC_CERT_FILE_NAME),
            allowed_ips: vec!["127.0.0.1".parse().unwrap()],
        }],
        ..MasterConfig::default()
    };
    let (stop_master, master_stopped) = tokio::sync::oneshot::channel::<()>();
    let master = tokio::spawn(master::server::run(config, listener, async {
        let _ = master_stopped.await;
    }));

    // The attacker knows the worker's public certificate and seals a key of its own to it.
    let public = identity.public_cert_armored().unwrap();
    let as_attacker =
        RegisteredWorker::from_armored(uuid, "w", &public, vec!["127.0.0.1".parse().unwrap()])
            .unwrap();
    let forged = worker_auth::seal_link_key(&as_attacker, &LinkKey([0xA7; 32])).unwrap();

    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let params = LinkParams {
        master: proxy.local_addr().unwrap().to_string(),
        advertise: "127.0.0.1:2049".into(),
        config: LinkConfig {
            reconnect_backoff_min: Duration::from_millis(10),
            ..LinkConfig::default()
        },
    };
    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let (link, link_task) = MasterLink::start(params, identity, trust, shutdown_rx);
    let mut states = link.subscribe();

    // 1. The genuine Challenge with the attacker's sealed key in place of the master's.
    let mut path = OnPath::accept(&proxy, master_addr).await;
    assert!(matches!(path.worker_to_master().await, Control::WorkerHello(_)));
    let Control::Challenge { nonce, master_proof, sealed_key } = path.read_master().await else {
        panic!("expected the master's challenge");
    };
    assert_ne!(sealed_key, forged);
    let swapped = Control::Challenge { nonce, master_proof, sealed_key: forged.clone() };
    path.worker.write_control(&swapped).await.unwrap();
    path.worker_closes_silently().await;
    drop(path);

    // 2. The genuine Challenge, the worker's proof passed on, the master's linkAccepted replaced
    //    by one carrying the attacker's sealed key (the wire shape before the binding): refused.
    let mut path = OnPath::accept(&proxy, master_addr).await;
    assert!(matches!(path.worker_to_master().await, Control::WorkerHello(_)));
    let challenge = path.read_master().await;
    assert!(matches!(challenge, Control::Challenge { .. }));
    path.worker.write_control(&challenge).await.unwrap();
    assert!(matches!(path.worker_to_master().await, Control::HelloProof { .. }));
    assert_eq!(path.read_master().await, Control::LinkAccepted);
    let mut keyed_accept = Control::HelloProof { signature: forged.clone() }.encode().unwrap();
    keyed_accept.instruction = Instruction::LinkAccepted.code();
    path.worker.write_message(&keyed_accept).await.unwrap();
    path.worker_closes_silently().await;
    drop(path);
    assert_ne!(*states.borrow_and_update(), LinkState::Up, "no link came up so far");

    // 3. The same path, passed through untouched: the link comes up and carries relays.
    let (mut worker_stream, _) = proxy.accept().await.unwrap();
    let mut master_stream = TcpStream::connect(master_addr).await.unwrap();
    let pipe = tokio::spawn(async move {
        let _ = tokio::io::copy_bidirectional(&mut worker_stream, &mut master_stream).await;
    });
    states.wait_for(|state| *state == LinkState::Up).await.unwrap();
    let ip = "127.0.0.1".parse().unwrap();
    let answer = link.relay(ip, engine::Timestamp(0), None, &net::Request::GetWorkers).await;
    match answer {
        net::Response::Data(net::DataPayload::WorkerList(list)) => {
            assert!(list.iter().any(|w| w.id.0 == uuid.as_u128()), "{list:?}");
        }
        other => panic!("unexpected relay answer {other:?}"),
    }

    shutdown.send(true).unwrap();
    link_task.await.unwrap();
    stop_master.send(()).unwrap();
    master.await.unwrap().unwrap();
    pipe.abort();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary proof bytes are refused with an error, never a panic.
    #[test]
    fn arbitrary_proofs_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let s = shared_setup();
        let registered = registered_worker(s);
        let result =
            worker_auth::verify_proof(registered, &[1; 32], &HELLO, &bytes, SystemTime::now());
        prop_assert!(result.is_err());
    }

    /// Arbitrary master proofs are refused by the worker with an error, never a panic.
    #[test]
    fn arbitrary_master_proofs_are_refused(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let s = shared_setup();
        let result = s.trust.verify_master_proof(
            s.identity.uuid(),
            &[1; 32],
            &worker_hello(&HELLO),
            &challenge(&[2; 32], &bytes, SEALED),
            SystemTime::now(),
        );
        prop_assert!(matches!(result, Err(IdentityError::MasterProof(_))));
    }

    /// Arbitrary sealed link keys are refused with an error, never a panic.
    #[test]
    fn arbitrary_ciphertexts_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let s = shared_setup();
        prop_assert!(s.identity.decrypt_link_key(&bytes).is_err());
    }
}

fn shared_setup() -> &'static Setup {
    static SETUP: std::sync::OnceLock<Setup> = std::sync::OnceLock::new();
    SETUP.get_or_init(setup)
}
